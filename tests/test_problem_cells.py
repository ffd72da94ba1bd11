"""Populations whose members differ in problem: the ``problems`` axes of
``experiment=nalm_single_module`` (operation × range), a small grid of them."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_config, drawn_colours, load_events
from omegaconf import OmegaConf, open_dict
from tensorboard.plugins.hparams import plugin_data_pb2

import nalu.results.report
from nalu.cli.train import build_run, train
from nalu.config.errors import ConfigError
from nalu.config.rules import SUCCESS_EPSILON
from nalu.data.problem import StaticArithmeticProblem
from nalu.results.record import SOLVED_FRACTION, metric_name
from nalu.results.report import (
    CellSeries,
    ReportError,
    cell_caption,
    cell_series,
    default_group_by,
    group_runs,
    load_runs,
    plot_success,
    plot_success_by_cell,
    success_by_cell_table,
    summary_rows,
    write_report,
)
from nalu.training.regularizer import RegularizerSchedule
from nalu.units.nac import variance_matched_bound

SMALL = [
    "experiment=nalm_single_module",
    "data.train_size=256",
    "data.interp_size=200",
    "data.extrap_size=200",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]
# Cell-major, the last axis fastest, 3 seeds each.
GRID = [(op, low_range) for op in ("sub", "mul") for low_range in ("U_m20_m10", "U_1_2")]
RANGES = {"U_m20_m10": ((-20, -10), (-40, -20)), "U_1_2": ((1, 2), (2, 6))}


def grid_config(tmp_path: Path, overrides: list[str] = ()):
    cfg = compose_config([*SMALL, "population=3", *overrides], tmp_path)
    with open_dict(cfg):
        cfg.problems.operation = {op: {"data": {"operations": [op]}} for op in ("sub", "mul")}
        for label in list(cfg.problems.range):
            if label not in RANGES:
                del cfg.problems.range[label]
    return cfg


def train_grid(population: Path, overrides: list[str]) -> None:
    """Train the grid into ``population`` with its config saved as a command line's run saves
    it (``.hydra/config.yaml``), where reports read each cell's ranges."""
    cfg = grid_config(population, overrides)
    (population / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, population / ".hydra" / "config.yaml")
    train(cfg)


def test_members_draw_batches_and_sets_from_their_own_ranges(tmp_path):
    members, data, _ = build_run(grid_config(tmp_path))
    assert [(member.cell["operation"], member.cell["range"]) for member in members] == [
        cell for cell in GRID for _ in range(3)
    ]
    assert [member.seed for member in members] == [0, 1, 2] * 4
    data.setup("fit")
    x, y = data.training_stream().batches(epoch=1, start=0, count=1)
    assert x.shape == (1, 12, 128, 2) and y.shape == (1, 12, 128, 1)
    for k, cell in enumerate(member.cell for member in members):
        (low, high), (extrap_low, extrap_high) = RANGES[cell["range"]]
        assert low <= x[0, k].min() and x[0, k].max() < high, cell
        # Both operands drawn from the whole range: the batch is not a corner of it.
        assert x[0, k].max() - x[0, k].min() > 0.9 * (high - low), cell
        a, b = (x[0, k, :, i] for i in member_operands(data, k))
        expected = a - b if cell["operation"] == "sub" else a * b
        torch.testing.assert_close(y[0, k, :, 0], expected)
        interp, extrap = data.inputs["interp"][k], data.inputs["extrap"][k]
        assert low <= interp.min() and interp.max() < high, cell
        assert extrap_low <= extrap.min() and extrap.max() < extrap_high, cell


def member_operands(data, k: int) -> tuple[int, int]:
    """The inputs that member ``k``'s a and b are."""
    problem = data.members[k].problem.to_dict()
    return problem["subset_a"][0], problem["subset_b"][0]


