"""Arithmetic problems: which inputs and which operation make each output.

The article's "mystery arithmetic problem" joins two distinct inputs per output; the static
arithmetic task of Trask et al. (2018) and Madsen & Johansen (2020) joins two overlapping sums.
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from nalu.config import rules
from nalu.config.value_range import Intervals, denominator_intervals, value_intervals
from nalu.data.formula import Formula, Variable, power_product, weighted_sum

# The near-perfect model's MSE is estimated on this many samples of one fixed seed. Madsen &
# Johansen's and Mistry et al.'s threshold scripts simulate 1,000,000; 10,000 keep a population's
# thresholds (up to 100 inputs a sample, one problem a member) to a fraction of a second, at a
# sampling error of about 2% on ×'s threshold (tests/test_measure.py).
SUCCESS_SAMPLES = 10_000
SUCCESS_SEED = 4
# Input values measured at once: a threshold's sample is drawn and measured in chunks of at most
# this many (128 MB in double precision; at 100,000 inputs the whole sample would take 8 GB),
# and an evaluation batch holds at most this many over all members (64 MiB of float32).
VALUES_AT_ONCE = 2**24


@dataclass(frozen=True)
class ColumnRanges:
    """Per input column, the intervals its values are uniform on, as tensors: ``starts`` and
    ``offsets`` ``[..., in, M]`` (each interval's low end, and where it begins in the column's
    total length: 0, then the cumulative lengths; +inf pads a column with fewer intervals) and
    ``totals`` ``[..., in]``. Leading dimensions stack the columns of several problems."""

    starts: Tensor
    offsets: Tensor
    totals: Tensor

    @classmethod
    def of(cls, columns: Sequence[Intervals], dtype: torch.dtype = torch.float32) -> "ColumnRanges":
        """The table of one problem's columns, ``columns[i]`` the intervals of input ``i``."""
        width = max(len(intervals) for intervals in columns)
        padding = [(0.0, 0.0)] * width
        bounds = torch.tensor([(list(c) + padding)[:width] for c in columns], dtype=dtype)
        starts, lengths = bounds[..., 0], bounds[..., 1] - bounds[..., 0]
        offsets = lengths.cumsum(-1) - lengths
        count = torch.tensor([len(intervals) for intervals in columns]).unsqueeze(1)
        offsets = offsets.masked_fill(torch.arange(width) >= count, math.inf)
        return cls(starts, offsets, lengths.sum(-1))

    @classmethod
    def stack(cls, tables: Sequence["ColumnRanges"]) -> "ColumnRanges":
        """``[len(tables), in, M]``: the tables side by side, padded to the widest."""
        width = max(table.starts.shape[-1] for table in tables)

        def padded(tensor: Tensor, value: float) -> Tensor:
            return torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1]), value=value)

        return cls(
            torch.stack([padded(t.starts, 0.0) for t in tables]),
            torch.stack([padded(t.offsets, math.inf) for t in tables]),
            torch.stack([t.totals for t in tables]),
        )

    def to(self, device: torch.device | str | None) -> "ColumnRanges":
        return ColumnRanges(self.starts.to(device), self.offsets.to(device), self.totals.to(device))

    def place(self, u: Tensor) -> Tensor:
        """Uniforms ``u`` on [0, 1), ``[..., in]`` (broadcasting with the table's leading
        dimensions), as values uniform on each column's intervals: by inverse CDF, u times the
        column's total length, then placed in the interval whose stretch it falls in."""
        position = self.totals * u
        value = self.starts[..., 0] + position
        for k in range(1, self.starts.shape[-1]):
            offset = self.offsets[..., k]
            inside = self.starts[..., k] + (position - offset)
            value = torch.where(position >= offset, inside, value)
        return value


@dataclass(frozen=True)
class Operation:
    """An arithmetic operation of two operands a and b (a unary one ignores b): how to compute
    it, how to write it, and its exact formula for read-back."""

    name: str
    text: str  # the operation written on operands named a and b: ``a + b``, ``√a``
    apply: Callable[[Tensor, Tensor], Tensor]
    formula: Callable[[Formula, Formula], Formula]


