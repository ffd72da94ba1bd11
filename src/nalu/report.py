"""Tables over many runs: ``python -m nalu.report DIR [DIR ...]`` reads every metrics.json below."""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HEADLINE_METRICS = ("train/loss", "interp/mse", "extrap/mse")


def load_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every ``metrics.json`` under ``paths``, each with its folder as ``run_dir``."""
    runs = []
    for root in paths:
        for metrics_file in sorted(Path(root).rglob("metrics.json")):
            run = json.loads(metrics_file.read_text(encoding="utf-8"))
            run["run_dir"] = str(metrics_file.parent)
            runs.append(run)
    return runs


def median_table(runs: list[dict[str, Any]], group_by: str = "model") -> str:
    """A Markdown table: per ``group_by`` label, the median over runs of each final metric.

    ``runs`` counts every run, ``diverged`` those stopped by a non-finite loss or parameter;
    the medians are over the runs that finished.
    """
    per_op = sorted(
        {name for run in runs for name in run["metrics"] if name.startswith("extrap/mse_")}
    )
    columns = [*HEADLINE_METRICS, *per_op]
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run["labels"].get(group_by)), []).append(run)
    lines = [
        f"| {group_by} | runs | diverged | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for name, group in groups.items():
        diverged = sum(run.get("status") == "diverged" for run in group)
        metrics = [run["metrics"] for run in group if run.get("status") != "diverged"]
        cells = []
        for column in columns:
            values = [m[column] for m in metrics if column in m]
            cells.append(f"{statistics.median(values):.4g}" if values else "–")
        lines.append(f"| {name} | {len(group)} | {diverged} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders")
    parser.add_argument("--group-by", default="model", help="label that names a table row")
    args = parser.parse_args(argv)
    runs = load_runs(args.paths)
    if not runs:
        sys.exit(f"error: no metrics.json under {', '.join(map(str, args.paths))}")
    print(f"Median over runs of the final metrics ({len(runs)} runs):\n")
    print(median_table(runs, args.group_by))


if __name__ == "__main__":
    main()
