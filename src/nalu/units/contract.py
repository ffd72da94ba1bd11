"""What nalu asks of a unit, in one place: the ``ArithmeticUnit`` protocol every unit follows,
and the optional hooks a unit may have, each a protocol with the default that applies when a
unit lacks it. Training, results and evaluation ask through the functions below, never by name.

A unit states what it is in its own module: a penalty (``Regularized``), weights kept in a range
(``Clamped``), outputs that are models of their own (``independent_outputs``), the matrices that
define it (``HasEffectiveWeights``) and their columns where they are not its inputs
(``NamesMatrixColumns``), a cap on log-magnitudes (``CapsLogMagnitude``), a log|z| to fit in
log space (``HasLogMagnitude``), candidates chosen per output (``OffersCandidates``),
per-parameter learning rates (``ScalesLearningRates``).
"""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class ArithmeticUnit(Protocol):
    """A layer with ``nn.Linear``'s signature: ``[..., in] -> [..., out]``, weights ``[out, in]``,
    ``reset_parameters()`` and ``extra_repr()``."""

    in_features: int
    out_features: int

    def forward(self, x: Tensor) -> Tensor: ...

    def reset_parameters(self) -> None: ...


@runtime_checkable
class Regularized(Protocol):
    """A unit with a penalty the loss adds, weighed by the run's regulariser schedule.
    Default: none."""

    def regularization(self) -> Tensor: ...


@runtime_checkable
class Clamped(Protocol):
    """A unit whose parameters are put back into their range after every optimizer step.
    Default: never clamped."""

    def clamp_parameters(self) -> None: ...


@runtime_checkable
class HasEffectiveWeights(Protocol):
    """A unit whose arithmetic is a few named ``[rows, columns]`` matrices (what heatmaps draw).
    Default: its ``nn.Linear`` layers' weights."""

    def effective_weights(self) -> dict[str, Tensor]: ...


@runtime_checkable
class NamesMatrixColumns(Protocol):
    """A unit with effective matrices whose columns are not its inputs, by matrix name: their
    columns' labels (a selection's choice: one column per head). Default: every column an
    input."""

    def matrix_columns(self) -> dict[str, list[str]]: ...


@runtime_checkable
class CapsLogMagnitude(Protocol):
    """A unit that caps log|z| to keep training finite; evaluation may raise the cap. Default:
    no cap."""

    max_log_magnitude: float


@runtime_checkable
class OffersCandidates(Protocol):
    """A network that answers each output with one of ``num_candidates`` candidates trained side
    by side and chosen on validation data (``PerOutputSelection``). Default: one answer."""

    num_candidates: int

    def candidates(self, x: Tensor) -> Tensor: ...

    def chosen(self, candidates: Tensor) -> Tensor: ...

    def candidate_fits(self, x: Tensor, candidates: Tensor, y: Tensor) -> Tensor: ...

    def select(self, candidate_mse: Tensor) -> None: ...


@runtime_checkable
class HasLogMagnitude(Protocol):
    """A product unit whose log|z| follows from its factors' magnitudes, sign aside (exact where
    its weights are in {0, 1}): what a fit in log space trains (``PerOutputSelection``'s
    ``log_fit`` heads). Default: none."""

    def log_magnitude(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class ScalesLearningRates(Protocol):
    """A network whose parameters learn at factors of the optimizer's rate, by name. Default:
    every parameter at the optimizer's rate."""

    def parameter_learning_rate_scales(self) -> dict[str, float]: ...


def independent_outputs(network: nn.Module) -> bool:
    """Whether output j depends on row j of every parameter alone (so each output is judged at
    its own best validation and can restart alone): the unit's ``independent_outputs``
    attribute. Default: False."""
    return bool(getattr(network, "independent_outputs", False))


def offers_candidates(network: nn.Module) -> bool:
    return isinstance(network, OffersCandidates)


def clamped_units(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if isinstance(module, Clamped)]


def log_magnitude_capped_units(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if isinstance(module, CapsLogMagnitude)]


def regularized_units(network: nn.Module) -> list[nn.Module]:
    return [module for module in network.modules() if isinstance(module, Regularized)]


def total_regularization(units: Sequence[nn.Module]) -> Tensor:
    """Σ of the ``units``' ``regularization()`` (``regularized_units``)."""
    return torch.stack([unit.regularization() for unit in units]).sum()


def learning_rate_scales(network: nn.Module) -> dict[str, float]:
    if isinstance(network, ScalesLearningRates):
        return network.parameter_learning_rate_scales()
    return {}


def matrix_columns(unit: nn.Module) -> dict[str, list[str]]:
    """The column labels of those of the unit's matrices whose columns are not its inputs."""
    return unit.matrix_columns() if isinstance(unit, NamesMatrixColumns) else {}


def effective_weights(unit: nn.Module) -> dict[str, Tensor] | None:
    """The unit's own matrices, or None where it has no ``effective_weights``."""
    return dict(unit.effective_weights()) if isinstance(unit, HasEffectiveWeights) else None
