import json
import operator

import pytest
import torch

from nalu.config import rules
from nalu.config.errors import InvalidArgument
from nalu.config.value_range import describe_intervals, value_intervals, without_band
from nalu.data import MysteryArithmeticProblem, StaticArithmeticProblem
from nalu.data.problem import (
    MISTRY_NEAR_PERFECT,
    NEAR_PERFECT_OUTPUTS,
    OPERATIONS,
    operation_codes,
)

PYTHON_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


@pytest.mark.parametrize("operation", ["add", "sub", "mul", "div"])
def test_targets_match_a_plain_python_loop(operation):
    problem = MysteryArithmeticProblem(8, 5, operations=(operation,), problem_seed=3)
    x = problem.sample_inputs(50, (-10, 10), torch.Generator().manual_seed(0), torch.float64)
    y = problem.targets(x)
    left, right = problem.left_index.tolist(), problem.right_index.tolist()
    for n, sample in enumerate(x.tolist()):
        for j in range(problem.out_features):
            expected = PYTHON_OPERATORS[operation](sample[left[j]], sample[right[j]])
            assert y[n, j].item() == pytest.approx(expected, rel=1e-12)


def test_mixed_operations_match_a_plain_python_loop():
    problem = MysteryArithmeticProblem(10, 40, operations=("add", "sub", "mul", "div"))
    assert set(problem.output_operations) == {"add", "sub", "mul", "div"}
    x = problem.sample_inputs(20, (-3, 3), torch.Generator().manual_seed(1), torch.float64)
    y = problem.targets(x)
    for j, (i, k, name) in enumerate(
        zip(problem.left_index, problem.right_index, problem.output_operations, strict=True)
    ):
        expected = [PYTHON_OPERATORS[name](row[i], row[k]) for row in x.tolist()]
        assert y[:, j].tolist() == pytest.approx(expected, rel=1e-12)


def test_each_output_uses_two_distinct_inputs_and_the_seed_fixes_the_problem():
    problem = MysteryArithmeticProblem(2, 50, problem_seed=7)
    assert (problem.left_index != problem.right_index).all()
    again = MysteryArithmeticProblem(2, 50, problem_seed=7)
    other = MysteryArithmeticProblem(2, 50, problem_seed=8)
    assert problem.formulas() == again.formulas()
    assert problem.formulas() != other.formulas()


