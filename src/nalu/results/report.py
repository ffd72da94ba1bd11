"""Reports over many runs: every metrics.json below some folders, written as report.md,
report.csv and PNG figures into the first.

Per model (or any ``--group-by`` labels) and operation, two success rates with their 95%
Wilson intervals (Madsen & Johansen 2020, sec. 4.1): per output (outputs × seeds), each output
judged at its own best interpolation epoch as Madsen & Johansen judge their one-output models,
and per run (a run succeeds on an operation when every output of it is solved at the run's best
epoch); the median extrapolation MSE, relative error and normalised error (Trask et al. 2018,
Table 1), the exact-recovery rate and the diverged runs; figures of the loss curves (median over
seeds with a band: the middle half of the runs, or all of a few) and of the success rates.
"""

import contextlib
import csv
import functools
import io
import json
import logging
import math
import sys
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nalu.config.errors import InvalidArgument
from nalu.config.overrides import distinct_short, hyperparameter_values, is_seed, short_value
from nalu.config.rules import MADSEN_JOHANSEN, MISTRY, STATIC_OPERATIONS, SUCCESS_EPSILON
from nalu.config.value_range import describe_intervals, value_intervals
from nalu.results.commands import tensorboard_command
from nalu.results.record import (
    ALL_OUTPUTS,
    EXTRAP_MSE,
    EXTRAP_MSE_OF,
    EXTRAP_RELATIVE_ERROR,
    HEADLINE_METRICS,
    INTERP_MSE,
    MEMBERS_DIR,
    METRICS_FILE,
    MSE,
    NORMALIZED_ERROR,
    OUTPUT_COUNT,
    OWN_BEST_SOLVED_FRACTION,
    PROBLEM_FILE,
    RECOVERED_FRACTION,
    RELATIVE_ERROR,
    REPORT_EVENTS_DIR,
    REPORT_FILE,
    REPORT_TABLE,
    SOLVED_AT_STEP,
    SOLVED_FRACTION,
    SPARSITY_ERROR,
    TRAIN_LOSS,
    RunRecord,
    finite_median,
    is_member_curve,
    metric_name,
    operation_suffix,
    write_atomic,
    write_text_atomic,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Two-sided 95%: the standard normal's 0.975 quantile.
Z_95 = 1.959963984540054
# problem.json keys that vary from seed to seed within one problem family.
PER_SEED_PROBLEM_KEYS = ("problem_seed", "outputs", "subset_a", "subset_b")
# TensorBoard's event reader logs an INFO line per file it finishes; a report reads hundreds.
logging.getLogger("tensorboard").setLevel(logging.WARNING)


class ReportError(Exception):
    """The runs cannot be reported; the message is one line."""


def load_runs(paths: list[Path], unreadable: list[str] | None = None) -> list[dict[str, Any]]:
    """Every readable ``metrics.json`` under ``paths``, each with its folder as ``run_dir``, its
    command line's ``overrides`` (``{field: value}``) and whether it ``diverged``. An unreadable
    one (not JSON, not a run's record, a folder) is left out, and ``path (why)`` added to
    ``unreadable``."""
    runs = []
    for root in paths:
        for metrics_file in sorted(Path(root).rglob(METRICS_FILE)):
            try:
                record = RunRecord.read(metrics_file.parent)
                run = {**asdict(record), "diverged": record.diverged}
                run["overrides"] = run_overrides(metrics_file.parent)
            except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as e:
                if unreadable is not None:
                    reason = " ".join(f"{type(e).__name__}: {e}".split())[:100]
                    unreadable.append(f"{metrics_file} ({reason})")
                continue
            run["run_dir"] = str(metrics_file.parent)
            runs.append(run)
    return runs


def _hydra_dir(run_dir: Path) -> Path:
    """The ``.hydra`` folder of the job that wrote the run: its own, or a population's for a
    member (``<job>/members/<member>``)."""
    if run_dir.parent.name == MEMBERS_DIR and not (run_dir / ".hydra").is_dir():
        return run_dir.parent.parent / ".hydra"
    return run_dir / ".hydra"


def run_overrides(run_dir: Path) -> dict[str, Any]:
    """``{field: value}`` of the job's command line (``.hydra/overrides.yaml``) that set a
    hyperparameter (``hyperparameter_values``); empty for a run written without Hydra."""
    return dict(_job_overrides(_hydra_dir(run_dir) / "overrides.yaml"))


@functools.cache
def _job_overrides(path: Path) -> dict[str, Any]:
    """``run_overrides`` of a job's ``overrides.yaml``, read once for all of its members."""
    if not path.is_file():
        return {}
    texts = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return hyperparameter_values(str(text) for text in texts)


@functools.cache
def _saved_problem(run_dir: Path) -> dict[str, Any]:
    """A run's ``problem.json``, read once; empty where it is missing or unreadable."""
    try:
        return json.loads((run_dir / PROBLEM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@functools.cache
def _saved_config(path: Path) -> DictConfig | None:
    """A run's ``.hydra/config.yaml``, read once; None where it is missing or unreadable."""
    try:
        return OmegaConf.load(path) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):
        return None


@functools.cache
def _saved_choices(path: Path) -> dict[str, Any]:
    """A job's config-group choices (``.hydra/hydra.yaml``: ``optimizer: sgd``, ...), read
    once; none where it is missing or unreadable."""
    config = _saved_config(path)
    choices = None if config is None else OmegaConf.select(config, "hydra.runtime.choices")
    return OmegaConf.to_container(choices) if OmegaConf.is_config(choices) else {}


def run_value(run: dict[str, Any], field: str) -> Any:
    """A run's value of ``field``: a label of its metrics.json, an override of its command line,
    the config chosen for a config group (``optimizer``: ``sgd``, whether the command line or
    the defaults chose it), a field of its config (``.hydra/config.yaml``) or, for
    ``data.<setting>``, of the problem it recorded (``problem.json``: a run written without
    Hydra has no config); None where it has none."""
    if field in run.get("labels", {}):
        return run["labels"][field]
    if field in run.get("overrides", {}):
        return run["overrides"][field]
    hydra_dir = _hydra_dir(Path(run["run_dir"]))
    choices = _saved_choices(hydra_dir / "hydra.yaml")
    if field in choices:
        return choices[field]
    config = _saved_config(hydra_dir / "config.yaml")
    value = None
    # An interpolation that cannot resolve out of its run reads as no value.
    with contextlib.suppress(OmegaConfBaseException):
        value = None if config is None else OmegaConf.select(config, field, default=None)
    if value is None and field.startswith("data."):
        value = _saved_problem(Path(run["run_dir"])).get(field.removeprefix("data."))
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def varied_fields(runs: list[dict[str, Any]]) -> list[str]:
    """The command-line fields whose values differ between runs, seeds left out: seeds are
    what a row pools."""
    fields = sorted({field for run in runs for field in run.get("overrides", {})})
    return [
        field
        for field in fields
        if not is_seed(field) and len({str(run_value(run, field)) for run in runs}) > 1
    ]


def _ordered(value: Any) -> tuple[int, float, str]:
    """Rows in numeric order where the values are numbers (5 before 10), else by text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def default_group_by(runs: list[dict[str, Any]]) -> list[str]:
    """A row per model, per cell of a population's ``problems`` axes and per combination of
    swept values; a swept field that takes one value per model (``nalm=nau`` beside the NAU's
    runs) splits no model's runs and would only repeat it. Runs of several problems also have
    a row per value of each setting in which their problems differ."""
    axes = dict.fromkeys(a for run in runs for a in run.get("labels", {}).get("problem_axes", {}))

    def splits_a_model(field: str) -> bool:
        values: dict[str, set[str]] = {}
        for run in runs:
            values.setdefault(str(run_value(run, "model")), set()).add(str(run_value(run, field)))
        return any(len(each) > 1 for each in values.values())

    swept = [field for field in varied_fields(runs) if field != "model" and field not in axes]
    fields = ["model", *axes, *(field for field in swept if splits_a_model(field))]
    # Runs of several problems (folders of other commands reported together): each row names
    # the settings its problem differs in, so that no two rows read as one task.
    if not axes:
        named = {name for field in fields for name in (field, field.removeprefix("data."))}
        fields += [
            field
            for field in differing_problem_fields(runs)
            if not {field, field.removeprefix("data."), f"data.{field}"} & named
        ]
    return fields


def median_table(groups: dict[str, list[dict[str, Any]]], group_by: Sequence[str]) -> str:
    """A Markdown table: per group of runs, the median of each final metric.

    ``runs`` counts every run, ``diverged`` those that diverged (``RunRecord.diverged``); the
    medians are over the others' finite values, as the success table's (``summary_rows``).
    """
    runs = [run for members in groups.values() for run in members]
    per_op = sorted(
        {name for run in runs for name in run["metrics"] if name.startswith(EXTRAP_MSE_OF)}
    )
    columns = [*HEADLINE_METRICS, *per_op]
    lines = [
        f"| {' / '.join(group_by)} | runs | diverged | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for name, group in groups.items():
        diverged = sum(run["diverged"] for run in group)
        metrics = [run["metrics"] for run in group if not run["diverged"]]
        cells = []
        for column in columns:
            median = finite_median([m[column] for m in metrics if column in m])
            cells.append("–" if math.isnan(median) else f"{median:.4g}")
        lines.append(f"| {name} | {len(group)} | {diverged} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    centre = (p + z²/2n) / (1 + z²/n), half width = z·√(p(1−p)/n + z²/4n²) / (1 + z²/n).
    """
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    scale = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / scale
    # At 0 or n successes a bound is exactly 0 or 1; the formula leaves a rounding residue.
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == trials else centre + half
    return (low, high)


def fisher_exact_p(successes: tuple[int, int], trials: tuple[int, int]) -> float:
    """Two-sided p-value of Fisher's exact test that two binomial samples share one rate
    (Fisher 1935): the hypergeometric probability, given both margins, of every split of the
    successes at most as likely as the observed one. Compares rates where "inside their
    interval" would forget that ours is a sample too."""
    total = sum(successes)

    def split(first: int) -> float:  # P(the first sample holds `first` of the successes)
        chosen = math.comb(trials[0], first) * math.comb(trials[1], total - first)
        return chosen / math.comb(sum(trials), total)

    observed = split(successes[0])
    splits = range(max(0, total - trials[1]), min(trials[0], total) + 1)
    # The relative margin keeps a split as likely as the observed one when rounding differs.
    return min(1.0, sum(p for p in map(split, splits) if p <= observed * (1 + 1e-7)))


def near_perfect_text(problems: Sequence[str]) -> str:
    """Which near-perfect model judged the runs of ``problems`` (``problem_identity``s)."""
    epsilon = "ε = " + f"{SUCCESS_EPSILON:g}".replace("e-0", "e-")
    models = {
        MADSEN_JOHANSEN: "Madsen & Johansen 2020, sec. 4.1: the model that picks its operands "
        f"with {epsilon} of the other inputs mixed in",
        MISTRY: f"Mistry et al. 2022, sec. 6.5: the exact output off by {epsilon}",
    }
    used = sorted({json.loads(p).get("near_perfect", MADSEN_JOHANSEN) for p in problems})
    return "; ".join(models[name] for name in used)


def problem_identity(run: dict[str, Any]) -> str:
    """The problem the run posed, as the report names it: its settings except those drawn per
    seed."""
    problem = _saved_problem(Path(run["run_dir"]))
    if problem:
        settings = {k: v for k, v in problem.items() if k not in PER_SEED_PROBLEM_KEYS}
    else:
        labels = run.get("labels", {})
        settings = {k: labels.get(k) for k in ("problem", "operations")}
    return json.dumps(settings, sort_keys=True)


# The sets' value ranges: what "interpolation" and "extrapolation" meant, and what the success
# thresholds were measured on.
EXTRAP_RANGE = "data.extrap_range"
RANGE_FIELDS = ("data.train_range", "data.interp_range", EXTRAP_RANGE)


def _range_value(field: str, value: Any) -> Any:
    """A value range in one form, read by ``value_intervals``: ``[-50, 50]`` from a command line,
    the config's ``[-50.0, 50.0]`` and ``[[-50, 50]]`` alike are ``[-50.0, 50.0]``."""
    try:
        pairs = [list(pair) for pair in value_intervals(field, value)]
    except InvalidArgument:  # no range (a run without the field): as it is
        return value
    return pairs[0] if len(pairs) == 1 else pairs


def problem_fields(run: dict[str, Any]) -> dict[str, str]:
    """What makes runs comparable, by the field that names each in ``--group-by`` (a label, or
    a config field): the problem's settings (``problem_identity``), its sets' value ranges and
    its cell of a population's ``problems`` axes."""
    labels = run.get("labels", {})
    settings = json.loads(problem_identity(run))
    fields = {key if key in labels else f"data.{key}": value for key, value in settings.items()}
    fields.update((field, _range_value(field, run_value(run, field))) for field in RANGE_FIELDS)
    fields.update((axis, labels.get(axis)) for axis in labels.get("problem_axes", {}))
    return {field: json.dumps(value, sort_keys=True) for field, value in fields.items()}


def differing_problem_fields(runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The ``problem_fields`` whose values differ between the runs, in the order first seen,
    each with its values (``null`` for a run without the field: a run beside a population's
    problem cells)."""
    per_run = [problem_fields(run) for run in runs]
    names = dict.fromkeys(name for fields in per_run for name in fields)
    values = {name: sorted({fields.get(name, "null") for fields in per_run}) for name in names}
    return {name: each for name, each in values.items() if len(each) > 1}


def group_runs(
    runs: list[dict[str, Any]], group_by: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Runs by the values of the ``group_by`` labels; one problem per group, and every label
    known to some run, else ReportError."""
    for field in group_by:
        if all(run_value(run, field) is None for run in runs):
            known = sorted(
                {
                    label
                    for run in runs
                    for label in (*run.get("labels", {}), *run.get("overrides", {}))
                }
            )
            raise ReportError(
                f"--group-by {','.join(group_by)}: no run has the field {field!r}; choose a "
                f"label or config field, e.g. {', '.join(known)}"
            )
    groups: dict[str, list[dict[str, Any]]] = {}
    order: dict[str, tuple] = {}
    short: dict[str, str] = {}
    for run in runs:
        values = [run_value(run, field) for field in group_by]
        texts = ["–" if value is None else str(value) for value in values]
        key = " / ".join(texts)
        # A sampled value (an Optuna trial's learning rate) named by its first digits, unless
        # two rows would then read the same.
        short[key] = " / ".join(
            short_value(value) if isinstance(value, float) else text
            for value, text in zip(values, texts, strict=True)
        )
        groups.setdefault(key, []).append(run)
        axes = run.get("labels", {}).get("problem_axes", {})
        order[key] = tuple(
            # A population's problem cells in the order its config lists them.
            (0, float(axes[field].index(value)), "")
            if value in axes.get(field, [])
            else _ordered(value)
            for field, value in zip(group_by, values, strict=True)
        )
    groups = dict(sorted(groups.items(), key=lambda item: order[item[0]]))
    names = distinct_short(list(groups), [short[key] for key in groups])
    groups = dict(zip(names, groups.values(), strict=True))
    for key, members in groups.items():
        differing = differing_problem_fields(members)
        if differing:
            field, values = next(iter(differing.items()))
            missing = [f for f in differing if f not in group_by]
            raise ReportError(
                f"runs of different problems share the row '{key}' ({field}: "
                f"{' vs '.join(values[:2])}); add a field that tells them apart, e.g. "
                f"--group-by {','.join([*group_by, *missing[:1]])}"
            )
    return groups


def _operations(members: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for run in members:
        for metric in run.get("metrics", {}):
            operation = metric.removeprefix(EXTRAP_MSE_OF)
            if metric.startswith(EXTRAP_MSE_OF) and operation not in names:
                names.append(operation)
    return sorted(names)


def summary_rows(
    runs: list[dict[str, Any]], group_by: Sequence[str] = ("model",)
) -> list[dict[str, Any]]:
    """One row per group and operation (``all`` first): rates, intervals and medians.

    An operation's row counts the runs whose problem has it (each seed draws its own problem,
    so a run may have no division). A diverged run counts in ``runs`` and ``diverged`` and as
    neither solved nor recovered; the medians are over the runs that did not diverge.
    """
    rows = []
    for key, group in group_runs(runs, group_by).items():
        for operation in [ALL_OUTPUTS, *_operations(group)]:
            suffix = operation_suffix(operation)
            members = [run for run in group if has_operation(run, operation)]
            healthy = [run["metrics"] for run in members if not run["diverged"]]
            solved_fraction = metric_name("extrap", SOLVED_FRACTION, suffix)
            solved = sum(m.get(solved_fraction) == 1 for m in healthy)
            readable = [m for m in healthy if f"{RECOVERED_FRACTION}{suffix}" in m]
            recovered = sum(m[f"{RECOVERED_FRACTION}{suffix}"] == 1 for m in readable)
            low, high = wilson_interval(solved, len(members))
            outputs, outputs_solved = output_successes(members, suffix)
            output_low, output_high = wilson_interval(outputs_solved, outputs)

            def median_of(name: str, metrics: list[dict[str, float]] = healthy) -> float:
                return finite_median([m[name] for m in metrics if name in m])

            rows.append(
                {
                    "group": key,
                    "operation": operation,
                    "runs": len(members),
                    "diverged": len(members) - len(healthy),
                    "solved": solved,
                    "success_rate": solved / len(members),
                    "success_low": low,
                    "success_high": high,
                    "outputs": outputs,
                    "outputs_solved": outputs_solved,
                    "output_success_rate": outputs_solved / outputs if outputs else math.nan,
                    "output_success_low": output_low if outputs else math.nan,
                    "output_success_high": output_high if outputs else math.nan,
                    "extrap_relative_error": median_of(
                        metric_name("extrap", RELATIVE_ERROR, suffix)
                    ),
                    # The final metrics' table's medians too (a run's training loss is over
                    # all of its outputs).
                    "train_loss": median_of(TRAIN_LOSS) if not suffix else math.nan,
                    "interp_mse": median_of(metric_name("interp", MSE, suffix)),
                    "extrap_mse": median_of(metric_name("extrap", MSE, suffix)),
                    "extrap_normalized_error": median_of(
                        metric_name("extrap", NORMALIZED_ERROR, suffix)
                    ),
                    "interp_normalized_error": median_of(
                        metric_name("interp", NORMALIZED_ERROR, suffix)
                    ),
                    "recovered": recovered if readable else math.nan,
                    "recovery_rate": recovered / len(members) if readable else math.nan,
                    "solved_at_step": median_of(f"{SOLVED_AT_STEP}{suffix}"),
                    "sparsity_error": median_of(f"{SPARSITY_ERROR}{suffix}"),
                }
            )
    return rows


def has_operation(run: dict[str, Any], operation: str) -> bool:
    """Whether the run's problem has an output of ``operation`` (``all``: always): read from its
    metrics, or from its ``problem.json`` when it diverged before any were measured."""
    if (
        operation == ALL_OUTPUTS
        or metric_name("extrap", MSE, operation_suffix(operation)) in run["metrics"]
    ):
        return True
    outputs = [] if run["metrics"] else _saved_problem(Path(run["run_dir"])).get("outputs", [])
    return any(output.get("operation") == operation for output in outputs)


def output_successes(members: list[dict[str, Any]], suffix: str) -> tuple[int, int]:
    """(outputs, solved outputs) of an operation over the runs, each output judged at its own
    best interpolation epoch; a diverged run's outputs count as unsolved, and runs recorded
    without the per-output judgement are left out."""
    outputs = solved = 0
    for run in members:
        metrics = run.get("metrics", {})
        count = metrics.get(f"{OUTPUT_COUNT}{suffix}")
        fraction = metrics.get(metric_name("extrap", OWN_BEST_SOLVED_FRACTION, suffix))
        if count is None or fraction is None:
            continue
        outputs += round(count)
        solved += 0 if run["diverged"] else round(fraction * count)
    return outputs, solved


def _rate(successes: int, trials: int, low: float, high: float) -> str:
    if not trials:
        return "–"
    return f"{successes}/{trials} = {successes / trials:.0%} [{low:.0%}, {high:.0%}]"


def _number(value: float) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"


def shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a table shows: a group's ``all`` row only where its runs have several
    operations; where they have one, it repeats that operation's row number for number (each run
    of the NALM task has one output: 225 such pairs)."""
    operations: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["operation"] != ALL_OUTPUTS:
            operations.setdefault(row["group"], []).append(row)

    def repeats_its_operation(row: dict[str, Any]) -> bool:
        only = operations.get(row["group"], [])
        return row["operation"] == ALL_OUTPUTS and len(only) == 1 and only[0]["runs"] == row["runs"]

    return [row for row in rows if not repeats_its_operation(row)]


# The success table's columns after the group's name, each with whether the console shows it
# (report.md has every one; the console leaves some out so that a row fits a terminal).
SUCCESS_COLUMNS = {
    "op": True,
    "runs": True,
    "diverged": True,
    "outputs solved (95% CI)": True,
    "runs solved (95% CI)": True,
    "extrap MSE": True,
    "extrap rel. error": False,
    "extrap NE": False,
    "interp NE": False,
    "recovered": False,
    "solved at step": True,
    "sparsity": False,
}
CONSOLE_HIDDEN = tuple(column for column, shown in SUCCESS_COLUMNS.items() if not shown)


def markdown_table(rows: list[dict[str, Any]], group_by: Sequence[str]) -> str:
    header = [" / ".join(group_by), *SUCCESS_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in shown_rows(rows):
        success = _rate(row["solved"], row["runs"], row["success_low"], row["success_high"])
        per_output = _rate(
            row["outputs_solved"],
            row["outputs"],
            row["output_success_low"],
            row["output_success_high"],
        )
        recovered = "–" if math.isnan(row["recovery_rate"]) else f"{row['recovered']}/{row['runs']}"
        cells = [
            row["group"],
            row["operation"],
            str(row["runs"]),
            str(row["diverged"]),
            per_output,
            success,
            _number(row["extrap_mse"]),
            _number(row["extrap_relative_error"]),
            _number(row["extrap_normalized_error"]),
            _number(row["interp_normalized_error"]),
            recovered,
            _number(row["solved_at_step"]),
            _number(row["sparsity_error"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as a CSV file, written whole or not at all, as every result."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def loss_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of the training loss, the validation (interpolation) MSE, the
    extrapolation MSEs (overall and per operation) and relative error in a run's TensorBoard
    events, which lie in the run's folder; none for a run without them: it still has its row in
    the tables."""
    # The plotting and event-reading libraries load only once there is a report to draw.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: {event.step: event.value for event in events.Scalars(tag)}
        for tag in events.Tags().get("scalars", [])
        if is_member_curve(tag)
    }


def _steps_per_epoch(run: dict[str, Any]) -> float:
    return run["steps"] / run["epochs"] if run.get("epochs") else 1.0


def line_colours() -> tuple[tuple[float, float, float], ...]:
    """tab10's colours and black, for the groups of a figure (the NALM benchmark's 11 units each
    their own): tab20's pale halves fade on white, so past 11 groups a figure tells them apart by
    line style or marker as well."""
    import matplotlib.pyplot as plt

    return (*plt.get_cmap("tab10").colors, (0.0, 0.0, 0.0))


# Past ``line_colours``' 11, curves start over in its colours with the next of these styles.
LINE_STYLES = ("-", "--", ":", "-.")
# One colour per operation in every report; the share over all of a run's operations in grey.
OPERATION_COLOURS = {
    ALL_OUTPUTS: "0.6",
    **{name: f"C{k}" for k, name in enumerate(STATIC_OPERATIONS)},
}


def legend_handles(figure: "Figure") -> dict[str, Any]:
    """Each label drawn in the figure's panels with its first handle, in the order drawn."""
    handles: dict[str, Any] = {}
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    return handles


# A legend label wraps at this many characters: a row of a report over runs that differ in many
# fields is hundreds long, and a legend as wide left its panels no room.
LEGEND_LABEL_WIDTH = 60
# The height a legend's line of small text takes, and the space between its entries (inches).
LEGEND_LINE_INCHES, LEGEND_ENTRY_INCHES = 0.15, 0.07
# The height a line of a tick label takes (inches).
TICK_LINE_INCHES = 0.2


def legend_beside(figure: "Figure") -> None:
    """One legend for all of the figure's panels, to their right: inside a panel, a legend of
    many groups hides the curves it names. Long labels wrap, and the figure grows to hold the
    legend's height. The figure must use the constrained layout."""
    handles = legend_handles(figure)
    if not handles:  # runs without curves draw nothing
        return
    labels = [textwrap.fill(label, LEGEND_LABEL_WIDTH) for label in handles]
    lines = sum(label.count("\n") + 1 for label in labels)
    needed = LEGEND_LINE_INCHES * lines + LEGEND_ENTRY_INCHES * len(labels) + 0.5
    width, height = figure.get_size_inches()
    if needed > height:
        figure.set_size_inches(width, needed)
    figure.legend(handles.values(), labels, loc="outside right upper", fontsize="small")


# Fewer runs than this have no quartiles worth the name (numpy would interpolate between two of
# three runs): their band spans every run instead.
QUARTILE_BAND_RUNS = 5
BAND_LABELS = {
    True: "band: middle half of the runs (25–75%)",
    False: f"band: every run (n < {QUARTILE_BAND_RUNS})",
}


BEST_EPOCH_LABEL = "median best validation epoch (the tables read runs there)"


class MedianBands(NamedTuple):
    """What ``_plot_median_band`` drew on one axis: per line its epochs, median, band and
    colour, its count of runs, which kinds of band (``BAND_LABELS``' keys) it used, and
    whether it marked a best epoch."""

    lines: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]]
    counts: list[int]
    quartiles: set[bool]
    best_marked: list[bool]


