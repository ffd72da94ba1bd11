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


def solved_at_step_metrics(
    solved_at_step: Tensor, output_operations: Sequence[str]
) -> dict[str, float]:
    """``solved_at_step{suffix}``: overall and per operation, the step by which every output of
    the group was solved (from the ``[out]`` first steps, -1 for never); absent if one never was.
    """
    steps = group_by_operation(
        solved_at_step.double(),
        output_operations,
        reduce=lambda s: s.max() if (s >= 0).all() else s.new_tensor(float("nan")),
    )
    return {f"solved_at_step{k}": float(v) for k, v in steps.items() if not v.isnan()}


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
        return operation_metrics(
            self.per_output_mse(),
            self.output_operations,
            None if self.initial_mse.isnan().any() else self.initial_mse,
            None if self.success_threshold.isnan().any() else self.success_threshold,
        )


def operation_metrics(
    per_output_mse: Tensor,
    output_operations: Sequence[str],
    initial_mse: Tensor | None = None,
    success_threshold: Tensor | None = None,
) -> dict[str, Tensor]:
    """``mse`` overall and per operation from the ``[out]`` MSEs; ``normalized_error`` given the
    MSE at initialisation, ``solved_fraction`` given the per-output success thresholds.

    The normalised error is 100 · MSE / MSE at initialisation (Trask et al. 2018, Table 1), per
    operation as the ratio of the group's MSEs; an output is solved when its MSE is below its
    threshold (Madsen & Johansen 2020, sec. 4.1).
    """
    mse = group_by_operation(per_output_mse, output_operations)
    result = {f"mse{suffix}": value for suffix, value in mse.items()}
    if initial_mse is not None:
        initial = group_by_operation(initial_mse, output_operations)
        for suffix, value in mse.items():
            result[f"normalized_error{suffix}"] = 100 * value / initial[suffix]
    if success_threshold is not None:
        solved = group_by_operation((per_output_mse < success_threshold).float(), output_operations)
        result.update({f"solved_fraction{suffix}": v for suffix, v in solved.items()})
    return result