def test_thresholds_follow_each_members_range(tmp_path):
    cfg = grid_config(tmp_path)
    with open_dict(cfg):
        del cfg.problems.operation["mul"]
        cfg.problems.range["U_m2_2"] = {
            "data": {
                "train_range": [-2, 2],
                "interp_range": [-2, 2],
                "extrap_range": [[-6, -2], [2, 6]],
            }
        }
    members, _, module = build_run(cfg)
    # Mistry et al.'s near-perfect a − b is a − b − ε(|a| + |b|): its MSE is ε² E[(|a| + |b|)²],
    # and for |a|, |b| independent and uniform on [l, h], E[(|a| + |b|)²] = 2 Var + (2 E)².
    by_hand = {
        "U_m20_m10": SUCCESS_EPSILON**2 * (2 * 20**2 / 12 + 60**2),  # |x| on U[20, 40]
        "U_1_2": SUCCESS_EPSILON**2 * (2 * 4**2 / 12 + 8**2),  # U[2, 6]
        "U_m2_2": SUCCESS_EPSILON**2 * (2 * 4**2 / 12 + 8**2),  # |x| on U[2, 6] again
    }
    thresholds = module.metrics["extrap"].success_threshold
    for k, member in enumerate(members):
        label = ["U_m20_m10", "U_1_2", "U_m2_2"][k // 3]
        assert member.data.success_threshold()[0] == pytest.approx(by_hand[label], rel=0.02), label
        assert thresholds[k, 0].item() == pytest.approx(by_hand[label], rel=0.02), label


@pytest.mark.parametrize(
    ("operation", "by_hand"),
    [
        # ε² E[(|a| + |b|)²] on U[2, 6]
        ("add", SUCCESS_EPSILON**2 * (2 * 4**2 / 12 + 8**2)),
        # ((1 − ε)² − 1)² E[a²] E[b²], E[x²] on U[2, 6] = (6³ − 2³) / 12
        ("mul", (2 * SUCCESS_EPSILON - SUCCESS_EPSILON**2) ** 2 * (208 / 12) ** 2),
        # (2ε / (1 + ε))² E[a²] E[1 / b²], E[1 / x²] on U[2, 6] = (1/2 − 1/6) / 4
        ("div", (2 * SUCCESS_EPSILON / (1 + SUCCESS_EPSILON)) ** 2 * (208 / 12) / 12),
    ],
)
def test_the_primers_threshold_by_hand(operation, by_hand):
    problem = StaticArithmeticProblem(
        in_features=2, operations=(operation,), subset_ratio=0.5, overlap_ratio=0.0
    )
    primer = StaticArithmeticProblem(
        in_features=2,
        operations=(operation,),
        subset_ratio=0.5,
        overlap_ratio=0.0,
        near_perfect="mistry",
    )
    assert primer.success_threshold([2, 6])[0].item() == pytest.approx(by_hand, rel=0.03)
    if operation == "add":
        # Madsen & Johansen's model, its weights off by ε, is exact on a + b with two inputs.
        assert problem.success_threshold([2, 6])[0].item() == pytest.approx(0, abs=1e-20)


def test_each_member_follows_its_cells_regularizer_schedule(tmp_path):
    cfg = grid_config(tmp_path, ["model=nmu"])
    with open_dict(cfg):
        cfg.problems.operation.mul.regularizer = {"scale": 10.0, "start": 0.0, "end": 0.5}
    _, _, module = build_run(cfg)
    # The recipe's λ 0 → 0.01 over 40%–70% of the steps on −, 0 → 10 over 0%–50% on ×.
    assert module.regularizer(55, 100).tolist() == pytest.approx([0.005] * 6 + [10.0] * 6)
    assert module.regularizer(25, 100).tolist() == pytest.approx([0.0] * 6 + [5.0] * 6)


@pytest.mark.slow
def test_a_member_is_the_single_run_with_its_cells_fields(tmp_path):
    population = tmp_path / "population"
    cfg = grid_config(population, ["model=nmu", "seed=4"])
    with open_dict(cfg):
        cfg.problems.operation.mul.regularizer = {"scale": 10.0, "start": 0.0, "end": 0.5}
    train(cfg)
    member = json.loads(
        (population / "members" / "10_nmu_mul_U_1_2_seed5" / "metrics.json").read_text()
    )
    assert (member["labels"]["operation"], member["labels"]["range"]) == ("mul", "U_1_2")
    report = (population / "report.md").read_text().splitlines()
    rows = [line.split(" | ")[0] for line in report if line.startswith("| nmu / ")]
    # A row per cell, in the config's order (not the labels' alphabetical one).
    assert list(dict.fromkeys(rows)) == [
        f"| nmu / {cell}"
        for cell in ("sub / U_m20_m10", "sub / U_1_2", "mul / U_m20_m10", "mul / U_1_2")
    ]
    text = (population / "report.md").read_text()
    assert "(success_by_cell.png)" in text
    # The task's threshold is the primer's near-perfect output, and the report says so.
    assert "near-perfect model's (Mistry et al. 2022, sec. 6.5: the exact output off by " in text
    assert "ε = 1e-5)" in text and "Madsen & Johansen 2020, sec. 4.1" not in text
    assert drawn_colours(population / "success_by_cell.png") > 2
    single = compose_config(
        [
            *SMALL,
            "model=nmu",
            "seed=5",
            "population=1",
            "~problems",
            "data.operations=[mul]",
            "data.train_range=[1,2]",
            "data.interp_range=[1,2]",
            "data.extrap_range=[2,6]",
            "regularizer.scale=10",
            "regularizer.start=0",
            "regularizer.end=0.5",
        ],
        tmp_path / "single",
    )
    metrics = train(single)
    assert member["metrics"].keys() == metrics.keys()
    for name, value in metrics.items():
        assert member["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            {"data": {"in_features": 3}},
            "problems.operation.odd: sets data.in_features=3, but the run has 2; the members of a "
            "population share one network and one batch shape",
        ),
        (
            {"data": {"train_range": [2, 1]}},
            "problems.operation.odd: data.train_range=[2, 1]:",
        ),
        ({"data": {"no_such_field": 1}}, "problems.operation.odd: Key 'no_such_field' is not in"),
        (
            {"optimizer": {"lr": 0.1}},
            "problems.operation.odd: sets optimizer, but a cell may set only data and "
            "regularizer: the members of a population share the rest",
        ),
        (
            {"regularizer": {"growth": 10}},
            "problems.operation.odd: regularizer.initial=0.0: must be > 0 for λ to grow ×10",
        ),
    ],
)
def test_a_bad_cell_is_one_error_naming_it(tmp_path, cell, message):
    cfg = compose_config([*SMALL, "population=1"], tmp_path)
    with open_dict(cfg):
        cfg.problems = {"operation": {"odd": cell}}
    with pytest.raises(ConfigError) as error:
        build_run(cfg)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("recipe", "operations"),
    [
        ("nac", ["add", "sub"]),
        ("nac_mul", ["mul", "div"]),
        ("nalu", ["add", "sub", "mul", "div"]),
        ("gnalu", ["add", "sub", "mul", "div"]),
        ("inalu", ["add", "sub", "mul", "div"]),
        ("nau", ["add", "sub"]),
        ("nmu", ["mul"]),
        ("npu", ["mul", "div"]),
        ("realnpu", ["mul", "div"]),
        ("nmru", ["mul", "div"]),
        ("select", ["add", "sub", "mul", "div"]),
    ],
)
def test_every_unit_recipe_builds_its_operations_on_the_nine_ranges(tmp_path, recipe, operations):
    cfg = compose_config([*SMALL, f"nalm={recipe}", "population=1"], tmp_path)
    members, _, module = build_run(cfg)
    assert list(dict.fromkeys(member.cell["operation"] for member in members)) == operations
    assert len(members) == 9 * len(operations)
    assert module.network.in_features == 2
    latents = [p for n, p in module.network.named_parameters() if n.endswith("_hat")]
    if recipe in ("nac", "nac_mul", "nalu", "gnalu"):
        # Variance-matched as in their code, U[−9.47, 9.47] for 2 → 1: past Xavier's √2.
        largest = max(latent.abs().max().item() for latent in latents)
        assert math.sqrt(2) < largest <= variance_matched_bound(2, 1)
    if recipe == "select":
        # Its NMU and NMRU heads start as their own recipes, the NMRU with its sign retrieval.
        heads = dict(zip(module.network.head_names, module.network.heads, strict=True))
        for name in ("nmu", "nmru"):
            assert heads[name].weight.min() >= 0.25 and heads[name].weight.max() <= 0.75, name
        assert heads["nmru"].sign_retrieval


