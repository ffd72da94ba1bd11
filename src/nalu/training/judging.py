"""What a run is judged by, per member, in one place (Madsen & Johansen 2020, sec. 4.1)."""

import torch
from torch import Tensor, nn

from nalu.results.metrics import MemberOutputMSE, is_solved
from nalu.results.record import (
    OWN_BEST_MSE,
    OWN_BEST_SOLVED_FRACTION,
    SOLVED_AT_STEP,
    TRAIN_LOSS,
    metric_name,
)
from nalu.training.members import Members


class Judge(nn.Module):
    """Each member judged at its best validation, as module state that travels with the
    checkpoint (a killed run resumes with it):

    - best validation: the lowest interpolation MSE so far while the member lives; its
      parameters (``best_parameters``) and the training loss of the epoch before it are kept,
      and the test loop runs on those parameters;
    - solved at step: per output solved at the best validation, the first validation whose
      extrapolation MSE was below the output's threshold (``-1`` for the others);
    - each output's own best: its lowest interpolation MSE and the extrapolation MSE at that
      validation (Madsen & Johansen judge one-output models so).

    Only interpolation MSEs choose; the extrapolation set is measured, never chooses.
    """

    def __init__(self, members: Members, outputs: int) -> None:
        super().__init__()
        self.members = members
        size = members.size
        self.register_buffer("first_solved_step", torch.full((size, outputs), -1))
        self.register_buffer("solved_at_step", torch.full((size, outputs), -1))
        self.register_buffer("best_interp_mse", torch.full((size,), float("inf")))
        self.register_buffer("last_train_loss", torch.full((size,), float("nan")))
        self.register_buffer("best_train_loss", torch.full((size,), float("nan")))
        self.register_buffer("own_best_interp_mse", torch.full((size, outputs), float("inf")))
        self.register_buffer("own_best_extrap_mse", torch.full((size, outputs), float("nan")))
        network = members.network
        self.best_parameters = {n: p.detach().clone() for n, p in network.named_parameters()}

    def best_parameters_to(self, device: torch.device) -> None:
        self.best_parameters = {n: t.to(device) for n, t in self.best_parameters.items()}

    def train_loss(self, loss: Tensor, alive: Tensor) -> None:
        """The living members' training loss of the epoch that just ended."""
        self.last_train_loss = torch.where(alive, loss, self.last_train_loss)

    @torch.no_grad()
    def validation(
        self,
        step: int,
        alive: Tensor,
        interp_mse: Tensor,
        per_output: dict[str, Tensor],
        success_threshold: Tensor,
    ) -> None:
        """Judge the validation at optimizer step ``step``: ``interp_mse`` ``[S]``, each set's
        per-output MSEs ``[S, out]`` and the outputs' thresholds ``[S, out]``."""
        living = alive.unsqueeze(1)
        solved = is_solved(per_output["extrap"], success_threshold)
        newly_solved = solved & (self.first_solved_step < 0) & living
        better = living & (per_output["interp"] < self.own_best_interp_mse)
        self.own_best_interp_mse = torch.where(
            better, per_output["interp"], self.own_best_interp_mse
        )
        self.own_best_extrap_mse = torch.where(
            better, per_output["extrap"], self.own_best_extrap_mse
        )
        self.first_solved_step.masked_fill_(newly_solved, step)
        improved = alive & (interp_mse < self.best_interp_mse)
        self.best_interp_mse = torch.where(improved, interp_mse, self.best_interp_mse)
        self.best_train_loss = torch.where(improved, self.last_train_loss, self.best_train_loss)
        # Madsen & Johansen give the step only to outputs solved at the best validation.
        self.solved_at_step = torch.where(
            improved.unsqueeze(1),
            torch.where(solved, self.first_solved_step, -1),
            self.solved_at_step,
        )
        for name, parameter in self.members.network.named_parameters():
            mask = self.members.mask(improved, parameter)
            best = self.best_parameters[name].to(parameter.device)
            self.best_parameters[name] = torch.where(mask, parameter.detach(), best)

    @torch.no_grad()
    def restore_best(self, alive: Tensor) -> None:
        """Every member's parameters of its best validation (members never validated keep
        theirs: as they are, or as they started if they diverged)."""
        validated = self.best_interp_mse.isfinite() | ~alive
        for name, parameter in self.members.network.named_parameters():
            mask = self.members.mask(validated, parameter)
            best = self.best_parameters[name].to(parameter.device)
            parameter.copy_(torch.where(mask, best, parameter))

    def final_metrics(self, extrap: MemberOutputMSE, each_output: bool) -> dict[str, Tensor]:
        """``{name: [S]}``: per group of outputs (all, then each operation) the output count,
        the solved-at step and, where ``each_output`` (the outputs are models of their own),
        each output's own best; and the training loss of the best epoch (of the last, if none
        was validated)."""
        groups = extrap.groups
        metrics: dict[str, Tensor] = {}
        own_best_mse = self.own_best_extrap_mse
        # NaN where an output was never validated, so that its group says "unknown", not 0.
        own_best_solved = torch.where(
            own_best_mse.isnan(),
            float("nan"),
            is_solved(own_best_mse, extrap.success_threshold).float(),
        )
        own_best = {
            OWN_BEST_MSE: groups.mean(own_best_mse),
            OWN_BEST_SOLVED_FRACTION: groups.mean(own_best_solved),
        }
        for name, values in own_best.items() if each_output else ():
            metrics.update(groups.named(metric_name("extrap", name), values))
        metrics.update(groups.counts())
        metrics.update(groups.named(SOLVED_AT_STEP, groups.last_step(self.solved_at_step)))
        validated = self.best_interp_mse.isfinite()
        metrics[TRAIN_LOSS] = torch.where(validated, self.best_train_loss, self.last_train_loss)
        return metrics
