"""The optimizer and learning-rate schedule of a run, and how many optimizer steps it has."""

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.adam import adam
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from nalu.config import rules
from nalu.config.errors import InvalidArgument
from nalu.units.contract import learning_rate_scales

if TYPE_CHECKING:
    import lightning as L


class LinearDecay(LambdaLR):
    """The learning rate stays until ``start`` (a fraction of the run's ``total_steps``), then
    falls linearly, by the same amount each step, to ``end_factor`` times itself where the run
    ends: step k of n takes factor(k), so the last step (k = n − 1) is one decrement above it.

    Adam's steps keep a weight that should be exactly 0 or ±1 jittering by about the learning
    rate; letting the rate fall to 0 at the end lets such weights settle, which the strict
    success threshold (weights within about 1e-5 of exact) asks for.
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int, start: float = 0.7, end_factor: float = 0.0
    ) -> None:
        rules.check_arguments("LinearDecay", start=start, end_factor=end_factor)
        decay_from = start * total_steps
        decay_steps = max(1.0, total_steps - decay_from)

        def factor(step: int) -> float:
            # This project's schedule (no paper's): 1 until start · n, then linear to end_factor.
            progress = min(1.0, max(0.0, (step - decay_from) / decay_steps))
            return 1.0 - (1.0 - end_factor) * progress

        super().__init__(optimizer, factor)


def parameter_groups(network: nn.Module, lr: float | None) -> list[dict[str, Any]]:
    """The network's parameters as optimizer groups: one per learning-rate factor that the
    network declares in ``parameter_learning_rate_scales()`` ({parameter name: factor}, as
    ``nalu.units.PerOutputSelection`` does), at ``lr`` times it; the rest at the optimizer's."""
    declared = learning_rate_scales(network)
    if declared and lr is None:
        raise InvalidArgument("optimizer.lr", lr, "must be set when heads scale it")
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in network.named_parameters():
        groups.setdefault(declared.get(name, 1.0), []).append(parameter)
    return [
        {"params": params} if scale == 1.0 else {"params": params, "lr": lr * scale}
        for scale, params in groups.items()
    ]


def build_optimizer(optimizer: Any, network: nn.Module) -> Optimizer:
    """The ``optimizer`` (a partial ``_target_`` config, or a factory of parameters such as
    ``functools.partial(torch.optim.Adam, lr=1e-3)``) built over ``network``'s parameter
    groups."""
    factory = optimizer if callable(optimizer) else instantiate(optimizer)
    return factory(parameter_groups(network, getattr(factory, "keywords", {}).get("lr")))


def configure_optimization(
    module: "L.LightningModule", total_steps: int
) -> Optimizer | dict[str, Any]:
    """``configure_optimizers``' answer for a module with a ``network``, an
    ``optimizer_factory`` and the ``lr_schedule`` config (or None) in its hyperparameters: the
    optimizer, with its schedule over the run's ``total_steps`` optimizer steps when there is
    one (the module steps it after each optimizer step).
    """
    optimizer = build_optimizer(module.optimizer_factory, module.network)
    if module.hparams.lr_schedule is None:
        return optimizer
    scheduler = instantiate(module.hparams.lr_schedule)(optimizer, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def traceable_adam(optimizer: Optimizer) -> bool:
    """Whether ``adam_update`` takes ``optimizer``'s steps: ``torch.optim.Adam`` itself (a
    subclass such as AdamW may step otherwise), its steps not differentiable."""
    return type(optimizer) is torch.optim.Adam and not any(
        group["differentiable"] or group.get("decoupled_weight_decay")
        for group in optimizer.param_groups
    )


def has_step_hooks(optimizer: Optimizer) -> bool:
    """Whether ``optimizer.step()`` calls step hooks, its own or global ones: a step taken
    without ``step()`` (``adam_update``, eager, in a compiled graph or a captured chunk) would
    skip them."""
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or _global_optimizer_pre_hooks
        or _global_optimizer_post_hooks
    )


def steps_directly(optimizer: Optimizer) -> bool:
    """Whether ``adam_update`` may take ``optimizer.step()``'s place in an eager step, with the
    gradients of the step in place: a ``traceable_adam`` without step hooks
    (``has_step_hooks``) and a state for every parameter that has a gradient (``step()`` makes a
    parameter's at its first gradient)."""
    return (
        traceable_adam(optimizer)
        and not has_step_hooks(optimizer)
        and all(
            p in optimizer.state
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        )
    )


def zero_grad(optimizer: Optimizer) -> None:
    """``optimizer.zero_grad()``; for torch's own (not overridden), what it does, every
    gradient set to None, without the profiler's record and the compiler's guard around it
    (0.03 ms of the article's eager step, timed in a run)."""
    if type(optimizer).zero_grad is not Optimizer.zero_grad:
        optimizer.zero_grad()
        return
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


# Inductor's CPU code (torch <= 2.14.1, pytorch/pytorch#190757) counts a vectorised loop
# narrower than its vector (16 floats with AVX-512) as no work and then spreads the batch's sum
# over the threads inside a serial loop over the members: a gradient fused into Adam's update
# that way starts the threads once per member (the NALM task's NAC+, 450 members of 2 weights:
# 598 against 1,069 steps/s).
FUSED_GRADIENT_MIN_WIDTH = 16


