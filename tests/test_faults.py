"""Faults a run survives: a full disk, a folder in a result's place, an output under a file,
runs started at once, a failed sweep job, a population that diverges whole, corrupt runs."""

import errno
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, compose_config, run_cli
from omegaconf import OmegaConf

from nalu.cli.common import (
    EXIT_DIVERGED,
    EXIT_JOBS_FAILED,
    EXIT_OUTPUT_ERROR,
    MultirunSummary,
    check_output_folder,
    count_jobs,
    output_error_message,
)
from nalu.cli.report import main as report_main
from nalu.cli.train import train
from nalu.results.record import RunRecord


def test_a_full_disk_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_the_disk_is_full(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            return real_save(obj, handle, *args, **kwargs)
        handle.write(b"\x80" * 4096)  # part of a checkpoint, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left on device"):
        # last.ckpt at every epoch's end, so that which saves came first is no matter of time.
        overrides = [*TINY, "trainer.max_epochs=3", "callbacks.last_checkpoint.every_s=0"]
        train(compose_config(overrides, tmp_path))
    monkeypatch.undo()
    # The two checkpoints of the first epoch (4 steps) are whole; the third save, the best of
    # the second epoch, left no part behind (no temporary file either).
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    assert [path.name for path in checkpoints] == ["best-step4.ckpt", "last.ckpt"]
    for path in checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == 4 and checkpoint["state_dict"], path


@pytest.mark.slow
def test_a_folder_in_place_of_the_results_file_stops_before_training(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "metrics.json").mkdir(parents=True)
    result = run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == EXIT_OUTPUT_ERROR
    assert result.stderr.strip().splitlines() == [
        f"error: {run_dir}/metrics.json: a folder is in the way; results are written whole or "
        "not at all"
    ]
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_an_output_folder_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "notes.txt").write_text("a file\n")
    result = run_cli([*TINY, f"hydra.run.dir={tmp_path}/notes.txt/run"], cwd=tmp_path)
    assert result.returncode == EXIT_OUTPUT_ERROR
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path}/notes.txt/run: hydra.run.dir: ")
    assert "is a file" in line


def test_an_output_folder_where_the_system_makes_none_is_refused_in_one_line():
    # /proc takes no new folders, whatever its permission bits say (root passes them all).
    with pytest.raises(OSError) as refused:
        check_output_folder(Path("/proc/nalu-run"), "hydra.run.dir")
    assert output_error_message(refused.value) == (
        "/proc/nalu-run: hydra.run.dir: no folder can be made in /proc (No such file or "
        "directory); results are written whole or not at all"
    )
    assert not Path("/proc/nalu-run").exists()


