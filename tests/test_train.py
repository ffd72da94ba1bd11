import functools
import json
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from conftest import MODEL_CONFIGS, TINY, compose_config, load_events, read_metrics
from hydra.utils import instantiate
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from nalu.cli.train import build_run, hyperparameter_reader, train
from nalu.config.errors import InvalidArgument
from nalu.data import ArithmeticDataModule
from nalu.results.record import HPARAMS_METRICS
from nalu.results.report import loss_curves
from nalu.training.module import ArithmeticModule
from nalu.units import NeuralAdditionUnit


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_model_config_composes_and_trains_two_epochs(model, tiny_overrides, tmp_path):
    metrics = train(compose_config([*tiny_overrides, f"model={model}"], tmp_path))
    assert {"train/loss", "interp/mse", "extrap/mse", "extrap/mse_mul"} <= set(metrics)
    recorded = json.loads((tmp_path / "metrics.json").read_text())
    assert recorded["metrics"] == pytest.approx(metrics)
    assert recorded["labels"]["model"] == model
    assert recorded["epochs"] == 2
    assert json.loads((tmp_path / "problem.json").read_text())["out_features"] == 4
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 8  # 2 epochs of 4 steps


def test_the_logged_training_loss_is_the_epochs_mse_over_every_sample(tmp_path):
    # Weights that do not move (SGD at 1e-30): each epoch's train/loss is the MSE of the
    # initial network over the whole training set, its last batch of 4 weighing 4 samples.
    overrides = [*TINY, "data.train_size=100", "data.batch_size=32"]
    cfg = compose_config([*overrides, "optimizer=sgd", "optimizer.lr=1e-30"], tmp_path)
    *_, data, module = build_run(cfg)
    data.setup("fit")
    x, y = data.training_set()
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(module.network(x), y).item()
    train(cfg)
    assert loss_curves(tmp_path)["train/loss"] == {
        4: pytest.approx(expected, rel=1e-5),
        8: pytest.approx(expected, rel=1e-5),
    }


def test_article_experiment_is_the_articles_setup(tmp_path):
    cfg = compose_config(["experiment=article"], tmp_path)
    assert (cfg.data.in_features, cfg.data.out_features) == (100, 10)
    assert list(cfg.data.operations) == ["add", "sub", "mul"]
    assert list(cfg.data.train_range) == [-10, 10] and list(cfg.data.extrap_range) == [-50, 50]
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (250, 32)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.model._target_ == "nalu.units.NeuralArithmeticLogicUnit"


