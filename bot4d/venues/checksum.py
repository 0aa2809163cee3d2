"""Venue book checksums (CRC32), from the venue's text or from the int-unit book.

Kraken and OKX publish a CRC32 over the text of the top of their book. Two paths compute it:

* from text (``kraken_text_checksum`` / ``okx_text_checksum``): exactly the venue's recipe over the
  strings it sent; this is the reference, used by ``book_checksum`` in the venue modules;
* from the maintained int-unit book (``kraken_book_crc`` / ``okx_book_crc``, numba): the text is
  rebuilt digit by digit from the units, so no string is ever stored per level. Kraken sends a
  fixed number of decimals per pair (v1 strings and v2 numbers alike) and its recipe drops the dot
  and the leading zeros, so a level's token is just the decimal digits of its units at the pair's
  decimals. OKX sends the shortest decimal ("30316", "0.06523858": checked on the recordings), so
  its text is the units with trailing fractional zeros and a bare dot stripped.

Both paths are cross-checked in the tests on random books.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numba as nb
import numpy as np

from bot4d.jitcache import kernel


def _crc_table() -> np.ndarray:
    t = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t[i] = c
    return t


CRC_TABLE = _crc_table()


def _crc_tables8() -> np.ndarray:
    """Slicing-by-8 tables: T[k][b] is the CRC of byte b followed by k zero bytes."""
    t = np.zeros((8, 256), np.uint32)
    t[0] = CRC_TABLE
    for k in range(1, 8):
        for b in range(256):
            c = int(t[k - 1][b])
            t[k][b] = (c >> 8) ^ int(CRC_TABLE[c & 0xFF])
    return t


CRC_TABLE8 = _crc_tables8()
POW10 = np.array([10**i for i in range(19)], np.int64)

Levels = Sequence[tuple[str, str]]


# --- reference: over the venue's own text ------------------------------------------------------
def kraken_token(text: str) -> str:
    """Kraken's per-number formatting: remove the dot, then the leading zeros."""
    return text.replace(".", "").lstrip("0")


def kraken_text_checksum(bids: Levels, asks: Levels, depth: int = 10) -> int:
    """Unsigned CRC32 of asks (best first) then bids (best first), top ``depth`` each."""
    parts = [kraken_token(p) + kraken_token(q) for p, q in list(asks)[:depth]]
    parts += [kraken_token(p) + kraken_token(q) for p, q in list(bids)[:depth]]
    return zlib.crc32("".join(parts).encode("ascii")) & 0xFFFFFFFF


def okx_text_checksum(bids: Levels, asks: Levels, depth: int = 25) -> int:
    """Signed CRC32 of "bid:ask" pairs interleaved best first; the longer side continues alone."""
    bids, asks = list(bids)[:depth], list(asks)[:depth]
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    crc = zlib.crc32(":".join(parts).encode("ascii")) & 0xFFFFFFFF
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def to_signed32(crc: int) -> int:
    crc &= 0xFFFFFFFF
    return crc - (1 << 32) if crc >= 1 << 31 else crc


# --- in-kernel: from int units ----------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always")
def crc_byte(crc: np.uint32, b: np.int64, table: np.ndarray) -> np.uint32:
    return table[(crc ^ np.uint32(b)) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))


@nb.njit(cache=True, nogil=True, inline="always")
def crc_digits_buf(crc: np.uint32, v: np.int64, table: np.ndarray, scratch: np.ndarray) -> np.uint32:
    """Feed the decimal digits of v > 0 (no leading zeros); v == 0 feeds nothing. Digits are
    produced two at a time by division by the constant 100 (a multiply, not a hardware divide)
    into ``scratch`` (>= 20 bytes), then fed most significant first."""
    if v <= 0:
        return crc
    n = 0
    while v >= 100:
        q = v // 100
        r = v - q * 100
        scratch[n] = 48 + r % 10
        scratch[n + 1] = 48 + r // 10
        n += 2
        v = q
    if v >= 10:
        scratch[n] = 48 + v % 10
        scratch[n + 1] = 48 + v // 10
        n += 2
    else:
        scratch[n] = 48 + v
        n += 1
    for k in range(n - 1, -1, -1):
        crc = crc_byte(crc, scratch[k], table)
    return crc


@kernel
def crc_digits(crc: np.uint32, v: np.int64, table: np.ndarray) -> np.uint32:
    """crc_digits_buf with its own scratch (for callers outside the per-level loops)."""
    scratch = np.empty(24, np.uint8)
    return crc_digits_buf(crc, v, table, scratch)


@kernel
def crc_decimal(crc: np.uint32, units: np.int64, scale: np.int64, table: np.ndarray) -> np.uint32:
    """Feed the shortest decimal text of units * 10**-scale ("30316", "0.0652", "5.16")."""
    p = np.int64(1)
    for _ in range(scale):
        p *= 10
    whole = units // p
    frac = units - whole * p
    if whole == 0:
        crc = crc_byte(crc, 48, table)
    else:
        crc = crc_digits(crc, whole, table)
    if frac != 0:
        crc = crc_byte(crc, 46, table)
        width = scale
        while frac % 10 == 0:
            frac //= 10
            width -= 1
        # leading zeros of the fraction, then its digits
        lead = width
        f = frac
        while f > 0:
            f //= 10
            lead -= 1
        for _ in range(lead):
            crc = crc_byte(crc, 48, table)
        crc = crc_digits(crc, frac, table)
    return crc


