"""The learning-rate schedule and the count of a run's optimizer steps."""

from typing import ClassVar

import pytest
import torch
from conftest import compose_config

from nalu.cli.train import train
from nalu.config.errors import ConfigError
from nalu.training.optimization import LinearDecay


def _decay(total_steps: int, **settings: float) -> LinearDecay:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    return LinearDecay(optimizer, total_steps, **settings)


@pytest.mark.parametrize(
    ("step", "factor"), [(0, 1.0), (5, 1.0), (6, 0.8), (8, 0.4), (10, 0.0), (12, 0.0)]
)
def test_linear_decay_holds_then_falls_to_zero_at_the_last_step(step, factor):
    # 10 steps, decay from 50%: the factor falls by 1/5 per step from step 5 on.
    assert _decay(10, start=0.5).lr_lambdas[0](step) == pytest.approx(factor)


def test_linear_decay_can_end_above_zero():
    assert _decay(10, start=0.0, end_factor=0.1).lr_lambdas[0](10) == pytest.approx(0.1)
    assert _decay(10, start=0.0, end_factor=0.1).lr_lambdas[0](5) == pytest.approx(0.55)


class RecordingAdam(torch.optim.Adam):
    """Adam that notes the learning rate of every step it takes."""

    learning_rates: ClassVar[list[float]] = []

    def step(self, closure=None):
        RecordingAdam.learning_rates.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("population", [None, 2])
def test_the_schedule_is_stepped_after_every_optimizer_step(population, tiny_overrides, tmp_path):
    overrides = [
        *tiny_overrides,
        "model=nau",
        "lr_schedule=linear_decay",
        "lr_schedule.start=0.5",
        f"optimizer._target_={__name__}.RecordingAdam",
    ]
    if population is not None:
        overrides.append(f"population={population}")
    RecordingAdam.learning_rates = []
    train(compose_config(overrides, tmp_path))
    # TINY: 2 epochs of 4 steps; 1e-3 until step 4, then down by a quarter per step.
    expected = [1e-3] * 5 + [7.5e-4, 5e-4, 2.5e-4]
    assert RecordingAdam.learning_rates == pytest.approx(expected)


def test_a_bad_schedule_names_the_field(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "lr_schedule=linear_decay", "lr_schedule.start=1.5"]
    with pytest.raises(
        ConfigError, match=r"^lr_schedule\.start=1\.5: must be a number in \[0, 1\)$"
    ):
        train(compose_config(overrides, tmp_path))
