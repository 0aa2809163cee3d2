"""L2 book kernel: hand-checked cases, bad input paths, accessors vs Decimal, deep books."""
from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext

import numpy as np
import pytest

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


def recs(rows: list[tuple]) -> np.ndarray:
    """rows of (kind, instrument, side, price, qty[, venue_seq[, flags]])."""
    u = np.zeros(len(rows), MD_UPDATE_DTYPE)
    for k, r in enumerate(rows):
        kind, inst, side, px, q = r[:5]
        u[k]["kind"] = kind
        u[k]["instrument"] = inst
        u[k]["side"] = side
        u[k]["price"] = px
        u[k]["qty"] = q
        u[k]["venue_seq"] = r[5] if len(r) > 5 else 0
        u[k]["flags"] = r[6] if len(r) > 6 else 0
    return u


def lv(inst: int, side: int, px: int, q: int, seq: int = 0, flags: int = 0) -> tuple:
    return (MD_LEVEL, inst, side, px, q, seq, flags)


def test_levels_sorted_best_first_and_storage_worst_first() -> None:
    b = bk.make_books(2, 8)
    err = b.apply(recs([lv(0, SIDE_BID, 100, 1), lv(0, SIDE_BID, 102, 2), lv(0, SIDE_BID, 101, 3),
                        lv(0, SIDE_ASK, 105, 4), lv(0, SIDE_ASK, 103, 5), lv(0, SIDE_ASK, 104, 6)]))
    assert err == 0
    assert b.levels_of(0, SIDE_BID) == [(102, 2), (101, 3), (100, 1)]
    assert b.levels_of(0, SIDE_ASK) == [(103, 5), (104, 6), (105, 4)]
    # documented storage: worst-first, best at len-1
    assert list(b.bid_px[0, :3]) == [100, 101, 102]
    assert list(b.ask_px[0, :3]) == [105, 104, 103]
    assert b.levels_of(1, SIDE_BID) == [] and b.levels_of(1, SIDE_ASK) == []
    assert b.batch[bk.B_APPLIED] == 6


def test_update_delete_and_absent_delete() -> None:
    b = bk.make_books(1, 8)
    b.apply(recs([lv(0, SIDE_BID, 100, 1), lv(0, SIDE_BID, 101, 2)]))
    err = b.apply(recs([lv(0, SIDE_BID, 100, 7), lv(0, SIDE_BID, 101, 0), lv(0, SIDE_BID, 55, 0)]))
    assert err == 0 and b.error[0] == 0
    assert b.levels_of(0, SIDE_BID) == [(100, 7)]
    assert b.counters[0, bk.CTR_DELETE_ABSENT] == 1


@pytest.mark.parametrize("side", [SIDE_BID, SIDE_ASK])
def test_every_position_of_a_deep_row(side: int) -> None:
    """Update, delete and re-insert the level at every position of a 40-level row: covers the
    linear scan near the top and the binary search below it, at both ends."""
    b = bk.make_books(1, 64)
    prices = list(range(1000, 1040))
    b.apply(recs([lv(0, side, p, p) for p in prices]))
    want = dict(zip(prices, prices))
    best_first = sorted(want.items(), reverse=(side == SIDE_BID))
    assert b.levels_of(0, side) == best_first
    for p in prices:
        b.apply(recs([lv(0, side, p, 7)]))
        want[p] = 7
        assert b.levels_of(0, side) == sorted(want.items(), reverse=(side == SIDE_BID))
        b.apply(recs([lv(0, side, p, 0)]))
        del want[p]
        assert b.levels_of(0, side) == sorted(want.items(), reverse=(side == SIDE_BID))
        b.apply(recs([lv(0, side, p, p)]))
        want[p] = p
        assert b.levels_of(0, side) == sorted(want.items(), reverse=(side == SIDE_BID))
    for p in (999, 1040, 2000, 1):  # outside: insert at both ends, then delete again
        b.apply(recs([lv(0, side, p, 1)]))
        want[p] = 1
        assert b.levels_of(0, side) == sorted(want.items(), reverse=(side == SIDE_BID))
    assert b.error[0] == 0