@kernel
def crc32_buf(buf: np.ndarray, n: int, t8: np.ndarray) -> np.uint32:
    """zlib-compatible CRC32 of buf[:n], eight bytes per step (slicing-by-8): the byte-at-a-time
    loop is one long dependency chain and cost ~2 ns/byte here, this about a quarter of it."""
    crc = np.uint32(0xFFFFFFFF)
    i = 0
    while i + 8 <= n:
        lo = crc ^ (np.uint32(buf[i]) | (np.uint32(buf[i + 1]) << np.uint32(8))
                    | (np.uint32(buf[i + 2]) << np.uint32(16)) | (np.uint32(buf[i + 3]) << np.uint32(24)))
        crc = (t8[7, lo & np.uint32(0xFF)] ^ t8[6, (lo >> np.uint32(8)) & np.uint32(0xFF)]
               ^ t8[5, (lo >> np.uint32(16)) & np.uint32(0xFF)] ^ t8[4, lo >> np.uint32(24)]
               ^ t8[3, buf[i + 4]] ^ t8[2, buf[i + 5]] ^ t8[1, buf[i + 6]] ^ t8[0, buf[i + 7]])
        i += 8
    while i < n:
        crc = t8[0, (crc ^ np.uint32(buf[i])) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
        i += 1
    return crc ^ np.uint32(0xFFFFFFFF)


# "00".."99": two digits per table read
DIGITS2 = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode("ascii"), np.uint8).copy()


@nb.njit(cache=True, nogil=True, inline="always")
def put_digits(out: np.ndarray, n: int, v: np.int64, tmp: np.ndarray) -> int:
    """Append the decimal digits of v > 0 to out[n:] (nothing for 0); return the new length.
    Unsigned arithmetic throughout: numba's signed // carries Python's floor-division sign
    fix-ups, and mixing int64 with uint64 would silently go through float64."""
    if v <= 0:
        return n
    u = np.uint64(v)
    h = np.uint64(100)
    one = np.uint64(1)
    two = np.uint64(2)
    m = 0
    while u >= h:
        q = u // h
        r = u - q * h
        tmp[m] = DIGITS2[two * r + one]
        tmp[m + 1] = DIGITS2[two * r]
        m += 2
        u = q
    if u >= np.uint64(10):
        tmp[m] = DIGITS2[two * u + one]
        tmp[m + 1] = DIGITS2[two * u]
        m += 2
    else:
        tmp[m] = DIGITS2[two * u + one]
        m += 1
    for k in range(m - 1, -1, -1):
        out[n] = tmp[k]
        n += 1
    return n


