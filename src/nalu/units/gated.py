"""A per-output learned choice between an NAU (add/subtract) and an NMU (multiply)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nalu.units.nau import NeuralAdditionUnit
from nalu.units.nmu import NeuralMultiplicationUnit


class GatedAdditionMultiplicationUnit(nn.Module):
    """z = g ⊙ NAU(x) + (1 − g) ⊙ NMU(x), g = σ(ĝ) with one learned ĝ per output.

    NALU's gate (Trask et al. 2018, sec. 2) put between the two paths of Madsen & Johansen
    (2020); the gate does not depend on the input, because each output of a static problem
    does one operation. The NAU and NMU are sub-modules, so their regularisers and clamps
    reach the training module through ``modules()``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nmu_init_range: Sequence[float] = (0.0, 0.01),
        max_log_magnitude: float = 20.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.nau = NeuralAdditionUnit(in_features, out_features)
        self.nmu = NeuralMultiplicationUnit(
            in_features, out_features, nmu_init_range, max_log_magnitude
        )
        self.gate_logit = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.nau.reset_parameters()
        self.nmu.reset_parameters()
        nn.init.zeros_(self.gate_logit)  # g = 0.5: no preference between the paths at first

    @property
    def gate(self) -> Tensor:
        return torch.sigmoid(self.gate_logit)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate * self.nau(x) + (1 - self.gate) * self.nmu(x)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name; the gate as an [out, 1] column."""
        return {"W_add": self.nau.weight, "W_mul": self.nmu.weight, "g": self.gate.unsqueeze(1)}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
