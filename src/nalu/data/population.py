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
    ResampledBatches,
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


class _StackedSplit(Dataset):
    """``[S, N, ...]`` sets. ``[b]`` indices give the same samples of every member, ``[S, b]``
    indices (a row per member) each member's own; both as ``[S, b, ...]`` batches."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        index = index.to(self.inputs.device)
        if index.dim() == 1:
            return self.inputs[:, index], self.targets[:, index]
        members = torch.arange(index.shape[0], device=index.device).unsqueeze(1)
        return self.inputs[members, index], self.targets[members, index]


class _StackedResampled(Dataset):
    """Every member's fresh batch of ``(epoch, step)``, stacked ``[S, B, ...]``: each member's
    is the one its single run draws."""

    def __init__(self, members: Sequence[ResampledBatches], device: torch.device | None) -> None:
        self.members = list(members)
        self.device = device

    def __getitem__(self, index: tuple[int, int]) -> tuple[Tensor, Tensor]:
        inputs, targets = zip(*(member[index] for member in self.members), strict=True)
        return torch.stack(inputs).to(self.device), torch.stack(targets).to(self.device)


class MemberBatchSampler(Sampler[Tensor]):
    """Yields ``[S, batch_size]`` sample indices: row ``k`` is the batch that
    ``EpochBatchSampler`` gives the single run with member ``k``'s shuffle seed, so each member
    sees the batches of its own run. Lightning calls ``set_epoch`` before every epoch."""

    def __init__(self, num_samples: int, batch_size: int, seeds: Sequence[int]) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seeds = list(seeds)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        orders = torch.stack([epoch_order(self.num_samples, s, self.epoch) for s in self.seeds])
        yield from orders.split(self.batch_size, dim=1)


class PopulationDataModule(L.LightningDataModule):
    """The train, interpolation and extrapolation sets of S members, each from its own
    ``ProblemDataModule`` (its own problem and data seeds), as ``[S, N, ...]`` tensors.

    Batches carry a leading member dimension: training ``(x, y)`` are ``[S, batch_size, in]``
    and ``[S, batch_size, out]``, each member's rows in its own run's order; evaluation batches
    are chunks of samples of every member, ``[S, chunk, in]``. With a trainer attached the sets
    live on its device, so batches are gathered where they are used.
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

    @property
    def _device(self) -> torch.device | None:
        """The trainer's device, where the sets live once a trainer is attached."""
        return self.trainer.strategy.root_device if self.trainer is not None else None

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
            self.inputs[split] = stack_members([inputs for inputs, _ in pairs]).to(self._device)
            self.targets[split] = stack_members([targets for _, targets in pairs]).to(self._device)

    def train_dataloader(self) -> DataLoader:
        first = self.members[0]
        if first.resample:
            members = [member.resampled_batches() for member in self.members]
            batches = _StackedResampled(members, self._device)
            return DataLoader(batches, sampler=first.resampled_steps(), batch_size=None)
        seeds = [member.shuffle_seed for member in self.members]
        sampler = MemberBatchSampler(self.sizes["train"], self.batch_size, seeds)
        dataset = _StackedSplit(self.inputs["train"], self.targets["train"])
        return DataLoader(dataset, sampler=sampler, batch_size=None)

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
