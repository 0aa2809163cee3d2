"""numba primitives for scanning venue JSON frames straight from their bytes.

Why not a JSON library: cysimdjson and orjson turn JSON numbers into floats and, worse for
latency, cost a Python object per field. Market-data frames are small, flat and regular, so the
venue kernels walk the raw bytes themselves with these helpers: they read keys, skip values they
do not need, and turn decimal *text* into int64 units digit by digit (the same rules as
``bot4d.venues.numbers.parse_units``, against which the tests check them).

Every helper is bounds-checked by hand (numba does not check indices) and reports failure with a
negative index instead of raising, so random bytes can never crash a frame handler.
"""
from __future__ import annotations

import numba
import numpy as np

from bot4d.jitcache import drop_stale_cache, kernel  # noqa: F401  (venue modules call scan.drop_stale_cache)
from bot4d.records import MD_FLAG_FRAME_END, MD_LEVEL
from bot4d.venues.sync import Reason

INT64_MAX = (1 << 63) - 1
# v * 10 + d overflows int64 exactly when v > _OVF_V or (v == _OVF_V and d > _OVF_D): a compare
# per digit instead of a signed division by 10
_OVF_V = INT64_MAX // 10
_OVF_D = INT64_MAX % 10

# parse_dec error codes
DEC_OK = 0
DEC_SYNTAX = 1     # empty, non-digit, two dots, not a plain decimal
DEC_NEGATIVE = 2   # leading '-'
DEC_PRECISION = 3  # a non-zero digit beyond the scale
DEC_OVERFLOW = 4   # does not fit in int64 at the scale

_Q = 34      # '"'
_BS = 92     # '\\'
_LBRACE = 123
_RBRACE = 125
_LBRACK = 91
_RBRACK = 93
_COMMA = 44
_COLON = 58
_DOT = 46
_MINUS = 45

# emit_levels results are Reason codes so callers can count them directly
LV_OK = int(Reason.OK)
LV_MALFORMED = int(Reason.MALFORMED_JSON)
LV_BAD_PRICE = int(Reason.BAD_PRICE)
LV_BAD_QTY = int(Reason.BAD_QTY)
LV_BATCH_FULL = int(Reason.BATCH_FULL)


@numba.njit(cache=True, nogil=True, inline="always")
def skip_ws(buf, i, n):
    while i < n:
        c = buf[i]
        if c == 32 or c == 10 or c == 13 or c == 9:
            i += 1
        else:
            break
    return i


@kernel
def skip_string(buf, i, n):
    """``buf[i]`` is an opening quote; return the index after the closing quote, or -1."""
    if i >= n or buf[i] != _Q:
        return -1
    i += 1
    while i < n:
        c = buf[i]
        if c == _BS:
            i += 2
            continue
        if c == _Q:
            return i + 1
        if c < 32:  # raw control characters are not allowed inside JSON strings
            return -1
        i += 1
    return -1


@kernel
def skip_value(buf, i, n):
    """Skip one JSON value starting at ``i`` (after whitespace); return the index after it or -1.

    Nested arrays/objects are skipped by counting brackets outside strings; their inner
    syntax is checked only loosely, which is fine because their content is never used.
    """
    i = skip_ws(buf, i, n)
    if i >= n:
        return -1
    c = buf[i]
    if c == _Q:
        return skip_string(buf, i, n)
    if c == _LBRACE or c == _LBRACK:
        depth = 0
        while i < n:
            c = buf[i]
            if c == _Q:
                i = skip_string(buf, i, n)
                if i < 0:
                    return -1
                continue
            if c == _LBRACE or c == _LBRACK:
                depth += 1
                if depth > 64:
                    return -1
            elif c == _RBRACE or c == _RBRACK:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    # number or literal: run of characters that may appear in them
    j = i
    while j < n:
        c = buf[j]
        if (48 <= c <= 57) or c == _MINUS or c == 43 or c == _DOT or c == 101 or c == 69 \
                or (97 <= c <= 122):
            j += 1
        else:
            break
    if j == i:
        return -1
    return j


