"""Problems (what the targets are) and the data modules that turn them into batches.

The problems need torch only; the data modules (Lightning's) load on first use, so that
``import nalu.data`` stays light for a notebook or a script that only draws problems."""

from typing import Any

from nalu.data.problem import (
    OPERATIONS,
    MysteryArithmeticProblem,
    Operation,
    StaticArithmeticProblem,
)

__all__ = [
    "EVALUATION_SPLITS",
    "OPERATIONS",
    "ArithmeticDataModule",
    "MysteryArithmeticProblem",
    "Operation",
    "ProblemDataModule",
    "StaticArithmeticDataModule",
    "StaticArithmeticProblem",
]

# Loaded from nalu.data.datamodule on first use (PEP 562): it imports Lightning.
_DATA_MODULE_NAMES = {
    "EVALUATION_SPLITS",
    "ArithmeticDataModule",
    "ProblemDataModule",
    "StaticArithmeticDataModule",
}


def __getattr__(name: str) -> Any:
    if name in _DATA_MODULE_NAMES:
        from nalu.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'nalu.data' has no attribute {name!r}")
