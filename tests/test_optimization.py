"""The learning-rate schedule and the count of a run's optimizer steps."""

import functools
from typing import ClassVar

import pytest
import torch
from conftest import compose_config
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nalu.cli.train import train
from nalu.config.errors import ConfigError
from nalu.training.optimization import (
    LinearDecay,
    adam_update,
    compile_whole_step,
    hands_gradients_over,
    step_gradients,
    steps_directly,
    traceable_adam,
    zero_grad,
)


def _decay(total_steps: int, **settings: float) -> LinearDecay:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    return LinearDecay(optimizer, total_steps, **settings)


@pytest.mark.parametrize(
    ("step", "factor"), [(0, 1.0), (5, 1.0), (6, 0.8), (8, 0.4), (10, 0.0), (12, 0.0)]
)
def test_linear_decay_holds_then_falls_to_zero_where_the_run_ends(step, factor):
    # 10 steps (0-9), decay from 50%: the factor falls by 1/5 a step from step 5, to 0 at 10.
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


def test_adam_update_takes_adams_step_as_computed_by_hand():
    # Kingma & Ba 2015, Algorithm 1, β = (0.9, 0.999), ε = 1e-8, lr 0.1. The first step (torch's
    # Adam, which makes the state) with gradient 0.5 from p = 1: m̂ = 0.5, v̂ = 0.25, so
    # p = 1 − 0.1 · 0.5 / (0.5 + 1e-8) = 0.900000002. The second, with gradient −0.25:
    # m = 0.9 · 0.05 − 0.1 · 0.25 = 0.02, v = 0.999 · 2.5e-4 + 0.001 · 0.0625 = 3.1225e-4,
    # m̂ = 0.02 / 0.19 = 0.1052632, v̂ = 3.1225e-4 / 0.001999 = 0.1562031, so
    # p = 0.900000002 − 0.1 · 0.1052632 / √0.1562031 = 0.8733663.
    parameter = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = torch.optim.Adam([parameter], lr=0.1)
    parameter.grad = torch.tensor([0.5], dtype=torch.float64)
    optimizer.step()
    assert parameter.item() == pytest.approx(0.900000002, abs=1e-12)
    parameter.grad = torch.tensor([-0.25], dtype=torch.float64)
    adam_update(optimizer, [torch.tensor(0.1, dtype=torch.float64)])
    assert parameter.item() == pytest.approx(0.8733662987, abs=1e-10)
    state = optimizer.state[parameter]
    assert (state["step"].item(), state["exp_avg"].item()) == (2, pytest.approx(0.02))
    assert state["exp_avg_sq"].item() == pytest.approx(3.1225e-4)


def test_step_gradients_are_each_groups_in_order_and_adam_takes_them_as_from_grad():
    # loss = Σ 3·a + Σ b²: ∂a = 3, ∂b = 2b. The groups hold b, a frozen parameter, one the
    # loss does not reach, then a, at rates of their own.
    runs = []
    for handed_over in (False, True):
        a, b, frozen, unreached = (
            torch.nn.Parameter(torch.full((2,), v)) for v in (1.0, 2.0, 5.0, 7.0)
        )
        frozen.requires_grad_(False)
        optimizer = torch.optim.Adam(
            [{"params": [b, frozen]}, {"params": [unreached, a], "lr": 0.01}], lr=0.1
        )
        for step in range(3):
            loss = 3 * a.sum() + b.square().sum()
            if step == 0 or not handed_over:  # the first step makes Adam's state
                zero_grad(optimizer)
                loss.backward()
                optimizer.step() if step == 0 else adam_update(optimizer)
                continue
            zero_grad(optimizer)
            gradients = step_gradients(optimizer, loss, store=step == 2)
            expected = [[2 * v for v in b.tolist()], None, None, [3.0, 3.0]]
            assert [g if g is None else g.tolist() for g in gradients] == expected
            # Stored in each .grad too at the last step, not at the one before.
            stored = [p.grad for p in (b, frozen, unreached, a)]
            assert [g if g is None else g.tolist() for g in stored] == (
                expected if step == 2 else [None] * 4
            )
            adam_update(optimizer, gradients=gradients)
        parameters = [p.detach().clone() for p in (a, b, frozen, unreached)]
        runs.append((parameters, optimizer.state_dict()["state"]))
    (by_grad, state_by_grad), (handed, state_handed) = runs
    for from_grad, from_list in zip(by_grad, handed, strict=True):
        assert torch.equal(from_list, from_grad)
    assert handed[2].tolist() == [5.0, 5.0] and handed[3].tolist() == [7.0, 7.0]
    for index, state in state_by_grad.items():
        for name, value in state.items():
            assert torch.equal(state_handed[index][name], value), name


def test_gradients_are_handed_over_where_every_trained_weight_is_16_wide():
    def weights(*shapes: tuple[int, ...]) -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]

    # The article's NALU population (weights [S, 10, 100]) and a single run's [10, 16].
    assert hands_gradients_over(weights((1000, 10, 100), (1000, 10, 100)))
    assert hands_gradients_over(weights((10, 16)))
    # The NALM task's NAC+ ([S, 1, 2]), a bias of 10 beside a wide weight, a scalar.
    assert not hands_gradients_over(weights((450, 1, 2)))
    assert not hands_gradients_over(weights((10, 100), (10,)))
    assert not hands_gradients_over(weights(()))
    # A frozen narrow parameter takes no gradient and does not count.
    frozen = torch.nn.Parameter(torch.zeros(10, 2), requires_grad=False)
    assert hands_gradients_over([*weights((10, 100)), frozen])


