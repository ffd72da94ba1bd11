"""One results schema: what a run leaves in ``metrics.json`` and the names of its metrics.

A run (a single run, or each member of a population) is judged at its best interpolation
epoch; ``RunRecord`` is written by ``recorder.RunRecorder`` and read by ``report`` and
``nalu.cli.evaluate``. Metric names are ``<split>/<measure><suffix>`` (``extrap/mse_mul``), or
``<measure><suffix>`` for measures over the whole run (``solved_at_step_add``); the suffix names
an operation (``_mul``) or is empty for all outputs.
"""

import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# What a run leaves in its folder: its results, its problem's description, a population's
# report (its table, its figures' TensorBoard run), its members' own folders and its checkpoints
# (conf/callbacks/default.yaml names them).
METRICS_FILE = "metrics.json"
PROBLEM_FILE = "problem.json"
REPORT_FILE = "report.md"
REPORT_TABLE = "report.csv"
REPORT_EVENTS_DIR = "report_tensorboard"
MEMBERS_DIR = "members"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
STATUS_FINISHED = "finished"
STATUS_DIVERGED = "diverged"
# TensorBoard shows at most this many points of a curve unless told otherwise (a sample of a
# longer one): batch losses are logged sparsely enough to stay within it, and the command that
# serves a run (``TENSORBOARD_FLAGS``) keeps every point of a longer curve, such as the
# validations of a run validated more than a thousand times.
TENSORBOARD_DEFAULT_POINTS = 1000
TENSORBOARD_FLAGS = ("--samples_per_plugin", "scalars=1000000")


def metric_name(split: str, measure: str, suffix: str = "") -> str:
    """``metric_name("extrap", "mse", "_mul")`` -> ``"extrap/mse_mul"``."""
    return f"{split}/{measure}{suffix}"


# A metric over every output has no suffix; one operation's outputs', the operation's
# (``extrap/mse_mul``). Tables and reports name the group of every output ``all``.
ALL_OUTPUTS = "all"


def operation_suffix(operation: str) -> str:
    """The suffix of ``operation``'s metrics (``"_mul"``); none for ``ALL_OUTPUTS``."""
    return "" if operation == ALL_OUTPUTS else f"_{operation}"


TRAIN_LOSS = metric_name("train", "loss")
# Training's own curves: each step's loss, the units' regularisation and its weight λ.
TRAIN_BATCH_LOSS = metric_name("train", "batch_loss")
TRAIN_REGULARIZATION = metric_name("train", "regularization")
TRAIN_REGULARIZER_SCALE = metric_name("train", "regularizer_scale")
POPULATION_ALIVE_FRACTION = metric_name("population", "alive_fraction")

# What an evaluation set measures (``nalu.results.metrics.member_metrics``), per group of outputs.
MSE = "mse"
NORMALIZED_ERROR = "normalized_error"
RELATIVE_ERROR = "relative_error"
SOLVED_FRACTION = "solved_fraction"
INTERP_MSE = metric_name("interp", MSE)
EXTRAP_MSE = metric_name("extrap", MSE)
EXTRAP_NORMALIZED_ERROR = metric_name("extrap", NORMALIZED_ERROR)
EXTRAP_RELATIVE_ERROR = metric_name("extrap", RELATIVE_ERROR)
EXTRAP_SOLVED_FRACTION = metric_name("extrap", SOLVED_FRACTION)
EXTRAP_MSE_OF = metric_name("extrap", MSE, "_")  # + an operation: extrap/mse_mul (operation_suffix)
SOLVED_AT_STEP = "solved_at_step"
# Each output judged at its own best interpolation epoch (``extrap/own_best_solved_fraction_mul``)
# and how many outputs each operation has (``output_count_mul``).
OWN_BEST = "own_best"
OWN_BEST_SOLVED_FRACTION = f"{OWN_BEST}_{SOLVED_FRACTION}"
OWN_BEST_MSE = f"{OWN_BEST}_{MSE}"
OUTPUT_COUNT = "output_count"
RECOVERED_FRACTION = "recovered_fraction"
SPARSITY_ERROR = "sparsity_error"
# The metrics a report's median table opens with; a run with one of them not finite diverged.
HEADLINE_METRICS = (TRAIN_LOSS, INTERP_MSE, EXTRAP_MSE)
# The curves every run keeps per member, which a report's figures draw; a validation adds each
# operation's extrapolation MSE and the extrapolation relative error. A population's own
# TensorBoard run shows the members' medians of these and of every other metric.
MEMBER_CURVES = HEADLINE_METRICS


