"""Dense baselines: the article's "vanilla" net and a fair multilayer perceptron."""

from collections.abc import Sequence
from itertools import pairwise

import torch.nn.functional as F
from torch import Tensor, nn

from nalu.config import rules


class ArticleBaseline(nn.Module):
    """The article's "vanilla" network, kept as published: ReLU(W x + b) (its ``VanillaNetwork``,
    one ``nn.Linear`` and a ReLU, in the section comparing it with the NAC and the NALU).

    Its final ReLU means it can never output a negative number, so it cannot fit half of any
    subtraction or signed product; it is the article's baseline, not a fair one (see ``MLP``).
    """

    # Output j depends on row j of W and b_j only: each output is a model of its own.
    independent_outputs = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.linear(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MLP(nn.Module):
    """Dense layers with an activation between them and a linear output layer.

    ``activation`` is the name of a ``torch.nn`` activation module (``ReLU``, ``Tanh``, ``GELU``,
    ...); ``hidden_features`` may be empty, which leaves a single linear layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "ReLU",
    ) -> None:
        super().__init__()
        rules.check_arguments("MLP", hidden_features=hidden_features, activation=activation)
        activation_class = getattr(nn, activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        sizes = [in_features, *map(int, hidden_features), out_features]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(pairwise(sizes)):
            if index > 0:
                layers.append(activation_class())
            layers.append(nn.Linear(fan_in, fan_out))
        self.layers = nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation}"
        )
