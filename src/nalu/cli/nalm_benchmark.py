"""``python -m nalu.nalm_benchmark DIR``: the single module arithmetic task of Mistry, Farrahi &
Hare (2022, sec. 6.5) for every unit of ``conf/nalm``, as ``make benchmark`` runs it.

Per unit one population (``experiment=nalm_single_module nalm=<unit>``: the unit's operations ×
the 9 ranges × ``--seeds`` seeds) trains in ``DIR/<unit>``, one unit after the other, each in its
own ``nalu-train`` process; then one report over them all (``DIR/report.md``, with the per-range
figure). Run again on the same ``DIR``, it keeps the units that finished, resumes a killed one
from its newest checkpoint (``nalu.cli.common.resumable_checkpoint``) and trains the units it did
not have; ``DIR/benchmark.json`` holds the seeds, operations and overrides, so that a second call
with others is refused instead of mixing two benchmarks in one report.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from nalu.cli.common import (
    CONFIG_DIR,
    EXIT_CONFIG_ERROR,
    EXIT_OUTPUT_ERROR,
    OneLineParser,
    fail,
    output_error_message,
    resumable_checkpoint,
)
from nalu.config.errors import ConfigError
from nalu.config.rules import MYSTERY_OPERATIONS
from nalu.config.validation import check_command_line
from nalu.results.record import REPORT_FILE, REPORT_TABLE, write_json_atomic, write_text_atomic

SETTINGS_FILE = "benchmark.json"
# A population writes its report when it ends: the mark of a unit that finished.
FINISHED_MARK = REPORT_FILE
# The report's rows: a unit (its config group, nalm=, names the model too) × operation × range.
GROUP_BY = ("model", "operation", "range")


class BenchmarkError(Exception):
    """Bad arguments or a folder that holds another benchmark."""


def all_units() -> list[str]:
    """The units with a recipe in ``conf/nalm``."""
    return sorted(path.stem for path in (CONFIG_DIR / "nalm").glob("*.yaml"))


def task_seeds() -> int:
    """Seeds per cell of the task as ``experiment=nalm_single_module`` sets them (its
    ``population``: 25, as the primer runs it)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(CONFIG_DIR / "experiment" / "nalm_single_module.yaml").population)


def unit_operations(unit: str) -> list[str]:
    """The operations the unit's recipe runs it on (its ``problems.operation`` cells)."""
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(CONFIG_DIR / "nalm" / f"{unit}.yaml")
    return list(recipe.problems.operation)