# λ at steps 0, 10,000, 20,000, 27,500 and 35,000 of the task's 50,000, by operation.
RECIPE_SCHEDULES = {
    "nau": {"add": [0, 0, 0, 0.005, 0.01]},  # 0.01 ramped over 20,000 → 35,000
    "nmu": {"mul": [0, 0, 0, 5, 10]},  # 10 over the same steps
    "nmru": {"mul": [0, 0, 0, 5, 10], "div": [0, 0, 0, 5, 10]},
    "inalu": {"add": [0, 0.05, 0.05, 0.05, 0.05]},  # 0.05 from step 10,000
    # β ×10 at steps 10,000 and 20,000: 1e-7 → 1e-5 on ×, a hundredth of it on ÷.
    "npu": {"mul": [1e-7, 1e-6, 1e-5, 1e-5, 1e-5], "div": [1e-9, 1e-8, 1e-7, 1e-7, 1e-7]},
    "realnpu": {"mul": [1e-7, 1e-6, 1e-5, 1e-5, 1e-5], "div": [1e-9, 1e-8, 1e-7, 1e-7, 1e-7]},
    "nalu": {"add": [0] * 5, "div": [0] * 5},
    # 10 over 30% → 70% of the steps (15,000 → 35,000), as experiment=solve.
    "select": {"add": [0, 0, 2.5, 6.25, 10], "div": [0, 0, 2.5, 6.25, 10]},
}


