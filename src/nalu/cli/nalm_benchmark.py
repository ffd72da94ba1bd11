"""``python -m nalu.nalm_benchmark DIR``: the single module arithmetic task of Mistry, Farrahi &
Hare (2022, sec. 6.5) for every unit of ``conf/nalm``, as ``make benchmark`` runs it.

Per unit one population (``experiment=nalm_single_module nalm=<unit>``: the unit's operations ×
the 9 ranges × ``--seeds`` seeds) trains in ``DIR/<unit>``, each in its own ``nalu-train``
process, ``--jobs`` of them at a time (the largest populations first); then one report over them
all (``DIR/report.md``, with the per-range figure). Run again on the same ``DIR``, it keeps the
units that finished, resumes a killed one from its newest checkpoint
(``nalu.cli.common.resumable_checkpoint``) and trains the units it did not have;
``DIR/benchmark.json`` holds the seeds, operations and overrides, so that a second call with
others is refused instead of mixing two benchmarks in one report.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from nalu.cli.common import (
    CONFIG_DIR,
    EXIT_CONFIG_ERROR,
    EXIT_INTERRUPTED,
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


# Seconds between the runner's own lines (units done, units training): a unit says nothing while
# it builds its members and while it writes its report, a minute or more for the largest.
STATUS_EVERY_S = 60
# Memory a unit's process may take (the 900-member iNALU's peaked at 1.6 GB): ``default_jobs``
# starts no more processes than the machine's memory holds.
MEMORY_PER_UNIT = 2 * 1024**3


@dataclass
class UnitRun:
    """One unit's population as the benchmark trains it."""

    label: str  # "[k/n] unit": its place in --units
    unit: str
    run_dir: Path
    overrides: list[str]  # nalu-train's
    parameters: int  # the population's: its members × one member's, the measure of its work


def population_parameters(cfg: Any) -> int:
    """The parameters of the population that ``cfg`` (a composed run) trains: its members (each
    ``problems`` cell × ``population`` seeds) × one member's network."""
    from omegaconf import OmegaConf

    from nalu.cli.train import problem_cells
    from nalu.training.members import build_network

    network = build_network(OmegaConf.to_container(cfg.model, resolve=True), cfg.seed)
    return len(problem_cells(cfg)) * cfg.population * sum(p.numel() for p in network.parameters())


