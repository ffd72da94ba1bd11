"""The ramped weight of the units' regularisation terms in the training loss."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nalu.errors import InvalidArgument

if TYPE_CHECKING:
    import lightning as L


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
        if self.scale < 0:
            raise InvalidArgument("regularizer.scale", self.scale, "must be >= 0")
        if not 0 <= self.start <= self.end <= 1:
            allowed = (
                "must satisfy 0 <= start <= end <= 1, fractions of the run's steps "
                f"(start={self.start}, end={self.end})"
            )
            raise InvalidArgument("regularizer.start", self.start, allowed)

    def __call__(self, step: int, total_steps: int) -> float:
        """λ at optimizer step ``step`` of ``total_steps``."""
        start, end = self.start * total_steps, self.end * total_steps
        if step >= end:
            return self.scale
        if step <= start:
            return 0.0
        return self.scale * (step - start) / (end - start)


def planned_optimizer_steps(trainer: "L.Trainer") -> int:
    """The optimizer steps the trainer will run: ``max_epochs`` times the data module's
    ``steps_per_epoch()``, or ``max_steps`` if that comes first.

    Lightning's ``estimated_stepping_batches`` counts training batches, and a batch of
    ``ArithmeticModule`` is an epoch of steps; it serves only loaders of single batches.
    """
    steps_per_epoch = getattr(trainer.datamodule, "steps_per_epoch", None)
    if steps_per_epoch is None or trainer.max_epochs in (None, -1):
        return int(trainer.estimated_stepping_batches)
    planned = trainer.max_epochs * steps_per_epoch()
    if trainer.max_steps not in (None, -1):
        planned = min(planned, trainer.max_steps)
    return planned


def network_regularization(network: nn.Module) -> Tensor | None:
    """Σ of ``regularization()`` over every module that has one; None if none has."""
    terms = [m.regularization() for m in network.modules() if hasattr(m, "regularization")]
    return torch.stack(terms).sum() if terms else None


def clamp_network_parameters(network: nn.Module) -> None:
    """Call ``clamp_parameters()`` on every module that has one (NAU, NMU: after each step)."""
    for module in network.modules():
        if hasattr(module, "clamp_parameters"):
            module.clamp_parameters()
