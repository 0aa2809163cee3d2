"""Property tests: the numba book equals a plain dict reference model on random record streams,
and its accessors equal straightforward Decimal computations on random books."""
from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot4d.kernels import book as bk
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

N_INST = 3
MAX_PX = 60
MAX_QTY = 1000


class RefBooks:
    """The book's documented semantics, written the obvious way: a dict per side."""

    def __init__(self, n: int, cap: int) -> None:
        self.n, self.cap = n, cap
        self.side = [[{}, {}] for _ in range(n)]
        self.error = [0] * n
        self.err_counts = [[0] * bk.N_ERR for _ in range(n)]
        self.seq = [0] * n
        self.recv = [0] * n
        self.bad_instrument = 0
        self.open: set[int] = set()  # instruments whose frame an earlier batch left open

    def best(self, i: int, s: int) -> int | None:
        d = self.side[i][s]
        if not d:
            return None
        return max(d) if s == SIDE_BID else min(d)

    def crossed(self, i: int) -> bool:
        b, a = self.best(i, SIDE_BID), self.best(i, SIDE_ASK)
        return b is not None and a is not None and b >= a

    def levels(self, i: int, s: int) -> list[tuple[int, int]]:
        d = self.side[i][s]
        return sorted(d.items(), reverse=(s == SIDE_BID))

    def apply(self, rows: list[dict]) -> tuple[int, int, int, int, int]:
        """Returns (applied, errors, first error, its index, its instrument)."""
        first = [0, -1, -1]
        errors = 0
        applied = 0
        state: dict[int, int] = {}  # instrument -> 1 changed since check / 2 checked; in touch order
        self.touched: set[int] = set()

        def err(i: int, code: int, at: int) -> None:
            nonlocal errors
            self.touched.add(i)
            self.error[i] = code
            self.err_counts[i][code] += 1
            errors += 1
            if first[0] == 0:
                first[:] = [code, at, i]

        for at, r in enumerate(rows):
            i, kind = r["instrument"], r["kind"]
            if not 0 <= i < self.n:
                self.bad_instrument += 1
                errors += 1
                if first[0] == 0:
                    first[:] = [bk.ERR_BAD_INSTRUMENT, at, -1]
                continue
            refused = ignored = False
            if kind == MD_LEVEL:
                px, q, s = r["price"], r["qty"], r["side"]
                if q < 0:
                    err(i, bk.ERR_NEG_QTY, at)
                    refused = True
                elif q > MAX_QTY:
                    err(i, bk.ERR_BAD_QTY, at)
                    refused = True
                elif px <= 0 or px > MAX_PX:
                    err(i, bk.ERR_BAD_PRICE, at)
                    refused = True
                elif s not in (SIDE_BID, SIDE_ASK):
                    err(i, bk.ERR_BAD_SIDE, at)
                    refused = True
                else:
                    d = self.side[i][s]
                    if q == 0:
                        d.pop(px, None)
                    elif px in d or len(d) < self.cap:
                        d[px] = q
                    else:
                        d[px] = q  # full: keep the best `cap` levels, the worst one goes
                        worst = min(d) if s == SIDE_BID else max(d)
                        del d[worst]
                        err(i, bk.ERR_CAPACITY, at)
                    applied += 1
            elif kind == MD_CLEAR:
                self.side[i] = [{}, {}]
                self.error[i] = 0
                applied += 1
            elif kind == MD_SNAPSHOT_END:
                pass
            elif kind in (MD_TRADE, MD_BBO):
                ignored = True
            else:
                err(i, bk.ERR_BAD_KIND, at)
                refused = True
            # crossedness is judged where a frame ends, whichever batch that falls in
            ends = kind == MD_SNAPSHOT_END or bool(r["flags"] & MD_FLAG_FRAME_END)
            pending = state.get(i) == 1 or (i not in state and i in self.open)
            if ignored and not (ends and pending):
                continue
            self.touched.add(i)
            if not refused and not ignored:
                self.recv[i] = r["recv_ts_ns"]
                if r["venue_seq"]:
                    self.seq[i] = r["venue_seq"]
                pending = True
            if ends and pending:
                if self.crossed(i):
                    err(i, bk.ERR_CROSSED, at)
                state[i] = 2
            else:
                state[i] = 1 if pending else 2
        # no judgement at the batch end: a frame still open is judged at its end in a later batch
        self.open = {i for i, s in state.items() if s == 1} | (self.open - set(state))
        return applied, errors, first[0], first[1], first[2]


