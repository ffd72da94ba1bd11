"""Scaling out with the ecosystem's own tools: launchers, Optuna, DDP, checkpoints, TensorBoard."""

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from conftest import TINY, compose_config, load_events, read_metrics, run_cli
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import RichProgressBar

from nalu.cli.evaluate import evaluate, lift_log_magnitude_caps, load_checkpoint
from nalu.cli.train import CONFIG_DIR, build_run, train
from nalu.config.errors import ConfigError
from nalu.config.validation import check_group_choices
from nalu.data.batches import FixedBatches, order_key
from nalu.data.datamodule import ShardBatchSampler
from nalu.results.record import CHECKPOINTS_DIR, LAST_CHECKPOINT
from nalu.results.recorder import BestCheckpoint
from nalu.units import NeuralMultiplicationUnit

# The evaluation sets of the TINY runs, for `nalu.cli.evaluate`.
TINY_DATA = [override for override in TINY if override.startswith("data.")]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path for path in sweep_dir.iterdir() if path.is_dir() and path.name[0] != ".")


# --- Data parallelism: every process reads its own shard -------------------------------------


def evaluation_shards(num_samples: int, num_replicas: int) -> list[list[int]]:
    def shard(rank: int) -> list[int]:
        sampler = ShardBatchSampler(num_samples, 4, num_replicas=num_replicas, rank=rank)
        assert len(sampler) == len(list(sampler))
        return torch.cat(list(sampler)).tolist()

    return [shard(rank) for rank in range(num_replicas)]


def training_shards(num_samples: int, num_replicas: int) -> list[list[int]]:
    """The sample indices each process trains on in epoch 3, batch after batch."""
    samples = torch.arange(num_samples, dtype=torch.float32).view(1, -1, 1)
    keys = order_key(7).view(1)

    def shard(rank: int) -> list[int]:
        stream = FixedBatches(samples, samples, 4, keys, num_replicas=num_replicas, rank=rank)
        batches = [stream.batches(3, step, 1)[0] for step in range(stream.steps_per_epoch)]
        return torch.cat([x.flatten() for x in batches]).int().tolist()

    return [shard(rank) for rank in range(num_replicas)]


def test_evaluation_shards_cover_every_sample_once():
    parts = evaluation_shards(11, 3)
    assert [len(part) for part in parts] == [4, 4, 3]
    assert sorted(i for part in parts for i in part) == list(range(11))


def test_training_shards_are_equal_disjoint_slices_of_the_epochs_permutation():
    parts = training_shards(11, 3)
    assert [len(part) for part in parts] == [3, 3, 3]  # the same number of steps on every rank
    assert len({i for part in parts for i in part}) == 9
    (whole,) = training_shards(11, 1)
    # The single-process order dealt round-robin, its last 2 samples left out.
    assert parts == [whole[rank:9:3] for rank in range(3)]


# --- Config groups --------------------------------------------------------------------------


def test_trainer_configs_extend_the_default(tmp_path):
    for name, accelerator, devices in [
        ("default", "cpu", 1),
        ("gpu", "gpu", 1),
        ("ddp", "auto", 2),
    ]:
        trainer = compose_config([f"trainer={name}"], tmp_path).trainer
        assert (trainer.accelerator, trainer.devices) == (accelerator, devices)
        assert trainer.max_epochs == 250 and trainer.use_distributed_sampler is False
    assert compose_config(["trainer=ddp"], tmp_path).trainer.strategy == "ddp"


def test_slurm_launcher_config_extends_the_plugins(tmp_path):
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=gpu"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        launcher = compose("train", overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task) == ("gpu", 60, 2)
    assert launcher.gpus_per_node == 0 and launcher.signal_delay_s == 120  # plugin's default


def test_plugin_options_are_known_and_typos_stop_with_one_line():
    check_group_choices(
        ["hydra/launcher=joblib,submitit_local,slurm", "hparams_search=nalu_optuna"], CONFIG_DIR
    )
    with pytest.raises(ConfigError, match=r"hydra/launcher=jobli: unknown hydra/launcher; choose"):
        check_group_choices(["hydra/launcher=jobli"], CONFIG_DIR)


