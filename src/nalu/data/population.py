"""The sets of S population members, stacked along a leading member dimension."""

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nalu.config import rules
from nalu.data.batches import (
    FixedBatches,
    FreshBatches,
    TrainingStream,
    fresh_key,
    order_key,
)
from nalu.data.datamodule import (
    EVALUATION_SPLITS,
    ProblemDataModule,
    ShardBatchSampler,
    TrainingDataModule,
    trainer_device,
)

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
    """``[S, N, ...]`` sets; ``[b]`` indices give the same samples of every member as
    ``[S, b, ...]`` batches."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        index = index.to(self.inputs.device)
        return self.inputs[:, index], self.targets[:, index]


class PopulationDataModule(TrainingDataModule):
    """The train, interpolation and extrapolation sets of S members, each from its own
    ``ProblemDataModule`` (its own problem and data seeds), as ``[S, N, ...]`` tensors.

    Batches carry a leading member dimension: training ``(x, y)`` are ``[S, batch_size, in]``
    and ``[S, batch_size, out]``, member ``k``'s rows those of its own run
    (``nalu.data.batches``); evaluation batches are chunks of samples of every member,
    ``[S, chunk, in]``. With a trainer attached the sets live on its device and the batches are
    made there.
    """

    single_member = False

    def __init__(self, members: Sequence[ProblemDataModule]) -> None:
        super().__init__()
        rules.integer_at_least(1)("population", len(members))
        self.members = list(members)
        first = self.members[0]
        self.batch_size = first.batch_size
        self.sizes = first.sizes
        self.eval_batch_size = first.eval_batch_size
        self.inputs: dict[str, Tensor] = {}
        self.targets: dict[str, Tensor] = {}

    @property
    def population(self) -> int:
        return len(self.members)

    def setup(self, stage: str | None = None) -> None:
        if self.inputs:
            return
        sets: dict[str, list[tuple[Tensor, Tensor]]] = {}
        # One member's sets at a time, each kept only where it differs from the first member's:
        # a thousand members of one data seed hold one copy, never a thousand at once.
        for member in self.members:
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

    def training_stream(self) -> TrainingStream:
        """Every member's training batches (``ProblemDataModule.training_stream``), stacked."""
        first = self.members[0]
        device = trainer_device(self.trainer)
        if first.resample:
            keys = [fresh_key(m.seeds["train"], m.shuffle_seed) for m in self.members]
            return FreshBatches(
                [member.problem for member in self.members],
                [member.ranges["train"] for member in self.members],
                self.batch_size,
                torch.stack(keys).to(device),
                steps=-(-self.sizes["train"] // self.batch_size),
                compiled=self.compile_batches,
            )
        keys = torch.stack([order_key(member.shuffle_seed) for member in self.members])
        return FixedBatches(
            self.inputs["train"], self.targets["train"], self.batch_size, keys.to(device)
        )

    def _evaluation_loaders(self) -> list[DataLoader]:
        loaders = []
        for split in EVALUATION_SPLITS:
            inputs = self.inputs[split]
            per_sample = self.population * inputs.shape[-1]
            chunk = self.eval_batch_size or max(1, EVALUATION_CHUNK_VALUES // per_sample)
            sampler = ShardBatchSampler(self.sizes[split], chunk)
            dataset = _StackedSplit(inputs, self.targets[split])
            loaders.append(DataLoader(dataset, sampler=sampler, batch_size=None))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()
