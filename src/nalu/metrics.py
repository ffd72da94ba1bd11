"""Metrics over a network's outputs, grouped by the operation each output computes."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def operation_names(output_operations: Sequence[str]) -> list[str]:
    """The distinct operations in order of first appearance."""
    return sorted(set(output_operations), key=list(output_operations).index)


def group_by_operation(
    per_output: Tensor,
    output_operations: Sequence[str],
    reduce: Callable[[Tensor], Tensor] = torch.mean,
) -> dict[str, Tensor]:
    """``{"": overall, "_add": ..., ...}``: ``reduce`` over all outputs and over each operation's.

    The suffixes are the ones metric names carry (``mse``, ``mse_add``).
    """
    operation_index = torch.tensor(
        [operation_names(output_operations).index(n) for n in output_operations],
        device=per_output.device,
    )
    result = {"": reduce(per_output)}
    for k, name in enumerate(operation_names(output_operations)):
        result[f"_{name}"] = reduce(per_output[operation_index == k])
    return result


class OperationMSE(Metric):
    """Mean squared error overall and per operation: ``{"mse": ..., "mse_add": ..., ...}``.

    The error of each output is averaged over samples; an operation's error is the mean over
    the outputs that compute it, and ``mse`` the mean over all outputs (equal weight each).

    Once ``initial_mse`` (the per-output MSE of the network at initialisation) is set, it also
    gives the normalised error 100 · MSE / MSE at initialisation (Trask et al. 2018, Table 1;
    0 = perfect, 100 = no better than untrained), per operation as the ratio of the group's
    MSEs. With ``success_threshold`` (per output) it gives ``solved_fraction``, the share of
    outputs whose MSE is below their threshold (Madsen & Johansen 2020, sec. 4.1).
    ``initial_mse`` is a persistent buffer, so it travels with the checkpoint.
    """

    full_state_update = False

    def __init__(
        self,
        output_operations: Sequence[str],
        success_threshold: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.output_operations = list(output_operations)
        num_outputs = len(output_operations)
        self.register_buffer("initial_mse", torch.full((num_outputs,), float("nan")))
        threshold = torch.as_tensor(
            [float("nan")] * num_outputs if success_threshold is None else success_threshold,
            dtype=torch.float32,
        )
        self.register_buffer("success_threshold", threshold, persistent=False)
        self.add_state("sum_squared_error", torch.zeros(num_outputs), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.sum_squared_error += (preds - target).double().square().sum(dim=0).float()
        self.count += preds.shape[0]

    def per_output_mse(self) -> Tensor:
        return self.sum_squared_error / self.count

    def solved(self) -> Tensor:
        """``[out]`` bool: outputs whose MSE is below their success threshold."""
        return self.per_output_mse() < self.success_threshold

    def compute(self) -> dict[str, Tensor]:
        per_output = self.per_output_mse()
        mse = group_by_operation(per_output, self.output_operations)
        result = {f"mse{suffix}": value for suffix, value in mse.items()}
        if not self.initial_mse.isnan().any():
            initial = group_by_operation(self.initial_mse, self.output_operations)
            for suffix, value in mse.items():
                result[f"normalized_error{suffix}"] = 100 * value / initial[suffix]
        if not self.success_threshold.isnan().any():
            solved = group_by_operation(self.solved().float(), self.output_operations)
            result.update({f"solved_fraction{suffix}": v for suffix, v in solved.items()})
        return result
