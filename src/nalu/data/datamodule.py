"""In-memory train / interpolation / extrapolation sets for an arithmetic problem."""

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nalu import rules
from nalu.data.problem import ArithmeticProblem, MysteryArithmeticProblem, StaticArithmeticProblem
from nalu.errors import InvalidArgument
from nalu.value_range import Intervals, value_intervals

# The evaluation sets in the order of the validation and test dataloaders.
EVALUATION_SPLITS: tuple[str, ...] = ("interp", "extrap")


class TensorPairs(Dataset):
    """Inputs and targets held in memory; indexing with a tensor of indices returns a batch."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]


def epoch_order(num_samples: int, seed: int, epoch: int) -> Tensor:
    """The permutation of a training set that one (seed, epoch) always gets."""
    # torch seeds from the low 32 bits only; a prime stride keeps (seed, epoch) distinct.
    mixed = (seed * 1_000_003 + epoch) % 2**32
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(mixed))


class EpochBatchSampler(Sampler[Tensor]):
    """Yields index tensors of ``batch_size``: slices of a permutation fixed by (seed, epoch).

    Lightning calls ``set_epoch`` before every epoch, so a resumed run sees the same batches.
    The last batch may be smaller, as with ``DataLoader(drop_last=False)``.

    Under data parallelism each of ``num_replicas`` processes takes every ``num_replicas``-th
    index of the same permutation, from ``rank`` on, so the shards never overlap. With
    ``even_shards`` the permutation's last ``num_samples % num_replicas`` indices are left out,
    so that every process runs the same number of training steps (their gradients are averaged
    at each step); an evaluation set keeps every sample, each counted once.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        even_shards: bool = False,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.even_shards = even_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.even_shards:
            return self.num_samples // self.num_replicas
        return len(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        order = (
            epoch_order(self.num_samples, self.seed, self.epoch)
            if self.shuffle
            else torch.arange(self.num_samples)
        )
        shard = order[self.rank :: self.num_replicas][: self._shard_size()]
        yield from shard.split(self.batch_size)


def batch_seed(*parts: int) -> int:
    """A 32-bit seed that ``parts`` (seeds, epoch, step) fix, distinct for distinct ``parts``
    in practice: a hash, since simple arithmetic mixes collide across (seed, epoch, step)."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class ResampledBatches(Dataset):
    """Fresh training batches: item ``(epoch, step)`` is ``batch_size`` samples drawn from the
    training distribution with a generator that ``seeds``, the epoch and the step fix. A run's
    batches are reproducible, and a resumed run draws what the uninterrupted one would."""

    def __init__(
        self,
        problem: ArithmeticProblem,
        value_range: Intervals,
        batch_size: int,
        seeds: Sequence[int],
    ) -> None:
        self.problem = problem
        self.value_range = value_range
        self.batch_size = batch_size
        self.seeds = tuple(int(seed) for seed in seeds)

    def __getitem__(self, index: tuple[int, int]) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(batch_seed(*self.seeds, *index))
        x = self.problem.sample_inputs(self.batch_size, self.value_range, generator)
        return x, self.problem.targets(x)


class EpochStepSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, step)`` for each of an epoch's ``steps`` (this process's share under
    data parallelism: every ``num_replicas``-th step from ``rank`` on). Lightning calls
    ``set_epoch`` before every epoch."""

    def __init__(self, steps: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.steps = steps
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps // self.num_replicas

    def __iter__(self) -> Iterator[tuple[int, int]]:
        shares = range(self.rank, len(self) * self.num_replicas, self.num_replicas)
        yield from ((self.epoch, step) for step in shares)


def _check_positive(name: str, value: int) -> int:
    rules.integer_at_least(1)(name, value)
    return value


class ProblemDataModule(L.LightningDataModule):
    """Train (shuffled batches), interpolation and extrapolation sets of one problem.

    The interpolation set is the validation loop; validation and test both evaluate the
    interpolation and extrapolation sets, in the order of ``EVALUATION_SPLITS``. Each set
    has its own seed, independent of the run's ``shuffle_seed``.

    ``resample=True`` replaces the fixed training set by a fresh batch from the training
    distribution at every step, as the papers train (Madsen & Johansen 2020; Mistry et al.
    2021); an epoch is then ``train_size`` samples' worth of steps, and the batches are fixed by
    ``train_seed``, ``shuffle_seed``, the epoch and the step (``ResampledBatches``).
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
        self.problem = problem
        self.resample = bool(resample)
        self.sizes = {
            "train": _check_positive("train_size", train_size),
            "interp": _check_positive("interp_size", interp_size),
            "extrap": _check_positive("extrap_size", extrap_size),
        }
        self.ranges = {
            "train": value_intervals("train_range", train_range),
            "interp": value_intervals("interp_range", interp_range),
            "extrap": value_intervals("extrap_range", extrap_range),
        }
        self.seeds = {"train": train_seed, "interp": interp_seed, "extrap": extrap_seed}
        self.batch_size = _check_positive("batch_size", batch_size)
        self.eval_batch_size = (
            None if eval_batch_size is None else _check_positive("eval_batch_size", eval_batch_size)
        )
        self.shuffle_seed = shuffle_seed
        self.datasets: dict[str, TensorPairs] = {}
        # A denominator range that excludes every value fails here, not later in setup().
        for split, value_range in self.ranges.items():
            self.problem.sample_inputs(
                1, value_range, torch.Generator().manual_seed(self.seeds[split])
            )

    def success_threshold(self) -> list[float]:
        """Per output, the extrapolation MSE below which it counts as solved."""
        return self.problem.success_threshold(self.ranges["extrap"]).tolist()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in self.sizes:
            if split == "train" and self.resample:
                continue  # drawn step by step
            generator = torch.Generator().manual_seed(int(self.seeds[split]))
            x = self.problem.sample_inputs(self.sizes[split], self.ranges[split], generator)
            self.datasets[split] = TensorPairs(x, self.problem.targets(x))

    def _sampler(self, split: str, batch_size: int, shuffle: bool) -> EpochBatchSampler:
        # Each process of a distributed run reads its own shard (the trainer's config turns off
        # Lightning's DistributedSampler, which cannot split batches that are already formed).
        trainer = self.trainer
        return EpochBatchSampler(
            len(self.datasets[split]),
            batch_size,
            shuffle,
            seed=self.shuffle_seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            even_shards=split == "train",
        )

    def resampled_batches(self) -> ResampledBatches:
        """The fresh training batches of ``resample=True``, by ``(epoch, step)``."""
        seeds = (self.seeds["train"], self.shuffle_seed)
        return ResampledBatches(self.problem, self.ranges["train"], self.batch_size, seeds)

    def resampled_steps(self) -> EpochStepSampler:
        """The ``(epoch, step)`` of every training step of ``resample=True``."""
        trainer = self.trainer
        return EpochStepSampler(
            -(-self.sizes["train"] // self.batch_size),
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches ``(x, y)``, ``[batch_size, in]`` and ``[batch_size, out]``: slices of the
        training set in an order fixed by ``shuffle_seed`` and the epoch, or fresh samples with
        ``resample`` (this process's shard under data parallelism)."""
        if self.resample:
            return DataLoader(
                self.resampled_batches(), sampler=self.resampled_steps(), batch_size=None
            )
        return self._loader("train", self.batch_size, shuffle=True)

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        # batch_size=None: the sampler already yields whole batches of indices, and the dataset
        # slices its tensors with them; no per-sample __getitem__ and no collate.
        sampler = self._sampler(split, batch_size, shuffle)
        return DataLoader(self.datasets[split], sampler=sampler, batch_size=None)

    def _evaluation_loaders(self) -> list[DataLoader]:
        return [
            self._loader(split, self.eval_batch_size or self.sizes[split])
            for split in EVALUATION_SPLITS
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()


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
            operations=tuple(operations),
            problem_seed=problem_seed,
            min_abs_denominator=min_abs_denominator,
        )
        super().__init__(problem, **split_settings)


class StaticArithmeticDataModule(ProblemDataModule):
    """The sets of a ``StaticArithmeticProblem``, by default on Madsen & Johansen's ranges
    (train and interpolation U[1, 2], extrapolation U[2, 6]).

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
        train_range: Sequence[float] = (1.0, 2.0),
        interp_range: Sequence[float] = (1.0, 2.0),
        extrap_range: Sequence[float] = (2.0, 6.0),
        **split_settings: Any,
    ) -> None:
        problem = StaticArithmeticProblem(
            in_features=in_features,
            operations=tuple(operations),
            subset_ratio=subset_ratio,
            overlap_ratio=overlap_ratio,
            problem_seed=problem_seed,
        )
        if out_features is not None and out_features != problem.out_features:
            raise InvalidArgument(
                "out_features",
                out_features,
                f"must equal the number of operations ({problem.out_features})",
            )
        super().__init__(
            problem,
            train_range=train_range,
            interp_range=interp_range,
            extrap_range=extrap_range,
            **split_settings,
        )
