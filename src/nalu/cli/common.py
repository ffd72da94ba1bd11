"""What every entry point (train, evaluate, report, bench) shares: the exit-code policy, one-line
errors, the config directory and Lightning's console set-up."""

import argparse
import ctypes
import errno
import json
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import yaml
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import nalu.config.resolvers  # noqa: F401  (registers the resolvers the configs use)
from nalu.config.errors import ConfigError, InvalidArgument
from nalu.config.overrides import distinct_short, is_seed, short_value
from nalu.config.resolvers import run_dir_of
from nalu.config.rules import problem_differences
from nalu.results.commands import command_line
from nalu.results.record import (
    ALL_OUTPUTS,
    CHECKPOINTS_DIR,
    EXTRAP_MSE_OF,
    INTERP_MSE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    PROBLEM_FILE,
    STATUS_DIVERGED,
    STATUS_FINISHED,
    RunRecord,
    finite_median,
    operation_suffix,
)

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback as LightningCallback

# An installed package carries its configs as nalu/conf; a source checkout (editable install)
# keeps them at the repository's top, conf/.
_PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_DIR = (
    _PACKAGED_CONFIG_DIR
    if _PACKAGED_CONFIG_DIR.is_dir()
    else Path(__file__).resolve().parents[3] / "conf"
)
T = TypeVar("T")
# Exit codes: bad input, a run stopped by a non-finite loss, a run stopped by Ctrl-C or SIGTERM
# (as a shell reports SIGINT; last.ckpt resumes it).
EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
# A result could not be written (a full disk, a read-only folder): sysexits.h's EX_IOERR.
EXIT_OUTPUT_ERROR = 74
# A sweep in which a job failed (each said why in its line; the summary counts them).
EXIT_JOBS_FAILED = 1
# NALU_VERBOSE=1 shows the traceback behind a one-line error.
VERBOSE = os.environ.get("NALU_VERBOSE", "") not in ("", "0")


