"""Population training: members are the single runs of their seeds, trained together."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nalu.data.datamodule import EpochBatchSampler
from nalu.data.population import EpochOrders
from nalu.module import ArithmeticModule
from nalu.population import PopulationModule
from nalu.report import load_runs, loss_curves, summary_rows
from nalu.results import PopulationRecorder
from nalu.train import build_population, train


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def test_population_of_one_reproduces_the_single_run(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nalu", "seed=3", "trainer.max_epochs=3"]
    train(compose_config(overrides, tmp_path / "single"))
    train(compose_config([*overrides, "population=1"], tmp_path / "population"))
    single = _metrics(tmp_path / "single" / "metrics.json")
    member = _metrics(tmp_path / "population" / "members" / "0_nalu_seed3" / "metrics.json")
    assert member["status"] == "finished"
    assert (member["epochs"], member["steps"]) == (single["epochs"], single["steps"]) == (3, 12)
    assert member["labels"]["seed"] == member["labels"]["problem_seed"] == 3
    assert member["metrics"].keys() == single["metrics"].keys()
    for name, value in single["metrics"].items():
        assert member["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_each_member_has_the_problem_init_and_batches_of_its_seed(tiny_overrides, tmp_path):
    # Division makes each problem draw its own inputs (denominators keep |x| >= 0.1).
    overrides = [*tiny_overrides, "model=nau_nmu_gated", "data.operations=[add,mul,div]"]
    _, data, population = build_population(
        compose_config([*overrides, "population=3", "seed=5"], tmp_path)
    )
    data.setup("fit")
    problems = [json.dumps(p.to_dict()) for p in data.problems]
    assert len(set(problems)) == 3
    for member, seed in enumerate([5, 6, 7]):
        cfg = compose_config([*overrides, f"seed={seed}"], tmp_path)
        L.seed_everything(seed, verbose=False)
        single_data = instantiate(cfg.data)
        single = ArithmeticModule(
            network=OmegaConf.to_container(cfg.model, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            output_operations=single_data.problem.output_operations,
        )
        single_data.setup("fit")
        assert problems[member] == json.dumps(single_data.problem.to_dict())
        for split, dataset in single_data.datasets.items():
            assert torch.equal(data.inputs[split][member], dataset.inputs), split
            assert torch.equal(data.targets[split][member], dataset.targets), split
        stacked = population.network.state_dict()
        for name, value in single.network.state_dict().items():
            assert torch.equal(stacked[name][member], value), name
        sampler = EpochBatchSampler(64, 16, shuffle=True, seed=seed)
        orders = EpochOrders(64, [5, 6, 7])
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            orders.set_epoch(epoch)
            assert torch.equal(next(iter(orders))[member], torch.cat(list(sampler)))


class _PoisonMember(L.Callback):
    """Sets every parameter of one member to NaN when the second epoch starts."""

    def __init__(self, member: int) -> None:
        self.member = member

    def on_train_epoch_start(self, trainer: L.Trainer, module: PopulationModule) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                for parameter in module.network.parameters():
                    parameter[self.member] = math.nan


def _fit(cfg, output_dir: Path, callbacks: list[L.Callback]) -> PopulationModule:
    members, data, module = build_population(cfg)
    labels = [{"model": "nalu", "seed": m.seed} for m in members]
    recorder = PopulationRecorder(output_dir, data.problems, labels, [{}] * len(members))
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*callbacks, recorder],
    )
    trainer.fit(module, datamodule=data)
    module.use_best_parameters()
    trainer.test(module, datamodule=data, verbose=False)
    return module


def test_a_diverging_member_leaves_the_others_untouched(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nalu", "population=3", "trainer.max_epochs=3"]
    cfg = compose_config(overrides, tmp_path)
    healthy = _fit(cfg, tmp_path / "healthy", [])
    poisoned = _fit(cfg, tmp_path / "poisoned", [_PoisonMember(1)])
    assert poisoned.alive.tolist() == [True, False, True]
    steps_per_epoch = 64 // 16
    assert poisoned.diverged_at_step.tolist() == [-1, steps_per_epoch + 1, -1]
    for name, parameter in poisoned.network.named_parameters():
        other = healthy.network.get_parameter(name)
        assert torch.equal(parameter[[0, 2]], other[[0, 2]]), name
    record = _metrics(tmp_path / "poisoned" / "members" / "1_nalu_seed1" / "metrics.json")
    assert (record["status"], record["diverged_at_step"]) == ("diverged", steps_per_epoch + 1)
    # Judged at its last good validation (epoch 0), with finite metrics.
    assert math.isfinite(record["metrics"]["interp/mse"])
    for member in (0, 2):
        name = f"{member}_nalu_seed{member}/metrics.json"
        kept = _metrics(tmp_path / "poisoned" / "members" / name)
        assert kept["status"] == "finished"
        assert kept["metrics"] == _metrics(tmp_path / "healthy" / "members" / name)["metrics"]


def test_population_members_are_runs_of_the_report(tiny_overrides, tmp_path):
    medians = train(compose_config([*tiny_overrides, "model=nac", "population=3"], tmp_path))
    runs = load_runs([tmp_path])
    assert sorted(run["labels"]["seed"] for run in runs) == [0, 1, 2]
    all_ops = next(row for row in summary_rows(runs) if row["operation"] == "all")
    assert (all_ops["group"], all_ops["runs"]) == ("nac", 3)
    interp = sorted(run["metrics"]["interp/mse"] for run in runs)
    assert medians["median interp/mse"] == pytest.approx(interp[1])
    assert (tmp_path / "report.md").is_file()
    for run in runs:
        assert loss_curves(Path(run["run_dir"]))["train/loss"].keys() == {4, 8}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("population=0", "population=0: must be a positive integer"),
        ("population=ten", "population='ten': must be a positive integer"),
    ],
)
def test_bad_population_is_one_line(override, message, tmp_path):
    result = run_cli([override, f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"


def test_population_plans_the_regularizer_over_its_optimizer_steps(tiny_overrides, tmp_path):
    # TINY: 2 epochs of 4 steps; the schedule's fractions are of those 8 steps.
    cfg = compose_config([*tiny_overrides, "model=nmu", "population=2"], tmp_path)
    module = _fit(cfg, tmp_path, [])
    assert module.planned_steps == 8
    # 30% to 70% of 8 steps: λ ramps from step 2.4 to step 5.6, so it is 1/2 at step 4.
    assert module.regularizer(4, module.planned_steps) == pytest.approx(0.5)
