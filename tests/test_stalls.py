"""The iNALU's restart rule (``stall_restart``): which members have stalled, by hand, and a
stalled member's parameters starting over from its seed for that restart."""

import pytest
import torch

from nalu.config.errors import InvalidArgument
from nalu.training.members import build_network
from nalu.training.module import ArithmeticModule
from nalu.training.stalls import StallRule

NAN = float("nan")
NAU = {"_target_": "nalu.units.NeuralAdditionUnit", "in_features": 3, "out_features": 1}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True}


def test_stalled_members_by_hand():
    history = torch.tensor(
        [
            # flat, falling, flat below 1, flat but 1 validation too few, diverged
            [5.0, 10.0, 0.5, 9.0, 5.0],
            [5.0, 8.0, 0.5, 5.0, NAN],
            [5.0, 4.0, 0.5, 5.0, 5.0],
            [5.0, 3.0, 0.5, 5.0, 5.0],
            [5.0, 2.0, 0.5, 5.0, 5.0],
        ]
    )
    since = torch.tensor([0, 0, 0, 1, 0])
    # Falling: first half (10, 8) has mean 9; second half (4, 3, 2) mean 3 and std √(2/3) ≈ 0.82:
    # 9 > 3.82, progress. Flat at 5: 5 <= 5 + 0, stalled above 1.
    assert StallRule(validations=5, loss_above=1.0)(history, since).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]


def test_noise_within_a_standard_deviation_is_a_stall():
    # First half (2.0, 2.2): mean 2.1; second (1.8, 2.0, 2.2): mean 2.0, std √(0.08/3) ≈ 0.163.
    history = torch.tensor([[2.0], [2.2], [1.8], [2.0], [2.2]])
    assert StallRule(validations=5)(history, torch.tensor([0])).tolist() == [True]
    assert StallRule(validations=6)(history, torch.tensor([0])).tolist() == [False]
    # A first half at 2.5 is above 2.163: the member is still learning.
    history[:2] = 2.5
    assert StallRule(validations=5)(history, torch.tensor([0])).tolist() == [False]


def test_a_stalled_member_starts_over_from_its_seed_for_that_restart():
    module = ArithmeticModule(
        NAU, ADAM, [["add"]], seeds=[7, 8], stall_restart={"validations": 2, "loss_above": 1.0}
    )
    before = module.network.weight.detach().clone()
    history = torch.tensor([[4.0, 9.0], [4.0, 3.0]])  # interpolation MSEs [validations, S]
    restarts = module.restarts
    restarts.restart_stalled(2000, history, module.alive)
    restarted = build_network(NAU, 7, draw=1).weight.detach()
    assert torch.equal(module.network.weight[0], restarted)
    assert not torch.equal(restarted, before[0])
    assert torch.equal(module.network.weight[1], before[1])  # 9 → 3: progress, kept
    assert restarts.stall_restarts.tolist() == [1, 0]
    # Judged again from the next validation on: one more flat validation is not yet two.
    assert restarts.stall_since.tolist() == [2, 0]
    history = torch.cat([history, torch.tensor([[4.0, 3.0]])])
    restarts.restart_stalled(3000, history, module.alive)
    assert restarts.stall_restarts.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"validations": 1}, "validations=1: must be an integer >= 2"),
        ({"loss_above": -1}, "loss_above=-1: must be a finite number >= 0"),
    ],
)
def test_a_bad_stall_rule_names_the_field(fields, message):
    with pytest.raises(InvalidArgument) as error:
        StallRule(**fields)
    assert str(error.value) == message


def test_a_single_run_restarts_as_its_member_would():
    module = ArithmeticModule(NAU, ADAM, [["add"]], seeds=[7], stall_restart={"validations": 2})
    module.restarts.restart_stalled(2000, torch.tensor([[4.0], [4.0]]), module.alive)
    assert torch.equal(module.network.weight, build_network(NAU, 7, draw=1).weight)
