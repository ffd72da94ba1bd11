"""Metrics over a network's outputs, grouped by the operation each output computes."""

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


class OperationMSE(Metric):
    """Mean squared error overall and per operation: ``{"mse": ..., "mse_add": ..., ...}``.

    The error of each output is averaged over samples; an operation's error is the mean over
    the outputs that compute it, and ``mse`` the mean over all outputs (equal weight each).
    """

    full_state_update = False

    def __init__(self, output_operations: Sequence[str]) -> None:
        super().__init__()
        self.operation_names = sorted(set(output_operations), key=list(output_operations).index)
        operation_index = torch.tensor([self.operation_names.index(n) for n in output_operations])
        self.register_buffer("operation_index", operation_index, persistent=False)
        num_outputs = len(output_operations)
        self.add_state("sum_squared_error", torch.zeros(num_outputs), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.sum_squared_error += (preds - target).double().square().sum(dim=0).float()
        self.count += preds.shape[0]

    def compute(self) -> dict[str, Tensor]:
        per_output = self.sum_squared_error / self.count
        result = {"mse": per_output.mean()}
        for k, name in enumerate(self.operation_names):
            result[f"mse_{name}"] = per_output[self.operation_index == k].mean()
        return result
