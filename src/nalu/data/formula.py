"""Arithmetic formulas over inputs in a canonical form, so that equal formulas compare equal.

A formula is a variable ``x3``, a weighted sum ``Σ c_i e_i`` or a product of powers
``Π e_i^p_i``. Building one flattens nested sums (and products), merges equal terms and drops
zero weights, so ``(x1 + x2) + x1`` and ``2·x1 + x2`` are the same object; a product takes the
sign out of each factor raised to a whole power, so ``(-x1 - x2) × (-x3)`` and ``(x1 + x2) × x3``
are too.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    index: int

    def __str__(self) -> str:
        return f"x{self.index}"


@dataclass(frozen=True)
class Sum:
    terms: tuple[tuple["Formula", float], ...]

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        text = ""
        # Positive terms first, so a difference reads ``x7 - x2`` as the problem writes it.
        ordered = sorted(self.terms, key=lambda pair: pair[1] < 0)
        for k, (term, weight) in enumerate(ordered):
            sign = "-" if weight < 0 else "+"
            scale = "" if abs(weight) == 1 else f"{abs(weight):g}·"
            body = f"({term})" if isinstance(term, Sum) else str(term)
            if k == 0:
                text = f"{'-' if weight < 0 else ''}{scale}{body}"
            else:
                text += f" {sign} {scale}{body}"
        return text


@dataclass(frozen=True)
class Product:
    factors: tuple[tuple["Formula", float], ...]

    def __str__(self) -> str:
        if not self.factors:
            return "1"
        parts = []
        # Numerator first, so a quotient reads ``x1 × x2 ÷ x3``.
        ordered = sorted(self.factors, key=lambda pair: pair[1] < 0)
        for k, (factor, power) in enumerate(ordered):
            body = str(factor) if isinstance(factor, Variable) else f"({factor})"
            exponent = abs(power)
            text = body if exponent == 1 else f"{body}^{exponent:g}"
            if k == 0:
                parts.append(text if power > 0 else f"1 ÷ {text}")
            else:
                parts.append(f"{'×' if power > 0 else '÷'} {text}")
        return " ".join(parts)


@dataclass(frozen=True)
class Magnitude:
    """``|e|``: what a NALU's log path multiplies (Trask et al. 2018: log(|x| + ε))."""

    inner: "Formula"

    def __str__(self) -> str:
        return f"|{self.inner}|"


Formula = Variable | Sum | Product | Magnitude


def _sort_key(formula: Formula) -> tuple[int, int, str]:
    return (0, formula.index, "") if isinstance(formula, Variable) else (1, 0, str(formula))


def _merge(
    items: dict[Formula, float], kind: type[Sum] | type[Product]
) -> tuple[tuple[Formula, float], ...]:
    merged: dict[Formula, float] = {}
    for item, weight in items.items():
        # A nested sum inside a sum (product inside a product) distributes its weights.
        inner = item.terms if kind is Sum and isinstance(item, Sum) else None
        if kind is Product and isinstance(item, Product):
            inner = item.factors
        for sub_item, sub_weight in inner if inner is not None else ((item, 1.0),):
            merged[sub_item] = merged.get(sub_item, 0.0) + weight * sub_weight
    kept = [(item, weight) for item, weight in merged.items() if weight != 0]
    return tuple(sorted(kept, key=lambda pair: _sort_key(pair[0])))


def weighted_sum(terms: dict[Formula, float]) -> Formula:
    """``Σ weight · term`` in canonical form; a single term of weight 1 is the term itself."""
    merged = _merge(terms, Sum)
    if len(merged) == 1 and merged[0][1] == 1:
        return merged[0][0]
    return Sum(merged)


def _signless(formula: Formula) -> tuple[Formula, bool]:
    """``formula`` as ± f, f a sum whose first term is positive (or not a sum): (f, whether
    ``formula`` is −f)."""
    if isinstance(formula, Sum) and formula.terms and formula.terms[0][1] < 0:
        return weighted_sum({term: -weight for term, weight in formula.terms}), True
    return formula, False


def power_product(factors: dict[Formula, float]) -> Formula:
    """``Π factor ^ power`` in canonical form; a single factor of power 1 is the factor itself.
    A factor's sign comes out where its power is whole, (−f)^p = (−1)^p f^p, and a negative
    product is the sum −1 · (the product)."""
    signless: dict[Formula, float] = {}
    negative = False
    for factor, power in _merge(factors, Product):
        unsigned, negated = _signless(factor)
        if negated and float(power).is_integer():
            factor, negative = unsigned, negative != (int(power) % 2 == 1)
        signless[factor] = signless.get(factor, 0.0) + power
    merged = _merge(signless, Product)
    product = merged[0][0] if len(merged) == 1 and merged[0][1] == 1 else Product(merged)
    return weighted_sum({product: -1.0}) if negative else product