class _DropNotices(logging.Filter):
    """Lightning advertises a cloud logger at every Trainer start (our runs log locally) and
    announces the loader pass behind ``estimated_stepping_batches`` (the module's own call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "estimate number of stepping batches" not in message


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropNotices())
# Optuna's storage layer announces each of its database plugins as it loads.
logging.getLogger("alembic").setLevel(logging.WARNING)


# Fields whose values are paths: a sweep job's folder holds Hydra's `=` (`lr=0.1_seed0`).
PATH_FIELDS = ("ckpt_path",)


def quote_paths(arguments: list[str]) -> list[str]:
    """``ckpt_path=<path>`` with the path quoted for Hydra's grammar, which would otherwise
    refuse the ``=`` and ``,`` of a sweep job's folder name; values already quoted (or
    interpolations) are left as they are."""
    quoted = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        plain = value not in ("", "null") and value[0] not in "'\"$"
        if equals and key.lstrip("+~") in PATH_FIELDS and plain:
            argument = f"{key}={hydra_quoted(value)}"
        quoted.append(argument)
    return quoted


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar, whatever it holds."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def saved_config_path(ckpt_path: str | Path) -> Path:
    """The config of the run that wrote ``ckpt_path``: ``<run>/.hydra/config.yaml``."""
    return run_dir_of(ckpt_path) / ".hydra" / "config.yaml"


def saved_run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The config of the run that wrote ``ckpt_path`` (``saved_config_path``), None where it is
    not there; a file whose data section does not read as a run's is a ``ConfigError`` naming
    it."""
    saved = saved_config_path(ckpt_path)
    if not saved.is_file():
        return None
    try:
        config = OmegaConf.load(saved)
        OmegaConf.to_container(config.data, resolve=True)  # every value of the problem resolves
    except (OSError, ValueError, AttributeError, yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{saved}: unreadable ({type(error).__name__})") from error
    return config


def saved_problem_difference(
    ckpt_path: str | Path, data: DictConfig
) -> tuple[str, Any, Any] | None:
    """The first field of the problem (``rules.PROBLEM_FIELDS``) in which ``data`` differs from
    the data config of the run that wrote ``ckpt_path`` (``saved_run_config``), as (field, the
    run's value, ``data``'s); None where they pose the same problem or that config is not
    there."""
    saved = saved_run_config(ckpt_path)
    if saved is None:
        return None
    before = OmegaConf.to_container(saved.data, resolve=True)
    after = OmegaConf.to_container(data, resolve=True)
    differing = problem_differences(before, after)
    if not differing:
        return None
    return differing[0], before.get(differing[0]), after.get(differing[0])


def checked(section: str, build: Callable[[], T]) -> T:
    """Run ``build`` and turn a bad argument into a one-line ``ConfigError`` naming the field."""
    try:
        return build()
    except (InstantiationException, InvalidArgument, ValueError, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, InvalidArgument):
            raise ConfigError(f"{section}.{cause}") from error
        raise ConfigError(f"{section}: {cause or error}") from error


def fail(error: BaseException, message: str, exit_code: int) -> NoReturn:
    """Print ``message`` as one line and exit with ``exit_code``; with NALU_VERBOSE set, the
    traceback of ``error`` first (the same exit code either way, for scripts that read it)."""
    if VERBOSE:
        if error.__traceback__ is None:  # made to be reported, never raised: where it was made
            traceback.print_stack(file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(exit_code)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose bad arguments end the command as any other bad input does: one
    line (argparse would print the usage too) and ``EXIT_CONFIG_ERROR``; ``error_type`` is the
    command's error, whose traceback ``NALU_VERBOSE`` shows."""

    def __init__(self, *args: Any, error_type: type[Exception], **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.error_type = error_type

    def error(self, message: str) -> NoReturn:
        fail(self.error_type(message), f"{message} (see {self.prog} --help)", EXIT_CONFIG_ERROR)


def output_error_message(error: OSError) -> str:
    """One line for a result that could not be written: which file, and why."""
    path = error.filename2 or error.filename  # a rename's target, else the file
    where = f"{path}: " if path else ""
    return f"{where}{error.strerror or error}; results are written whole or not at all"


def check_output_folder(folder: Path, field: str) -> None:
    """Refuse, before any work, an output folder that cannot be made: under a file, on a
    read-only file system, without permission, or where the system makes no folders (``/proc``)
    (``OSError``, which ``output_error_message`` reads)."""
    ancestor = folder.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{field}: {ancestor} is a file", str(folder))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES, f"{field}: {ancestor} is read-only or not writable", str(folder)
        )
    if ancestor != folder.absolute():
        # The permission bits do not bind root, nor tell which file systems take no folders:
        # make one, as the run will, and remove it.
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".nalu-", dir=ancestor))
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise OSError(
                error.errno, f"{field}: no folder can be made in {ancestor} ({reason})", str(folder)
            ) from error


@dataclass(frozen=True)
class SweepCounts:
    """A sweep's jobs by how they ended."""

    jobs: int
    finished: int
    diverged: int
    # What the sweep's validation MSEs rank first (``best_on_validation``): its name, MSE and
    # how many jobs that MSE is the median of (None: one job's); none where the jobs pose
    # different problems.
    best: tuple[str, float, int | None] | None = None
    # The settings in which the jobs' problems differ (their MSEs then do not compare).
    problems_differ: tuple[str, ...] = ()

    @property
    def failed(self) -> int:
        return self.jobs - self.finished - self.diverged


def count_jobs(sweep_dir: Path) -> SweepCounts:
    """The jobs of a sweep folder (each has its ``.hydra``): finished where a run of it (itself
    or a population member) finished, diverged where all diverged (``RunRecord.diverged``, as
    the report counts them), failed where none wrote its metrics.json."""
    finished = diverged = jobs = 0
    ranked: list[tuple[Path, float, frozenset[int]]] = []
    for job in sorted(path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()):
        jobs += 1
        statuses = set()
        validation = []  # the finished runs' interpolation MSEs: one, or a population's members
        problem_seeds = set()  # every run's, finished or not: the problems the job poses
        for metrics in job.rglob(METRICS_FILE):
            try:
                record = RunRecord.read(metrics.parent)
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            status = STATUS_DIVERGED if record.diverged else record.status
            statuses.add(status)
            problem_seeds.add(_problem_seed(metrics.parent))
            if status == STATUS_FINISHED:
                validation.append(record.metrics.get(INTERP_MSE, math.nan))
        # A population is ranked by its members' median, as its own TensorBoard run shows it.
        mse = finite_median(validation)
        if math.isfinite(mse):
            ranked.append((job, mse, frozenset(problem_seeds)))
        finished += STATUS_FINISHED in statuses
        diverged += statuses == {STATUS_DIVERGED}
    differ = differing_job_problems(sweep_dir) if finished > 1 else ()
    best = None if differ else best_on_validation(ranked)
    return SweepCounts(jobs, finished, diverged, best, differ)


