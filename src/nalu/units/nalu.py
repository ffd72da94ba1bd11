"""The Neural Arithmetic Logic Unit (Trask et al. 2018), in its paper and article variants, and
the golden-ratio NALU (G-NALU: the "golden ratio based modified NAC and NALU" of Rana, Malhi &
Främling 2019, "Exploring Numerical Calculations with CalcNet", ICTAI, as Mistry et al. 2022
benchmark it)."""

import math

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.linear import linear
from nalu.units.nac import NeuralAccumulator, in_base


class NeuralArithmeticLogicUnit(nn.Module):
    """y = g ⊙ a + (1 − g) ⊙ m: a gate between an additive and a multiplicative NAC path.

    a = W_a x, m = exp(W_m log(|x| + ε)), g = σ(G x [+ b]) (Trask et al. 2018, sec. 2).

    ``shared_weights=True`` is the paper's unit: one NAC weight serves both paths
    (W_a = W_m). ``shared_weights=False`` is the article's: two independent NACs.
    ``gate_bias`` adds a learned bias to the gate (off in the paper). ``base`` replaces e in the
    gate's σ and the NACs' tanh and σ (the G-NALU's golden ratio, Mistry et al. 2022, sec. 4.3);
    the log path is unchanged, since b^(W log_b(|x| + ε)) = exp(W log(|x| + ε)). ``nac_init`` is
    how the NACs' latent weights start (``NeuralAccumulator``'s ``init``).
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        shared_weights: bool = False,
        gate_bias: bool = False,
        eps: float = 1e-7,
        base: float = math.e,
        nac_init: str = "xavier",
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "NeuralArithmeticLogicUnit",
            shared_weights=shared_weights,
            gate_bias=gate_bias,
            eps=eps,
            base=base,
            nac_init=nac_init,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.shared_weights = shared_weights
        self.eps = eps
        self.base = base
        self.add_nac = NeuralAccumulator(in_features, out_features, base, nac_init)
        self.mul_nac = (
            None if shared_weights else NeuralAccumulator(in_features, out_features, base, nac_init)
        )
        self.gate_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.gate_bias = nn.Parameter(torch.empty(out_features)) if gate_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.add_nac.reset_parameters()
        if self.mul_nac is not None:
            self.mul_nac.reset_parameters()
        # Xavier-uniform, as the primer's code draws G (its gain for σ, calculate_gain, is 1).
        nn.init.xavier_uniform_(self.gate_weight)
        if self.gate_bias is not None:
            nn.init.zeros_(self.gate_bias)

    @property
    def _multiplicative_nac(self) -> NeuralAccumulator:
        return self.add_nac if self.mul_nac is None else self.mul_nac

    def gate(self, x: Tensor) -> Tensor:
        """``[batch, out]``: g = σ_b(G x [+ b]) = σ(ln b · (G x [+ b]))."""
        return torch.sigmoid(in_base(linear(x, self.gate_weight, self.gate_bias), self.base))

    def forward(self, x: Tensor) -> Tensor:
        # Trask et al. 2018, sec. 2: a = W x, m = exp(W log(|x| + ε)), g = σ(G x), y = ga + (1-g)m.
        additive = self.add_nac(x)
        multiplicative = torch.exp(self._multiplicative_nac(torch.log(torch.abs(x) + self.eps)))
        gate = self.gate(x)
        return gate * additive + (1 - gate) * multiplicative

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        if self.mul_nac is None:
            weights = {"W": self.add_nac.weight}
        else:
            weights = {"W_add": self.add_nac.weight, "W_mul": self.mul_nac.weight}
        weights["gate"] = self.gate_weight
        return weights

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"shared_weights={self.shared_weights}, gate_bias={self.gate_bias is not None}, "
            f"eps={self.eps}"
            + ("" if self.base == math.e else f", base={self.base:.6g}")
            + f", nac_init={self.add_nac.init}"
        )
