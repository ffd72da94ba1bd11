"""Arithmetic units: plain ``torch.nn.Module`` layers with ``nn.Linear``-like signatures."""

from nalu.units.gated import GatedAdditionMultiplicationUnit
from nalu.units.inalu import ImprovedNeuralArithmeticLogicUnit
from nalu.units.nac import GOLDEN_RATIO, MultiplicativeNeuralAccumulator, NeuralAccumulator
from nalu.units.nalu import NeuralArithmeticLogicUnit
from nalu.units.nau import NeuralAdditionUnit
from nalu.units.nmru import NeuralMultiplicativeReciprocalUnit
from nalu.units.nmu import NeuralMultiplicationUnit
from nalu.units.npu import NeuralPowerUnit
from nalu.units.selection import PerOutputSelection

__all__ = [
    "GOLDEN_RATIO",
    "GatedAdditionMultiplicationUnit",
    "ImprovedNeuralArithmeticLogicUnit",
    "MultiplicativeNeuralAccumulator",
    "NeuralAccumulator",
    "NeuralAdditionUnit",
    "NeuralArithmeticLogicUnit",
    "NeuralMultiplicationUnit",
    "NeuralMultiplicativeReciprocalUnit",
    "NeuralPowerUnit",
    "PerOutputSelection",
]
