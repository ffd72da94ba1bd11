"""Populations: S members trained in one run are the single runs of their seeds."""

import json
import math
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose_config, load_events, read_metrics

from nalu.cli.train import build_run, print_summary, train
from nalu.results.record import (
    EXTRAP_MSE_OF,
    EXTRAP_RELATIVE_ERROR,
    INTERP_MSE,
    TRAIN_LOSS,
)
from nalu.results.recorder import RunLayout
from nalu.results.report import group_runs, load_runs, loss_curves, plot_curves, summary_rows
from nalu.training.curves import MemberCurves
from nalu.training.divergence import Divergence
from nalu.training.members import Members
from nalu.training.module import ArithmeticModule, living_summaries


def test_each_member_has_the_problem_init_and_batches_of_its_seed(tiny_overrides, tmp_path):
    # Division makes each problem draw its own inputs (denominators keep |x| >= 0.1).
    overrides = [*tiny_overrides, "model=nau_nmu_gated", "data.operations=[add,mul,div]"]
    members, data, population = build_run(
        compose_config([*overrides, "population=3", "seed=5"], tmp_path)
    )
    data.setup("fit")
    problems = [json.dumps(member.data.problem.to_dict()) for member in members]
    assert len(set(problems)) == 3
    batches = list(data.train_dataloader())
    assert batches[0][0].shape == (3, 16, 6) and batches[0][1].shape == (3, 16, 4)
    for member, seed in enumerate([5, 6, 7]):
        cfg = compose_config([*overrides, f"seed={seed}"], tmp_path)
        (single_member,), _, single = build_run(cfg)
        single_data = single_member.data
        single_data.setup("fit")
        assert problems[member] == json.dumps(single_data.problem.to_dict())
        for split, dataset in single_data.datasets.items():
            assert torch.equal(data.inputs[split][member], dataset.inputs), split
            assert torch.equal(data.targets[split][member], dataset.targets), split
        stacked = population.network.state_dict()
        for name, value in single.network.state_dict().items():
            assert torch.equal(stacked[name][member], value), name
        # Each member's batches are those of its own run, in its own order.
        single_batches = list(single_data.train_dataloader())
        for (x, y), (single_x, single_y) in zip(batches, single_batches, strict=True):
            assert torch.equal(x[member], single_x) and torch.equal(y[member], single_y)


class _PoisonMember(L.Callback):
    """Sets every parameter of one member to NaN when the second epoch starts."""

    def __init__(self, member: int) -> None:
        self.member = member

    def on_train_epoch_start(self, trainer: L.Trainer, module: ArithmeticModule) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                for parameter in module.network.parameters():
                    parameter[self.member] = math.nan


# Compiled, a step is one graph that masks the diverged member's gradients at every step.
@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True])
def test_a_diverging_member_leaves_the_others_untouched(tiny_overrides, tmp_path, compiled):
    overrides = [*tiny_overrides, "model=nalu", "population=3", "trainer.max_epochs=3"]
    overrides.append(f"compile={compiled}")
    train(compose_config(overrides, tmp_path / "healthy"))
    poison = [f"+callbacks.poison._target_={__name__}._PoisonMember", "+callbacks.poison.member=1"]
    poisoned = train(compose_config([*overrides, *poison], tmp_path / "poisoned"))
    steps_per_epoch = 64 // 16
    record = read_metrics(tmp_path / "poisoned" / "members" / "1_nalu_seed1")
    assert (record["status"], record["diverged_at_step"]) == ("diverged", steps_per_epoch + 1)
    # Judged at its last good validation (epoch 0, step 4): the healthy run's values there.
    healthy = loss_curves(tmp_path / "healthy" / "members" / "1_nalu_seed1")
    for name in ("interp/mse", "extrap/mse"):
        assert record["metrics"][name] == pytest.approx(healthy[name][steps_per_epoch]), name
    kept = []
    for member in (0, 2):
        name = f"{member}_nalu_seed{member}"
        record = read_metrics(tmp_path / "poisoned" / "members" / name)
        assert record["status"] == "finished"
        assert record["metrics"] == read_metrics(tmp_path / "healthy" / "members" / name)["metrics"]
        kept.append(record["metrics"])
    # The population's medians are over the finished members only: of two, their mean.
    for name in ("interp/mse", "extrap/mse"):
        assert poisoned[name] == pytest.approx((kept[0][name] + kept[1][name]) / 2), name


