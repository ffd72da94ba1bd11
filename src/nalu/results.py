"""What a run leaves on disk and in TensorBoard: problem.json, metrics.json, formulas, heatmaps."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from nalu.data.datamodule import epoch_order
from nalu.data.problem import ArithmeticProblem
from nalu.errors import Diverged
from nalu.metrics import group_by_operation, operation_metrics, solved_at_step_metrics
from nalu.readback import read_back, sparsity_error

HEATMAP_PIXELS_PER_WEIGHT = 8
# The final metrics that go beside the hyperparameters in TensorBoard's HParams tab.
HPARAMS_METRICS = (
    "train/loss",
    "interp/mse",
    "extrap/mse",
    "extrap/normalized_error",
    "extrap/solved_fraction",
    "recovered_fraction",
)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it: no reader sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and None become strings for TensorBoard."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def weight_heatmap(weight: Tensor) -> Tensor:
    """``[3, H, W]`` RGB image of a ``[out, in]`` matrix: red positive, blue negative, white 0.

    Values are scaled by the largest magnitude when it exceeds 1, so {-1, 0, 1} weights keep
    their full colour; every weight is a square of ``HEATMAP_PIXELS_PER_WEIGHT`` pixels.
    """
    w = weight.detach().float().cpu()
    w = w / max(1.0, w.abs().max().item()) if torch.isfinite(w).all() else torch.zeros_like(w)
    positive, negative = w.clamp(min=0), (-w).clamp(min=0)
    image = torch.stack([1 - negative, 1 - positive - negative, 1 - positive])
    scale = HEATMAP_PIXELS_PER_WEIGHT
    return image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).clamp(0, 1)


def named_weight_matrices(network: nn.Module, prefix: str = "") -> dict[str, Tensor]:
    """The matrices worth looking at: each unit's effective weights and each linear layer's.

    A unit's ``effective_weights()`` speaks for everything inside it (a NALU's NACs).
    """
    if hasattr(network, "effective_weights"):
        return {f"{prefix}{name}": w for name, w in network.effective_weights().items()}
    if isinstance(network, nn.Linear):
        return {f"{prefix}weight": network.weight}
    matrices: dict[str, Tensor] = {}
    for child_name, child in network.named_children():
        matrices.update(named_weight_matrices(child, f"{prefix}{child_name}."))
    return matrices


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def read_back_metrics(
    network: nn.Module, problem: ArithmeticProblem, typical_inputs: Tensor
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Recovered fraction and sparsity error (overall and per operation) and, per output, the
    learned formula beside the true one; nothing for networks without a reader."""
    learned = read_back(network, typical_inputs)
    sparsity = sparsity_error(network, typical_inputs)
    if learned is None or sparsity is None:
        return {}, []
    truth = problem.exact_formulas()
    operations = problem.output_operations
    recovered = torch.tensor([a == b for a, b in zip(learned, truth, strict=True)])
    metrics = {
        f"recovered_fraction{k}": float(v)
        for k, v in group_by_operation(recovered.float(), operations).items()
    }
    metrics.update(
        (f"sparsity_error{k}", float(v))
        for k, v in group_by_operation(sparsity, operations, reduce=torch.max).items()
    )
    outputs = [
        {"output": j, "truth": str(t), "learned": str(lrn), "recovered": bool(r)}
        for j, (t, lrn, r) in enumerate(zip(truth, learned, recovered.tolist(), strict=True))
    ]
    return metrics, outputs


def run_record(
    status: str,
    labels: dict[str, Any],
    epochs: int,
    steps: int,
    metrics: dict[str, float],
    formulas: list[dict[str, Any]],
    **details: Any,
) -> dict[str, Any]:
    """The content of a run's metrics.json, which ``nalu.report`` reads."""
    return {
        "status": status,
        **details,
        "labels": labels,
        "epochs": epochs,
        "steps": steps,
        "metrics": metrics,
        "formulas": formulas,
    }