@pytest.mark.parametrize("recipe", RECIPE_SCHEDULES)
@pytest.mark.parametrize("turned_off", [False, True])
def test_each_recipes_regulariser_is_its_own_and_regularizer_none_turns_every_cell_off(
    tmp_path, recipe, turned_off
):
    overrides = [*SMALL, f"nalm={recipe}", "population=1"]
    cfg = compose_config(overrides + ["regularizer=none"] * turned_off, tmp_path)
    members, _, module = build_run(cfg)
    for operation, expected in RECIPE_SCHEDULES[recipe].items():
        member = next(k for k, m in enumerate(members) if m.cell["operation"] == operation)
        lambdas = []
        for step in (0, 10_000, 20_000, 27_500, 35_000):
            value = module.regularizer(step, 50_000)
            lambdas.append(float(value if isinstance(value, float) else value[member]))
        assert lambdas == pytest.approx([0] * 5 if turned_off else expected, rel=1e-6), operation


@pytest.mark.parametrize("experiment", ["static_nau_nmu", "solve"])
def test_an_experiments_regulariser_gives_way_to_regularizer_none(tmp_path, experiment):
    chosen = compose_config([f"experiment={experiment}"], tmp_path)
    assert chosen.regularizer.scale == 10.0
    off = compose_config([f"experiment={experiment}", "regularizer=none"], tmp_path)
    assert RegularizerSchedule(**off.regularizer)(10**6, 10**6) == 0.0


