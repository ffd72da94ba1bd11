"""Metrics over the outputs of S ≥ 1 members, grouped by the operation each output computes.

Every member has its own problem, so its own operation per output; a view of a per-output
quantity (``[S, out]``) is a column per group: all outputs (suffix ``""``) and each operation
(suffix ``"_add"``, ...), as the metric names carry them (``mse``, ``mse_add``).
"""

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from nalu.results.record import (
    ALL_OUTPUTS,
    MSE,
    NORMALIZED_ERROR,
    OUTPUT_COUNT,
    RELATIVE_ERROR,
    SOLVED_FRACTION,
    operation_suffix,
)


def is_solved(mse: Tensor, threshold: Tensor) -> Tensor:
    """Whether each output is solved: its MSE strictly below its near-perfect model's (Madsen
    & Johansen 2020, sec. 4.1), the one rule for every set, member and judgement."""
    return mse < threshold


def operation_names(output_operations: Sequence[str]) -> list[str]:
    """The distinct operations in order of first appearance."""
    return sorted(set(output_operations), key=list(output_operations).index)


class OutputGroups:
    """Which outputs of each member form each group: all outputs, then each operation.

    ``membership`` is ``[S, out, 1 + K]`` bool for the K operations named in ``suffixes``;
    ``present`` ``[S, 1 + K]`` says which groups a member has (a member may lack an operation).
    """

    def __init__(self, output_operations: Sequence[Sequence[str]]) -> None:
        names = operation_names([name for member in output_operations for name in member])
        self.suffixes = [operation_suffix(ALL_OUTPUTS), *map(operation_suffix, names)]
        index = torch.tensor([[names.index(n) for n in member] for member in output_operations])
        by_operation = torch.nn.functional.one_hot(index, len(names)).bool()
        self.membership = torch.cat([torch.ones_like(by_operation[..., :1]), by_operation], -1)
        self.present = self.membership.any(dim=1)

    def to(self, device: torch.device) -> "OutputGroups":
        self.membership = self.membership.to(device)
        self.present = self.present.to(device)
        return self

    def counts(self) -> dict[str, Tensor]:
        """``{output_count<suffix>: [S]}``: each member's count of outputs in each group, NaN
        where a member lacks the group, like its other metrics of that group."""
        counts = torch.where(self.present, self.membership.sum(dim=1).float(), float("nan"))
        return self.named(OUTPUT_COUNT, counts)

    def named(self, measure: str, per_group: Tensor) -> dict[str, Tensor]:
        """``[S, 1 + K]`` -> ``{measure<suffix>: [S]}``: ``mse``, ``mse_add``, ..."""
        return {f"{measure}{s}": per_group[:, j] for j, s in enumerate(self.suffixes)}

    def mean(self, per_output: Tensor) -> Tensor:
        """``[S, out]`` -> ``[S, 1 + K]``: each group's mean (NaN where a member lacks it)."""
        inside = torch.where(self.membership, per_output.unsqueeze(-1), 0.0)
        return inside.sum(dim=1) / self.membership.sum(dim=1)

    def largest(self, per_output: Tensor) -> Tensor:
        """``[S, out]`` -> ``[S, 1 + K]``: each group's largest value (NaN where a member lacks
        the group)."""
        inside = torch.where(self.membership, per_output.unsqueeze(-1), -math.inf).amax(dim=1)
        return torch.where(self.present, inside, math.nan)

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
    target_mean_square: Tensor | None = None,
) -> dict[str, Tensor]:
    """``mse`` of every group from the ``[S, out]`` MSEs, as ``{name: [S]}``;
    ``normalized_error`` given the MSE at initialisation, ``solved_fraction`` given the
    per-output success thresholds, ``relative_error`` given the targets' mean squares.

    The normalised error is 100 · MSE / MSE at initialisation (Trask et al. 2018, Table 1), per
    group the ratio of the group's mean MSEs; it depends on how a unit starts, so it does not
    compare units. The relative error (this project's measure, no paper's) is 100 · MSE / the
    MSE of predicting 0 (the targets' mean square): the same yardstick for every unit, 100 for
    a network that answers 0. An output
    is solved when its MSE is below its threshold (Madsen & Johansen 2020, sec. 4.1).
    """
    mse = groups.mean(per_output_mse)
    columns = {MSE: mse}
    if initial_mse is not None:
        columns[NORMALIZED_ERROR] = 100 * mse / groups.mean(initial_mse)
    if target_mean_square is not None:
        columns[RELATIVE_ERROR] = 100 * mse / groups.mean(target_mean_square)
    if success_threshold is not None:
        solved = is_solved(per_output_mse, success_threshold).float()
        columns[SOLVED_FRACTION] = groups.mean(solved)
    return {
        name: value
        for measure, values in columns.items()
        for name, value in groups.named(measure, values).items()
    }