def best_validation_step(curve: dict[str, dict[int, float]]) -> int | None:
    """The step of a run's lowest validation (interpolation) MSE, the first where several tie:
    the one its final metrics and success rates are read at (``nalu.training.judging.Judge``);
    None without a finite validation."""
    finite = [
        (value, step) for step, value in curve.get(INTERP_MSE, {}).items() if math.isfinite(value)
    ]
    return min(finite)[1] if finite else None


def _plot_median_band(
    axis: Any,
    groups: dict[str, list[dict[str, Any]]],
    curves: dict[str, list[dict]],
    tag: str,
    ylabel: str = "MSE",
    counted: bool = True,
) -> MedianBands:
    """Per group the median over its runs and a band against epochs: the middle half of the
    runs (25–75%), or every run where the group has fewer than ``QUARTILE_BAND_RUNS``. Each line
    is labelled by its group, and with its count of runs where ``counted``. The y scale is left
    to ``scale_together``, which chooses one for all of a figure's panels.

    At each step the median is over the runs with a finite point there: a run whose curve
    ends early (a member that diverged) leaves the others' points drawn."""
    colours = line_colours()
    drawn = MedianBands([], [], set(), [])
    steps_per_epoch: set[float] = set()
    for index, (key, members) in enumerate(groups.items()):
        colour = colours[index % len(colours)]
        style = LINE_STYLES[index // len(colours) % len(LINE_STYLES)]
        series = [
            (curve[tag], _steps_per_epoch(run))
            for run, curve in zip(members, curves[key], strict=True)
            if curve.get(tag)
        ]
        if not series:
            continue
        steps = sorted(set.union(*(set(points) for points, _ in series)))
        values = np.array(
            [[points.get(step, np.nan) for step in steps] for points, _ in series], dtype=float
        )
        values[~np.isfinite(values)] = np.nan
        if not np.isfinite(values).any():
            continue  # every run of the group diverged before its first point
        epochs = np.array(steps) / series[0][1]
        steps_per_epoch.update(per_epoch for _, per_epoch in series)
        quartiles = len(series) >= QUARTILE_BAND_RUNS
        with warnings.catch_warnings():  # steps at which every run had diverged: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(values, [25, 75] if quartiles else [0, 100], axis=0)
            median = np.nanmedian(values, axis=0)
        label = f"{key} (n={len(series)})" if counted else key
        axis.plot(epochs, median, style, label=label, color=colour)
        axis.fill_between(epochs, low, high, color=colour, alpha=0.2)
        # The tables read each run at its best validation, not at the curve's end: the group's
        # median of those epochs, on its line.
        best = [
            step / _steps_per_epoch(run)
            for run, curve in zip(members, curves[key], strict=True)
            if curve.get(tag) and (step := best_validation_step(curve)) is not None
        ]
        if best:
            epoch = float(np.median(best))
            at = np.interp(epoch, epochs[np.isfinite(median)], median[np.isfinite(median)])
            axis.plot([epoch], [at], "D", color=colour, mec="black", ms=6, zorder=3)
        drawn.best_marked.append(bool(best))
        drawn.lines.append((epochs, median, low, high, colour))
        drawn.counts.append(len(series))
        drawn.quartiles.add(quartiles)
    # The tables' "solved at step" counts optimizer steps: the axis says how many an epoch is.
    (per_epoch,) = steps_per_epoch if len(steps_per_epoch) == 1 else (0.0,)
    axis.set_xlabel(
        f"epoch (= {per_epoch:,.0f} optimizer steps)"
        if per_epoch.is_integer() and per_epoch
        else "epoch"
    )
    axis.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole: no 2.5
    axis.set_ylabel(ylabel)
    return drawn


def scale_together(panels: Sequence[tuple[Any, MedianBands]]) -> None:
    """One kind of y axis for every panel of a figure, each over its own range: log where the
    curves of any panel span a factor of 10 or more, else linear; and a grey legend entry for
    each kind of band drawn.

    On a log scale a median of exactly 0 is a ▼ on the bottom edge, in its group's colour."""

    def spans_tenfold(drawn: MedianBands) -> bool:
        plotted = np.concatenate([np.ravel(line[1:4]) for line in drawn.lines] or [[]])
        positive = plotted[plotted > 0]  # NaN is not > 0
        return bool(len(positive)) and positive.max() >= 10 * positive.min()

    log_scale = any(spans_tenfold(drawn) for _, drawn in panels)
    zeros_drawn = False
    for axis, drawn in panels if log_scale else ():
        axis.set_yscale("log", nonpositive="mask")
        bottom, top = axis.get_ylim()
        for epochs, median, *_, colour in drawn.lines:
            at_zero = epochs[median == 0]
            if len(at_zero):
                axis.plot(at_zero, [bottom] * len(at_zero), "v", color=colour, ms=5, clip_on=False)
                zeros_drawn = True
        axis.set_ylim(bottom, top)
    axis = panels[-1][0]  # the legend lists its entries after every group's
    if zeros_drawn:
        axis.plot([], [], "v", color="grey", label="median exactly 0 (below the log scale)")
    for quartiles in sorted(set.union(*(drawn.quartiles for _, drawn in panels)), reverse=True):
        axis.fill_between([], [], [], color="grey", alpha=0.2, label=BAND_LABELS[quartiles])
    if any(any(drawn.best_marked) for _, drawn in panels):
        axis.plot([], [], "D", color="grey", mec="black", ms=6, label=BEST_EPOCH_LABEL)


def plot_curves(groups: dict[str, list[dict[str, Any]]]) -> dict[str, "Figure"]:
    """The article's two figures, training loss and test loss (the extrapolation MSE) per group
    over epochs, the validation loss (interpolation MSE), the test relative error and the test
    loss of each operation: median over runs and a band (``_plot_median_band``)."""
    import matplotlib.pyplot as plt

    curves = {
        key: [loss_curves(Path(run["run_dir"])) for run in runs] for key, runs in groups.items()
    }
    operations = sorted(
        {
            tag.removeprefix(EXTRAP_MSE_OF)
            for per_run in curves.values()
            for curve in per_run
            for tag in curve
            if tag.startswith(EXTRAP_MSE_OF)
        }
    )
    figures = {}
    for name, tag, title, ylabel in (
        ("training_loss", TRAIN_LOSS, "Training loss", "MSE"),
        ("validation_loss", INTERP_MSE, "Validation loss (interpolation MSE)", "MSE"),
        ("test_loss", EXTRAP_MSE, "Test loss (extrapolation MSE)", "MSE"),
        (
            "test_relative_error",
            EXTRAP_RELATIVE_ERROR,
            # Two lines: in one, the legend beside the panel hid its end.
            "Test relative error\n(100 · extrapolation MSE / mean square of the targets)",
            "relative error (%)",
        ),
    ):
        figure, axis = plt.subplots(figsize=(10, 5), layout="constrained")
        scale_together([(axis, _plot_median_band(axis, groups, curves, tag, ylabel))])
        if tag == EXTRAP_RELATIVE_ERROR:  # the yardstick: a network that answers 0 scores 100
            axis.axhline(100, color="0.3", linestyle=":", label="answering 0 (100%)")
        axis.set_title(title)
        legend_beside(figure)
        figures[name] = figure
    panels = max(1, len(operations))
    columns = min(2, panels)  # two a row: four side by side would be a strip too flat to read
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5 * columns + 2.5, 4 * rows), squeeze=False, layout="constrained"
    )
    for axis in axes.flat[panels:]:
        figure.delaxes(axis)
    drawn_panels = []
    for axis, operation in zip(axes.flat, operations, strict=False):
        # The panels share one legend of the groups; each says how many runs have the operation.
        drawn = _plot_median_band(
            axis, groups, curves, f"{EXTRAP_MSE_OF}{operation}", counted=False
        )
        fewest, most = min(drawn.counts, default=0), max(drawn.counts, default=0)
        runs = f"{fewest}" if fewest == most else f"{fewest}–{most}"
        axis.set_title(f"Test loss of the {operation} outputs (n={runs})")
        drawn_panels.append((axis, drawn))
    if drawn_panels:
        scale_together(drawn_panels)
    legend_beside(figure)
    figures["test_loss_by_operation"] = figure
    return figures