@pytest.mark.slow
def test_the_success_figure_has_a_panel_per_operation_and_a_point_per_range(tmp_path):
    population = tmp_path / "population"
    train_grid(population, ["model=nmu", "trainer.max_epochs=1"])
    runs = load_runs([population])
    # A run of 2 steps solves nothing: give each cell its own count of solved seeds (of 3), so
    # that a swapped cell, panel or column shows.
    solved_seeds = {("sub", "U_m20_m10"): 1, ("sub", "U_1_2"): 2, ("mul", "U_m20_m10"): 3}
    for run in runs:
        operation, cell_range = run["labels"]["operation"], run["labels"]["range"]
        solved = float(run["labels"]["seed"] < solved_seeds.get((operation, cell_range), 0))
        for suffix in ("", f"_{operation}"):
            run["metrics"][metric_name("extrap", SOLVED_FRACTION, suffix)] = solved
    group_by = default_group_by(runs)
    rows = summary_rows(runs, group_by)
    along = cell_series(rows, group_runs(runs, group_by), group_by)
    figure = plot_success_by_cell(along)
    assert [panel.get_title() for panel in figure.axes] == ["sub", "mul"]
    assert figure.get_suptitle() == "Runs solved per range and operation, 95% Wilson intervals"
    for panel in figure.axes:
        # Each cell named by its ranges, as the primer's figure names them, not by its key.
        assert [tick.get_text() for tick in panel.get_xticklabels()] == [
            "U[-20, -10]\n→ U[-40, -20]",
            "U[1, 2]\n→ U[2, 6]",
        ]
        assert panel.get_xlabel() == "range: training → extrapolation"
        # Every panel's rates read on its own axis: its numbers beside it, not only the first's.
        figure.canvas.draw()
        assert {"0.0", "1.0"} <= {t.get_text() for t in panel.get_yticklabels() if t.get_visible()}
        [points] = panel.containers  # one unit: one line of points with interval bars
        line = points.lines[0]
        assert list(line.get_xdata()) == [0, 1]
        rates = {"sub": [1 / 3, 2 / 3], "mul": [1.0, 0.0]}[panel.get_title()]
        assert list(line.get_ydata()) == pytest.approx(rates)
        assert line.get_linestyle() == "None"  # points: the ranges have no order to join
    [legend] = figure.legends  # one legend for the panels: a unit has one colour in all
    assert [text.get_text() for text in legend.get_texts()] == ["nmu"]
    assert success_by_cell_table(along).splitlines() == [
        "| unit | op | U[-20, -10] → U[-40, -20] | U[1, 2] → U[2, 6] |",
        "|---|---|---:|---:|",
        "| nmu | sub | 1/3 | 2/3 |",
        "| nmu | mul | 3/3 | 0/3 |",
    ]
    # A cell that sets no range is named by its label.
    assert cell_caption(runs[0], "operation", "sub") == "sub"


def test_the_success_figure_draws_published_rates_beside_the_units_points(tmp_path):
    population = tmp_path / "population"
    train_grid(population, ["model=nmu", "trainer.max_epochs=1", "population=1"])
    runs = load_runs([population])
    group_by = default_group_by(runs)
    along = cell_series(summary_rows(runs, group_by), group_runs(runs, group_by), group_by)
    published = {("nmu", "mul", "U_1_2"): 0.68, ("nau", "mul", "U_1_2"): 1.0}
    figure = plot_success_by_cell(along, published)
    sub, mul = figure.axes
    assert not [line for line in sub.lines if line.get_marker() == "D"]
    [theirs] = [line for line in mul.lines if line.get_marker() == "D"]
    # The NMU's published rate on U[1, 2], at the NMU's point (cell 1); no NAU was run.
    assert (list(theirs.get_xdata()), list(theirs.get_ydata())) == ([1.0], [0.68])
    assert theirs.get_markerfacecolor() == "none"
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["nmu", "published rate"]


def test_the_success_figure_tells_eleven_units_apart_by_colour_and_marker():
    # The benchmark's eleven units: a colour and a marker each.
    units = [f"unit{k}" for k in range(11)]
    row = {"success_rate": 0.5, "success_low": 0.3, "success_high": 0.7}
    series = {op: {unit: [(0, row), (1, row)] for unit in units} for op in ("add", "mul")}
    figure = plot_success_by_cell(CellSeries("range", ["a", "b"], series, ["a", "b"], units))
    looks = [
        [
            (points.get_label(), points.lines[0].get_color(), points.lines[0].get_marker())
            for points in panel.containers  # a unit's points with their interval bars
        ]
        for panel in figure.axes
    ]
    styles = [(colour, marker) for _, colour, marker in looks[0]]
    assert [label for label, _, _ in looks[0]] == units
    # A colour and a marker of its own per unit.
    assert len({colour for colour, _ in styles}) == len({marker for _, marker in styles}) == 11
    assert looks[0] == looks[1]  # and each unit alike in every panel
    assert "D" not in {marker for _, marker in styles}  # the published rates' marker
    # A panel a row, the figure's whole width: eleven units' points side by side over 0.8 of a
    # cell, not crowded into half of a narrow one.
    add, mul = figure.axes
    assert (
        add.get_position().x0 == mul.get_position().x0
        and mul.get_position().y0 < add.get_position().y0
    )
    first_cell = [points.lines[0].get_xdata()[0] for points in add.containers]
    assert first_cell == pytest.approx(np.linspace(-0.8 * 5 / 11, 0.8 * 5 / 11, 11))


