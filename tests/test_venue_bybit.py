"""Bybit v5 public feed: documented examples, generated streams against a model, bad input, fuzz.

Sources:
* https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook (topic, snapshot/delta
  processing, ``u``: "Occasionally, you'll receive "u"=1, which is a snapshot data due to the
  restart of the service. So please overwrite your local orderbook"; response example)
* https://bybit-exchange.github.io/docs/v5/websocket/public/trade (publicTrade response example)
* subscription example ``{"op":"subscribe","args":["orderbook.50.BTCUSDT"],"req_id":"test"}``
  from https://bybit-exchange.github.io/docs/derivatives/ws-public/orderbook
The documented response examples elide levels with "..."; the vectors below keep the levels
the docs show, in the docs' exact text.
"""
from __future__ import annotations

import json
import random
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.records import MD_CLEAR, MD_LEVEL, MD_SNAPSHOT_END, MD_TRADE, SIDE_BID
from bot4d.venues import bybit
from bot4d.venues.sync import Reason, SyncState
from tests.test_venue_binance import book_levels

DOC_SNAPSHOT = (b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,'
                b'"data":{"s":"BTCUSDT","b":[["16493.50","0.006"],["16493.00","0.100"]],'
                b'"a":[["16611.00","0.029"],["16612.00","0.213"]],'
                b'"u":18521288,"seq":7961638724}}')
