"""Training batches as a pure function: the counter-based generator, value placement, targets,
and the streams and chunks that the data modules hand to Lightning."""

import pytest
import torch
from conftest import small_datamodule

from nalu.data import MysteryArithmeticProblem, StaticArithmeticProblem
from nalu.data import batches as batches_module
from nalu.data.batches import (
    FixedBatches,
    FreshBatches,
    epoch_orders,
    fresh_key,
    order_key,
    step_batches,
)
from nalu.data.counter_random import (
    Streams,
    as_int32,
    fold_key,
    mix32,
    root_key,
    stream_bits,
    stream_permutation,
)
from nalu.data.problem import ColumnRanges, operand_matrix, operation_codes, operation_targets

WORD = 0xFFFFFFFF


def splitmix32_mixer(x: int) -> int:
    """SplitMix32's output mixer on Python integers, the reference for ``mix32``'s int32 ops."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & WORD
    x ^= x >> 15
    x = (x * 0x735A2D97) & WORD
    return x ^ (x >> 15)


def unsigned(t: torch.Tensor) -> list[int]:
    return (t.to(torch.int64) & WORD).tolist()


def test_mix32_is_splitmix32s_mixer_on_every_kind_of_word():
    words = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    mixed = mix32(torch.tensor([as_int32(w) for w in words], dtype=torch.int32))
    assert unsigned(mixed) == [splitmix32_mixer(w) for w in words]


def test_mix32_gives_the_javascript_splitmix32s_outputs():
    # SplitMix32 seeded with 0 (bryc's JavaScript PRNGs) returns mix(k · 0x9e3779b9) for
    # k = 1, 2, ...: its first four outputs, from the JavaScript original run in Node.js.
    weyl = [as_int32(k * 0x9E3779B9) for k in range(1, 5)]
    mixed = mix32(torch.tensor(weyl, dtype=torch.int32))
    assert unsigned(mixed) == [0x64625032, 0xD9C0799C, 0xAF362E10, 0x7FA88912]


def test_a_stream_is_a_weyl_sequence_through_the_mixer():
    key = root_key(1, 2, 3)
    folded = 0
    for part in (1, 2, 3):
        folded = splitmix32_mixer(folded ^ part)
    assert unsigned(key.view(1)) == [folded]
    multiplier = splitmix32_mixer(folded ^ 0x2545F491) | 1
    offset = splitmix32_mixer(folded ^ 0x1B873593)
    expected = [splitmix32_mixer((i * multiplier + offset) & WORD) for i in range(6)]
    assert unsigned(stream_bits(key, 6)) == expected
    # A uniform is a word's top 24 bits over 2²⁴.
    uniform = Streams.of(key).uniform(6)
    assert uniform.tolist() == [(word >> 8) / 2**24 for word in expected]


def test_uniforms_are_uniform_and_streams_independent():
    u = Streams.of(torch.stack([root_key(s) for s in range(20)])).uniform(50_000)
    assert u.min() >= 0 and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=2e-3)
    assert u.var().item() == pytest.approx(1 / 12, abs=1e-3)
    counts = torch.histc(u, bins=10, min=0, max=1)
    assert (counts / u.numel() - 0.1).abs().max() < 2e-3
    neighbours = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))
    assert abs(neighbours[0, 1].item()) < 5e-3
    streams = torch.corrcoef(u)
    assert (streams - torch.eye(20)).abs().max() < 0.02


def test_a_streams_values_do_not_depend_on_its_neighbours():
    keys = torch.stack([fold_key(root_key(9), step) for step in range(4)])
    assert torch.equal(Streams.of(keys).uniform(100)[2], Streams.of(keys[2]).uniform(100))
    assert torch.equal(Streams.of(keys).uniform(300)[:, :100], Streams.of(keys).uniform(100))


def test_permutations_are_permutations_fixed_by_their_key():
    order = stream_permutation(root_key(4), 1000)
    assert sorted(order.tolist()) == list(range(1000))
    # The order that sorts the stream's words, which are distinct: any sort gives the same.
    words = stream_bits(torch.stack([root_key(k) for k in range(4)]), 2**18)
    assert all(row.unique().numel() == 2**18 for row in words)
    assert torch.equal(order, stream_bits(root_key(4), 1000).argsort(stable=True))
    assert torch.equal(order, stream_permutation(root_key(4), 1000))
    assert not torch.equal(order, stream_permutation(root_key(5), 1000))


def test_uniforms_are_placed_on_each_columns_intervals():
    columns = [((-6.0, -2.0), (2.0, 6.0)), ((-10.0, 10.0),), ((-10.0, -1.0), (1.0, 10.0))]
    table = ColumnRanges.of(columns)
    u = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0.75, 0.75, 0.75]])
    # Column 0: 8 long, so u = 0.25 is 2 into [-6, -2] and u = 0.75 is 2 into [2, 6]; column 2:
    # 18 long, u = 0.5 is 9 in, the start of [1, 10].
    expected = torch.tensor(
        [[-6.0, -10.0, -10.0], [-4.0, -5.0, -5.5], [2.0, 0.0, 1.0], [4.0, 5.0, 5.5]]
    )
    assert torch.equal(table.place(u), expected)
    stacked = ColumnRanges.stack([ColumnRanges.of(columns[1:2] * 3), table])
    assert stacked.starts.shape == (2, 3, 2)
    assert torch.equal(stacked.place(u[1])[1], expected[1])
    assert torch.equal(stacked.place(u[1])[0], torch.full((3,), -5.0))


def test_targets_apply_each_outputs_operation_to_its_operands():
    masks = torch.zeros(2, 6, 3)
    for j, (a, b) in enumerate([(0, 1), (1, 2), (2, 0), (1, 0), (0, 0), (2, 2)]):
        masks[0, j, a] = masks[1, j, b] = 1
    codes = operation_codes(["add", "div", "mul", "sub", "square", "sqrt"])
    x = torch.tensor([[2.0, 3.0, 4.0]])
    targets = operation_targets(x, operand_matrix(masks), codes)
    assert targets.tolist() == [[5.0, 0.75, 8.0, 1.0, 4.0, 2.0]]


def test_problems_targets_come_from_their_operand_masks():
    problem = MysteryArithmeticProblem(5, 4, ("add", "sub", "mul", "div"), 3, 0.5)
    x = problem.sample_inputs(100, (-10, 10), torch.Generator().manual_seed(0))
    left, right = x[:, problem.left_index], x[:, problem.right_index]
    by_hand = {"add": left + right, "sub": left - right, "mul": left * right, "div": left / right}
    columns = [by_hand[name][:, j] for j, name in enumerate(problem.output_operations)]
    assert torch.equal(problem.targets(x), torch.stack(columns, dim=1))
    static = StaticArithmeticProblem(8, ("add", "mul"), 0.5, 0.5, 1)
    a_mask, b_mask = static.subsets
    x = torch.rand(10, 8)
    a, b = (x * a_mask).sum(1), (x * b_mask).sum(1)
    torch.testing.assert_close(static.targets(x), torch.stack([a + b, a * b], dim=1))


def fresh_stream(seeds: list[int]) -> FreshBatches:
    problems = [MysteryArithmeticProblem(6, 4, ("add", "div"), s, 1.0) for s in seeds]
    keys = torch.stack([fresh_key(1, seed) for seed in seeds])
    return FreshBatches(problems, [((-10.0, 10.0),)] * len(seeds), 16, keys, steps=8)


def test_fresh_batches_are_a_function_of_seeds_epoch_and_step_alone():
    stream = fresh_stream([5, 6, 7])
    x, y = stream.batches(epoch=2, start=0, count=8)
    assert x.shape == (8, 3, 16, 6) and y.shape == (8, 3, 16, 4)
    # A resumed run draws step 5 of epoch 2 on its own; member 1 draws what its single run does.
    alone_x, alone_y = fresh_stream([6]).batches(epoch=2, start=5, count=1)
    assert torch.equal(alone_x[0, 0], x[5, 1]) and torch.equal(alone_y[0, 0], y[5, 1])
    assert not torch.equal(x[5, 1], x[4, 1]) and not torch.equal(x[5, 1], x[5, 0])
    problem = MysteryArithmeticProblem(6, 4, ("add", "div"), 6, 1.0)
    assert torch.equal(y[5, 1], problem.targets(x[5, 1]))
    denominators = x[..., problem.denominator_mask][:, 1]
    assert denominators.abs().min() >= 1.0


@pytest.mark.slow
def test_compiled_fresh_batches_are_the_eager_ones_bit_for_bit():
    # Every operation, denominators kept off (-1, 1), and members on ranges of one and of two
    # intervals: a compiled run draws exactly what an eager one (or its resumption) draws.
    operations = ("add", "sub", "mul", "div")
    problems = [MysteryArithmeticProblem(7, 6, operations, seed, 1.0) for seed in (3, 4)]
    ranges = [((-10.0, 10.0),), ((-6.0, -2.0), (2.0, 6.0))]
    keys = torch.stack([fresh_key(1, seed) for seed in (3, 4)])
    eager, compiled = (
        FreshBatches(problems, ranges, 32, keys, steps=5, compiled=flag) for flag in (False, True)
    )
    for start, count in [(0, 3), (3, 2)]:
        for made, expected in zip(
            compiled.batches(1, start, count), eager.batches(1, start, count), strict=True
        ):
            assert torch.equal(made, expected)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_input_batches_are_each_problems_own_bit_for_bit(compiled):
    # The NALM task's shape (a = one input, b = the other), whose batches take the narrow
    # table's and two columns' paths: each member's inputs lie on its own ranges and its
    # targets are its problem's own, every operation, on ranges of one and of two intervals.
    operations = ("add", "sub", "mul", "div")
    problems = [
        StaticArithmeticProblem(2, (name,), 0.5, 0.0, seed) for seed, name in enumerate(operations)
    ]
    ranges = [((-20.0, -10.0),), ((-6.0, -2.0), (2.0, 6.0)), ((0.1, 0.2),), ((1.0, 2.0),)]
    keys = torch.stack([fresh_key(1, seed) for seed in range(4)])
    stream = FreshBatches(problems, ranges, 128, keys, steps=3, compiled=compiled)
    x, y = stream.batches(epoch=0, start=0, count=3)
    assert x.shape == (3, 4, 128, 2) and y.shape == (3, 4, 128, 1)
    for k, (problem, intervals) in enumerate(zip(problems, ranges, strict=True)):
        inside = torch.zeros(x[:, k].shape, dtype=torch.bool)
        for low, high in intervals:
            inside |= (x[:, k] >= low) & (x[:, k] < high)
        assert inside.all()
        assert torch.equal(y[:, k].reshape(-1, 1), problem.targets(x[:, k].reshape(-1, 2)))
    alone_x, alone_y = FreshBatches(
        problems[1:2], ranges[1:2], 128, keys[1:2], steps=3, compiled=compiled
    ).batches(epoch=0, start=2, count=1)
    assert torch.equal(alone_x[0, 0], x[2, 1]) and torch.equal(alone_y[0, 0], y[2, 1])


@pytest.mark.parametrize("resample", [False, True])
@pytest.mark.parametrize(
    ("chunk_steps", "block_values", "lengths"), [(4, 2**30, [4]), (3, 1, [3, 1])]
)
def test_chunks_hold_the_ordinary_batches(
    resample, chunk_steps, block_values, lengths, monkeypatch
):
    ordinary = [(x, y) for x, y in small_datamodule(resample=resample).train_dataloader()]
    datamodule = small_datamodule(resample=resample)
    datamodule.chunk_steps = chunk_steps
    chunks = list(datamodule.train_dataloader())
    # 100 samples in batches of 32: three full batches, then (for the fixed set) one of 4, made
    # apart from the full ones whatever block of steps the generator's budget allows.
    assert [len(chunk) for chunk in chunks] == lengths
    monkeypatch.setattr(batches_module, "CHUNK_VALUES", block_values)
    chunked = [pair for chunk in chunks for pair in step_batches(chunk)]
    assert len(chunked) == len(ordinary) == 4
    for (x, y), (chunk_x, chunk_y) in zip(ordinary, chunked, strict=True):
        assert torch.equal(x, chunk_x) and torch.equal(y, chunk_y)


@pytest.mark.parametrize("shared_inputs", [True, False])
def test_a_steps_batch_by_index_is_its_batch_in_the_epoch(shared_inputs):
    # batch_at, which a captured CUDA graph replays with the step in a tensor, gathers what
    # batches gives: for each step, the last smaller one included, of members that share one
    # set of inputs and of members with their own.
    members, size = 3, 20
    inputs = torch.randn(size, 4).expand(members, size, 4)
    if not shared_inputs:
        inputs = torch.randn(members, size, 4)
    targets = torch.randn(members, size, 2)
    keys = torch.stack([order_key(seed) for seed in (5, 6, 7)])
    stream = FixedBatches(inputs, targets, 8, keys)
    for epoch in (0, 1):
        stream.use_epoch(epoch)
        for step in range(stream.steps_per_epoch):
            batch = stream.batch_size_at(step)
            at_x, at_y = stream.batch_at(torch.tensor([step]), batch)
            x, y = stream.batches(epoch, step, 1)
            assert at_x.shape == (members, batch, 4) and batch == (8 if step < 2 else 4)
            assert torch.equal(at_x, x[0]) and torch.equal(at_y, y[0])
            # Member k's rows are its own set's, in its own order.
            order = epoch_orders(keys[1], epoch, size)[step * 8 : step * 8 + batch]
            assert torch.equal(x[0, 1], inputs[1, order]) and torch.equal(
                y[0, 1], targets[1, order]
            )