def default_jobs() -> int:
    """Units trained at a time unless told: one per core this process may use, as many as the
    memory holds (``MEMORY_PER_UNIT`` each). Most units' steps are too small for a second
    thread to shorten, so two processes of one thread each train two units in about the time
    of one."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(len(os.sched_getaffinity(0)), memory // MEMORY_PER_UNIT))


def _copy_lines(source: IO[str], target: IO[str], prefix: str) -> None:
    for line in source:
        target.write(prefix + line)
        target.flush()


class UnitProcesses:
    """The units' ``nalu-train`` processes, up to ``jobs`` at a time, the largest populations
    first (the last to start then the shortest). Beside another, a process takes its share of
    the cores (``OMP_NUM_THREADS``, unless set) and its output comes line by line, each line led
    by its unit's name; every ``STATUS_EVERY_S`` a line says how far the benchmark is (unless a
    lone unit draws its progress bar on the terminal). A Ctrl-C or SIGTERM reaches the
    processes once, through this one (each runs in its own process group, out of the terminal's
    reach): each stops after its epoch with ``last.ckpt``, and no other starts; the same signal
    again stops them at once."""

    def __init__(self, runs: list[UnitRun], jobs: int) -> None:
        self.pending = sorted(runs, key=lambda run: -run.parameters)
        self.jobs = max(1, min(jobs, len(runs)))
        self.running: dict[subprocess.Popen[str], UnitRun] = {}
        self.readers: dict[subprocess.Popen[str], list[threading.Thread]] = {}
        self.stopped: list[tuple[UnitRun, int]] = []  # the units that failed or were stopped
        self.signals = 0
        self.total = len(runs)
        self.says_status = self.jobs > 1 or not sys.stdout.isatty()

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.jobs > 1:
            threads = max(1, len(os.sched_getaffinity(0)) // self.jobs)
            environment.setdefault("OMP_NUM_THREADS", str(threads))
            environment["PYTHONUNBUFFERED"] = "1"  # each line as it is written
        return environment

    def _start(self, run: UnitRun) -> None:
        last = resumable_checkpoint(run.run_dir)
        resume = [f"ckpt_path={last}"] if last else []
        print(f"{run.label}: {f'resumed from {last}' if last else 'training'} in {run.run_dir}")
        sys.stdout.flush()
        alone = self.jobs == 1
        command = [sys.executable, "-m", "nalu.train", *run.overrides]
        process = subprocess.Popen(
            [*command, f"hydra.run.dir={run.run_dir}", *resume],
            stdout=None if alone else subprocess.PIPE,
            stderr=None if alone else subprocess.PIPE,
            text=True,
            errors="replace",
            env=self._environment(),
            process_group=0,
        )
        self.readers[process] = [
            threading.Thread(target=_copy_lines, args=(source, target, f"[{run.unit}] "))
            for source, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))
            if source is not None
        ]
        for reader in self.readers[process]:
            reader.start()
        self.running[process] = run

    def _status(self, started: float) -> None:
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - started))
        finished = self.total - len(self.pending) - len(self.running)
        training = ", ".join(run.unit for run in self.running.values())
        parts = [
            f"{elapsed} elapsed",
            f"{finished} of {self.total} units done",
            f"training {training}",
        ]
        print(f"benchmark: {' · '.join(parts)}")
        sys.stdout.flush()

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        for process in self.running:
            process.send_signal(signum)

    def train(self) -> None:
        """Start and wait for every unit; ``stopped`` then holds those that did not finish."""
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self._forward) for signum in stops}
        started = said = time.monotonic()
        try:
            while self.pending or self.running:
                while (
                    self.pending
                    and len(self.running) < self.jobs
                    and not self.stopped
                    and not self.signals
                ):
                    self._start(self.pending.pop(0))
                if not self.running:
                    break
                time.sleep(0.2)
                if self.says_status and time.monotonic() - said >= STATUS_EVERY_S:
                    self._status(started)
                    said = time.monotonic()
                for process in [p for p in self.running if p.poll() is not None]:
                    run = self.running.pop(process)
                    for reader in self.readers.pop(process):  # its last lines before ours
                        reader.join()
                    if process.returncode != 0:
                        self.stopped.append((run, process.returncode))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def run_benchmark(
    out: Path,
    units: list[str],
    seeds: int,
    operations: list[str] | None,
    extra: list[str],
    jobs: int,
) -> int:
    """Train each unit's population in ``out/<unit>`` (keeping finished ones, resuming killed
    ones), ``jobs`` at a time, then write the report; the exit code of the first unit that
    failed or was interrupted, else 0."""
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
    configs = {
        unit: check_command_line([*unit_overrides(unit, seeds, operations), *extra], CONFIG_DIR)
        for unit in trained
    }
    check_settings(out, {"seeds": seeds, "operations": operations, "overrides": extra})
    runs = []
    for k, unit in enumerate(units, start=1):
        run_dir = out / unit
        label = f"[{k}/{len(units)}] {unit}"
        if unit not in configs:
            print(f"{label}: none of its operations {unit_operations(unit)} asked for, skipped")
        elif (run_dir / FINISHED_MARK).is_file():
            print(f"{label}: finished, kept ({run_dir})")
        else:
            overrides = [*unit_overrides(unit, seeds, operations), *extra]
            runs.append(
                UnitRun(label, unit, run_dir, overrides, population_parameters(configs[unit]))
            )
    sys.stdout.flush()
    processes = UnitProcesses(runs, jobs)
    processes.train()
    if processes.stopped or processes.pending:  # a unit failed, or a signal came
        again = resume_command(out, units, seeds, operations, extra)
        stopped = [run for run, _ in processes.stopped] or processes.pending[:1]
        names = ", ".join(run.unit for run in stopped)
        print(f"benchmark stopped at {names}; `{again}` resumes it", file=sys.stderr)
        return processes.stopped[0][1] if processes.stopped else EXIT_INTERRUPTED
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
    jobs = default_jobs()
    parser.add_argument(
        "--jobs",
        type=int,
        default=jobs,
        help=f"units trained at a time (default {jobs}: one per core, as memory allows)",
    )
    parser.add_argument(
        "overrides", nargs="*", default=[], help="more nalu-train overrides for every unit"
    )
    args = parser.parse_intermixed_args(argv)
    units = args.units.split(",") if args.units else all_units()
    operations = args.ops.split(",") if args.ops else None
    for name in ("seeds", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: must be a positive integer")
    unknown = [op for op in operations or [] if op not in MYSTERY_OPERATIONS]
    if unknown:
        parser.error(f"--ops={args.ops}: {unknown} not among {list(MYSTERY_OPERATIONS)}")
    try:
        code = run_benchmark(args.dir, units, args.seeds, operations, args.overrides, args.jobs)
    except (BenchmarkError, ConfigError) as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    sys.exit(code)


if __name__ == "__main__":
    main()