def to_array(rows: list[dict]) -> np.ndarray:
    u = np.zeros(len(rows), MD_UPDATE_DTYPE)
    for k, r in enumerate(rows):
        for f, v in r.items():
            u[k][f] = v
    return u


def assert_same(b: bk.Books, ref: RefBooks) -> None:
    for i in range(ref.n):
        for s in (SIDE_BID, SIDE_ASK):
            assert b.levels_of(i, s) == ref.levels(i, s), (i, s)
        assert int(b.error[i]) == ref.error[i]
        assert list(b.err_counts[i]) == ref.err_counts[i]
        assert int(b.last_venue_seq[i]) == ref.seq[i]
        assert int(b.state[i, bk.S_RECV_TS]) == ref.recv[i]
        # the documented storage invariant: worst-first, strictly monotonic, qty > 0
        for px, q, n, sign in ((b.bid_px[i], b.bid_qty[i], b.bid_len[i], 1),
                               (b.ask_px[i], b.ask_qty[i], b.ask_len[i], -1)):
            keys = sign * px[:n]
            assert (np.diff(keys) > 0).all() and (q[:n] > 0).all()
    assert int(b.batch[bk.B_BAD_INSTRUMENT]) == ref.bad_instrument


# records: mostly valid levels with colliding prices, plus every kind of bad input
level = st.fixed_dictionaries({
    "kind": st.just(MD_LEVEL),
    "instrument": st.integers(0, N_INST - 1),
    "side": st.sampled_from([SIDE_BID, SIDE_ASK]),
    "price": st.integers(1, MAX_PX),
    "qty": st.one_of(st.just(0), st.integers(1, MAX_QTY)),
    "venue_seq": st.integers(0, 1 << 40),
    "recv_ts_ns": st.integers(0, 1 << 62),
    "flags": st.sampled_from([0, 0, 0, MD_FLAG_FRAME_END]),
})
odd = st.fixed_dictionaries({
    "kind": st.sampled_from([MD_LEVEL, MD_CLEAR, MD_SNAPSHOT_END, MD_TRADE, MD_BBO, 0, 9, -1]),
    "instrument": st.integers(-1, N_INST),
    "side": st.integers(-1, 2),
    "price": st.sampled_from([-5, 0, 1, 30, MAX_PX, MAX_PX + 1, bk.INT64_MAX]),
    "qty": st.sampled_from([-(1 << 62), -1, 0, 1, MAX_QTY, MAX_QTY + 1, bk.INT64_MAX]),
    "venue_seq": st.integers(0, 100),
    "recv_ts_ns": st.integers(0, 100),
    "flags": st.sampled_from([0, MD_FLAG_FRAME_END]),
})
record = st.one_of(level, level, level, level, level, level, odd)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cap=st.sampled_from([1, 2, 3, 5, 9, 16, 64]),
       batches=st.lists(st.lists(record, max_size=80), min_size=1, max_size=6))