@pytest.mark.slow
def test_two_runs_started_together_write_two_folders(tmp_path):
    env_command = [sys.executable, "-m", "nalu.train", *TINY]
    runs = [
        subprocess.Popen([*env_command, f"seed={seed}"], cwd=tmp_path, stderr=subprocess.PIPE)
        for seed in (0, 1)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr.decode()[-2000:]
    folders = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(folders) == 2
    seeds = sorted(json.loads((f / "metrics.json").read_text())["labels"]["seed"] for f in folders)
    assert seeds == [0, 1]


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_goes_on_and_ends_with_a_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    jobs = [f"{k}_nalu_optimizer.lr={lr}_seed0" for k, lr in enumerate(("0.01", "0.02", "0.03"))]
    (sweep_dir / jobs[1] / "metrics.json").mkdir(parents=True)  # job 1 cannot write
    lrs = "optimizer.lr=0.01,0.02,0.03"
    result = run_cli(["-m", *TINY, lrs, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert result.returncode == EXIT_JOBS_FAILED, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert "Traceback" not in console
    assert f"{sweep_dir}/{jobs[1]}: job failed (exit code {EXIT_OUTPUT_ERROR})" in console
    assert f"multirun: 3 jobs in {sweep_dir}: 2 finished, 0 diverged, 1 failed" in console
    assert (sweep_dir / jobs[2] / "metrics.json").is_file()  # the sweep went on
    # The finished job of the lower validation MSE (one seed: one problem), and the report's
    # command.
    validation = {
        job: json.loads((sweep_dir / job / "metrics.json").read_text())["metrics"]["interp/mse"]
        for job in (jobs[0], jobs[2])
    }
    best = min(validation, key=validation.get)
    assert f"best on the validation set: {best} (interp/mse {validation[best]:.4g})" in console
    # The report's command, as printed, runs where it was printed.
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith(f"nalu-report {sweep_dir}")
    report = subprocess.run(shlex.split(last.removeprefix("report: ")), cwd=tmp_path)
    assert report.returncode == 0 and (sweep_dir / "report.md").is_file()


@pytest.mark.slow
def test_a_population_whose_members_all_diverge_exits_with_the_diverged_code(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        [*TINY, "population=3", "model=mlp", "optimizer.lr=1e30", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_DIVERGED
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "diverged at step" in line
    statuses = {RunRecord.read(path.parent).status for path in run_dir.rglob("metrics.json")}
    assert statuses == {"diverged"}


def test_a_report_over_a_corrupt_run_still_writes(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    RunRecord("finished", {"model": "nac", "seed": 0}, 2, 8, {"extrap/mse": 1.0}).write(good)
    for name, content in {"corrupt": "{not json", "empty": "{}", "list": "[1, 2]"}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(content)
    (tmp_path / "folder" / "metrics.json").mkdir(parents=True)
    report_main([str(tmp_path)])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    # One warning per unreadable file, naming it and why: "warning: PATH (why): unreadable, ..."
    assert [w.removeprefix("warning: ").split(" (")[0] for w in warnings] == [
        str(tmp_path / name / "metrics.json") for name in ("corrupt", "empty", "folder", "list")
    ]
    assert all(w.endswith("): unreadable, left out of the report") for w in warnings)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith(f"# Report: 1 runs under {tmp_path} (4 unreadable runs left out)")
    assert "| nac | all | 1 |" in report


def test_a_sweeps_best_job_is_ranked_by_validation_mse_a_populations_by_its_members_median(
    tmp_path,
):
    def job(name: str, *runs: tuple[str, str, float]) -> None:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        for folder, status, mse in runs:
            metrics = {"interp/mse": mse, "extrap/mse": 0.0}  # the test set never ranks
            RunRecord(status, {}, 1, 4, metrics).write(tmp_path / name / folder)

    job("0_single", (".", "finished", 0.5))
    # Members at 0.1, 0.4 and 0.9: median 0.4 (a diverged member's MSE does not count).
    members = [(f"members/{k}", "finished", mse) for k, mse in enumerate((0.1, 0.4, 0.9))]
    job("1_population", *members, ("members/3", "diverged", 0.0))
    job("2_failed")
    counts = count_jobs(tmp_path)
    assert (counts.jobs, counts.finished, counts.diverged, counts.failed) == (3, 2, 0, 1)
    assert counts.best == ("1_population", 0.4, None)


def test_a_sweep_of_different_problems_names_no_best_job(tmp_path):
    # An MSE of + and − outputs and one of × outputs are on scales apart: the lower names no
    # better job.
    for name, operations, mse in (("0_nau", ["add", "sub"], 100.0), ("1_nau", ["mul"], 1.0)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        RunRecord("finished", {}, 1, 4, {"interp/mse": mse}).write(tmp_path / name)
        problem = {"problem": "mystery_arithmetic", "operations": operations, "problem_seed": 0}
        (tmp_path / name / "problem.json").write_text(json.dumps(problem))
    counts = count_jobs(tmp_path)
    assert (counts.best, counts.problems_differ) == (None, ("data.operations",))


@pytest.mark.parametrize("one_problem", [False, True])  # problem_seed=${seed}, or fixed
@pytest.mark.parametrize(
    ("models", "diverged", "best"),
    [
        # nac's jobs at 1 and 9 (median 5), mlp's at 2 and 3 (median 2.5): seed 0 is the
        # easier draw for both, so its nac job (1) is no better configuration.
        (["model=nac", "model=mlp"], [], ("model=mlp", 2.5, 2)),
        (["model=nac"], [], None),  # seeds alone: nothing to choose between
        # mlp's seed 1 diverged: its one job (2) is not compared with nac's two seeds.
        (["model=nac", "model=mlp"], [("model=mlp", 1)], ("model=nac", 5.0, 2)),
        # Rates alike in their first digits keep every digit: two configurations, not one.
        (
            ["optimizer.lr=0.0044303752", "optimizer.lr=0.0044312345"],
            [],
            ("optimizer.lr=0.0044312345", 2.5, 2),
        ),
    ],
)
def test_jobs_of_several_seeds_are_ranked_by_configuration(
    tmp_path, models, diverged, best, one_problem
):
    mses = [[1.0, 9.0], [2.0, 3.0]]
    for k, model in enumerate(models):
        for seed in (0, 1):
            job = tmp_path / f"{2 * k + seed}_job_seed{seed}"
            (job / ".hydra").mkdir(parents=True)
            overrides = ["experiment=article", model, f"seed={seed}"]
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            status = "diverged" if (model, seed) in diverged else "finished"
            RunRecord(status, {}, 1, 4, {"interp/mse": mses[k][seed]}).write(job)
            problem_seed = 0 if one_problem else seed
            problem = {"problem": "mystery_arithmetic", "operations": ["mul"]}
            problem["problem_seed"] = problem_seed
            (job / "problem.json").write_text(json.dumps(problem))
    counts = count_jobs(tmp_path)
    assert (counts.best, counts.problems_differ) == (best, ())


def test_jobs_that_differ_in_their_extrapolation_range_alone_have_a_best(tmp_path):
    # Their validation MSEs measure one problem: only the test set differs.
    for name, extrap, mse in (("0_nau", [-5, 5], 5.0), ("1_nau", [-50, 50], 1.0)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        RunRecord("finished", {}, 1, 4, {"interp/mse": mse}).write(tmp_path / name)
        problem = {"problem": "mystery_arithmetic", "operations": ["mul"], "problem_seed": 0}
        (tmp_path / name / "problem.json").write_text(json.dumps(problem))
        config = f"data:\n  interp_range: [-1, 1]\n  extrap_range: {extrap}\n"
        (tmp_path / name / ".hydra" / "config.yaml").write_text(config)
    counts = count_jobs(tmp_path)
    assert (counts.best, counts.problems_differ) == (("1_nau", 1.0, None), ())


def test_a_sweep_whose_jobs_all_failed_offers_no_report(tmp_path, capsys):
    (tmp_path / "0_nau" / ".hydra").mkdir(parents=True)  # failed before its metrics.json
    MultirunSummary().on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    )
    assert (
        capsys.readouterr().out
        == f"multirun: 1 job in {tmp_path}: 0 finished, 0 diverged, 1 failed\n"
    )
    RunRecord("finished", {}, 1, 4, {"interp/mse": 1.0}).write(tmp_path / "0_nau")
    MultirunSummary().on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    )
    assert "nalu-report" in capsys.readouterr().out.splitlines()[-1]
