"""Chunks of optimizer steps run as captured CUDA graphs on a GPU (``CapturedChunks``): the
steps they record are the steps a run takes one by one. Off CUDA the same chunk function runs
eagerly, which is what these tests compare (the capture itself is checked on a GPU by
``make bench``)."""

import pytest
import torch
from conftest import TINY, compose_config

from nalu.cli.train import train
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
        "+trainer.max_steps=170",
    ]
    by_step = train(compose_config(overrides, tmp_path / "by_step"))
    taken = request.getfixturevalue("chunks_taken")
    in_chunks = train(compose_config(overrides, tmp_path / "in_chunks"))
    assert taken == [32, 32, 32, 4, 32, 32, 6]
    assert in_chunks == pytest.approx(by_step, rel=1e-6, abs=1e-9)
    assert_same_parameters(tmp_path)


def assert_same_parameters(tmp_path) -> None:
    """The two runs' networks at their last step, as their last checkpoints hold them."""
    trained = {}
    for run in ("by_step", "in_chunks"):
        state = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)
        trained[run] = {n: t for n, t in state["state_dict"].items() if n.startswith("network.")}
    assert trained["by_step"].keys() == trained["in_chunks"].keys()
    for name, value in trained["by_step"].items():
        torch.testing.assert_close(trained["in_chunks"][name], value, rtol=1e-6, atol=1e-7)


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