def test_random_streams_equal_reference(cap: int, batches: list[list[dict]]) -> None:
    b = bk.make_books(N_INST, cap)
    for i in range(N_INST):
        b.set_limits(i, MAX_PX, MAX_QTY)
    ref = RefBooks(N_INST, cap)
    for rows in batches:
        u = to_array(rows)
        applied = bk.apply_batch(*b[:4], u, 0, len(u))
        want = ref.apply(rows)
        got = (applied, *(int(b.batch[k]) for k in (bk.B_ERRORS, bk.B_FIRST_ERROR,
                                                      bk.B_FIRST_ERROR_AT, bk.B_FIRST_ERROR_INST)))
        assert got == want
        assert_same(b, ref)
        # the instruments left for publication: every one whose book or error the batch touched
        touched = b.scratch[bk.N_B:bk.N_B + b.scratch[bk.B_TOUCHED]].tolist()
        assert sorted(touched) == sorted(ref.touched) and len(set(touched)) == len(touched)
        # between batches only the frames left open are marked
        assert set(np.flatnonzero(b.state[:, bk.S_DIRTY] == bk.DIRTY_OPEN).tolist()) == ref.open
        assert ((b.state[:, bk.S_DIRTY] == 0) | (b.state[:, bk.S_DIRTY] == bk.DIRTY_OPEN)).all()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(level, max_size=60), cut=st.integers(0, 60))
def test_batch_boundaries_do_not_change_the_book(rows: list[dict], cut: int) -> None:
    """One batch or two windows over the same array: the same books and the same errors (a window
    may end inside a frame where the book is crossed for a moment: a shard reading a backlog)."""
    u = to_array(rows)
    one, two = bk.make_books(N_INST, 8), bk.make_books(N_INST, 8)
    bk.apply_batch(*one[:4], u, 0, len(u))
    cut = min(cut, len(u))
    bk.apply_batch(*two[:4], u, 0, cut)
    bk.apply_batch(*two[:4], u, cut, len(u))
    for i in range(N_INST):
        for s in (SIDE_BID, SIDE_ASK):
            assert one.levels_of(i, s) == two.levels_of(i, s)
        assert int(one.error[i]) == int(two.error[i])
        assert list(one.err_counts[i]) == list(two.err_counts[i])


# --- accessors vs Decimal on random books ----------------------------------------------------------
def floor_e9(x: Decimal) -> tuple[int, int]:
    units = int(x.to_integral_value(rounding=ROUND_FLOOR))
    return units, int(((x - units) * 10**9).to_integral_value(rounding=ROUND_FLOOR))


side_levels = st.dictionaries(st.integers(1, 10**15), st.integers(1, 10**12), max_size=24)


@settings(max_examples=150, deadline=None)
@given(bids=side_levels, asks=side_levels, n=st.integers(0, 26), fill=st.integers(-2, 10**13),
       buy=st.booleans())
def test_accessors_equal_decimal(bids: dict, asks: dict, n: int, fill: int, buy: bool) -> None:
    b = bk.make_books(1, 32)
    rows = [{"kind": MD_LEVEL, "side": SIDE_BID, "price": p, "qty": q} for p, q in bids.items()]
    rows += [{"kind": MD_LEVEL, "side": SIDE_ASK, "price": p, "qty": q} for p, q in asks.items()]
    b.apply(to_array(rows))
    bl = sorted(bids.items(), reverse=True)
    al = sorted(asks.items())
    with localcontext() as c:
        c.prec = 100
        assert b.best_bid(0) == (bl[0] if bl else (0, 0))
        assert b.best_ask(0) == (al[0] if al else (0, 0))
        assert b.is_crossed(0) == bool(bl and al and bl[0][0] >= al[0][0])
        if bl and al:
            (bp, bq), (ap, aq) = bl[0], al[0]
            assert b.mid(0) == int(((Decimal(bp) + ap) / 2).to_integral_value(rounding=ROUND_FLOOR))
            micro = (Decimal(bp) * aq + Decimal(ap) * bq) / (aq + bq)
            assert b.microprice(0) == (*floor_e9(micro), True)
        else:
            assert b.mid(0) == 0 and b.microprice(0) == (0, 0, False)
        sb = sum(q for _, q in bl[:n])
        sa = sum(q for _, q in al[:n])
        assert b.depth(0, n) == (sb, sa)
        want_imb = 0 if sb + sa == 0 else int(Decimal(sb - sa) * 10**9 / Decimal(sb + sa))
        assert b.imbalance(0, n) == want_imb  # int() of a Decimal truncates toward zero
        walk = al if buy else bl
        left, notional = fill, Decimal(0)
        for p, q in walk:
            if left <= 0:
                break
            t = min(q, left)
            notional += Decimal(p) * t
            left -= t
        filled = fill - left if fill > 0 else 0
        got = b.vwap_to_fill(0, SIDE_BID if buy else SIDE_ASK, fill)
        if filled == 0:
            assert got == (0, 0, 0, False)
        else:
            assert got == (*floor_e9(notional / filled), filled, left == 0)
        bp_, bq_, nb_, ap_, aq_, na_ = b.top(0, n)
        assert nb_ == min(n, len(bl)) and na_ == min(n, len(al))
        assert list(zip(bp_[:nb_].tolist(), bq_[:nb_].tolist())) == bl[:n]
        assert list(zip(ap_[:na_].tolist(), aq_[:na_].tolist())) == al[:n]