def _problem_seed(run_dir: Path) -> int | None:
    """The seed a run drew its problem from (its ``problem.json``), None where it has none."""
    try:
        return json.loads((run_dir / PROBLEM_FILE).read_text(encoding="utf-8")).get("problem_seed")
    except (OSError, ValueError, AttributeError):
        return None


def best_on_validation(
    ranked: list[tuple[Path, float, frozenset[int]]],
) -> tuple[str, float, int | None] | None:
    """Of the finished jobs (folder, validation MSE, the seeds their problems were drawn from),
    the one of the lowest MSE, as (its name, the MSE, None), where every job has the same seeds.
    Where the jobs sweep seeds (each seed a draw of the initial weights and, by default, of the
    problem), each configuration (a job's overrides but its seeds) by the median over its jobs,
    as a report's rows pool seeds, as (its overrides, the median, its jobs). Only
    configurations that finished on every seed are compared; none for jobs of one
    configuration."""
    if not ranked:
        return None
    from nalu.results.report import run_overrides

    overrides = [run_overrides(job) for job, _, _ in ranked]
    settings = [{f: v for f, v in each.items() if not is_seed(f)} for each in overrides]
    # What a job's seeds drew: its seeds as given, and the seeds of the problems it posed.
    draws = [
        frozenset((f, str(v)) for f, v in each.items() if is_seed(f)) | problems
        for each, (_, _, problems) in zip(overrides, ranked, strict=True)
    ]
    if len(set(draws)) == 1:
        job, mse, _ = min(ranked, key=lambda entry: entry[1])
        return job.name, mse, None
    # A configuration is named by the fields in which it differs from the others: by their
    # values' first digits, unless two configurations would then read the same.
    fields = dict.fromkeys(field for each in settings for field in each)
    varied = [f for f in fields if len({str(each.get(f)) for each in settings}) > 1]
    if not varied:
        return None

    def name(each: dict[str, Any], text: Callable[[Any], str]) -> str:
        return " ".join(f"{field}={text(each[field])}" for field in varied if field in each)

    names = distinct_short(
        [name(each, str) for each in settings], [name(each, short_value) for each in settings]
    )
    configurations: dict[str, list[tuple[float, frozenset]]] = {}
    for config, draw, (_, mse, _) in zip(names, draws, ranked, strict=True):
        configurations.setdefault(config, []).append((mse, draw))
    every = set(draws)
    complete = {
        config: [mse for mse, _ in jobs]
        for config, jobs in configurations.items()
        if {draw for _, draw in jobs} == every
    }
    if not complete:
        return None
    config, mses = min(complete.items(), key=lambda item: statistics.median(item[1]))
    return config, statistics.median(mses), len(mses)