def test_clear_and_venue_seq_and_ignored_kinds() -> None:
    b = bk.make_books(2, 8)
    u = recs([lv(1, SIDE_BID, 100, 1, seq=5), lv(1, SIDE_ASK, 101, 1, seq=6),
              (MD_TRADE, 1, SIDE_BID, 100, 3, 99), (MD_BBO, 1, 0, 1, 1, 98)])
    assert bk.apply_batch(*b[:4], u, 0, len(u)) == 2
    assert b.last_venue_seq[1] == 6  # trades/BBO carry other sequences: not recorded
    assert b.counters[1, bk.CTR_IGNORED] == 2
    assert b.levels_of(1, SIDE_BID) == [(100, 1)]
    assert bk.apply_batch(*b[:4], recs([(MD_CLEAR, 1, 0, 0, 0, 7)]), 0, 1) == 1
    assert b.bid_len[1] == 0 and b.ask_len[1] == 0 and b.last_venue_seq[1] == 7
    assert b.last_venue_seq[0] == 0


def test_start_end_window() -> None:
    b = bk.make_books(1, 8)
    u = recs([lv(0, SIDE_BID, 100 + k, 1) for k in range(6)])
    assert bk.apply_batch(*b[:4], u, 2, 4) == 2
    assert b.levels_of(0, SIDE_BID) == [(103, 1), (102, 1)]
    assert bk.apply_batch(*b[:4], u, -5, 99) == 6  # clipped to the array, never out of bounds


@pytest.mark.parametrize(
    "row, code",
    [
        (lv(0, SIDE_BID, 100, -1), bk.ERR_NEG_QTY),
        (lv(0, SIDE_BID, 0, 1), bk.ERR_BAD_PRICE),
        (lv(0, SIDE_BID, -5, 1), bk.ERR_BAD_PRICE),
        (lv(0, SIDE_ASK, 1001, 1), bk.ERR_BAD_PRICE),  # beyond set_limits max_px
        (lv(0, SIDE_ASK, 0, 0), bk.ERR_BAD_PRICE),      # a delete still needs a valid price
        (lv(0, SIDE_ASK, 200, 51), bk.ERR_BAD_QTY),
        (lv(0, 2, 200, 1), bk.ERR_BAD_SIDE),
        ((99, 0, 0, 200, 1), bk.ERR_BAD_KIND),
    ],
)
def test_bad_records_are_skipped_and_reported(row: tuple, code: int) -> None:
    b = bk.make_books(2, 8)
    b.set_limits(0, 1000, 50)
    good = [lv(0, SIDE_BID, 90, 1), lv(0, SIDE_ASK, 110, 1)]
    b.apply(recs(good))
    before = (b.levels_of(0, SIDE_BID), b.levels_of(0, SIDE_ASK))
    u = recs([row, lv(0, SIDE_BID, 91, 2, seq=3)])
    assert b.apply(u) == code
    assert b.error[0] == code
    assert b.err_counts[0, code] == 1
    assert b.batch[bk.B_FIRST_ERROR_AT] == 0 and b.batch[bk.B_FIRST_ERROR_INST] == 0
    assert b.batch[bk.B_ERRORS] == 1
    # the bad record changed nothing; the good one after it was still applied
    assert b.levels_of(0, SIDE_BID) == [(91, 2)] + before[0]
    assert b.levels_of(0, SIDE_ASK) == before[1]
    assert b.error[1] == 0
    # sticky until the feed resyncs with MD_CLEAR
    assert b.apply(recs([lv(0, SIDE_BID, 92, 1)])) == 0 and b.error[0] == code
    b.apply(recs([(MD_CLEAR, 0, 0, 0, 0)]))
    assert b.error[0] == 0 and b.err_counts[0, code] == 1