def is_member_curve(tag: str) -> bool:
    """Whether each member's run keeps curve ``tag`` (``MEMBER_CURVES`` and a validation's)."""
    return tag in MEMBER_CURVES or tag.startswith(EXTRAP_MSE_OF) or tag == EXTRAP_RELATIVE_ERROR


# The final metrics that go beside the hyperparameters in TensorBoard's HParams tab.
HPARAMS_METRICS = (
    TRAIN_LOSS,
    INTERP_MSE,
    EXTRAP_MSE,
    EXTRAP_RELATIVE_ERROR,
    EXTRAP_NORMALIZED_ERROR,
    EXTRAP_SOLVED_FRACTION,
    metric_name("extrap", OWN_BEST_SOLVED_FRACTION),
    RECOVERED_FRACTION,
)
# In TensorBoard the final metrics (the test at the best epoch) are apart from the curves, in a
# group that sorts after the curves' ``extrap`` and ``interp``: TensorBoard opens the first two.
FINAL_PREFIX = "result/"


def finite_median(values: list[float]) -> float:
    """The median of the finite values, NaN if there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def is_share(name: str) -> bool:
    """Whether metric ``name`` is a share of outputs (solved, recovered): over members it is
    the share of all their outputs (``share_count``), as a report counts outputs × seeds; a
    median of shares that are mostly 0 or 1 would be a majority vote (a population of
    one-output members would show 0 or 1)."""
    return "_fraction" in name


def share_count(name: str) -> str:
    """The count of outputs that share ``name`` is of: ``extrap/solved_fraction_mul`` ->
    ``output_count_mul``, ``recovered_fraction`` -> ``output_count``."""
    return OUTPUT_COUNT + name.rpartition("_fraction")[2]


def finite_summary(name: str, values: list[float], counts: list[float] | None = None) -> float:
    """Members' finite ``values`` of metric ``name`` in one number: a share (``is_share``) of
    all their outputs, each member's weighted by its ``counts`` of outputs (equally without);
    a count of outputs summed; else the median. NaN if there is none."""
    if name.startswith(OUTPUT_COUNT):
        finite = [v for v in values if math.isfinite(v)]
        return math.fsum(finite) if finite else math.nan
    if not is_share(name):
        return finite_median(values)
    weights = counts if counts is not None else [1.0] * len(values)
    kept = [(v, w) for v, w in zip(values, weights, strict=True) if math.isfinite(v) and w > 0]
    total = math.fsum(w for _, w in kept)
    return math.fsum(v * w for v, w in kept) / total if kept else math.nan


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it to ``path``: no reader
    sees half a file, and a failure (a full disk) leaves the old file and no temporary one.
    The file gets the mode any new file gets under the process's umask (0644 under 022), not
    the temporary file's private 0600, so that others on a shared machine can read results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None:  # a write that failed (a full disk) names no file: this one
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


@dataclass
class RunRecord:
    """A run's results. ``metrics`` are the final metrics (absent where undefined: an operation
    the problem lacks, a ``solved_at_step`` never reached); a diverged run says at which step,
    why, and its last good checkpoint."""

    status: str
    labels: dict[str, Any]
    epochs: int
    steps: int
    metrics: dict[str, float]
    formulas: list[dict[str, Any]] = field(default_factory=list)
    diverged_at_step: int | None = None
    reason: str | None = None
    last_good_checkpoint: str | None = None

    @property
    def diverged(self) -> bool:
        """Marked diverged by the run, or with a non-finite final loss or MSE (an extrapolation
        MSE that overflows float32, say): such a run has no errors to pool with the others.

        Only the errors count: a normalised error is undefined (0 / 0) for a network that starts
        exact, which is no divergence.
        """
        return self.status == STATUS_DIVERGED or any(
            not math.isfinite(self.metrics.get(name, 0.0)) for name in HEADLINE_METRICS
        )

    def to_json(self) -> str:
        """Strict JSON: a metric that is not finite (an overflowing extrapolation MSE, say) is
        ``null``, since ``NaN`` and ``Infinity`` are no JSON tokens; ``from_json`` reads it back
        as NaN."""
        payload = {k: v for k, v in asdict(self).items() if v is not None}
        payload["metrics"] = {
            name: value if math.isfinite(value) else None for name, value in self.metrics.items()
        }
        return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "RunRecord":
        payload = json.loads(text)
        metrics = payload.get("metrics", {})
        payload["metrics"] = {k: math.nan if v is None else v for k, v in metrics.items()}
        return cls(**payload)

    def write(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / METRICS_FILE, self.to_json())

    @classmethod
    def read(cls, run_dir: Path) -> "RunRecord":
        return cls.from_json((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
