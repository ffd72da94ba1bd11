"""Read a trained network's weights back as one formula per output.

A reader turns a unit into formulas of its inputs: weights are rounded to {-1, 0, 1} (the
values an exact NAC or NALU solution uses, Trask et al. 2018, sec. 2) and a NALU output takes
the path its gate opens on typical inputs. A gate is read too: an output whose gate is not
saturated (within ``GATE_SATURATION`` of 0 or 1) mixes both paths, so it is not recovered,
and its gate's distance counts in the sparsity error. ``nn.Sequential`` stacks are read layer
by layer, each layer's formulas substituted into the next. A new unit plugs in with
``register_reader``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nalu.data.formula import Formula, Magnitude, Variable, power_product, weighted_sum
from nalu.units import (
    GatedAdditionMultiplicationUnit,
    ImprovedNeuralArithmeticLogicUnit,
    MultiplicativeNeuralAccumulator,
    NeuralAccumulator,
    NeuralAdditionUnit,
    NeuralArithmeticLogicUnit,
    NeuralMultiplicationUnit,
    NeuralMultiplicativeReciprocalUnit,
    NeuralPowerUnit,
    PerOutputSelection,
)
from nalu.units.baselines import MLP, ArticleBaseline
from nalu.units.nau import integer_distance

# A gate counts as a choice of path only this close to 0 or 1 (this project's own rule): at
# extrapolation scale a leak of 1% of a product of two inputs of 50 is an error of 25.
GATE_SATURATION = 0.01
# A formula read from weights farther than this from their integers is what they round to, not
# what they compute (this project's rule, the gates' 1%): it reads "≈ formula".
WEIGHT_ROUNDING = 0.01


@dataclass(frozen=True)
class UnitReader:
    """How to read one kind of unit.

    ``weights``: the unit and a batch of typical inputs ``[batch, in]`` -> the ``[out, ...]``
    matrices that an exact solution has in {-1, 0, 1}, for the sparsity error (of a gated unit
    only the path each output's gate opens, and the gates as ``[out, 1]`` columns).
    ``read``: the unit, its input formulas and typical inputs -> one formula per output.
    ``gates``: the unit and typical inputs -> ``[out]``, each output's gate distance from 0 or 1
    (its worst over the inputs); None for a unit without gates.
    """

    weights: Callable[[nn.Module, Tensor], list[Tensor]]
    read: Callable[[nn.Module, list[Formula], Tensor], list[Formula]]
    gates: Callable[[nn.Module, Tensor], Tensor] | None = None


# Per unit class its reader, or None where the unit declares that its weights do not read back
# as formulas: every unit says one or the other, so a unit nobody wrote a reader for is caught.
READERS: dict[type[nn.Module], UnitReader | None] = {}


def register_reader(unit_class: type[nn.Module], reader: UnitReader | None) -> None:
    READERS[unit_class] = reader


def rounded_sum(weight: Tensor, inputs: list[Formula]) -> list[Formula]:
    """Row j -> ``Σ_i round(W_ji) · input_i``."""
    return [
        weighted_sum({inputs[i]: w for i, w in enumerate(row) if w != 0})
        for row in weight.detach().round().tolist()
    ]


def rounded_product(weight: Tensor, inputs: list[Formula]) -> list[Formula]:
    """Row j -> ``Π_i input_i ^ round(W_ji)``."""
    return [
        power_product({inputs[i]: w for i, w in enumerate(row) if w != 0})
        for row in weight.detach().round().tolist()
    ]


def _nalu_gate(unit: nn.Module, x: Tensor) -> Tensor:
    """``[batch, out]``: the NALU's gate σ(G x + b) on typical inputs (Trask et al. 2018)."""
    with torch.no_grad():
        return unit.gate(x)


def _nalu_additive(unit: nn.Module, x: Tensor) -> Tensor:
    """``[out]`` bool: outputs whose mean gate on typical inputs is at least 1/2."""
    return _nalu_gate(unit, x).mean(dim=0) >= 0.5


def _gate_distance(gate: Tensor) -> Tensor:
    """``[batch, out]`` or ``[out]`` gates in [0, 1] -> ``[out]``: the worst distance from
    0 or 1."""
    distance = integer_distance(gate.detach())
    return distance.reshape(-1, distance.shape[-1]).amax(dim=0)


def _nalu_paths(unit: nn.Module) -> tuple[Tensor, Tensor]:
    """The additive and the multiplicative weight (the same one when the NALU shares it)."""
    weights = unit.effective_weights()
    return weights.get("W_add", weights.get("W")), weights.get("W_mul", weights.get("W"))


def rounded_magnitude_product(weight: Tensor, inputs: list[Formula], x: Tensor) -> list[Formula]:
    """Row j -> ``Π_i |input_i| ^ round(W_ji)``: a log path, exp(W log |x|), multiplies |x_i|:
    x_i where the inputs ``x`` are positive, −x_i where they are negative (an NAU's negated
    sum), the magnitude where they take both signs."""
    positive, negative = (x > 0).all(dim=0).tolist(), (x < 0).all(dim=0).tolist()
    magnitudes = [
        f if above else weighted_sum({f: -1}) if below else Magnitude(f)
        for f, above, below in zip(inputs, positive, negative, strict=True)
    ]
    return rounded_product(weight, magnitudes)


def _read_nalu(unit: nn.Module, inputs: list[Formula], x: Tensor) -> list[Formula]:
    additive_weight, multiplicative_weight = _nalu_paths(unit)
    sums = rounded_sum(additive_weight, inputs)
    products = rounded_magnitude_product(multiplicative_weight, inputs, x)
    additive = _nalu_additive(unit, x).tolist()
    return [s if a else p for s, p, a in zip(sums, products, additive, strict=True)]


def _nalu_weights(unit: nn.Module, x: Tensor) -> list[Tensor]:
    path = torch.where(_nalu_additive(unit, x)[:, None], *_nalu_paths(unit))
    return [path, _gate_distance(_nalu_gate(unit, x)).unsqueeze(1)]


# A unit whose output is W x: NAC (Trask et al. 2018, eq. 1) and NAU (Madsen & Johansen 2020).
LINEAR_READER = UnitReader(
    weights=lambda unit, x: [unit.weight],
    read=lambda unit, inputs, x: rounded_sum(unit.weight, inputs),
)
register_reader(NeuralAccumulator, LINEAR_READER)

register_reader(
    MultiplicativeNeuralAccumulator,
    UnitReader(
        weights=lambda unit, x: [unit.weight],
        read=lambda unit, inputs, x: rounded_magnitude_product(unit.weight, inputs, x),
    ),
)
register_reader(NeuralAdditionUnit, LINEAR_READER)
register_reader(
    NeuralArithmeticLogicUnit,
    UnitReader(
        weights=_nalu_weights,
        read=_read_nalu,
        gates=lambda unit, x: _gate_distance(_nalu_gate(unit, x)),
    ),
)


# NMU (Madsen & Johansen 2020, eq. 12): with W in {0, 1}, Π_i (W_i x_i + 1 − W_i) = Π_{W_i=1} x_i.
register_reader(
    NeuralMultiplicationUnit,
    UnitReader(
        weights=lambda unit, x: [unit.weight],
        read=lambda unit, inputs, x: rounded_product(unit.weight, inputs),
    ),
)


def _gated_additive(unit: nn.Module) -> Tensor:
    """``[out]`` bool: outputs whose gate (σ(ĝ), or the clamped ĝ of ``exact_gate``) chooses the
    NAU path."""
    return unit.gate.detach() >= 0.5


def _read_gated(unit: nn.Module, inputs: list[Formula], x: Tensor) -> list[Formula]:
    sums = rounded_sum(unit.nau.weight, inputs)
    products = rounded_product(unit.nmu.weight, inputs)
    additive = _gated_additive(unit).tolist()
    return [s if a else p for s, p, a in zip(sums, products, additive, strict=True)]


register_reader(
    GatedAdditionMultiplicationUnit,
    UnitReader(
        weights=lambda unit, x: [
            torch.where(_gated_additive(unit)[:, None], unit.nau.weight, unit.nmu.weight),
            _gate_distance(unit.gate).unsqueeze(1),
        ],
        read=_read_gated,
        gates=lambda unit, x: _gate_distance(unit.gate),
    ),
)


def _read_reciprocal(unit: nn.Module, inputs: list[Formula], x: Tensor) -> list[Formula]:
    """NMRU (Mistry et al. 2021): with W in {0, 1}, x_i^round(W_i) ÷ x_i^round(W_reciprocal_i)."""
    weights = unit.effective_weights()
    powers = weights["W"].detach().round() - weights["W_reciprocal"].detach().round()
    return rounded_product(powers, inputs)


register_reader(
    NeuralMultiplicativeReciprocalUnit,
    UnitReader(weights=lambda unit, x: [unit.weight], read=_read_reciprocal),
)


def _head_readers(unit: nn.Module) -> list[tuple[nn.Module, UnitReader]]:
    readers = [(head, READERS.get(type(head))) for head in unit.heads]
    unreadable = sorted({type(head).__name__ for head, reader in readers if reader is None})
    if unreadable:
        raise TypeError(f"PerOutputSelection heads without a reader: {', '.join(unreadable)}")
    return readers


def _read_selection(unit: nn.Module, inputs: list[Formula], x: Tensor) -> list[Formula]:
    """Each output read from the head chosen for it."""
    per_head = [reader.read(head, inputs, x) for head, reader in _head_readers(unit)]
    return [per_head[h][j] for j, h in enumerate(unit.choice.tolist())]


def _selection_weights(unit: nn.Module, x: Tensor) -> list[Tensor]:
    """Every head's matrices, with the rows of the outputs it does not answer zeroed."""
    return [
        torch.where((unit.choice == h)[:, None], weight.detach(), 0.0)
        for h, (head, reader) in enumerate(_head_readers(unit))
        for weight in reader.weights(head, x)
    ]


def _selection_gates(unit: nn.Module, x: Tensor) -> Tensor:
    distance = torch.zeros(unit.out_features)
    for h, (head, reader) in enumerate(_head_readers(unit)):
        if reader.gates is not None:
            chosen = unit.choice.cpu() == h
            distance = torch.where(chosen, reader.gates(head, x).cpu(), distance)
    return distance


register_reader(
    PerOutputSelection,
    UnitReader(weights=_selection_weights, read=_read_selection, gates=_selection_gates),
)


def _layers(network: nn.Module) -> list[tuple[nn.Module, UnitReader]] | None:
    """The network as a chain of readable units with their readers, or None if some part has
    no reader."""
    layers = list(network) if isinstance(network, nn.Sequential) else [network]
    readers = [READERS.get(type(layer)) for layer in layers]
    if any(reader is None for reader in readers):
        return None
    return list(zip(layers, readers, strict=True))


def read_back(network: nn.Module, x: Tensor) -> list[Formula] | None:
    """One formula per output of ``network`` given typical inputs ``x`` ``[batch, in]``, or
    None when the network has a part without a reader (an MLP, say)."""
    layers = _layers(network)
    if layers is None:
        return None
    formulas: list[Formula] = [Variable(i) for i in range(x.shape[-1])]
    with torch.no_grad():
        for layer, reader in layers:
            formulas = reader.read(layer, formulas, x)
            x = layer(x)
    return formulas


def unsaturated_gates(network: nn.Module, x: Tensor) -> Tensor | None:
    """``[out]`` bool: outputs that depend on a gate farther than ``GATE_SATURATION`` from 0
    or 1 (a gate of an earlier layer of a stack counts for every output), given typical
    inputs ``x`` ``[batch, in]``; None when the network has a part without a reader."""
    layers = _layers(network)
    if layers is None:
        return None
    earlier = torch.tensor(False)
    with torch.no_grad():
        for layer, reader in layers[:-1]:
            if reader.gates is not None:
                earlier = earlier | (reader.gates(layer, x) > GATE_SATURATION).any().cpu()
            x = layer(x)
        last_layer, last_reader = layers[-1]
        if last_reader.gates is None:
            return earlier.expand(last_layer.out_features).clone()
        return (last_reader.gates(last_layer, x).cpu() > GATE_SATURATION) | earlier


def sparsity_error(network: nn.Module, x: Tensor) -> Tensor | None:
    """``[out]``: max_ij min(|W_ij|, |1 − |W_ij||) over the weights each output depends on,
    given typical inputs ``x`` ``[batch, in]`` (they pick a NALU's path).

    Madsen & Johansen 2020, sec. 4.1. In a stack every output depends on all earlier layers,
    so their worst weight counts for every output; the last layer counts row by row.
    """
    layers = _layers(network)
    if layers is None:
        return None
    earlier = torch.tensor(0.0)
    with torch.no_grad():
        for layer, reader in layers[:-1]:
            for weight in reader.weights(layer, x):
                earlier = torch.maximum(earlier, integer_distance(weight.detach().cpu()).max())
            x = layer(x)
        last_layer, last_reader = layers[-1]
        last = last_reader.weights(last_layer, x)
    rows = [integer_distance(weight.detach().cpu()).amax(dim=1) for weight in last]
    per_row = torch.stack(rows).amax(dim=0)
    return torch.maximum(per_row, earlier)


# No reader: the iNALU's product path multiplies by a sign vector of the inputs, and the NPU's
# real and imaginary weights mix powers with cosines; neither rounds to one formula per output.
register_reader(ImprovedNeuralArithmeticLogicUnit, None)
register_reader(NeuralPowerUnit, None)
# The baselines: ReLU layers compute no formula to read.
register_reader(ArticleBaseline, None)
register_reader(MLP, None)
