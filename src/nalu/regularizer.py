"""The ramped weight of the units' regularisation terms in the training loss."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nalu import rules
from nalu.errors import InvalidArgument


@dataclass(frozen=True)
class RegularizerSchedule:
    """λ(step) = 0 before ``start``, ``scale`` from ``end`` on, linear in between; ``start`` and
    ``end`` are fractions of the run's optimizer steps, so a schedule fits any run length.

    Madsen & Johansen (2020), their λ_sparse = λ̂·max(min((t − start)/(end − start), 1), 0): the
    penalty toward {-1, 0, 1} comes in only after the weights have had time to find the inputs,
    since pulling them to the nearest of -1, 0, 1 from the start locks in the init.
    ``scale=0`` turns the regulariser off.
    """

    scale: float = 0.0
    start: float = 0.0
    end: float = 0.0

    def __post_init__(self) -> None:
        rules.non_negative_number("scale", self.scale)
        if not 0 <= self.start <= self.end <= 1:
            allowed = (
                "must satisfy 0 <= start <= end <= 1, fractions of the run's steps "
                f"(start={self.start}, end={self.end})"
            )
            raise InvalidArgument("start", self.start, allowed)

    def __call__(self, step: int, total_steps: int) -> float:
        """λ at optimizer step ``step`` of ``total_steps``."""
        start, end = self.start * total_steps, self.end * total_steps
        if step >= end:
            return self.scale
        if step <= start:
            return 0.0
        return self.scale * (step - start) / (end - start)


def network_regularization(network: nn.Module) -> Tensor | None:
    """Σ of ``regularization()`` over every module that has one; None if none has."""
    terms = [m.regularization() for m in network.modules() if hasattr(m, "regularization")]
    return torch.stack(terms).sum() if terms else None
