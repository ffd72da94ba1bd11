"""The real command line, as a user types it (bad command lines: test_config_errors.py)."""

import logging
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import README, TINY, compose_config, load_events, run_cli

import nalu.training.progress
from nalu.cli.common import CONFIG_DIR, format_metrics
from nalu.cli.train import train
from nalu.config.validation import check_command_line
from nalu.results.commands import command_line
from nalu.results.record import TENSORBOARD_FLAGS
from nalu.results.report import group_runs, load_runs, median_table


def readme_train_commands() -> list[list[str]]:
    """The arguments of every ``nalu-train`` command in the README's bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == [".venv/bin/nalu-train"] and "-sc" not in words:
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("arguments", readme_train_commands(), ids=" ".join)
def test_every_nalu_train_command_in_the_readme_passes_the_command_line_check(
    arguments, tmp_path, monkeypatch
):
    # A placeholder (<run>) names a run, whose checkpoint is there; a GPU run is checked as it
    # composes on a CPU.
    monkeypatch.chdir(tmp_path)
    arguments = [re.sub(r"<[^>]+>", "run", argument) for argument in arguments]
    for argument in arguments:
        if argument.startswith("ckpt_path="):
            checkpoint = tmp_path / argument.split("=", 1)[1]
            checkpoint.parent.mkdir(parents=True)
            checkpoint.touch()
    if "trainer=gpu" in arguments:
        arguments.append("trainer.accelerator=cpu")
    check_command_line(arguments, CONFIG_DIR)


def test_the_readme_shows_nalu_train_commands():
    commands = readme_train_commands()
    assert ["experiment=nalm_single_module", "nalm=nmu", "population=5"] in commands
    assert len(commands) == len({" ".join(command) for command in commands}) > 15


def test_every_figure_the_readme_shows_is_a_png_in_the_repository():
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text(encoding="utf-8"))
    assert "docs/nalm_benchmark.png" in figures
    for figure in figures:
        assert (README.parent / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


def test_every_page_the_readme_links_to_is_in_the_repository():
    pages = re.findall(r"(?<!!)\[[^\]]*\]\(([^)#:]+)\)", README.read_text(encoding="utf-8"))
    assert "docs/speed.md" in pages
    for page in pages:
        assert (README.parent / page).is_file(), page


@pytest.mark.slow
def test_multirun_writes_one_tensorboard_run_per_job_and_a_table(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *TINY, "model=nac,nalu", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Output to a pipe, not a terminal: progress lines, each job's last one once, and no bar.
    console = result.stdout + result.stderr
    assert console.count("step 8/8 (100%) · epoch 2/2") == 4
    assert "━" not in console
    job_dirs = sorted(path for path in sweep_dir.iterdir() if path.is_dir())
    assert [path.name for path in job_dirs] == [
        "0_nac_seed0",
        "1_nac_seed1",
        "2_nalu_seed0",
        "3_nalu_seed1",
    ]
    for job_dir in job_dirs:
        events = load_events(job_dir)
        assert "_hparams_/session_start_info" in load_events(job_dir / "result").summary_metadata
        # TINY: 4 steps an epoch, 2 epochs
        assert [event.step for event in events.Scalars("extrap/mse")] == [4, 8]
    runs = load_runs([sweep_dir])
    assert sorted((run["labels"]["model"], run["labels"]["seed"]) for run in runs) == [
        ("nac", 0),
        ("nac", 1),
        ("nalu", 0),
        ("nalu", 1),
    ]
    table = median_table(group_runs(runs, ["model"]), ["model"])
    assert "| nac | 2 | 0 |" in table and "| nalu | 2 | 0 |" in table


@pytest.mark.slow
def test_the_console_prints_each_line_once_and_no_advice_that_does_not_apply(tmp_path):
    result = run_cli([*TINY, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert console.count("`Trainer.fit` stopped: `max_epochs=1` reached.") == 1
    assert "logging interval" not in console
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("`Trainer.fit` stopped") == 1  # the run's log file keeps the line
    # Output to a pipe draws no progress bar; the last progress line says where training ended.
    [line] = [line for line in console.splitlines() if "nalu.training.progress" in line]
    assert re.search(
        r"- step 4/4 \(100%\) · epoch 1/1 · \d+ steps/s · \d+:\d\d:\d\d elapsed · "
        r"interp/mse (\S+) \(best \1\)$",
        line,
    )


def test_a_long_run_without_a_progress_bar_prints_progress_lines(tmp_path, monkeypatch, caplog):
    # A line after every training chunk.
    monkeypatch.setattr(nalu.training.progress, "INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="nalu.training.progress")
    train(compose_config([*TINY, "trainer.max_epochs=3"], tmp_path))
    lines = [
        record.getMessage() for record in caplog.records if record.name == "nalu.training.progress"
    ]
    steps = [int(re.match(r"step (\d+)/12 ", line)[1]) for line in lines]
    assert steps == [4, 8, 12, 12], lines  # each epoch's one chunk, then the end of training
    assert any(re.search(r"elapsed, about \d+:\d\d:\d\d left", line) for line in lines[:-1]), lines
    assert lines[-1].startswith("step 12/12 (100%) · epoch 3/3 · ")
    # The best interpolation MSE so far is the least of the lines' current ones.
    validated = [line for line in lines if "interp/mse" in line]  # after the first validation
    current = [float(re.search(r"interp/mse (\S+) ", line)[1]) for line in validated]
    best = [float(re.search(r"\(best (\S+)\)$", line)[1]) for line in validated]
    assert len(validated) == 3 and best == [min(current[: k + 1]) for k in range(len(best))]


def test_the_terminals_progress_bar_counts_the_runs_optimizer_steps(tmp_path, monkeypatch):
    # One chunk of 4 steps an epoch: Lightning's bar would read 1/1 every epoch.
    seen = []
    bar_class = nalu.training.progress.StepProgressBar

    def on_train_epoch_end(bar, trainer, pl_module):
        task = bar.train_progress_bar
        speed = bar.progress.columns[-2]
        seen.append((task.description, task.completed, task.total, str(speed.render(task))))

    monkeypatch.setattr(bar_class, "on_train_epoch_end", on_train_epoch_end)
    train(
        compose_config(
            [*TINY, "trainer.max_epochs=3", "trainer.enable_progress_bar=true"], tmp_path
        )
    )
    assert [entry[:3] for entry in seen] == [
        ("Epoch 1/3 ", 4, 12),
        ("Epoch 2/3 ", 8, 12),
        ("Epoch 3/3 ", 12, 12),
    ]
    assert all(re.fullmatch(r"\d+ steps/s", speed) for *_, speed in seen), seen


def progress_lines_of_a_run(caplog, module: SimpleNamespace, last_mse: float | None) -> list[str]:
    """The lines ``ProgressLines`` logs over a run of 30 planned steps in 3 epochs that ends
    at ``module.step`` of ``module.epochs``, ``last_mse`` its last validation's interpolation
    MSE (the members' median; None: no validation)."""
    caplog.set_level(logging.INFO, logger="nalu.training.progress")
    lines = nalu.training.progress.ProgressLines()
    trainer = SimpleNamespace(
        callback_metrics={}, global_step=0, max_epochs=3, current_epoch=0, is_global_zero=True
    )
    lines.on_train_start(trainer, module)
    if last_mse is not None:
        trainer.callback_metrics = {"interp/mse": torch.tensor(last_mse)}
    trainer.global_step, trainer.current_epoch = module.step, module.epochs
    lines.on_train_end(trainer, module)
    return [r.getMessage() for r in caplog.records if r.name == "nalu.training.progress"]


def test_the_progress_lines_best_is_the_best_validations_not_the_last_lines(caplog):
    # Validations at 3, 1 and 2 with one line at the end: the module judged 1 the best, and
    # the line says so, as metrics.json does (not the least of the values that lines followed).
    module = SimpleNamespace(
        planned_steps=30,
        step=30,
        epochs=3,
        judge=SimpleNamespace(best_interp_mse=torch.tensor([1.0])),
        alive=torch.tensor([True]),
    )
    [line] = progress_lines_of_a_run(caplog, module, 2.0)
    assert line.startswith("step 30/30 (100%) · epoch 3/3 · ")
    assert line.endswith(" · interp/mse 2 (best 1)"), line


def test_a_populations_progress_line_gives_the_median_of_its_members_own_bests(caplog):
    # Medians 3, 1, 2 at three validations, but the living members' own bests are 5, 0.5 and 4
    # (the fourth diverged): the final metrics will give their median, 4, not the least median.
    module = SimpleNamespace(
        planned_steps=30,
        step=30,
        epochs=3,
        judge=SimpleNamespace(best_interp_mse=torch.tensor([5.0, 0.5, 4.0, 0.1])),
        alive=torch.tensor([True, True, True, False]),
    )
    [line] = progress_lines_of_a_run(caplog, module, 2.0)
    assert line.endswith(" · interp/mse 2 (best 4)"), line


def test_the_last_progress_line_of_a_run_that_stopped_early_gives_no_time_left(caplog):
    # stop_when_solved after 2 of 3 epochs (20 of 30 steps): the epochs run, as in metrics.json.
    module = SimpleNamespace(planned_steps=30, step=20, epochs=2)
    [line] = progress_lines_of_a_run(caplog, module, None)
    assert re.fullmatch(
        r"step 20/30 \(67%\) · epoch 2/3 · \d+ steps/s · \d+:\d\d:\d\d elapsed", line
    )


def test_final_metrics_print_as_one_table_of_measures_by_operation():
    metrics = {
        "extrap/mse": 2.0,
        "extrap/mse_add": 1.0,
        "extrap/mse_mul": 3.0,
        "extrap/solved_fraction_mul": 0.5,
        "train/loss": 0.25,
    }
    # Columns 10 wide after two spaces, right-aligned under their heading.
    assert format_metrics(metrics).splitlines() == [
        " " * 24 + "  " + "all".rjust(10) + "  " + "add".rjust(10) + "  " + "mul".rjust(10),
        "  extrap/mse"
        + " " * 12
        + "  "
        + "2".rjust(10)
        + "  "
        + "1".rjust(10)
        + "  "
        + "3".rjust(10),
        "  extrap/solved_fraction" + " " * 24 + "  " + "0.5".rjust(10),
        "  train/loss" + " " * 12 + "  " + "0.25".rjust(10),
    ]


@pytest.mark.slow
def test_help_pages_say_what_each_command_does_and_take_only_its_groups(tmp_path):
    shown = run_cli(["--help"], cwd=tmp_path, python_options=["-X", "importtime"])
    train_help = shown.stdout
    assert train_help.startswith("nalu-train: train neural arithmetic units")
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in shown.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "hydra" in imported  # the import report was read
    assert not {"torch", "lightning"} & imported  # a help page loads no torch
    assert "nalu-train experiment=solve population=25" in train_help
    assert "model: article_vanilla, gnalu," in train_help  # the groups, from the config tree
    evaluate_help = run_cli(["--help"], cwd=tmp_path, module="nalu.evaluate").stdout
    assert evaluate_help.startswith("nalu-evaluate: test a trained run's checkpoint")
    groups = evaluate_help.split("== Configuration groups (group=option) ==\n")[1].split("\n\n")[0]
    # Exactly the groups evaluate composes, each with every option the config tree holds.
    listed = {line.split(":")[0]: line.split(":")[1].split("(")[0] for line in groups.splitlines()}
    assert set(listed) == {"data", "trainer"}
    for group, options in listed.items():
        on_disk = sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
        assert [option.strip() for option in options.split(",")] == on_disk


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("train", "nalu-train"),
        ("evaluate", "nalu-evaluate"),
        ("report", "nalu-report"),
        ("bench", "nalu-bench"),
        ("nalm_benchmark", "python -m nalu.nalm_benchmark"),
    ],
)
def test_every_command_runs_as_python_dash_m_nalu_dot_its_name(module, command, tmp_path):
    result = run_cli(["--help"], cwd=tmp_path, module=f"nalu.{module}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert command in result.stdout.splitlines()[0]
    if command.startswith("nalu-"):  # the console scripts' help ends on examples (README)
        examples = result.stdout.split("Examples:")[1].strip().splitlines()
        assert examples[0].startswith(command), result.stdout


@pytest.mark.parametrize("target", ["sweep", "units"])
def test_a_make_target_trains_into_the_folder_its_report_reads(target, tmp_path):
    # A clock that moves on at every call: each use of the folder's name would read a new one.
    ticks = tmp_path / "ticks"
    clock = tmp_path / "bin" / "date"
    clock.parent.mkdir()
    clock.write_text(f'#!/bin/sh\necho >> {ticks}\necho "2026-01-01_00-00-$(wc -l < {ticks})"\n')
    clock.chmod(0o755)
    path = f"{clock.parent}:{os.environ['PATH']}"
    checkout = README.parent
    # -n prints the commands without running them; .venv is taken as made.
    result = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", target],
        cwd=checkout,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    [trained] = re.findall(r"hydra\.sweep\.dir=(\S+)", result.stdout)
    [reported] = re.findall(r"nalu\.report (\S+)", result.stdout)
    assert trained == reported


def test_a_printed_command_is_one_the_shell_finds(monkeypatch, tmp_path):
    # A virtual environment that is not activated: its commands by their path, which a user
    # can paste; from the checkout, relative to it.
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert command_line("nalu-report", "a b") == f"{bin_dir / 'nalu-report'} 'a b'"
    monkeypatch.chdir(bin_dir.parents[1])
    assert command_line("nalu-report") == f"{bin_dir.relative_to(bin_dir.parents[1])}/nalu-report"
    # Activated (or installed on the PATH): by its name.
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert command_line("tensorboard", "--logdir", "runs") == "tensorboard --logdir runs"


def test_make_tensorboard_serves_every_point_as_the_printed_commands_do():
    makefile = (README.parent / "Makefile").read_text()
    (serve,) = [line for line in makefile.splitlines() if "tensorboard --logdir" in line]
    assert serve.endswith(f"--logdir outputs/ {shlex.join(TENSORBOARD_FLAGS)}")


def test_make_report_reads_the_sweep_started_last_not_the_one_reported_last(tmp_path):
    sweeps = tmp_path / "outputs" / "multirun"
    for age, name in ((200, "earlier"), (100, "later")):
        (sweeps / name).mkdir(parents=True)
        started = sweeps / name / "multirun.yaml"
        started.write_text("hydra: {}\n")
        os.utime(started, (time.time() - age, time.time() - age))
    (sweeps / "earlier" / "report.md").write_text("# Report\n")  # its folder's time is now
    result = subprocess.run(
        ["make", "-n", "-f", str(README.parent / "Makefile"), "-o", ".venv/.installed", "report"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    [reported] = re.findall(r"nalu\.report (\S+)", result.stdout)
    assert reported == "outputs/multirun/later"


@pytest.mark.slow
def test_the_readmes_notebook_example_trains_as_written(tmp_path):
    (example,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
        if "ArithmeticModule(" in block
    ]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Its folder, as the example names it, and nothing else.
    assert [path.name for path in tmp_path.iterdir()] == ["outputs"]
    (events,) = (tmp_path / "outputs" / "notebook").rglob("events.out.tfevents.*")
    assert load_events(events.parent).Scalars("interp/mse")[-1].step == 20 * 32


@pytest.mark.slow
def test_a_run_without_loggers_names_no_tensorboard_command(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "logger.tensorboard=null", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Final metrics" in result.stdout
    assert not list(run_dir.rglob("events.out.tfevents.*"))
    assert "TensorBoard:" not in result.stdout  # it would serve nothing of this run
