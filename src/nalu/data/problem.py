"""The article's "mystery arithmetic problem": each output joins two distinct inputs by an op."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nalu.errors import InvalidArgument


@dataclass(frozen=True)
class Operation:
    """A binary arithmetic operation: how to compute it and how to print it."""

    name: str
    symbol: str
    apply: Callable[[Tensor, Tensor], Tensor]


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("add", "+", torch.add),
        Operation("sub", "-", torch.sub),
        Operation("mul", "×", torch.mul),
        Operation("div", "÷", torch.div),
    )
}


@dataclass(frozen=True)
class MysteryArithmeticProblem:
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
        object.__setattr__(self, "operations", tuple(self.operations))
        if int(self.in_features) < 2:
            raise InvalidArgument(
                "in_features", self.in_features, "must be an integer >= 2 (an output uses two)"
            )
        if int(self.out_features) < 1:
            raise InvalidArgument("out_features", self.out_features, "must be an integer >= 1")
        if not self.operations:
            raise InvalidArgument("operations", [], f"name at least one of {list(OPERATIONS)}")
        for name in self.operations:
            if name not in OPERATIONS:
                raise InvalidArgument(
                    "operations",
                    list(self.operations),
                    f"{name!r} is not one of {list(OPERATIONS)}",
                )
        if len(set(self.operations)) != len(self.operations):
            raise InvalidArgument("operations", list(self.operations), "must not repeat a name")
        if not self.min_abs_denominator > 0:
            raise InvalidArgument("min_abs_denominator", self.min_abs_denominator, "must be > 0")
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

    def sample_inputs(
        self,
        size: int,
        value_range: Sequence[float],
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``[size, in_features]`` inputs uniform on ``value_range``, denominators kept off zero.

        A denominator is uniform on the range without (-d, d), d = ``min_abs_denominator``:
        the distribution that resampling until ``|x| >= d`` gives, drawn by inverse CDF in one go.
        """
        low, high = float(value_range[0]), float(value_range[1])
        x = low + (high - low) * torch.rand(
            size, self.in_features, generator=generator, dtype=dtype
        )
        columns = self.denominator_mask.nonzero().flatten()
        if columns.numel() == 0:
            return x
        d = self.min_abs_denominator
        negative_length = max(0.0, min(high, -d) - low)
        positive_start = max(low, d)
        positive_length = max(0.0, high - positive_start)
        if negative_length + positive_length == 0:
            raise InvalidArgument(
                "min_abs_denominator", d, f"leaves no denominator value in [{low}, {high}]"
            )
        u = (negative_length + positive_length) * torch.rand(
            size, columns.numel(), generator=generator, dtype=dtype
        )
        x[:, columns] = torch.where(
            u < negative_length, low + u, positive_start + (u - negative_length)
        )
        return x

    def targets(self, x: Tensor) -> Tensor:
        """Exact targets ``[..., out_features]`` for inputs ``[..., in_features]``."""
        left = x[..., self.left_index]
        right = x[..., self.right_index]
        y = torch.empty_like(left)
        for k, name in enumerate(self.operations):
            selected = self.operation_index == k
            y[..., selected] = OPERATIONS[name].apply(left[..., selected], right[..., selected])
        return y

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
        """Each output as a formula, e.g. ``y3 = x12 × x47``."""
        return [
            f"y{j} = x{left} {OPERATIONS[name].symbol} x{right}"
            for j, (left, right, name) in enumerate(self._output_terms())
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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
