"""Neural Power Units (Heim, Pevný & Šmídl 2020, "Neural Power Units"): signed products,
quotients and powers through a complex-valued log space."""

import math

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.linear import linear


class NeuralPowerUnit(nn.Module):
    """The NPU, z = Re exp(W log x) with the complex log x = log r + i k (Heim et al. 2020,
    eqs. 14–15 of the NeurIPS paper; their k is this ``k`` over π).

    r = ĝ ⊙ (|x| + ε) + 1 − ĝ and k = ĝ ⊙ π·[x < 0], with the relevance gate ĝ = clamp(g, 0, 1)
    per input: an irrelevant input (ĝ = 0) becomes r = 1, k = 0 and drops out of every product.

    ``complex_weight=True`` (NPU): W = W_re + i W_im and
    z = exp(W_re log r − W_im k) ⊙ cos(W_im log r + W_re k).
    ``complex_weight=False`` (RealNPU, their sec. 3.2: W_im removed): z = exp(W log r) ⊙ cos(W k).
    For integer weights cos(W k) = ±1 is the sign of the product, so x0·x1 of (1.5, −2) is −3,
    and W = (1, −1) divides.
    """

    def __init__(
        self, in_features: int, out_features: int, complex_weight: bool = True, eps: float = 1e-7
    ) -> None:
        super().__init__()
        rules.check_arguments("NeuralPowerUnit", complex_weight=complex_weight, eps=eps)
        self.in_features = in_features
        self.out_features = out_features
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_imag = (
            nn.Parameter(torch.empty(out_features, in_features)) if complex_weight else None
        )
        self.gate = nn.Parameter(torch.empty(in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The authors' NeuralArithmetic.jl: Glorot-uniform W_re, W_im = 0, every gate at 0.5.
        nn.init.xavier_uniform_(self.weight)
        if self.weight_imag is not None:
            nn.init.zeros_(self.weight_imag)
        nn.init.constant_(self.gate, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        # Heim et al. 2020, eqs. 14–15 (the NPU): r = ĝ(|x| + ε) + 1 − ĝ, k = ĝπ[x < 0],
        # z = exp(W_re log r − W_im k) ⊙ cos(W_im log r + W_re k).
        relevance = self.gate.clamp(0.0, 1.0)
        log_radius = torch.log(relevance * (x.abs() + self.eps) + 1 - relevance)
        phase = relevance * math.pi * (x < 0).to(x.dtype)
        magnitude = linear(log_radius, self.weight)
        angle = linear(phase, self.weight)
        if self.weight_imag is not None:
            magnitude = magnitude - linear(phase, self.weight_imag)
            angle = angle + linear(log_radius, self.weight_imag)
        return torch.exp(magnitude) * torch.cos(angle)

    def regularization(self) -> Tensor:
        """Σ|θ| over the weights and gates: Heim et al.'s (2020, eq. 24) L1 penalty, which drives
        unused weights and gates to 0 (the loss weighs it by β, ``conf/regularizer/growing``)."""
        return torch.stack([parameter.abs().sum() for parameter in self.parameters()]).sum()

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name; the gate as a [1, in] row."""
        weights = (
            {"W": self.weight}
            if self.weight_imag is None
            else {
                "W_re": self.weight,
                "W_im": self.weight_imag,
            }
        )
        return {**weights, "gate": self.gate.unsqueeze(0)}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"complex_weight={self.weight_imag is not None}, eps={self.eps}"
        )