def log_final_results(
    tensorboard: TensorBoardLogger,
    metrics: dict[str, float],
    readback: dict[str, float],
    formulas: list[dict[str, Any]],
    hyperparameters: dict[str, Any],
    step: int,
) -> None:
    """The read-back scalars and formulas, and the HParams entry with the headline metrics."""
    for name, value in readback.items():
        tensorboard.experiment.add_scalar(name, value, step)
    if formulas:
        tensorboard.experiment.add_text(
            "readback/formulas",
            "  \n".join(
                f"y{f['output']}: learned {f['learned']} | truth {f['truth']}" for f in formulas
            ),
            step,
        )
    headline = {name: value for name, value in metrics.items() if name in HPARAMS_METRICS}
    tensorboard.log_hyperparams(flatten_config(hyperparameters), metrics=headline, step=step)
    tensorboard.experiment.flush()


class RunRecorder(L.Callback):
    """Writes a run's results: the problem at the start, weights at the end of training, and the
    final metrics (``metrics.json`` and the TensorBoard HParams entry) after the test loop."""

    def __init__(
        self,
        output_dir: str | Path,
        problem: ArithmeticProblem,
        labels: dict[str, Any],
        hyperparameters: dict[str, Any],
    ) -> None:
        self.output_dir = Path(output_dir)
        self.problem = problem
        self.labels = labels
        self.hyperparameters = hyperparameters
        self.final_train_loss: float | None = None
        self.final_metrics: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Files come from one process of a distributed run; TensorBoard's writer is rank 0's only.
        if trainer.is_global_zero:
            write_json_atomic(self.output_dir / "problem.json", self.problem.to_dict())
        if (tensorboard := _tensorboard(trainer)) is not None:
            tensorboard.experiment.add_text(
                "problem/formulas", "  \n".join(self.problem.formulas())
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "train/loss" in trainer.callback_metrics:
            self.final_train_loss = float(trainer.callback_metrics["train/loss"])
        if (tensorboard := _tensorboard(trainer)) is not None:
            for name, weight in named_weight_matrices(pl_module.network).items():
                tensorboard.experiment.add_image(
                    f"weights/{name}", weight_heatmap(weight), trainer.global_step
                )

    def _write_metrics(
        self,
        trainer: L.Trainer,
        status: str,
        formulas: list[dict[str, Any]] | None = None,
        **details: Any,
    ) -> None:
        if not trainer.is_global_zero:
            return
        record = run_record(
            status,
            self.labels,
            trainer.current_epoch,
            trainer.global_step,
            self.final_metrics,
            formulas or [],
            **details,
        )
        write_json_atomic(self.output_dir / "metrics.json", record)
        if (tensorboard := _tensorboard(trainer)) is not None:
            summary = " ".join(f"{key}={value}" for key, value in details.items())
            tensorboard.experiment.add_text("run/status", f"{status} {summary}".strip())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            name: float(value) for name, value in trainer.callback_metrics.items() if name != "step"
        }
        if self.final_train_loss is not None:
            metrics["train/loss"] = self.final_train_loss
        typical_inputs, _ = next(iter(next(iter(trainer.datamodule.train_dataloader()))))
        readback, formulas = read_back_metrics(
            pl_module.network, self.problem, typical_inputs.to(pl_module.device)
        )
        metrics.update(readback)
        self.final_metrics = dict(sorted(metrics.items()))
        self._write_metrics(trainer, "finished", formulas)
        if (tensorboard := _tensorboard(trainer)) is not None:
            log_final_results(
                tensorboard,
                self.final_metrics,
                readback,
                formulas,
                self.hyperparameters,
                trainer.global_step,
            )

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A diverged run says so, with the step and its last good checkpoint (no metrics)."""
        if not isinstance(exception, Diverged):
            return
        checkpoint = trainer.checkpoint_callback
        last_good = getattr(checkpoint, "last_model_path", "") or None
        self._write_metrics(
            trainer,
            "diverged",
            diverged_at_step=exception.step,
            reason=exception.reason,
            last_good_checkpoint=last_good,
        )
        if (tensorboard := _tensorboard(trainer)) is not None:
            tensorboard.experiment.add_scalar(
                "run/diverged_at_step", exception.step, trainer.global_step
            )
            tensorboard.experiment.flush()


class PopulationRecorder(L.Callback):
    """Writes each member of a population as a run of its own, where a sweep's job would be:
    ``<output_dir>/members/<k>_<model>_seed<seed>/`` with problem.json, metrics.json and a
    TensorBoard folder of its curves, formulas and HParams, so ``nalu.report`` reads members
    as runs. ``labels`` and ``hyperparameters`` are per member."""

    def __init__(
        self,
        output_dir: str | Path,
        problems: list[ArithmeticProblem],
        labels: list[dict[str, Any]],
        hyperparameters: list[dict[str, Any]],
    ) -> None:
        self.output_dir = Path(output_dir)
        self.problems = problems
        self.labels = labels
        self.hyperparameters = hyperparameters
        self.member_metrics: list[dict[str, float]] = []

    def member_dir(self, member: int) -> Path:
        labels = self.labels[member]
        return self.output_dir / "members" / f"{member}_{labels['model']}_seed{labels['seed']}"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for member, problem in enumerate(self.problems):
            write_json_atomic(self.member_dir(member) / "problem.json", problem.to_dict())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Curves as lists once: S members read a value each from every point.
        curves = {
            tag: [(step, values.tolist()) for step, values in points]
            for tag, points in pl_module.curves.items()
        }
        self.member_metrics = [
            self._record_member(trainer, pl_module, curves, member)
            for member in range(len(self.problems))
        ]

    def _record_member(
        self,
        trainer: L.Trainer,
        population: Any,
        curves: dict[str, list[tuple[int, list[float]]]],
        member: int,
    ) -> dict[str, float]:
        problem = self.problems[member]
        operations = problem.output_operations
        metrics: dict[str, float] = {}
        if curve := curves["train/loss"]:
            metrics["train/loss"] = curve[-1][1][member]
        for split, per_output in population.final_mse.items():
            threshold = population.success_threshold[member] if split == "extrap" else None
            values = operation_metrics(
                per_output[member], operations, population.initial_mse[split][member], threshold
            )
            metrics.update((f"{split}/{name}", float(v)) for name, v in values.items())
        metrics.update(solved_at_step_metrics(population.solved_at_step[member], operations))
        data = trainer.datamodule
        seed = data.members[member].shuffle_seed
        first_batch = epoch_order(data.sizes["train"], seed, 0)[: data.batch_size]
        typical_inputs = data.inputs["train"][member][first_batch.to(data.inputs["train"].device)]
        readback, formulas = read_back_metrics(
            population.member_network(member).to(typical_inputs.device), problem, typical_inputs
        )
        metrics = dict(sorted({**metrics, **readback}.items()))
        diverged_at = int(population.diverged_at_step[member])
        details: dict[str, Any] = (
            {"diverged_at_step": diverged_at, "reason": "training loss is not finite"}
            if diverged_at >= 0
            else {}
        )
        status = "diverged" if diverged_at >= 0 else "finished"
        run_dir = self.member_dir(member)
        record = run_record(
            status,
            self.labels[member],
            trainer.current_epoch,
            trainer.global_step,
            metrics,
            formulas,
            **details,
        )
        write_json_atomic(run_dir / "metrics.json", record)
        tensorboard = TensorBoardLogger(
            save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False
        )
        tensorboard.experiment.add_text("problem/formulas", "  \n".join(problem.formulas()))
        for tag, points in curves.items():
            for step, values in points:
                tensorboard.experiment.add_scalar(tag, values[member], step)
        if diverged_at >= 0:
            tensorboard.experiment.add_scalar("run/diverged_at_step", diverged_at, diverged_at)
        log_final_results(
            tensorboard,
            metrics,
            readback,
            formulas,
            self.hyperparameters[member],
            trainer.global_step,
        )
        tensorboard.experiment.close()
        return metrics