def differing_job_problems(sweep_dir: Path) -> tuple[str, ...]:
    """The problem settings (``problem_fields``) in which a sweep's jobs differ, as their
    validation MSEs see them (the extrapolation range left out: a test set's): none where every
    job poses the same problems (a population's problem cells vary within each job)."""
    from nalu.results.report import (
        EXTRAP_RANGE,
        differing_problem_fields,
        load_runs,
        problem_fields,
    )

    def validated(run: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        fields = problem_fields(run)
        fields.pop(EXTRAP_RANGE, None)
        return tuple(sorted(fields.items()))

    per_job = [load_runs([job]) for job in sorted(sweep_dir.iterdir()) if (job / ".hydra").is_dir()]
    problems = {frozenset(map(validated, runs)) for runs in per_job}
    if len(problems - {frozenset()}) <= 1:
        return ()
    within = {field for runs in per_job for field in differing_problem_fields(runs)}
    across = differing_problem_fields([run for runs in per_job for run in runs])
    across.pop(EXTRAP_RANGE, None)
    # Where the jobs' sets of cells differ, the cells' own fields are the difference.
    return tuple(field for field in across if field not in within) or tuple(across)


class MultirunSummary(Callback):
    """Ends a multirun with a line counting its jobs, finished, diverged and failed, the job
    of the lowest interpolation MSE (the validation set: never the test set) and the report's
    command (``hydra.callbacks`` in ``conf/hydra/default.yaml``); ``last`` keeps the counts,
    from which ``nalu-train`` takes its exit code."""

    last: SweepCounts | None = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        counts = count_jobs(sweep_dir)
        MultirunSummary.last = counts
        print(
            f"multirun: {counts.jobs} job{'' if counts.jobs == 1 else 's'} in {sweep_dir}: "
            f"{counts.finished} finished, "
            f"{counts.diverged} diverged, {counts.failed} failed"
        )
        if counts.best is not None:
            name, mse, pooled = counts.best
            if pooled is None:
                print(f"best on the validation set: {name} (interp/mse {mse:.4g})")
            else:
                print(
                    f"best on the validation set: {name} (median interp/mse {mse:.4g} over its "
                    f"{pooled} seeds, as the report pools them)"
                )
        elif counts.problems_differ:
            print(
                "best on the validation set: none named; the jobs pose different problems "
                f"({', '.join(counts.problems_differ)}), whose MSEs do not compare"
            )
        if counts.finished or counts.diverged:  # else no run wrote results to report
            print(f"report: {command_line('nalu-report', str(sweep_dir))}")


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a killed run in ``run_dir`` resumes from: its ``last.ckpt``, else the
    newest it saved (a run killed before its first ``last.ckpt``, some seconds in, may have
    saved the checkpoint of its best validation); None where it saved none."""
    last = run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
    if last.is_file():
        return last
    saved = sorted(
        (run_dir / CHECKPOINTS_DIR).glob("*.ckpt"), key=lambda path: path.stat().st_mtime
    )
    return saved[-1] if saved else None


def format_metrics(metrics: dict[str, float]) -> str:
    """The final metrics as one table: a row per measure, a column for all outputs and one per
    operation (``extrap/mse_mul`` is row ``extrap/mse``, column ``mul``)."""
    operations = [
        name.removeprefix(EXTRAP_MSE_OF) for name in metrics if name.startswith(EXTRAP_MSE_OF)
    ]
    rows: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        column = next((op for op in operations if name.endswith(operation_suffix(op))), ALL_OUTPUTS)
        measure = name.removesuffix(operation_suffix(column))
        rows.setdefault(measure, {})[column] = value
    columns = [ALL_OUTPUTS, *operations]
    width = max(map(len, rows), default=0)
    lines = [f"  {'':<{width}}" + "".join(f"  {column:>10}" for column in columns)]
    for measure, values in rows.items():
        cells = "".join(
            f"  {values[column]:>10.4g}" if column in values else f"  {'':>10}"
            for column in columns
        )
        lines.append(f"  {measure:<{width}}{cells}".rstrip())
    return "\n".join(lines)


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning each
    to the system: every training step allocates the same large temporaries (a population's
    batches and activations), and a block that the system hands back anew is page-faulted in
    again, which doubled the step of a 50-member population on two CPU cores. The process's
    memory stays what its largest step needs. Nothing happens where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest allowed threshold
    except (OSError, AttributeError):
        return


def log_lightning_once() -> None:
    """Print Lightning's log lines once: through Hydra's handlers (the console and the run's log
    file) only, not also through the console handler Lightning gives its own package logger.
    (The training module silences Lightning's advice that does not apply to its runs.)"""
    import lightning  # noqa: F401  (importing it is what adds that handler)

    logging.getLogger("lightning").handlers.clear()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAbsentAccelerators) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAbsentAccelerators())


class _NoAbsentAccelerators(logging.Filter):
    """Drops ``GPU available: False, used: False`` and ``TPU available: False, ...``: the
    accelerators a machine lacks (one it has but does not use is still said)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return re.match(r"[A-Z]+ available: False", record.getMessage()) is None


def progress_callbacks(trainer_cfg: DictConfig) -> list["LightningCallback"]:
    """Rich's progress bar over optimizer steps where ``enable_progress_bar`` is on (by default:
    output is a terminal), else a progress line every 30 s (``nalu.training.progress``).

    Lightning refuses a progress bar callback on a trainer without one, hence a list to add.
    """
    from nalu.training.progress import ProgressLines, StepProgressBar

    return [StepProgressBar() if trainer_cfg.get("enable_progress_bar", True) else ProgressLines()]
