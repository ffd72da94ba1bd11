"""Metrics over the outputs of S ≥ 1 members, grouped by the operation each output computes.

Every member has its own problem, so its own operation per output; a view of a per-output
quantity (``[S, out]``) is a column per group: all outputs (suffix ``""``) and each operation
(suffix ``"_add"``, ...), as the metric names carry them (``mse``, ``mse_add``).
"""

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
    """``{"": overall, "_add": ..., ...}``: ``reduce`` over one member's ``[out]`` values, all
    outputs and each operation's."""
    operation_index = torch.tensor(
        [operation_names(output_operations).index(n) for n in output_operations],
        device=per_output.device,
    )
    result = {"": reduce(per_output)}
    for k, name in enumerate(operation_names(output_operations)):
        result[f"_{name}"] = reduce(per_output[operation_index == k])
    return result


class OutputGroups:
    """Which outputs of each member form each group: all outputs, then each operation.

    ``membership`` is ``[S, out, 1 + K]`` bool for the K operations named in ``suffixes``;
    ``present`` ``[S, 1 + K]`` says which groups a member has (a member may lack an operation).
    """

    def __init__(self, output_operations: Sequence[Sequence[str]]) -> None:
        names = operation_names([name for member in output_operations for name in member])
        self.suffixes = ["", *(f"_{name}" for name in names)]
        index = torch.tensor([[names.index(n) for n in member] for member in output_operations])
        by_operation = torch.nn.functional.one_hot(index, len(names)).bool()
        self.membership = torch.cat([torch.ones_like(by_operation[..., :1]), by_operation], -1)
        self.present = self.membership.any(dim=1)

    def to(self, device: torch.device) -> "OutputGroups":
        self.membership = self.membership.to(device)
        self.present = self.present.to(device)
        return self

    def mean(self, per_output: Tensor) -> Tensor:
        """``[S, out]`` -> ``[S, 1 + K]``: each group's mean (NaN where a member lacks it)."""
        inside = torch.where(self.membership, per_output.unsqueeze(-1), 0.0)
        return inside.sum(dim=1) / self.membership.sum(dim=1)

    def last_step(self, steps: Tensor) -> Tensor:
        """``[S, out]`` first steps (-1: never) -> ``[S, 1 + K]``: the step by which every output
        of the group was reached, NaN where one never was."""
        steps = steps.double().unsqueeze(-1)
        latest = torch.where(self.membership, steps, -1.0).amax(dim=1)
        all_reached = torch.where(self.membership, steps >= 0, True).all(dim=1)
        return torch.where(all_reached & self.present, latest, float("nan"))


def member_metrics(
    groups: OutputGroups,
    per_output_mse: Tensor,
    initial_mse: Tensor | None = None,
    success_threshold: Tensor | None = None,
) -> dict[str, Tensor]:
    """``mse`` of every group from the ``[S, out]`` MSEs, as ``{name: [S]}``;
    ``normalized_error`` given the MSE at initialisation, ``solved_fraction`` given the
    per-output success thresholds.

    The normalised error is 100 · MSE / MSE at initialisation (Trask et al. 2018, Table 1), per
    group the ratio of the group's mean MSEs; an output is solved when its MSE is below its
    threshold (Madsen & Johansen 2020, sec. 4.1).
    """
    mse = groups.mean(per_output_mse)
    columns = {"mse": mse}
    if initial_mse is not None:
        columns["normalized_error"] = 100 * mse / groups.mean(initial_mse)
    if success_threshold is not None:
        solved = (per_output_mse < success_threshold).float()
        columns["solved_fraction"] = groups.mean(solved)
    return {
        f"{name}{suffix}": values[:, j]
        for name, values in columns.items()
        for j, suffix in enumerate(groups.suffixes)
    }


class MemberOutputMSE(Metric):
    """Mean squared error per member and output of one evaluation set: state ``[S, out]``.

    ``update`` takes ``[S, B, out]`` predictions and targets (``[B, out]`` when S = 1).
    ``compute`` gives ``{"mse": [S], "mse_add": [S], ...}``: an operation's error is the mean over
    the outputs that compute it, ``mse`` the mean over all outputs (equal weight each). Once
    ``initial_mse`` (``[S, out]``, the MSE at initialisation) is set it adds the normalised
    error, and with ``success_threshold`` (``[S, out]``) the solved fraction (see
    ``member_metrics``). ``initial_mse`` is a persistent buffer: it travels with the checkpoint.
    """

    full_state_update = False

    def __init__(
        self,
        output_operations: Sequence[Sequence[str]],
        success_threshold: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.groups = OutputGroups(output_operations)
        shape = (len(output_operations), len(output_operations[0]))
        self.register_buffer("initial_mse", torch.full(shape, float("nan")))
        threshold = torch.full(shape, float("nan"))
        if success_threshold is not None:
            threshold = torch.as_tensor(success_threshold, dtype=torch.float32)
        self.register_buffer("success_threshold", threshold, persistent=False)
        # float64: a thousand samples of |error| ~ 1e4 lose no digits, in any chunking.
        self.add_state(
            "sum_squared_error", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def _apply(self, fn: Callable[[Tensor], Tensor], *args, **kwargs) -> "MemberOutputMSE":
        super()._apply(fn, *args, **kwargs)
        self.groups.to(self.sum_squared_error.device)
        return self

    def update(self, preds: Tensor, target: Tensor) -> None:
        members, outputs = self.sum_squared_error.shape
        squared = (preds - target).double().square().reshape(members, -1, outputs)
        self.sum_squared_error += squared.sum(dim=1)
        self.count += squared.shape[1]

    def per_output_mse(self) -> Tensor:
        """``[S, out]``."""
        return (self.sum_squared_error / self.count).float()

    def solved(self) -> Tensor:
        """``[S, out]`` bool: outputs whose MSE is below their success threshold."""
        return self.per_output_mse() < self.success_threshold

    def compute(self) -> dict[str, Tensor]:
        return member_metrics(
            self.groups,
            self.per_output_mse(),
            None if self.initial_mse.isnan().any() else self.initial_mse,
            None if self.success_threshold.isnan().any() else self.success_threshold,
        )
