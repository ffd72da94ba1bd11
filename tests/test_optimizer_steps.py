"""Several optimizer steps per training_step call (a chunk of batches), and everything that must
still hold step by step: max_steps, the learning-rate schedule, the regulariser's ramp, the
logged steps, the step hooks, and a compiler that fails."""

import json
import logging
from typing import ClassVar

import lightning as L
import pytest
import torch
from conftest import TINY, compose_config, load_events
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nalu.cli.train import train
from nalu.training import module

# TINY: 64 samples in batches of 16, 4 optimizer steps per epoch, one chunk each.
STEPS_PER_EPOCH = 4


class RecordSteps(L.Callback):
    """What each optimizer step saw: its step, the learning rate and whether backward ran."""

    steps: ClassVar[list[tuple[int, float]]] = []
    backward_passes = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordSteps.steps, RecordSteps.backward_passes = [], 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordSteps.backward_passes += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        RecordSteps.steps.append((trainer.global_step + 1, optimizer.param_groups[0]["lr"]))


def scalars(run_dir, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in load_events(run_dir).Scalars(tag)}


def test_max_steps_stops_at_its_step_inside_a_chunk(tmp_path):
    overrides = [*TINY, "model=nac", "trainer.max_epochs=3", "trainer.max_steps=6"]
    train(compose_config(overrides, tmp_path))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["steps"] == 6
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6
    # The second epoch, cut short after its second step, still has its training loss.
    assert sorted(scalars(tmp_path, "train/loss")) == [4, 6]


def test_each_step_has_its_own_learning_rate_and_hooks(tmp_path):
    overrides = [*TINY, "model=nac", "lr_schedule=linear_decay", "optimizer.lr=0.1"]
    overrides += [f"+callbacks.record._target_={__name__}.RecordSteps"]
    train(compose_config(overrides, tmp_path))
    # 8 steps; the rate holds until 70% of them (5.6), then falls linearly to 0 at step 8: the
    # step k update uses the factor of k - 1 steps taken, 1 - (k - 1 - 5.6) / 2.4 past 5.6.
    expected = [0.1] * 6 + [0.1 * (1 - 0.4 / 2.4), 0.1 * (1 - 1.4 / 2.4)]
    assert [step for step, _ in RecordSteps.steps] == list(range(1, 9))
    assert [lr for _, lr in RecordSteps.steps] == pytest.approx(expected)
    assert RecordSteps.backward_passes == 8


class CountTorchSteps(L.Callback):
    """Counts the torch optimizer's step hooks, its own and a global one."""

    own = shared = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        CountTorchSteps.own = CountTorchSteps.shared = 0

        def own(*_: object) -> None:
            CountTorchSteps.own += 1

        def shared(*_: object) -> None:
            CountTorchSteps.shared += 1

        trainer.optimizers[0].register_step_post_hook(own)
        self.handle = register_optimizer_step_pre_hook(shared)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.handle.remove()


# Without hooks an eager step updates Adam's state itself (adam_update), and a compiled one in
# its graph, neither through optimizer.step(), which calls them.
@pytest.mark.parametrize("compiled", [False, True])
def test_torchs_optimizer_step_hooks_run_at_every_step(tmp_path, compiled):
    overrides = [*TINY, "model=nac", f"+callbacks.count._target_={__name__}.CountTorchSteps"]
    train(compose_config([*overrides, f"compile={compiled}"], tmp_path))
    assert (CountTorchSteps.own, CountTorchSteps.shared) == (8, 8)


def test_an_eager_run_calls_adams_step_once_to_make_its_state(tmp_path, monkeypatch):
    calls = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: calls.append(1) or step(*a, **k))
    train(compose_config([*TINY, "model=nac"], tmp_path))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["optimizer_states"][0]["state"][0]["step"] == 8
    assert len(calls) == 1


def test_the_regulariser_ramps_step_by_step_and_batch_losses_are_logged_at_their_steps(
    tmp_path,
):
    overrides = [*TINY, "model=nau", "regularizer.scale=1", "trainer.log_every_n_steps=3"]
    train(compose_config(overrides, tmp_path))
    # λ(t) = clamp((t - 2.4) / 3.2, 0, 1) at steps taken t = 0..7 (30% to 70% of 8): 0, 0, 0,
    # 0.1875, then 0.5, 0.8125, 1, 1; each epoch logs the mean of its four.
    ramp = scalars(tmp_path, "train/regularizer_scale")
    assert ramp == pytest.approx({4: 0.1875 / 4, 8: (0.5 + 0.8125 + 1 + 1) / 4})
    assert sorted(scalars(tmp_path, "train/batch_loss")) == [3, 6]


