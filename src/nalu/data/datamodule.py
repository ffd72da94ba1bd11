"""In-memory train / interpolation / extrapolation sets for an arithmetic problem."""

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nalu.config import rules
from nalu.config.value_range import value_intervals
from nalu.data.batches import (
    FixedBatches,
    FreshBatches,
    TrainingStream,
    fresh_key,
    order_key,
    training_loader,
)
from nalu.data.problem import (
    VALUES_AT_ONCE,
    ArithmeticProblem,
    MysteryArithmeticProblem,
    StaticArithmeticProblem,
    near_perfect_mses,
)

# The evaluation sets in the order of the validation and test dataloaders.
EVALUATION_SPLITS: tuple[str, ...] = rules.SPLITS[1:]


class TensorPairs(Dataset):
    """Inputs and targets held in memory; indexing with a tensor of indices returns a batch."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]


class ShardBatchSampler(Sampler[Tensor]):
    """Yields index tensors of ``batch_size`` over an evaluation set of ``num_samples``, in order
    (the last batch may be smaller). Under data parallelism each of ``num_replicas`` processes
    takes every ``num_replicas``-th sample from ``rank`` on, so each sample is counted once."""

    def __init__(
        self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank

    def __len__(self) -> int:
        shard = len(range(self.rank, self.num_samples, self.num_replicas))
        return -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        shard = torch.arange(self.num_samples)[self.rank :: self.num_replicas]
        yield from shard.split(self.batch_size)


def trainer_shard(trainer: "L.Trainer | None") -> tuple[int, int]:
    """``(num_replicas, rank)`` of this process: ``(1, 0)`` without a trainer."""
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def trainer_device(trainer: "L.Trainer | None") -> torch.device | None:
    """The device a trainer trains on, where the sets and batches are made (None: the CPU)."""
    return trainer.strategy.root_device if trainer is not None else None


class TrainingDataModule(L.LightningDataModule, ABC):
    """The data of S ≥ 1 members (``members``: each the ``ProblemDataModule`` of its own problem
    and seeds), with one way to batch it for every S.

    Training batches come from a ``TrainingStream`` of the members (``stream``, made once the
    sets are): ordinary ``(x, y)`` batches, or with ``chunk_steps`` above 1 ``Chunk``s of that
    many steps' batches, which a training module that takes several optimizer steps per call
    asks for (``ArithmeticModule`` does), as it asks for fresh batches made by a compiled kernel
    (``compile_batches``) when it compiles. The validation and test loaders evaluate the
    interpolation and extrapolation sets, in the order of ``EVALUATION_SPLITS``, in batches of
    ``eval_batch_size`` samples or of at most ``VALUES_AT_ONCE`` input values. Under
    data parallelism each process takes its share of the steps and of the evaluation samples.
    """

    def __init__(self) -> None:
        super().__init__()
        self.chunk_steps = 1
        self.compile_batches = False
        self._stream: TrainingStream | None = None

    @property
    @abstractmethod
    def members(self) -> "list[ProblemDataModule]":
        """Each member's own problem, ranges, seeds and batch sizes."""

    @property
    def single_member(self) -> bool:
        """Batches of a single member come without a member dimension ([B, in], not
        [1, B, in]): those of an ordinary run."""
        return len(self.members) == 1

    @abstractmethod
    def training_set(self) -> tuple[Tensor, Tensor]:
        """The fixed training sets, ``[S, N, in]`` inputs and ``[S, N, out]`` targets."""

    @abstractmethod
    def evaluation_set(self, split: str) -> Dataset:
        """The evaluation set ``split``, whose ``[b]`` indices give a batch of every member."""

    def training_stream(self) -> TrainingStream:
        """The members' training batches on this process: fresh batches fixed by each member's
        ``train_seed``, ``shuffle_seed``, the epoch and the step with ``resample``, else each
        member's training set in an order fixed by its ``shuffle_seed`` and the epoch."""
        members = self.members
        first = members[0]
        replicas, rank = trainer_shard(self.trainer)
        device = trainer_device(self.trainer)
        if first.resample:
            keys = torch.stack([fresh_key(m.seeds["train"], m.shuffle_seed) for m in members])
            return FreshBatches(
                [member.problem for member in members],
                [member.ranges["train"] for member in members],
                first.batch_size,
                keys.to(device),
                steps=-(-first.sizes["train"] // first.batch_size),
                num_replicas=replicas,
                rank=rank,
                compiled=self.compile_batches,
            )
        inputs, targets = self.training_set()
        keys = torch.stack([order_key(member.shuffle_seed) for member in members])
        return FixedBatches(
            inputs, targets, first.batch_size, keys.to(device), num_replicas=replicas, rank=rank
        )

    @property
    def stream(self) -> TrainingStream:
        """``training_stream()``, made on first use (after ``setup``, with the trainer's device
        and this process's share of the steps)."""
        if self._stream is None:
            self._stream = self.training_stream()
        return self._stream

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.stream, self.chunk_steps, single=self.single_member)

    def _evaluation_loaders(self) -> list[DataLoader]:
        # batch_size=None: the sampler already yields whole batches of indices, and the dataset
        # slices its tensors with them; no per-sample __getitem__ and no collate.
        replicas, rank = trainer_shard(self.trainer)
        first = self.members[0]
        loaders = []
        for split in EVALUATION_SPLITS:
            dataset = self.evaluation_set(split)
            size = first.sizes[split]
            values_per_sample = dataset.inputs.numel() // size
            batch = first.eval_batch_size or max(1, VALUES_AT_ONCE // values_per_sample)
            sampler = ShardBatchSampler(size, batch, replicas, rank)
            loaders.append(DataLoader(dataset, sampler=sampler, batch_size=None))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()


class ProblemDataModule(TrainingDataModule):
    """Train (shuffled batches), interpolation and extrapolation sets of one problem.

    The interpolation set is the validation loop; validation and test both evaluate the
    interpolation and extrapolation sets, in the order of ``EVALUATION_SPLITS``. Each set
    has its own seed, independent of the run's ``shuffle_seed``.

    ``resample=True`` replaces the fixed training set by a fresh batch from the training
    distribution at every step, as the papers train (Madsen & Johansen 2020; Mistry et al.
    2021); an epoch is then ``train_size`` samples' worth of steps, and the batches are fixed by
    ``train_seed``, ``shuffle_seed``, the epoch and the step (``nalu.data.batches``).

    Training batches are ``(x, y)``, ``[batch_size, in]`` and ``[batch_size, out]`` (this
    process's shard under data parallelism), or ``Chunk``s of them (``TrainingDataModule``).
    With a trainer attached the sets live on its device and the batches are made there.
    """

    def __init__(
        self,
        problem: ArithmeticProblem,
        train_size: int = 1000,
        interp_size: int = 1000,
        extrap_size: int = 1000,
        train_range: Sequence[float] = (-10.0, 10.0),
        interp_range: Sequence[float] = (-10.0, 10.0),
        extrap_range: Sequence[float] = (-50.0, 50.0),
        train_seed: int = 1,
        interp_seed: int = 2,
        extrap_seed: int = 3,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        shuffle_seed: int = 0,
        resample: bool = False,
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "ProblemDataModule",
            train_size=train_size,
            interp_size=interp_size,
            extrap_size=extrap_size,
            train_range=train_range,
            interp_range=interp_range,
            extrap_range=extrap_range,
            train_seed=train_seed,
            interp_seed=interp_seed,
            extrap_seed=extrap_seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            shuffle_seed=shuffle_seed,
            resample=resample,
        )
        self.problem = problem
        self.resample = resample
        # Per split, in rules.SPLITS's order: training, interpolation, extrapolation.
        self.sizes = dict(zip(rules.SPLITS, (train_size, interp_size, extrap_size), strict=True))
        ranges = (train_range, interp_range, extrap_range)
        self.ranges = {
            split: value_intervals(f"{split}_range", value_range)
            for split, value_range in zip(rules.SPLITS, ranges, strict=True)
        }
        self.seeds = dict(zip(rules.SPLITS, (train_seed, interp_seed, extrap_seed), strict=True))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_seed = shuffle_seed
        self.datasets: dict[str, TensorPairs] = {}
        # A denominator range that excludes every value fails here, not later in setup().
        for split, value_range in self.ranges.items():
            self.problem.sample_inputs(
                1, value_range, torch.Generator().manual_seed(self.seeds[split])
            )

    def success_threshold(self, split: str = "extrap") -> list[float]:
        """Per output, the MSE on ``split``'s range below which it counts as solved."""
        (threshold,) = success_thresholds([self], split)
        return threshold

    def setup(self, stage: str | None = None) -> None:
        """The fixed sets, on the trainer's device."""
        if self.datasets:
            return
        device = trainer_device(self.trainer)
        for split in self.sizes:
            if split == "train" and self.resample:
                continue  # drawn step by step
            generator = torch.Generator().manual_seed(int(self.seeds[split]))
            x = self.problem.sample_inputs(self.sizes[split], self.ranges[split], generator)
            self.datasets[split] = TensorPairs(x.to(device), self.problem.targets(x).to(device))

    @property
    def members(self) -> "list[ProblemDataModule]":
        return [self]

    def training_set(self) -> tuple[Tensor, Tensor]:
        train = self.datasets["train"]
        return train.inputs.unsqueeze(0), train.targets.unsqueeze(0)

    def evaluation_set(self, split: str) -> Dataset:
        return self.datasets[split]


def success_thresholds(
    modules: Sequence[ProblemDataModule], split: str = "extrap"
) -> list[list[float]]:
    """Each module's ``success_threshold(split)``, measured together: one draw of the
    threshold's sample serves every module with as many inputs (``near_perfect_mses``)."""
    mses = near_perfect_mses([m.problem for m in modules], [m.ranges[split] for m in modules])
    return [mse.float().tolist() for mse in mses]


class ArithmeticDataModule(ProblemDataModule):
    """The sets of a ``MysteryArithmeticProblem``; ``split_settings`` are ``ProblemDataModule``'s
    sizes, ranges, seeds and batch sizes."""

    def __init__(
        self,
        in_features: int = 100,
        out_features: int = 10,
        operations: Sequence[str] = ("add", "sub", "mul"),
        problem_seed: int = 0,
        min_abs_denominator: float = 0.1,
        **split_settings: Any,
    ) -> None:
        problem = MysteryArithmeticProblem(
            in_features=in_features,
            out_features=out_features,
            operations=operations,
            problem_seed=problem_seed,
            min_abs_denominator=min_abs_denominator,
        )
        super().__init__(problem, **split_settings)


class StaticArithmeticDataModule(ProblemDataModule):
    """The sets of a ``StaticArithmeticProblem``, by default on Madsen & Johansen's ranges
    (train and interpolation U[1, 2], extrapolation U[2, 6]) in their batches of 128.

    ``out_features``, when given, must equal the number of operations (one output each); it
    is accepted so that model configs can read ``${data.out_features}`` as for every problem.
    """

    def __init__(
        self,
        in_features: int = 100,
        out_features: int | None = None,
        operations: Sequence[str] = ("mul",),
        subset_ratio: float = 0.25,
        overlap_ratio: float = 0.5,
        problem_seed: int = 0,
        near_perfect: str = rules.MADSEN_JOHANSEN,
        train_range: Sequence[float] = (1.0, 2.0),
        interp_range: Sequence[float] = (1.0, 2.0),
        extrap_range: Sequence[float] = (2.0, 6.0),
        batch_size: int = 128,
        **split_settings: Any,
    ) -> None:
        problem = StaticArithmeticProblem(
            in_features=in_features,
            operations=operations,
            subset_ratio=subset_ratio,
            overlap_ratio=overlap_ratio,
            problem_seed=problem_seed,
            near_perfect=near_perfect,
        )
        rules.one_output_per_operation(out_features, problem.operations)
        super().__init__(
            problem,
            train_range=train_range,
            interp_range=interp_range,
            extrap_range=extrap_range,
            batch_size=batch_size,
            **split_settings,
        )
