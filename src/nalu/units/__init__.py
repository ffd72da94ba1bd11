"""Arithmetic units: plain ``torch.nn.Module`` layers with ``nn.Linear``-like signatures."""

from nalu.units.nac import NeuralAccumulator
from nalu.units.nalu import NeuralArithmeticLogicUnit

__all__ = ["NeuralAccumulator", "NeuralArithmeticLogicUnit"]
