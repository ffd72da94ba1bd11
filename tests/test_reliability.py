"""Faults injected on purpose: a diverging run, a killed run, random problem settings."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY, compose_config, load_events, read_metrics, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from nalu.cli.common import EXIT_DIVERGED, EXIT_INTERRUPTED, resumable_checkpoint
from nalu.cli.evaluate import load_checkpoint
from nalu.cli.train import check_folder_free, check_resume, same_class, train
from nalu.config.errors import ConfigError, Diverged, Interrupted
from nalu.config.rules import MYSTERY_OPERATIONS
from nalu.data.problem import MysteryArithmeticProblem
from nalu.results.report import group_runs, load_runs, median_table


class PoisonParameterAt(L.Callback):
    """Fault injection: turns one weight into NaN in optimizer step ``step`` (before its update)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step + 1 == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize(
    ("poisoned_step", "diverged_at", "reason"),
    [
        # The next step's loss is the first non-finite value.
        (10, 11, "train loss is nan"),
        # The epoch's last step: only the parameters it leaves are non-finite.
        (12, 12, "parameter network.weight_hat is not finite"),
    ],
)
def test_diverged_run_stops_says_so_and_keeps_its_last_good_checkpoint(
    poisoned_step, diverged_at, reason, tmp_path
):
    # TINY has 4 steps per epoch: checkpoints after steps 4 and 8, then the poison.
    overrides = [
        *TINY,
        "callbacks.last_checkpoint.every_s=0",
        "model=nac",
        "trainer.max_epochs=4",
        f"+callbacks.poison._target_={__name__}.PoisonParameterAt",
        f"+callbacks.poison.step={poisoned_step}",
    ]
    with pytest.raises(Diverged) as diverged:
        train(compose_config(overrides, tmp_path))
    assert diverged.value.step == diverged_at
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert diverged.value.last_good_checkpoint == str(last)
    recorded = read_metrics(tmp_path)
    assert recorded["status"] == "diverged"
    assert recorded["diverged_at_step"] == diverged_at
    assert recorded["reason"] == reason
    assert recorded["last_good_checkpoint"] == str(last)
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 8
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    events = load_events(tmp_path)
    status = events.Tensors("run/status/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert status.startswith(f"diverged diverged_at_step={diverged_at}")
    assert [event.value for event in events.Scalars("run/diverged_at_step")] == [diverged_at]
    # Its HParams row is a failure (the tab's status filter).
    end = plugin_data_pb2.HParamsPluginData.FromString(
        load_events(tmp_path / "result")
        .summary_metadata["_hparams_/session_end_info"]
        .plugin_data.content
    )
    assert end.session_end_info.status == api_pb2.STATUS_FAILURE
    # Judged, like a population's diverged member, at its best validation before the fault.
    best = min(event.value for event in events.Scalars("interp/mse"))
    assert recorded["metrics"]["interp/mse"] == pytest.approx(best, rel=1e-6)


@pytest.mark.slow
def test_diverged_single_run_exits_with_its_own_code(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        [*TINY, "model=mlp", "optimizer.lr=1e30", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.returncode == EXIT_DIVERGED
    assert "Traceback" not in result.stderr + result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    # Step 2 comes before any checkpoint, and the message does not promise one.
    assert (
        last_line
        == f"error: {run_dir}: diverged at step 2: train loss is nan; no checkpoint before it"
    )
    assert "last_good_checkpoint" not in read_metrics(run_dir)
    assert read_metrics(run_dir)["status"] == "diverged"


@pytest.mark.slow
def test_multirun_goes_on_after_a_diverged_job_and_the_report_counts_it(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *TINY, "model=mlp", "optimizer.lr=1e-3,1e30,1e-2", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = load_runs([sweep_dir])
    assert [run["status"] for run in sorted(runs, key=lambda r: r["run_dir"])] == [
        "finished",
        "diverged",
        "finished",
    ]
    assert "| mlp | 3 | 1 |" in median_table(group_runs(runs, ["model"]), ["model"])
    report = run_cli([str(sweep_dir), "--group-by", "model"], cwd=tmp_path, module="nalu.report")
    # The console's median table: model, runs, diverged as aligned columns.
    assert re.search(r"^mlp +3 +1 ", report.stdout, re.MULTILINE)


# Epochs of 64 steps, a checkpoint written after every one.
RESUMABLE = [
    *TINY,
    "callbacks.last_checkpoint.every_s=0",
    "data.train_size=1024",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "seed=3",
]


class HoldForSignal(L.Callback):
    """Holds a run at the start of its second epoch, its first ``last.ckpt`` written whole,
    until a signal comes, and says so by creating ``marker``: a test's kill or interrupt then
    lands mid-run however fast the machine is."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != 1:
            return
        # Blocked before the marker says "send it", the signal waits for sigwait, then goes to
        # the run's own handler: none is lost between the two (SIGKILL needs no handler).
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        self.marker.touch()
        received = signal.sigwait(stops)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        signal.raise_signal(received)


def start_run(arguments: list[str], run_dir: Path, log: Path) -> subprocess.Popen:
    """``python -m nalu.train ARGUMENTS`` in the background, held after its first checkpoint
    (``HoldForSignal``, its marker beside ``log``), its output in ``log``: a run in
    ``run_dir``, or with ``-m`` a sweep there."""
    folder = "hydra.sweep.dir" if "-m" in arguments else "hydra.run.dir"
    hold = [
        f"+callbacks.hold._target_={__name__}.HoldForSignal",
        f"+callbacks.hold.marker={log.with_suffix('.held')}",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "nalu.train", *arguments, *hold, f"{folder}={run_dir}"],
        cwd=run_dir.parent,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(__file__).parent)},
    )


def first_checkpoint(
    process: subprocess.Popen, log: Path, run_dir: Path, pattern: str = "checkpoints/last.ckpt"
) -> Path:
    """The ``last.ckpt`` under ``run_dir`` (``pattern``: a sweep's jobs' are
    ``*/checkpoints/last.ckpt``) once the run that ``start_run`` started with ``log`` holds
    after writing it."""
    while not log.with_suffix(".held").exists():
        assert process.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    (last,) = run_dir.glob(pattern)
    return last


@pytest.mark.slow
@pytest.mark.parametrize("population", [1, 3])
def test_killed_run_resumes_to_the_same_final_metrics(population, tmp_path):
    arguments = [*RESUMABLE, f"population={population}"]
    killed_dir = tmp_path / "killed"
    log = tmp_path / "killed.log"
    process = start_run(arguments, killed_dir, log)
    last = first_checkpoint(process, log, killed_dir)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not list(killed_dir.rglob("metrics.json"))
    resumed = train(compose_config([*arguments, f"ckpt_path={last}"], tmp_path / "resumed"))
    uninterrupted = train(compose_config(arguments, tmp_path / "uninterrupted"))
    assert resumed == uninterrupted
    for run in ("resumed", "uninterrupted"):
        records = [json.loads(p.read_text()) for p in (tmp_path / run).rglob("metrics.json")]
        assert [r["status"] for r in records] == ["finished"] * population
        assert {r["steps"] for r in records} == {4 * 64}
    if population > 1:
        member = Path("members") / "2_nalu_seed5" / "metrics.json"
        assert read_metrics((tmp_path / "resumed" / member).parent) == read_metrics(
            (tmp_path / "uninterrupted" / member).parent
        )


@pytest.mark.slow
def test_ctrl_c_stops_at_the_epochs_end_without_a_traceback_and_resumes(tmp_path):
    arguments = [*RESUMABLE, "population=3"]
    run_dir = tmp_path / "interrupted"
    log = tmp_path / "interrupted.log"
    process = start_run(arguments, run_dir, log)
    last = first_checkpoint(process, log, run_dir)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    output = log.read_text()
    assert "Traceback" not in output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {run_dir}: interrupted after epoch ")
    assert last_line.endswith(f"ckpt_path={last}")
    assert not list(run_dir.rglob("metrics.json"))
    resumed = train(compose_config([*arguments, f"ckpt_path={last}"], tmp_path / "resumed"))
    assert resumed == train(compose_config(arguments, tmp_path / "uninterrupted"))


class CtrlCBeforeTraining(L.Callback):
    """A Ctrl-C as the run is set up, before it takes Ctrl-C over at its fit's start."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_a_ctrl_c_before_training_stops_at_once_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    callback = f"+callbacks.ctrl_c._target_={__name__}.CtrlCBeforeTraining"
    result = run_cli([*TINY, callback, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == EXIT_INTERRUPTED, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: interrupted by Ctrl-C before an epoch's end; a run resumes from "
        "<run>/checkpoints/last.ckpt where it saved one, else starts anew"
    )


class SigtermWhileTesting(L.Callback):
    """A SIGTERM to this process as the final test starts, as a cluster's time limit might."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_sigterm_during_the_final_test_interrupts_the_run_which_resumes(tmp_path):
    # Evaluation batches of 16 samples: Lightning's loop stops at a SIGTERM between batches.
    arguments = [*RESUMABLE, "data.eval_batch_size=16"]
    term = [f"+callbacks.term._target_={__name__}.SigtermWhileTesting"]
    with pytest.raises(Interrupted) as interrupted:
        train(compose_config([*arguments, *term], tmp_path / "terminated"))
    last = tmp_path / "terminated" / "checkpoints" / "last.ckpt"
    assert str(interrupted.value).endswith(f"ckpt_path={last}")
    assert not (tmp_path / "terminated" / "metrics.json").exists()
    resumed = train(compose_config([*arguments, f"ckpt_path={last}"], tmp_path / "resumed"))
    assert resumed == train(compose_config(arguments, tmp_path / "uninterrupted"))


@pytest.mark.slow
def test_sigterm_stops_a_sweep_at_the_epochs_end_with_a_checkpoint_to_resume(tmp_path):
    sweep = tmp_path / "sweep"
    # Jobs whose folders hold "=", which the resume command must quote for Hydra.
    lrs = "optimizer.lr=0.001,0.002"
    log = tmp_path / "sweep.log"
    process = start_run(["-m", *RESUMABLE, lrs], sweep, log)
    last = first_checkpoint(process, log, sweep, "*/checkpoints/last.ckpt")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    output = log.read_text()
    assert "Traceback" not in output
    assert "SIGTERM: stopping after this epoch" in output
    last_line = output.strip().splitlines()[-1]
    job = last.parent.parent
    assert last_line.startswith(f"error: {job}: interrupted after epoch ")
    assert "the sweep stops here (its later jobs did not start)" in last_line
    # The sweep stopped: its second job never started.
    assert [path.name for path in sweep.iterdir() if path.is_dir()] == [job.name]
    # The command it gives resumes the job alone, in its own folder, to its end.
    resume = shlex.split(last_line.split("resume this job alone with ")[1])
    assert f"ckpt_path={last}" in resume
    # Its overrides name the test's hold, which the resumed run, past that epoch, imports.
    tests = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    resumed = subprocess.run(resume, cwd=tmp_path, env=tests, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((job / "metrics.json").read_text())["status"] == "finished"


def test_an_optimizer_is_the_checkpoints_whichever_path_names_its_class():
    assert same_class("torch.optim.Adam", "torch.optim.adam.Adam")
    assert not same_class("torch.optim.Adam", "torch.optim.AdamW")
    assert not same_class("torch.optim.Adam", "no.such.Optimizer")


def test_a_half_written_or_foreign_checkpoint_is_refused_in_one_line(tmp_path):
    train(compose_config([*TINY, "model=nac"], tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:1000])  # what a kill mid-write would leave

    def resume(path, *overrides: str) -> None:
        check_resume(compose_config([*TINY, *overrides, f"ckpt_path={path}"], tmp_path / "new"))

    def refusal(path, *overrides: str) -> str:
        with pytest.raises(ConfigError) as refused:
            resume(path, *overrides)
        return str(refused.value)

    # The reader's own error is named in brackets (its type, whatever torch's version says).
    unreadable = refusal(truncated, "model=nac")
    assert unreadable.startswith(f"ckpt_path='{truncated}': not a readable checkpoint of ")
    assert "\n" not in unreadable
    assert refusal(last, "model=nalu") == (
        f"ckpt_path='{last}': holds another model (nalu.units.NeuralAccumulator); resume with "
        "the model config that wrote it"
    )
    assert refusal(last, "model=nac", "seed=3") == (
        f"ckpt_path='{last}': written by seeds [0], but this run has [3]; resume with the seed "
        "and population that wrote it"
    )
    resume(last, "model=nac")


@st.composite
def problem_settings(draw: st.DrawFn) -> dict:
    min_abs_denominator = draw(st.floats(1e-3, 5.0))
    # The range always holds values beyond the denominator gap on at least one side.
    high = draw(st.floats(min_abs_denominator + 0.1, 1e3))
    low = draw(st.floats(-1e3, high - 0.1))
    return {
        "in_features": draw(st.integers(2, 40)),
        "out_features": draw(st.integers(1, 20)),
        "operations": tuple(
            draw(st.lists(st.sampled_from(MYSTERY_OPERATIONS), min_size=1, unique=True))
        ),
        "problem_seed": draw(st.integers(0, 2**32 - 1)),
        "min_abs_denominator": min_abs_denominator,
        "value_range": (low, high),
        "size": draw(st.integers(1, 50)),
        "data_seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=60, deadline=None)
@given(problem_settings())
def test_any_problem_has_finite_targets_of_the_right_shape_from_distinct_inputs(config):
    value_range, size, data_seed = (
        config.pop("value_range"),
        config.pop("size"),
        config.pop("data_seed"),
    )
    problem = MysteryArithmeticProblem(**config)
    x = problem.sample_inputs(size, value_range, torch.Generator().manual_seed(data_seed))
    y = problem.targets(x)
    assert x.shape == (size, problem.in_features)
    assert y.shape == (size, problem.out_features)
    assert torch.isfinite(y).all()
    assert (problem.left_index != problem.right_index).all()
    for index in (problem.left_index, problem.right_index):
        assert ((index >= 0) & (index < problem.in_features)).all()
    low, high = value_range
    slack = 1e-5 * max(abs(low), abs(high))  # float32 rounding of low + (high - low) * u
    assert (x >= low - slack).all() and (x <= high + slack).all()
    denominators = x[:, problem.denominator_mask].abs()
    assert (denominators >= problem.min_abs_denominator * (1 - 1e-5)).all()


def test_a_checkpoint_whose_network_class_is_gone_is_refused_in_one_line(tmp_path):
    # A checkpoint of another nalu version names a class this one does not have.
    train(compose_config([*TINY, "model=mlp"], tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    checkpoint["hyper_parameters"]["network"]["_target_"] = "nalu.baselines.MLP"
    torch.save(checkpoint, last)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(last)
    assert str(error.value) == (
        f"ckpt_path={str(last)!r}: its network cannot be built here (Error locating target "
        "'nalu.baselines.MLP'); evaluate it with the nalu version that wrote it"
    )


def test_a_run_killed_before_its_first_last_checkpoint_resumes_from_its_newest(tmp_path):
    # last.ckpt is first written some seconds in; the first validation's best checkpoint may
    # be all a killed run saved.
    run = tmp_path / "sweep" / "0_nau_optimizer.lr=0.1_seed0"  # a name Hydra needs quoted
    (run / "checkpoints").mkdir(parents=True)
    assert resumable_checkpoint(run) is None
    (run / "checkpoints" / "best-step12.ckpt").write_bytes(b"")
    assert resumable_checkpoint(run) == run / "checkpoints" / "best-step12.ckpt"
    # A new run there is refused, naming the checkpoint to resume from, however the folder
    # is written on the command line.
    for folder in (f"hydra.run.dir='{run}'", f"hydra.run.dir='{run}/../{run.name}'"):
        with pytest.raises(ConfigError) as refused:
            check_folder_free([folder], None)
        assert str(refused.value).endswith(
            f"choose another folder, or resume that run there with "
            f"ckpt_path={run / 'checkpoints' / 'best-step12.ckpt'}"
        )
    # Resumed there, from a checkpoint inside it: allowed.
    check_folder_free(
        [f"hydra.run.dir='{run}/../{run.name}'"], str(run / "checkpoints" / "best-step12.ckpt")
    )
    # Its last.ckpt, once written, is what a resume takes.
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resumable_checkpoint(run) == run / "checkpoints" / "last.ckpt"
