"""The sets of S population members, stacked along a leading member dimension."""

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nalu.data.datamodule import (
    EVALUATION_SPLITS,
    EpochBatchSampler,
    ProblemDataModule,
    epoch_order,
)
from nalu.errors import InvalidArgument

# An evaluation chunk holds at most this many input values over all members (64 MiB of float32),
# so that S = 1000 members evaluate without a [S, 1000, in] activation of each layer at once.
EVALUATION_CHUNK_VALUES = 2**24


def stack_members(tensors: Sequence[Tensor]) -> Tensor:
    """``[S, ...]``; members that all hold one tensor (the same data seed) share its memory."""
    first = tensors[0]
    if all(t is first for t in tensors[1:]):
        return first.expand(len(tensors), *first.shape)
    return torch.stack(list(tensors))


class _Identity(Dataset):
    """Returns the index it is given: the samplers below yield whole batches of indices."""

    def __getitem__(self, index: Tensor) -> Tensor:
        return index


class _StackedSplit(Dataset):
    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[:, index], self.targets[:, index]


class EpochOrders(Sampler[Tensor]):
    """Yields, once per epoch, ``[S, N]``: each member's permutation of its training set.

    Row ``k`` is what ``EpochBatchSampler`` orders for a single run with member ``k``'s shuffle
    seed, so each member sees the batches its own run would.
    """

    def __init__(self, num_samples: int, seeds: Sequence[int]) -> None:
        self.num_samples = num_samples
        self.seeds = list(seeds)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Tensor]:
        yield torch.stack([epoch_order(self.num_samples, s, self.epoch) for s in self.seeds])


class PopulationDataModule(L.LightningDataModule):
    """The train, interpolation and extrapolation sets of S members, each from its own
    ``ProblemDataModule`` (its own problem and data seeds), as ``[S, N, ...]`` tensors.

    Training: one loader item per epoch, the members' sample orders ``[S, N]``; the module
    splits it into steps of ``batch_size`` and gathers each with ``train_batch``. Evaluation:
    chunks of samples of every member, ``[S, chunk, in]``.
    """

    def __init__(self, members: Sequence[ProblemDataModule]) -> None:
        super().__init__()
        if not members:
            raise InvalidArgument("population", 0, "must be a positive integer")
        self.members = list(members)
        self.problems = [member.problem for member in self.members]
        first = self.members[0]
        self.batch_size = first.batch_size
        self.sizes = first.sizes
        self.eval_batch_size = first.eval_batch_size
        self.inputs: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}

    @property
    def population(self) -> int:
        return len(self.members)

    def success_threshold(self) -> list[list[float]]:
        return [member.success_threshold() for member in self.members]

    def setup(self, stage: str | None = None) -> None:
        if self.inputs:
            return
        sets: dict[str, list[tuple[Tensor, Tensor]]] = {}
        # One member's sets at a time, each kept only where it differs from the first member's:
        # a thousand members of one data seed hold one copy, never a thousand at once.
        for member in self.members:
            member.setup(stage)
            for split, dataset in member.datasets.items():
                pair = (dataset.inputs, dataset.targets)
                if split in sets:
                    first = sets[split][0]
                    pair = tuple(
                        f if torch.equal(f, t) else t for f, t in zip(first, pair, strict=True)
                    )
                sets.setdefault(split, []).append(pair)
            member.datasets.clear()
        for split, pairs in sets.items():
            self.inputs[split] = stack_members([inputs for inputs, _ in pairs])
            self.targets[split] = stack_members([targets for _, targets in pairs])

    def to(self, device: torch.device) -> None:
        """Move the training set to ``device``, where the module gathers its batches."""
        self.inputs["train"] = self.inputs["train"].to(device)
        self.targets["train"] = self.targets["train"].to(device)

    def steps_per_epoch(self) -> int:
        return len(EpochBatchSampler(self.sizes["train"], self.batch_size, shuffle=True))

    def train_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """``indices`` ``[S, b]`` (one row per member) -> inputs ``[S, b, in]``, targets."""
        members = torch.arange(indices.shape[0], device=indices.device).unsqueeze(1)
        return self.inputs["train"][members, indices], self.targets["train"][members, indices]

    def train_dataloader(self) -> DataLoader:
        seeds = [member.shuffle_seed for member in self.members]
        sampler = EpochOrders(self.sizes["train"], seeds)
        return DataLoader(_Identity(), sampler=sampler, batch_size=None)

    def _evaluation_loaders(self) -> list[DataLoader]:
        loaders = []
        for split in EVALUATION_SPLITS:
            inputs = self.inputs[split]
            per_sample = self.population * inputs.shape[-1]
            chunk = self.eval_batch_size or max(1, EVALUATION_CHUNK_VALUES // per_sample)
            sampler = EpochBatchSampler(self.sizes[split], chunk, shuffle=False)
            dataset = _StackedSplit(inputs, self.targets[split])
            loaders.append(DataLoader(dataset, sampler=sampler, batch_size=None))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()
