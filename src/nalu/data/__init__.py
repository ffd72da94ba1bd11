"""Problems (what the targets are) and the data module that turns them into batches."""

from nalu.data.datamodule import EVALUATION_SPLITS, ArithmeticDataModule
from nalu.data.problem import OPERATIONS, MysteryArithmeticProblem, Operation

__all__ = [
    "EVALUATION_SPLITS",
    "OPERATIONS",
    "ArithmeticDataModule",
    "MysteryArithmeticProblem",
    "Operation",
]
