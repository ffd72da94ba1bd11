"""A per-output learned choice between an NAU (add/subtract) and an NMU (multiply)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nalu.config import rules
from nalu.units.nau import NeuralAdditionUnit, sparsity_penalty
from nalu.units.nmu import NeuralMultiplicationUnit


class GatedAdditionMultiplicationUnit(nn.Module):
    """z = g ⊙ NAU(x) + (1 − g) ⊙ NMU(x), one learned gate g per output.

    NALU's gate (Trask et al. 2018, sec. 2) put between the two paths of Madsen & Johansen
    (2020); the gate does not depend on the input, because each output of a static problem
    does one operation. The NAU and NMU are sub-modules, so their regularisers and clamps
    reach the training module through ``modules()``.

    ``exact_gate=False``: g = σ(ĝ), which never reaches 0 or 1, so a little of the other path
    always leaks into the output (and at extrapolation scale an NMU product is large).
    ``exact_gate=True``: g is itself a weight, clamped to [0, 1] after each step and pulled to
    {0, 1} by the sparsity regulariser, the way NAU weights reach ±1 exactly, so the choice
    of path can be exact.
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nmu_init_range: Sequence[float] = (0.0, 0.01),
        max_log_magnitude: float = 20.0,
        exact_gate: bool = False,
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "GatedAdditionMultiplicationUnit",
            nmu_init_range=nmu_init_range,
            max_log_magnitude=max_log_magnitude,
            exact_gate=exact_gate,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.nau = NeuralAdditionUnit(in_features, out_features)
        self.nmu = NeuralMultiplicationUnit(
            in_features, out_features, nmu_init_range, max_log_magnitude
        )
        self.exact_gate = exact_gate
        # The exact gate is g itself; the other is its logit ĝ.
        self.gate_weight = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.nau.reset_parameters()
        self.nmu.reset_parameters()
        # g = 0.5: no preference between the paths at first.
        nn.init.constant_(self.gate_weight, 0.5 if self.exact_gate else 0.0)

    @property
    def gate(self) -> Tensor:
        return self.gate_weight if self.exact_gate else torch.sigmoid(self.gate_weight)

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        if self.exact_gate:
            self.gate_weight.clamp_(0.0, 1.0)

    def regularization(self) -> Tensor:
        """The exact gate's pull toward {0, 1} (R_sparse on [0, 1]: Madsen & Johansen 2020, eq.
        11); 0 else."""
        if self.exact_gate:
            return sparsity_penalty(self.gate_weight)
        return self.gate_weight.new_zeros(())

    def forward(self, x: Tensor) -> Tensor:
        return self.gate * self.nau(x) + (1 - self.gate) * self.nmu(x)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name; the gate as an [out, 1] column."""
        return {"W_add": self.nau.weight, "W_mul": self.nmu.weight, "gate": self.gate.unsqueeze(1)}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"exact_gate={self.exact_gate}"
        )
