"""The data module of a run: the sets of its S ≥ 1 members, stacked along a leading member
dimension."""

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from nalu.config import rules
from nalu.data.datamodule import (
    ProblemDataModule,
    TensorPairs,
    TrainingDataModule,
    trainer_device,
)


def stack_members(tensors: Sequence[Tensor]) -> Tensor:
    """``[S, ...]``; members that all hold one tensor (the same data seed) share its memory."""
    first = tensors[0]
    if all(t is first for t in tensors[1:]):
        return first.expand(len(tensors), *first.shape)
    return torch.stack(list(tensors))


class _StackedSplit(Dataset):
    """``[S, N, ...]`` sets; ``[b]`` indices give the same samples of every member as
    ``[S, b, ...]`` batches."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        index = index.to(self.inputs.device)
        return self.inputs[:, index], self.targets[:, index]


class PopulationDataModule(TrainingDataModule):
    """The data module of a run: the train, interpolation and extrapolation sets of its S ≥ 1
    members, each from its own ``ProblemDataModule`` (its own problem and data seeds), as
    ``[S, N, ...]`` tensors.

    Batches carry a leading member dimension: training ``(x, y)`` are ``[S, batch_size, in]``
    and ``[S, batch_size, out]``, member ``k``'s rows those of its own run
    (``nalu.data.batches``); evaluation batches are chunks of samples of every member,
    ``[S, chunk, in]``. A population of one is its member's single run: batches without the
    member dimension, as its ``ProblemDataModule`` gives them. With a trainer attached the sets
    live on its device and the batches are made there.
    """

    def __init__(self, members: Sequence[ProblemDataModule]) -> None:
        super().__init__()
        rules.integer_at_least(1)("population", len(members))
        self._members = list(members)
        self.inputs: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}

    @property
    def members(self) -> list[ProblemDataModule]:
        return self._members

    def setup(self, stage: str | None = None) -> None:
        if self.inputs:
            return
        sets: dict[str, list[tuple[Tensor, Tensor]]] = {}
        # One member's sets at a time, each kept only where it differs from the first member's:
        # a thousand members of one data seed hold one copy, never a thousand at once.
        for member in self._members:
            member.setup(stage)
            for split, dataset in member.datasets.items():
                pair = (dataset.inputs.cpu(), dataset.targets.cpu())
                if split in sets:
                    first = sets[split][0]
                    pair = tuple(
                        f if torch.equal(f, t) else t for f, t in zip(first, pair, strict=True)
                    )
                sets.setdefault(split, []).append(pair)
            member.datasets.clear()
        device = trainer_device(self.trainer)
        for split, pairs in sets.items():
            self.inputs[split] = stack_members([inputs for inputs, _ in pairs]).to(device)
            self.targets[split] = stack_members([targets for _, targets in pairs]).to(device)

    def training_set(self) -> tuple[Tensor, Tensor]:
        return self.inputs["train"], self.targets["train"]

    def evaluation_set(self, split: str) -> Dataset:
        inputs, targets = self.inputs[split], self.targets[split]
        if self.single_member:
            return TensorPairs(inputs[0], targets[0])
        return _StackedSplit(inputs, targets)
