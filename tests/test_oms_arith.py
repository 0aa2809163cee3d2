"""Checked arithmetic: exact against Python integers, refusing instead of wrapping."""
from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.kernels.oms_arith import (
    INT64_MAX, INT64_MIN, add_ok, mul_div_ceil_nonneg_div, mul_div_half_even, mul_ok,
)

i64 = st.integers(INT64_MIN + 1, INT64_MAX)


def _fits(v: int) -> bool:
    return INT64_MIN < v <= INT64_MAX


@settings(max_examples=400, deadline=None)
@given(i64, i64)
def test_add_mul(a, b):
    v, ok = add_ok(a, b)
    assert ok == (INT64_MIN <= a + b <= INT64_MAX)
    if ok:
        assert v == a + b
    v, ok = mul_ok(a, b)
    if ok:
        assert v == a * b
    else:
        assert not _fits(a * b) or a * b == INT64_MIN


def _half_even(f: Fraction) -> int:
    fl = f.numerator // f.denominator
    rem = f - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2):
        return fl + 1
    return fl


@settings(max_examples=400, deadline=None)
@given(i64, i64, i64.filter(lambda c: c != 0))
def test_mul_div_half_even_exact(a, b, c):
    r = _half_even(Fraction(a * b, c))
    v, ok = mul_div_half_even(a, b, c)
    assert ok == _fits(r)
    if ok:
        assert v == r


@settings(max_examples=400, deadline=None)
@given(i64, i64, st.integers(1, INT64_MAX))
def test_mul_div_ceil_exact(a, b, c):
    r = -((-a * b) // c)
    v, ok = mul_div_ceil_nonneg_div(a, b, c)
    assert ok == _fits(r)
    if ok:
        assert v == r


def test_edges():
    assert mul_div_half_even(5, 1, 2) == (2, True)      # 2.5 -> 2
    assert mul_div_half_even(7, 1, 2) == (4, True)      # 3.5 -> 4
    assert mul_div_half_even(-5, 1, 2) == (-2, True)
    assert mul_div_half_even(1, 1, 0)[1] is False
    assert mul_ok(INT64_MAX, 2)[1] is False
    assert add_ok(INT64_MAX, 1)[1] is False