def test_bad_instrument_counted_not_crashing() -> None:
    b = bk.make_books(2, 4)
    u = recs([lv(2, SIDE_BID, 100, 1), lv(-1, SIDE_BID, 100, 1), lv(1, SIDE_BID, 100, 1)])
    assert b.apply(u) == bk.ERR_BAD_INSTRUMENT
    assert b.batch[bk.B_BAD_INSTRUMENT] == 2 and b.batch[bk.B_ERRORS] == 2
    assert b.levels_of(1, SIDE_BID) == [(100, 1)]
    assert (b.error == 0).all()


def test_capacity_keeps_best_levels_and_reports() -> None:
    b = bk.make_books(1, 3)
    b.apply(recs([lv(0, SIDE_BID, p, 1) for p in (10, 11, 12)]))
    assert b.apply(recs([lv(0, SIDE_BID, 13, 5)])) == bk.ERR_CAPACITY  # better: worst (10) goes
    assert b.levels_of(0, SIDE_BID) == [(13, 5), (12, 1), (11, 1)]
    b.apply(recs([(MD_CLEAR, 0, 0, 0, 0)]))
    b.apply(recs([lv(0, SIDE_ASK, p, 1) for p in (10, 11, 12)]))
    assert b.apply(recs([lv(0, SIDE_ASK, 13, 5)])) == bk.ERR_CAPACITY  # worse than all: dropped
    assert b.levels_of(0, SIDE_ASK) == [(10, 1), (11, 1), (12, 1)]
    assert b.apply(recs([lv(0, SIDE_ASK, 11, 9)])) == 0  # update of a present level in a full side
    assert b.apply(recs([lv(0, SIDE_ASK, 105, 0)])) == 0  # delete absent in a full side
    assert b.apply(recs([lv(0, SIDE_ASK, 9, 2)])) == bk.ERR_CAPACITY  # best: 12 evicted
    assert b.levels_of(0, SIDE_ASK) == [(9, 2), (10, 1), (11, 9)]
    assert b.err_counts[0, bk.ERR_CAPACITY] == 3


def test_crossed_at_frame_end_batch_end_and_snapshot_end() -> None:
    b = bk.make_books(1, 8)
    # crossed mid-frame but fixed by the frame end: not an error
    u = recs([lv(0, SIDE_ASK, 100, 1), lv(0, SIDE_BID, 100, 1), lv(0, SIDE_ASK, 100, 0),
              lv(0, SIDE_ASK, 101, 1, flags=MD_FLAG_FRAME_END)])
    assert b.apply(u) == 0
    # crossed at a frame end
    u = recs([lv(0, SIDE_BID, 102, 1, flags=MD_FLAG_FRAME_END), lv(0, SIDE_BID, 102, 0)])
    assert b.apply(u) == bk.ERR_CROSSED and b.batch[bk.B_FIRST_ERROR_AT] == 0
    assert b.is_crossed(0) is False  # the second record uncrossed it; the error stays reported
    # crossed at the end of a batch, its frame not ended: judged at the frame end, not before
    b.apply(recs([(MD_CLEAR, 0, 0, 0, 0)]))
    assert b.apply(recs([lv(0, SIDE_BID, 105, 1), lv(0, SIDE_ASK, 104, 1)])) == 0
    assert b.is_crossed(0) and b.error[0] == 0 and b.state[0, bk.S_DIRTY] == bk.DIRTY_OPEN
    assert b.apply(recs([(MD_TRADE, 0, SIDE_BID, 104, 1, 0, MD_FLAG_FRAME_END)])) == bk.ERR_CROSSED
    assert b.batch[bk.B_FIRST_ERROR_AT] == 0 and b.state[0, bk.S_DIRTY] == 0
    # snapshot end
    b.apply(recs([(MD_CLEAR, 0, 0, 0, 0)]))
    u = recs([lv(0, SIDE_BID, 105, 1), lv(0, SIDE_ASK, 105, 1), (MD_SNAPSHOT_END, 0, 0, 0, 0)])
    assert b.apply(u) == bk.ERR_CROSSED and b.batch[bk.B_FIRST_ERROR_AT] == 2
    assert b.batch[bk.B_ERRORS] == 1  # reported once, not again at the batch end