def test_division_never_yields_inf_or_nan_and_keeps_denominators_off_zero():
    problem = MysteryArithmeticProblem(3, 30, operations=("div",), min_abs_denominator=0.5)
    x = problem.sample_inputs(20_000, (-1, 1), torch.Generator().manual_seed(0))
    assert torch.isfinite(problem.targets(x)).all()
    denominators = x[:, problem.denominator_mask]
    assert denominators.abs().min() >= 0.5
    # Still uniform on [-1, -0.5] ∪ [0.5, 1]: both halves equally likely, mean near zero.
    assert (denominators < 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    # Non-denominators keep the whole range.
    problem_with_free_input = MysteryArithmeticProblem(40, 2, operations=("div",))
    free = problem_with_free_input.sample_inputs(5000, (-1, 1), torch.Generator().manual_seed(0))
    assert free[:, ~problem_with_free_input.denominator_mask].abs().min() < 0.01


def test_denominator_range_on_one_side_of_zero():
    problem = MysteryArithmeticProblem(2, 4, operations=("div",), min_abs_denominator=1.0)
    x = problem.sample_inputs(1000, (0.5, 2.0), torch.Generator().manual_seed(0))
    denominators = x[:, problem.denominator_mask]
    assert denominators.min() >= 1.0 and denominators.max() <= 2.0


def test_impossible_denominator_range_is_a_clear_error():
    problem = MysteryArithmeticProblem(2, 4, operations=("div",), min_abs_denominator=5.0)
    with pytest.raises(InvalidArgument) as refused:
        problem.sample_inputs(10, (-1, 1), torch.Generator())
    assert str(refused.value) == (
        "min_abs_denominator=5.0: leaves no denominator value in value_range=[-1.0, 1.0]; it "
        "must be below the range's largest magnitude"
    )


def test_formulas_and_json_describe_the_problem():
    problem = MysteryArithmeticProblem(100, 3, operations=("mul",), problem_seed=0)
    left, right = problem.left_index[0].item(), problem.right_index[0].item()
    # Written as the heatmaps and read-back write it: a product's factors in input order.
    formula = f"y0 = x{min(left, right)} × x{max(left, right)}"
    assert problem.formulas()[0] == formula
    described = json.loads(json.dumps(problem.to_dict()))
    assert described["in_features"] == 100
    assert described["outputs"][0] == {
        "output": 0,
        "left": left,
        "right": right,
        "operation": "mul",
        "formula": formula,
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_features": 1, "out_features": 1}, "in_features"),
        ({"in_features": 3, "out_features": 0}, "out_features"),
        ({"in_features": 3, "out_features": 1, "operations": ("add", "pow")}, "operations"),
        ({"in_features": 3, "out_features": 1, "operations": ()}, "operations"),
        ({"in_features": 3, "out_features": 1, "min_abs_denominator": 0}, "min_abs_denominator"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InvalidArgument) as error:
        MysteryArithmeticProblem(**kwargs)
    assert error.value.name == field


def test_a_union_range_draws_uniformly_from_each_interval_by_its_length():
    problem = StaticArithmeticProblem(in_features=8)
    x = problem.sample_inputs(20_000, ((-6.0, -2.0), (2.0, 6.0)), torch.Generator().manual_seed(0))
    assert ((x.abs() >= 2) & (x.abs() <= 6)).all()
    assert (x < 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    # Lengths 1 and 3: a quarter of the mass on the first interval.
    y = problem.sample_inputs(20_000, ((0.0, 1.0), (5.0, 8.0)), torch.Generator().manual_seed(0))
    assert (y <= 1).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert ((y <= 1) | (y >= 5)).all()


def test_a_union_range_keeps_denominators_off_zero_too():
    problem = MysteryArithmeticProblem(6, 4, operations=("div",), min_abs_denominator=3.0)
    x = problem.sample_inputs(5_000, [[-6.0, -2.0], [2.0, 6.0]], torch.Generator().manual_seed(1))
    denominators = x[:, problem.denominator_mask]
    assert (denominators.abs() >= 3).all() and (x.abs() >= 2).all()


def test_value_ranges_are_checked_where_they_are_read():
    assert value_intervals("r", [1, 2]) == ((1.0, 2.0),)
    assert value_intervals("r", [[-6, -2], [2, 6]]) == ((-6.0, -2.0), (2.0, 6.0))
    rule = (
        "must be [low, high] with low < high, both finite, or a union [[low, high], ...] of "
        "such, in increasing order without overlap"
    )
    for bad, shown in (
        ([2, 1], "[2, 1]"),
        ([[2, 6], [-6, -2]], "[[2, 6], [-6, -2]]"),
        ([[-6, 2], [1, 6]], "[[-6, 2], [1, 6]]"),
        ([], "[]"),
        ("1,2", "'1,2'"),
        ([1, float("inf")], "[1, inf]"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            value_intervals("extrap_range", bad)
        assert str(refused.value) == f"extrap_range={shown}: {rule}"


def test_a_range_reads_as_the_papers_write_it():
    assert describe_intervals(value_intervals("r", [1, 2])) == "U[1, 2]"
    assert describe_intervals(value_intervals("r", [-1.2, -1.1])) == "U[-1.2, -1.1]"
    union = value_intervals("r", [[-6, -2], [2, 6]])
    assert describe_intervals(union) == "U[-6, -2] ∪ U[2, 6]"


def test_each_formula_reads_as_the_operation_writes_it_in_one_text_everywhere():
    problem = MysteryArithmeticProblem(50, 40, operations=("add", "sub", "mul", "div"))
    lefts, rights = problem.left_index.tolist(), problem.right_index.tolist()
    for j, (name, left, right) in enumerate(
        zip(problem.output_operations, lefts, rights, strict=True)
    ):
        low, high = sorted((left, right))
        expected = {
            "add": f"x{low} + x{high}",
            "sub": f"x{left} - x{right}",
            "mul": f"x{low} × x{high}",
            "div": f"x{left} ÷ x{right}",
        }[name]
        # The Text tab's problem/formulas and the heatmaps' truths (str of the exact formula).
        assert problem.formulas()[j] == f"y{j} = {expected}"
        assert str(problem.exact_formulas()[j]) == expected


def test_every_operation_the_config_accepts_is_defined_and_numbered_in_the_configs_order():
    # The config's rule names the operations (torch-free); their order numbers them for the
    # data's operation codes, and the mystery problem's are the first four.
    assert tuple(OPERATIONS) == rules.STATIC_OPERATIONS
    assert rules.STATIC_OPERATIONS[: len(rules.MYSTERY_OPERATIONS)] == rules.MYSTERY_OPERATIONS
    assert set(MISTRY_NEAR_PERFECT) == set(rules.MYSTERY_OPERATIONS)


def test_the_static_tasks_formulas_write_each_operation_on_the_two_sums():
    problem = StaticArithmeticProblem(
        in_features=8, operations=("add", "sub", "mul", "div", "square", "sqrt")
    )
    assert problem.formulas()[2:] == [
        "y0 = a + b",
        "y1 = a - b",
        "y2 = a × b",
        "y3 = a ÷ b",
        "y4 = a²",
        "y5 = √a",
    ]


def test_every_near_perfect_model_the_config_accepts_has_its_outputs():
    # The config's rule names the models (torch-free); the problem module computes them.
    assert set(NEAR_PERFECT_OUTPUTS) == set(rules.NEAR_PERFECT_MODELS)


@pytest.mark.parametrize(
    ("operation", "by_hand"),
    [
        ("add", 6.0),
        ("sub", -1.99996),
        ("mul", 8.0000399996),
        ("div", 0.5000075000375),
        ("square", 4.0000800004),
        ("sqrt", 1.41422063342),  # √2 · (1 + 5e-6)
    ],
)
def test_madsen_johansens_near_perfect_model_by_hand(operation, by_hand):
    # Madsen & Johansen 2020, sec. 4.1, with a = x0 and b = x1 at x = (2, 4), ε = 1e-5:
    # a' = (1 − ε)·2 + ε·4 = 2.00002, b' = (1 − ε)·4 + ε·2 = 3.99998.
    masks = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    codes = operation_codes([operation])
    x = torch.tensor([[2.0, 4.0]], dtype=torch.float64)
    near = NEAR_PERFECT_OUTPUTS["madsen_johansen"](x, masks, codes)
    assert near.item() == pytest.approx(by_hand, rel=1e-11)


@pytest.mark.parametrize(
    ("intervals", "half_width", "kept"),
    [
        (((-1.0, 1.0),), 0.5, ((-1.0, -0.5), (0.5, 1.0))),
        (((0.5, 2.0),), 1.0, ((1.0, 2.0),)),
        (((-6.0, -2.0), (2.0, 6.0)), 3.0, ((-6.0, -3.0), (3.0, 6.0))),
        (((-0.2, 0.2),), 0.5, ()),
    ],
)
def test_a_denominators_band_around_zero_is_cut_from_its_intervals(intervals, half_width, kept):
    assert without_band(intervals, half_width) == kept


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("add", 5.99994),  # a + b − ε(|a| + |b|) = 6 − 0.00006
        ("sub", -2.00006),  # a − b − ε(|a| + |b|) = −2 − 0.00006
        ("mul", 7.9998400008),  # (1 − ε)² ab = 0.9999800001 · 8
        ("div", 0.4999900001),  # (1 − ε) / (1 + ε) · a / b = 0.99999 / 1.00001 · 0.5
    ],
)
def test_mistrys_near_perfect_output_at_a_2_and_b_4(operation, expected):
    # Mistry et al. 2022, sec. 6.5: the output off by ε = 1e-5, at (a, b) = (2, 4).
    a, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    near = MISTRY_NEAR_PERFECT[operation](a, b, rules.SUCCESS_EPSILON)
    assert near.item() == pytest.approx(expected, rel=1e-12)
