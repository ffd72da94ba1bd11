"""The Neural Accumulator (Trask et al. 2018, "Neural Arithmetic Logic Units")."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NeuralAccumulator(nn.Module):
    """y = W x with W = tanh(Ŵ) ⊙ σ(M̂), which biases W toward {-1, 0, 1}.

    Weights are ``[out_features, in_features]`` like ``nn.Linear``; there is no bias, so the
    unit can only add and subtract its inputs.
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.gate_hat = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform latent weights, as in the paper's and the article's implementations.
        nn.init.xavier_uniform_(self.weight_hat)
        nn.init.xavier_uniform_(self.gate_hat)

    @property
    def weight(self) -> Tensor:
        # Trask et al. 2018, eq. 1: W = tanh(Ŵ) ⊙ σ(M̂).
        return torch.tanh(self.weight_hat) * torch.sigmoid(self.gate_hat)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        return {"W": self.weight}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