def test_the_cells_legend_lists_the_units_in_the_reports_order():
    # nmu has no + runs: named in the × panel only, it still comes before select in the legend.
    row = {"success_rate": 0.5, "success_low": 0.3, "success_high": 0.7}
    series = {"add": {"select": [(0, row)]}, "mul": {"nmu": [(0, row)], "select": [(0, row)]}}
    along = CellSeries("range", ["a"], series, ["a"], ["nmu", "select"])
    [legend] = plot_success_by_cell(along).legends
    assert [text.get_text() for text in legend.get_texts()] == ["nmu", "select"]


@pytest.mark.slow
def test_the_success_figure_draws_the_tables_rows_and_a_report_pooling_ranges_is_refused(
    tmp_path, monkeypatch
):
    population = tmp_path / "population"
    train(grid_config(population, ["model=nmu", "trainer.max_epochs=1"]))
    drawn = []

    def recording(rows):
        drawn.extend(rows)
        return plot_success(rows)

    monkeypatch.setattr(nalu.results.report, "plot_success", recording)
    write_report([population])
    # Each cell's runs have one operation: its row, not also an "all" row that repeats it.
    text = (population / "report.md").read_text()
    table = next(block for block in text.split("\n\n") if block.startswith("| "))
    shown = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| nmu / ")]
    assert [["| " + row["group"], row["operation"]] for row in drawn] == shown
    assert {row["operation"] for row in drawn} == {"sub", "mul"}
    written = {path.name: path.read_bytes() for path in population.iterdir() if path.is_file()}
    assert "success_by_cell.png" in written
    # Grouped by operation alone, each row would pool two ranges' runs: refused, and the
    # folder keeps the report and figures that match each other, byte for byte.
    with pytest.raises(ReportError, match=r"share the row 'sub' \(range: "):
        write_report([population], group_by=["operation"])
    assert {path.name: path.read_bytes() for path in population.iterdir() if path.is_file()} == (
        written
    )


@pytest.mark.slow
def test_a_grid_reported_with_other_runs_draws_its_own_cells_and_leaves_theirs_to_the_table(
    tmp_path,
):
    grid, other = tmp_path / "grid", tmp_path / "other"
    train_grid(grid, ["model=nmu", "trainer.max_epochs=1"])
    train(compose_config([*TINY, "model=nau", "population=2"], other))  # no problem cells
    runs = load_runs([grid, other])
    group_by = default_group_by(runs)
    rows = summary_rows(runs, group_by)
    along = cell_series(rows, group_runs(runs, group_by), group_by)
    assert [line for lines in along.series.values() for line in lines] == ["nmu", "nmu"]
    # Named by the grid's ranges, though the other population's group sorts first.
    assert along.captions == ["U[-20, -10] → U[-40, -20]", "U[1, 2] → U[2, 6]"]
    write_report([grid, other])
    table = (grid / "report.md").read_text()
    assert "| nau / – / – | all | 2 |" in table
    assert (grid / "success_by_cell.png").is_file()


@pytest.mark.slow
def test_a_members_hparams_row_names_its_cell_and_seed(tmp_path):
    population = tmp_path / "population"
    train(grid_config(population, ["model=nmu", "trainer.max_epochs=1", "population=1"]))
    member = next((population / "members").glob("*_mul_U_1_2_seed0"))
    session = plugin_data_pb2.HParamsPluginData.FromString(
        load_events(member / "result")
        .summary_metadata["_hparams_/session_start_info"]
        .plugin_data.content
    )
    hparams = session.session_start_info.hparams
    assert (hparams["operation"].string_value, hparams["range"].string_value) == ("mul", "U_1_2")
    assert hparams["seed"].number_value == 0
    # The axes' labels are for reports: not a column of lists ticked before the member's cell.
    assert not any(name.startswith("problem_axes") for name in hparams)
