"""Published success rates of the single module arithmetic task, to set beside ours.

Only rates stated for the task as ``experiment=nalm_single_module`` runs it (two inputs, the 9
ranges, 25 seeds, 50,000 steps) are cells of the comparison; those of other settings are listed
as context with what differs.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nalu.results.record import ALL_OUTPUTS
from nalu.results.report import fisher_exact_p, run_value, wilson_interval

# B. Mistry, "MCFC findings" (2023, notes/MCFC_findings.pdf in bmistry4/nalm-benchmark, figs. 1
# and 2): the single module task of Mistry et al. 2022, sec. 6.5, 25 seeds; counts read off the
# figures' points, each of which is the Wilson interval of k/25.
MCFC_NOTE = "Mistry 2023, MCFC findings, fig. {figure}"
ALL_RANGES = (
    "U_m20_m10", "U_m2_m1", "U_m1p2_m1p1", "U_m0p2_m0p1", "U_m2_2",
    "U_0p1_0p2", "U_1_2", "U_1p1_1p2", "U_10_20",
)  # fmt: skip


@dataclass(frozen=True)
class Published:
    """``successes`` of ``trials`` seeds of ``unit`` on ``operation`` at the range ``cell``."""

    unit: str
    operation: str
    cell: str
    successes: int
    trials: int
    source: str


PUBLISHED: tuple[Published, ...] = (
    *(Published("nau", "add", cell, 25, 25, MCFC_NOTE.format(figure=1)) for cell in ALL_RANGES),
    *(
        Published(
            "nmu",
            "mul",
            cell,
            {"U_m1p2_m1p1": 17, "U_m2_m1": 20}.get(cell, 25),
            25,
            MCFC_NOTE.format(figure=2),
        )
        for cell in ALL_RANGES
    ),
)


def published_rates() -> dict[tuple[str, str, str], float]:
    """Every published cell's rate by (unit, operation, range cell), as the report draws them."""
    return {(p.unit, p.operation, p.cell): p.successes / p.trials for p in PUBLISHED}


# Rates of other settings, for context: (unit, operation, rate, source and how it differs).
CONTEXT = (
    (
        "nmru",
        "div",
        0.916,
        "Mistry et al. 2021 (Learning Division with NALMs), abstract: the mean over the 9 "
        "ranges × 25 seeds, with 10 inputs (2 of them a and b) and 100,000 steps",
    ),
    (
        "realnpu",
        "div",
        0.853,
        "Mistry et al. 2021, abstract: their modified Real NPU (clipped weights, a gate and "
        "weight regulariser), not the Real NPU of conf/nalm; same setting as the NMRU's",
    ),
)


def _cell(row: dict[str, Any], groups: dict[str, list[dict[str, Any]]]) -> tuple[Any, ...]:
    """A report row's unit, operation and range cell."""
    first = groups[row["group"]][0]
    return (run_value(first, "model"), row["operation"], run_value(first, "range"))


def comparison_rows(
    rows: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per published cell, our report row's rate beside theirs, whether ours lies inside
    their 95% Wilson interval, and Fisher's exact p that both are samples of one rate; cells we
    did not run are left out."""
    ours = {_cell(row, groups): row for row in rows if row["operation"] != ALL_OUTPUTS}
    compared = []
    for entry in PUBLISHED:
        row = ours.get((entry.unit, entry.operation, entry.cell))
        if row is None:
            continue
        low, high = wilson_interval(entry.successes, entry.trials)
        compared.append(
            {
                "unit": entry.unit,
                "operation": entry.operation,
                "cell": entry.cell,
                "theirs": entry.successes / entry.trials,
                "their_low": low,
                "their_high": high,
                "ours": row["success_rate"],
                "our_low": row["success_low"],
                "our_high": row["success_high"],
                "inside": low <= row["success_rate"] <= high,
                "fisher_p": fisher_exact_p(
                    (entry.successes, row["solved"]), (entry.trials, row["runs"])
                ),
                "source": entry.source,
            }
        )
    return compared


def comparison_table(
    rows: list[dict[str, Any]],
    groups: dict[str, list[dict[str, Any]]],
    departures: Sequence[str] = (),
) -> str:
    """The Markdown section of the comparison: the cells, then the mean over ranges of the
    context rates' units. ``departures``: how these runs differ from the task's setup (fewer
    seeds, other settings), said first: their rates do not measure what the papers' do."""
    compared = comparison_rows(rows, groups)
    lines = ["## Published results beside ours", ""]
    if departures:
        lines += [
            f"**Not the task's setup** ({'; '.join(departures)}): these rates are not "
            "comparable with the published ones.",
            "",
        ]
    lines += [
        "| unit | op | range | theirs (95% CI) | ours (95% CI) | inside theirs | Fisher's p "
        "| source |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for c in compared:
        lines.append(
            f"| {c['unit']} | {c['operation']} | {c['cell']} | "
            f"{c['theirs']:.0%} [{c['their_low']:.0%}, {c['their_high']:.0%}] | "
            f"{c['ours']:.0%} [{c['our_low']:.0%}, {c['our_high']:.0%}] | "
            f"{'yes' if c['inside'] else 'no'} | {c['fisher_p']:.2g} | {c['source']} |"
        )
    if not compared:
        lines.append("| – | – | – | – | – | – | – | no published cell was run |")
    lines += [
        "",
        "Fisher's p: the two-sided exact test that their runs and ours share one success rate; "
        "below 0.05 ours differs from theirs beyond chance.",
    ]
    lines += ["", "Other settings, for context (mean over the ranges we ran):", ""]
    for unit, operation, rate, source in CONTEXT:
        runs = [row for row in rows if _cell(row, groups)[:2] == (unit, operation)]
        mean = sum(row["success_rate"] for row in runs) / len(runs) if runs else math.nan
        ours = "not run" if not runs else f"ours {mean:.1%} over {len(runs)} ranges"
        lines.append(f"- {unit} {operation}: theirs {rate:.1%} ({source}); {ours}.")
    return "\n".join(lines)
