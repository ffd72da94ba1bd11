"""Value ranges of a problem's inputs: ``[low, high]`` or a union of such intervals.

Torch-free, so the command line's check of a config reads the same rule as the data module.
"""

import itertools
from typing import Any

from nalu.config.errors import InvalidArgument
from nalu.config.rules import is_number, is_sequence

# A value range: disjoint intervals [low, high] in increasing order, inputs uniform on their union;
# the problems' methods also take a plain (low, high).
Intervals = tuple[tuple[float, float], ...]
# A bound's largest magnitude: beyond it high − low and the samples overflow to inf.
MAX_BOUND = 1e300
RANGE_RULE = (
    "must be [low, high] with low < high, both finite, or a union [[low, high], ...] of such, "
    "in increasing order without overlap"
)


def value_intervals(name: str, value: Any) -> Intervals:
    """``[low, high]`` or a union ``[[-6, -2], [2, 6]]`` (Madsen & Johansen 2020's extrapolation
    range for signed inputs) as ``Intervals``, else an ``InvalidArgument`` naming ``name``."""

    def is_bound(item: Any) -> bool:
        return is_number(item) and abs(item) < MAX_BOUND

    def is_pair(item: Any) -> bool:
        return (
            is_sequence(item) and len(item) == 2 and all(map(is_bound, item)) and item[0] < item[1]
        )

    items = [value] if is_pair(value) else value
    if (
        not is_sequence(items)
        or not items
        or not all(map(is_pair, items))
        or any(left[1] > right[0] for left, right in itertools.pairwise(items))
    ):
        shown = list(value) if is_sequence(value) else value
        raise InvalidArgument(name, shown, RANGE_RULE)
    return tuple((float(low), float(high)) for low, high in items)


def describe_intervals(intervals: Intervals) -> str:
    """``Intervals`` as the papers write a range: ``U[-6, -2] ∪ U[2, 6]``."""
    return " ∪ ".join(f"U[{low:g}, {high:g}]" for low, high in intervals)


def largest_magnitude(intervals: Intervals) -> float:
    return max(max(abs(low), abs(high)) for low, high in intervals)


def without_band(intervals: Intervals, half_width: float) -> Intervals:
    """``intervals`` less the open band (−d, d), d = ``half_width``."""
    kept = []
    for low, high in intervals:
        for part_low, part_high in ((low, min(high, -half_width)), (max(low, half_width), high)):
            if part_low < part_high:
                kept.append((part_low, part_high))
    return tuple(kept)


def denominator_intervals(
    intervals: Intervals,
    min_abs_denominator: float,
    range_name: str = "value_range",
    section: str = "",
) -> Intervals:
    """Where a denominator is drawn: ``intervals`` without (−d, d), d = ``min_abs_denominator``;
    ``InvalidArgument`` when nothing is left. ``section`` prefixes the names (``data.``)."""
    left = without_band(intervals, min_abs_denominator)
    if not left:
        shown = list(intervals[0]) if len(intervals) == 1 else [list(i) for i in intervals]
        raise InvalidArgument(
            f"{section}min_abs_denominator",
            min_abs_denominator,
            f"leaves no denominator value in {range_name}={shown}; it must be below the range's "
            "largest magnitude",
        )
    return left
