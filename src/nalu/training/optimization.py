"""The optimizer and learning-rate schedule of a run, and how many optimizer steps it has."""

from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from nalu.config import rules
from nalu.config.errors import InvalidArgument
from nalu.units.contract import learning_rate_scales

if TYPE_CHECKING:
    import lightning as L


class LinearDecay(LambdaLR):
    """The learning rate stays until ``start`` (a fraction of the run's ``total_steps``), then
    falls linearly to ``end_factor`` times itself at the last step.

    Adam's steps keep a weight that should be exactly 0 or ±1 jittering by about the learning
    rate; letting the rate fall to 0 at the end lets such weights settle, which the strict
    success threshold (weights within about 1e-5 of exact) asks for.
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int, start: float = 0.5, end_factor: float = 0.0
    ) -> None:
        rules.check_arguments("LinearDecay", start=start, end_factor=end_factor)
        decay_from = start * total_steps
        decay_steps = max(1.0, total_steps - decay_from)

        def factor(step: int) -> float:
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