@kernel
def kraken_book_crc_fast(bid_px, bid_qty, nbid, ask_px, ask_qty, nask, px_div, px_mul, qty_div,
                         qty_mul, t8, text) -> np.int64:
    """kraken_book_crc with the checksum text built in ``text`` (>= 800 bytes, caller-owned:
    no allocation) and hashed eight bytes at a time."""
    tmp = text[text.shape[0] - 24:]
    n = 0
    for i in range(min(nask, 10)):
        if ask_px[i] % px_div != 0 or ask_qty[i] % qty_div != 0:
            return -1
        n = put_digits(text, n, ask_px[i] // px_div * px_mul, tmp)
        n = put_digits(text, n, ask_qty[i] // qty_div * qty_mul, tmp)
    for i in range(min(nbid, 10)):
        if bid_px[i] % px_div != 0 or bid_qty[i] % qty_div != 0:
            return -1
        n = put_digits(text, n, bid_px[i] // px_div * px_mul, tmp)
        n = put_digits(text, n, bid_qty[i] // qty_div * qty_mul, tmp)
    return np.int64(crc32_buf(text, n, t8))


@nb.njit(cache=True, nogil=True, inline="always")
def put_decimal(out: np.ndarray, n: int, units: np.int64, scale: np.int64, tmp: np.ndarray) -> int:
    """Append the shortest decimal text of units * 10**-scale ("30316", "0.0652") to out[n:].
    Unsigned, constant divisors only (one variable division per number), no digit loops over
    Python-semantics floor division."""
    one = np.uint64(1)
    two = np.uint64(2)
    ten = np.uint64(10)
    u = np.uint64(units)
    p = np.uint64(POW10[scale])
    whole = u // p
    f = u - whole * p
    if whole == np.uint64(0):
        out[n] = 48
        n += 1
    else:
        n = put_digits(out, n, np.int64(whole), tmp)
    if f != np.uint64(0):
        # the fraction as exactly `scale` digits, least significant first, then drop its
        # trailing zeros (they lead in tmp) and write the rest most significant first
        for m in range(scale):
            q = f // ten
            tmp[m] = DIGITS2[two * (f - q * ten) + one]
            f = q
        lo = 0
        while tmp[lo] == 48:
            lo += 1
        out[n] = 46
        n += 1
        for k in range(scale - 1, lo - 1, -1):
            out[n] = tmp[k]
            n += 1
    return n


@kernel
def okx_book_crc_fast(bid_px, bid_qty, nbid, ask_px, ask_qty, nask, px_scale, qty_scale, t8,
                      text) -> np.int64:
    """okx_book_crc with the text built in ``text`` (>= 2200 bytes, caller-owned) and hashed
    eight bytes at a time: no allocation."""
    tmp = text[text.shape[0] - 24:]
    nb_ = min(nbid, 25)
    na_ = min(nask, 25)
    n = 0
    for i in range(max(nb_, na_)):
        if i < nb_:
            if n > 0:
                text[n] = 58
                n += 1
            n = put_decimal(text, n, bid_px[i], px_scale, tmp)
            text[n] = 58
            n += 1
            n = put_decimal(text, n, bid_qty[i], qty_scale, tmp)
        if i < na_:
            if n > 0:
                text[n] = 58
                n += 1
            n = put_decimal(text, n, ask_px[i], px_scale, tmp)
            text[n] = 58
            n += 1
            n = put_decimal(text, n, ask_qty[i], qty_scale, tmp)
    v = np.int64(crc32_buf(text, n, t8))
    if v >= 2147483648:
        v -= 4294967296
    return v


@kernel
def kraken_book_crc(bid_px, bid_qty, nbid, ask_px, ask_qty, nask, px_div, px_mul, qty_div, qty_mul,
                    table) -> np.int64:
    """Kraken's checksum from best-first int levels. A level's token is the digits of its value
    at the pair's wire decimals: units // div * mul, where div = 10**(scale - wire decimals) when
    the book's scale is finer and mul = 10**(wire decimals - scale) when it is coarser. Returns -1
    when a level is not a whole number at the wire decimals (Kraken could not have sent it)."""
    crc = np.uint32(0xFFFFFFFF)
    sc = np.empty(24, np.uint8)  # one scratch per checksum, not per number
    for i in range(min(nask, 10)):
        if ask_px[i] % px_div != 0 or ask_qty[i] % qty_div != 0:
            return -1
        crc = crc_digits_buf(crc, ask_px[i] // px_div * px_mul, table, sc)
        crc = crc_digits_buf(crc, ask_qty[i] // qty_div * qty_mul, table, sc)
    for i in range(min(nbid, 10)):
        if bid_px[i] % px_div != 0 or bid_qty[i] % qty_div != 0:
            return -1
        crc = crc_digits_buf(crc, bid_px[i] // px_div * px_mul, table, sc)
        crc = crc_digits_buf(crc, bid_qty[i] // qty_div * qty_mul, table, sc)
    return np.int64(crc ^ np.uint32(0xFFFFFFFF))


def kraken_scaling(scale: int, wire_decimals: int) -> tuple[int, int]:
    """(div, mul) turning units at ``scale`` into the integer Kraken's text spells."""
    if scale >= wire_decimals:
        return 10 ** (scale - wire_decimals), 1
    return 1, 10 ** (wire_decimals - scale)


@kernel
def okx_book_crc(bid_px, bid_qty, nbid, ask_px, ask_qty, nask, px_scale, qty_scale, table) -> np.int64:
    """OKX's signed checksum from best-first int levels (top 25 each, interleaved bid:ask)."""
    crc = np.uint32(0xFFFFFFFF)
    nb_ = min(nbid, 25)
    na_ = min(nask, 25)
    first = True
    for i in range(max(nb_, na_)):
        if i < nb_:
            if not first:
                crc = crc_byte(crc, 58, table)
            first = False
            crc = crc_decimal(crc, bid_px[i], px_scale, table)
            crc = crc_byte(crc, 58, table)
            crc = crc_decimal(crc, bid_qty[i], qty_scale, table)
        if i < na_:
            if not first:
                crc = crc_byte(crc, 58, table)
            first = False
            crc = crc_decimal(crc, ask_px[i], px_scale, table)
            crc = crc_byte(crc, 58, table)
            crc = crc_decimal(crc, ask_qty[i], qty_scale, table)
    v = np.int64(crc ^ np.uint32(0xFFFFFFFF))
    if v >= 2147483648:
        v -= 4294967296
    return v


def warmup() -> None:
    z = np.array([5, 6], np.int64)
    kraken_book_crc(z, z, 2, z, z, 2, 1, 1, 1, 1, CRC_TABLE)
    kraken_book_crc_fast(z, z, 2, z, z, 2, 1, 1, 1, 1, CRC_TABLE8, np.zeros(1024, np.uint8))
    okx_book_crc(z, z, 2, z, z, 2, 1, 1, CRC_TABLE)
    okx_book_crc_fast(z, z, 2, z, z, 2, 1, 1, CRC_TABLE8, np.zeros(4096, np.uint8))
