"""The sign-corrected NALU (iNALU: Schlör, Ring & Hotho 2020, "iNALU: Improved Neural
Arithmetic Logic Unit"), the article's "mechanism to adjust the output based on the signs"."""

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.linear import linear
from nalu.units.nac import NeuralAccumulator
from nalu.units.nmu import nmu_product


class ImprovedNeuralArithmeticLogicUnit(nn.Module):
    """y = g ⊙ a + (1 − g) ⊙ m ⊙ msv with independent NACs for a and m (Schlör et al. 2020).

    a = W_a x; m = exp(min(W_m log(max(|x|, ε)), ω)), clipped at ω so that exp cannot overflow;
    msv_j = Π_i (sign(x_i)·|W_m,ji| + 1 − |W_m,ji|) restores the sign that |x| dropped: an input
    with |W_m,ji| = 1 contributes its sign, one with W_m,ji = 0 contributes 1.
    The gate is Schlör et al.'s, one per output, g = σ(ĝ) (``input_independent_gate=True``: each
    output of a static problem does one operation whatever the input); ``False`` gives the
    NALU's gate on the input, σ(G x), which their iNALU does not use.
    ``regularization()`` is iNALU's R = Σ over the latent tensors (Ŵ and M̂ of both NACs, the
    gate) of each one's mean max(t − |θ|, 0): it pushes each value past ±t, where tanh·σ and the
    gate saturate to -1, 0 or 1.
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        input_independent_gate: bool = True,
        max_log_magnitude: float = 20.0,
        eps: float = 1e-7,
        saturation: float = 20.0,
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "ImprovedNeuralArithmeticLogicUnit",
            input_independent_gate=input_independent_gate,
            max_log_magnitude=max_log_magnitude,
            eps=eps,
            saturation=saturation,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.input_independent_gate = input_independent_gate
        self.max_log_magnitude = max_log_magnitude
        self.eps = eps
        self.saturation = saturation
        self.add_nac = NeuralAccumulator(in_features, out_features)
        self.mul_nac = NeuralAccumulator(in_features, out_features)
        gate_shape = (out_features,) if input_independent_gate else (out_features, in_features)
        self.gate_weight = nn.Parameter(torch.empty(gate_shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Schlör et al.'s initialisation (their code, daschloer/inalu nalu_architectures.py, which
        # the primer's benchmark keeps): Ŵ ~ N(0.88, 0.2), M̂ ~ N(0.5, 0.2), gate ~ N(0, 0.2), so
        # every weight starts near tanh(0.88)·σ(0.5) = 0.44 and the gate near 0.5.
        for nac in (self.add_nac, self.mul_nac):
            nn.init.normal_(nac.weight_hat, mean=0.88, std=0.2)
            nn.init.normal_(nac.gate_hat, mean=0.5, std=0.2)
        nn.init.normal_(self.gate_weight, mean=0.0, std=0.2)

    def _gate(self, x: Tensor) -> Tensor:
        if self.input_independent_gate:
            return torch.sigmoid(self.gate_weight)
        return torch.sigmoid(linear(x, self.gate_weight))

    def forward(self, x: Tensor) -> Tensor:
        additive = self.add_nac(x)
        # Schlör et al. 2020, sec. 3: m (the log-space NAC clipped at ω) and the mixed sign vector.
        log_magnitude = self.mul_nac(torch.log(x.abs().clamp_min(self.eps)))
        magnitude = torch.exp(log_magnitude.clamp(max=self.max_log_magnitude))
        # msv_j = Π_i (|W_m,ji| sign(x_i) + 1 − |W_m,ji|): the NMU's product of |W_m| and sign(x)
        # (Madsen & Johansen 2020; its factors lie in [-1, 1], so its cap never binds). A plain
        # prod's backward (cumulative products) took two thirds of a compiled step.
        mixed_sign = nmu_product(self.mul_nac.weight.abs(), torch.sign(x), self.max_log_magnitude)
        gate = self._gate(x)
        return gate * additive + (1 - gate) * magnitude * mixed_sign

    def regularization(self) -> Tensor:
        # Schlör et al. 2020, sec. 3, as their code computes it (daschloer/inalu,
        # nalu_syn_simple_arith.py, with λ = 0.05): Σ over the latent tensors of each one's mean
        # max(min(−θ, θ) + t, 0), i.e. 0 once |θ| >= t.
        penalties = [(self.saturation - p.abs()).clamp_min(0).mean() for p in self.parameters()]
        return torch.stack(penalties).sum()

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name; a per-output gate as a column."""
        gate = self.gate_weight.unsqueeze(1) if self.input_independent_gate else self.gate_weight
        return {"W_add": self.add_nac.weight, "W_mul": self.mul_nac.weight, "gate": gate}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"input_independent_gate={self.input_independent_gate}, "
            f"max_log_magnitude={self.max_log_magnitude}, "
            f"eps={self.eps}, saturation={self.saturation}"
        )
