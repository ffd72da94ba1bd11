"""Shared helpers: compose the real configs, run the real CLI, read what a run wrote, set a
unit's parameters by hand."""

import json
import os
import signal
import subprocess
import sys
import tempfile
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


# What the tests' commands run with besides the worker's environment: one line for a bad input,
# not Hydra's traceback; no warnings from the libraries.
COMMAND_ENVIRONMENT = {"HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}


def without_test_name(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the name of the running test, which pytest changes as it goes."""
    return {name: value for name, value in env.items() if name != "PYTEST_CURRENT_TEST"}


# The worker's environment as it starts, which each test starts from (``worker_environment``).
WORKER_ENVIRONMENT = without_test_name(dict(os.environ))


class CommandServer:
    """A ``command_server.py`` process for this worker's commands, started at the first one (its
    imports take the time of one fresh interpreter) and stopped with the tests."""

    def __init__(self) -> None:
        # The environment it starts in, which the interpreter, torch and nalu read as they start.
        self.env = {**WORKER_ENVIRONMENT, **COMMAND_ENVIRONMENT}
        self.process: subprocess.Popen | None = None

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a command with ``env`` may run in a fork of the server: the server's own, but
        for the name of the running test."""
        return without_test_name(env) == self.env

    def run(
        self, module: str, args: Sequence[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``python -m MODULE ARGS`` in a fork of the server, as ``subprocess.run`` runs it with
        its output captured."""
        command = [sys.executable, "-m", module, *args]
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("command_server.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
                text=True,
            )
        with tempfile.TemporaryDirectory() as streams:
            stdout, stderr = Path(streams, "stdout"), Path(streams, "stderr")
            request = {
                "module": module,
                "args": list(args),
                "cwd": str(cwd),
                "env": env,
                "stdout": str(stdout),
                "stderr": str(stderr),
                "timeout": timeout,
            }
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            reply = self.process.stdout.readline()
            if not reply:
                raise RuntimeError(f"command_server.py stopped ({self.process.wait()}); see above")
            reply = json.loads(reply)
            if reply.get("timed_out"):
                raise subprocess.TimeoutExpired(command, timeout)
            return subprocess.CompletedProcess(
                command, reply["returncode"], stdout.read_text(), stderr.read_text()
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()


COMMAND_SERVER = CommandServer()


def _reset_environment() -> None:
    for name in set(os.environ) - set(WORKER_ENVIRONMENT) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    os.environ.update(WORKER_ENVIRONMENT)


@pytest.fixture(autouse=True)
def worker_environment():
    """Each test runs in the worker's environment, whatever a fixture or the test before left in
    it (Lightning's ``seed_everything`` writes ``PL_GLOBAL_SEED``, ``nalu-train`` the fields of
    its sweep): the commands a test starts inherit it, and run in a fork of the server only
    with the server's."""
    _reset_environment()
    yield
    _reset_environment()


@pytest.fixture(scope="session", autouse=True)
def stop_command_server():
    yield
    COMMAND_SERVER.stop()


def run_cli(
    args: Sequence[str],
    cwd: Path,
    timeout: float = 300,
    module: str = "nalu.train",
    python_options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m nalu.train ARGS`` (or another ``module``) as a user would type it, run in a
    fork of ``command_server.py``, which has imported torch and the libraries around it once;
    in a fresh interpreter where the test looks at the interpreter's start: ``python_options``
    (``-X importtime``) or an environment of its own."""
    env = {**os.environ, **COMMAND_ENVIRONMENT}
    if python_options or not COMMAND_SERVER.serves(env):
        return subprocess.run(
            [sys.executable, *python_options, "-m", module, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return COMMAND_SERVER.run(module, args, cwd, env, timeout)


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
