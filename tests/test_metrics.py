import pytest
import torch

from nalu.metrics import OperationMSE


def test_mse_per_operation_matches_hand_computed_values():
    metric = OperationMSE(["add", "mul", "add"])
    target = torch.zeros(2, 3)
    # Squared errors per output over two batches: add0 = (1+9)/2 = 5, mul = (4+0)/2 = 2,
    # add2 = (0+16)/2 = 8; add = (5+8)/2 = 6.5, overall = (5+2+8)/3 = 5.
    metric.update(torch.tensor([[1.0, 2.0, 0.0]]), target[:1])
    metric.update(torch.tensor([[3.0, 0.0, 4.0]]), target[1:])
    result = metric.compute()
    assert set(result) == {"mse", "mse_add", "mse_mul"}
    assert result["mse"].item() == pytest.approx(5.0)
    assert result["mse_add"].item() == pytest.approx(6.5)
    assert result["mse_mul"].item() == pytest.approx(2.0)


def test_reset_starts_over():
    metric = OperationMSE(["sub"])
    metric.update(torch.ones(4, 1), torch.zeros(4, 1))
    metric.reset()
    metric.update(torch.full((2, 1), 3.0), torch.zeros(2, 1))
    assert metric.compute()["mse_sub"].item() == pytest.approx(9.0)