def test_the_divergence_bookkeeping_is_skipped_only_while_every_member_trains():
    # What a chunk's end asks of its objectives [steps, S], and an epoch's end of the sums of
    # the parameters.
    linear = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1}
    divergence = Divergence(Members(linear, seeds=[0, 1, 2]))
    finite = torch.tensor([[0.5, 2.0, 1.0], [0.25, 1.0, 3.0]])
    assert divergence.none_diverging(finite)
    for bad in (math.nan, math.inf, -math.inf):
        objective = finite.clone()
        objective[1, 2] = bad
        assert not divergence.none_diverging(objective), bad
    # Finite objectives whose float32 sum overflows take the general way too.
    assert not divergence.none_diverging(torch.full((2, 3), 3e38))
    divergence.read(any_alive=True, all_alive=False)
    assert not divergence.none_diverging(finite)


class _DivergeMember(L.Callback):
    """Marks one member diverged when the second epoch starts, its parameters left finite (as
    when its loss, not its parameters, turned non-finite)."""

    def __init__(self, member: int) -> None:
        self.member = member

    def on_train_epoch_start(self, trainer: L.Trainer, module: ArithmeticModule) -> None:
        if trainer.current_epoch == 1:
            names = [name for name, _ in module.network.named_parameters()]
            finite = torch.ones(len(names), module.population, dtype=torch.bool)
            finite[:, self.member] = False
            module.divergence.check_parameters(finite, names, trainer.global_step)


class _RecordParameters(L.Callback):
    """Keeps every member's parameters as training ends (``final``, one dict per run)."""

    final: ClassVar[list[dict[str, torch.Tensor]]] = []

    def on_train_end(self, trainer: L.Trainer, module: ArithmeticModule) -> None:
        parameters = module.network.named_parameters()
        _RecordParameters.final.append({name: p.detach().clone() for name, p in parameters})


@pytest.mark.slow
@pytest.mark.parametrize("inputs", [6, 16], ids=["stored", "handed_over"])
def test_a_diverged_member_takes_no_more_gradients_compiled_or_not(
    tiny_overrides, tmp_path, inputs
):
    # Member 1 diverges as the second epoch starts, its parameters finite: from then on its
    # gradients are 0 (Adam's momentum alone still moves it), in the eager run as in the
    # compiled one, whose step masks them at every step (weights 6 wide) or from then on (16
    # wide: hands_gradients_over); member 0 trains on.
    overrides = [*tiny_overrides, "model=nac", "population=2", "trainer.max_epochs=3"]
    overrides.append(f"data.in_features={inputs}")
    overrides.append(f"+callbacks.record._target_={__name__}._RecordParameters")
    diverge = [f"+callbacks.diverge._target_={__name__}._DivergeMember"]
    diverge.append("+callbacks.diverge.member=1")
    _RecordParameters.final = []
    runs = {
        "healthy": overrides,
        "eager": [*overrides, *diverge],
        "compiled": [*overrides, *diverge, "compile=true"],
    }
    for name, run in runs.items():
        train(compose_config(run, tmp_path / name))
    healthy, eager, compiled = _RecordParameters.final
    for parameter, value in eager.items():
        assert torch.equal(value[0], healthy[parameter][0]), parameter
        assert not torch.allclose(value[1], healthy[parameter][1], rtol=0, atol=1e-4), parameter
        assert torch.allclose(compiled[parameter], value, rtol=0, atol=1e-6), parameter