# Every operation by name, in the order of the names the configs take (``rules.STATIC_OPERATIONS``,
# whose first four are the mystery problem's: a test holds them equal).
OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("add", "a + b", torch.add, lambda a, b: weighted_sum({a: 1, b: 1})),
        Operation("sub", "a - b", torch.sub, lambda a, b: weighted_sum({a: 1, b: -1})),
        Operation("mul", "a × b", torch.mul, lambda a, b: power_product({a: 1, b: 1})),
        Operation("div", "a ÷ b", torch.div, lambda a, b: power_product({a: 1, b: -1})),
        # The static task's unary operations act on the first sum only (Madsen & Johansen 2020,
        # sec. 4.1).
        Operation("square", "a²", lambda a, b: a * a, lambda a, b: power_product({a: 2})),
        Operation("sqrt", "√a", lambda a, b: torch.sqrt(a), lambda a, b: power_product({a: 0.5})),
    )
}

# Mistry et al. 2022, sec. 6.5 (their threshold script): the near-perfect output of each
# operation, off by ε in the direction that lowers it.
MISTRY_NEAR_PERFECT: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "add": lambda a, b, eps: a + b - eps * (a.abs() + b.abs()),
    "sub": lambda a, b, eps: a - b - eps * (a.abs() + b.abs()),
    "mul": lambda a, b, eps: (1 - eps) ** 2 * a * b,
    "div": lambda a, b, eps: (1 - eps) / (1 + eps) * a / b,
}


