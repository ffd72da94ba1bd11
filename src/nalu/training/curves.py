"""Each member's curves, for its own TensorBoard run: ``[S]`` values per optimizer step, kept on
the host while training and carried by every checkpoint, so that a resumed run's curves are
whole."""

from collections.abc import ItemsView

import torch
from torch import Tensor

from nalu.results.record import MEMBER_CURVES, is_member_curve


class MemberCurves:
    """``{tag: [(step, values [S])]}`` for the tags a member's own run shows: a population's
    members', or every curve of a single run (which a resume into a new folder writes there)."""

    def __init__(self, population: int) -> None:
        self.population = population
        self.points: dict[str, list[tuple[int, Tensor]]] = {tag: [] for tag in MEMBER_CURVES}

    def add(self, step: int, per_member: dict[str, Tensor]) -> None:
        """The values ``{tag: [S]}`` measured at optimizer ``step``, of the tags kept."""
        for tag, values in per_member.items():
            if is_member_curve(tag) or self.population == 1:
                self.points.setdefault(tag, []).append((step, values.detach().cpu()))

    def history(self, tag: str) -> Tensor:
        """``[points, S]``: every value of the curve ``tag`` so far."""
        return torch.stack([values for _, values in self.points[tag]])

    def items(self) -> ItemsView[str, list[tuple[int, Tensor]]]:
        return self.points.items()

    def state(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each curve as two tensors, steps ``[n]`` and values ``[n, S]``: one tensor per
        point would make every epoch's checkpoint slower to write than the epoch."""
        return {
            tag: (
                torch.tensor([step for step, _ in points], dtype=torch.long),
                torch.stack([values for _, values in points])
                if points
                else torch.empty(0, self.population),
            )
            for tag, points in self.points.items()
        }

    def load(self, state: dict[str, tuple[Tensor, Tensor]]) -> None:
        """The curves of a checkpoint (``state``)."""
        self.points = {
            tag: list(zip(steps.tolist(), values.unbind(), strict=True))
            for tag, (steps, values) in state.items()
        }
