"""The Neural Multiplicative Reciprocal Unit (Mistry, Farrahi & Hare 2021, "Learning Division
with Neural Arithmetic Logic Modules")."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.linear import linear
from nalu.units.nmu import (
    NeuralMultiplicationUnit,
    log_magnitude,
    magnitude_product,
    nmu_factors,
)


def bounded_reciprocal(x: Tensor, floor: float) -> Tensor:
    """x / max(x², floor²): exactly 1/x wherever |x| >= floor, and at most 1/floor nearer to 0
    (this project's bound: Mistry et al. 2021 take the plain 1/x).

    An input near 0 that is no denominator would otherwise enter the product as a huge 1/x
    (and its gradient as −1/x²) while the unit is still searching; a denominator is never
    nearer to 0 than the problem's smallest one, which is the floor to give.
    """
    return x / x.square().clamp_min(floor * floor)


class NeuralMultiplicativeReciprocalUnit(nn.Module):
    """z_j = cos(π Σ_i k_i W_ji) · Π_i (W_ji |x'_i| + 1 − W_ji) over x' = [x, 1/x], W in [0, 1]
    (Mistry et al. 2021, NMRU with sign retrieval).

    x' holds every input and its reciprocal (``bounded_reciprocal``, exact for |x| at least
    ``reciprocal_floor``: set it to the smallest |denominator| of the data), so W = 1 on x_a and
    on 1/x_b computes x_a ÷ x_b, and W = 1 on x_a and x_b computes x_a × x_b. The product runs on
    magnitudes (no factor crosses 0 while W moves); k_i = [x'_i < 0] restores the sign, since
    cos(π · the number of negative selected inputs) is that product's sign whenever W is in
    {0, 1}. The weight is ``[out, 2 · in]``: columns ``in`` onward are the reciprocals'.

    ``sign_retrieval=False``: the NMU's signed factors W_ji x'_i + 1 − W_ji instead (Mistry et
    al.'s NMRU without sign retrieval), exact in sign at W in {0, 1} as well. With the
    retrieval, and W near 0, the magnitudes carry no sign and cos(π Σ k W) has no gradient
    (sin 0 = 0), so a signed quotient gives the weights nothing to follow; the signed factors
    do: it solved every signed quotient of the article's problem where the retrieval solved none
    (README, "Which unit should I use?").

    ``init_range``, ``max_log_magnitude`` and ``noise_range`` (the stochastic NMU's noise, from
    the sNMU paper of Mistry et al. 2022) are the NMU's (see ``NeuralMultiplicationUnit``).
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init_range: Sequence[float] = (0.0, 0.01),
        max_log_magnitude: float = 20.0,
        noise_range: Sequence[float] | None = None,
        sign_retrieval: bool = True,
        reciprocal_floor: float = 1.0,
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "NeuralMultiplicativeReciprocalUnit",
            init_range=init_range,
            max_log_magnitude=max_log_magnitude,
            noise_range=noise_range,
            sign_retrieval=sign_retrieval,
            reciprocal_floor=reciprocal_floor,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.sign_retrieval = sign_retrieval
        self.reciprocal_floor = float(reciprocal_floor)
        # The NMU over x' holds the weight, its init, clamp and regulariser (found by the
        # training module through modules()), and computes the product without sign retrieval.
        self.nmu = NeuralMultiplicationUnit(
            2 * in_features, out_features, init_range, max_log_magnitude, noise_range
        )

    @property
    def weight(self) -> Tensor:
        """``[out, 2 · in]``: the inputs' columns, then the reciprocals'."""
        return self.nmu.weight

    def reset_parameters(self) -> None:
        self.nmu.reset_parameters()

    def _extended(self, x: Tensor) -> Tensor:
        return torch.cat([x, bounded_reciprocal(x, self.reciprocal_floor)], dim=-1)

    def log_magnitude(self, x: Tensor) -> Tensor:
        """``[..., out]``: log|z_j| from the magnitudes of [x, 1/x] (``nmu.log_magnitude``)."""
        return log_magnitude(self.weight, self._extended(x).abs())

    def forward(self, x: Tensor) -> Tensor:
        extended = self._extended(x)
        if not self.sign_retrieval:
            return self.nmu(extended)
        noise_range = self.nmu.noise_range if self.training else None
        magnitudes = nmu_factors(self.weight, extended.abs(), noise_range)
        # Mistry et al. 2021, sign retrieval: cos(π Σ_i k_i W_ji), k_i = 1 for negative x'_i.
        negative = (extended < 0).to(x.dtype)
        sign = torch.cos(math.pi * linear(negative, self.weight))
        return sign * magnitude_product(magnitudes, -1, self.nmu.max_log_magnitude)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name: the inputs' and the reciprocals'."""
        return {
            "W": self.weight[:, : self.in_features],
            "W_reciprocal": self.weight[:, self.in_features :],
        }

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"sign_retrieval={self.sign_retrieval}, reciprocal_floor={self.reciprocal_floor}"
        )
