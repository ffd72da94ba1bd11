"""What a run leaves on disk and in TensorBoard: problem.json, metrics.json, formulas, heatmaps."""

import errno
import math
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from nalu.config import rules
from nalu.config.errors import Diverged
from nalu.data.batches import step_batches
from nalu.data.problem import ArithmeticProblem
from nalu.results.heatmap import Heatmap, render_heatmaps
from nalu.results.images import add_png
from nalu.results.metrics import OutputGroups
from nalu.results.readback import (
    WEIGHT_ROUNDING,
    read_back,
    sparsity_error,
    unsaturated_gates,
)
from nalu.results.record import (
    FINAL_PREFIX,
    HPARAMS_METRICS,
    MEMBERS_DIR,
    METRICS_FILE,
    OUTPUT_COUNT,
    PROBLEM_FILE,
    RECOVERED_FRACTION,
    SPARSITY_ERROR,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    RunRecord,
    finite_summary,
    is_share,
    share_count,
    write_atomic,
    write_json_atomic,
)
from nalu.units.contract import effective_weights, matrix_columns


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


def add_formulas(experiment: SummaryWriter, problem: ArithmeticProblem) -> None:
    """The problem's formulas as the run's ``problem/formulas`` text (a line each)."""
    experiment.add_text("problem/formulas", "  \n".join(problem.formulas()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: into a temporary file in the checkpoint's own
    folder, then renamed (``write_atomic``). Lightning's own writer opens the final path
    directly, so a full disk leaves a truncated checkpoint that a resume would then read."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        write_atomic(Path(path), lambda handle: torch.save(checkpoint, handle))


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` saving at an epoch's end at most once every ``every_s`` seconds, and
    always at the epoch where training ends (``max_epochs``, ``max_steps``, a stop request such
    as Ctrl-C's): at the article's 32 steps an epoch, writing every epoch cost a fifth of the
    training, and a run killed outright loses at most ``every_s`` seconds. ``every_s=0`` saves
    every epoch."""

    def __init__(self, *args: Any, every_s: float = 10.0, **kwargs: Any) -> None:
        rules.non_negative_number("every_s", every_s)
        super().__init__(*args, **kwargs)
        self.every_s = every_s
        self._saved_at = -math.inf

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if time.monotonic() - self._saved_at >= self.every_s or _fit_ends_here(trainer):
            super().on_train_epoch_end(trainer, pl_module)
            self._saved_at = time.monotonic()


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` of the best validation that a run resumed into a new folder carries
    on: the best so far is copied into the new folder and stays the one to beat. Lightning's
    would start its ranking anew there and name the resumed run's first validation its best."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        before = state_dict.get("dirpath", self.dirpath)
        super().load_state_dict(state_dict)
        best, score = Path(state_dict.get("best_model_path") or ""), state_dict["best_model_score"]
        if before == self.dirpath or self.dirpath is None or score is None or not best.is_file():
            return
        kept = Path(self.dirpath) / best.name
        with best.open("rb") as source:
            write_atomic(kept, lambda handle: shutil.copyfileobj(source, handle))
        self.best_model_path = self.kth_best_model_path = str(kept)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(kept): score}


def _fit_ends_here(trainer: L.Trainer) -> bool:
    """Whether the fit loop stops after this epoch (read at ``on_train_epoch_end``, when the
    epoch already counts as processed), as ``FitLoop.done`` decides it, without its messages."""
    loop = trainer.fit_loop
    max_epochs = -1 if loop.max_epochs is None else loop.max_epochs
    return (
        trainer.should_stop
        or 0 <= max_epochs <= loop.epoch_progress.current.processed
        or 0 <= loop.max_steps <= trainer.global_step
    )


def newest_checkpoint(trainer: L.Trainer) -> str | None:
    """The path of the checkpoint saved last (``last.ckpt`` of the default callbacks): the one
    that an unmonitored ModelCheckpoint keeps, or a monitored one's ``save_last`` copy."""
    for callback in trainer.checkpoint_callbacks:
        path = callback.best_model_path if callback.monitor is None else callback.last_model_path
        if path:
            return path
    return None


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def read_back_metrics(
    network: nn.Module, problem: ArithmeticProblem, typical_inputs: Tensor, solved: Tensor
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Recovered fraction and sparsity error (overall and per operation) and, per output, the
    learned formula beside the true one; nothing for networks without a reader. An output is
    recovered when its weights compute the truth: its formula read with weights rounded to
    integers is the true one, its gates (if any) are saturated, and it is ``solved`` (``[out]``,
    its extrapolation error below the near-perfect model's). An output not recovered whose
    formula only rounds to the truth, or whose weights lie farther than ``WEIGHT_ROUNDING`` from
    their integers, reads ``≈ formula (weights not exact)``: what its weights round to."""
    learned = read_back(network, typical_inputs)
    sparsity = sparsity_error(network, typical_inputs)
    if learned is None or sparsity is None:
        return {}, []
    truth = problem.exact_formulas()
    operations = problem.output_operations
    same = torch.tensor([a == b for a, b in zip(learned, truth, strict=True)])
    recovered = same & ~unsaturated_gates(network, typical_inputs) & solved.cpu()
    groups = OutputGroups([operations])
    per_group = {
        **groups.named(RECOVERED_FRACTION, groups.mean(recovered.float()[None])),
        **groups.named(SPARSITY_ERROR, groups.largest(sparsity.cpu()[None])),
    }
    metrics = {name: float(value) for name, value in per_group.items()}
    exact = (sparsity <= WEIGHT_ROUNDING).tolist()
    outputs = [
        {
            "output": j,
            "truth": str(t),
            "learned": str(lrn) if r or (e and not rounded) else f"≈ {lrn} (weights not exact)",
            "recovered": r,
        }
        for j, (t, lrn, r, rounded, e) in enumerate(
            zip(truth, learned, recovered.tolist(), same.tolist(), exact, strict=True)
        )
    ]
    return metrics, outputs


# The TensorBoard run, in a run's own folder, that holds its results and its HParams row.
RESULT_RUN = "result"


def write_result_run(
    log_dir: str | Path,
    metrics: dict[str, float],
    hparams: dict[str, Any],
    step: int,
    diverged: bool = False,
) -> None:
    """The run's results as a TensorBoard run of their own, ``<log_dir>/result``: the headline
    final metrics as ``result/`` scalars, every final metric but the output counts as one Text
    table, ``result/metrics`` (one-point charts would bury the curves), and the HParams session
    (``log_hparams``). Apart from the curves in ``log_dir``, because TensorBoard makes every
    scalar tag at or below a session's run a column of the HParams table, read at its last
    point: beside the curves, the table would show each curve's last epoch next to the result."""
    headline = {
        f"{FINAL_PREFIX}{name}": value for name, value in metrics.items() if name in HPARAMS_METRICS
    }
    # Output counts are bookkeeping for reports (metrics.json), not a figure to read.
    rows = [
        f"| {name} | {value:.6g} |"
        for name, value in sorted(metrics.items())
        if not name.startswith(OUTPUT_COUNT)
    ]
    with SummaryWriter(str(Path(log_dir) / RESULT_RUN)) as writer:
        table = "\n".join(["| metric | value |", "|---|---:|", *rows])
        writer.add_text(f"{FINAL_PREFIX}metrics", table, step)
        for tag, value in headline.items():
            writer.add_scalar(tag, value, step)
        log_hparams(writer, hparams, headline, diverged)


def log_final_results(
    tensorboard: TensorBoardLogger,
    metrics: dict[str, float],
    formulas: list[dict[str, Any]],
    hparams: dict[str, Any],
    step: int,
    diverged: bool,
) -> None:
    """The read-back formulas beside the run's curves, and its results and HParams entry (the
    run's ``hparams``, its labels and settings, its status a failure where it ``diverged``) in
    its result run (``write_result_run``)."""
    if formulas:
        tensorboard.experiment.add_text(
            "readback/formulas",
            "  \n".join(
                f"y{f['output']}: learned {f['learned']} | truth {f['truth']}" for f in formulas
            ),
            step,
        )
    tensorboard.experiment.flush()
    write_result_run(tensorboard.log_dir, metrics, hparams, step, diverged)


def log_hparams(
    writer: SummaryWriter,
    hparams: dict[str, Any],
    metrics: dict[str, float],
    diverged: bool = False,
) -> None:
    """The run's HParams session: its settings and its headline metrics, and no experiment
    summary. TensorBoard then builds the HParams table from every run's session it is shown
    (every hyperparameter of every run, those with more than one value marked as differing);
    with an experiment summary per run it would take the first one it finds for all of them,
    and the fields that only other runs have (a sweep's beside a population's) would vanish.
    A run that ``diverged`` ends its session as a failure (the tab's status filter)."""
    _, session_start, session_end = hparams_summary(hparams, metrics)
    if diverged:
        (value,) = session_end.value
        content = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
        content.session_end_info.status = api_pb2.STATUS_FAILURE
        value.metadata.plugin_data.content = content.SerializeToString()
    file_writer = writer._get_file_writer()
    for summary in (session_start, session_end):
        file_writer.add_summary(summary)


def unit_matrices(network: nn.Module, prefix: str = "") -> dict[str, dict[str, Tensor]]:
    """``{unit path: {matrix name: [rows, columns]}}``: each unit's ``effective_weights()``
    (which speak for everything inside it, e.g. a NALU's two NACs) and each linear layer's."""
    if (own := effective_weights(network)) is not None:
        return {prefix or "network": own}
    if isinstance(network, nn.Linear):
        return {prefix or "network": {"weight": network.weight}}
    units: dict[str, dict[str, Tensor]] = {}
    for name, child in network.named_children():
        units.update(unit_matrices(child, f"{prefix}.{name}" if prefix else name))
    return units


def weight_heatmaps(
    network: nn.Module, problem: ArithmeticProblem, formulas: list[dict[str, Any]]
) -> list[Heatmap]:
    """A heatmap figure per unit, ``weights/<unit>``, to render; the last unit's rows are the
    outputs, labelled with their true and read-back formulas."""
    units = unit_matrices(network)
    recovered = sum(f["recovered"] for f in formulas)
    heatmaps = []
    for k, (path, matrices) in enumerate(units.items()):
        is_output_unit = k == len(units) - 1
        unit = network.get_submodule("" if path == "network" else path)
        title = f"{path}: {type(unit).__name__}"
        if is_output_unit and formulas:
            title += f" · {recovered}/{len(formulas)} outputs read back as the truth"
        heatmaps.append(
            Heatmap(
                f"weights/{path}",
                title,
                {name: matrix.detach().float().cpu().numpy() for name, matrix in matrices.items()},
                truths=[str(f) for f in problem.exact_formulas()] if is_output_unit else [],
                learned=[(f["learned"], f["recovered"]) for f in formulas]
                if is_output_unit
                else None,
                input_name="x" if k == 0 else "h",
                column_names=matrix_columns(unit),
                # The truth's operands are inputs: outlined where the outputs read them.
                operands=problem.operand_masks().amax(0).bool().numpy()
                if is_output_unit and k == 0
                else None,
            )
        )
    return heatmaps


GENERIC_DIVERGENCE = "train loss or a parameter is not finite"


def add_member_curves(
    experiment: SummaryWriter, curves: dict[str, list[tuple[int, Any]]], member: int
) -> None:
    """Member ``member``'s points of ``curves`` (``{tag: [(step, values of every member)]}``),
    but those of its epochs after it diverged (NaN)."""
    for tag, points in curves.items():
        for step, values in points:
            if not math.isnan(values[member]):
                experiment.add_scalar(tag, float(values[member]), step)


class RunLayout:
    """Where the results of a run of one member go: the run's own folder and TensorBoard run,
    where the training module logs the curves as it trains."""

    def __init__(self, output_dir: Path, labels: list[dict[str, Any]]) -> None:
        self.output_dir = output_dir
        self.labels = labels

    @staticmethod
    def of(output_dir: Path, labels: list[dict[str, Any]]) -> "RunLayout":
        """The layout of a run of ``len(labels)`` members."""
        return (RunLayout if len(labels) == 1 else PopulationLayout)(output_dir, labels)

    def member_dir(self, member: int) -> Path:
        return self.output_dir

    def member_tensorboard(self, trainer: L.Trainer, member: int) -> TensorBoardLogger | None:
        return _tensorboard(trainer)

    def on_fit_start(
        self,
        trainer: L.Trainer,
        problems: list[ArithmeticProblem],
        carried: dict[str, list[tuple[int, Tensor]]],
    ) -> None:
        """The problem's formulas, and the ``carried`` curves of a run resumed into a new
        folder: their points before the checkpoint lie in the old folder's events; written
        here too, the new folder's curves (and a report's figures and best epoch) cover the
        whole run."""
        if (tensorboard := _tensorboard(trainer)) is not None:
            add_formulas(tensorboard.experiment, problems[0])
            add_member_curves(tensorboard.experiment, carried, 0)

    def write_member(
        self,
        tensorboard: TensorBoardLogger,
        member: int,
        problem: ArithmeticProblem,
        curves: dict[str, list[tuple[int, list[float]]]],
    ) -> None:
        """Before a member's results: what its TensorBoard run does not hold yet."""

    def close_member(self, tensorboard: TensorBoardLogger) -> None:
        """After a member's results (the run's own TensorBoard run stays open)."""

    def on_test_end(
        self, trainer: L.Trainer, final_metrics: dict[str, float], hparams: dict[str, Any]
    ) -> None:
        """After every member's results; ``hparams``: the settings every member shares."""

    def divergence_reason(self, divergence: Diverged | None) -> str:
        """What stopped a member: the run's own reason."""
        return divergence.reason if divergence is not None else GENERIC_DIVERGENCE

    def summary(
        self, member_metrics: list[dict[str, float]], finished: list[bool]
    ) -> dict[str, float]:
        """What the run returns: its member's metrics."""
        return member_metrics[0]


class PopulationLayout(RunLayout):
    """Where the results of a population (S > 1) go: member ``k``'s folder is
    ``members/<k>_<model>[_<cells>]_seed<seed>/``, where a sweep's job would be, with a
    TensorBoard run of its own written whole after the test (its curves included); the run's own
    TensorBoard run shows the medians (and the shares of all the members' outputs solved)."""

    def member_dir(self, member: int) -> Path:
        labels = self.labels[member]
        cell = [labels[axis] for axis in labels.get("problem_axes", {})]
        name = "_".join([str(member), labels["model"], *cell, f"seed{labels['seed']}"])
        return self.output_dir / MEMBERS_DIR / name

    def member_tensorboard(self, trainer: L.Trainer, member: int) -> TensorBoardLogger | None:
        if _tensorboard(trainer) is None:
            return None
        return TensorBoardLogger(
            save_dir=self.member_dir(member), name="", version="", default_hp_metric=False
        )

    def on_fit_start(
        self,
        trainer: L.Trainer,
        problems: list[ArithmeticProblem],
        carried: dict[str, list[tuple[int, Tensor]]],
    ) -> None:
        """Nothing yet: each member's TensorBoard run is written whole after the test."""

    def write_member(
        self,
        tensorboard: TensorBoardLogger,
        member: int,
        problem: ArithmeticProblem,
        curves: dict[str, list[tuple[int, list[float]]]],
    ) -> None:
        add_formulas(tensorboard.experiment, problem)
        add_member_curves(tensorboard.experiment, curves, member)

    def close_member(self, tensorboard: TensorBoardLogger) -> None:
        tensorboard.experiment.close()

    def on_test_end(
        self, trainer: L.Trainer, final_metrics: dict[str, float], hparams: dict[str, Any]
    ) -> None:
        """The run's own summaries, and its HParams row: the settings its members share (not
        their seeds) beside those summaries."""
        if (tensorboard := _tensorboard(trainer)) is not None:
            write_result_run(tensorboard.log_dir, final_metrics, hparams, trainer.global_step)

    def divergence_reason(self, divergence: Diverged | None) -> str:
        """A population's members stop at different steps, each for a non-finite loss or
        parameter."""
        return GENERIC_DIVERGENCE

    def summary(
        self, member_metrics: list[dict[str, float]], finished: list[bool]
    ) -> dict[str, float]:
        """Each metric over the members that finished (``finite_summary``: shares of solved or
        recovered outputs over all their outputs, counts of outputs summed, the rest by their
        median)."""
        kept = [m for m, done in zip(member_metrics, finished, strict=True) if done]
        names = sorted({name for metrics in kept for name in metrics})
        return {
            name: finite_summary(
                name,
                [m.get(name, math.nan) for m in kept],
                [m.get(share_count(name), math.nan) for m in kept] if is_share(name) else None,
            )
            for name in names
        }


class RunRecorder(L.Callback):
    """Writes the results of every member of a run, S >= 1, in one schema, where its layout
    (``RunLayout`` at S = 1, ``PopulationLayout`` above) puts them, so that ``report`` reads
    members as runs.

    Each member gets problem.json when fitting starts and, after the test loop, metrics.json (a
    ``RunRecord``) and its TensorBoard entries: formulas, weight heatmaps (of the first
    ``heatmaps`` members; None: all), the final metrics and HParams. ``labels`` and
    ``hyperparameters`` are per member; ``final_metrics`` is what the run returns (the layout's
    ``summary``).
    """

    def __init__(
        self,
        output_dir: str | Path,
        problems: list[ArithmeticProblem],
        labels: list[dict[str, Any]],
        hyperparameters: list[dict[str, Any]],
        heatmaps: int | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.heatmaps = len(problems) if heatmaps is None else heatmaps
        self.problems = problems
        self.labels = labels
        self.hyperparameters = hyperparameters
        self.layout = RunLayout.of(self.output_dir, labels)
        self.member_metrics: list[dict[str, float]] = []
        self.final_metrics: dict[str, float] = {}
        # Set when training stopped because every member diverged.
        self.divergence: Diverged | None = None
        self.last_good_checkpoint: str | None = None

    @property
    def population(self) -> int:
        return len(self.problems)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Files come from one process of a distributed run; TensorBoard's writer is rank 0's only.
        if trainer.is_global_zero:
            for member in range(self.population):
                # Found now, not after training: a folder where the results file goes.
                if (results := self.layout.member_dir(member) / METRICS_FILE).is_dir():
                    raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(results))
            for member, problem in enumerate(self.problems):
                write_json_atomic(self.layout.member_dir(member) / PROBLEM_FILE, problem.to_dict())
            # A checkpoint from outside this folder: a resume into a new one.
            resumed = trainer.ckpt_path is not None
            moved = (
                resumed
                and self.output_dir.resolve() not in Path(trainer.ckpt_path).resolve().parents
            )
            carried = dict(pl_module.curves.items()) if moved else {}
            self.layout.on_fit_start(trainer, self.problems, carried)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        final = {name: values.tolist() for name, values in pl_module.final_metrics.items()}
        curves = {
            tag: [(step, values.tolist()) for step, values in points]
            for tag, points in pl_module.curves.items()
        }
        first_item = next(iter(trainer.datamodule.train_dataloader()))
        x, _ = next(step_batches(first_item))
        typical_inputs = x.reshape(self.population, -1, x.shape[-1])  # [S, B, in] at every S
        self.member_metrics = []
        written: list[tuple[int, list[dict[str, Any]], TensorBoardLogger]] = []
        heatmaps: list[list[Heatmap]] = []
        for member, problem in enumerate(self.problems):
            metrics = {name: v[member] for name, v in final.items() if not math.isnan(v[member])}
            network = pl_module.member_network(member)
            readback, formulas = read_back_metrics(
                network,
                problem,
                typical_inputs[member].to(pl_module.device),
                pl_module.final_solved[member],
            )
            metrics = dict(sorted({**metrics, **readback}.items()))
            self._record(trainer, pl_module, member, metrics, formulas)
            self.member_metrics.append(metrics)
            tensorboard = self.layout.member_tensorboard(trainer, member)
            if tensorboard is not None:
                written.append((member, formulas, tensorboard))
                drawn = member < self.heatmaps
                heatmaps.append(weight_heatmaps(network, problem, formulas) if drawn else [])
        # Every member's figures at once: in parallel where there are many and several CPUs.
        images = iter(render_heatmaps([heatmap for unit in heatmaps for heatmap in unit]))
        hparams = [self._hparams(member) for member in range(self.population)]
        for (member, formulas, tensorboard), unit in zip(written, heatmaps, strict=True):
            self.layout.write_member(tensorboard, member, self.problems[member], curves)
            experiment = tensorboard.experiment
            diverged_at = int(pl_module.divergence.diverged_at_step[member])
            if diverged_at >= 0:
                experiment.add_scalar("run/diverged_at_step", diverged_at, diverged_at)
            events = experiment._get_file_writer()
            for heatmap in unit:
                add_png(events, heatmap.tag, next(images), trainer.global_step)
            log_final_results(
                tensorboard,
                self.member_metrics[member],
                formulas,
                hparams[member],
                trainer.global_step,
                diverged=diverged_at >= 0,
            )
            self.layout.close_member(tensorboard)
        finished = (pl_module.divergence.diverged_at_step < 0).tolist()
        self.final_metrics = self.layout.summary(self.member_metrics, finished)
        shared = {n: v for n, v in hparams[0].items() if all(h.get(n) == v for h in hparams)}
        self.layout.on_test_end(trainer, self.final_metrics, shared)

    def _hparams(self, member: int) -> dict[str, Any]:
        """Member ``member``'s HParams: its labels and settings, flat; not the list of its
        problem axes' labels (``problem_axes``, for reports), which would be a column of lists
        that the tab ticks before the member's own cell."""
        labels = {k: v for k, v in self.labels[member].items() if k != "problem_axes"}
        return flatten_config({**labels, **self.hyperparameters[member]})

    def _record(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        member: int,
        metrics: dict[str, float],
        formulas: list[dict[str, Any]],
    ) -> None:
        """Write member ``member``'s metrics.json; a diverged member's says when and why."""
        diverged_at = int(pl_module.divergence.diverged_at_step[member])
        diverged = diverged_at >= 0
        RunRecord(
            status=STATUS_DIVERGED if diverged else STATUS_FINISHED,
            labels=self.labels[member],
            epochs=trainer.current_epoch,
            steps=trainer.global_step,
            metrics=metrics,
            formulas=formulas,
            diverged_at_step=diverged_at if diverged else None,
            reason=self.layout.divergence_reason(self.divergence) if diverged else None,
            last_good_checkpoint=self.last_good_checkpoint if diverged else None,
        ).write(self.layout.member_dir(member))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Every member of a diverged run says so at once, with its step and the run's last good
        checkpoint; the test that follows (``nalu.cli.train``) adds the metrics of each member's
        last good validation."""
        if not isinstance(exception, Diverged):
            return
        self.divergence = exception
        self.last_good_checkpoint = newest_checkpoint(trainer)
        exception.last_good_checkpoint = self.last_good_checkpoint
        if not trainer.is_global_zero:
            return
        for member in range(self.population):
            self._record(trainer, pl_module, member, metrics={}, formulas=[])
        if (tensorboard := _tensorboard(trainer)) is not None:
            details = f"diverged_at_step={exception.step} reason={exception.reason}"
            tensorboard.experiment.add_text("run/status", f"{STATUS_DIVERGED} {details}")
            tensorboard.experiment.flush()