def test_a_diverged_members_curves_end_where_it_diverged(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nac", "population=2", "trainer.max_epochs=3"]
    overrides += [f"+callbacks.diverge._target_={__name__}._DivergeMember"]
    overrides += ["+callbacks.diverge.member=1"]
    train(compose_config(overrides, tmp_path))
    # Epochs of 4 steps: the member diverged at step 4, after its first validation.
    for member, steps in (("0_nac_seed0", [4, 8, 12]), ("1_nac_seed1", [4])):
        curves = loss_curves(tmp_path / "members" / member)
        for tag in ("train/loss", "interp/mse", "extrap/mse"):
            assert sorted(curves[tag]) == steps, (member, tag)


def test_population_members_are_runs_of_the_report(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nac", "population=3", "heatmaps=2"]
    medians = train(compose_config(overrides, tmp_path))
    runs = load_runs([tmp_path])
    assert sorted(run["labels"]["seed"] for run in runs) == [0, 1, 2]
    all_ops = next(row for row in summary_rows(runs) if row["operation"] == "all")
    assert (all_ops["group"], all_ops["runs"]) == ("nac", 3)
    interp = sorted(run["metrics"]["interp/mse"] for run in runs)
    assert medians["interp/mse"] == pytest.approx(interp[1])
    # The report's row of all operations: the three members, none diverged, their median.
    report = (tmp_path / "report.md").read_text()
    assert report.startswith(f"# Report: 3 runs under {tmp_path}\n")
    row = next(line for line in report.splitlines() if line.startswith("| nac | all |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    extrap = sorted(run["metrics"]["extrap/mse"] for run in runs)
    assert (cells[2], cells[3], cells[6]) == ("3", "0", f"{extrap[1]:.4g}")
    for run in runs:
        assert loss_curves(Path(run["run_dir"]))["train/loss"].keys() == {4, 8}
        events = load_events(run["run_dir"])
        # heatmaps=2: the first two members' weights are drawn, the third's are not.
        drawn = ["weights/network"] if run["labels"]["seed"] < 2 else []
        assert events.Tags()["images"] == drawn


def test_population_plans_the_regularizer_over_its_optimizer_steps(tiny_overrides, tmp_path):
    # TINY: 2 epochs of 4 steps; the schedule's fractions are of those 8 steps.
    cfg = compose_config([*tiny_overrides, "model=nmu", "population=2"], tmp_path)
    _, data, module = build_run(cfg)
    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=data)
    assert module.planned_steps == 8
    # 30% to 70% of 8 steps: λ ramps from step 2.4 to step 5.6, so it is 1/2 at step 4.
    assert module.regularizer(4, module.planned_steps) == pytest.approx(0.5)


def test_resampled_members_draw_their_single_runs_batches(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "model=nac", "data.resample=true"]
    _, data, _ = build_run(compose_config([*overrides, "population=3", "seed=5"], tmp_path))
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(batches) == 4 and batches[0][0].shape == (3, 16, 6)
    (member,), _, _ = build_run(compose_config([*overrides, "seed=6"], tmp_path))
    single = member.data
    single.setup("fit")
    for (x, y), (single_x, single_y) in zip(batches, single.train_dataloader(), strict=True):
        assert torch.equal(x[1], single_x) and torch.equal(y[1], single_y)


@pytest.mark.parametrize(
    "operations",
    # Without division every member's inputs are one shared set; with it each member draws its
    # own (its denominators' columns keep away from 0).
    ["[add,sub,mul]", "[add,sub,mul,div]"],
)
def test_members_of_a_fixed_training_set_get_their_single_runs_batches(
    tiny_overrides, tmp_path, operations
):
    # 60 samples in batches of 16: three full steps and a last one of 12.
    overrides = [*tiny_overrides, "model=nac", "data.train_size=60"]
    overrides.append(f"data.operations={operations}")
    _, data, _ = build_run(compose_config([*overrides, "population=3", "seed=5"], tmp_path))
    data.setup("fit")
    shared = data.training_set()[0].stride(0) == 0
    assert shared == ("div" not in operations)
    for epoch in (0, 1):
        data.train_dataloader().sampler.set_epoch(epoch)
        batches = list(data.train_dataloader())
        assert [x.shape for x, _ in batches] == [(3, 16, 6)] * 3 + [(3, 12, 6)]
        for member, seed in enumerate((5, 6, 7)):
            (single_run,), _, _ = build_run(compose_config([*overrides, f"seed={seed}"], tmp_path))
            single = single_run.data
            single.setup("fit")
            single.train_dataloader().sampler.set_epoch(epoch)
            single_batches = list(single.train_dataloader())
            for (x, y), (single_x, single_y) in zip(batches, single_batches, strict=True):
                assert torch.equal(x[member], single_x) and torch.equal(y[member], single_y)


@pytest.mark.parametrize("resample", ["false", "true"])
def test_a_run_of_one_member_batches_as_its_problems_own_data_module(
    tiny_overrides, tmp_path, resample
):
    # The run's data module at S = 1 gives what a user's own LightningModule gets from the
    # problem's ProblemDataModule: the same [B, in] batches, in training and in evaluation.
    cfg = compose_config([*tiny_overrides, "model=nac", f"data.resample={resample}"], tmp_path)
    _, run_data, _ = build_run(cfg)
    (member,), _, _ = build_run(cfg)
    problem_data = member.data
    run_data.setup("fit")
    problem_data.setup("fit")
    run_batches, problem_batches = (
        list(data.train_dataloader()) for data in (run_data, problem_data)
    )
    assert len(run_batches) == len(problem_batches) == 4
    for (x, y), (problem_x, problem_y) in zip(run_batches, problem_batches, strict=True):
        assert x.shape == (16, 6) and y.shape == (16, 4)
        assert torch.equal(x, problem_x) and torch.equal(y, problem_y)
    for run_loader, problem_loader in zip(
        run_data.val_dataloader(), problem_data.val_dataloader(), strict=True
    ):
        for (x, y), (problem_x, problem_y) in zip(run_loader, problem_loader, strict=True):
            assert x.shape[1:] == (6,) and torch.equal(x, problem_x) and torch.equal(y, problem_y)


def test_gradient_clipping_by_norm_is_per_member(tiny_overrides, tmp_path):
    # A clip far below the gradients' norm: every step of every member is clipped, each by
    # its own norm, so the member still equals the single run of its seed.
    overrides = [*tiny_overrides, "model=nac", "trainer.max_epochs=1"]
    overrides += ["trainer.gradient_clip_val=0.01", "optimizer=sgd", "optimizer.lr=1.0"]
    single = train(compose_config([*overrides, "seed=1"], tmp_path / "single"))
    train(compose_config([*overrides, "population=2"], tmp_path / "population"))
    member = read_metrics(tmp_path / "population" / "members" / "1_nac_seed1")
    for name, value in single.items():
        assert member["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_each_members_run_has_every_operations_test_loss_and_the_report_draws_it(
    tiny_overrides, tmp_path
):
    overrides = [*tiny_overrides, "model=nac", "population=2", "trainer.max_epochs=3"]
    train(compose_config(overrides, tmp_path))
    member_operations, member_curves = [], []
    for member in sorted((tmp_path / "members").iterdir()):
        problem = json.loads((member / "problem.json").read_text())
        operations = {output["operation"] for output in problem["outputs"]}
        member_operations.append(operations)
        curves = loss_curves(member)
        member_curves.append(curves)
        # One point per validation (every epoch of 4 steps) for each operation it has.
        for operation in operations:
            assert sorted(curves[f"{EXTRAP_MSE_OF}{operation}"]) == [4, 8, 12]
        drawn = {tag.removeprefix(EXTRAP_MSE_OF) for tag in curves if tag.startswith(EXTRAP_MSE_OF)}
        assert drawn == operations
    runs = load_runs([tmp_path])
    figures = plot_curves(group_runs(runs, ["model"]))

    def median_curve(tag: str) -> list[float]:
        """The members' median of ``tag`` at each validation, over the members that have it."""
        having = [curves[tag] for curves in member_curves if tag in curves]
        return [float(np.median([curve[step] for curve in having])) for step in (4, 8, 12)]

    for name, tag in (
        ("training_loss", TRAIN_LOSS),
        ("validation_loss", INTERP_MSE),
        ("test_relative_error", EXTRAP_RELATIVE_ERROR),
    ):
        line, *others = figures[name].axes[0].get_lines()
        # The members' median best epoch, and its legend entry.
        assert len([other for other in others if other.get_marker() == "D"]) == 2, name
        reference = [other for other in others if other.get_marker() != "D"]
        assert list(line.get_xdata()) == [1, 2, 3], name
        assert list(line.get_ydata()) == pytest.approx(median_curve(tag), rel=1e-6), name
        # The relative error's yardstick: 100% is what answering 0 scores.
        if tag == EXTRAP_RELATIVE_ERROR:
            [answering_zero] = reference
            assert list(answering_zero.get_ydata()) == [100, 100]
            assert answering_zero.get_label() == "answering 0 (100%)"
        else:
            assert reference == [], name
    # A panel per operation of either member, in name order, each with the median line of the
    # members that have it over the run's three epochs.
    # Seed 1 has an operation seed 0 lacks: a panel whose median line is over one member.
    assert member_operations == [{"sub", "mul"}, {"add", "sub", "mul"}]
    operations = ["add", "mul", "sub"]
    figure = figures["test_loss_by_operation"]
    # Two panels a row: the third starts a second row under the first.
    corners = [(round(a.get_position().x0, 2), round(a.get_position().y0, 2)) for a in figure.axes]
    assert corners[2][0] == corners[0][0] and corners[2][1] < corners[0][1] == corners[1][1]
    for axis, operation in zip(figure.axes, operations, strict=True):
        line, *best_epoch = axis.get_lines()
        assert [mark.get_marker() for mark in best_epoch][:1] == ["D"], operation
        having = sum(operation in own for own in member_operations)
        assert axis.get_title() == f"Test loss of the {operation} outputs (n={having})"
        assert line.get_label() == "nac", operation
        assert list(line.get_xdata()) == [1, 2, 3], operation
        expected = median_curve(f"{EXTRAP_MSE_OF}{operation}")
        assert list(line.get_ydata()) == pytest.approx(expected, rel=1e-6), operation
    for axis in figure.axes:  # whole epochs only, no 2.5
        assert all(float(tick).is_integer() for tick in axis.get_xticks())


def test_a_populations_own_run_is_a_named_folder_beside_its_members(tiny_overrides, tmp_path):
    train(compose_config([*tiny_overrides, "model=nac", "population=2"], tmp_path))
    # Served from the population's folder, no run is named "." (events in the folder itself).
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    medians = load_events(tmp_path / "population")
    assert [event.step for event in medians.Scalars("train/loss")] == [4, 8]  # TINY: 4 steps
    alive = medians.Scalars("population/alive_fraction")
    assert [(event.step, event.value) for event in alive] == [(4, 1.0), (8, 1.0)]
    members = sorted((tmp_path / "members").iterdir())
    assert [member.name for member in members] == ["0_nac_seed0", "1_nac_seed1"]
    for member in members:
        losses = load_events(member).Scalars("train/loss")
        assert [event.step for event in losses] == [4, 8]


def test_only_a_population_shows_its_living_fraction_and_words_the_stop_for_every_member():
    network = {"_target_": "nalu.units.NeuralAccumulator", "in_features": 2, "out_features": 1}
    population = Members(network, [0, 1, 2])
    assert population.summary(torch.tensor([True, False, True])) == {
        "population/alive_fraction": pytest.approx(2 / 3)
    }
    assert population.why_none_is_left(torch.full((3,), math.nan)) == (
        "every member's train loss is not finite"
    )
    single = Members(network, [0])
    assert single.summary(torch.tensor([True])) == {}  # a single run stops when it diverges
    assert single.why_none_is_left(torch.tensor([math.inf])) == "train loss is inf"


def test_a_population_shows_the_share_of_its_members_outputs_solved_not_a_majority_vote(tmp_path):
    # Four members of one output each, the fourth diverged: 2 of the 3 living ones solved, which a
    # median of their shares (1, 1, 0) would show as 1 and a median of (1, 0, 0) as 0.
    alive = torch.tensor([True, True, True, False])
    curves = {
        "interp/mse": torch.tensor([1.0, 2.0, 9.0, math.nan]),
        "extrap/solved_fraction": torch.tensor([1.0, 1.0, 0.0, 1.0]),
        "extrap/solved_fraction_mul": torch.tensor([1.0, math.nan, 0.0, 1.0]),  # 1 has no ×
    }
    assert living_summaries(curves, alive) == pytest.approx(
        {"interp/mse": 2.0, "extrap/solved_fraction": 2 / 3, "extrap/solved_fraction_mul": 0.5}
    )
    # Members with 1 and 3 × outputs, 1 of 1 and 1 of 3 solved: 2 of the 4 outputs (the report's
    # outputs × seeds), where a mean of the shares would say 2/3.
    counts = {"output_count_mul": torch.tensor([1.0, math.nan, 3.0, 2.0])}
    shares = {"extrap/solved_fraction_mul": torch.tensor([1.0, math.nan, 1 / 3, 1.0])}
    assert living_summaries(shares, alive, counts) == {
        "extrap/solved_fraction_mul": pytest.approx(0.5)
    }
    # Two living members: the median is their mean, as in the final summary (not the lower one).
    two_alive = torch.tensor([False, True, True, False])
    assert living_summaries({"interp/mse": curves["interp/mse"]}, two_alive) == {
        "interp/mse": pytest.approx(5.5)
    }
    finals = [
        {
            "interp/mse": mse,
            "extrap/solved_fraction": solved,
            "recovered_fraction": recovered,
            "output_count": 1.0,
        }
        for mse, solved, recovered in [(1.0, 1.0, 1.0), (2.0, 1.0, 0.0), (9.0, 0.0, 0.0)]
    ]
    finals.append({"interp/mse": math.nan, "extrap/solved_fraction": 1.0, "output_count": 1.0})
    layout = RunLayout.of(tmp_path, [{"model": "nac", "seed": seed} for seed in range(4)])
    assert layout.summary(finals, [True, True, True, False]) == pytest.approx(
        {
            "interp/mse": 2.0,
            "extrap/solved_fraction": 2 / 3,
            "recovered_fraction": 1 / 3,
            "output_count": 3.0,
        }
    )
    # The same members' × outputs as above: shares of all 4 of them, and the 4 counted.
    for final, share, count in zip(
        finals[:3], [1.0, math.nan, 1 / 3], [1.0, math.nan, 3.0], strict=True
    ):
        final.update({"extrap/solved_fraction_mul": share, "output_count_mul": count})
    summary = layout.summary(finals, [True, True, True, False])
    assert summary["extrap/solved_fraction_mul"] == pytest.approx(0.5)
    assert summary["output_count_mul"] == 4.0


def test_a_populations_console_summary_says_how_it_summarises_the_members(tmp_path, capsys):
    (tmp_path / "members").mkdir()
    print_summary(tmp_path, {"extrap/solved_fraction": 2 / 3, "interp/mse": 2.0})
    header, *table = capsys.readouterr().out.strip().splitlines()
    members = tmp_path / "members"
    assert header == (
        f"Over the members ({members}), each at its best interpolation epoch: medians; shares "
        "of outputs (*_fraction) and output counts: of all the members' outputs"
    )
    assert table[1].split() == ["extrap/solved_fraction", "0.6667"]


def test_member_curves_keep_what_a_members_run_shows_and_come_back_from_a_checkpoint():
    curves = MemberCurves(2)
    curves.add(4, {"train/loss": torch.tensor([1.0, 2.0])})
    validation = ["interp/mse", "interp/mse_add", "extrap/mse", "extrap/mse_add"]
    validation += ["extrap/relative_error", "extrap/solved_fraction"]
    curves.add(4, {tag: torch.tensor([3.0, math.nan]) for tag in validation})
    curves.add(8, {"interp/mse": torch.tensor([5.0, 6.0])})
    kept = ["train/loss", "interp/mse", "extrap/mse", "extrap/mse_add", "extrap/relative_error"]
    assert [tag for tag, _ in curves.items()] == kept
    history = curves.history("interp/mse").nan_to_num(-1.0)  # NaN: a member without a value
    assert history.tolist() == [[3.0, -1.0], [5.0, 6.0]]
    restored = MemberCurves(2)
    restored.load(curves.state())
    assert [tag for tag, _ in restored.items()] == kept
    for tag, points in curves.items():
        steps = [step for step, _ in points]
        assert [step for step, _ in restored.points[tag]] == steps
        assert torch.equal(
            restored.history(tag).nan_to_num(-1.0), curves.history(tag).nan_to_num(-1.0)
        )
    assert MemberCurves(3).state()["extrap/mse"][1].shape == (0, 3)  # no validation yet


@pytest.mark.parametrize("population", [1, 2])
def test_a_run_without_tensorboard_writes_no_event_file_for_any_member(
    tiny_overrides, tmp_path, population
):
    # `~logger` turns TensorBoard off for the run and for each of its members alike; the
    # results files (and a population's report, figures in TensorBoard included) are written
    # all the same.
    overrides = [*tiny_overrides, "model=nac", f"population={population}", "~logger"]
    train(compose_config(overrides, tmp_path))
    results = sorted(path.parent for path in tmp_path.rglob("metrics.json"))
    assert len(results) == population
    event_folders = {path.parent.name for path in tmp_path.rglob("events.out.tfevents.*")}
    assert event_folders == (set() if population == 1 else {"report_tensorboard"})
