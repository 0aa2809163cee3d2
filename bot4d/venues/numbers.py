"""Exact decimal text -> int64 units, for numbers as venues send them ("0.00012300", "41006.8").

Venues send prices and sizes as decimal strings (or, Kraken v2, as JSON numbers whose text is
the value): parsing them through float would lose exactness, so they are parsed digit by digit.
"""
from __future__ import annotations

from bot4d.fixedpoint import INT64_MAX


class NumberError(ValueError):
    """Venue number text that is not a non-negative decimal representable at the scale."""


_POW10 = [10**i for i in range(19)]


def parse_units(text: str | bytes, scale: int, *, allow_negative: bool = False) -> int:
    """Parse plain decimal text into units of 10**-scale, exactly.

    Accepts "123", "123.45", ".5", "1e-8"-free plain notation only. Extra fractional digits are
    allowed only when they are zeros ("0.10000000" at scale 2 is 10). Raises NumberError for
    anything else: empty, signs (unless allow_negative), exponents, non-digits, too many
    significant decimals, or a value that does not fit in int64.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise NumberError(f"not ASCII number text: {text!r}") from None
    s = text
    neg = False
    if s[:1] == "-":
        if not allow_negative:
            raise NumberError(f"negative value {text!r}")
        neg, s = True, s[1:]
    whole, dot, frac = s.partition(".")
    if not (whole or frac) or (dot and not frac and not whole):
        raise NumberError(f"not a number: {text!r}")
    if not (whole.isdigit() or whole == "") or not (frac.isdigit() or frac == "") or not s.isascii():
        raise NumberError(f"not a plain decimal number: {text!r}")
    if len(frac) > scale:
        extra = frac[scale:]
        if extra.strip("0"):
            raise NumberError(f"{text!r} has more than {scale} significant decimals")
        frac = frac[:scale]
    units = int(whole or "0") * _POW10[scale] + (int(frac) * _POW10[scale - len(frac)] if frac else 0)
    if units > INT64_MAX:
        raise NumberError(f"{text!r} at scale {scale} does not fit in int64")
    return -units if neg else units