class SuccessMeasure(NamedTuple):
    """A panel of the success figure: the rows' keys of its count, its trials and its rate
    (with ``_low`` and ``_high``, its interval), its title and its axis's label."""

    count: str
    trials: str
    rate: str
    title: str
    label: str


SUCCESS_MEASURES = (
    SuccessMeasure(
        "outputs_solved", "outputs", "output_success",
        "Outputs solved (each at its own best epoch)", "outputs solved",
    ),
    SuccessMeasure(
        "solved", "runs", "success",
        "Runs solved (every output at the run's best epoch)", "runs solved",
    ),
)  # fmt: skip


def interval_error_bars(rows: list[dict[str, Any]], rate: str = "success") -> np.ndarray:
    """``[2, rows]``: how far each row's Wilson interval reaches below and above its success
    rate (the row's ``{rate}_rate``, ``_low`` and ``_high``), as matplotlib's ``errorbar`` takes
    them."""
    return np.array(
        [
            [row[f"{rate}_rate"] - row[f"{rate}_low"] for row in rows],
            [row[f"{rate}_high"] - row[f"{rate}_rate"] for row in rows],
        ]
    )


def plot_success(rows: list[dict[str, Any]]) -> "Figure":
    """Success rates per group and operation with their 95% Wilson intervals as error bars: a
    bar per operation within each group, the groups down the page in the table's order, so that
    a report of many groups grows longer, not too wide to read. A panel of outputs solved beside
    the runs solved where runs have several outputs, each judged on its own (``summary_rows``)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    groups = list(dict.fromkeys(row["group"] for row in rows))
    operations = list(dict.fromkeys(row["operation"] for row in rows))
    # Where every run has one output the outputs solved are the runs solved: one panel.
    several_outputs = any(row.get("outputs", 0) > row["runs"] for row in rows)
    measures = SUCCESS_MEASURES if several_outputs else SUCCESS_MEASURES[1:]
    thickness = 0.8 / len(operations)
    # A group's name wraps as a legend's label does; a character takes about 0.075 inch.
    names = [textwrap.fill(group, LEGEND_LABEL_WIDTH) for group in groups]
    widest = max((len(line) for name in names for line in name.splitlines()), default=0)
    # About 0.15 inch a bar (18 groups of 5 operations take 17 inches), or a name's lines.
    lines = max(name.count("\n") + 1 for name in names)
    per_group = max(0.15 * (len(operations) + 1), TICK_LINE_INCHES * lines)
    height = max(3.0, 1.4 + per_group * len(groups))
    figure, axes = plt.subplots(
        1, len(measures), figsize=(max(4.0, 0.5 + 0.075 * widest) + 5 * len(measures), height),
        sharey=True, squeeze=False, layout="constrained",
    )  # fmt: skip
    for axis, (count, trials, rate, title, label) in zip(axes[0], measures, strict=True):
        for k, operation in enumerate(operations):
            offset = (k - (len(operations) - 1) / 2) * thickness
            chosen = [r for r in rows if r["operation"] == operation and r.get(trials)]
            positions = np.array([groups.index(r["group"]) for r in chosen]) + offset
            rates = np.array([r[f"{rate}_rate"] for r in chosen])
            colour = OPERATION_COLOURS.get(operation)
            bars = axis.barh(positions, rates, thickness, label=operation, color=colour)
            if not chosen:
                continue
            # A point in the operation's colour, the interval as a thin grey line and the count
            # solved at its end: a rate of 0 has no bar, and its interval alone would read as
            # one.
            errors = interval_error_bars(chosen, rate)
            axis.errorbar(
                rates, positions, xerr=errors, fmt="o", capsize=2, ecolor="0.45",
                elinewidth=1, ms=4, mfc=bars.patches[0].get_facecolor(), mec="black",
            )  # fmt: skip
            for row, y, end in zip(chosen, positions, rates + errors[1], strict=True):
                axis.text(end + 0.01, y, f"{row[count]}/{row[trials]}", va="center", fontsize=7)
        for y, group in enumerate(groups):  # e.g. an MLP's outputs, which share its weights
            if not any(row.get(trials) for row in rows if row["group"] == group):
                axis.text(0.01, y, "not defined", va="center", fontsize=8, color="0.45")
        axis.set_xlim(-0.03, 1.12)  # a point at 0 drawn whole, and room for a count after 100%
        axis.set_xticks(np.linspace(0, 1, 6))
        axis.xaxis.set_major_formatter(PercentFormatter(xmax=1))
        axis.set_xlabel(f"{label} (95% Wilson CI)")
        axis.set_title(title, fontsize=10)
    axis = axes[0, 0]
    axis.set_yticks(np.arange(len(groups)), names)
    axis.invert_yaxis()  # the first group on top, as in the table
    figure.suptitle("Success per operation, 95% Wilson intervals")
    legend_beside(figure)
    return figure


class CellSeries(NamedTuple):
    """Report rows along a ``problems`` axis: per operation, per line (the other row fields, the
    unit) the ``(cell index, row)`` points, in the axis's config order; each cell's label and
    its caption (``cell_caption``); the lines in the report's row order."""

    axis: str
    cells: list[str]
    series: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]]
    captions: list[str]
    lines: list[str]