@kernel
def parse_int(buf, i, n):
    """A JSON integer at ``i`` -> (value, end); end == -1 if it is not a plain int64 integer."""
    neg = False
    if i < n and buf[i] == _MINUS:
        neg = True
        i += 1
    start = i
    v = 0
    while i < n:
        c = buf[i]
        if 48 <= c <= 57:
            d = c - 48
            if v >= _OVF_V and (v > _OVF_V or d > _OVF_D):
                return 0, -1
            v = v * 10 + d
            i += 1
        else:
            break
    if i == start:
        return 0, -1
    if i < n and (buf[i] == _DOT or buf[i] == 101 or buf[i] == 69):
        return 0, -1  # a fraction or exponent where an id/timestamp belongs
    return (-v if neg else v), i


@kernel
def parse_dec(buf, s, e, scale):
    """Decimal text ``buf[s:e]`` -> (units of 10**-scale, DEC_* code); rules of parse_units."""
    if s >= e:
        return 0, DEC_SYNTAX
    if buf[s] == _MINUS:
        return 0, DEC_NEGATIVE
    v = 0
    ndig = 0
    frac = -1  # digits seen after the dot; -1 = no dot yet
    for k in range(s, e):
        c = buf[k]
        if 48 <= c <= 57:
            d = c - 48
            ndig += 1
            if frac >= 0:
                if frac >= scale:
                    if d != 0:
                        return 0, DEC_PRECISION
                    continue  # trailing zeros beyond the scale are exact
                frac += 1
            if v >= _OVF_V and (v > _OVF_V or d > _OVF_D):
                return 0, DEC_OVERFLOW
            v = v * 10 + d
        elif c == _DOT and frac < 0:
            frac = 0
        else:
            return 0, DEC_SYNTAX
    if ndig == 0:
        return 0, DEC_SYNTAX
    if frac < 0:
        frac = 0
    for _ in range(scale - frac):
        if v > INT64_MAX // 10:
            return 0, DEC_OVERFLOW
        v *= 10
    return v, DEC_OK


@kernel
def read_key(buf, i, n):
    """At a key's opening quote: -> (key_start, key_end, index of the value) or (-1, -1, -1)."""
    j = skip_string(buf, i, n)
    if j < 0:
        return -1, -1, -1
    ks = i + 1
    ke = j - 1
    j = skip_ws(buf, j, n)
    if j >= n or buf[j] != _COLON:
        return -1, -1, -1
    j = skip_ws(buf, j + 1, n)
    if j >= n:
        return -1, -1, -1
    return ks, ke, j


@kernel
def after_value(buf, i, n):
    """After a member's value: -> (i, 0) at the next key's quote, (i, 1) after '}', or (-1, -1)."""
    i = skip_ws(buf, i, n)
    if i >= n:
        return -1, -1
    c = buf[i]
    if c == _COMMA:
        i = skip_ws(buf, i + 1, n)
        if i < n and buf[i] == _Q:
            return i, 0
        return -1, -1
    if c == _RBRACE:
        return i + 1, 1
    return -1, -1


@kernel
def string_span(buf, i, n):
    """A JSON string without escapes at ``i`` -> (start, end, next) of its content, or -1s."""
    if i >= n or buf[i] != _Q:
        return -1, -1, -1
    j = i + 1
    while j < n:
        c = buf[j]
        if c == _Q:
            return i + 1, j, j + 1
        if c == _BS or c < 32:
            return -1, -1, -1  # no venue number or symbol needs escapes: refuse them
        j += 1
    return -1, -1, -1


@kernel
def eq_const(buf, s, e, const):
    if e - s != const.shape[0]:
        return False
    for k in range(const.shape[0]):
        if buf[s + k] != const[k]:
            return False
    return True


@kernel
def only_ws_left(buf, i, n):
    return skip_ws(buf, i, n) == n


