"""The rules of the user-facing fields, in one place: the command-line check of a config
(``nalu.validation``, before torch loads) and the constructors (problems, data modules) call the
same functions. Torch-free. A rule raises ``InvalidArgument`` naming the field and what is
allowed."""

import math
from collections.abc import Callable, Sequence
from typing import Any

from nalu.errors import InvalidArgument
from nalu.value_range import Intervals

Rule = Callable[[str, Any], None]

# torch.manual_seed and Lightning's seed_everything take seeds in this range; Lightning replaces
# an out-of-range seed by a random one with only a warning, so the run would not be reproducible.
MAX_SEED = 2**32 - 1
# The operations of each problem family, by name.
MYSTERY_OPERATIONS = ("add", "sub", "mul", "div")
STATIC_OPERATIONS = ("add", "sub", "mul", "div", "square", "sqrt")
# The data fields that define a problem (the rest say how its sets are drawn).
PROBLEM_FIELDS = (
    "_target_", "problem_seed", "in_features", "out_features", "operations", "subset_ratio",
    "overlap_ratio",
)  # fmt: skip
# A set's samples × inputs: beyond this a set does not fit in memory (4 bytes a value: 8 GiB).
MAX_SET_VALUES = 2**31
# Targets and inputs stay below this magnitude, so that a squared error is finite in float32
# (3.4e38): a larger target ends a run as diverged at its first step.
MAX_TARGET_MAGNITUDE = 1e18


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (an int too large for a float, e.g. 10**400, is not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def integer_at_least(minimum: int) -> Rule:
    allowed = "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}"

    def rule(name: str, value: Any) -> None:
        if not (is_integer(value) and value >= minimum):
            raise InvalidArgument(name, value, allowed)

    return rule


def seed(name: str, value: Any) -> None:
    if not (is_integer(value) and 0 <= value <= MAX_SEED):
        raise InvalidArgument(name, value, f"must be an integer in [0, {MAX_SEED}]")


def positive_number(name: str, value: Any) -> None:
    if not (is_number(value) and value > 0):
        raise InvalidArgument(name, value, "must be a finite number > 0")


def non_negative_number(name: str, value: Any) -> None:
    if not (is_number(value) and value >= 0):
        raise InvalidArgument(name, value, "must be a finite number >= 0")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(name, value, "must be true or false")


def optional(rule: Rule) -> Rule:
    def optional_rule(name: str, value: Any) -> None:
        if value is not None:
            rule(name, value)

    return optional_rule


def operations(allowed: Sequence[str]) -> Rule:
    """A list of at least one operation, each one of ``allowed`` (lower case), none repeated."""
    names = list(allowed)

    def rule(name: str, value: Any) -> None:
        if not isinstance(value, list | tuple):
            raise InvalidArgument(name, value, f"must be a list of operations, e.g. {names[:2]}")
        if not value:
            raise InvalidArgument(name, list(value), f"name at least one of {names}")
        for operation in value:
            if operation not in names:
                raise InvalidArgument(name, list(value), f"{operation!r} is not one of {names}")
        if len(set(value)) != len(value):
            raise InvalidArgument(name, list(value), "must not repeat an operation")

    return rule


def devices(name: str, value: Any) -> None:
    """Lightning's ``devices``: a count, -1 or "auto" for all, or a list of device indices."""
    if value == "auto" or (is_integer(value) and (value >= 1 or value == -1)):
        return
    if isinstance(value, list | tuple) and value and all(is_integer(v) and v >= 0 for v in value):
        return
    raise InvalidArgument(name, value, 'must be a count >= 1, -1 or "auto" (all), or [indices]')


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def accelerator(name: str, value: Any) -> None:
    if value not in ACCELERATORS:
        raise InvalidArgument(name, value, f"must be one of {list(ACCELERATORS)}")


def largest_magnitude(intervals: Intervals) -> float:
    return max(max(abs(low), abs(high)) for low, high in intervals)


def target_magnitude(operation: str, operand: float, min_abs_denominator: float) -> float:
    """A bound on |target| of ``operation`` on operands of magnitude at most ``operand``."""
    return {
        "add": 2 * operand,
        "sub": 2 * operand,
        "mul": operand * operand,
        "square": operand * operand,
        "div": operand / min_abs_denominator,
        "sqrt": math.sqrt(operand),
    }[operation]