def cell_caption(run: dict[str, Any], axis: str, label: str) -> str:
    """How the figure and table name a problem cell: the value ranges it sets, as the papers
    write them (training → extrapolation: ``U[1, 2] → U[2, 6]``), else its label."""
    data = run_value(run, f"problems.{axis}.{label}.data")
    if not isinstance(data, dict):
        return label
    ranges = []
    for field in ("train_range", "extrap_range"):
        if field in data:
            try:
                ranges.append(describe_intervals(value_intervals(field, data[field])))
            except InvalidArgument:  # a cell the run itself refused; its label still names it
                return label
    return " → ".join(ranges) or label


def cell_series(
    rows: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]], group_by: Sequence[str]
) -> CellSeries | None:
    """The rows along the population's first ``problems`` axis other than the operation (the
    primer's ranges); None where the runs have no such axis. Rows of runs without it (another
    population reported beside the grid) are left to the table."""

    def axes_of(run: dict[str, Any]) -> dict[str, list[str]]:
        return run.get("labels", {}).get("problem_axes", {})

    axes = dict.fromkeys(
        axis for members in groups.values() for run in members for axis in axes_of(run)
    )
    along = next((axis for axis in axes if axis != "operation" and axis in group_by), None)
    if along is None:
        return None
    cells = list(
        dict.fromkeys(
            label for members in groups.values() for label in axes_of(members[0]).get(along, [])
        )
    )
    line_fields = [field for field in group_by if field not in axes]
    series: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]] = {}
    order: dict[str, None] = {}
    for row in rows:
        first = groups[row["group"]][0]
        if row["operation"] == ALL_OUTPUTS or along not in axes_of(first):
            continue
        line = " / ".join(str(run_value(first, field)) for field in line_fields) or "runs"
        order[line] = None
        points = series.setdefault(row["operation"], {}).setdefault(line, [])
        points.append((cells.index(run_value(first, along)), row))
    for lines in series.values():
        for points in lines.values():
            points.sort(key=lambda point: point[0])
    # Captions from a run of the grid: one of another population has no ranges to name.
    first = next(run for members in groups.values() for run in members if along in axes_of(run))
    captions = [cell_caption(first, along, c) for c in cells]
    return CellSeries(along, cells, series, captions, list(order))


