"""The ramped weight of the units' regularisation terms in the training loss."""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from nalu.config import rules


@dataclass(frozen=True)
class RegularizerSchedule:
    """λ(step): ``initial`` before ``start``, ``scale`` from ``end`` on, and in between a linear
    ramp (``growth`` null) or jumps of ×``growth`` evenly spaced from ``start`` to ``end``.
    ``start`` and ``end`` are fractions of the run's optimizer steps, so a schedule fits any run
    length; ``scale=0`` turns the regulariser off.

    The ramp is Madsen & Johansen's (2020, eq. 14)
    λ_sparse = λ̂·max(min((t − start)/(end − start), 1), 0): the penalty toward {-1, 0, 1} comes
    in only after the weights have had time to find the inputs, since pulling them to the
    nearest of -1, 0, 1 from the start locks in the init. The
    jumps are Heim et al.'s (2020) β for the NPU's L1 penalty, ×10 every 10,000 steps from 1e-7
    to 1e-5 in Mistry et al.'s (2022) benchmark: ``initial=1e-7, scale=1e-5, growth=10,
    start=0.2, end=0.4`` of 50,000 steps. Where scale/initial is not a power of ``growth``, the
    jumps are round(log_growth(scale/initial)) and the last lands on ``scale``.

    ``factor`` multiplies the whole schedule: a ``problems`` cell's λ as a share of the run's
    (the NPU's β on ÷ at 1/100 of ×'s), so that a run without a regulariser (``regularizer=none``,
    scale 0) has none in any cell.
    """

    scale: float = 0.0
    start: float = 0.0
    end: float = 0.0
    initial: float = 0.0
    growth: float | None = None
    factor: float = 1.0

    def __post_init__(self) -> None:
        fields = asdict(self)
        rules.check_arguments("RegularizerSchedule", **fields)
        rules.regularizer_schedule(**fields)

    def __call__(self, step: int, total_steps: int) -> float:
        """λ at optimizer step ``step`` (from 0) of ``total_steps``."""
        return self.factor * self._unscaled(step, total_steps)

    def _unscaled(self, step: int, total_steps: int) -> float:
        start, end = self.start * total_steps, self.end * total_steps
        if step >= end:
            return self.scale
        if step < start:
            return self.initial
        if self.growth is None:
            return self.initial + (self.scale - self.initial) * (step - start) / (end - start)
        jumps = max(round(math.log(self.scale / self.initial, self.growth)), 1)
        spacing = (end - start) / max(jumps - 1, 1)
        return min(self.initial * self.growth ** (1 + (step - start) // spacing), self.scale)


class MemberSchedules:
    """Each member's λ(step) in a population whose ``problems`` cells set their own schedules
    (one per member, in member order); a plain float where every member has the same."""

    def __init__(self, schedules: Sequence[RegularizerSchedule]) -> None:
        self.distinct = list(dict.fromkeys(schedules))
        self.index = torch.tensor([self.distinct.index(s) for s in schedules])
        # λ of every step of a run for each distinct schedule, ``[steps, distinct]``, made once
        # on the training device: a step then gathers its members' λ there, with no copy.
        self._table = torch.empty(0)
        self._table_for: tuple[int, torch.device | None] | None = None

    def __call__(
        self, step: int, total_steps: int, device: torch.device | None = None
    ) -> float | Tensor:
        """λ at optimizer step ``step`` (from 0) of ``total_steps``: a float, or ``[S]``."""
        if len(self.distinct) == 1:
            return self.distinct[0](step, total_steps)
        if self._table_for != (total_steps, device):
            rows = [[s(t, total_steps) for s in self.distinct] for t in range(total_steps)]
            self._table = torch.tensor(rows, device=device)
            self._table_for = (total_steps, device)
            self.index = self.index.to(device)
        return self._table[step, self.index]