def test_top_n_respects_small_out_arrays() -> None:
    b = bk.make_books(1, 8)
    b.apply(to_array([{"kind": MD_LEVEL, "side": SIDE_BID, "price": p, "qty": 1} for p in (1, 2, 3)]))
    o = np.full(2, -1, np.int64)
    e = np.zeros(0, np.int64)
    assert bk.top_n(b.levels, b.state, 0, 10, o, o.copy(), e, e) == (2, 0)
    assert list(o) == [3, 2]


@pytest.mark.parametrize("cap", [5000])
def test_deep_book_random_stream_equals_reference(cap: int) -> None:
    """5,000 levels per side, a realistic stream (most changes near the top, some deep), with
    deletes, inserts and updates; compared with the dict model at checkpoints."""
    rng = np.random.default_rng(11)
    b = bk.make_books(2, cap)
    ref: list[list[dict]] = [[{}, {}], [{}, {}]]
    # fill: 5,000 levels per side for both instruments, ask above bid
    rows = []
    for i in range(2):
        for k in range(cap):
            rows.append((i, SIDE_BID, 1_000_000 - k, 1 + k))
            rows.append((i, SIDE_ASK, 1_000_001 + k, 1 + k))
    n = 60_000
    inst = rng.integers(0, 2, n)
    side = rng.integers(0, 2, n)
    deep = rng.random(n) < 0.05
    off = np.where(deep, rng.integers(0, 2 * cap, n), rng.geometric(0.3, n) - 1)
    q = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 1000, n))
    px = np.where(side == SIDE_BID, 1_000_000 - off, 1_000_001 + off)
    u = np.zeros(len(rows) + n, MD_UPDATE_DTYPE)
    u["kind"] = MD_LEVEL
    fill = np.array(rows, np.int64)
    u["instrument"][: len(rows)], u["side"][: len(rows)] = fill[:, 0], fill[:, 1]
    u["price"][: len(rows)], u["qty"][: len(rows)] = fill[:, 2], fill[:, 3]
    u["instrument"][len(rows):], u["side"][len(rows):] = inst, side
    u["price"][len(rows):], u["qty"][len(rows):] = px, q
    checkpoints = list(range(0, len(u), 7_919)) + [len(u)]
    errors = 0
    for a, z in zip(checkpoints, checkpoints[1:]):
        bk.apply_batch(*b[:4], u, a, z)
        errors += int(b.batch[bk.B_ERRORS])
        for r in u[a:z].tolist():
            d = ref[r[4]][r[2]]
            # the kernel's full-side rule, as in RefBooks
            if r[6] == 0:
                d.pop(r[5], None)
            else:
                d[r[5]] = r[6]
                if len(d) > cap:
                    del d[min(d) if r[2] == SIDE_BID else max(d)]
        for i in range(2):
            assert b.levels_of(i, SIDE_BID) == sorted(ref[i][SIDE_BID].items(), reverse=True)
            assert b.levels_of(i, SIDE_ASK) == sorted(ref[i][SIDE_ASK].items())
    assert int(b.bid_len[0]) > cap // 2  # still deep: the test exercised deep rows
    assert errors == int(b.err_counts[:, bk.ERR_CAPACITY].sum())  # only capacity, never crossed