# A marker per unit beside its colour: past 11 units ``line_colours`` start over, and the
# markers still tell the units apart. Not "D", the published rates'.
UNIT_MARKERS = ("o", "s", "^", "v", "P", "X", "*", "h", "<", ">", "p")
# Up to this many units the success-per-cell figure puts two panels a row.
FEW_LINES_SIDE_BY_SIDE = 4


def plot_success_by_cell(
    along: CellSeries, published: Mapping[tuple[str, str, str], float] | None = None
) -> "Figure":
    """The primer's figure (Mistry et al. 2022, fig. 3): success rate per problem cell, one
    panel per operation and a line per unit (one colour and marker each across the panels, one
    legend), with 95% Wilson intervals; ``published`` rates by (line, operation, cell label) as
    hollow diamonds beside the line's points."""
    import matplotlib.pyplot as plt

    published = published or {}
    operations = list(along.series)
    names = along.lines
    colours = line_colours()
    # Many units side by side in a cell need a panel's whole width: a panel a row.
    columns = min(1 if len(names) > FEW_LINES_SIDE_BY_SIDE else 2, len(operations))
    rows = math.ceil(len(operations) / columns)
    figure, panels = plt.subplots(
        rows, columns, figsize=(13, 4.2 * rows + 0.8), sharey=True, squeeze=False,
        layout="constrained",
    )  # fmt: skip
    # The units' points side by side over most of a cell, so that interval bars hide no others.
    spacing = min(0.1, 0.8 / len(names))
    ranges = along.captions != along.cells  # the cells set value ranges: say which
    xlabel = along.axis + (": training → extrapolation" if ranges else "")
    ticks = [caption.replace(" → ", "\n→ ") for caption in along.captions]
    for panel, operation in zip(panels.flat, operations, strict=False):
        lines = along.series[operation]
        for k, (line, points) in enumerate(lines.items()):
            x = np.array([cell for cell, _ in points]) + (k - (len(lines) - 1) / 2) * spacing
            rates = np.array([row["success_rate"] for _, row in points])
            errors = interval_error_bars([row for _, row in points])
            index = names.index(line)
            # Points, not a line: the cells have no order that a line between them would mean.
            panel.errorbar(
                x, rates, yerr=errors, marker=UNIT_MARKERS[index % len(UNIT_MARKERS)], ms=5,
                capsize=3, linestyle="none", label=line, color=colours[index % len(colours)],
            )  # fmt: skip
            theirs = [
                (position, published[line, operation, along.cells[cell]])
                for position, (cell, _) in zip(x, points, strict=True)
                if (line, operation, along.cells[cell]) in published
            ]
            if theirs:
                panel.plot(
                    *zip(*theirs, strict=True), "D", ms=8, mfc="none", mec="black",
                    label="published rate",
                )  # fmt: skip
        panel.set_title(operation)
        panel.set_xlabel(xlabel)
        panel.set_xticks(np.arange(len(along.cells)))
        if columns == 1:  # a cell of a panel a row has room for its two lines of ranges
            panel.set_xticklabels(ticks, fontsize="small")
        else:
            panel.set_xticklabels(ticks, rotation=30, ha="right", fontsize="small")
        panel.set_ylim(-0.03, 1.05)
        panel.set_ylabel("success rate (95% Wilson CI)")
        panel.tick_params(labelleft=True)  # the shared axis's numbers beside every panel
    for panel in list(panels.flat)[len(operations) :]:
        panel.set_visible(False)
    handles = legend_handles(figure)
    shown = [*names, *(["published rate"] if "published rate" in handles else [])]
    figure.legend(
        [handles[name] for name in shown], shown, loc="outside lower center",
        ncol=min(len(shown), 10),
    )  # fmt: skip
    figure.suptitle(f"Runs solved per {along.axis} and operation, 95% Wilson intervals")
    return figure


