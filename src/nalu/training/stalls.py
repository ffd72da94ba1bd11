"""When a member's training has stalled: the iNALU's reinitialisation rule (Schlör, Ring &
Hotho 2020, "iNALU: Improved Neural Arithmetic Logic Unit"), as Mistry et al.'s benchmark
applies it, on the validations' interpolation MSEs."""

from dataclasses import dataclass

import torch
from torch import Tensor

from nalu.config import rules


@dataclass(frozen=True)
class StallRule:
    """A member has stalled once ``validations`` validations have passed since it was last
    (re)initialised, when over all of them the first half's mean interpolation MSE is at most
    the second half's mean plus its standard deviation (no progress beyond the noise) and the
    second half's mean is above ``loss_above`` (not converged)."""

    validations: int = 5
    loss_above: float = 1.0

    def __post_init__(self) -> None:
        rules.check_arguments("StallRule", validations=self.validations, loss_above=self.loss_above)

    def __call__(self, history: Tensor, since: Tensor) -> Tensor:
        """Which members have stalled ``[S]``, from the interpolation MSEs of every validation
        ``history`` ``[V, S]`` and the index of each member's first validation since its last
        (re)initialisation ``since`` ``[S]``. A NaN (a diverged member) never stalls."""
        position = torch.arange(history.shape[0], device=history.device).unsqueeze(1) - since
        count = (position >= 0).sum(dim=0)  # [S]
        first = (position >= 0) & (position < count // 2)
        second = position >= count // 2

        def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
            return torch.where(mask, values, 0.0).sum(dim=0) / mask.sum(dim=0).clamp(min=1)

        first_mean = masked_mean(history, first)
        second_mean = masked_mean(history, second)
        # numpy's std (ddof = 0), as theirs.
        second_std = masked_mean((history - second_mean).square(), second).sqrt()
        return (
            (count >= self.validations)
            & (first_mean <= second_mean + second_std)
            & (second_mean > self.loss_above)
        )
