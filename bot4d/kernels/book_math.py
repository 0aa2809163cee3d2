"""Exact 128-bit helpers for the book's derived figures (microprice, VWAP, imbalance).

A price times a quantity does not fit in int64 for ordinary instruments (6e12 price units times
1e8 quantity units), and numba has no int128, so products and sums of products are carried as
(hi, lo) pairs of uint64 and divided by a 64-bit divisor with a shift-subtract long division.
Everything is explicit ``np.uint64``: numba turns mixed int64/uint64 arithmetic into float64,
which would silently round money.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from bot4d.jitcache import kernel

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_S63 = np.uint64(63)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@nb.njit(cache=True, nogil=True, inline="always")
def mul64(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Full 128-bit product of two uint64: (hi, lo)."""
    a0 = a & _M32
    a1 = a >> _S32
    b0 = b & _M32
    b1 = b >> _S32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    p11 = a1 * b1
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << _S32)
    hi = p11 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)
    return hi, lo


@nb.njit(cache=True, nogil=True, inline="always")
def add128(hi: np.uint64, lo: np.uint64, hi2: np.uint64, lo2: np.uint64) -> tuple[np.uint64, np.uint64]:
    """(hi, lo) + (hi2, lo2), modulo 2**128 (callers keep far below it)."""
    s = lo + lo2
    c = _ONE if s < lo else _ZERO
    return hi + hi2 + c, s


@kernel
def div128(hi: np.uint64, lo: np.uint64, d: np.uint64) -> tuple[np.uint64, np.uint64]:
    """(quotient, remainder) of the 128-bit (hi, lo) by d > 0; requires hi < d so that the
    quotient fits 64 bits (callers guarantee it: every quotient here is a price or a ratio)."""
    if hi == _ZERO:
        return lo // d, lo % d
    r = hi
    q = _ZERO
    for _ in range(64):
        top = r >> _S63
        r = (r << _ONE) | (lo >> _S63)
        lo = lo << _ONE
        q = q << _ONE
        # when the shifted-out bit was set the true remainder is 2**64 + r, which is >= d; the
        # wrapping subtraction below then yields the exact (smaller than d) result
        if top != _ZERO or r >= d:
            r = r - d
            q = q | _ONE
    return q, r


@kernel
def muldiv_floor(a: np.int64, b: np.int64, d: np.int64) -> np.int64:
    """floor(a * b / d) exactly, for a, b >= 0 and d > 0 with a result that fits int64."""
    hi, lo = mul64(np.uint64(a), np.uint64(b))
    q, _ = div128(hi, lo, np.uint64(d))
    return np.int64(q)


@kernel
def frac_e9(r: np.uint64, d: np.uint64) -> np.int64:
    """floor(r * 1e9 / d) for 0 <= r < d: the first nine decimals of the fraction r/d."""
    hi, lo = mul64(r, np.uint64(1_000_000_000))
    q, _ = div128(hi, lo, d)
    return np.int64(q)


@intrinsic
def memmove_within(typingctx, arr, dst, src, count):
    """``arr[dst:dst+count] = arr[src:src+count]`` for a contiguous 1-D array, overlap allowed,
    as one ``llvm.memmove`` (libc's vectorised memmove): a numba slice assignment between
    overlapping views would copy through a temporary array (an allocation), and an element loop
    is several times slower on the long shifts of deep books. No bounds checks: callers own them."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        raise TypingError(f"memmove_within: expected a contiguous 1-D array, got {arr}")
    sig = types.void(arr, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary, d, s, c = args
        a = context.make_array(aryty)(context, builder, ary)
        pd = cgutils.get_item_pointer(context, builder, aryty, a, [d], wraparound=False)
        ps = cgutils.get_item_pointer(context, builder, aryty, a, [s], wraparound=False)
        cgutils.raw_memmove(builder, pd, ps, c, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        return context.get_dummy_value()

    return sig, codegen