def test_a_whole_step_compiles_from_a_function_not_a_partial():
    # torch.compile runs every partial through one shared wrapper, whose graph (its guards cut
    # to the tensors') would then serve a different partial as well.
    def step(optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
        pass

    with pytest.raises(TypeError, match="not a partial"):
        compile_whole_step(functools.partial(step, None))


@pytest.mark.parametrize(
    ("optimizer", "steps_by_adam_update"),
    [
        (functools.partial(torch.optim.Adam, lr=0.1, weight_decay=0.01, amsgrad=True), True),
        (functools.partial(torch.optim.AdamW, lr=0.1), False),
        (functools.partial(torch.optim.SGD, lr=0.1), False),
    ],
)
def test_adam_update_steps_adam_alone(optimizer, steps_by_adam_update):
    assert traceable_adam(optimizer([torch.nn.Parameter(torch.zeros(2))])) == steps_by_adam_update


@pytest.mark.parametrize(
    "settings",
    [{}, {"weight_decay": 0.01, "amsgrad": True}, {"maximize": True, "betas": (0.5, 0.9)}],
)
def test_adam_update_steps_as_torchs_adam_with_its_settings(settings):
    gradients = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = []
    for by_adam_update in (False, True):
        parameter = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        optimizer = torch.optim.Adam([parameter], lr=0.1, **settings)
        for step, gradient in enumerate(gradients):
            parameter.grad = gradient.clone()
            if by_adam_update and step > 0:  # the first step makes Adam's state
                adam_update(optimizer, [torch.tensor(0.1, dtype=torch.float64)])
            else:
                optimizer.step()
        steps.append((parameter.detach().clone(), dict(optimizer.state[parameter])))
    (by_torch, torch_state), (by_update, update_state) = steps
    assert torch.allclose(by_update, by_torch, rtol=0, atol=1e-15)
    assert update_state.keys() == torch_state.keys()
    for name, value in torch_state.items():
        assert torch.allclose(update_state[name], value, rtol=0, atol=1e-15), name


@pytest.mark.parametrize(
    "settings",
    [{}, {"fused": True}, {"foreach": True}, {"fused": True, "amsgrad": True, "weight_decay": 0.1}],
)
def test_an_eager_adam_update_is_torchs_step_bit_for_bit(settings):
    # At the groups' own rates and kernels (rates=None): what an eager run takes instead of
    # optimizer.step() once Adam has its state.
    gradients = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    runs = []
    for direct in (False, True):
        parameters = [torch.nn.Parameter(torch.ones(3)) for _ in range(2)]
        optimizer = torch.optim.Adam(
            [{"params": parameters[:1]}, {"params": parameters[1:], "lr": 0.01}], lr=0.1, **settings
        )
        for step, gradient in enumerate(gradients):
            for parameter, g in zip(parameters, gradient, strict=True):
                parameter.grad = g.clone()
            if direct and step > 0:
                adam_update(optimizer)
            else:
                optimizer.step()
        runs.append(([p.detach().clone() for p in parameters], optimizer.state_dict()["state"]))
    (torch_parameters, torch_state), (direct_parameters, direct_state) = runs
    for by_torch, direct in zip(torch_parameters, direct_parameters, strict=True):
        assert torch.equal(direct, by_torch)
    for index, state in torch_state.items():
        for name, value in state.items():
            assert torch.equal(direct_state[index][name], value), name


def test_adam_steps_directly_once_it_has_its_state_and_no_step_hooks():
    parameter, later = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    adam = torch.optim.Adam([parameter, later], lr=0.1)
    parameter.grad = torch.ones(2)
    assert not steps_directly(adam)  # its first step makes the state
    adam.step()
    assert steps_directly(adam)
    later.grad = torch.ones(2)  # a first gradient: step() makes its state
    assert not steps_directly(adam)
    adam.step()
    assert steps_directly(adam)
    own = adam.register_step_post_hook(lambda *_: None)
    assert not steps_directly(adam)
    own.remove()
    shared = register_optimizer_step_pre_hook(lambda *_: None)
    try:
        assert not steps_directly(adam)
    finally:
        shared.remove()
    assert steps_directly(adam)
    sgd = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    sgd.step()
    assert not steps_directly(sgd)


class KeepsGradients(torch.optim.SGD):
    def zero_grad(self, set_to_none: bool = True) -> None:
        pass


def test_zero_grad_clears_torchs_optimizers_and_calls_an_overridden_one():
    parameters = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    adam = torch.optim.Adam([{"params": parameters[:1]}, {"params": parameters[1:], "lr": 0.5}])
    for parameter in parameters:
        parameter.grad = torch.ones(2)
    zero_grad(adam)
    assert [p.grad for p in parameters] == [None, None]
    parameters[0].grad = torch.ones(2)
    zero_grad(KeepsGradients(parameters[:1], lr=0.1))
    assert torch.equal(parameters[0].grad, torch.ones(2))