def success_by_cell_table(along: CellSeries) -> str:
    """The figure's numbers as a Markdown table: a row per unit and operation, a column per
    cell, each the runs solved out of the runs."""
    lines = [
        "| unit | op | " + " | ".join(along.captions) + " |",
        "|---|---|" + "---:|" * len(along.cells),
    ]
    for operation, series in along.series.items():
        for line, points in series.items():
            solved = dict.fromkeys(range(len(along.cells)), "–")
            for cell, row in points:
                solved[cell] = f"{row['solved']}/{row['runs']}"
            lines.append(f"| {line} | {operation} | " + " | ".join(solved.values()) + " |")
    return "\n".join(lines)


# A figure tells at most this many groups apart (11 colours, solid then dashed; a longer
# legend runs off the figure): past it the per-group figures are not drawn (the NALM benchmark
# has 225 groups).
MOST_GROUPS_DRAWN = 20
# The success per problem cell of a population's problems, by file name.
CELL_FIGURE = "success_by_cell"
# The figures with a line or bar per group, by file name, with their captions in report.md.
GROUP_FIGURES = {
    "training_loss": "Training loss per group over epochs",
    "validation_loss": "Validation (interpolation) loss per group over epochs",
    "test_loss": "Test (extrapolation) loss per group over epochs",
    "test_relative_error": "Test relative error per group over epochs",
    "test_loss_by_operation": "Test loss of each operation's outputs",
    "success": "Success rates with 95% Wilson intervals",
}