def test_the_progress_bar_shows_the_training_loss(tmp_path):
    shown = {}

    class ReadTheBar(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            shown.update(trainer.progress_bar_metrics)

    *_, data, module = build_run(compose_config(TINY, tmp_path))
    bar = RichProgressBar()
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, callbacks=[bar, ReadTheBar()]
    )
    trainer.fit(module, datamodule=data)
    assert shown["train/loss"] == pytest.approx(float(module.judge.last_train_loss[0]))


# --- Sweeps through the plugins -------------------------------------------------------------


@pytest.mark.slow
def test_optuna_search_runs_its_trials_in_parallel_joblib_workers(tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_cli(
        [
            *TINY,
            "hparams_search=nalu_optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=3",  # one batch of three trials ...
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",  # ... on two worker processes
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stderr + result.stdout
    assert "Joblib.Parallel(n_jobs=2" in console
    assert "alembic" not in console  # the storage layer's plugin notices
    assert "A new study created" in console and "\x1b[" not in console  # no colours in a pipe
    runs = job_dirs(sweep_dir)
    # Each trial's folder (and TensorBoard run) is named by its sampled values.
    for k, run in enumerate(runs):
        assert run.name.startswith(f"{k}_nalu_optimizer.lr="), run.name
        assert "_optimizer.weight_decay=" in run.name and run.name.endswith("_seed0"), run.name
    trials = []
    for run in runs:
        overrides = dict(
            o.split("=", 1) for o in yaml.safe_load((run / ".hydra/overrides.yaml").read_text())
        )
        config = yaml.safe_load((run / ".hydra/config.yaml").read_text())
        assert 1e-4 <= float(overrides["optimizer.lr"]) <= 1e-1
        assert config["optimizer"]["lr"] == float(overrides["optimizer.lr"])
        assert 1e-7 <= config["optimizer"]["weight_decay"] <= 1e-2
        trials.append((read_metrics(run)["metrics"]["interp/mse"], config["optimizer"]["lr"]))
    assert len({lr for _, lr in trials}) == 3
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    # The objective is the interpolation (validation) error, not the extrapolation (test) one.
    assert best["best_value"] == pytest.approx(min(trials)[0])
    assert best["best_params"]["optimizer.lr"] == pytest.approx(min(trials)[1])


@pytest.mark.slow
def test_submitit_local_sweep_runs_each_job_as_a_submitit_job(tmp_path):
    result = run_cli(["-m", *TINY, "seed=0,1", "hydra/launcher=submitit_local"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # The default sweep folder, named by the command's process id, not each job's process's.
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    relative = sweep_dir.relative_to(tmp_path)
    assert f"multirun: 2 jobs in {relative}: 2 finished, 0 diverged, 0 failed" in result.stdout
    runs = job_dirs(sweep_dir)
    assert [run.name for run in runs] == ["0_nalu_seed0", "1_nalu_seed1"]
    assert [read_metrics(run)["labels"]["seed"] for run in runs] == [0, 1]
    submitit_logs = sorted((sweep_dir / ".submitit").glob("*/*_0_log.out"))
    assert len(submitit_logs) == 2
    assert all("Final metrics" in log.read_text() for log in submitit_logs)


# --- Multi-device ---------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_batches_and_syncs_metrics(tmp_path):
    # Odd sizes: 65 training samples give each process 32 (2 batches of 16 per epoch); the
    # 63 interpolation samples split 32 + 31.
    sizes = ["data.train_size=65", "data.interp_size=63"]
    run_dir = tmp_path / "run"
    args = [*TINY, *sizes, "trainer=ddp", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("Final metrics") == 1  # printed by rank 0 only
    console = result.stdout + result.stderr
    assert console.count("step 4/4 (100%) · epoch 2/2") == 1  # the last progress line, once
    recorded = read_metrics(run_dir)
    assert (recorded["epochs"], recorded["steps"]) == (2, 4)  # one process alone: 2 x 5 steps
    # One process evaluating the final weights on the whole sets gives the same numbers: the
    # processes' partial sums were added up.
    cfg = compose_config(
        [*TINY_DATA, *sizes, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "evaluate",
        config_name="evaluate",
    )
    single = evaluate(cfg)
    for name in ("interp/mse", "interp/mse_mul", "extrap/mse"):
        assert recorded["metrics"][name] == pytest.approx(single[name], rel=1e-5)


# --- Checkpoints ----------------------------------------------------------------------------


def test_the_checkpoints_land_where_resume_and_the_run_folder_checks_look(tmp_path):
    # conf/callbacks names the folder and file that resume (`resumable_checkpoint`), the
    # run-folder refusal and evaluate's messages read from record.py.
    callbacks = compose_config([], tmp_path).callbacks
    for name in ("best_checkpoint", "last_checkpoint"):
        assert callbacks[name].dirpath == str(tmp_path / CHECKPOINTS_DIR)
    assert f"{callbacks.last_checkpoint.filename}.ckpt" == LAST_CHECKPOINT


@pytest.mark.slow
@pytest.mark.parametrize("resample", ["false", "true"])
def test_interrupted_run_resumes_from_its_last_checkpoint(resample, tmp_path):
    two_epochs = [*TINY, f"data.resample={resample}"]
    four_epochs = [*two_epochs, "trainer.max_epochs=4"]
    train(compose_config(two_epochs, tmp_path / "interrupted"))  # stops after 2 of 4 epochs
    last = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    resumed = train(compose_config([*four_epochs, f"ckpt_path={last}"], tmp_path / "resumed"))
    straight = train(compose_config(four_epochs, tmp_path / "straight"))
    assert (
        read_metrics(tmp_path / "resumed")["steps"] == read_metrics(tmp_path / "straight")["steps"]
    )
    # The resumed run trained epochs 2 and 3 only, from the saved weights and optimizer state,
    # and ends where the uninterrupted run ends; its new folder's curves are whole, the first
    # two epochs' points carried by the checkpoint (TINY has 4 steps per epoch).
    events, straight_events = load_events(tmp_path / "resumed"), load_events(tmp_path / "straight")
    for tag in ("train/loss", "interp/mse", "extrap/mse", "interp/normalized_error_mul"):
        points = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in points] == [4, 8, 12, 16], tag
        expected = [event.value for event in straight_events.Scalars(tag)]
        assert [value for _, value in points] == pytest.approx(expected, rel=1e-5), tag
    assert resumed == pytest.approx(straight, rel=1e-5)
    # Its best checkpoint is the whole run's best, as the uninterrupted run's.
    assert [path.name for path in (tmp_path / "resumed" / "checkpoints").glob("best-*")] == [
        path.name for path in (tmp_path / "straight" / "checkpoints").glob("best-*")
    ]


def test_a_resume_into_a_new_folder_keeps_the_best_checkpoint_so_far_as_the_one_to_beat(
    tmp_path,
):
    # Lightning's callback starts its ranking anew in a new folder: the resumed run's first
    # validation, however worse, would become "best-step<N>.ckpt".
    old, new = tmp_path / "run" / "checkpoints", tmp_path / "resumed" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best-step8.ckpt").write_bytes(b"the best so far")
    best = BestCheckpoint(dirpath=new, filename="best-step{step}", monitor="interp/mse")
    state = {
        "dirpath": str(old),
        "best_model_path": str(old / "best-step8.ckpt"),
        "best_model_score": torch.tensor(2.5),
    }
    best.load_state_dict(state)
    assert (new / "best-step8.ckpt").read_bytes() == b"the best so far"
    assert best.best_model_path == str(new / "best-step8.ckpt")
    assert float(best.best_model_score) == 2.5
    # A later validation is saved only where it beats 2.5 (one process: its own decision).
    one_process = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=bool))
    assert best.check_monitor_top_k(one_process, torch.tensor(3.0)) is False
    assert best.check_monitor_top_k(one_process, torch.tensor(2.0)) is True


@pytest.mark.slow
def test_evaluate_lifts_the_log_magnitude_cap_where_exact_products_exceed_it(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose_config([*TINY, "model=nmu", "data.operations=[mul]"], run))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    problem = json.loads((run / "problem.json").read_text())
    exact = torch.zeros(4, 6)  # W_ji = 1 on each output's two inputs: y_j = x_left × x_right
    for output in problem["outputs"]:
        exact[output["output"], [output["left"], output["right"]]] = 1.0
    # The weights the test loop takes: the best epoch's, kept beside the last ones.
    checkpoint["state_dict"]["network.weight"] = exact
    checkpoint["members"]["best_parameters"]["weight"] = exact
    exact_path = tmp_path / "exact.ckpt"
    torch.save(checkpoint, exact_path)
    cfg = compose_config(
        [*TINY_DATA, "data.operations=[mul]", f"ckpt_path={exact_path}",
         "data.extrap_range=[-1e5,1e5]"],
        tmp_path / "evaluate",
        config_name="evaluate",
    )  # fmt: skip
    metrics = evaluate(cfg)
    # Products up to 1e10 lie beyond e^20 ≈ 4.9e8: clipped, the exact weights would miss them.
    assert metrics["extrap/solved_fraction"] == 1.0
    assert metrics["extrap/relative_error"] < 1e-4
    assert "beyond the units' cap e^20 = 4.85e+08 (max_log_magnitude): raised to" in (
        capsys.readouterr().out
    )


def test_a_callback_set_to_null_is_off(tmp_path):
    train(compose_config([*TINY, "callbacks.best_checkpoint=null"], tmp_path))
    assert [path.name for path in (tmp_path / CHECKPOINTS_DIR).iterdir()] == [LAST_CHECKPOINT]


def test_the_cap_is_raised_to_the_log_of_the_largest_target_plus_one_and_only_upward():
    stack = torch.nn.Sequential(
        NeuralMultiplicationUnit(3, 2, max_log_magnitude=20.0),
        NeuralMultiplicationUnit(2, 1, max_log_magnitude=30.0),
    )
    # ln(1e10) + 1 = 23.0259 + 1: above the first unit's cap, below the second's.
    assert lift_log_magnitude_caps(stack, 1e10) == (
        "Targets reach |y| = 1e+10 beyond the units' cap e^20 = 4.85e+08 (max_log_magnitude): "
        "raised to 24 for this evaluation."
    )
    assert stack[0].max_log_magnitude == pytest.approx(24.0259, abs=1e-4)
    assert stack[1].max_log_magnitude == 30.0
    # ln(1e8) + 1 = 19.42 lies under every cap: nothing changes.
    unit = NeuralMultiplicationUnit(3, 1, max_log_magnitude=20.0)
    assert lift_log_magnitude_caps(unit, 1e8) is None
    assert unit.max_log_magnitude == 20.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "ckpt_path='{path}': no such checkpoint file"),
        (b"", "ckpt_path='{path}': not a checkpoint written by nalu-train"),
        (b"[project]\n", "ckpt_path='{path}': not a checkpoint written by nalu-train"),
    ],
    ids=["missing", "empty", "text"],
)
def test_load_checkpoint_names_a_bad_path(content, message, tmp_path):
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path)
    assert str(error.value) == message.format(path=path)


@pytest.mark.slow
def test_evaluate_cli_with_a_bad_checkpoint_stops_with_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    result = run_cli(
        ["ckpt_path=notes.txt", f"hydra.run.dir={tmp_path}/eval"],
        cwd=tmp_path,
        module="nalu.evaluate",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: ckpt_path='notes.txt': not a checkpoint written by nalu-train"
    ]


# --- TensorBoard, as a user sees it ---------------------------------------------------------
