"""Shared helpers: compose the real configs, run the real CLI, read what a run wrote, set a
unit's parameters by hand."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

# pytest-xdist (make test) runs a worker per core: each worker, and each command a test starts,
# computes on one thread, or their thread pools would spin against each other on the same cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

# Started in the background (`make test &` in a script), the tests inherit Ctrl-C ignored, and so
# would the commands they start, as Python leaves an ignored SIGINT ignored; those commands get
# Ctrl-C here as a terminal's foreground command does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import torch  # after the thread count, which torch reads as it loads
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nalu.cli.train import CONFIG_DIR
from nalu.data import ArithmeticDataModule

README = Path(__file__).parents[1] / "README.md"

# Every model config, as `model=<name>` takes it.
MODEL_CONFIGS = sorted(path.stem for path in (CONFIG_DIR / "model").glob("*.yaml"))

# The figures of a sweep's report, in the order report.md shows them.
REPORT_FIGURES = [
    "training_loss",
    "validation_loss",
    "test_loss",
    "test_relative_error",
    "test_loss_by_operation",
    "success",
]

# A problem small enough that two epochs take well under a second.
TINY = [
    "data.in_features=6",
    "data.out_features=4",
    "data.train_size=64",
    "data.interp_size=64",
    "data.extrap_size=64",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]


def compose_config(
    overrides: Sequence[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """A primary config (``train`` or ``evaluate``) exactly as the CLI would compose it, writing
    into ``output_dir``."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def run_cli(
    args: Sequence[str],
    cwd: Path,
    timeout: float = 300,
    module: str = "nalu.train",
    python_options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m nalu.train ARGS`` (or another ``module``) in a subprocess, as a user would
    type it; ``python_options`` go to the interpreter (``-X importtime``)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, *python_options, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def close_figures():
    """Tests that draw a report's figures to read them leave them to this: pyplot keeps every
    open figure for the whole process."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def named_metrics(metric) -> dict:
    """A ``MemberOutputMSE`` of one candidate per output read as its named metrics."""
    measured = metric.measured()
    return metric.summary(measured["candidate_mse"][:, 0], measured["target_mean_square"])


def solved_outputs(metric):
    """``[S, out]`` bool: the outputs of a one-candidate ``MemberOutputMSE`` below threshold."""
    return metric.measured()["candidate_mse"][:, 0] < metric.success_threshold


def read_metrics(run_dir: Path) -> dict:
    """The ``metrics.json`` a run wrote."""
    return json.loads((run_dir / "metrics.json").read_text())


def set_(parameter: torch.nn.Parameter, values) -> None:
    """Set a parameter to hand-chosen values."""
    with torch.no_grad():
        parameter.copy_(torch.as_tensor(values, dtype=parameter.dtype))


def small_datamodule(**kwargs) -> ArithmeticDataModule:
    """A set-up ``ArithmeticDataModule`` of 6 inputs, 3 outputs and 100 training samples in
    batches of 32, with ``kwargs`` changed."""
    defaults = {"in_features": 6, "out_features": 3, "train_size": 100, "batch_size": 32}
    datamodule = ArithmeticDataModule(**{**defaults, **kwargs})
    datamodule.setup("fit")
    return datamodule


def load_events(run_dir: Path | str) -> EventAccumulator:
    """A run's TensorBoard events, every point of every curve, text and image kept."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    return events.Reload()


def drawn_colours(figure_file: Path) -> int:
    """How many colours the PNG at ``figure_file`` shows, read back as an image viewer reads it
    (a figure saved blank, or not a PNG at all, fails here or shows one colour)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(figure_file, format="png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 300, pixels.shape  # a figure, not an icon
    return len(torch.from_numpy(pixels.reshape(-1, pixels.shape[-1])).unique(dim=0))
