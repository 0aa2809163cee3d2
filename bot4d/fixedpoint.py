"""Fixed-point money at the edges: Decimal/str <-> int64 units, never through float.

A value with ``scale`` decimals is stored as the integer ``value * 10**scale``. Conversion
refuses values that are not exactly representable at that scale or that do not fit in int64,
so an out-of-range price is an error at the edge, never a wrapped number in a kernel.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
MAX_SCALE = 18


class FixedPointError(ValueError):
    """A value cannot be represented as fixed-point int64 at the requested scale."""


def to_fixed(value: Decimal | str | int, scale: int) -> int:
    """Convert an exact decimal to int64 units of ``10**-scale``.

    Raises FixedPointError for floats, non-finite values, values with more decimals than
    ``scale`` allows, and values outside int64.
    """
    if isinstance(value, float):
        raise FixedPointError("floats are not accepted for money; pass a str or Decimal")
    if not 0 <= scale <= MAX_SCALE:
        raise FixedPointError(f"scale {scale} outside 0..{MAX_SCALE}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError):
        raise FixedPointError(f"not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise FixedPointError(f"not a finite number: {value!r}")
    scaled = d.scaleb(scale)
    if scaled != scaled.to_integral_value():
        raise FixedPointError(f"{value} has more than {scale} decimal places")
    units = int(scaled)
    if not INT64_MIN <= units <= INT64_MAX:
        raise FixedPointError(f"{value} at scale {scale} does not fit in int64")
    return units


def decimals(value: Decimal | str) -> int:
    """Significant decimal places: the smallest scale that holds ``value`` exactly
    ("0.01000000" -> 2, "100" -> 0)."""
    d = value if isinstance(value, Decimal) else Decimal(value)
    return max(0, -d.normalize().as_tuple().exponent)


def from_fixed(units: int, scale: int) -> Decimal:
    """Convert int64 units of ``10**-scale`` back to an exact Decimal."""
    return Decimal(int(units)).scaleb(-scale)
