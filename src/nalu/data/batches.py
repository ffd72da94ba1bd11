"""Training batches of S ≥ 1 members, made on the device that trains them, a chunk of steps at a
time: every member's batch is a pure function of its seeds, the epoch and the step.

A stream yields ``[K, S, B, ...]`` tensors for K consecutive steps of this process: fresh samples
(``FreshBatches``) or slices of a fixed training set in an epoch's order (``FixedBatches``), both
drawn with the counter-based generator of ``nalu.data.counter_random``, so member ``k`` sees the
batches of the single run with its seeds whatever S is, and a resumed run sees those of the
uninterrupted one. ``training_loader`` turns a stream into what Lightning iterates: ordinary
``(x, y)`` batches, or ``Chunk``s of K steps for a training module that takes several optimizer
steps per call (``nalu.training.module.ArithmeticModule``).
"""

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nalu.config.value_range import Intervals
from nalu.data.counter_random import Streams, fold_key, root_key, stream_permutation
from nalu.data.problem import (
    ArithmeticProblem,
    ColumnRanges,
    operand_matrix,
    operation_codes,
    operation_results,
)

# What names each kind of stream, so that a fixed set's order and a fresh batch never share bits.
ORDER_STREAM = 1
FRESH_STREAM = 2
# Batches are made at most this many input values at a time (2 MiB of float32, over the steps
# and members): larger blocks leave the CPU's caches, and each value then costs several times.
CHUNK_VALUES = 2**19
# A member's column table of at most this many columns is held once per sample of a batch:
# compiled, a draw's loop then runs over the batch and the columns as one contiguous axis, where
# over a few columns alone most lanes of each vector sit idle (two steps of 900 members of 2
# columns: 0.44 against 2.3 ms; 400 of 8: 0.72 against 0.97; 100 of 32: the same).
PER_SAMPLE_COLUMNS = 8