# --- level arrays -> records ----------------------------------------------------------------
@kernel
def emit_levels(buf, s, e, side, inst, ps, qs, mp, mq, seq, ets, rts, out, k, cap):
    """Parse a ``[["price","qty"],...]`` array into MD_LEVEL records from ``out[k]``.

    Returns (new k, reason). On any bad level nothing is taken back here: the caller rewinds.
    """
    n = e
    i = skip_ws(buf, s + 1, n)
    if i < n and buf[i] == 93:
        return k, LV_OK
    while True:
        if i >= n or buf[i] != 91:
            return k, LV_MALFORMED
        i = skip_ws(buf, i + 1, n)
        p0, p1, i = string_span(buf, i, n)
        if i < 0:
            return k, LV_MALFORMED
        i = skip_ws(buf, i, n)
        if i >= n or buf[i] != 44:
            return k, LV_MALFORMED
        i = skip_ws(buf, i + 1, n)
        q0, q1, i = string_span(buf, i, n)
        if i < 0:
            return k, LV_MALFORMED
        i = skip_ws(buf, i, n)
        while i < n and buf[i] == 44:  # extra members of a level (none today): ignore
            i = skip_value(buf, i + 1, n)
            if i < 0:
                return k, LV_MALFORMED
            i = skip_ws(buf, i, n)
        if i >= n or buf[i] != 93:
            return k, LV_MALFORMED
        i = skip_ws(buf, i + 1, n)
        px, err = parse_dec(buf, p0, p1, ps)
        if err != DEC_OK or px <= 0 or px > mp:
            return k, LV_BAD_PRICE
        qty, err = parse_dec(buf, q0, q1, qs)
        if err != DEC_OK or qty > mq:
            return k, LV_BAD_QTY
        if k >= cap:
            return k, LV_BATCH_FULL
        r = out[k]
        r.seq = 0
        r.kind = MD_LEVEL
        r.side = side
        r.flags = 0
        r.instrument = inst
        r.price = px
        r.qty = qty
        r.venue_seq = seq
        r.exch_ts_ns = ets
        r.recv_ts_ns = rts
        r.aux_px = 0
        r.aux_qty = 0
        k += 1
        if i < n and buf[i] == 44:
            i = skip_ws(buf, i + 1, n)
            continue
        if i < n and buf[i] == 93:
            return k, LV_OK
        return k, LV_MALFORMED


@kernel
def emit_one(out, k, kind, side, inst, px, qty, seq, ets, rts, apx, aqty):
    r = out[k]
    r.seq = 0
    r.kind = kind
    r.side = side
    r.flags = MD_FLAG_FRAME_END
    r.instrument = inst
    r.price = px
    r.qty = qty
    r.venue_seq = seq
    r.exch_ts_ns = ets
    r.recv_ts_ns = rts
    r.aux_px = apx
    r.aux_qty = aqty



# --- symbol table: venue symbol bytes -> instrument id, inside kernels ------------------------
SYM_MAX = 32


@kernel
def sym_hash(buf, s, e):
    h = np.uint64(1469598103934665603)
    for k in range(s, e):
        h = (h ^ np.uint64(buf[k])) * np.uint64(1099511628211)
    return h


SYM_LEN = SYM_MAX       # column holding the symbol length
SYM_ID = SYM_MAX + 1    # 4 columns: instrument id + 1, little-endian (0 = empty slot)
SYM_COLS = SYM_MAX + 8


@kernel
def sym_lookup(buf, s, e, tab):
    """Instrument id of the symbol ``buf[s:e]``, or -1 when it is not configured.

    ``tab`` (uint8[cap, SYM_COLS]) holds symbol bytes, length and id in one array because
    every extra array argument costs the caller dispatch time on each kernel call.
    """
    ln = e - s
    if ln <= 0 or ln > SYM_MAX:
        return -1
    cap = tab.shape[0]
    slot = np.int64(sym_hash(buf, s, e) & np.uint64(cap - 1))
    for _ in range(cap):
        idv = (np.int64(tab[slot, SYM_ID]) | (np.int64(tab[slot, SYM_ID + 1]) << 8)
               | (np.int64(tab[slot, SYM_ID + 2]) << 16) | (np.int64(tab[slot, SYM_ID + 3]) << 24))
        if idv == 0:
            return -1
        if tab[slot, SYM_LEN] == ln:
            same = True
            for k in range(ln):
                if tab[slot, k] != buf[s + k]:
                    same = False
                    break
            if same:
                return idv - 1
        slot = (slot + 1) & (cap - 1)
    return -1


