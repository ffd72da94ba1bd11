"""Chunks of optimizer steps run as captured CUDA graphs on a GPU (``CapturedChunks``): the
steps they record are the steps a run takes one by one. Off CUDA the same chunk function runs
eagerly, which is what most of these tests compare; the last one runs only where there is a
GPU, and compares the captured graphs themselves with steps taken one by one there."""

import pytest
import torch
from conftest import TINY, compose_config

from nalu.cli.train import train
from nalu.training.captured import CapturedChunks
from nalu.training.module import ArithmeticModule


@pytest.fixture
def chunks_taken(monkeypatch) -> list[int]:
    """Every chunk run through the captured path records its number of steps here."""
    taken: list[int] = []
    monkeypatch.setattr(ArithmeticModule, "_captures_chunks", lambda self: True)
    chunk_body = ArithmeticModule._chunk_body

    def recorded(self, chunk, count, size, rates):
        taken.append(count)
        chunk_body(self, chunk, count, size, rates)

    monkeypatch.setattr(ArithmeticModule, "_chunk_body", recorded)
    return taken


@pytest.mark.slow
@pytest.mark.parametrize("population", [1, 3])
def test_fresh_batches_in_chunks_train_as_step_by_step(tmp_path, population, request):
    # 100 steps an epoch in chunks of 32 (32, 32, 32, 4), λ's ramp and the rate's decay
    # stepping inside them, and max_steps cutting the second epoch's third chunk after 6 steps.
    overrides = [
        *TINY,
        "experiment=static_nau_nmu",
        "data.train_size=1600",
        "data.out_features=1",
        "data.in_features=6",
        f"population={population}",
        "compile=false",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "trainer.max_steps=170",
    ]
    by_step = train(compose_config(overrides, tmp_path / "by_step"))
    taken = request.getfixturevalue("chunks_taken")
    in_chunks = train(compose_config(overrides, tmp_path / "in_chunks"))
    assert taken == [32, 32, 32, 4, 32, 32, 6]
    assert in_chunks == pytest.approx(by_step, rel=1e-6, abs=1e-9)
    assert_same_parameters(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["value", "norm"])
def test_clipped_gradients_in_chunks_train_as_step_by_step(tmp_path, algorithm, request):
    # Clipped at 0.01, every step's gradients are cut (an NAU's gradients at its start are
    # about 1): by value each element the clamp Lightning's clipping applies, by norm each
    # member's whole gradient.
    overrides = [
        *TINY,
        "model=nau",
        "population=2",
        "optimizer.lr=0.05",
        "trainer.gradient_clip_val=0.01",
        f"trainer.gradient_clip_algorithm={algorithm}",
    ]
    by_step = train(compose_config(overrides, tmp_path / "by_step"))
    unclipped = train(compose_config(overrides[:-2], tmp_path / "unclipped"))
    taken = request.getfixturevalue("chunks_taken")
    in_chunks = train(compose_config(overrides, tmp_path / "in_chunks"))
    assert taken == [4, 4]  # 64 samples in batches of 16, 2 epochs
    assert in_chunks == pytest.approx(by_step, rel=1e-6, abs=1e-9)
    assert in_chunks != pytest.approx(unclipped, rel=1e-3)
    assert_same_parameters(tmp_path)


def assert_same_parameters(tmp_path, runs=("by_step", "in_chunks")) -> None:
    """The two runs' networks at their last step, as their last checkpoints hold them."""
    trained = {}
    for run in runs:
        checkpoint = tmp_path / run / "checkpoints" / "last.ckpt"
        state = torch.load(checkpoint, weights_only=False, map_location="cpu")
        trained[run] = {n: t for n, t in state["state_dict"].items() if n.startswith("network.")}
    first, second = (trained[run] for run in runs)
    assert first.keys() == second.keys()
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_fixed_training_set_in_chunks_trains_as_step_by_step(tmp_path, request):
    # 72 samples in batches of 16: each epoch's chunk is 4 full steps and a last step of 8.
    overrides = [*TINY, "model=nau", "data.train_size=72", "population=2", "optimizer.lr=0.05"]
    by_step = train(compose_config(overrides, tmp_path / "by_step"))
    taken = request.getfixturevalue("chunks_taken")
    in_chunks = train(compose_config(overrides, tmp_path / "in_chunks"))
    assert taken == [4, 1, 4, 1]
    assert in_chunks == pytest.approx(by_step, rel=1e-6, abs=1e-9)
    assert_same_parameters(tmp_path)


def test_a_gpu_runs_checkpoint_resumes_on_the_cpu_as_if_trained_there(tmp_path):
    # A captured run's optimizer keeps its step counts on the device ("capturable"), and its
    # checkpoint says so; resumed where steps are taken one by one, it trains as a CPU run's.
    two_epochs = [*TINY, "optimizer.fused=false"]  # fused Adam ignores "capturable" on a CPU
    four_epochs = [*two_epochs, "trainer.max_epochs=4"]
    train(compose_config(two_epochs, tmp_path / "interrupted"))
    last = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    for group in state["optimizer_states"][0]["param_groups"]:
        group["capturable"] = True
    torch.save(state, last)
    resumed = train(compose_config([*four_epochs, f"ckpt_path={last}"], tmp_path / "resumed"))
    straight = train(compose_config(four_epochs, tmp_path / "straight"))
    assert resumed == pytest.approx(straight, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a GPU")
@pytest.mark.parametrize(
    ("task", "graphs_recorded"),
    [
        # fresh batches, compiled, λ's ramp and the rate's decay: one 100-step chunk an epoch
        (
            ["experiment=static_nau_nmu", "data.train_size=1600", "data.out_features=1"],
            [(100, 16, False, False)],
        ),
        # a fixed training set with a smaller last batch: segments of 4 steps and of 1
        (
            ["model=nau", "data.train_size=72", "optimizer.lr=0.05"],
            [(4, 16, False, False), (1, 8, False, False)],
        ),
        # gradients clipped by value (the NALM iNALU recipe's): inside the graph too
        (
            [
                "model=nau",
                "trainer.gradient_clip_val=0.01",
                "trainer.gradient_clip_algorithm=value",
            ],
            [(4, 16, False, False)],
        ),
    ],
)
def test_on_a_gpu_captured_chunks_train_as_step_by_step(
    tmp_path, monkeypatch, task, graphs_recorded
):
    recorded = []
    capture = CapturedChunks._capture
    monkeypatch.setattr(
        CapturedChunks,
        "_capture",
        lambda self, key, chunk: (recorded.append(key), capture(self, key, chunk)),
    )
    overrides = [*TINY, *task, "population=3", "trainer=gpu", "trainer.max_epochs=3"]
    for graphs in ("false", "true"):
        train(compose_config([*overrides, f"cuda_graphs={graphs}"], tmp_path / graphs))
    assert recorded == graphs_recorded  # (steps, batch size, diverged, settled), each once
    assert_same_parameters(tmp_path, runs=("false", "true"))