def test_a_batch_cut_inside_a_crossed_frame_leaves_no_error_once_the_frame_completes() -> None:
    """A shard reading a backlog takes a full buffer of records, which may end inside a venue
    frame; in the middle of that frame the book can be crossed for a moment (the new best bid
    arrives before the asks it passes are deleted). The frame completes in the next batch, and
    the book must then be clean: before, the batch end judged it and left ERR_CROSSED for good."""
    b = bk.make_books(2, 8)
    seed = recs([lv(0, SIDE_BID, 100, 1), lv(0, SIDE_ASK, 101, 1), lv(0, SIDE_ASK, 102, 1),
                 (MD_SNAPSHOT_END, 0, 0, 0, 0, 1)])
    assert b.apply(seed) == 0
    # one venue frame: bid 102 (crossing asks 101 and 102), delete 101, delete 102, ask 103
    frame = recs([lv(0, SIDE_BID, 102, 1, 2), lv(0, SIDE_ASK, 101, 0, 2), lv(0, SIDE_ASK, 102, 0, 2),
                  lv(1, SIDE_BID, 7, 1, 9, MD_FLAG_FRAME_END),  # another instrument's frame between
                  lv(0, SIDE_ASK, 103, 1, 2, MD_FLAG_FRAME_END)])
    for cut in range(1, 5):  # every cut inside instrument 0's frame (crossed after 1 and 2 records)
        c = bk.make_books(2, 8)
        c.apply(seed)
        assert bk.apply_batch(*c[:4], frame, 0, cut) >= 1 and c.batch[bk.B_FIRST_ERROR] == 0
        assert c.is_crossed(0) == (cut < 3) and c.error[0] == bk.ERR_OK
        assert c.state[0, bk.S_DIRTY] == bk.DIRTY_OPEN  # judged later, at its frame end
        bk.apply_batch(*c[:4], frame, cut, len(frame))
        assert c.batch[bk.B_FIRST_ERROR] == 0 and c.batch[bk.B_ERRORS] == 0
        assert c.error[0] == bk.ERR_OK and not c.is_crossed(0)
        assert c.err_counts[0, bk.ERR_CROSSED] == 0 and c.state[0, bk.S_DIRTY] == 0
        assert c.levels_of(0, SIDE_ASK) == [(103, 1)] and c.best_bid(0) == (102, 1)
    # a frame that really ends crossed is still reported, at its frame-end record, after a cut
    bad = recs([lv(0, SIDE_BID, 106, 1, 3), lv(0, SIDE_ASK, 105, 1, 3, MD_FLAG_FRAME_END)])
    assert b.apply(frame) == 0
    assert bk.apply_batch(*b[:4], bad, 0, 1) == 1 and b.error[0] == bk.ERR_OK
    bk.apply_batch(*b[:4], bad, 1, 2)
    assert b.batch[bk.B_FIRST_ERROR] == bk.ERR_CROSSED and b.batch[bk.B_FIRST_ERROR_AT] == 1
    assert b.batch[bk.B_FIRST_ERROR_INST] == 0 and b.error[0] == bk.ERR_CROSSED
    assert b.err_counts[0, bk.ERR_CROSSED] == 1
    # a frame closed by a refused record is judged there too
    b.apply(recs([(MD_CLEAR, 0, 0, 0, 0, 4, MD_FLAG_FRAME_END)]))
    assert bk.apply_batch(*b[:4], recs([lv(0, SIDE_BID, 50, 1), lv(0, SIDE_ASK, 49, 1)]), 0, 2) == 2
    assert b.error[0] == bk.ERR_OK
    assert b.apply(recs([lv(0, SIDE_BID, -1, 1, 0, MD_FLAG_FRAME_END)])) == bk.ERR_BAD_PRICE
    assert b.err_counts[0, bk.ERR_CROSSED] == 2 and b.error[0] == bk.ERR_CROSSED


