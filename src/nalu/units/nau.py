"""The Neural Addition Unit (Madsen & Johansen 2020, "Neural Arithmetic Units")."""

import math

import torch
from torch import Tensor, nn

from nalu.units.linear import linear


def integer_distance(weight: Tensor) -> Tensor:
    """Each weight's distance from {-1, 0, 1}, min(|W|, |1 − |W||): the terms of Madsen &
    Johansen's R_sparse (2020), and of the sparsity error that judges a learned weight."""
    magnitude = weight.abs()
    return torch.minimum(magnitude, (1 - magnitude).abs())


def sparsity_penalty(weight: Tensor) -> Tensor:
    """R = mean(min(|W|, 1 − |W|)) (Madsen & Johansen 2020, eq. 6), 0 only at W ∈ {-1, 0, 1}."""
    return integer_distance(weight).mean()


def nau_init_bound(in_features: int, out_features: int) -> float:
    """r of the NAU's U[-r, r] start (Madsen & Johansen 2020, sec. 2.6: E[W] = 0, Var[W] = 2 /
    (fan_in + fan_out), i.e. Xavier-uniform's r = √(6 / (fan_in + fan_out))), capped at 0.5 as
    their code caps it (stable-nalu's NAU layer): a unit of few inputs starts inside the clamp,
    not at ±1."""
    return min(0.5, math.sqrt(6 / (in_features + out_features)))


class NeuralAdditionUnit(nn.Module):
    """z = W x, W clamped to [-1, 1] after each optimizer step (Madsen & Johansen 2020, eqs. 5, 7).

    Unlike the NAC's tanh·σ weight, the plain weight reaches ±1 exactly, so a learned sum is
    exact; ``regularization()`` pulls W toward {-1, 0, 1} and ``clamp_parameters()`` keeps it in
    range (the training module calls both).
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = nau_init_bound(self.in_features, self.out_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight)

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.weight.clamp_(-1.0, 1.0)

    def regularization(self) -> Tensor:
        return sparsity_penalty(self.weight)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        return {"W": self.weight}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
