"""When members or outputs start over: rounds of per-output restarts and the iNALU's stall
restarts, judged on validation (interpolation) data alone."""

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from nalu.training.members import Members
from nalu.training.stalls import StallRule

log = logging.getLogger(__name__)


class Restarts(nn.Module):
    """The restarts of a population's members, and what they leave settled.

    ``rounds`` > 1: the run's optimizer steps fall into that many rounds; at the end of every
    round but the last (``end_round``) each member's outputs solved on the interpolation set
    are settled (their weight rows no longer change: ``zero_settled_gradients``) and every other
    output starts over from a new initialisation. ``stall_rule``: a member whose interpolation
    MSE has stalled starts over entirely (``restart_stalled``, Schlör et al. 2020).

    Buffers, saved in checkpoints: ``settled_outputs`` ``[S, outputs]``, and per member the
    validation from which its stall is judged (``stall_since``) and its restarts so far
    (``stall_restarts``).
    """

    def __init__(
        self, members: Members, outputs: int, rounds: int, stall_rule: StallRule | None
    ) -> None:
        super().__init__()
        self.members = members
        self.rounds = rounds
        self.stall_rule = stall_rule
        size = members.size
        self.register_buffer("stall_since", torch.zeros(size, dtype=torch.long))
        self.register_buffer("stall_restarts", torch.zeros(size, dtype=torch.long))
        self.register_buffer("settled_outputs", torch.zeros((size, outputs), dtype=torch.bool))
        # Whether some output is settled: then ``zero_settled_gradients`` has work each step.
        self.any_settled = False

    def resumed(self) -> None:
        """A resumed run's settled outputs are those of its checkpoint."""
        self.any_settled = bool(self.settled_outputs.any())

    def round_steps(self, planned_steps: int) -> int:
        """The optimizer steps of a round: the run's ``planned_steps``, divided by ``rounds``."""
        return max(1, planned_steps // self.rounds)

    def zero_settled_gradients(self, gradients: Sequence[Tensor], always: bool = False) -> None:
        """Settled outputs' rows get no update from ``gradients`` (the network's parameters'):
        they become 0 in place (so their first moments are 0 too). ``always``: masked before any
        output has settled too, in a run of rounds (a compiled step's graph does not ask
        ``any_settled``)."""
        if not (self.any_settled or (always and self.rounds > 1)):
            return
        for gradient in gradients:
            gradient.masked_fill_(self.members.rows(self.settled_outputs, gradient), 0.0)

    def end_round(
        self,
        step: int,
        planned_steps: int,
        solved: Tensor,
        alive: Tensor,
        optimizer: Optimizer,
        scheduler: Any,
        next_validation: int,
    ) -> None:
        """At the end of every round but the last: each living member's outputs ``solved`` on
        the interpolation set (``[S, outputs]``) are settled, and every other output starts
        over: its row of every parameter re-initialised from the member's seed for the round,
        and the ``optimizer`` and the learning-rate ``scheduler`` (if any) as at step 0; a
        member with a new row has its stall judged again from ``next_validation`` (the index
        of the next validation), as after a stall's restart. Validation data alone decides."""
        round_steps = self.round_steps(planned_steps)
        if self.rounds == 1 or step % round_steps or step >= planned_steps:
            return
        living = alive.unsqueeze(1)
        self.settled_outputs |= solved & living
        restarted = ~self.settled_outputs & living
        self.any_settled = bool(self.settled_outputs.any())
        self.stall_since.masked_fill_(restarted.any(dim=1), next_validation)
        round_index = step // round_steps
        fresh = self.members.fresh(round_index)
        with torch.no_grad():
            for name, parameter in self.members.network.named_parameters():
                rows = self.members.rows(restarted, parameter)
                parameter.copy_(torch.where(rows, fresh[name].to(parameter), parameter))
                # Every live row is now settled or new: Adam's moments and step count start
                # from 0 (a settled row's zero moments and zero gradients leave it still).
                for value in optimizer.state.get(parameter, {}).values():
                    if isinstance(value, Tensor):
                        value.zero_()
        if scheduler is not None:
            # From the learning rates it started with, as at step 0 (closed-form and chained
            # schedulers alike).
            for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base_lr
            scheduler.last_epoch = -1
            scheduler.step()
        log.info(
            "step %d: round %d of %d: %d outputs settled, %d start over",
            step,
            round_index + 1,
            self.rounds,
            int(self.settled_outputs.sum()),
            int(restarted.sum()),
        )

    def restart_stalled(self, step: int, history: Tensor, alive: Tensor) -> None:
        """Each living member whose interpolation MSEs ``history`` ``[V, S]`` have stalled
        (``stall_rule``) starts over: every parameter re-initialised from its seed for its
        n-th restart (``build_network``'s draw rounds − 1 + n, no round's), Adam's moments
        kept as in Mistry et al.'s benchmark; its stall is judged again from the next
        validation."""
        if self.stall_rule is None:
            return
        stalled = self.stall_rule(history, self.stall_since) & alive
        members = stalled.nonzero().flatten().tolist()
        if not members:
            return
        self.stall_restarts += stalled
        self.stall_since.masked_fill_(stalled, history.shape[0])
        network = self.members.network
        with torch.no_grad():
            for member in members:
                draw = self.rounds - 1 + int(self.stall_restarts[member])
                fresh = self.members.fresh_member(member, draw)
                for name, parameter in network.named_parameters():
                    self.members.of(parameter, member).copy_(fresh.get_parameter(name))
        log.info(
            "step %d: stalled, re-initialised (stall_restart): %d of %d members",
            step,
            len(members),
            self.members.size,
        )
