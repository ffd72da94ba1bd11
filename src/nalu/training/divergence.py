"""Which members still train: each member's divergence, found without a read from the device in
any optimizer step."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nalu.config.errors import Diverged
from nalu.training.members import Members


class Divergence(nn.Module):
    """Per member: whether it still trains (``alive``), the optimizer step at which it diverged
    (``diverged_at_step``, -1 while it trains) and the objective that made it diverge.

    A member diverges at the first step whose objective is not finite (``after_steps``, at the
    end of a chunk of steps) or at the end of an epoch that left a parameter non-finite
    (``check_parameters``). It leaves the loss sums from that step, is frozen (``freeze``: its
    gradients become 0; a member's gradients never reach another's) and is judged at its best
    validation before. When no member is left, ``Diverged`` stops the run before the
    parameters reach a checkpoint.
    """

    def __init__(self, members: Members) -> None:
        super().__init__()
        self.members = members
        self.register_buffer("alive", torch.ones(members.size, dtype=torch.bool))
        self.register_buffer("diverged_at_step", torch.full((members.size,), -1))
        self.register_buffer("diverged_loss", torch.full((members.size,), float("nan")), False)
        # Whether some member is known to have diverged: then ``freeze`` has work each step.
        self.some_diverged = False

    def after_steps(self, steps: Sequence[int], objective: Tensor, finite: Tensor) -> Tensor:
        """The members ``[n, S]`` that trained at each of a chunk's optimizer ``steps``: alive
        before the chunk and every ``objective`` ``[n, S]`` finite up to that step (``finite``,
        as every process found it). A member that did not train at the last step diverged at
        its first non-finite step. On the device; ``read`` takes the host's copy."""
        training = self.alive & finite.cumprod(dim=0).bool()
        first_bad = (~finite).int().argmax(dim=0)  # [S]: the first non-finite step's index
        diverging = self.alive & ~training[-1]
        step_of = torch.tensor(steps, device=objective.device)
        self.diverged_at_step = torch.where(diverging, step_of[first_bad], self.diverged_at_step)
        self.diverged_loss = torch.where(
            diverging, objective.gather(0, first_bad.unsqueeze(0)).squeeze(0), self.diverged_loss
        )
        self.alive.copy_(training[-1])  # in place: a captured step masks with this tensor
        return training

    def none_diverging(self, values: Tensor) -> bool:
        """Whether no member diverges by ``values`` (a chunk's objectives ``[n, S]``, or the
        sums of the parameters at an epoch's end), known without the per-member bookkeeping:
        no member has diverged before and their sum is finite (a non-finite value makes it so;
        a sum past float's range only sends the caller the general way). Reads one number from
        the device."""
        return not self.some_diverged and math.isfinite(values.sum().item())

    def read(self, any_alive: bool, all_alive: bool) -> None:
        """What the host read of ``alive`` says (read with the chunk's other values, in one
        transfer): whether to freeze members from now on, and ``Diverged`` when none is left."""
        self.some_diverged = not all_alive
        if any_alive:
            return
        step = int(self.diverged_at_step.max())
        raise Diverged(step, self.members.why_none_is_left(self.diverged_loss))

    def check_parameters(self, finite: Tensor, names: Sequence[str], step: int) -> None:
        """At an epoch's end, members with a non-finite parameter (``finite`` ``[parameters,
        S]``, as every process found it, for the network's parameters ``names``) diverge at
        optimizer step ``step``; ``Diverged`` names the first such parameter when none is
        left."""
        healthy = finite.all(dim=0)
        self.diverged_at_step.masked_fill_(self.alive & ~healthy, step)
        self.alive &= healthy
        any_alive, all_alive = torch.stack([self.alive.any(), self.alive.all()]).tolist()
        self.some_diverged = not all_alive
        if not any_alive:
            culprit = names[int((~finite.all(dim=1)).nonzero()[0])]
            raise Diverged(step, f"parameter network.{culprit} is not finite")

    def resumed(self) -> None:
        """After a checkpoint was loaded: its diverged members stay frozen."""
        self.some_diverged = not bool(self.alive.all())

    def freeze(self, gradients: Sequence[Tensor], always: bool = False) -> None:
        """Diverged members get no update from their ``gradients`` (the network's parameters',
        NaN through a masked loss): they become 0 in place, before clipping. ``always``: masked
        while every member trains too (a compiled step's graph does not ask
        ``some_diverged``; the mask then keeps them all)."""
        if not (always or self.some_diverged):
            return
        for gradient in gradients:
            gradient.copy_(torch.where(self.members.mask(self.alive, gradient), gradient, 0.0))
