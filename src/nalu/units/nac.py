"""The Neural Accumulator and its multiplicative form (Trask et al. 2018, "Neural Arithmetic
Logic Units")."""

import math

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.linear import linear

# The golden ratio, the base of the G-NALU's sigmoid and tanh (Mistry et al. 2022, sec. 4.3).
GOLDEN_RATIO = (1 + math.sqrt(5)) / 2


def in_base(z: Tensor, base: float) -> Tensor:
    """z ln b: σ_b(z) = σ(z ln b) and tanh_b(z) = tanh(z ln b) (Mistry et al. 2022, sec. 4.3);
    ``z`` itself in base e, without a multiplication by 1 (an eager step's kernels are most of
    its time)."""
    return z if base == math.e else math.log(base) * z


def nac_weight_variance(bound: float) -> float:
    """Var[tanh(Ŵ)·σ(M̂)] for Ŵ and M̂ independent on U[−r, r]: E[tanh²(Ŵ)]·E[σ²(M̂)] =
    (1 − tanh(r)/r) · (r − tanh(r/2)) / (2r) (Madsen & Johansen 2020, app. B.2, as their code
    and the primer's initialise a NAC; σ = (1 + tanh(z/2)) / 2 gives the second factor)."""
    return (1 - math.tanh(bound) / bound) * (bound - math.tanh(bound / 2)) / (2 * bound)


def variance_matched_bound(in_features: int, out_features: int) -> float:
    """The r at which W = tanh(Ŵ)·σ(M̂) has Glorot's variance 2 / max(in + out, 5), as their
    code solves it: bisection on (0, 10] (the variance grows with r, toward 1/2)."""
    target = 2 / max(in_features + out_features, 5)
    low, high = 0.0, 10.0
    for _ in range(60):  # 10 / 2⁶⁰: below a float's step
        middle = (low + high) / 2
        low, high = (middle, high) if nac_weight_variance(middle) < target else (low, middle)
    return (low + high) / 2


class NeuralAccumulator(nn.Module):
    """y = W x with W = tanh(Ŵ) ⊙ σ(M̂), which biases W toward {-1, 0, 1}.

    Weights are ``[out_features, in_features]`` like ``nn.Linear``; there is no bias, so the
    unit can only add and subtract its inputs. ``base`` replaces e in tanh and σ: σ_b(z) =
    1 / (1 + b^−z) = σ(z ln b), tanh_b(z) = tanh(z ln b); the G-NALU's NAC takes the golden
    ratio, whose flatter curves keep gradients alive longer. ``init`` is how Ŵ and M̂ start:
    ``xavier`` (Xavier-uniform, as the article's code) or ``variance_matched`` (on U[−r, r] with
    r such that W has Glorot's variance, ``variance_matched_bound``: Madsen & Johansen's and the
    primer's code).
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self, in_features: int, out_features: int, base: float = math.e, init: str = "xavier"
    ) -> None:
        super().__init__()
        rules.check_arguments("NeuralAccumulator", base=base, init=init)
        self.in_features = in_features
        self.out_features = out_features
        self.base = base
        self.init = init
        self.weight_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.gate_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Trask et al. publish no code: the article's draws Xavier-uniform latents, Madsen &
        # Johansen's and the primer's match W's variance (``variance_matched_bound``).
        if self.init == "xavier":
            nn.init.xavier_uniform_(self.weight_hat)
            nn.init.xavier_uniform_(self.gate_hat)
        else:
            bound = variance_matched_bound(self.in_features, self.out_features)
            nn.init.uniform_(self.weight_hat, -bound, bound)
            nn.init.uniform_(self.gate_hat, -bound, bound)

    @property
    def weight(self) -> Tensor:
        # Trask et al. 2018, eq. 1: W = tanh(Ŵ) ⊙ σ(M̂), in base b (``in_base``).
        weight_hat = in_base(self.weight_hat, self.base)
        gate_hat = in_base(self.gate_hat, self.base)
        return torch.tanh(weight_hat) * torch.sigmoid(gate_hat)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        return {"W": self.weight}

    def extra_repr(self) -> str:
        base = "" if self.base == math.e else f", base={self.base:.6g}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}{base}, "
            f"init={self.init}"
        )


class MultiplicativeNeuralAccumulator(nn.Module):
    """NAC•: y = exp(W log(|x| + ε)) with the NAC's W = tanh(Ŵ) ⊙ σ(M̂), products and
    quotients of the inputs' magnitudes (Trask et al. 2018, sec. 2: the NALU's multiplicative
    path on its own; Madsen & Johansen 2020 name it NAC•).
    """

    independent_outputs = True

    def __init__(
        self, in_features: int, out_features: int, eps: float = 1e-7, init: str = "xavier"
    ) -> None:
        super().__init__()
        rules.check_arguments("MultiplicativeNeuralAccumulator", eps=eps, init=init)
        self.in_features = in_features
        self.out_features = out_features
        self.eps = eps
        self.nac = NeuralAccumulator(in_features, out_features, init=init)

    def reset_parameters(self) -> None:
        self.nac.reset_parameters()

    @property
    def weight(self) -> Tensor:
        return self.nac.weight

    def forward(self, x: Tensor) -> Tensor:
        # Trask et al. 2018, sec. 2: m = exp(W log(|x| + ε)).
        return torch.exp(self.nac(torch.log(torch.abs(x) + self.eps)))

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        return {"W": self.weight}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, eps={self.eps}, "
            f"init={self.nac.init}"
        )