class ArithmeticProblem(Protocol):
    """What the data module, the metrics and the read-back need from a problem."""

    in_features: int
    out_features: int
    operations: tuple[str, ...]
    problem_seed: int
    near_perfect: str  # the model behind the success threshold (``near_perfect_mses``)

    @property
    def output_operations(self) -> list[str]: ...

    def sample_inputs(
        self,
        size: int,
        value_range: Sequence[float] | Intervals,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor: ...

    def column_intervals(self, value_range: Sequence[float] | Intervals) -> list[Intervals]: ...

    def operand_masks(self) -> Tensor: ...

    def targets(self, x: Tensor) -> Tensor: ...

    def formulas(self) -> list[str]: ...

    def exact_formulas(self) -> list[Formula]: ...

    def success_threshold(self, value_range: Sequence[float] | Intervals) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


# Every operation by its code, the index that ``operation_codes`` gives.
OPERATION_CODES: dict[str, int] = {name: code for code, name in enumerate(OPERATIONS)}


def operation_codes(names: Sequence[str]) -> Tensor:
    """``[len(names)]`` int64: each output's operation as its code in ``OPERATION_CODES``."""
    return torch.tensor([OPERATION_CODES[name] for name in names])


def operand_matrix(operand_masks: Tensor) -> Tensor:
    """``[..., in, 2 · out]``: the ``[..., 2, out, in]`` operand masks (rows A_j and B_j, the
    inputs summed into output j's operands a and b) as one matrix, a's columns then b's."""
    return operand_masks.flatten(-3, -2).mT


def operation_targets(
    x: Tensor,
    operands: Tensor,
    codes: Tensor,
    present: Sequence[int] | None = None,
    apply: Callable[[str, Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """``[..., out]``: each output's operation on its operands a = x · A_j and b = x · B_j.

    ``x`` is ``[..., in]``, ``operands`` the ``operand_matrix`` ``[..., in, 2 · out]`` and
    ``codes`` ``[..., out]`` the operations; both broadcast with ``x``'s leading dimensions, so
    that one call serves a population of problems. ``present`` lists the codes that occur (read
    from ``codes`` if not given, which a tensor on a GPU waits for). ``apply(name, a, b)``
    computes an operation, by default exactly."""
    return operation_results(x @ operands.to(x.dtype), codes, present, apply)


def operation_results(
    operand_sums: Tensor,
    codes: Tensor,
    present: Sequence[int] | None = None,
    apply: Callable[[str, Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """``[..., out]``: each output's operation on its operands, ``operand_sums`` ``[..., 2 · out]``
    (the a's, then the b's: x times the ``operand_matrix``); ``codes``, ``present`` and
    ``apply`` as for ``operation_targets``."""
    a, b = operand_sums.chunk(2, dim=-1)
    y = torch.zeros_like(a)
    for code in codes.unique().tolist() if present is None else present:
        name = list(OPERATION_CODES)[code]
        result = OPERATIONS[name].apply(a, b) if apply is None else apply(name, a, b)
        y = torch.where(codes == code, result, y)
    return y


def _operands_off_by_epsilon(x: Tensor, masks: Tensor, codes: Tensor) -> Tensor:
    # Madsen & Johansen 2020, sec. 4.1: each operand weighs its inputs 1 − ε and the others ε.
    perturbed = (1 - rules.SUCCESS_EPSILON) * masks + rules.SUCCESS_EPSILON * (1 - masks)
    return operation_targets(x, operand_matrix(perturbed), codes)


def _output_off_by_epsilon(x: Tensor, masks: Tensor, codes: Tensor) -> Tensor:
    # Mistry et al. 2022, sec. 6.5: the exact operands, the operation's result off by ε.
    def perturbed(name: str, a: Tensor, b: Tensor) -> Tensor:
        return MISTRY_NEAR_PERFECT[name](a, b, rules.SUCCESS_EPSILON)

    return operation_targets(x, operand_matrix(masks), codes, apply=perturbed)


# The near-perfect models behind the success threshold, by the names of
# ``rules.NEAR_PERFECT_MODELS``: (inputs, operand masks, operation codes) -> their outputs.
NEAR_PERFECT_OUTPUTS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    rules.MADSEN_JOHANSEN: _operands_off_by_epsilon,
    rules.MISTRY: _output_off_by_epsilon,
}


def near_perfect_mses(
    problems: Sequence["ArithmeticProblem"], value_ranges: Sequence[Sequence[float] | Intervals]
) -> list[Tensor]:
    """Per problem, the ``[out_features]`` MSE of its near-perfect model (its
    ``near_perfect``) on a fixed-seed sample of its value range, in double precision.

    ``madsen_johansen`` (Madsen & Johansen 2020, sec. 4.1): the model selects each operand with
    weight 1 − ε on its inputs (``operand_masks``) and ε on every other input (a = (1 − ε)·Σ_in
    x + ε·Σ_out x, likewise b), then applies the exact operation; with no other input, as in a
    sum of two inputs, + comes out exact. ``mistry`` (Mistry et al. 2022, sec. 6.5): the
    output itself is off by ε (``MISTRY_NEAR_PERFECT``).

    The sample's uniforms depend only on the number of inputs, so one draw serves every
    problem with that many (a population's members), each placing it on its own column
    intervals: a 10,000 × 100 draw took 9 ms on 2 cores, a fifth of an article member's
    threshold.
    """
    errors = [torch.zeros(p.out_features, dtype=torch.float64) for p in problems]
    by_width: dict[int, list[int]] = {}
    for k, problem in enumerate(problems):
        by_width.setdefault(problem.in_features, []).append(k)
    for width, members in by_width.items():
        generator = torch.Generator().manual_seed(SUCCESS_SEED)
        rows = max(1, VALUES_AT_ONCE // width)
        # Per member: its column table, operand masks and operation codes.
        tables = {
            k: (
                ColumnRanges.of(problems[k].column_intervals(value_ranges[k]), torch.float64),
                problems[k].operand_masks().double(),
                operation_codes(problems[k].output_operations),
            )
            for k in members
        }
        for start in range(0, SUCCESS_SAMPLES, rows):
            size = min(rows, SUCCESS_SAMPLES - start)
            u = torch.rand((size, width), generator=generator, dtype=torch.float64)
            for k, (columns, masks, codes) in tables.items():
                x = columns.place(u)
                exact = operation_targets(x, operand_matrix(masks), codes)
                near = NEAR_PERFECT_OUTPUTS[problems[k].near_perfect](x, masks, codes)
                errors[k] += (near - exact).square().sum(dim=0)
    return [error / SUCCESS_SAMPLES for error in errors]


class OperandProblem(ABC):
    """A problem whose output j is an operation on two operands, a = x · A_j and b = x · B_j
    (``operand_masks``, ``output_operations``): its inputs, each uniform on its own intervals
    (``column_intervals``: a denominator's keep clear of zero), its exact targets and its
    success thresholds follow from them."""

    # The near-perfect model behind the success threshold (``near_perfect_mses``).
    near_perfect: str = rules.MADSEN_JOHANSEN

    @property
    @abstractmethod
    def output_operations(self) -> list[str]:
        """The operation's name of each output, in output order."""

    @abstractmethod
    def column_intervals(self, value_range: Sequence[float] | Intervals) -> list[Intervals]:
        """Per input column, the intervals its values are uniform on."""

    @abstractmethod
    def operand_masks(self) -> Tensor:
        """``[2, out, in]``: row j of the first holds the inputs summed into output j's a, of
        the second those summed into its b."""

    def sample_inputs(
        self,
        size: int,
        value_range: Sequence[float] | Intervals,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``[size, in_features]`` inputs, input ``i`` uniform on the ``i``-th of
        ``column_intervals(value_range)``, from one draw of ``generator``."""
        columns = self.column_intervals(value_range)
        u = torch.rand((size, len(columns)), generator=generator, dtype=dtype)
        return ColumnRanges.of(columns, dtype).place(u)

    def targets(self, x: Tensor) -> Tensor:
        """Exact targets ``[..., out_features]`` for inputs ``[..., in_features]``."""
        operands = operand_matrix(self.operand_masks())
        return operation_targets(x, operands, operation_codes(self.output_operations))

    def success_threshold(self, value_range: Sequence[float] | Intervals) -> Tensor:
        """``[out_features]``: an output whose MSE on ``value_range`` is below this is solved."""
        (threshold,) = near_perfect_mses([self], [value_range])
        return threshold.float()


@dataclass(frozen=True)
class MysteryArithmeticProblem(OperandProblem):
    """``out_features`` outputs, each ``x[left] <op> x[right]`` over ``in_features`` inputs.

    The pairs and operations are drawn once from ``problem_seed``; every tensor here has the
    problem's own sizes, so many problems can live side by side. Inputs that serve as a
    denominator are kept at ``|x| >= min_abs_denominator`` so that no target is inf or NaN.
    """

    in_features: int
    out_features: int
    operations: tuple[str, ...] = ("add", "sub", "mul")
    problem_seed: int = 0
    min_abs_denominator: float = 0.1
    left_index: Tensor = field(init=False, repr=False, compare=False)
    right_index: Tensor = field(init=False, repr=False, compare=False)
    operation_index: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules.check_arguments(
            "MysteryArithmeticProblem",
            in_features=self.in_features,
            out_features=self.out_features,
            operations=self.operations,
            problem_seed=self.problem_seed,
            min_abs_denominator=self.min_abs_denominator,
        )
        object.__setattr__(self, "operations", tuple(self.operations))
        generator = torch.Generator().manual_seed(int(self.problem_seed))
        # A random permutation per output row: its first two entries are two distinct inputs.
        pairs = torch.rand(self.out_features, self.in_features, generator=generator).argsort(dim=1)
        chosen = torch.randint(len(self.operations), (self.out_features,), generator=generator)
        object.__setattr__(self, "left_index", pairs[:, 0].contiguous())
        object.__setattr__(self, "right_index", pairs[:, 1].contiguous())
        object.__setattr__(self, "operation_index", chosen)

    @property
    def output_operations(self) -> list[str]:
        """The operation's name of each output, in output order."""
        return [self.operations[k] for k in self.operation_index.tolist()]

    @property
    def denominator_mask(self) -> Tensor:
        """``[in_features]`` bool: inputs that some output divides by."""
        mask = torch.zeros(self.in_features, dtype=torch.bool)
        is_division = torch.tensor([name == "div" for name in self.output_operations])
        mask[self.right_index[is_division]] = True
        return mask

    def column_intervals(self, value_range: Sequence[float] | Intervals) -> list[Intervals]:
        """Each input's intervals: ``value_range``, and for a denominator the range without
        (-d, d), d = ``min_abs_denominator``: the distribution that resampling until
        ``|x| >= d`` gives, drawn by inverse CDF in one go."""
        value_range = value_intervals("value_range", value_range)
        denominators = self.denominator_mask.tolist()
        if not any(denominators):
            return [value_range] * self.in_features
        denominator_range = denominator_intervals(value_range, self.min_abs_denominator)
        return [denominator_range if divides else value_range for divides in denominators]

    def operand_masks(self) -> Tensor:
        """``[2, out, in]``: row j of the first holds output j's left input, of the second its
        right input."""
        masks = torch.zeros(2, self.out_features, self.in_features)
        outputs = torch.arange(self.out_features)
        masks[0, outputs, self.left_index] = 1
        masks[1, outputs, self.right_index] = 1
        return masks

    def _output_terms(self) -> list[tuple[int, int, str]]:
        return list(
            zip(
                self.left_index.tolist(),
                self.right_index.tolist(),
                self.output_operations,
                strict=True,
            )
        )

    def formulas(self) -> list[str]:
        """Each output as a formula, e.g. ``y3 = x12 × x47``: its canonical formula's text, as
        the heatmaps and the read-back write it (a sum or product in input order)."""
        return [f"y{j} = {formula}" for j, formula in enumerate(self.exact_formulas())]

    def exact_formulas(self) -> list[Formula]:
        """Each output's formula in canonical form, to compare with a read-back."""
        return [
            OPERATIONS[name].formula(Variable(left), Variable(right))
            for left, right, name in self._output_terms()
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: the settings and every output's formula."""
        return {
            "problem": "mystery_arithmetic",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "operations": list(self.operations),
            "problem_seed": self.problem_seed,
            "min_abs_denominator": self.min_abs_denominator,
            "outputs": [
                {"output": j, "left": left, "right": right, "operation": name, "formula": formula}
                for j, ((left, right, name), formula) in enumerate(
                    zip(self._output_terms(), self.formulas(), strict=True)
                )
            ],
        }


@dataclass(frozen=True)
class StaticArithmeticProblem(OperandProblem):
    """The static arithmetic task (Trask et al. 2018; Madsen & Johansen 2020, sec. 4.1).

    Two overlapping subsets of the ``in_features`` inputs are summed, a = Σ_A x and b = Σ_B x,
    with |A| = |B| = ⌊subset_ratio · in_features⌋ and |A ∩ B| = ⌊overlap_ratio · |A|⌋, drawn once
    from ``problem_seed``. Output k is a ∘_k b for the k-th name in ``operations``; ``square``
    and ``sqrt`` act on a alone. ``near_perfect`` names the near-perfect model behind the
    success threshold (``near_perfect_mses``).
    """

    in_features: int = 100
    operations: tuple[str, ...] = ("mul",)
    subset_ratio: float = 0.25
    overlap_ratio: float = 0.5
    problem_seed: int = 0
    near_perfect: str = rules.MADSEN_JOHANSEN
    subsets: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules.check_arguments(
            "StaticArithmeticProblem",
            in_features=self.in_features,
            operations=self.operations,
            subset_ratio=self.subset_ratio,
            overlap_ratio=self.overlap_ratio,
            problem_seed=self.problem_seed,
            near_perfect=self.near_perfect,
        )
        object.__setattr__(self, "operations", tuple(self.operations))
        rules.near_perfect_fits(
            "near_perfect", self.near_perfect, self.operations, self.in_features
        )
        subset_size = rules.static_subset_size(self.in_features, self.subset_ratio)
        overlap_size = int(self.overlap_ratio * subset_size)
        generator = torch.Generator().manual_seed(int(self.problem_seed))
        order = torch.randperm(int(self.in_features), generator=generator)
        # A takes the first subset_size inputs of a random order, B starts overlap_size before
        # A's end: |A ∩ B| = overlap_size and |A ∪ B| <= in_features since subset_ratio <= 0.5.
        b_start = subset_size - overlap_size
        masks = torch.zeros(2, int(self.in_features))
        masks[0, order[:subset_size]] = 1
        masks[1, order[b_start : b_start + subset_size]] = 1
        object.__setattr__(self, "subsets", masks)

    @property
    def out_features(self) -> int:
        return len(self.operations)

    @property
    def output_operations(self) -> list[str]:
        return list(self.operations)

    def column_intervals(self, value_range: Sequence[float] | Intervals) -> list[Intervals]:
        """Every input's intervals: ``value_range``."""
        return [value_intervals("value_range", value_range)] * self.in_features

    def operand_masks(self) -> Tensor:
        """``[2, out, in]``: every output's a and b, the subsets A and B."""
        return self.subsets[:, None, :].expand(2, self.out_features, self.in_features)

    def _subset_formulas(self) -> tuple[Formula, Formula]:
        a, b = (
            weighted_sum({Variable(i): 1 for i in mask.nonzero().flatten().tolist()})
            for mask in self.subsets
        )
        return a, b

    def exact_formulas(self) -> list[Formula]:
        a, b = self._subset_formulas()
        return [OPERATIONS[name].formula(a, b) for name in self.operations]

    def formulas(self) -> list[str]:
        """Each output as a formula over the two sums, e.g. ``y0 = a × b`` with a and b spelled
        out once: ``a = x1 + x7 + ...``."""
        a, b = self._subset_formulas()
        named = {"a": a, "b": b}
        lines = [f"{name} = {formula}" for name, formula in named.items()]
        for k, name in enumerate(self.operations):
            lines.append(f"y{k} = {OPERATIONS[name].text}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: the settings, the two subsets and every output's formula."""
        a, b = (mask.nonzero().flatten().tolist() for mask in self.subsets)
        return {
            "problem": "static_arithmetic",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "operations": list(self.operations),
            "problem_seed": self.problem_seed,
            "subset_ratio": self.subset_ratio,
            "overlap_ratio": self.overlap_ratio,
            "near_perfect": self.near_perfect,
            "subset_a": a,
            "subset_b": b,
            "outputs": [
                {"output": k, "operation": name, "formula": str(formula)}
                for k, (name, formula) in enumerate(
                    zip(self.operations, self.exact_formulas(), strict=True)
                )
            ],
        }
