"""L2 order books: one per instrument, in preallocated int64 arrays, updated by a nogil kernel.

Layout (read this before touching the arrays directly)
------------------------------------------------------
``Books`` is a NamedTuple of numpy arrays, so numba kernels take it as one argument and Python
code can still read every array. Each instrument ``i`` has one row per side:

* ``bid_px[i, :bid_len[i]]``, ``bid_qty[...]`` and ``ask_px[i, :ask_len[i]]``, ``ask_qty[...]``
  hold the levels stored **worst-first**: bids in ascending price, asks in descending price, so
  the *best* level is the LAST one (index ``len - 1``). Real feeds change the top of the book all
  the time and the deep end rarely; with the best level at the end, adding or removing a level near
  the top shifts only the few levels above it instead of the whole row (5,000 levels = 80 KB per
  insert best-first). Use ``top_n`` (or ``Books.top`` / ``Books.levels``) to get levels
  best-first, e.g. for venue checksums.
* Every stored quantity is > 0 and prices are strictly monotonic within a row.

Records: ``bot4d.records.MD_UPDATE_DTYPE``. ``MD_LEVEL`` sets (side, price) to qty; qty == 0
deletes, and deleting an absent level is not an error (venues send such deletes routinely).
``MD_CLEAR`` empties the instrument and resets its error code (a resync starts here).
``MD_SNAPSHOT_END`` is checked for a crossed book; ``MD_TRADE``/``MD_BBO`` are counted and
otherwise ignored. ``last_venue_seq[i]`` takes the ``venue_seq`` of every accepted book record
(LEVEL, CLEAR, SNAPSHOT_END) whose venue_seq is non-zero (0 means "the venue has none").

Bad input never raises and never corrupts silently: the record is skipped (or, for capacity, the
worst level is dropped), ``error[i]`` takes the code (sticky until the next MD_CLEAR), the
per-code counter ``err_counts[i, code]`` is bumped, and the batch summary in ``batch`` says which
code came first so the feed can resync that instrument. Codes are the ``ERR_*`` constants below.
A crossed book (best bid >= best ask) is legal for a moment inside a venue frame, so it is checked
at every record flagged ``MD_FLAG_FRAME_END``, at ``MD_SNAPSHOT_END`` and for every touched
instrument at the end of a batch; the book is kept as received and ``ERR_CROSSED`` is reported.

Range: prices must be in ``1..max_px[i]`` and quantities in ``0..max_qty[i]``. ``max_qty`` is
capped at ``INT64_MAX // (2 * capacity)`` so that any sum of quantities over both sides of a book
fits in int64; derived figures that multiply prices by quantities use exact 128-bit arithmetic
(``book_math``). No float anywhere.

Fixed-point conventions of the accessors:
* ``mid`` = floor((best_bid + best_ask) / 2) in price units;
* ``microprice`` and ``vwap_to_fill`` return ``(units, frac_e9)``: the value is
  ``units + frac_e9 / 1e9`` price units, truncated (floor) at 1e-9 of a unit — exact otherwise;
* ``imbalance`` = (bid_depth - ask_depth) / (bid_depth + ask_depth) scaled by 1e9, truncated
  toward zero, in [-1e9, 1e9].
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from bot4d.kernels.book_math import add128, div128, frac_e9, mul64, muldiv_floor
from bot4d.records import (
    MD_BBO,
    MD_CLEAR,
    MD_FLAG_FRAME_END,
    MD_LEVEL,
    MD_SNAPSHOT_END,
    MD_TRADE,
    MD_UPDATE_DTYPE,
    SIDE_ASK,
    SIDE_BID,
)

INT64_MAX = (1 << 63) - 1
MAX_PX_LIMIT = INT64_MAX // 4  # same ceiling as bot4d.instruments.Instrument.max_price_units
E9 = 1_000_000_000

# --- error codes (error[i], err_counts[i, code], batch[B_FIRST_ERROR]) --------------------------
ERR_OK = 0
ERR_NEG_QTY = 1         # quantity < 0: record skipped
ERR_BAD_PRICE = 2       # price <= 0 or > max_px[i]: record skipped
ERR_BAD_QTY = 3         # quantity > max_qty[i]: record skipped
ERR_CAPACITY = 4        # a side is full: the worst level was dropped (or the new, worse, one)
ERR_CROSSED = 5         # best bid >= best ask at a frame end / snapshot end / batch end
ERR_BAD_SIDE = 6        # side not SIDE_BID/SIDE_ASK: record skipped
ERR_BAD_KIND = 7        # unknown record kind: record skipped
ERR_BAD_INSTRUMENT = 8  # instrument id outside 0..n-1: counted in batch/glob only
N_ERR = 9
ERR_NAMES = ("OK", "NEG_QTY", "BAD_PRICE", "BAD_QTY", "CAPACITY", "CROSSED", "BAD_SIDE",
             "BAD_KIND", "BAD_INSTRUMENT")

# --- per-instrument counters (counters[i, CTR_*]) ------------------------------------------------
CTR_LEVELS = 0          # MD_LEVEL records applied (sets and deletes)
CTR_DELETE_ABSENT = 1   # deletes of a level that was not there (not an error)
CTR_CLEARS = 2
CTR_SNAPSHOT_ENDS = 3
CTR_IGNORED = 4         # trades, BBO: not book changes
N_CTR = 8

# --- batch summary of the last apply_batch call (batch[B_*]) --------------------------------------
B_APPLIED = 0           # MD_LEVEL + MD_CLEAR records applied
B_ERRORS = 1            # errors raised in the batch
B_FIRST_ERROR = 2       # code of the first error (0: none)
B_FIRST_ERROR_AT = 3    # index in `updates` of the record that raised it (-1: none / batch end)
B_FIRST_ERROR_INST = 4  # instrument of the first error (-1: none)
B_BAD_INSTRUMENT = 5    # cumulative: records whose instrument id was out of range
N_B = 8


class Books(NamedTuple):
    """L2 books of ``n`` instruments with ``capacity`` levels per side (see the module doc)."""

    bid_px: np.ndarray          # int64[n, cap], worst-first (ascending)
    bid_qty: np.ndarray         # int64[n, cap]
    ask_px: np.ndarray          # int64[n, cap], worst-first (descending)
    ask_qty: np.ndarray         # int64[n, cap]
    bid_len: np.ndarray         # int64[n]
    ask_len: np.ndarray         # int64[n]
    last_venue_seq: np.ndarray  # int64[n]
    error: np.ndarray           # int64[n], last ERR_* since the last MD_CLEAR (0 ok)
    max_px: np.ndarray          # int64[n], highest accepted price
    max_qty: np.ndarray         # int64[n], highest accepted quantity
    err_counts: np.ndarray      # int64[n, N_ERR]
    counters: np.ndarray        # int64[n, N_CTR]
    batch: np.ndarray           # int64[N_B]
    dirty: np.ndarray           # int64[n]: 1 while touched in the current batch
    dirty_list: np.ndarray      # int64[n]: the touched instruments, in order

    # --- Python conveniences (each calls the njit kernel of the same job) -----------------------
    @property
    def n_instruments(self) -> int:
        return self.bid_px.shape[0]

    @property
    def capacity(self) -> int:
        return self.bid_px.shape[1]

    def apply(self, updates: np.ndarray) -> int:
        """Apply every record of ``updates``; return the first error code raised (0 = clean).
        The number applied is ``self.batch[B_APPLIED]`` (and apply_batch's return value)."""
        apply_batch(self, updates, 0, len(updates))
        return int(self.batch[B_FIRST_ERROR])

    def set_limits(self, instrument: int, max_px: int, max_qty: int) -> None:
        """Accepted price/quantity range of one instrument (units); clamped to the safe ceilings."""
        if max_px <= 0 or max_qty <= 0:
            raise ValueError("limits must be positive")
        self.max_px[instrument] = min(max_px, MAX_PX_LIMIT)
        self.max_qty[instrument] = min(max_qty, qty_ceiling(self.capacity))

    def levels(self, instrument: int, side: int) -> list[tuple[int, int]]:
        """All levels of one side, best first, as (price units, qty units)."""
        if side == SIDE_BID:
            n = int(self.bid_len[instrument])
            px, q = self.bid_px[instrument, :n], self.bid_qty[instrument, :n]
        else:
            n = int(self.ask_len[instrument])
            px, q = self.ask_px[instrument, :n], self.ask_qty[instrument, :n]
        return [(int(px[k]), int(q[k])) for k in range(n - 1, -1, -1)]

    def top(self, instrument: int, n: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, int]:
        """Best ``n`` levels per side, best first: (bid_px, bid_qty, nbid, ask_px, ask_qty, nask),
        the argument order of the venue checksum kernels."""
        bp, bq = np.zeros(n, np.int64), np.zeros(n, np.int64)
        ap, aq = np.zeros(n, np.int64), np.zeros(n, np.int64)
        nb_, na_ = top_n(self, instrument, n, bp, bq, ap, aq)
        return bp, bq, int(nb_), ap, aq, int(na_)

    def best_bid(self, instrument: int) -> tuple[int, int]:
        p, q = best_bid(self, instrument)
        return int(p), int(q)

    def best_ask(self, instrument: int) -> tuple[int, int]:
        p, q = best_ask(self, instrument)
        return int(p), int(q)

    def mid(self, instrument: int) -> int:
        return int(mid(self, instrument))

    def microprice(self, instrument: int) -> tuple[int, int, bool]:
        u, f, ok = microprice(self, instrument)
        return int(u), int(f), bool(ok)

    def imbalance(self, instrument: int, n: int) -> int:
        return int(imbalance(self, instrument, n))

    def depth(self, instrument: int, n: int) -> tuple[int, int]:
        b, a = depth(self, instrument, n)
        return int(b), int(a)

    def vwap_to_fill(self, instrument: int, side: int, qty: int) -> tuple[int, int, int, bool]:
        u, f, filled, ok = vwap_to_fill(self, instrument, side, qty)
        return int(u), int(f), int(filled), bool(ok)

    def is_crossed(self, instrument: int) -> bool:
        return bool(is_crossed(self, instrument))


def qty_ceiling(capacity: int) -> int:
    """Largest max_qty for which any sum of quantities over both sides fits in int64."""
    return INT64_MAX // (2 * max(capacity, 1))


def make_books(n_instruments: int, capacity: int) -> Books:
    """Preallocate books for ``n_instruments`` with ``capacity`` levels per side."""
    if n_instruments < 1:
        raise ValueError(f"n_instruments must be >= 1, got {n_instruments}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    n, c = n_instruments, capacity
    b = Books(
        bid_px=np.zeros((n, c), np.int64), bid_qty=np.zeros((n, c), np.int64),
        ask_px=np.zeros((n, c), np.int64), ask_qty=np.zeros((n, c), np.int64),
        bid_len=np.zeros(n, np.int64), ask_len=np.zeros(n, np.int64),
        last_venue_seq=np.zeros(n, np.int64), error=np.zeros(n, np.int64),
        max_px=np.full(n, MAX_PX_LIMIT, np.int64), max_qty=np.full(n, qty_ceiling(c), np.int64),
        err_counts=np.zeros((n, N_ERR), np.int64), counters=np.zeros((n, N_CTR), np.int64),
        batch=np.zeros(N_B, np.int64),
        dirty=np.zeros(n, np.int64), dirty_list=np.zeros(n, np.int64),
    )
    b.batch[B_FIRST_ERROR_AT] = -1
    b.batch[B_FIRST_ERROR_INST] = -1
    return b


# ------------------------------------------------------------------------------------------------
# the update kernel
_SCAN = 8  # levels checked linearly from the top before falling back to binary search


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _find(px, n, key, s):
    """Position of key in the row ordered ascending by s*px (s=+1 bids, -1 asks):
    (index, found). Not found: the index where it would be inserted."""
    k = n - 1
    lim = n - _SCAN
    if lim < 0:
        lim = 0
    while k >= lim:
        kk = s * px[k]
        if kk == key:
            return k, True
        if kk < key:
            return k + 1, False
        k -= 1
    lo = 0
    hi = lim
    while lo < hi:
        m = (lo + hi) >> 1
        if s * px[m] < key:
            lo = m + 1
        else:
            hi = m
    return lo, (lo < lim and s * px[lo] == key)


@nb.njit(cache=True, nogil=True, _nrt=False)
def _set_level(px, qty, n, price, q, s):
    """Apply one level to a worst-first row of length n. Returns (new length, status) where
    status is 0 ok, 1 delete of an absent level, 2 capacity (worst dropped)."""
    key = s * price
    pos, found = _find(px, n, key, s)
    if found:
        if q != 0:
            qty[pos] = q
            return n, 0
        for j in range(pos, n - 1):
            px[j] = px[j + 1]
            qty[j] = qty[j + 1]
        return n - 1, 0
    if q == 0:
        return n, 1
    cap = px.shape[0]
    if n < cap:
        for j in range(n, pos, -1):
            px[j] = px[j - 1]
            qty[j] = qty[j - 1]
        px[pos] = price
        qty[pos] = q
        return n + 1, 0
    # full: keep the best `cap` levels. The new level is worse than everything stored (pos == 0):
    # it is the one dropped; otherwise the worst stored level (index 0) goes.
    if pos > 0:
        for j in range(0, pos - 1):
            px[j] = px[j + 1]
            qty[j] = qty[j + 1]
        px[pos - 1] = price
        qty[pos - 1] = q
    return n, 2


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _crossed(b, i):
    nb_ = b.bid_len[i]
    na_ = b.ask_len[i]
    return nb_ > 0 and na_ > 0 and b.bid_px[i, nb_ - 1] >= b.ask_px[i, na_ - 1]


@nb.njit(cache=True, nogil=True, _nrt=False)
def _raise(b, i, code, at):
    b.error[i] = code
    b.err_counts[i, code] += 1
    b.batch[B_ERRORS] += 1
    if b.batch[B_FIRST_ERROR] == 0:
        b.batch[B_FIRST_ERROR] = code
        b.batch[B_FIRST_ERROR_AT] = at
        b.batch[B_FIRST_ERROR_INST] = i


@nb.njit(cache=True, nogil=True, _nrt=False)
def apply_batch(b, updates, start, end):
    """Apply ``updates[start:end]`` (MD_UPDATE_DTYPE) to the books ``b``; return the number of
    MD_LEVEL/MD_CLEAR records applied. Never raises: problems set ``b.error``/``b.err_counts`` and
    the batch summary ``b.batch`` (see the module doc)."""
    n_inst = b.bid_len.shape[0]
    b.batch[B_APPLIED] = 0
    b.batch[B_ERRORS] = 0
    b.batch[B_FIRST_ERROR] = 0
    b.batch[B_FIRST_ERROR_AT] = -1
    b.batch[B_FIRST_ERROR_INST] = -1
    if start < 0:
        start = 0
    if end > updates.shape[0]:
        end = updates.shape[0]
    applied = 0
    ndirty = 0
    for r in range(start, end):
        u = updates[r]
        i = u.instrument
        if i < 0 or i >= n_inst:
            b.batch[B_BAD_INSTRUMENT] += 1
            b.batch[B_ERRORS] += 1
            if b.batch[B_FIRST_ERROR] == 0:
                b.batch[B_FIRST_ERROR] = ERR_BAD_INSTRUMENT
                b.batch[B_FIRST_ERROR_AT] = r
            continue
        kind = u.kind
        if kind == MD_LEVEL:
            price = u.price
            q = u.qty
            side = u.side
            if q < 0:
                _raise(b, i, ERR_NEG_QTY, r)
                continue
            if q > b.max_qty[i]:
                _raise(b, i, ERR_BAD_QTY, r)
                continue
            if price <= 0 or price > b.max_px[i]:
                _raise(b, i, ERR_BAD_PRICE, r)
                continue
            if side == SIDE_BID:
                n, st = _set_level(b.bid_px[i], b.bid_qty[i], b.bid_len[i], price, q, 1)
                b.bid_len[i] = n
            elif side == SIDE_ASK:
                n, st = _set_level(b.ask_px[i], b.ask_qty[i], b.ask_len[i], price, q, -1)
                b.ask_len[i] = n
            else:
                _raise(b, i, ERR_BAD_SIDE, r)
                continue
            if st == 1:
                b.counters[i, CTR_DELETE_ABSENT] += 1
            elif st == 2:
                _raise(b, i, ERR_CAPACITY, r)
            b.counters[i, CTR_LEVELS] += 1
            applied += 1
        elif kind == MD_CLEAR:
            b.bid_len[i] = 0
            b.ask_len[i] = 0
            b.error[i] = ERR_OK
            b.counters[i, CTR_CLEARS] += 1
            applied += 1
        elif kind == MD_SNAPSHOT_END:
            b.counters[i, CTR_SNAPSHOT_ENDS] += 1
        elif kind == MD_TRADE or kind == MD_BBO:
            b.counters[i, CTR_IGNORED] += 1
            continue
        else:
            _raise(b, i, ERR_BAD_KIND, r)
            continue
        if u.venue_seq != 0:
            b.last_venue_seq[i] = u.venue_seq
        # dirty[i]: 0 untouched in this batch, 1 changed since its last crossed check, 2 checked
        if b.dirty[i] == 0:
            b.dirty_list[ndirty] = i
            ndirty += 1
        if kind == MD_SNAPSHOT_END or (u.flags & MD_FLAG_FRAME_END) != 0:
            if _crossed(b, i):
                _raise(b, i, ERR_CROSSED, r)
            b.dirty[i] = 2
        else:
            b.dirty[i] = 1
    # end of batch: a book left crossed by records without a frame-end flag is still reported
    for k in range(ndirty):
        i = b.dirty_list[k]
        if b.dirty[i] == 1 and _crossed(b, i):
            _raise(b, i, ERR_CROSSED, -1)
        b.dirty[i] = 0
    b.batch[B_APPLIED] = applied
    return applied


# ------------------------------------------------------------------------------------------------
# accessors: njit, take the Books tuple; the Books methods wrap them for Python
@nb.njit(cache=True, nogil=True, _nrt=False)
def best_bid(b, i):
    """(price, qty) of the best bid; (0, 0) when the side is empty."""
    n = b.bid_len[i]
    if n == 0:
        return np.int64(0), np.int64(0)
    return b.bid_px[i, n - 1], b.bid_qty[i, n - 1]


@nb.njit(cache=True, nogil=True, _nrt=False)
def best_ask(b, i):
    """(price, qty) of the best ask; (0, 0) when the side is empty."""
    n = b.ask_len[i]
    if n == 0:
        return np.int64(0), np.int64(0)
    return b.ask_px[i, n - 1], b.ask_qty[i, n - 1]


@nb.njit(cache=True, nogil=True, _nrt=False)
def is_crossed(b, i):
    """Both sides present and best bid >= best ask."""
    return _crossed(b, i)


@nb.njit(cache=True, nogil=True, _nrt=False)
def mid(b, i):
    """floor((best bid + best ask) / 2) in price units; 0 when a side is empty."""
    nb_ = b.bid_len[i]
    na_ = b.ask_len[i]
    if nb_ == 0 or na_ == 0:
        return np.int64(0)
    return (b.bid_px[i, nb_ - 1] + b.ask_px[i, na_ - 1]) // 2


@nb.njit(cache=True, nogil=True, _nrt=False)
def microprice(b, i):
    """(bid*ask_qty + ask*bid_qty) / (bid_qty + ask_qty) at the top of the book, as
    (units, frac_e9, ok): units + frac_e9/1e9 price units, floor at 1e-9. ok False (0, 0) when a
    side is empty."""
    nb_ = b.bid_len[i]
    na_ = b.ask_len[i]
    if nb_ == 0 or na_ == 0:
        return np.int64(0), np.int64(0), False
    bp = np.uint64(b.bid_px[i, nb_ - 1])
    bq = np.uint64(b.bid_qty[i, nb_ - 1])
    ap = np.uint64(b.ask_px[i, na_ - 1])
    aq = np.uint64(b.ask_qty[i, na_ - 1])
    h1, l1 = mul64(bp, aq)
    h2, l2 = mul64(ap, bq)
    h, lo = add128(h1, l1, h2, l2)
    d = aq + bq
    q, r = div128(h, lo, d)
    return np.int64(q), frac_e9(r, d), True


@nb.njit(cache=True, nogil=True, _nrt=False)
def depth(b, i, n):
    """(sum of bid qty, sum of ask qty) over the best n levels of each side."""
    nb_ = b.bid_len[i]
    na_ = b.ask_len[i]
    sb = np.int64(0)
    sa = np.int64(0)
    for k in range(min(n, nb_)):
        sb += b.bid_qty[i, nb_ - 1 - k]
    for k in range(min(n, na_)):
        sa += b.ask_qty[i, na_ - 1 - k]
    return sb, sa


@nb.njit(cache=True, nogil=True, _nrt=False)
def imbalance(b, i, n):
    """(bid depth - ask depth) / (bid depth + ask depth) over the best n levels, scaled by 1e9
    and truncated toward zero; 0 when both are empty."""
    sb, sa = depth(b, i, n)
    tot = sb + sa
    if tot == 0:
        return np.int64(0)
    if sb >= sa:
        return muldiv_floor(sb - sa, E9, tot)
    return -muldiv_floor(sa - sb, E9, tot)


@nb.njit(cache=True, nogil=True, _nrt=False)
def vwap_to_fill(b, i, side, qty):
    """Average price to fill ``qty`` with an order of ``side`` (SIDE_BID = buy: walks the asks;
    SIDE_ASK = sell: walks the bids), best level first.
    Returns (units, frac_e9, filled, complete): average = units + frac_e9/1e9 price units (floor
    at 1e-9) over ``filled`` quantity; complete False when the book holds less than qty (then the
    average is over what it holds) or qty <= 0 / the side is empty ((0, 0, 0, False))."""
    if side == SIDE_BID:
        px = b.ask_px[i]
        qv = b.ask_qty[i]
        n = b.ask_len[i]
    else:
        px = b.bid_px[i]
        qv = b.bid_qty[i]
        n = b.bid_len[i]
    if qty <= 0 or n == 0:
        return np.int64(0), np.int64(0), np.int64(0), False
    left = qty
    hi = np.uint64(0)
    lo = np.uint64(0)
    k = n - 1
    while k >= 0 and left > 0:
        take = qv[k] if qv[k] < left else left
        h2, l2 = mul64(np.uint64(px[k]), np.uint64(take))
        hi, lo = add128(hi, lo, h2, l2)
        left -= take
        k -= 1
    filled = qty - left
    q, r = div128(hi, lo, np.uint64(filled))
    return np.int64(q), frac_e9(r, np.uint64(filled)), filled, left == 0


@nb.njit(cache=True, nogil=True, _nrt=False)
def top_n(b, i, n, out_bid_px, out_bid_qty, out_ask_px, out_ask_qty):
    """Copy the best n levels of each side, best first, into the out arrays (checksum-ready);
    returns (nbid, nask) actually copied (limited by the book and by the out arrays)."""
    nb_ = b.bid_len[i]
    na_ = b.ask_len[i]
    kb = min(n, nb_, out_bid_px.shape[0], out_bid_qty.shape[0])
    ka = min(n, na_, out_ask_px.shape[0], out_ask_qty.shape[0])
    for k in range(kb):
        out_bid_px[k] = b.bid_px[i, nb_ - 1 - k]
        out_bid_qty[k] = b.bid_qty[i, nb_ - 1 - k]
    for k in range(ka):
        out_ask_px[k] = b.ask_px[i, na_ - 1 - k]
        out_ask_qty[k] = b.ask_qty[i, na_ - 1 - k]
    return kb, ka


def warmup() -> None:
    """Compile (or load from cache) every kernel of this module on a tiny book."""
    b = make_books(2, 4)
    u = np.zeros(4, MD_UPDATE_DTYPE)
    u["kind"] = [MD_CLEAR, MD_LEVEL, MD_LEVEL, MD_SNAPSHOT_END]
    u["side"] = [0, SIDE_BID, SIDE_ASK, 0]
    u["price"] = [0, 10, 11, 0]
    u["qty"] = [0, 1, 2, 0]
    u["venue_seq"] = [1, 2, 3, 4]
    b.apply(u)
    o = np.zeros(2, np.int64)
    top_n(b, 0, 2, o, o, o, o)
    best_bid(b, 0)
    best_ask(b, 0)
    is_crossed(b, 0)
    mid(b, 0)
    microprice(b, 0)
    depth(b, 0, 2)
    imbalance(b, 0, 2)
    vwap_to_fill(b, 0, SIDE_BID, 1)