class Report(NamedTuple):
    """A written report: its file, its rows, the fields that name them and the runs read."""

    path: Path
    rows: list[dict[str, Any]]
    group_by: list[str]
    runs: list[dict[str, Any]]
    figures: list[str]


def write_report(
    paths: list[Path],
    group_by: Sequence[str] | None = None,
    published: Mapping[tuple[str, str, str], float] | None = None,
) -> Report:
    """Write report.md, report.csv and the figures (PNG, and in ``report_tensorboard/``) into
    ``paths[0]``; rows by ``group_by``, by default the model and every swept field;
    ``published`` rates drawn beside the success per problem cell (``plot_success_by_cell``)."""
    for path in paths:
        if not path.is_dir():
            what = "not a folder (a run or multirun folder)" if path.exists() else "no such folder"
            raise ReportError(f"{path}: {what}")
    unreadable: list[str] = []
    runs = load_runs(paths, unreadable)
    if not runs:
        found = f" ({len(unreadable)} unreadable: {unreadable[0]})" if unreadable else ""
        raise ReportError(f"no readable metrics.json under {', '.join(map(str, paths))}{found}")
    for entry in unreadable:
        print(f"warning: {entry}: unreadable, left out of the report", file=sys.stderr)
    group_by = list(group_by or default_group_by(runs))
    rows = summary_rows(runs, group_by)
    out = paths[0]
    write_csv(rows, out / REPORT_TABLE)
    groups = group_runs(runs, group_by)
    drawn = len(groups) <= MOST_GROUPS_DRAWN
    # The success figure draws the rows the table shows.
    figures = {**plot_curves(groups), "success": plot_success(shown_rows(rows))} if drawn else {}
    along = cell_series(rows, groups, group_by)
    if along is not None:
        figures[CELL_FIGURE] = plot_success_by_cell(along, published)
    pngs = {name: _png_and_close(figure) for name, figure in figures.items()}
    # A last report's figures of other groups would pass for this one's.
    for name in [*GROUP_FIGURES, CELL_FIGURE]:
        if name not in pngs:
            (out / f"{name}.png").unlink(missing_ok=True)
    problems = sorted({problem_identity(run) for run in runs})
    text = "\n\n".join(
        [
            f"# Report: {len(runs)} runs under {', '.join(map(str, paths))}"
            + (f" ({len(unreadable)} unreadable runs left out)" if unreadable else ""),
            "Problem: " + "; ".join(f"`{p}`" for p in problems),
            "An output is solved when its extrapolation MSE is below the near-perfect model's "
            f"({near_perfect_text(problems)}). Outputs solved: outputs × seeds, each "
            "output judged at its own best interpolation epoch, as Madsen & Johansen judge "
            "their one-output models; only runs whose outputs are models of their own count, so "
            "a row that pools other networks' runs counts the outputs of fewer runs. Runs "
            "solved: runs in which every output of the operation is solved at the run's single "
            "best interpolation epoch. Rel. error: 100 · MSE / "
            "the MSE of predicting 0, the error to compare units by (0 perfect, 100 no better "
            "than 0). NE: normalised error, 100 · MSE / MSE at initialisation (Trask et al. "
            "2018; 0 perfect, 100 untrained: it depends on the unit's initialisation, so it "
            "compares runs of one unit, not units). Medians are over the runs that did not "
            "diverge. Recovered: runs whose read-back formulas equal the "
            "truth for every output. Solved at step: median step by which every output was "
            "solved, over the runs that solved them all. A group whose runs have one operation "
            "has that operation's row only (report.csv has its `all` row too). A dash: not "
            "defined for the network (outputs solved where its outputs share weights, as an "
            "MLP's do; recovered where its weights have no read-back).",
            markdown_table(rows, group_by),
            "Final metrics (each run at its best interpolation epoch, where the rates above judge "
            "it), median over the runs that finished:",
            median_table(groups, group_by),
        ]
        + (
            [
                "Curves: median over seeds; the band spans the middle half of the runs (25–75%), "
                f"or every run where a group has fewer than {QUARTILE_BAND_RUNS}; a diamond on "
                "each line marks its runs' median best validation epoch, where the tables read "
                "them. Every panel of a figure has one kind of y axis, log where any panel's "
                "curves span a factor of 10, each over its own range: read a panel's values on "
                "its own axis.",
                *(f"![{caption}]({name}.png)" for name, caption in GROUP_FIGURES.items()),
            ]
            if drawn
            else [
                f"Per-group curves and success chart: not drawn for {len(groups)} groups (a "
                f"figure tells at most {MOST_GROUPS_DRAWN} apart); every run's curves are in "
                f"TensorBoard: {tensorboard_command(out)}"
            ]
        )
        + (
            [
                f"Runs solved per {along.axis}:",
                success_by_cell_table(along),
                f"![Success rate per problem cell, a panel per operation]({CELL_FIGURE}.png)",
            ]
            if along is not None
            else []
        )
    )
    report = out / REPORT_FILE
    write_text_atomic(report, text + "\n")
    # The same table and figures in TensorBoard, as one more run beside the sweep's jobs; a
    # rerun replaces the last report's events instead of adding a second copy beside them.
    board = out / REPORT_EVENTS_DIR
    for events in board.glob("events.out.tfevents.*"):
        events.unlink()
    from torch.utils.tensorboard import SummaryWriter

    from nalu.results.images import add_png

    with SummaryWriter(str(board)) as writer:
        writer.add_text("report/table", markdown_table(rows, group_by))
        for name, png in pngs.items():
            write_atomic(out / f"{name}.png", lambda handle, png=png: handle.write(png))
            add_png(writer._get_file_writer(), f"report/{name}", png, 0)
    return Report(report, rows, group_by, runs, list(pngs))


def _png_and_close(figure: "Figure") -> bytes:
    """The figure as PNG, closed at once: pyplot keeps an open figure for the whole process, and a
    report that fails later (a full disk) would otherwise leave its figures open."""
    import matplotlib.pyplot as plt

    from nalu.results.images import figure_png

    try:
        return figure_png(figure, dpi=120)
    finally:
        plt.close(figure)


def console_table(markdown: str, text_columns: int = 1, hidden: Sequence[str] = ()) -> str:
    """A Markdown table as aligned plain-text columns for a terminal: the first
    ``text_columns`` left-aligned, the numbers right-aligned, without the ``hidden`` ones."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()]
    header, body = rows[0], rows[2:]  # rows[1] is the alignment row
    keep = [k for k, name in enumerate(header) if name not in hidden]
    table = [[row[k] for k in keep] for row in [header, *body]]
    widths = [max(len(row[k]) for row in table) for k in range(len(keep))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if k < text_columns else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    )