class MemberOutputMSE(Metric):
    """Mean squared error per member, candidate and output of one evaluation set: state
    ``[S, C, out]`` (C = 1 but for a network that offers candidates per output, see
    ``nalu.units.PerOutputSelection``).

    ``update`` takes ``[S, B, C, out]`` predictions and ``[S, B, out]`` targets (without the S
    dimension when S = 1). ``compute`` gives ``candidate_mse`` ``[S, C, out]`` and the targets'
    ``target_mean_square`` ``[S, out]``; ``summary`` turns the chosen candidates' ``[S, out]``
    MSEs into the named metrics ``{"mse": [S], "mse_add": [S], ...}``: an operation's error is
    the mean over the outputs that compute it, ``mse`` the mean over all outputs (equal weight
    each), with the normalised error once ``initial_mse`` (``[S, out]``, the MSE at
    initialisation) is set, the relative error, and with ``success_threshold`` (``[S, out]``)
    the solved fraction (see ``member_metrics``). ``initial_mse`` is a persistent buffer: it
    travels with the checkpoint.
    """

    full_state_update = False

    def __init__(
        self,
        output_operations: Sequence[Sequence[str]],
        success_threshold: Sequence[Sequence[float]] | None = None,
        candidates: int = 1,
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
            "sum_squared_error",
            torch.zeros(shape[0], candidates, shape[1], dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "sum_squared_target", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def _apply(self, fn: Callable[[Tensor], Tensor], *args, **kwargs) -> "MemberOutputMSE":
        super()._apply(fn, *args, **kwargs)
        self.groups.to(self.sum_squared_error.device)
        return self

    def update(self, preds: Tensor, target: Tensor) -> None:
        members, candidates, outputs = self.sum_squared_error.shape
        target = target.double().reshape(members, -1, 1, outputs)
        squared = (preds.double().reshape(members, -1, candidates, outputs) - target).square()
        self.sum_squared_error += squared.sum(dim=1)
        self.sum_squared_target += target.square().sum(dim=(1, 2))
        self.count += squared.shape[1]

    def compute(self) -> dict[str, Tensor]:
        # torchmetrics squeezes a one-element result to a scalar: ``measured`` reshapes back.
        return {
            "candidate_mse": (self.sum_squared_error / self.count).float(),
            "target_mean_square": (self.sum_squared_target / self.count).float(),
        }

    def measured(self) -> dict[str, Tensor]:
        """``compute()`` (summed over the processes of a distributed run) in its full shapes:
        ``candidate_mse`` ``[S, C, out]`` and ``target_mean_square`` ``[S, out]``."""
        values = self.compute()
        return {
            "candidate_mse": values["candidate_mse"].reshape(self.sum_squared_error.shape),
            "target_mean_square": values["target_mean_square"].reshape(
                self.sum_squared_target.shape
            ),
        }

    def summary(self, per_output_mse: Tensor, target_mean_square: Tensor) -> dict[str, Tensor]:
        """The named metrics ``{name: [S]}`` of the chosen candidates' ``[S, out]`` MSEs."""
        return member_metrics(
            self.groups,
            per_output_mse,
            None if self.initial_mse.isnan().any() else self.initial_mse,
            None if self.success_threshold.isnan().any() else self.success_threshold,
            target_mean_square,
        )
