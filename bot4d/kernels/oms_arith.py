"""Overflow-checked int64 arithmetic for the trading-core kernels.

numba compiles ``a * b`` on int64 to a wrapping multiply, so a large price times a large quantity
would silently become a wrong (possibly negative) notional. Every money product in the OMS,
position and fee kernels goes through these helpers, which report overflow instead of wrapping;
the caller then refuses the operation and counts it.

``mul_div_half_even`` computes ``round_half_even(a * b / c)`` exactly even when ``a * b`` does not
fit in 64 bits (a 128-bit product and long division), because realised P&L on a partial close
needs ``cost * closed / open`` exactly and that product can exceed int64 for big books.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel

INT64_MAX = np.int64((1 << 63) - 1)
INT64_MIN = np.int64(-(1 << 63))


@kernel(_nrt=False)
def add_ok(a: int, b: int) -> tuple[int, bool]:
    """a + b and whether it fit in int64."""
    if b > 0 and a > INT64_MAX - b:
        return 0, False
    if b < 0 and a < INT64_MIN - b:
        return 0, False
    return a + b, True


@kernel(_nrt=False)
def mul_ok(a: int, b: int) -> tuple[int, bool]:
    """a * b and whether it fit in int64 (checked before multiplying, so nothing wraps)."""
    if a == 0 or b == 0:
        return 0, True
    if a == INT64_MIN or b == INT64_MIN:
        if (a == 1 or b == 1):
            return INT64_MIN, True
        return 0, False
    aa = a if a > 0 else -a
    ab = b if b > 0 else -b
    if aa > INT64_MAX // ab:
        return 0, False
    return a * b, True


@helper(_nrt=False)
def _umul128(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Full 128-bit product of two unsigned 64-bit numbers as (hi, lo), from 32-bit limbs."""
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a_lo = a & m32
    a_hi = a >> s32
    b_lo = b & m32
    b_hi = b >> s32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = (ll >> s32) + (lh & m32) + (hl & m32)
    lo = (ll & m32) | ((mid & m32) << s32)
    hi = hh + (lh >> s32) + (hl >> s32) + (mid >> s32)
    return hi, lo


@helper(_nrt=False)
def _udiv128(hi: np.uint64, lo: np.uint64, d: np.uint64) -> tuple[np.uint64, np.uint64, np.uint64, bool]:
    """(hi:lo) // d as (q_hi, q_lo, remainder, ok) by binary long division; ok=False if d == 0."""
    if d == 0:
        return np.uint64(0), np.uint64(0), np.uint64(0), False
    one = np.uint64(1)
    top = np.uint64(1) << np.uint64(63)
    q_hi = np.uint64(0)
    q_lo = np.uint64(0)
    r = np.uint64(0)
    for i in range(128):
        # shift the next dividend bit into the remainder; r < d < 2**63 so r << 1 cannot wrap
        # unless d >= 2**63, handled by the carry flag below
        if i < 64:
            bit = (hi >> np.uint64(63 - i)) & one
        else:
            bit = (lo >> np.uint64(127 - i)) & one
        carry = (r & top) != 0
        r = (r << one) | bit
        q_hi = (q_hi << one) | (q_lo >> np.uint64(63))
        q_lo = q_lo << one
        if carry or r >= d:
            r = r - d
            q_lo = q_lo | one
    return q_hi, q_lo, r, True


@kernel(_nrt=False)
def mul_div_half_even(a: int, b: int, c: int) -> tuple[int, bool]:
    """round_half_even(a * b / c) exactly; ok=False if c == 0 or the result leaves int64."""
    if c == 0:
        return 0, False
    neg = (a < 0) != (b < 0)
    if c < 0:
        neg = not neg
    if a == 0 or b == 0:
        return 0, True
    if a == INT64_MIN or b == INT64_MIN or c == INT64_MIN:
        return 0, False
    ua = np.uint64(a if a > 0 else -a)
    ub = np.uint64(b if b > 0 else -b)
    uc = np.uint64(c if c > 0 else -c)
    hi, lo = _umul128(ua, ub)
    q_hi, q, r, ok = _udiv128(hi, lo, uc)
    if q_hi != 0:
        return 0, False
    # half-even: round up when the remainder is more than half, or exactly half and q is odd
    twice = r * np.uint64(2)  # r < uc < 2**63 so this fits
    if twice > uc or (twice == uc and (q & np.uint64(1)) == 1):
        q = q + np.uint64(1)
    if q > np.uint64(INT64_MAX):
        return 0, False
    v = np.int64(q)
    return (-v if neg else v), True


@kernel(_nrt=False)
def div_half_even(a: int, c: int) -> tuple[int, bool]:
    """round_half_even(a / c)."""
    return mul_div_half_even(a, 1, c)


@kernel(_nrt=False)
def mul_div_ceil_nonneg_div(a: int, b: int, c: int) -> tuple[int, bool]:
    """ceil(a * b / c) for c > 0 (toward +infinity for either sign of a*b), exactly."""
    if c <= 0:
        return 0, False
    if a == 0 or b == 0:
        return 0, True
    if a == INT64_MIN or b == INT64_MIN:
        return 0, False
    neg = (a < 0) != (b < 0)
    ua = np.uint64(a if a > 0 else -a)
    ub = np.uint64(b if b > 0 else -b)
    hi, lo = _umul128(ua, ub)
    q_hi, q, r, ok = _udiv128(hi, lo, np.uint64(c))
    if q_hi != 0:
        return 0, False
    if not neg and r != 0:
        q = q + np.uint64(1)  # positive: ceil rounds the magnitude up; negative: truncation is ceil
    if q > np.uint64(INT64_MAX):
        return 0, False
    v = np.int64(q)
    return (-v if neg else v), True
