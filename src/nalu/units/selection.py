"""Heads trained side by side on every output, one chosen per output on validation data."""

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.contract import HasLogMagnitude, independent_outputs

HeadFactory = Callable[[int, int], nn.Module]


def best_candidates(candidate_mse: Tensor) -> Tensor:
    """``[..., H, out]`` MSEs -> ``[..., out]``: per output the candidate of the lowest MSE (a NaN
    MSE never wins)."""
    return candidate_mse.nan_to_num(nan=float("inf")).argmin(dim=-2)


class PerOutputSelection(nn.Module):
    """z_j = the output j of the head chosen for output j.

    Each head (an NAU, an NMU, an NMRU, ... built as ``factory(in_features, out_features)``,
    ``restarts`` times each from different initialisations) answers every output. Trained with
    ``candidates()``, every head fits every output on its own, with no gate between them, and
    the choice per output is made afterwards on validation data (``select``): the head with the
    lowest interpolation MSE. Which path a learned gate settles on "appears to be mostly
    random", at a cost in success (Madsen & Johansen 2020, sec. 2.8 and app. C.4); a choice by
    validation error of heads that were trained independently is a model selection, per output.
    ``learning_rate_scales`` (per head name) multiplies the optimizer's learning rate for that
    head's parameters: as if alone, each head gets its own rate. Each head trains on its own
    MSE, but what a trainer applies to a network as a whole applies to the heads together: a
    gradient-norm clip spans them, and a head whose loss turns non-finite stops the whole
    network.

    It answers the network's outputs, so it is the whole network, not a layer of a stack.

    The training module uses the candidate protocol: ``num_candidates`` (H),
    ``candidates(x)`` ``[..., H, out]``, ``chosen(candidates)`` ``[..., out]`` and
    ``select(candidate_mse)`` with ``[..., H, out]`` validation MSEs; ``forward`` is an
    ordinary ``[..., in] -> [..., out]`` layer that answers with the chosen heads (head 0 for
    every output until the first ``select``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        heads: Mapping[str, HeadFactory],
        restarts: int = 1,
        learning_rate_scales: Mapping[str, float] | None = None,
        log_fit: Sequence[str] = (),
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "PerOutputSelection",
            restarts=restarts,
            learning_rate_scales=learning_rate_scales,
            log_fit=log_fit,
        )
        scales = dict(learning_rate_scales or {})
        self.in_features = in_features
        self.out_features = out_features
        self.restarts = restarts
        self.head_names = [
            name if restarts == 1 else f"{name}_{k}" for name in heads for k in range(restarts)
        ]
        self.heads = nn.ModuleList(
            factory(in_features, out_features)
            for factory in heads.values()
            for _ in range(restarts)
        )
        self.head_learning_rate_scales = [
            float(scales.get(name, 1.0)) for name in heads for _ in range(restarts)
        ]
        products = [
            name
            for name, head in zip(heads, self.heads[::restarts], strict=True)
            if isinstance(head, HasLogMagnitude)
        ]
        rules.selection_heads(list(heads), products, scales, list(log_fit))
        self.log_fit = [name in log_fit for name in heads for _ in range(restarts)]
        self._log_fit_names = [name for name in heads if name in log_fit]
        self.register_buffer("choice", torch.zeros(out_features, dtype=torch.long))

    @property
    def independent_outputs(self) -> bool:
        """Whether each output is a model of its own: so when every head's outputs are."""
        return all(independent_outputs(head) for head in self.heads)

    def parameter_learning_rate_scales(self) -> dict[str, float]:
        """Per parameter name, the factor on the optimizer's learning rate: each head learns at
        the rate that suits its unit (``nalu.training.optimization.parameter_groups`` reads it)."""
        return {
            f"heads.{h}.{name}": scale
            for h, (head, scale) in enumerate(
                zip(self.heads, self.head_learning_rate_scales, strict=True)
            )
            for name, _ in head.named_parameters()
        }

    def reset_parameters(self) -> None:
        for head in self.heads:
            head.reset_parameters()
        self.choice.zero_()

    @property
    def num_candidates(self) -> int:
        return len(self.heads)

    def candidates(self, x: Tensor) -> Tensor:
        """``[..., in] -> [..., H, out]``: every head's answer to every output."""
        return torch.stack([head(x) for head in self.heads], dim=-2)

    def candidate_fits(self, x: Tensor, candidates: Tensor, y: Tensor) -> Tensor:
        """``[H]``: each head's training fit on a batch ``x`` ``[B, in]``, ``y`` ``[B, out]``,
        every output on its own: the MSE of its answers ``candidates`` ``[B, H, out]``, plus
        for a ``log_fit`` head the mean of (log|z| − log|y|)² (``nalu.units.nmu.log_magnitude``;
        this project's own fit, no paper's).
        In log space a product's weights have a first-order gradient toward its inputs, where
        the MSE's vanishes for signed inputs; the MSE then takes the weights the last way to
        {0, 1}, where the error in logs alone leaves them creeping."""
        mse = (candidates - y.unsqueeze(-2)).square().mean(dim=(0, 2))
        if not any(self.log_fit):
            return mse
        log_target = torch.log(y.abs().clamp_min(torch.finfo(y.dtype).tiny))
        in_logs = [
            (head.log_magnitude(x) - log_target).square().mean() if flag else mse.new_zeros(())
            for head, flag in zip(self.heads, self.log_fit, strict=True)
        ]
        return mse + torch.stack(in_logs)

    def chosen(self, candidates: Tensor) -> Tensor:
        """``[..., H, out] -> [..., out]``: the chosen head's answer to each output."""
        index = self.choice.expand(*candidates.shape[:-2], 1, self.out_features)
        return candidates.gather(-2, index).squeeze(-2)

    @torch.no_grad()
    def select(self, candidate_mse: Tensor) -> None:
        """Answer each output with the head of the lowest MSE in ``candidate_mse``
        ``[..., H, out]`` (validation data only: the choice is part of the training)."""
        self.choice.copy_(best_candidates(candidate_mse).reshape(self.choice.shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.chosen(self.candidates(x))

    def effective_weights(self) -> dict[str, Tensor]:
        """Every head's matrices, by ``head/name``, and the choice ``[out, H]``: 1 at the head
        that answers each output, 0 elsewhere."""
        weights = {
            f"{head_name}/{name}": weight
            for head_name, head in zip(self.head_names, self.heads, strict=True)
            for name, weight in head.effective_weights().items()
        }
        weights["choice"] = F.one_hot(self.choice, len(self.heads)).float()
        return weights

    def matrix_columns(self) -> dict[str, list[str]]:
        """The choice's columns are the heads."""
        return {"choice": list(self.head_names)}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"heads={self.head_names}"
            + (f", log_fit={self._log_fit_names}" if self._log_fit_names else "")
        )
