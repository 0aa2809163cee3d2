"""L2 order books: one per instrument, in preallocated int64 arrays, updated by a nogil kernel.

Layout (read this before touching the arrays directly)
------------------------------------------------------
``Books`` (from ``make_books(n, capacity)``) is a NamedTuple whose first four fields are the
backing arrays the kernels take — ``levels`` int64[n, 4, cap], ``state`` int64[n, NS],
``stats`` int64[n, N_ERR + N_CTR], ``scratch`` int64[N_B + n] — and whose other fields are named
views into them (``bid_px``, ``bid_len``, ``error``, ``err_counts``, ``batch``, ...). Kernels take
arrays, not the tuple: numba unboxes a NamedTuple of many arrays in 2-4 µs per call, and the
venue modules apply one small frame per call. Each instrument ``i`` has one row per side:

* ``bid_px[i, :bid_len[i]]`` (= ``levels[i, 0]``), ``bid_qty`` (``levels[i, 1]``), ``ask_px``
  (``levels[i, 2]``), ``ask_qty`` (``levels[i, 3]``) hold the levels stored **worst-first**: bids in
  ascending price, asks in descending price, so the *best* level is the LAST one (index
  ``len - 1``). Real feeds change the top of the book all the time and the deep end rarely; with
  the best level at the end, adding or removing a level near the top shifts only the few levels
  above it instead of the whole row. Measured on a 2,000-level stream (bench ``md.book_apply``):
  the same kernel with best-first rows was ~40x slower. Use ``top_n`` (or ``Books.top`` /
  ``Books.levels_of``) to get levels best-first, e.g. for venue checksums.
* Every stored quantity is > 0 and prices are strictly monotonic within a row.
* Search starts at the top: the best 8 levels are compared without early exit (no branch
  mispredicted on where the key sits), deeper keys are found by galloping then bisecting, so the
  cost grows with log(distance from the top); shifts are one ``memmove`` per array.

Kernels (all ``@njit(cache=True, nogil=True)``, callable from other kernels and from Python):
``apply_batch(levels, state, stats, scratch, updates, start, end) -> applied``; accessors over
``(levels, state, i, ...)``: ``best_bid``, ``best_ask``, ``mid``, ``microprice``, ``depth``,
``imbalance``, ``vwap_to_fill``, ``is_crossed``, ``top_n``. ``Books`` has a Python method for each.
Publication of the top of book to shared memory is in ``book_publish``.

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
A crossed book (best bid >= best ask) is legal for a moment inside a venue frame (the venue's
atomic update), so it is judged only where a frame ends: at a record of the instrument flagged
``MD_FLAG_FRAME_END`` and at ``MD_SNAPSHOT_END``; the book is kept as received and ``ERR_CROSSED``
is reported. A batch is a window over a ring and may end inside a frame (a shard reading a backlog
takes a full buffer): the instrument's frame then stays open (``S_DIRTY`` = ``DIRTY_OPEN``) and is
judged at its frame end in a later batch, so where batches are cut never changes the errors. The
producers' contract (``bot4d.records``) is that every frame's last record carries the flag.

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

from bot4d.jitcache import helper, kernel
from bot4d.kernels.book_math import add128, div128, frac_e9, memmove_within, mul64, muldiv_floor
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
ERR_CROSSED = 5         # best bid >= best ask at a frame end / snapshot end
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
B_TOUCHED = 6           # instruments touched by the batch (changed or refused records); their
                        # ids stay in scratch[N_B:N_B + B_TOUCHED] until the next batch, for
                        # book_publish.publish_top
N_B = 8


# --- per-instrument state columns (state[i, S_*]): one 64-byte row of hot state per instrument ---
S_BID_LEN = 0
S_ASK_LEN = 1
S_SEQ = 2
S_ERROR = 3
S_MAX_PX = 4
S_MAX_QTY = 5
S_DIRTY = 6             # 0 untouched in this batch, 1 changed since its last crossed check, 2 checked,
                        # DIRTY_OPEN between batches: a frame an earlier batch left open (unchecked)
S_RECV_TS = 7           # recv_ts_ns of the last accepted book record
NS = 8
DIRTY_OPEN = 3


class Books(NamedTuple):
    """L2 books of ``n`` instruments with ``capacity`` levels per side (see the module doc).

    The kernels take the four backing arrays (``levels``, ``state``, ``stats``, ``scratch``):
    numba unboxes a NamedTuple of many arrays in 2-4 µs per call, four arrays in well under 1 µs,
    and a venue applies one small frame per call. The named fields are views into them.
    """

    levels: np.ndarray          # int64[n, 4, cap]: [i, 0] bid px, [i, 1] bid qty, [i, 2] ask px, [i, 3] ask qty
    state: np.ndarray           # int64[n, NS]: S_* columns
    stats: np.ndarray           # int64[n, N_ERR + N_CTR]: error counts, then counters (monitor-visible)
    scratch: np.ndarray         # int64[N_B + n]: batch summary, then the touched-instrument list
    bid_px: np.ndarray          # view [n, cap], worst-first (ascending)
    bid_qty: np.ndarray         # view [n, cap]
    ask_px: np.ndarray          # view [n, cap], worst-first (descending)
    ask_qty: np.ndarray         # view [n, cap]
    bid_len: np.ndarray         # view [n]
    ask_len: np.ndarray         # view [n]
    last_venue_seq: np.ndarray  # view [n]
    error: np.ndarray           # view [n]: last ERR_* since the last MD_CLEAR (0 ok)
    max_px: np.ndarray          # view [n]: highest accepted price
    max_qty: np.ndarray         # view [n]: highest accepted quantity
    err_counts: np.ndarray      # view [n, N_ERR]
    counters: np.ndarray        # view [n, N_CTR]
    batch: np.ndarray           # view [N_B]: summary of the last apply_batch

    # --- Python conveniences (each calls the njit kernel of the same job) -----------------------
    @property
    def n_instruments(self) -> int:
        return self.levels.shape[0]

    @property
    def capacity(self) -> int:
        return self.levels.shape[2]

    def _i(self, instrument: int) -> int:
        """The kernels do not bounds-check (callers own their indices); the Python side does."""
        i = int(instrument)
        if not 0 <= i < self.levels.shape[0]:
            raise IndexError(f"instrument {instrument} outside 0..{self.levels.shape[0] - 1}")
        return i

    @staticmethod
    def _side(side: int) -> int:
        if side not in (SIDE_BID, SIDE_ASK):
            raise ValueError(f"side must be SIDE_BID (0) or SIDE_ASK (1), got {side}")
        return int(side)

    def apply(self, updates: np.ndarray) -> int:
        """Apply every record of ``updates``; return the first error code raised (0 = clean).
        The number applied is ``self.batch[B_APPLIED]`` (and apply_batch's return value)."""
        apply_batch(self.levels, self.state, self.stats, self.scratch, updates, 0, len(updates))
        return int(self.scratch[B_FIRST_ERROR])

    def set_limits(self, instrument: int, max_px: int, max_qty: int) -> None:
        """Accepted price/quantity range of one instrument (units); clamped to the safe ceilings."""
        instrument = self._i(instrument)
        if max_px <= 0 or max_qty <= 0:
            raise ValueError("limits must be positive")
        self.max_px[instrument] = min(max_px, MAX_PX_LIMIT)
        self.max_qty[instrument] = min(max_qty, qty_ceiling(self.capacity))

    def levels_of(self, instrument: int, side: int) -> list[tuple[int, int]]:
        """All levels of one side, best first, as (price units, qty units)."""
        instrument, side = self._i(instrument), self._side(side)
        n = int(self.state[instrument, S_BID_LEN + side])
        px, q = self.levels[instrument, 2 * side, :n], self.levels[instrument, 2 * side + 1, :n]
        return [(int(px[k]), int(q[k])) for k in range(n - 1, -1, -1)]

    def top(self, instrument: int, n: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, int]:
        """Best ``n`` levels per side, best first: (bid_px, bid_qty, nbid, ask_px, ask_qty, nask),
        the argument order of the venue checksum kernels."""
        instrument, n = self._i(instrument), max(int(n), 0)
        bp, bq = np.zeros(n, np.int64), np.zeros(n, np.int64)
        ap, aq = np.zeros(n, np.int64), np.zeros(n, np.int64)
        nb_, na_ = top_n(self.levels, self.state, instrument, n, bp, bq, ap, aq)
        return bp, bq, int(nb_), ap, aq, int(na_)

    def best_bid(self, instrument: int) -> tuple[int, int]:
        p, q = best_bid(self.levels, self.state, self._i(instrument))
        return int(p), int(q)

    def best_ask(self, instrument: int) -> tuple[int, int]:
        p, q = best_ask(self.levels, self.state, self._i(instrument))
        return int(p), int(q)

    def mid(self, instrument: int) -> int:
        return int(mid(self.levels, self.state, self._i(instrument)))

    def microprice(self, instrument: int) -> tuple[int, int, bool]:
        u, f, ok = microprice(self.levels, self.state, self._i(instrument))
        return int(u), int(f), bool(ok)

    def imbalance(self, instrument: int, n: int) -> int:
        return int(imbalance(self.levels, self.state, self._i(instrument), n))

    def depth(self, instrument: int, n: int) -> tuple[int, int]:
        b, a = depth(self.levels, self.state, self._i(instrument), n)
        return int(b), int(a)

    def vwap_to_fill(self, instrument: int, side: int, qty: int) -> tuple[int, int, int, bool]:
        u, f, filled, ok = vwap_to_fill(self.levels, self.state, self._i(instrument), self._side(side), qty)
        return int(u), int(f), int(filled), bool(ok)

    def is_crossed(self, instrument: int) -> bool:
        return bool(is_crossed(self.levels, self.state, self._i(instrument)))


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
    levels = np.zeros((n, 4, c), np.int64)
    state = np.zeros((n, NS), np.int64)
    state[:, S_MAX_PX] = MAX_PX_LIMIT
    state[:, S_MAX_QTY] = qty_ceiling(c)
    stats = np.zeros((n, N_ERR + N_CTR), np.int64)
    scratch = np.zeros(N_B + n, np.int64)
    scratch[B_FIRST_ERROR_AT] = -1
    scratch[B_FIRST_ERROR_INST] = -1
    return Books(
        levels=levels, state=state, stats=stats, scratch=scratch,
        bid_px=levels[:, 0, :], bid_qty=levels[:, 1, :], ask_px=levels[:, 2, :], ask_qty=levels[:, 3, :],
        bid_len=state[:, S_BID_LEN], ask_len=state[:, S_ASK_LEN], last_venue_seq=state[:, S_SEQ],
        error=state[:, S_ERROR], max_px=state[:, S_MAX_PX], max_qty=state[:, S_MAX_QTY],
        err_counts=stats[:, :N_ERR], counters=stats[:, N_ERR:], batch=scratch[:N_B],
    )


# ------------------------------------------------------------------------------------------------
# the update kernel
_SCAN = 8  # levels compared from the top before galloping
_LOOP_MAX = 16  # shorter shifts are an element loop: cheaper than calling memmove


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _find(px, n, key, s):
    """Position of key in a row ordered ascending by s*px (s=+1 bids, -1 asks), searched from
    the top (the end) because that is where feeds change the book: (index, found); when not
    found, the index where it would be inserted. Cost grows with log(distance from the top)."""
    if n >= _SCAN:
        # the top _SCAN levels, a fixed count of compares without early exit: where the key sits
        # changes from one update to the next, and a data-dependent loop exit mispredicts
        above = 0
        for j in range(1, _SCAN + 1):
            above += np.int64(s * px[n - j] > key)
        if above < _SCAN:
            pos = n - above
            if s * px[pos - 1] == key:
                return pos - 1, True
            return pos, False
        lim = n - _SCAN
    else:
        k = n - 1
        while k >= 0:
            kk = s * px[k]
            if kk == key:
                return k, True
            if kk < key:
                return k + 1, False
            k -= 1
        return 0, False
    # every key in [lim, n) is above key: gallop down from lim, then bisect the bracket
    hi = lim
    step = 1
    lo = 0
    while True:
        j = hi - step
        if j < 0:
            break
        if s * px[j] <= key:
            lo = j
            break
        hi = j
        step <<= 1
    # key in [s*px[lo], s*px[hi]) or below s*px[0] when lo == 0
    while lo < hi:
        m = (lo + hi) >> 1
        if s * px[m] < key:
            lo = m + 1
        else:
            hi = m
    return lo, (lo < n and s * px[lo] == key)


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _set_level(px, qty, n, price, q, s):
    """Apply one level to a worst-first row of length n. Returns (new length, status) where
    status is 0 ok, 1 delete of an absent level, 2 capacity (worst dropped)."""
    key = s * price
    pos, found = _find(px, n, key, s)
    if found:
        if q != 0:
            qty[pos] = q
            return n, 0
        m = n - 1 - pos
        if m > _LOOP_MAX:
            memmove_within(px, pos, pos + 1, m)
            memmove_within(qty, pos, pos + 1, m)
        else:
            for j in range(pos, n - 1):
                px[j] = px[j + 1]
                qty[j] = qty[j + 1]
        return n - 1, 0
    if q == 0:
        return n, 1
    cap = px.shape[0]
    if n < cap:
        m = n - pos
        if m > _LOOP_MAX:
            memmove_within(px, pos + 1, pos, m)
            memmove_within(qty, pos + 1, pos, m)
        else:
            for j in range(n, pos, -1):
                px[j] = px[j - 1]
                qty[j] = qty[j - 1]
        px[pos] = price
        qty[pos] = q
        return n + 1, 0
    # full: keep the best `cap` levels. The new level is worse than everything stored (pos == 0):
    # it is the one dropped; otherwise the worst stored level (index 0) goes.
    if pos > 0:
        if pos > 1:
            memmove_within(px, 0, 1, pos - 1)
            memmove_within(qty, 0, 1, pos - 1)
        px[pos - 1] = price
        qty[pos - 1] = q
    return n, 2


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _crossed(levels, state, i):
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    return nb_ > 0 and na_ > 0 and levels[i, 0, nb_ - 1] >= levels[i, 2, na_ - 1]


@helper(_nrt=False)
def _raise(state, stats, scratch, i, code, at):
    state[i, S_ERROR] = code
    stats[i, code] += 1
    scratch[B_ERRORS] += 1
    if scratch[B_FIRST_ERROR] == 0:
        scratch[B_FIRST_ERROR] = code
        scratch[B_FIRST_ERROR_AT] = at
        scratch[B_FIRST_ERROR_INST] = i


@kernel(_nrt=False)
def apply_batch(levels, state, stats, scratch, updates, start, end):
    """Apply ``updates[start:end]`` (MD_UPDATE_DTYPE) to the books held in ``levels``/``state``
    (a ``Books``' backing arrays); return the number of MD_LEVEL/MD_CLEAR records applied. Never
    raises: problems set ``state[i, S_ERROR]``, ``stats`` and the summary in ``scratch[:N_B]``
    (see the module doc)."""
    n_inst = levels.shape[0]
    scratch[B_APPLIED] = 0
    scratch[B_ERRORS] = 0
    scratch[B_FIRST_ERROR] = 0
    scratch[B_FIRST_ERROR_AT] = -1
    scratch[B_FIRST_ERROR_INST] = -1
    scratch[B_TOUCHED] = 0
    if start < 0:
        start = 0
    if end > updates.shape[0]:
        end = updates.shape[0]
    applied = 0
    ndirty = 0
    for r in range(start, end):
        u = updates[r]
        i = u.instrument
        if i < 0 or i >= n_inst:  # no book to blame: counted in the batch summary only
            scratch[B_BAD_INSTRUMENT] += 1
            scratch[B_ERRORS] += 1
            if scratch[B_FIRST_ERROR] == 0:
                scratch[B_FIRST_ERROR] = ERR_BAD_INSTRUMENT
                scratch[B_FIRST_ERROR_AT] = r
            continue
        kind = u.kind
        code = ERR_OK
        ignored = False
        if kind == MD_LEVEL:
            price = u.price
            q = u.qty
            side = np.int64(u.side)
            if q < 0:
                code = ERR_NEG_QTY
            elif q > state[i, S_MAX_QTY]:
                code = ERR_BAD_QTY
            elif price <= 0 or price > state[i, S_MAX_PX]:
                code = ERR_BAD_PRICE
            elif side != SIDE_BID and side != SIDE_ASK:
                code = ERR_BAD_SIDE
            else:
                n, st = _set_level(levels[i, 2 * side], levels[i, 2 * side + 1],
                                   state[i, S_BID_LEN + side], price, q, 1 - 2 * side)
                state[i, S_BID_LEN + side] = n
                if st == 1:
                    stats[i, N_ERR + CTR_DELETE_ABSENT] += 1
                elif st == 2:
                    _raise(state, stats, scratch, i, ERR_CAPACITY, r)
                stats[i, N_ERR + CTR_LEVELS] += 1
                applied += 1
        elif kind == MD_CLEAR:
            state[i, S_BID_LEN] = 0
            state[i, S_ASK_LEN] = 0
            state[i, S_ERROR] = ERR_OK
            stats[i, N_ERR + CTR_CLEARS] += 1
            applied += 1
        elif kind == MD_SNAPSHOT_END:
            stats[i, N_ERR + CTR_SNAPSHOT_ENDS] += 1
        elif kind == MD_TRADE or kind == MD_BBO:
            stats[i, N_ERR + CTR_IGNORED] += 1
            ignored = True
        else:
            code = ERR_BAD_KIND
        frame_end = kind == MD_SNAPSHOT_END or (u.flags & MD_FLAG_FRAME_END) != 0
        d = state[i, S_DIRTY]
        pending = d == 1 or d == DIRTY_OPEN  # changes since the last crossed check
        if ignored and not (frame_end and pending):
            continue  # a trade / BBO: not a book change (unless it closes an open frame)
        if d == 0 or d == DIRTY_OPEN:
            scratch[N_B + ndirty] = i
            ndirty += 1
        if code != ERR_OK:
            # refused: the book did not change, but its error did, so it is published
            _raise(state, stats, scratch, i, code, r)
        elif not ignored:
            state[i, S_RECV_TS] = u.recv_ts_ns
            if u.venue_seq != 0:
                state[i, S_SEQ] = u.venue_seq
            pending = True
        if frame_end and pending:
            if _crossed(levels, state, i):
                _raise(state, stats, scratch, i, ERR_CROSSED, r)
            state[i, S_DIRTY] = 2
        elif pending:
            state[i, S_DIRTY] = 1
        else:
            state[i, S_DIRTY] = 2  # refused only: nothing to judge
    # end of batch: no crossed check here. The batch is a window over a ring and may end inside a
    # frame, where a crossed book is legal; that frame is judged at its frame end in a later batch.
    for k in range(ndirty):
        i = scratch[N_B + k]
        state[i, S_DIRTY] = DIRTY_OPEN if state[i, S_DIRTY] == 1 else 0
    scratch[B_APPLIED] = applied
    scratch[B_TOUCHED] = ndirty
    return applied


# ------------------------------------------------------------------------------------------------
# accessors: njit over (levels, state, i), for other kernels; the Books methods wrap them
@kernel(_nrt=False)
def best_bid(levels, state, i):
    """(price, qty) of the best bid; (0, 0) when the side is empty."""
    n = state[i, S_BID_LEN]
    if n == 0:
        return np.int64(0), np.int64(0)
    return levels[i, 0, n - 1], levels[i, 1, n - 1]


@kernel(_nrt=False)
def best_ask(levels, state, i):
    """(price, qty) of the best ask; (0, 0) when the side is empty."""
    n = state[i, S_ASK_LEN]
    if n == 0:
        return np.int64(0), np.int64(0)
    return levels[i, 2, n - 1], levels[i, 3, n - 1]


@kernel(_nrt=False)
def is_crossed(levels, state, i):
    """Both sides present and best bid >= best ask."""
    return _crossed(levels, state, i)


@kernel(_nrt=False)
def mid(levels, state, i):
    """floor((best bid + best ask) / 2) in price units; 0 when a side is empty."""
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    if nb_ == 0 or na_ == 0:
        return np.int64(0)
    return (levels[i, 0, nb_ - 1] + levels[i, 2, na_ - 1]) // 2


@kernel(_nrt=False)
def microprice(levels, state, i):
    """(bid*ask_qty + ask*bid_qty) / (bid_qty + ask_qty) at the top of the book, as
    (units, frac_e9, ok): units + frac_e9/1e9 price units, floor at 1e-9. ok False (0, 0) when a
    side is empty."""
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    if nb_ == 0 or na_ == 0:
        return np.int64(0), np.int64(0), False
    bp = np.uint64(levels[i, 0, nb_ - 1])
    bq = np.uint64(levels[i, 1, nb_ - 1])
    ap = np.uint64(levels[i, 2, na_ - 1])
    aq = np.uint64(levels[i, 3, na_ - 1])
    h1, l1 = mul64(bp, aq)
    h2, l2 = mul64(ap, bq)
    h, lo = add128(h1, l1, h2, l2)
    d = aq + bq
    q, r = div128(h, lo, d)
    return np.int64(q), frac_e9(r, d), True


@kernel(_nrt=False)
def depth(levels, state, i, n):
    """(sum of bid qty, sum of ask qty) over the best n levels of each side."""
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    sb = np.int64(0)
    sa = np.int64(0)
    for k in range(min(n, nb_)):
        sb += levels[i, 1, nb_ - 1 - k]
    for k in range(min(n, na_)):
        sa += levels[i, 3, na_ - 1 - k]
    return sb, sa


@kernel(_nrt=False)
def imbalance(levels, state, i, n):
    """(bid depth - ask depth) / (bid depth + ask depth) over the best n levels, scaled by 1e9
    and truncated toward zero; 0 when both are empty."""
    sb, sa = depth(levels, state, i, n)
    tot = sb + sa
    if tot == 0:
        return np.int64(0)
    if sb >= sa:
        return muldiv_floor(sb - sa, E9, tot)
    return -muldiv_floor(sa - sb, E9, tot)


@kernel(_nrt=False)
def vwap_to_fill(levels, state, i, side, qty):
    """Average price to fill ``qty`` with an order of ``side`` (SIDE_BID = buy: walks the asks;
    SIDE_ASK = sell: walks the bids), best level first.
    Returns (units, frac_e9, filled, complete): average = units + frac_e9/1e9 price units (floor
    at 1e-9) over ``filled`` quantity; complete False when the book holds less than qty (then the
    average is over what it holds) or qty <= 0 / the side is empty ((0, 0, 0, False))."""
    book_side = SIDE_ASK if side == SIDE_BID else SIDE_BID
    px = levels[i, 2 * book_side]
    qv = levels[i, 2 * book_side + 1]
    n = state[i, S_BID_LEN + book_side]
    if qty <= 0 or n == 0:
        return np.int64(0), np.int64(0), np.int64(0), False
    left = np.int64(qty)
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
    return np.int64(q), frac_e9(r, np.uint64(filled)), np.int64(filled), left == 0


@kernel(_nrt=False)
def top_n(levels, state, i, n, out_bid_px, out_bid_qty, out_ask_px, out_ask_qty):
    """Copy the best n levels of each side, best first, into the out arrays (checksum-ready);
    returns (nbid, nask) actually copied (limited by the book and by the out arrays)."""
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    kb = max(min(n, nb_, out_bid_px.shape[0], out_bid_qty.shape[0]), 0)
    ka = max(min(n, na_, out_ask_px.shape[0], out_ask_qty.shape[0]), 0)
    for k in range(kb):
        out_bid_px[k] = levels[i, 0, nb_ - 1 - k]
        out_bid_qty[k] = levels[i, 1, nb_ - 1 - k]
    for k in range(ka):
        out_ask_px[k] = levels[i, 2, na_ - 1 - k]
        out_ask_qty[k] = levels[i, 3, na_ - 1 - k]
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
    b.top(0, 2)
    top_n(b.levels, b.state, 0, 2, o, o, o, o)
    b.best_bid(0)
    b.best_ask(0)
    b.is_crossed(0)
    b.mid(0)
    b.microprice(0)
    b.depth(0, 2)
    b.imbalance(0, 2)
    b.vwap_to_fill(0, SIDE_BID, 1)
