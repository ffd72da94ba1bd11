"""Problems (what the targets are) and the data modules that turn them into batches."""

from nalu.data.datamodule import (
    EVALUATION_SPLITS,
    ArithmeticDataModule,
    ProblemDataModule,
    StaticArithmeticDataModule,
)
from nalu.data.problem import (
    OPERATIONS,
    STATIC_OPERATIONS,
    MysteryArithmeticProblem,
    Operation,
    StaticArithmeticProblem,
)

__all__ = [
    "EVALUATION_SPLITS",
    "OPERATIONS",
    "STATIC_OPERATIONS",
    "ArithmeticDataModule",
    "MysteryArithmeticProblem",
    "Operation",
    "ProblemDataModule",
    "StaticArithmeticDataModule",
    "StaticArithmeticProblem",
]