def test_tensorboard_run_has_curves_formulas_heatmaps_and_final_hparams(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nalu_shared", "data.operations=[add,sub,mul,div]"]
    metrics = train(compose_config(overrides, tmp_path))
    events = load_events(tmp_path)
    tags = events.Tags()
    problem = json.loads((tmp_path / "problem.json").read_text())
    operations = {output["operation"] for output in problem["outputs"]}
    per_operation = {f"{split}/mse_{op}" for split in ("interp", "extrap") for op in operations}
    assert {"train/loss", "interp/mse", "extrap/mse", *per_operation} <= set(tags["scalars"])
    # Curves are at optimizer steps (TINY: 4 per epoch), one point per epoch or validation.
    for tag in ("train/loss", "interp/mse", "extrap/mse_add"):
        assert [e.step for e in events.Scalars(tag)] == [4, 8], tag
    assert "step" not in metrics
    assert tags["images"] == ["weights/network"]  # one figure, a panel per matrix
    # The Text tab's problem is problem.json's formulas, one line each (Markdown line breaks).
    formulas = events.Tensors("problem/formulas/text_summary")[0].tensor_proto.string_val[0]
    assert formulas.decode() == "  \n".join(output["formula"] for output in problem["outputs"])
    # The results and the HParams session are a run of their own, result/, apart from the
    # curves: the HParams table's metric columns are then the results alone (TensorBoard takes
    # every scalar tag at or below a session's run as one, at its last point).
    assert "_hparams_/session_start_info" not in events.summary_metadata
    assert not any(tag.startswith("result/") for tag in tags["scalars"])
    result = load_events(tmp_path / "result")
    result_tags = result.Tags()
    # A session with the run's settings, and no experiment summary: TensorBoard builds the
    # table from every run it is shown (see test_dashboards).
    assert "_hparams_/experiment" not in result.summary_metadata
    session = plugin_data_pb2.HParamsPluginData.FromString(
        result.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    )
    assert session.session_start_info.hparams["model"].string_value == "nalu_shared"
    end = plugin_data_pb2.HParamsPluginData.FromString(
        result.summary_metadata["_hparams_/session_end_info"].plugin_data.content
    )
    assert end.session_end_info.status == api_pb2.STATUS_SUCCESS
    # The headline final metrics are its only scalars (HParams' columns); every final metric is
    # a row of one Text table, not a one-point chart, and output counts are in neither.
    assert set(result_tags["scalars"]) == {f"result/{name}" for name in HPARAMS_METRICS}
    assert "result/extrap/relative_error" in result_tags["scalars"]
    # TensorBoard's Time Series opens the first two groups in name order: the curves.
    groups = sorted({tag.split("/")[0] for tag in tags["scalars"] + tags["images"]})
    assert groups[:2] == ["extrap", "interp"]
    table = result.Tensors("result/metrics/text_summary")[0].tensor_proto.string_val[0].decode()
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in table.splitlines()]
    rows = dict(cells[2:])
    assert float(rows["extrap/mse"]) == pytest.approx(metrics["extrap/mse"], rel=1e-5)
    assert {"extrap/normalized_error_add", "sparsity_error"} <= set(rows)
    assert not any(name.startswith("output_count") for name in rows)
    # The read-back tab: every output's learned formula (metrics.json) beside its truth
    # (problem.json's formula, without its "yj = ").
    readback = events.Tensors("readback/formulas/text_summary")[0].tensor_proto.string_val[0]
    learned = {f["output"]: f["learned"] for f in read_metrics(tmp_path)["formulas"]}
    assert sorted(learned) == list(range(problem["out_features"]))
    assert readback.decode() == "  \n".join(
        f"y{j}: learned {learned[j]} | truth {output['formula'].removeprefix(f'y{j} = ')}"
        for j, output in enumerate(problem["outputs"])
    )
    assert "hp_metric" not in tags["scalars"] + result_tags["scalars"]
    assert result.Scalars("result/extrap/mse")[-1].value == pytest.approx(metrics["extrap/mse"])


def test_checkpoint_reloads_with_weights_only_and_gives_the_logged_test_loss(
    tiny_overrides, tmp_path
):
    cfg = compose_config([*tiny_overrides, "model=nalu"], tmp_path)
    train(cfg)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    torch.load(checkpoint, weights_only=True)  # plain containers only
    reloaded = ArithmeticModule.load_from_checkpoint(checkpoint)
    # The last validation (step 8, the end of training) saw the weights last.ckpt holds.
    data = instantiate(cfg.data)
    data.setup("test")
    extrap = data.evaluation_set("extrap")
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(reloaded(extrap.inputs), extrap.targets).item()
    assert mse == pytest.approx(loss_curves(tmp_path)["extrap/mse"][8], rel=1e-5)


def test_same_seed_same_metrics(tiny_overrides, tmp_path):
    first = train(compose_config([*tiny_overrides, "seed=4"], tmp_path / "a"))
    second = train(compose_config([*tiny_overrides, "seed=4"], tmp_path / "b"))
    other = train(compose_config([*tiny_overrides, "seed=5"], tmp_path / "c"))
    assert first == second
    assert first != other


@pytest.mark.slow
def test_nac_learns_addition_and_subtraction_that_extrapolates(tmp_path):
    overrides = [
        "model=nac",
        "data.operations=[add,sub]",
        "data.in_features=5",
        "data.out_features=3",
        "data.train_size=320",
        "optimizer.lr=0.3",
        "trainer.max_epochs=300",
        "trainer.check_val_every_n_epoch=50",
        "trainer.enable_progress_bar=false",
    ]
    metrics = train(compose_config(overrides, tmp_path))
    assert metrics["extrap/mse"] < 1e-2


