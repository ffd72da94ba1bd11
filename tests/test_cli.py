"""The real command line, as a user types it."""

import pytest
from conftest import TINY, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nalu.report import load_runs, median_table

BAD_CONFIGS = [
    (["model=foo"], "model=foo: unknown model; choose one of ['article_vanilla', 'mlp'"),
    (["optimizer=adamw"], "optimizer=adamw: unknown optimizer; choose one of ['adam'"),
    (["data.operations=[add,pow]"], "data.operations=['add', 'pow']: 'pow' is not one of"),
    (["data.in_features=1"], "data.in_features=1: must be an integer >= 2"),
    (
        ["data.train_range=[10,-10]"],
        "data.train_range=[10, -10]: must be [low, high] with low < high",
    ),
    (["data.extrap_range=[5,5]"], "data.extrap_range=[5, 5]: must be [low, high]"),
    (["data.train_size=0"], "data.train_size=0: must be a positive integer"),
    (["data.batch_size=-3"], "data.batch_size=-3: must be a positive integer"),
    (["model=mlp", "model.activation=Relu"], "model.activation='Relu': must name a torch.nn"),
    (["optimizer.lr=-1"], "optimizer: Invalid learning rate: -1"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS)
def test_bad_config_stops_with_one_line(overrides, message, tmp_path):
    result = run_cli([*overrides, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {message}")
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_multirun_writes_one_tensorboard_run_per_job_and_a_table(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *TINY, "model=nac,nalu", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    job_dirs = sorted(path for path in sweep_dir.iterdir() if path.is_dir())
    assert [path.name for path in job_dirs] == [
        "0_nac_seed0",
        "1_nac_seed1",
        "2_nalu_seed0",
        "3_nalu_seed1",
    ]
    for job_dir in job_dirs:
        events = EventAccumulator(str(job_dir / "tensorboard"))
        events.Reload()
        assert "_hparams_/session_start_info" in events.summary_metadata
        assert events.Scalars("extrap/mse")
    runs = load_runs([sweep_dir])
    assert sorted((run["labels"]["model"], run["labels"]["seed"]) for run in runs) == [
        ("nac", 0),
        ("nac", 1),
        ("nalu", 0),
        ("nalu", 1),
    ]
    table = median_table(runs)
    assert "| nac | 2 |" in table and "| nalu | 2 |" in table
