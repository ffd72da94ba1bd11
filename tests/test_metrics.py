import math

import pytest
import torch
from conftest import named_metrics

from nalu.results.metrics import MemberOutputMSE, OutputGroups, member_metrics


def test_mse_per_operation_matches_hand_computed_values():
    metric = MemberOutputMSE([["add", "mul", "add"]])
    target = torch.zeros(2, 3)
    # Squared errors per output over two batches: add0 = (1+9)/2 = 5, mul = (4+0)/2 = 2,
    # add2 = (0+16)/2 = 8; add = (5+8)/2 = 6.5, overall = (5+2+8)/3 = 5.
    metric.update(torch.tensor([[1.0, 2.0, 0.0]]), target[:1])
    metric.update(torch.tensor([[3.0, 0.0, 4.0]]), target[1:])
    result = named_metrics(metric)
    assert {"mse", "mse_add", "mse_mul"} <= set(result)
    assert result["mse"].item() == pytest.approx(5.0)
    assert result["mse_add"].item() == pytest.approx(6.5)
    assert result["mse_mul"].item() == pytest.approx(2.0)


def test_each_member_is_grouped_by_its_own_operations():
    # Member 0: outputs (add, mul); member 1: (mul, mul). Squared errors 1, 4 and 9, 16.
    metric = MemberOutputMSE([["add", "mul"], ["mul", "mul"]])
    metric.update(torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]]), torch.zeros(2, 1, 2))
    result = named_metrics(metric)
    assert result["mse"].tolist() == pytest.approx([2.5, 12.5])
    assert result["mse_mul"].tolist() == pytest.approx([4.0, 12.5])
    assert result["mse_add"][0].item() == pytest.approx(1.0)
    assert math.isnan(result["mse_add"][1].item())  # member 1 has no addition
    assert OutputGroups([["add", "mul"], ["mul", "mul"]]).present.tolist() == [
        [True, True, True],
        [True, False, True],
    ]


def test_solved_at_step_of_a_group_is_its_last_outputs_first_step():
    groups = OutputGroups([["add", "mul", "add"]])
    steps = groups.last_step(torch.tensor([[40, -1, 120]]))
    # all: one output never solved; add: max(40, 120); mul: never.
    assert math.isnan(steps[0, 0]) and steps[0, 1] == 120 and math.isnan(steps[0, 2])


def test_an_output_is_solved_only_below_its_threshold():
    # Three + outputs and a ×, MSE against threshold: 0.5 < 1, 1.0 at 1 (not below), 0.25 < 0.5
    # and the ×'s 2 < 3. Solved: + 2 of 3, × 1 of 1, all 3 of 4 (Madsen & Johansen 2020, 4.1).
    groups = OutputGroups([["add", "add", "add", "mul"]])
    mse = torch.tensor([[0.5, 1.0, 0.25, 2.0]])
    threshold = torch.tensor([[1.0, 1.0, 0.5, 3.0]])
    metrics = member_metrics(groups, mse, success_threshold=threshold)
    assert metrics["solved_fraction_add"].tolist() == pytest.approx([2 / 3])
    assert metrics["solved_fraction_mul"].tolist() == [1.0]
    assert metrics["solved_fraction"].tolist() == [0.75]


def test_reset_starts_over():
    metric = MemberOutputMSE([["sub"]])
    metric.update(torch.ones(4, 1), torch.zeros(4, 1))
    metric.reset()
    metric.update(torch.full((2, 1), 3.0), torch.zeros(2, 1))
    assert named_metrics(metric)["mse_sub"].item() == pytest.approx(9.0)