@pytest.mark.slow
def test_batch_losses_are_logged_sparsely_enough_for_tensorboard_to_show_every_one(tmp_path):
    # 1,200 steps logged every step would be 1,200 points, which TensorBoard would show a
    # sample of: every 2nd step is 600, all shown.
    overrides = [
        *TINY,
        "trainer.max_epochs=300",
        "trainer.log_every_n_steps=1",
        "trainer.check_val_every_n_epoch=100",
    ]
    train(compose_config(overrides, tmp_path))
    assert sorted(scalars(tmp_path, "train/batch_loss")) == list(range(2, 1201, 2))


def test_a_failing_compiler_leaves_the_run_eager_with_one_warning(tmp_path, monkeypatch, caplog):
    def broken_compile(function, **options):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return compiled

    overrides = [*TINY, "model=nmu", "trainer.max_epochs=1"]
    eager = train(compose_config(overrides, tmp_path / "eager"))
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="nalu.training.module"):
        compiled = train(compose_config([*overrides, "compile=true"], tmp_path / "compiled"))
    warnings = [r.getMessage() for r in caplog.records if r.name == "nalu.training.module"]
    assert warnings == [
        "torch.compile failed (RuntimeError: no C++ compiler found); training without it"
    ]
    assert compiled == eager


@pytest.mark.slow
def test_a_whole_step_that_fails_to_compile_is_taken_in_compiled_parts_after_one_warning(
    tmp_path, monkeypatch, caplog
):
    def failing(step):
        def whole_step(*inputs):
            raise RuntimeError("cannot trace this step\nmore detail")

        return whole_step

    overrides = [*TINY, "model=nmu", "trainer.max_epochs=1", "compile=true"]
    monkeypatch.setattr(module, "compile_whole_step", lambda step: None)
    in_parts = train(compose_config(overrides, tmp_path / "parts"))
    monkeypatch.setattr(module, "compile_whole_step", failing)
    with caplog.at_level(logging.WARNING, logger="nalu.training.module"):
        fallen_back = train(compose_config(overrides, tmp_path / "fallen_back"))
    warnings = [r.getMessage() for r in caplog.records if r.name == "nalu.training.module"]
    assert warnings == [
        "torch.compile failed on the whole step (RuntimeError: cannot trace this step); "
        "compiling its parts"
    ]
    # The same steps, the first one eager instead of compiled.
    assert fallen_back.keys() == in_parts.keys()
    for name, value in in_parts.items():
        assert fallen_back[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_eager_one(tmp_path):
    overrides = [*TINY, "model=nau_nmu", "population=2"]
    eager = train(compose_config(overrides, tmp_path / "eager"))
    compiled = train(compose_config([*overrides, "compile=true"], tmp_path / "compiled"))
    assert compiled.keys() == eager.keys()
    for name, value in eager.items():
        assert compiled[name] == pytest.approx(value, rel=1e-3, abs=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["value", "norm"])
@pytest.mark.parametrize("inputs", [6, 16], ids=["stored", "handed_over"])
def test_a_compiled_step_clips_its_gradients_as_an_eager_one(tmp_path, algorithm, inputs):
    # Clipped at 0.01, every step's gradients are cut (an NAU's are about 1 at its start), inside
    # the compiled graph of the whole step, whether it keeps its gradients in each .grad (weights
    # 6 wide) or hands them to Adam (16 wide: hands_gradients_over).
    clip = ["trainer.gradient_clip_val=0.01", f"trainer.gradient_clip_algorithm={algorithm}"]
    overrides = [*TINY, "model=nau", "population=2", "optimizer.lr=0.05"]
    overrides.append(f"data.in_features={inputs}")
    eager = train(compose_config([*overrides, *clip], tmp_path / "eager"))
    compiled = train(compose_config([*overrides, *clip, "compile=true"], tmp_path / "compiled"))
    unclipped = train(compose_config([*overrides, "compile=true"], tmp_path / "unclipped"))
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-7)
    assert compiled != pytest.approx(unclipped, rel=1e-3)


@pytest.mark.slow
def test_each_compiled_run_in_one_process_compiles_its_own_step(tmp_path):
    # A sweep's jobs train in one process. The compiler keeps the variants of earlier jobs and,
    # past its recompile limit (1 here, 8 by default), runs the code eagerly without a word: each
    # run must compile its step and evaluation afresh, as the first did.
    from torch._dynamo.utils import counters

    compiled_graphs = []
    # The compiler's own patch: it restores the limit afterwards for the tests that follow in
    # this process (pytest's monkeypatch would delete the setting instead).
    with torch._dynamo.config.patch(recompile_limit=1):
        for size in (2, 3):
            before = counters["stats"]["unique_graphs"]
            overrides = [*TINY, "model=nac", f"population={size}", "compile=true"]
            train(compose_config([*overrides, "trainer.max_epochs=1"], tmp_path / f"run{size}"))
            compiled_graphs.append(counters["stats"]["unique_graphs"] - before)
    assert compiled_graphs[0] > 0
    assert compiled_graphs[1] == compiled_graphs[0]