def test_make_books_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        bk.make_books(0, 10)
    with pytest.raises(ValueError):
        bk.make_books(1, 0)
    b = bk.make_books(1, 10)
    with pytest.raises(ValueError):
        b.set_limits(0, 0, 1)
    b.set_limits(0, bk.INT64_MAX, bk.INT64_MAX)  # clamped to the overflow-safe ceilings
    assert b.max_px[0] == bk.MAX_PX_LIMIT and b.max_qty[0] == bk.qty_ceiling(10)


# --- accessors vs Decimal ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _exact_decimal():
    """128-bit products divided down need more than Decimal's default 28 digits to be exact
    (local to this module's tests: the global context stays untouched)."""
    with localcontext() as c:
        c.prec = 100
        yield


def floor_e9(x: Decimal) -> tuple[int, int]:
    units = int(x.to_integral_value(rounding=ROUND_FLOOR))
    frac = int(((x - units) * 10**9).to_integral_value(rounding=ROUND_FLOOR))
    return units, frac


def test_accessors_on_empty_book() -> None:
    b = bk.make_books(1, 4)
    assert b.best_bid(0) == (0, 0) and b.best_ask(0) == (0, 0)
    assert b.mid(0) == 0 and b.microprice(0) == (0, 0, False)
    assert b.imbalance(0, 5) == 0 and b.depth(0, 5) == (0, 0)
    assert b.vwap_to_fill(0, SIDE_BID, 5) == (0, 0, 0, False)
    assert not b.is_crossed(0)
    assert b.top(0, 3)[2] == 0 and b.top(0, 3)[5] == 0


def test_accessors_huge_values_exact() -> None:
    """Prices and quantities whose products need 128 bits: exact against Decimal."""
    b = bk.make_books(1, 4)
    P = bk.MAX_PX_LIMIT
    Q = bk.qty_ceiling(4)
    b.apply(recs([lv(0, SIDE_BID, P - 7, Q), lv(0, SIDE_BID, P - 9, Q - 1),
                  lv(0, SIDE_ASK, P, Q - 3), lv(0, SIDE_ASK, P - 1, 3)]))
    bp, bq = P - 7, Q
    ap, aq = P - 1, 3
    assert b.mid(0) == (bp + ap) // 2
    assert b.microprice(0) == (*floor_e9(Decimal(bp * aq + ap * bq) / Decimal(aq + bq)), True)
    want = Decimal((P - 1) * 3 + P * (Q - 3)) / Decimal(Q)
    u, f, filled, ok = b.vwap_to_fill(0, SIDE_BID, Q)
    assert (u, f) == floor_e9(want) and filled == Q and ok
    sb, sa = 2 * Q - 1, Q
    assert b.depth(0, 9) == (sb, sa)
    assert b.imbalance(0, 9) == int(Decimal(sb - sa) * 10**9 / Decimal(sb + sa))


# --- checksum-ready top-N: documented venue vectors through the book ---------------------------
# Kraken WebSocket v2 guide, "Checksum Steps with Example" (BTC/USD, checksum 3310070434):
# https://docs.kraken.com/api/docs/guides/spot-ws-book-v2
KRAKEN_V2_BIDS = [
    ("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238")]
KRAKEN_V2_ASKS = [
    ("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827")]
# OKX v5 order book channel, checksum section (check string "3366.1:7:3366.8:9:3366:6:3368:8"):
# https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
OKX_BIDS, OKX_ASKS, OKX_CHECKSUM = [("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")], -1881014294