class SymbolTable:
    """Open-addressing table of symbols for ``sym_lookup``, built once from the configuration."""

    def __init__(self, symbols: dict[str, int]) -> None:
        cap = 16
        while cap < 2 * max(1, len(symbols)):
            cap *= 2
        self.tab = np.zeros((cap, SYM_COLS), np.uint8)
        for sym, iid in symbols.items():
            b = sym.encode("ascii")
            if not 0 < len(b) <= SYM_MAX:
                raise ValueError(f"symbol {sym!r} longer than {SYM_MAX} bytes")
            if not 0 <= iid < (1 << 31) - 1:
                raise ValueError(f"instrument id {iid} out of range")
            arr = np.frombuffer(b, np.uint8)
            slot = int(sym_hash(arr, 0, len(b)) & np.uint64(cap - 1))
            while self.tab[slot, SYM_ID:SYM_ID + 4].any():
                slot = (slot + 1) & (cap - 1)
            self.tab[slot, : len(b)] = arr
            self.tab[slot, SYM_LEN] = len(b)
            self.tab[slot, SYM_ID:SYM_ID + 4] = np.frombuffer((iid + 1).to_bytes(4, "little"),
                                                              np.uint8)

    def lookup(self, symbol: str) -> int:
        b = np.frombuffer(symbol.encode("ascii"), np.uint8)
        return int(sym_lookup(b, 0, len(b), self.tab))


# per-instrument parameter/state columns shared by the venue kernels (int64[n, I_COLS]): one
# array instead of six, for the same dispatch-cost reason
I_PSCALE, I_QSCALE, I_MAXPX, I_MAXQTY, I_STATE, I_LAST_U, I_LAST_SEQ = 0, 1, 2, 3, 4, 5, 6
I_COLS = 8
# work array (int64[W_SIZE]): reason counters first, then the frame parser's scratch fields
W_FLD = 32
W_SIZE = 96




def _venue_deps() -> list[str]:
    """Sources compiled into the Binance/Bybit kernels besides their own module."""
    import bot4d.records as _r
    import bot4d.venues.sync as _y

    return [__file__, _r.__file__, _y.__file__]


def frames_to_batch(frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate frames into one byte buffer and their end offsets (start of i = end of i-1).

    A feed client copies each frame into a preallocated buffer as it arrives; this helper does
    the same for tests and replays.
    """
    buf = np.frombuffer(b"".join(frames), np.uint8)
    ends = np.fromiter(map(len, frames), np.int64, len(frames)).cumsum()
    return buf, ends


def const(text: str) -> np.ndarray:
    """A byte constant for ``eq_const`` (numba freezes module-level arrays into the code)."""
    return np.frombuffer(text.encode("ascii"), np.uint8).copy()


@kernel
def skip_levels(buf, i, n):
    """Skip a ``[["p","q"],...]`` array quickly; return the index after it or -1.

    Level arrays hold only short strings of digits, so strings are skipped by looking for the
    closing quote alone; an escaped quote would mis-split a string here, but emit_levels then
    refuses the escape (string_span), so a malformed frame can never be applied.
    """
    depth = 0
    while i < n:
        c = buf[i]
        if c == _Q:
            i += 1
            while i < n and buf[i] != _Q:
                i += 1
        elif c == _LBRACK:
            depth += 1
        elif c == _RBRACK:
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == _LBRACE or c == _RBRACE:
            return -1
        i += 1
    return -1
