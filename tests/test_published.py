"""The published rates beside ours: the cells compared, their Wilson intervals, the verdict."""

import pytest
from conftest import compose_config

from nalu.results.published import PUBLISHED, comparison_rows, comparison_table


def row_and_group(unit: str, operation: str, cell: str, solved: int, runs: int = 25):
    key = f"{unit} / {operation} / {cell}"
    row = {
        "group": key,
        "operation": operation,
        "solved": solved,
        "runs": runs,
        "success_rate": solved / runs,
        "success_low": 0.0,
        "success_high": 1.0,
    }
    run = {"labels": {"model": unit, "operation": operation, "range": cell}}
    return row, {key: [run]}


def test_ours_is_inside_their_interval_or_not():
    inside, inside_group = row_and_group("nmu", "mul", "U_m2_m1", 18)  # 72%
    outside, outside_group = row_and_group("nmu", "mul", "U_1_2", 20)  # 80%
    unpublished, unpublished_group = row_and_group("npu", "mul", "U_1_2", 25)
    compared = comparison_rows(
        [inside, outside, unpublished], {**inside_group, **outside_group, **unpublished_group}
    )
    assert [(c["cell"], c["inside"]) for c in compared] == [("U_m2_m1", True), ("U_1_2", False)]
    # Theirs on U[-2, -1]: 20/25, Wilson 95% [60.9%, 91.1%]; on U[1, 2]: 25/25, [86.7%, 100%].
    assert (compared[0]["theirs"], compared[0]["their_low"]) == (
        0.8,
        pytest.approx(0.609, abs=1e-3),
    )
    assert compared[0]["their_high"] == pytest.approx(0.911, abs=1e-3)
    assert compared[1]["their_low"] == pytest.approx(0.867, abs=1e-3)
    # Fisher's exact test of their 25/25 against our 20/25: 45 of 50 successes, whose splits
    # 20..25 weigh C(25, k)·C(25, 45 − k) = 53130, 316250, 690000, 690000, 316250, 53130 of
    # C(50, 45) = 2118760; the observed 25 and the as unlikely 20.
    assert compared[1]["fisher_p"] == pytest.approx(2 * 53130 / 2118760)


def test_the_table_gives_the_context_rates_with_our_mean_over_ranges():
    first, first_group = row_and_group("nmru", "div", "U_1_2", 25)
    second, second_group = row_and_group("nmru", "div", "U_10_20", 20)
    table = comparison_table([first, second], {**first_group, **second_group})
    assert "no published cell was run" in table
    assert "- nmru div: theirs 91.6% (" in table and "ours 90.0% over 2 ranges." in table
    assert "- realnpu div: theirs 85.3% (" in table and "not run." in table


def test_the_table_says_first_when_the_runs_are_not_the_tasks_setup():
    row, group = row_and_group("nmu", "mul", "U_1_2", 2, runs=2)
    departed = comparison_table([row], group, ["2 seeds per cell, not 25"]).splitlines()
    assert departed[2] == (
        "**Not the task's setup** (2 seeds per cell, not 25): these rates are not comparable "
        "with the published ones."
    )
    assert "Not the task's setup" not in comparison_table([row], group)


def test_the_table_gives_fishers_p_of_each_cell():
    row, group = row_and_group("nmu", "mul", "U_m2_m1", 24)
    lines = comparison_table([row], group).splitlines()
    assert lines[2].startswith("| unit | op | range | theirs (95% CI) | ours (95% CI) | ")
    assert lines[4] == (
        "| nmu | mul | U_m2_m1 | 80% [61%, 91%] | 96% [0%, 100%] | no | 0.19 | "
        "Mistry 2023, MCFC findings, fig. 2 |"
    )


def test_every_published_cell_is_one_the_benchmark_runs(tmp_path):
    for unit in {p.unit for p in PUBLISHED}:
        cfg = compose_config(["experiment=nalm_single_module", f"nalm={unit}"], tmp_path)
        operations = [cell.data.operations[0] for cell in cfg.problems.operation.values()]
        runs = {(op, cell) for op in operations for cell in cfg.problems.range}
        assert {(p.operation, p.cell) for p in PUBLISHED if p.unit == unit} <= runs, unit