def _load_shuffled(b: bk.Books, bids: list, asks: list, pscale: int, qscale: int, extra: int) -> None:
    """The documented levels plus ``extra`` worse levels per side and some deleted noise, in a
    shuffled order: top_n has to find the documented ten among them."""
    from bot4d.fixedpoint import to_fixed

    rows = [lv(0, SIDE_BID, to_fixed(p, pscale), to_fixed(q, qscale)) for p, q in bids]
    rows += [lv(0, SIDE_ASK, to_fixed(p, pscale), to_fixed(q, qscale)) for p, q in asks]
    lo_bid = min(r[3] for r in rows if r[2] == SIDE_BID)
    hi_ask = max(r[3] for r in rows if r[2] == SIDE_ASK)
    rows += [lv(0, SIDE_BID, lo_bid - 1 - k, 12345) for k in range(extra)]
    rows += [lv(0, SIDE_ASK, hi_ask + 1 + k, 12345) for k in range(extra)]
    best_bid = max(r[3] for r in rows if r[2] == SIDE_BID)
    noise = [lv(0, SIDE_BID, best_bid + 1, 777), lv(0, SIDE_ASK, hi_ask + 5000, 1)]
    rng = np.random.default_rng(3)
    order = rng.permutation(len(rows))
    b.apply(recs([rows[k] for k in order] + noise))
    b.apply(recs([(MD_LEVEL, 0, SIDE_BID, best_bid + 1, 0), (MD_LEVEL, 0, SIDE_ASK, hi_ask + 5000, 0)]))
    assert b.error[0] == 0


def test_top_n_feeds_the_documented_kraken_checksum() -> None:
    from bot4d.venues.checksum import CRC_TABLE, kraken_book_crc, kraken_scaling

    b = bk.make_books(1, 256)
    _load_shuffled(b, KRAKEN_V2_BIDS, KRAKEN_V2_ASKS, pscale=1, qscale=8, extra=100)
    bp, bq, ap, aq = (np.zeros(10, np.int64) for _ in range(4))
    nb_, na_ = bk.top_n(b.levels, b.state, 0, 10, bp, bq, ap, aq)
    assert (nb_, na_) == (10, 10)
    pd, pm = kraken_scaling(1, 1)
    qd, qm = kraken_scaling(8, 8)
    assert kraken_book_crc(bp, bq, nb_, ap, aq, na_, pd, pm, qd, qm, CRC_TABLE) == 3310070434


def test_top_n_feeds_the_documented_okx_checksum() -> None:
    from bot4d.venues.checksum import CRC_TABLE, okx_book_crc

    b = bk.make_books(1, 64)
    _load_shuffled(b, OKX_BIDS, OKX_ASKS, pscale=1, qscale=0, extra=0)
    bp, bq, nb_, ap, aq, na_ = b.top(0, 25)
    assert okx_book_crc(bp, bq, nb_, ap, aq, na_, 1, 0, CRC_TABLE) == OKX_CHECKSUM


def test_python_side_refuses_bad_indices_instead_of_reading_past_arrays() -> None:
    b = bk.make_books(2, 4)
    for call in (lambda: b.best_bid(2), lambda: b.best_ask(-1), lambda: b.mid(5), lambda: b.top(2, 3),
                 lambda: b.microprice(2), lambda: b.depth(9, 1), lambda: b.imbalance(-3, 1),
                 lambda: b.is_crossed(2), lambda: b.vwap_to_fill(2, SIDE_BID, 1),
                 lambda: b.levels_of(2, SIDE_BID), lambda: b.set_limits(-1, 10, 10)):
        with pytest.raises(IndexError):
            call()
    with pytest.raises(ValueError):
        b.levels_of(0, 2)
    with pytest.raises(ValueError):
        b.vwap_to_fill(0, 7, 1)
    assert b.top(0, -1)[2] == 0
    o = np.zeros(2, np.int64)
    assert bk.top_n(b.levels, b.state, 0, -5, o, o, o, o) == (0, 0)