def step_batches(item: Any) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(x, y)`` of each optimizer step in an item of a training loader: a ``Chunk``'s
    steps in order, or the one ordinary batch."""
    if isinstance(item, Chunk):
        yield from item
    else:
        x, y = item
        yield x, y


class TrainingStream(Protocol):
    """The training batches of S members on one process, step by step. The first
    ``full_steps`` of an epoch's ``steps_per_epoch`` have batches of the full size, the rest (a
    fixed set's last batch) smaller."""

    steps_per_epoch: int
    full_steps: int
    # Input values of one step over all members: how many steps' batches are made at once.
    values_per_step: int

    def batches(self, epoch: int, start: int, count: int) -> tuple[Tensor, Tensor]:
        """Steps ``start .. start + count - 1`` of ``epoch``, all of one batch size (on the
        same side of ``full_steps``): ``[count, S, B, in]`` inputs, ``[count, S, B, out]``
        targets."""
        ...

    def batch_size_at(self, step: int) -> int:
        """The batch size of step ``step`` of an epoch."""
        ...

    def use_epoch(self, epoch: int) -> None:
        """Make ``batch_at`` draw the batches of ``epoch``."""
        ...

    def batch_at(self, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """The batch of step ``index`` (an int64 ``[1]`` tensor on the stream's device) of the
        epoch of ``use_epoch``, of ``size`` samples (``batch_size_at`` that step): ``[S, size,
        in]`` inputs and ``[S, size, out]`` targets, the same as ``batches``'. Made from tables
        that stay at one address through the run (an epoch's are written over the last's), so
        that a captured CUDA graph makes the batch of whichever step its ``index`` holds."""
        ...


def epoch_orders(keys: Tensor, epoch: int, size: int) -> Tensor:
    """``[*keys.shape, size]``: the order of a training set of ``size`` samples in ``epoch``, for
    each member's order key (``order_key``)."""
    return stream_permutation(fold_key(keys, epoch), size)


def order_key(shuffle_seed: int, device: torch.device | str | None = None) -> Tensor:
    """The key of the batch order that ``shuffle_seed`` fixes."""
    return root_key(ORDER_STREAM, shuffle_seed, device=device)


def fresh_key(
    train_seed: int, shuffle_seed: int, device: torch.device | str | None = None
) -> Tensor:
    """The key of the fresh batches that ``train_seed`` and ``shuffle_seed`` fix."""
    return root_key(FRESH_STREAM, train_seed, shuffle_seed, device=device)


class MemberProblems:
    """S problems as tensors on one device: each member's inputs drawn from uniforms on its own
    columns' intervals (its problem's, in its own ``value_ranges[k]``) and its targets, for all
    members in one tensor expression. With ``batch_size``, a narrow table (at most
    ``PER_SAMPLE_COLUMNS`` columns) is held once per sample of a batch of that size."""

    def __init__(
        self,
        problems: Sequence[ArithmeticProblem],
        value_ranges: Sequence[Intervals],
        device: torch.device | str | None = None,
        batch_size: int = 1,
    ) -> None:
        self.in_features = problems[0].in_features
        tables = [
            ColumnRanges.of(problem.column_intervals(value_range))
            for problem, value_range in zip(problems, value_ranges, strict=True)
        ]
        stacked = ColumnRanges.stack(tables)
        # [S, samples, in, ...]: a batch axis between the members and the columns.
        samples = batch_size if self.in_features <= PER_SAMPLE_COLUMNS else 1

        def per_sample(table: Tensor) -> Tensor:
            spread = table.unsqueeze(1).expand(table.shape[0], samples, *table.shape[1:])
            return spread.contiguous().to(device)

        self.columns = ColumnRanges(
            per_sample(stacked.starts), per_sample(stacked.offsets), per_sample(stacked.totals)
        )
        masks = torch.stack([p.operand_masks() for p in problems])
        self.operands = operand_matrix(masks).contiguous().to(device)  # [S, in, 2 · out]
        codes = torch.stack([operation_codes(p.output_operations) for p in problems])
        self.present = sorted(set(codes.flatten().tolist()))
        self.codes = codes.unsqueeze(1).to(device)  # [S, 1, out]

    def inputs(self, uniforms: Tensor) -> Tensor:
        """``[..., S, B, in]`` uniforms on [0, 1) placed on each member's columns."""
        return self.columns.place(uniforms)

    def targets(self, x: Tensor) -> Tensor:
        """``[..., S, B, out]`` targets of ``[..., S, B, in]`` inputs."""
        if self.in_features <= 2 and torch.compiler.is_compiling():
            # Each operand sums at most two products of an input and a 0/1 mask, exact in any
            # order: as products and a sum, which compiled code fuses into the draw's loop, where
            # a batched matmul over two columns took most of the draw (900 members, two steps:
            # 5.2 against 0.7 ms); eagerly the sum is the slower (two steps: 21 against 5.2 ms).
            sums = (x.unsqueeze(-1) * self.operands.unsqueeze(-3)).sum(-2)
        else:
            sums = x @ self.operands
        return operation_results(sums, self.codes, self.present)


class FreshBatches:
    """A fresh batch at every step, as the papers train (Madsen & Johansen 2020; Mistry et al.
    2021): member ``k``'s batch of ``(epoch, step)`` is ``batch_size`` samples of its own
    ``value_ranges[k]`` from the stream that its ``keys[k]`` (``fresh_key``), the epoch and the
    step name.

    An epoch is ``steps`` steps; under data parallelism this process takes every
    ``num_replicas``-th of them from ``rank`` on (the same steps' batches, split among the
    processes).

    ``compiled``: the batches are made by one kernel that ``torch.compile`` fuses from the
    generator, the placing on the ranges and the targets (several times faster than their dozen
    separate operations, and the same numbers)."""

    def __init__(
        self,
        problems: Sequence[ArithmeticProblem],
        value_ranges: Sequence[Intervals],
        batch_size: int,
        keys: Tensor,
        steps: int,
        num_replicas: int = 1,
        rank: int = 0,
        compiled: bool = False,
    ) -> None:
        self.problems = MemberProblems(problems, value_ranges, keys.device, batch_size)
        self.keys = keys
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.steps_per_epoch = self.full_steps = steps // num_replicas
        self.values_per_step = len(keys) * batch_size * self.problems.in_features
        self._streams: tuple[int, Streams] | None = None
        # Compiled once for each block size that chunks are cut into (a few per run).
        self._draw = (
            torch.compile(self._draw_eagerly, dynamic=False) if compiled else self._draw_eagerly
        )

    def _epoch_streams(self, epoch: int) -> Streams:
        """``[steps, S]``: every member's stream of each of the epoch's steps this process
        takes, derived once per epoch into the same tensors (``batch_at``)."""
        if self._streams is None or self._streams[0] != epoch:
            local = torch.arange(self.steps_per_epoch, dtype=torch.int32, device=self.keys.device)
            steps = local * self.num_replicas + self.rank
            streams = Streams.of(fold_key(fold_key(self.keys, epoch), steps.unsqueeze(1)))
            if self._streams is not None:
                self._streams[1].multiplier.copy_(streams.multiplier)
                self._streams[1].offset.copy_(streams.offset)
                streams = self._streams[1]
            self._streams = (epoch, streams)
        return self._streams[1]

    def batches(self, epoch: int, start: int, count: int) -> tuple[Tensor, Tensor]:
        return self._draw(self._epoch_streams(epoch)[start : start + count])

    def batch_size_at(self, step: int) -> int:
        return self.batch_size

    def use_epoch(self, epoch: int) -> None:
        self._epoch_streams(epoch)

    def batch_at(self, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
        if self._streams is None:
            raise RuntimeError("batch_at before use_epoch")
        x, y = self._draw(self._streams[1][index])
        return x[0], y[0]

    def _draw_eagerly(self, streams: Streams) -> tuple[Tensor, Tensor]:
        """The inputs and targets of the ``[K, S]`` ``streams``."""
        shape = (*streams.multiplier.shape[:2], self.batch_size, self.problems.in_features)
        uniforms = streams.uniform(math.prod(shape[2:])).view(shape)
        x = self.problems.inputs(uniforms)
        return x, self.problems.targets(x)


class FixedBatches:
    """Batches of a fixed training set per member, ``inputs`` ``[S, N, in]`` and ``targets``
    ``[S, N, out]``, in an order per member and epoch (``epoch_orders`` of ``keys[k]``,
    ``order_key``). The last batch of an epoch may be smaller, as with
    ``DataLoader(drop_last=False)``.

    Under data parallelism each of ``num_replicas`` processes takes every ``num_replicas``-th
    sample of the epoch's order from ``rank`` on, the last ``N % num_replicas`` left out, so
    that every process takes as many steps (their gradients are averaged at each step).

    Inputs that all members share (an expanded ``[S, N, in]``, as ``stack_members`` makes for
    one data seed) are gathered from their one copy."""

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        keys: Tensor,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.batch_size = batch_size
        self.keys = keys
        self.num_replicas = num_replicas
        self.rank = rank
        self.size = inputs.shape[1]
        self.shard = self.size // num_replicas
        self.steps_per_epoch = -(-self.shard // batch_size)
        self.full_steps = self.shard // batch_size
        self.values_per_step = len(keys) * batch_size * inputs.shape[-1]
        # The sets as tables of rows: [S · N, d], or the one copy [N, d] of shared inputs.
        self._shared_inputs = inputs.stride(0) == 0
        self._input_values = (
            inputs[0] if self._shared_inputs else inputs.reshape(-1, inputs.shape[-1])
        )
        self._target_values = targets.reshape(-1, targets.shape[-1])
        self._order: tuple[int, Tensor] | None = None
        # The epoch's rows step-major, ``[steps, S, B]`` (full steps, then the last), for the
        # inputs and the targets: a step's batch is then one ``index_select`` of each.
        self._step_rows: list[tuple[Tensor, Tensor]] = []

    def use_epoch(self, epoch: int) -> None:
        """Make ``epoch``'s order current (once an epoch): ``[S, shard]``, this process's samples
        of each member as rows of the flattened sets (member ``k``'s sample ``i`` is row
        ``k · N + i``), kept at one address across epochs for ``batch_at``, and its step-major
        tables for ``batches``."""
        if self._order is not None and self._order[0] == epoch:
            return
        order = epoch_orders(self.keys, epoch, self.size)
        order = order[:, self.rank :: self.num_replicas][:, : self.shard]
        offsets = torch.arange(len(self.keys), device=order.device).unsqueeze(1) * self.size
        order = order + offsets
        if self._order is not None:  # the same tensor for every epoch (``batch_at``)
            order = self._order[1].copy_(order)
        self._order = (epoch, order)
        self._step_rows = self._step_major(order)

    def _step_major(self, order: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The inputs' and targets' rows of ``order`` as ``[steps, S, B]`` tables: the full
        steps', and the last smaller step's if there is one."""
        full = self.full_steps * self.batch_size
        tables = [order[:, :full].unflatten(1, (self.full_steps, self.batch_size))]
        if full < self.shard:
            tables.append(order[:, full:].unsqueeze(1))
        step_major = [table.transpose(0, 1).contiguous() for table in tables]
        return [(self._input_rows(rows), rows) for rows in step_major]

    def _input_rows(self, rows: Tensor) -> Tensor:
        """The rows of the inputs' table that flattened-set ``rows`` name (shared inputs: of
        their one copy of N rows)."""
        return rows % self.size if self._shared_inputs else rows

    def batches(self, epoch: int, start: int, count: int) -> tuple[Tensor, Tensor]:
        self.use_epoch(epoch)
        table, first = (0, start) if start < self.full_steps else (1, 0)
        input_rows, target_rows = (t[first : first + count] for t in self._step_rows[table])
        return self._gather(input_rows, target_rows)

    def _gather(self, input_rows: Tensor, target_rows: Tensor) -> tuple[Tensor, Tensor]:
        """The inputs and targets at ``input_rows`` and ``target_rows`` ``[..., B]``:
        ``[..., B, d]``."""
        x = self._input_values.index_select(0, input_rows.flatten())
        y = self._target_values.index_select(0, target_rows.flatten())
        return x.view(*input_rows.shape, -1), y.view(*target_rows.shape, -1)

    def batch_size_at(self, step: int) -> int:
        return min(self.batch_size, self.shard - step * self.batch_size)

    def batch_at(self, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
        if self._order is None:
            raise RuntimeError("batch_at before use_epoch")
        positions = index * self.batch_size + torch.arange(size, device=index.device)
        rows = self._order[1].index_select(1, positions)
        return self._gather(self._input_rows(rows), rows)


class Chunk:
    """``steps`` consecutive training steps of ``epoch`` from ``start`` on: iterating yields
    each step's ``(x, y)``, made when it is reached, a few steps' at a time (at most
    ``CHUNK_VALUES`` input values, which keeps the tensors of the generator in the CPU's caches,
    and never the full batches with a smaller last one).
    ``single``: batches ``[B, ...]`` of the stream's one member, not ``[1, B, ...]``.

    Neither a tensor nor a collection of tensors: Lightning hands it to the training step as it
    is (the batches are made on the stream's device)."""

    __slots__ = ("epoch", "single", "start", "steps", "stream")

    def __init__(
        self, stream: TrainingStream, epoch: int, start: int, steps: int, single: bool
    ) -> None:
        self.stream = stream
        self.epoch = epoch
        self.start = start
        self.steps = steps
        self.single = single

    def __len__(self) -> int:
        return self.steps

    def batch_at(self, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """The stream's ``batch_at``, laid out as iterating lays it out."""
        x, y = self.stream.batch_at(index, size)
        return (x[0], y[0]) if self.single else (x, y)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        block = max(1, CHUNK_VALUES // self.stream.values_per_step)
        first, end = self.start, self.start + self.steps
        while first < end:
            # A block never spans the last, smaller batch and the full ones before it.
            count = min(block, end - first)
            if first < self.stream.full_steps:
                count = min(count, self.stream.full_steps - first)
            x, y = self.stream.batches(self.epoch, first, count)
            first += count
            if self.single:
                x, y = x.squeeze(1), y.squeeze(1)
            yield from zip(x.unbind(), y.unbind(), strict=True)


class _StreamItems(Dataset):
    """Item ``(epoch, start, count)``: a ``Chunk``, or with ``chunked=False`` the one ordinary
    batch of step ``start``."""

    def __init__(self, stream: TrainingStream, chunked: bool, single: bool) -> None:
        self.stream = stream
        self.chunked = chunked
        self.single = single

    def __getitem__(self, index: tuple[int, int, int]) -> Any:
        chunk = Chunk(self.stream, *index, single=self.single)
        return chunk if self.chunked else next(iter(chunk))


class _ChunkSampler(Sampler[tuple[int, int, int]]):
    """Yields ``(epoch, first step, steps)`` of each chunk of an epoch; Lightning calls
    ``set_epoch`` before every epoch."""

    def __init__(self, plan: list[tuple[int, int]]) -> None:
        self.chunks = plan
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        yield from ((self.epoch, start, count) for start, count in self.chunks)


def training_loader(stream: TrainingStream, chunk_steps: int, single: bool) -> DataLoader:
    """What Lightning iterates over for ``stream``: ordinary ``(x, y)`` batches at
    ``chunk_steps=1``, else ``Chunk``s of up to ``chunk_steps`` steps. ``single``: batches
    ``[B, ...]`` of the stream's one member, not ``[1, B, ...]``."""
    steps = stream.steps_per_epoch
    plan = [(start, min(chunk_steps, steps - start)) for start in range(0, steps, chunk_steps)]
    items = _StreamItems(stream, chunked=chunk_steps > 1, single=single)
    return DataLoader(items, sampler=_ChunkSampler(plan), batch_size=None)