DOC_TRADE = (b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{'
             b'"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50",'
             b'"L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}')


def table(*symbols: str, pscale: int = 2, qscale: int = 3) -> InstrumentTable:
    t = InstrumentTable()
    for s in symbols or ("BTCUSDT",):
        t.add("BYBIT", s, pscale, qscale)
    return t


def new_feed(*symbols, **kw):
    t = table(*symbols)
    books = make_books(len(t), 256)
    return t, books, bybit.BybitFeed(t, books, **kw)


def levels(books, i=0):
    return book_levels(books, i)


def test_subscription_messages_match_the_documented_shape():
    assert json.loads(bybit.subscribe_message(["orderbook.50.BTCUSDT"], "test")) == \
        {"op": "subscribe", "args": ["orderbook.50.BTCUSDT"], "req_id": "test"}
    assert bybit.topics(["BTCUSDT"], depth=50) == ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]
    assert json.loads(bybit.ping_message()) == {"op": "ping"}
    with pytest.raises(ValueError):
        bybit.topics(["BTCUSDT"], depth=25)
    _, _, feed = new_feed()
    unsub, sub = feed.resubscribe_messages("BTCUSDT")
    assert json.loads(unsub) == {"op": "unsubscribe", "args": ["orderbook.50.BTCUSDT"]}
    assert json.loads(sub) == {"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}


def test_documented_snapshot_and_trade_parse_to_exact_records():
    _, books, feed = new_feed()
    rec, status = feed.on_frames([DOC_SNAPSHOT])
    assert list(status) == [0]
    assert list(rec["kind"]) == [MD_CLEAR, MD_LEVEL, MD_LEVEL, MD_LEVEL, MD_LEVEL,
                                 MD_SNAPSHOT_END]
    assert list(rec["price"][1:5]) == [1649350, 1649300, 1661100, 1661200]
    assert list(rec["qty"][1:5]) == [6, 100, 29, 213]
    assert set(rec["venue_seq"]) == {18521288}
    assert set(rec["exch_ts_ns"]) == {1672304484978_000_000}
    assert levels(books) == ([(1649350, 6), (1649300, 100)], [(1661100, 29), (1661200, 213)])
    assert feed.sync_state("BTCUSDT") == SyncState.LIVE
    rec, status = feed.on_frames([DOC_TRADE])
    assert list(status) == [0] and len(rec) == 1
    tr = rec[0]
    # taker side "Buy": the aggressor bought; the UUID trade id is not a sequence -> 0
    assert (tr["kind"], tr["side"], tr["price"], tr["qty"], tr["venue_seq"], tr["exch_ts_ns"]) == \
        (MD_TRADE, SIDE_BID, 1657850, 1, 0, 1672304486865_000_000)
    # spot trade ids are decimal strings: kept as the sequence
    spot = DOC_TRADE.replace(b'"20f43950-d8dd-5b31-9112-a178eb6023af"', b'"2290000000061666327"')
    rec, _ = feed.on_frames([spot])
    assert rec[0]["venue_seq"] == 2290000000061666327


# --- generated streams against a model ---------------------------------------------------------
def fmt(units: int, scale: int) -> str:
    return f"{Decimal(units).scaleb(-scale):.{scale}f}"


def book_msg(kind: str, u: int, seq: int, bids, asks, sym="BTCUSDT") -> bytes:
    return json.dumps({"topic": f"orderbook.50.{sym}", "type": kind, "ts": 1700000000000 + u,
                       "data": {"s": sym, "b": [[fmt(p, 2), fmt(q, 3)] for p, q in bids],
                                "a": [[fmt(p, 2), fmt(q, 3)] for p, q in asks],
                                "u": u, "seq": seq}, "cts": 1700000000000}).encode()


class Model:
    def __init__(self):
        self.b: dict[int, int] = {}
        self.a: dict[int, int] = {}
        self.live = False

    def view(self):
        return (sorted(self.b.items(), reverse=True), sorted(self.a.items()))


def gen_stream(seed: int):
    """(frame, expected Reason, expected model after) for: snapshot, deltas, a duplicate, a
    restart re-snapshot with u == 1, deltas again, a gap (resync), deltas while broken, and a
    recovery snapshot."""
    rng = random.Random(seed)
    m = Model()
    out = []
    mid = 1_000_000

    def rand_side(side_bid: bool, n: int):
        lv = {}
        for _ in range(n):
            off = rng.randint(1, 60)
            p = mid - off if side_bid else mid + off
            lv[p] = rng.randint(1, 5000)
        return lv

    def snapshot(u, seq):
        m.b, m.a = rand_side(True, 12), rand_side(False, 12)
        m.live = True
        out.append((book_msg("snapshot", u, seq, sorted(m.b.items(), reverse=True),
                             sorted(m.a.items())), Reason.OK, m.view()))

    def delta(u, seq, expect=Reason.OK):
        bids, asks = [], []
        for side, lst, is_bid in ((m.b, bids, True), (m.a, asks, False)):
            for _ in range(rng.randint(0, 4)):
                if side and rng.random() < 0.4:
                    p = rng.choice(sorted(side))
                    lst.append((p, 0))
                else:
                    off = rng.randint(1, 60)
                    lst.append((mid - off if is_bid else mid + off, rng.randint(1, 5000)))
        if expect == Reason.OK:
            for side, lst in ((m.b, bids), (m.a, asks)):
                for p, q in lst:
                    if q == 0:
                        side.pop(p, None)
                    else:
                        side[p] = q
        out.append((book_msg("delta", u, seq, bids, asks), expect, m.view()))

    u, seq = rng.randint(10, 10**6), rng.randint(10**9, 10**10)
    snapshot(u, seq)
    for _ in range(rng.randint(3, 10)):
        u += 1
        seq += rng.randint(1, 50)
        delta(u, seq)
    out.append((out[-1][0], Reason.OUT_OF_ORDER, m.view()))          # duplicate: dropped
    u, seq = 1, seq + 7                                               # service restart
    snapshot(u, seq)
    for _ in range(rng.randint(2, 6)):
        u += 1
        seq += rng.randint(1, 50)
        delta(u, seq)
    u += 2                                                            # u skipped one: gap
    seq += 3
    delta(u, seq, Reason.GAP)
    u += 1
    seq += 3
    delta(u, seq, Reason.NOT_SYNCED)                                  # ignored until snapshot
    u += 5
    seq += 9
    snapshot(u, seq)                                                  # resubscribe -> snapshot
    u += 1
    seq += 1
    delta(u, seq)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_generated_stream_gives_the_expected_book_at_every_step(seed):
    _, books, feed = new_feed()
    saw_resync = False
    for frame, expect, view in gen_stream(seed):
        _, status = feed.on_frames([frame])
        assert int(status[0]) == expect, (expect, frame[:120])
        if expect in (Reason.GAP, Reason.NOT_SYNCED):
            saw_resync = True
            assert feed.sync_state("BTCUSDT") == SyncState.RESYNCING
            assert feed.needs_resubscribe() == ["BTCUSDT"]
            continue
        assert feed.sync_state("BTCUSDT") == SyncState.LIVE
        assert levels(books) == view
    assert saw_resync
    assert feed.counters[Reason.GAP] == 1 and feed.counters[Reason.OUT_OF_ORDER] == 1


def test_generated_stream_batched_equals_frame_by_frame():
    frames = [f for f, _, _ in gen_stream(99)]
    _, b1, f1 = new_feed()
    for f in frames:
        f1.on_frames([f])
    _, b2, f2 = new_feed(batch_records=30)  # a snapshot fills it: many flushes mid-batch
    f2.on_frames(frames)
    assert levels(b1) == levels(b2)
    assert (f1.counters.counts == f2.counters.counts).all()


def test_restart_delta_with_u_1_and_seq_backwards_force_a_resync():
    _, books, feed = new_feed()
    feed.on_frames([book_msg("snapshot", 500, 1000, [(100, 1)], [(200, 1)])])
    _, s = feed.on_frames([book_msg("delta", 1, 1001, [(101, 1)], [])])
    assert int(s[0]) == Reason.GAP and feed.sync_state("BTCUSDT") == SyncState.RESYNCING
    feed.on_frames([book_msg("snapshot", 1, 5, [(100, 1)], [(200, 1)])])   # restart snapshot
    assert feed.sync_state("BTCUSDT") == SyncState.LIVE
    _, s = feed.on_frames([book_msg("delta", 2, 4, [(101, 1)], [])])       # seq went back
    assert int(s[0]) == Reason.OUT_OF_ORDER and feed.sync_state("BTCUSDT") == SyncState.RESYNCING
    # level-1 books re-send a snapshot with an unchanged u: accepted, replaces the book
    feed.on_frames([book_msg("snapshot", 9, 50, [(150, 2)], [(160, 3)])])
    _, s = feed.on_frames([book_msg("snapshot", 9, 50, [(151, 2)], [(160, 3)])])
    assert int(s[0]) == Reason.OK and levels(books) == ([(151, 2)], [(160, 3)])


# --- bad input ---------------------------------------------------------------------------------
SNAP = book_msg("snapshot", 10, 100, [(100, 1)], [(200, 1)])


@pytest.mark.parametrize("frame,reason,resyncs", [
    (b"", Reason.MALFORMED_JSON, False),
    (b"{", Reason.MALFORMED_JSON, False),
    (book_msg("delta", 11, 101, [(150, 1)], [])[:-9], Reason.MALFORMED_JSON, False),
    (b'{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"s":"BTCUSDT","b":[],"a":[]}}',
     Reason.MALFORMED_JSON, False),                                    # no u
    (b'{"topic":"orderbook.50.BTCUSDT","data":{"s":"BTCUSDT","b":[],"a":[],"u":11}}',
     Reason.MALFORMED_JSON, False),                                    # no type
    (book_msg("delta", 11, 101, [(150, 1)], [], sym="ETHUSDT"), Reason.UNKNOWN_SYMBOL, False),
    (book_msg("delta", 11, 101, [], []).replace(b'"b": []', b'"b": [["1.00","-1"]]'),
     Reason.BAD_QTY, True),
    (book_msg("delta", 11, 101, [], []).replace(b'"b": []', b'"b": [["1.00","0.0001"]]'),
     Reason.BAD_QTY, True),                                            # beyond qty scale
    (book_msg("delta", 11, 101, [], []).replace(b'"b": []', b'"b": [["abc","1"]]'),
     Reason.BAD_PRICE, True),
    (book_msg("delta", 11, 101, [], []).replace(b'"b": []', b'"b": [["0","1"]]'),
     Reason.BAD_PRICE, True),
    (book_msg("delta", 11, 101, [(250, 1)], []), Reason.CROSSED_BOOK, True),
    (book_msg("delta", 10, 101, [(150, 1)], []), Reason.OUT_OF_ORDER, False),
    (book_msg("delta", 13, 101, [(150, 1)], []), Reason.GAP, True),
    (book_msg("snapshot", 12, 101, [(150, 0)], [(200, 1)]), Reason.BAD_QTY, True),
    (b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{}}', Reason.UNKNOWN_MESSAGE, False),
    (b'{"hello":1}', Reason.UNKNOWN_MESSAGE, False),
    (b'{"success":true,"ret_msg":"","conn_id":"c","req_id":"test","op":"subscribe"}',
     Reason.IGNORED, False),
    (DOC_TRADE.replace(b'"Buy"', b'"Up"'), Reason.MALFORMED_JSON, False),
    (DOC_TRADE.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'), Reason.UNKNOWN_SYMBOL, False),
    (DOC_TRADE.replace(b'"0.001"', b'"0"'), Reason.BAD_QTY, False),
    (DOC_TRADE.replace(b'"16578.50"', b'"16578.505"'), Reason.BAD_PRICE, False),
    (DOC_TRADE.replace(b'"data":[', b'"data":{').replace(b"}]}", b"}}}"), Reason.MALFORMED_JSON,
     False),
])
def test_bad_input_is_counted_never_raised(frame, reason, resyncs):
    _, books, feed = new_feed()
    feed.on_frames([SNAP])
    before = levels(books)
    rec, status = feed.on_frames([frame])
    assert feed.sync_state("BTCUSDT") == (SyncState.RESYNCING if resyncs else SyncState.LIVE)
    if reason == Reason.CROSSED_BOOK:
        assert int(status[0]) == Reason.OK and feed.counters[Reason.CROSSED_BOOK] == 1
        return
    assert int(status[0]) == reason
    assert feed.counters[reason] == 1 and feed.counters.counts.sum() == 2
    assert levels(books) == before and len(rec) == 0


def test_delta_before_any_snapshot_and_oversize_frames_are_counted():
    _, _, feed = new_feed(max_frame=100)
    _, s = feed.on_frames([book_msg("delta", 11, 101, [(150, 1)], [])[:99],
                           book_msg("delta", 11, 101, [(150, 1)] * 20, [])])
    assert [int(x) for x in s] == [Reason.MALFORMED_JSON, Reason.OVERSIZE_FRAME]
    _, _, feed = new_feed()
    _, s = feed.on_frames([book_msg("delta", 11, 101, [(150, 1)], [])])
    assert int(s[0]) == Reason.NOT_SYNCED and feed.sync_state("BTCUSDT") == SyncState.SYNCING
    # a snapshot larger than the whole output batch cannot replace the book: counted, resync
    _, _, feed = new_feed(batch_records=4)
    _, s = feed.on_frames([book_msg("snapshot", 1, 1, [(100 - k, 1) for k in range(5)], [])])
    assert int(s[0]) == Reason.BATCH_FULL and feed.sync_state("BTCUSDT") == SyncState.RESYNCING


# --- fuzz ------------------------------------------------------------------------------------
_SEEDS = [f for seed in range(2) for f, _, _ in gen_stream(seed)] + [DOC_TRADE, DOC_SNAPSHOT]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(_SEEDS), st.integers(0, 5000), st.integers(0, 255),
              st.sampled_from(["flip", "cut", "ins"])),
), min_size=1, max_size=8))
def test_fuzz_never_crashes_and_counts_every_frame_once(items):
    _, books, feed = new_feed()
    feed.on_frames([SNAP])
    frames = []
    for it in items:
        if isinstance(it, bytes):
            frames.append(it)
            continue
        f, pos, byte, how = it
        pos %= max(len(f), 1)
        f = (f[:pos] + bytes([byte]) + f[pos + 1:] if how == "flip" else
             f[:pos] if how == "cut" else f[:pos] + bytes([byte]) + f[pos:])
        frames.append(f)
    _, status = feed.on_frames(frames)
    assert feed.counters.counts.sum() == 1 + len(frames)
    assert set(np.unique(status)) <= {int(r) for r in Reason}
    for i in range(books.n_instruments):
        assert books.bid_len[i] >= 0 and (books.bid_qty[i, :books.bid_len[i]] > 0).all()
