"""``make benchmark`` (``python -m nalu.nalm_benchmark``) on a small grid: the units'
populations, the operations asked for, one report, and a second call that keeps what finished,
resumes what was killed and refuses other settings."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_config, drawn_colours, run_cli

from nalu.cli.common import EXIT_INTERRUPTED
from nalu.cli.nalm_benchmark import UnitProcesses, UnitRun, task_seeds, unit_operations

SMALL = [
    "data.train_size=256",
    "data.interp_size=200",
    "data.extrap_size=200",
    "trainer.max_epochs=2",
    *(
        f"~problems.range.{label}"
        for label in (
            "U_m20_m10",
            "U_m2_m1",
            "U_m1p2_m1p1",
            "U_m0p2_m0p1",
            "U_m2_2",
            "U_0p1_0p2",
            "U_1p1_1p2",
        )
    ),
]


def benchmark(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nalu.nalm_benchmark", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_benchmark_trains_each_unit_once_and_resumes(tmp_path):
    out = tmp_path / "bench"
    args = ["--units", "nau,nmu,npu", "--seeds", "2", "--ops", "sub,mul", "--jobs", "2", *SMALL]
    first = benchmark(out, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    # Two units at a time, the largest population first (the NPU's 6 parameters a member
    # against 2): each unit's lines led by its name.
    started = [line for line in first.stdout.splitlines() if ": training in " in line]
    assert started == [
        f"[3/3] npu: training in {out / 'npu'}",
        f"[1/3] nau: training in {out / 'nau'}",
        f"[2/3] nmu: training in {out / 'nmu'}",
    ]
    for unit in ("nau", "nmu", "npu"):
        assert f"[{unit}] Success rates: {out / unit / 'report.md'}" in first.stdout
    # npu runs on × and ÷: × asked for; nau on + and −: − asked for.
    members = sorted(path.name for path in out.glob("*/members/*"))
    assert members == sorted(
        f"{k}_{unit}_{op}_{cell}_seed{seed}"
        for unit, op in (("nau", "sub"), ("nmu", "mul"), ("npu", "mul"))
        for k, (cell, seed) in enumerate(
            (cell, seed) for cell in ("U_1_2", "U_10_20") for seed in (0, 1)
        )
    )
    report = (out / "report.md").read_text()
    for row in ("| nau / sub / U_1_2 | sub | 2 |", "| npu / mul / U_10_20 | mul | 2 |"):
        assert row in report
    figure = "![Success rate per problem cell, a panel per operation](success_by_cell.png)"
    assert figure in report
    assert drawn_colours(out / "success_by_cell.png") > 2
    links = "[nau](nau/report.md), [nmu](nmu/report.md), [npu](npu/report.md)"
    assert f"Each unit's own report, with its loss curves per cell: {links}." in report
    departures = f"2 seeds per cell, not 25; overrides: {' '.join(SMALL)}"
    assert f"**Not the task's setup** ({departures}): these rates are not comparable" in report

    # A population killed after its last epoch's checkpoint but before its report: resumed; a
    # unit added to the list: trained beside the others.
    (out / "nmu" / "report.md").unlink()
    again = benchmark(out, *[arg.replace("nau,nmu,npu", "nau,nmu,npu,nac") for arg in args])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[1/4] nau: finished, kept ({out / 'nau'})" in again.stdout
    assert f"[2/4] nmu: resumed from {out / 'nmu' / 'checkpoints' / 'last.ckpt'}" in again.stdout
    # Resumed in place without Lightning's notices about the checkpoints folder it left.
    assert "model_checkpoint.py" not in again.stderr
    assert f"[4/4] nac: training in {out / 'nac'}" in again.stdout
    assert "| nmu / mul / U_10_20 | mul | 2 |" in (out / "nmu" / "report.md").read_text()
    assert "| nac / sub / U_10_20 | sub | 2 |" in (out / "report.md").read_text()

    other = benchmark(out, *args[: -len(SMALL)], "--seeds", "3")
    assert other.returncode == 2
    assert other.stderr.startswith(f"error: {out} holds a benchmark of other settings: ")
    assert "seeds=2 (now 3)" in other.stderr


def test_each_unit_runs_on_the_operations_of_its_recipe():
    assert unit_operations("nau") == ["add", "sub"]
    assert unit_operations("nmu") == ["mul"]
    assert unit_operations("nmru") == ["mul", "div"]
    assert unit_operations("nalu") == ["add", "sub", "mul", "div"]


def test_the_runner_says_how_far_the_benchmark_is(tmp_path, capsys, monkeypatch):
    runs = [
        UnitRun(f"[{k}/3] {u}", u, tmp_path / u, [], p)
        for k, (u, p) in enumerate([("nau", 900), ("inalu", 8100), ("select", 7200)], start=1)
    ]
    processes = UnitProcesses(runs, jobs=2)
    assert [run.unit for run in processes.pending] == ["inalu", "select", "nau"]
    # inalu done, select and nau training, 1 hour 2 minutes 5 seconds in.
    processes.pending = []
    processes.running = {"select process": runs[2], "nau process": runs[0]}
    monkeypatch.setattr("time.monotonic", lambda: 3725.0)
    processes._status(started=0.0)
    assert capsys.readouterr().out == (
        "benchmark: 01:02:05 elapsed · 1 of 3 units done · training select, nau\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "nau,foo"], "['foo'] not in conf/nalm"),
        (["--ops", "add,pow"], "--ops=add,pow: ['pow'] not among ['add', 'sub', 'mul', 'div']"),
        (["--seeds", "0"], "--seeds=0: must be a positive integer"),
        (["--jobs", "0"], "--jobs=0: must be a positive integer"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, args, message):
    result = benchmark(tmp_path / "bench", *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.slow
def test_no_folder_is_one_line_naming_the_argument(tmp_path):
    result = run_cli([], cwd=tmp_path, module="nalu.nalm_benchmark")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the following arguments are required: dir "
        "(see python -m nalu.nalm_benchmark --help)"
    ]


@pytest.mark.slow
def test_the_benchmark_runs_the_primers_25_seeds_unless_told(tmp_path):
    # One home for the default: experiment=nalm_single_module's population.
    assert task_seeds() == compose_config(["experiment=nalm_single_module"], tmp_path).population
    assert task_seeds() == 25
    help_text = run_cli(["--help"], cwd=tmp_path, module="nalu.nalm_benchmark").stdout
    assert "seeds per cell (default 25)" in help_text


@pytest.mark.slow
def test_a_unit_that_fails_stops_the_benchmark_with_the_command_that_resumes_it(tmp_path):
    out = tmp_path / "bench"
    # A checkpoint that only its loading finds unreadable: the unit's own process fails.
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    ckpt = f"ckpt_path={tmp_path / 'bad.ckpt'}"
    result = benchmark(out, "--units", "nau", "--seeds", "2", "--ops", "sub", ckpt)
    assert result.returncode == 2
    *_, refusal, hint = result.stderr.strip().splitlines()
    assert refusal == (
        f"error: ckpt_path='{tmp_path / 'bad.ckpt'}': not a readable checkpoint of nalu-train "
        "(UnpicklingError)"
    )
    # Every setting the folder was started with, as make takes them (another is refused).
    assert hint == (
        f"benchmark stopped at nau; `make benchmark BENCH_DIR={out} UNITS=nau SEEDS=2 OPS=sub "
        f"ARGS={ckpt}` resumes it"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs=0: must be a positive integer"),
        ("trainer=gpux", "trainer=gpux: unknown trainer; choose one of ['ddp', 'default', 'gpu']"),
    ],
)
def test_a_bad_override_is_refused_before_the_folder_records_it(tmp_path, override, message):
    out = tmp_path / "bench"
    result = benchmark(out, "--units", "nau,nmu", "--seeds", "2", override)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    # Nothing written: the corrected command may use the same folder.
    assert not out.exists()


@pytest.mark.slow
def test_operations_that_none_of_the_units_trains_are_refused_before_the_folder_records_them(
    tmp_path,
):
    out = tmp_path / "bench"
    result = benchmark(out, "--units", "nau", "--ops", "mul", "--seeds", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --ops=mul: no unit of --units=nau trains any of them (nau: add, sub)"
    ]
    assert not out.exists()  # the corrected call (--ops add) may use the same folder


@pytest.mark.slow
def test_ctrl_c_stops_the_units_side_by_side_at_their_epochs_end_with_the_command_to_resume(
    tmp_path,
):
    out = tmp_path / "bench"
    # Each unit held after its first epoch's last.ckpt until a signal comes (test_reliability).
    hold = [
        "+callbacks.hold._target_=test_reliability.HoldForSignal",
        "+callbacks.hold.marker=${paths.output_dir}/held",
    ]
    args = ["--units", "nau,nmu", "--seeds", "2", "--ops", "sub,mul", "--jobs", "2"]
    log = tmp_path / "bench.log"
    python_path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "nalu.nalm_benchmark", str(out), *args, *SMALL, *hold],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": python_path},
    )
    while not all((out / unit / "held").exists() for unit in ("nau", "nmu")):
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches the benchmark
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    output = log.read_text()
    assert "Traceback" not in output
    for unit in ("nau", "nmu"):
        assert f"[{unit}] Ctrl-C: stopping after this epoch and saving last.ckpt" in output
        assert (out / unit / "checkpoints" / "last.ckpt").is_file()
        assert not (out / unit / "report.md").exists()
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("benchmark stopped at ")
    assert last_line.endswith(
        f"`make benchmark BENCH_DIR={out} UNITS=nau,nmu SEEDS=2 OPS=sub,mul "
        f"ARGS='{' '.join([*SMALL, *hold])}'` resumes it"
    )
    assert sorted(last_line.split(";")[0].removeprefix("benchmark stopped at ").split(", ")) == [
        "nau",
        "nmu",
    ]