def unit_overrides(unit: str, seeds: int, operations: list[str] | None) -> list[str] | None:
    """``nalu-train`` overrides of one unit's population: the operations outside
    ``operations`` removed; None where none of the unit's operations is asked for."""
    own = unit_operations(unit)
    dropped = [op for op in own if operations is not None and op not in operations]
    if len(dropped) == len(own):
        return None
    return [
        "experiment=nalm_single_module",
        f"nalm={unit}",
        f"population={seeds}",
        *(f"~problems.operation.{op}" for op in dropped),
    ]


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``benchmark.json``, or check that the one there holds the same settings (the
    units may differ: a second call may add units to a benchmark)."""
    path = out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = [
            f"{key}={saved.get(key)} (now {value})"
            for key, value in settings.items()
            if saved.get(key) != value
        ]
        if changed:
            raise BenchmarkError(
                f"{out} holds a benchmark of other settings: {', '.join(changed)}; choose "
                "another folder (BENCH_DIR=) or repeat its settings to resume it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


def resume_command(
    out: Path, units: list[str], seeds: int, operations: list[str] | None, extra: list[str]
) -> str:
    """The ``make benchmark`` command with these settings, which ``check_settings`` accepts."""
    words = [f"BENCH_DIR={out}", f"UNITS={','.join(units)}", f"SEEDS={seeds}"]
    words += [f"OPS={','.join(operations)}"] if operations else []
    words += [f"ARGS={shlex.quote(' '.join(extra))}"] if extra else []
    return " ".join(["make benchmark", *words])


def run_benchmark(
    out: Path,
    units: list[str],
    seeds: int,
    operations: list[str] | None,
    extra: list[str],
) -> int:
    """Train each unit's population in ``out/<unit>`` (keeping finished ones, resuming killed
    ones), then write the report; the exit code of the first unit that failed, else 0."""
    unknown = [unit for unit in units if unit not in all_units()]
    if unknown:
        raise BenchmarkError(f"--units={','.join(units)}: {unknown} not in conf/nalm {all_units()}")
    # Every unit's command line checked before the folder records the settings: a mistyped
    # override would otherwise stop the first unit, and the folder refuse the corrected one.
    trained = [unit for unit in units if unit_overrides(unit, seeds, operations) is not None]
    if not trained:
        own = "; ".join(f"{unit}: {', '.join(unit_operations(unit))}" for unit in units)
        raise BenchmarkError(
            f"--ops={','.join(operations or [])}: no unit of --units={','.join(units)} trains "
            f"any of them ({own})"
        )
    for unit in trained:
        check_command_line([*unit_overrides(unit, seeds, operations), *extra], CONFIG_DIR)
    check_settings(out, {"seeds": seeds, "operations": operations, "overrides": extra})
    for k, unit in enumerate(units, start=1):
        run_dir = out / unit
        overrides = unit_overrides(unit, seeds, operations)
        head = f"[{k}/{len(units)}] {unit}"
        if overrides is None:
            print(f"{head}: none of its operations {unit_operations(unit)} asked for, skipped")
            continue
        if (run_dir / FINISHED_MARK).is_file():
            print(f"{head}: finished, kept ({run_dir})")
            continue
        last = resumable_checkpoint(run_dir)
        resume = [f"ckpt_path={last}"] if last else []
        print(f"{head}: {f'resumed from {last}' if last else 'training'} in {run_dir}")
        sys.stdout.flush()
        command = [sys.executable, "-m", "nalu.train", *overrides, f"hydra.run.dir={run_dir}"]
        code = subprocess.call([*command, *resume, *extra])
        if code != 0:
            again = resume_command(out, units, seeds, operations, extra)
            print(f"benchmark stopped at {unit}; `{again}` resumes it", file=sys.stderr)
            return code
    from nalu.results.published import comparison_table, published_rates
    from nalu.results.report import CELL_FIGURE, group_runs, write_report

    report = write_report([out], GROUP_BY, published_rates())
    departures = [f"{seeds} seeds per cell, not {task_seeds()}"] if seeds != task_seeds() else []
    departures += [f"overrides: {' '.join(extra)}"] if extra else []
    groups = group_runs(report.runs, report.group_by)
    published = comparison_table(report.rows, groups, departures)
    # The units' own reports draw their cells' loss curves, which this one, of every cell of
    # every unit, has too many groups to draw.
    own = [
        f"[{path.parent.name}]({path.parent.name}/{REPORT_FILE})"
        for path in sorted(out.glob(f"*/{REPORT_FILE}"))
    ]
    curves = f"Each unit's own report, with its loss curves per cell: {', '.join(own)}.\n\n"
    write_text_atomic(
        report.path,
        report.path.read_text(encoding="utf-8") + "\n" + curves + published + "\n",
    )
    print(published)
    print(f"\nReport: {report.path} (with {REPORT_TABLE} and {CELL_FIGURE}.png beside it)")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="python -m nalu.nalm_benchmark", description=__doc__, error_type=BenchmarkError
    )
    parser.add_argument("dir", type=Path, help="the benchmark's folder")
    parser.add_argument("--units", default=None, help="comma-separated units (default: all)")
    seeds = task_seeds()
    parser.add_argument(
        "--seeds", type=int, default=seeds, help=f"seeds per cell (default {seeds})"
    )
    parser.add_argument("--ops", default=None, help="comma-separated operations (default: all)")
    parser.add_argument(
        "overrides", nargs="*", default=[], help="more nalu-train overrides for every unit"
    )
    args = parser.parse_intermixed_args(argv)
    units = args.units.split(",") if args.units else all_units()
    operations = args.ops.split(",") if args.ops else None
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: must be a positive integer")
    unknown = [op for op in operations or [] if op not in MYSTERY_OPERATIONS]
    if unknown:
        parser.error(f"--ops={args.ops}: {unknown} not among {list(MYSTERY_OPERATIONS)}")
    try:
        code = run_benchmark(args.dir, units, args.seeds, operations, args.overrides)
    except (BenchmarkError, ConfigError) as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    sys.exit(code)


if __name__ == "__main__":
    main()