def test_last_checkpoint_holds_the_last_epoch_and_the_best_is_kept_apart(tiny_overrides, tmp_path):
    # A learning rate too small to change a float32 weight: the interpolation MSE never
    # improves after the first validation, so the best epoch is the first: its 4 steps.
    overrides = ["model=nac", "optimizer=sgd", "optimizer.lr=1e-30", "trainer.max_epochs=3"]
    train(compose_config([*tiny_overrides, *overrides], tmp_path))
    folder = tmp_path / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == ["best-step4.ckpt", "last.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    best = torch.load(folder / "best-step4.ckpt", weights_only=True)
    assert best["global_step"] == 4


class LastCheckpointAtEpochStart(L.Callback):
    """Records, as each epoch starts, the optimizer step that ``last.ckpt`` then holds (None
    before the first save); optionally asks training to stop after epoch ``stop_after``."""

    seen: ClassVar[list[int | None]] = []

    def __init__(self, stop_after: int | None = None) -> None:
        LastCheckpointAtEpochStart.seen = []
        self.stop_after = stop_after

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        saved = torch.load(last, weights_only=True)["global_step"] if last.exists() else None
        LastCheckpointAtEpochStart.seen.append(saved)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.stop_after:
            trainer.should_stop = True


@pytest.mark.parametrize(
    ("every_s", "stop_after", "seen", "final_step"),
    [
        # Every epoch.
        (0, None, [None, 4, 8], 12),
        # Not within the interval, but always at the end of training...
        (3600, None, [None, None, None], 12),
        # ... and when training is asked to stop (as Ctrl-C asks).
        (3600, 0, [None], 4),
    ],
)
def test_last_checkpoint_is_written_at_most_every_interval_and_at_the_end(
    every_s, stop_after, seen, final_step, tiny_overrides, tmp_path
):
    overrides = [
        *tiny_overrides,
        "trainer.max_epochs=3",
        f"callbacks.last_checkpoint.every_s={every_s}",
        f"+callbacks.probe._target_={__name__}.LastCheckpointAtEpochStart",
        f"+callbacks.probe.stop_after={'null' if stop_after is None else stop_after}",
    ]
    train(compose_config(overrides, tmp_path))
    assert LastCheckpointAtEpochStart.seen == seen
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == final_step


def test_gradient_clipping_bounds_the_update(tiny_overrides, tmp_path):
    def first_update(*clipping: str) -> torch.Tensor:
        overrides = [*tiny_overrides, "model=nac", "optimizer=sgd", "optimizer.lr=1.0"]
        overrides += ["optimizer.momentum=0", "trainer.max_steps=1", *clipping]
        cfg = compose_config(overrides, tmp_path / "_".join(clipping or ("none",)))
        L.seed_everything(cfg.seed, verbose=False)
        _, data, module = build_run(cfg)
        before = [p.detach().clone() for p in module.parameters()]
        # As nalu.cli.train builds the trainer: the module clips each of its steps itself.
        trainer = instantiate(
            cfg.trainer,
            logger=False,
            enable_checkpointing=False,
            gradient_clip_val=None,
            gradient_clip_algorithm=None,
        )
        trainer.fit(module, datamodule=data)
        return torch.cat(
            [(p - b).flatten() for p, b in zip(module.parameters(), before, strict=True)]
        )

    unclipped = first_update()
    clipped = first_update("trainer.gradient_clip_val=0.001")
    assert unclipped.norm() > 0.01
    # SGD with lr 1: the step is minus the gradient, whose norm was clipped to 0.001.
    assert clipped.norm().item() == pytest.approx(0.001, rel=1e-3)
    assert torch.nn.functional.cosine_similarity(clipped, unclipped, dim=0) > 0.9999
    by_value = first_update(
        "trainer.gradient_clip_val=0.0001", "trainer.gradient_clip_algorithm=value"
    )
    assert by_value.abs().max().item() == pytest.approx(0.0001, rel=1e-3)  # float32 weights


def test_a_notebook_trains_plain_objects_in_five_lines():
    data = ArithmeticDataModule(in_features=6, out_features=3, operations=["add", "sub"])
    network = NeuralAdditionUnit(6, 3)
    adam = functools.partial(torch.optim.Adam, lr=5e-2)
    module = ArithmeticModule(network, adam, [data.problem.output_operations])
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    L.Trainer(max_epochs=30, enable_model_summary=False, **quiet).fit(module, data)
    assert module.network is network
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert network(x).flatten().tolist() == pytest.approx(
        data.problem.targets(x).flatten().tolist(), abs=0.05
    )
    with pytest.raises(InvalidArgument, match="population builds each member"):
        ArithmeticModule(network, adam, [data.problem.output_operations] * 2, seeds=[0, 1])


def test_hparams_leave_out_a_deletion_and_the_checkpoint_resumed_from(tmp_path):
    overrides = ["experiment=static_nau_nmu", "~lr_schedule", "optimizer.lr=0.01"]
    cfg = compose_config([*overrides, "ckpt_path=/runs/a/last.ckpt"], tmp_path)
    hparams = hyperparameter_reader()(cfg)
    assert hparams["optimizer.lr"] == 0.01
    assert "lr_schedule" not in hparams and "ckpt_path" not in hparams
