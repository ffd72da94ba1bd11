"""``nalu.module.ArithmeticModule``, the name notebooks import; the module lives in
``nalu.training.module``."""

from nalu.training.module import ArithmeticModule

__all__ = ["ArithmeticModule"]