def hands_gradients_over(parameters: Iterable[Tensor]) -> bool:
    """Whether a compiled step hands its gradients to Adam as the graph's own values
    (``step_gradients``): where every trained parameter is at least
    ``FUSED_GRADIENT_MIN_WIDTH`` values wide in its last dimension."""
    trained = [p for p in parameters if p.requires_grad]
    return all(p.ndim > 0 and p.shape[-1] >= FUSED_GRADIENT_MIN_WIDTH for p in trained)


def parameter_gradients(optimizer: Optimizer) -> list[Tensor | None]:
    """Each parameter's ``.grad`` in ``optimizer``'s groups, in their order: cheaper to gather
    at every step than the network's ``parameters()`` (0.5 against 4.6 µs for the article's
    NALU), which walk its modules."""
    return [p.grad for group in optimizer.param_groups for p in group["params"]]


def step_gradients(optimizer: Optimizer, loss: Tensor, store: bool = False) -> list[Tensor | None]:
    """The gradients of ``loss`` for the parameters of ``optimizer``'s groups, in their order
    (None for a parameter that is frozen or that ``loss`` does not reach). Not ``store``d in
    each ``.grad``: in a compiled step handed on to ``adam_update`` this way, they stay the
    graph's own temporaries, and the compiler fuses their last work into Adam's update instead
    of writing them out and reading them back (an article population of 1,000's compiled step
    13.4 against 15.0 ms, the same weights bit for bit; ``hands_gradients_over`` says where it
    pays)."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    trained = [p for p in parameters if p.requires_grad]
    found = iter(torch.autograd.grad(loss, trained, allow_unused=True))
    gradients = [next(found) if p.requires_grad else None for p in parameters]
    if store:
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
    return gradients


def adam_update(
    optimizer: torch.optim.Adam,
    rates: Sequence[Tensor] | None = None,
    gradients: Sequence[Tensor | None] | None = None,
) -> None:
    """``optimizer.step()`` as torch's functional ``adam`` with each group's settings, on the
    optimizer's state (Kingma & Ba 2015, Algorithm 1, as ``torch.optim.Adam`` computes it).
    Every parameter with a gradient has its state already: an ordinary first step made it
    (``traceable_adam`` says which optimizers qualify).

    ``rates``: each group's learning rate as a tensor, for a compiled graph that takes the
    update in as tensor operations, fused with the gradients' own (a float would be compiled
    into the graph, anew at each value of a schedule). None: an eager step at the groups' own
    rates with the kernels they ask for (``fused``, ``foreach``), without the wrappers of
    ``step()`` (profiling, hooks, the compiler's guard): Adam's part of the article's eager
    step, timed in a run, 0.08 ms instead of 0.11 (``steps_directly`` says when that is the
    same step).

    ``gradients``: the step's gradients as ``step_gradients`` gives them, in place of the
    parameters' ``.grad``."""
    eager = rates is None
    if gradients is None:
        gradients = parameter_gradients(optimizer)
    start = 0
    with torch.no_grad():
        for index, group in enumerate(optimizer.param_groups):
            given = gradients[start : start + len(group["params"])]
            start += len(given)
            pairs = [(p, g) for p, g in zip(group["params"], given, strict=True) if g is not None]
            parameters = [p for p, _ in pairs]
            states = [optimizer.state[p] for p in parameters]
            beta1, beta2 = group["betas"]
            adam(
                parameters,
                [g for _, g in pairs],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
                [s["step"] for s in states],
                foreach=group["foreach"] if eager else False,
                fused=group["fused"] if eager else False,
                capturable=group["capturable"] if eager else False,
                amsgrad=group["amsgrad"],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"] if eager else rates[index],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                has_complex=any(torch.is_complex(p) for p in parameters),
            )


def compile_whole_step(step: Callable[..., Any]) -> Callable[..., Any] | None:
    """``step`` (a whole optimizer step: forward, ``torch.autograd.grad``, ``adam_update``, ...)
    compiled as one graph, or None on a torch that cannot trace a gradient into a graph or leave
    out guards.

    Only the guards on tensors and the global state are kept: checking the others (every
    attribute of the module and optimizer that the step reads) took longer than a small
    population's step. So the step must read no Python value that changes while it runs, such
    as a flag of the run's state; a tensor's new shape still recompiles it. For the same reason
    ``step`` must be a function or method of code of its own, not a ``functools.partial``:
    torch.compile calls every partial through one shared wrapper, whose compiled graph, with
    no guard to tell them apart, would serve another partial too."""
    if isinstance(step, functools.partial):
        raise TypeError("compile_whole_step needs a function or method, not a partial")
    if not (
        hasattr(torch._dynamo.config, "trace_autograd_ops")
        and hasattr(torch.compiler, "keep_portable_guards_unsafe")
    ):
        return None
    compiled = torch.compile(
        step, dynamic=False, options={"guard_filter_fn": torch.compiler.keep_portable_guards_unsafe}
    )

    # Made once: building the patch took 13 µs a step, entering and leaving it takes 3.
    tracing = torch._dynamo.config.patch(trace_autograd_ops=True)

    def whole_step(*inputs: Any) -> Any:
        with tracing:
            return compiled(*inputs)

    return whole_step
