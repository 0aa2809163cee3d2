"""Coinbase: legacy Exchange feed replay (COINBASE.ws.28.0.head1200) and Advanced Trade
sequence_num rules, documented message shapes, bad input."""
from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.records import MD_LEVEL, MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues import coinbase
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason, SyncState
from tests.conftest import RECORDED

# (price decimals, size decimals) as seen in the recording
PRODUCTS = {"SKL-USD": (4, 1), "SKL-BTC": (8, 1), "BAND-GBP": (4, 2), "NMR-EUR": (4, 3),
            "BAND-BTC": (8, 2), "YFI-BTC": (5, 6), "DASH-BTC": (8, 8), "NU-GBP": (4, 6),
            "CRV-EUR": (4, 2), "SKL-GBP": (4, 1)}


def legacy(extra=0):
    t = InstrumentTable()
    for p, (ps, qs) in PRODUCTS.items():
        t.add(coinbase.VENUE, p, ps + extra, qs + extra)
    return coinbase.CoinbaseLegacy(t, make_books(len(t), 2048)), t


@pytest.fixture(scope="module")
def frames():
    return read_recording(RECORDED / "COINBASE.ws.28.0.head1200")


def test_legacy_recording_replays_into_books_equal_to_a_reference(frames) -> None:
    h, t = legacy()
    ref: dict[str, list[dict]] = {}
    n_trades = 0
    for recv, f in frames:
        r = h.on_frame(f, recv)
        assert r in (Reason.OK, Reason.IGNORED), (r, f[:150])
        m = json.loads(f)
        if m["type"] == "snapshot":
            ref[m["product_id"]] = [{Decimal(p): Decimal(q) for p, q in m["bids"]},
                                    {Decimal(p): Decimal(q) for p, q in m["asks"]}]
        elif m["type"] == "l2update":
            for side, p, q in m["changes"]:
                d = ref[m["product_id"]][0 if side == "buy" else 1]
                if Decimal(q) == 0:
                    d.pop(Decimal(p), None)
                else:
                    d[Decimal(p)] = Decimal(q)
        elif m["type"] in ("match", "last_match"):
            n_trades += 1
    assert h.counters.rejects() == 0
    recs = h.drain()
    assert (recs["kind"] == MD_TRADE).sum() == n_trades == 23
    for inst in t:
        assert h.state(inst.symbol) == SyncState.LIVE
        bpx, bq, nb, apx, aq, na = h.top(inst, 5000)
        rb, ra = ref[inst.symbol]
        assert [(inst.price(p), inst.qty(q)) for p, q in zip(bpx[:nb], bq[:nb])] == sorted(rb.items(), reverse=True)
        assert [(inst.price(p), inst.qty(q)) for p, q in zip(apx[:na], aq[:na])] == sorted(ra.items())


def test_legacy_match_taker_is_opposite_of_maker_side(frames) -> None:
    h, t = legacy()
    f = next(f for _, f in frames if b'"type":"match"' in f)
    m = json.loads(f)
    assert h.on_frame(f) == Reason.OK
    r = h.drain()[0]
    assert r["side"] == (SIDE_ASK if m["side"] == "buy" else SIDE_BID)
    assert r["venue_seq"] == m["trade_id"]
    assert h.on_frame(f) == Reason.OUT_OF_ORDER  # same sequence again: a duplicate


# Advanced Trade level2 / market_trades message shapes from
# https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels (level2 and market_trades)
def at_l2(seq, typ, updates, product="BTC-USD"):
    return orjson.dumps({"channel": "l2_data", "client_id": "", "timestamp": "2023-02-09T20:32:50.714964855Z",
                         "sequence_num": seq, "events": [{"type": typ, "product_id": product, "updates": [
                             {"side": s, "event_time": "1970-01-01T00:00:00Z", "price_level": p,
                              "new_quantity": q} for s, p, q in updates]}]})


def advanced():
    t = InstrumentTable()
    t.add(coinbase.VENUE, "BTC-USD", 2, 8)
    t.add(coinbase.VENUE, "ETH-USD", 2, 8)
    return coinbase.CoinbaseAdvanced(t, make_books(2, 64)), t


def test_advanced_snapshot_updates_and_sequence_gap() -> None:
    h, t = advanced()
    snap = at_l2(0, "snapshot", [("bid", "21921.73", "0.06317902"), ("offer", "21921.74", "1.5")])
    assert h.on_frame(snap) == Reason.OK
    assert h.on_frame(at_l2(1, "snapshot", [("bid", "1200.01", "2"), ("offer", "1200.5", "1")], "ETH-USD")) == Reason.OK
    assert h.on_frame(at_l2(2, "update", [("bid", "21921.73", "0")])) == Reason.OK
    inst = t.get(coinbase.VENUE, "BTC-USD")
    assert h.top(inst, 5)[2] == 0 and h.top(inst, 5)[5] == 1
    assert h.on_frame(at_l2(2, "update", [("bid", "21921.70", "1")])) == Reason.OUT_OF_ORDER
    # message 3 lost: every book of the connection is resynced
    assert h.on_frame(at_l2(4, "update", [("bid", "21921.70", "1")])) == Reason.GAP
    assert h.counters[Reason.GAP] == 1
    assert h.state("BTC-USD") == h.state("ETH-USD") == SyncState.RESYNCING
    assert sorted(h.take_resync_requests()) == ["BTC-USD", "ETH-USD"]
    assert h.on_frame(at_l2(5, "update", [("bid", "21921.70", "1")])) == Reason.NOT_SYNCED
    recs = h.drain()
    assert (recs["kind"] == MD_LEVEL).sum() == 5
    sub = json.loads(coinbase.subscribe_advanced(["BTC-USD"]))
    assert sub == {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}


def test_advanced_market_trades() -> None:
    h, _ = advanced()
    f = orjson.dumps({"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z",
                      "sequence_num": 0, "events": [{"type": "snapshot", "trades": [
                          {"trade_id": "000000000", "product_id": "ETH-USD", "price": "1260.01",
                           "size": "0.3", "side": "BUY", "time": "2019-08-14T20:42:27.265Z"}]}]})
    assert h.on_frame(f) == Reason.OK
    r = h.drain()[0]
    # "side" is the maker's: a BUY maker means the taker sold
    assert (r["kind"], r["price"], r["qty"], r["side"]) == (MD_TRADE, 126001, 30000000, SIDE_ASK)
    assert r["exch_ts_ns"] == 1565815347265000000


@pytest.mark.parametrize("updates,reason", [
    ([("bid", "x", "1")], Reason.BAD_PRICE),
    ([("bid", "21921.731", "1")], Reason.BAD_PRICE),
    ([("bid", "21921.70", "-1")], Reason.BAD_QTY),
    ([("middle", "21921.70", "1")], Reason.MALFORMED_JSON),
    ([("bid", "30000", "1")], Reason.CROSSED_BOOK),
])
def test_advanced_bad_levels_resync(updates, reason) -> None:
    h, _ = advanced()
    h.on_frame(at_l2(0, "snapshot", [("bid", "21921.73", "1"), ("offer", "21921.74", "1.5")]))
    assert h.on_frame(at_l2(1, "update", updates)) == reason
    assert h.state("BTC-USD") == SyncState.RESYNCING and h.counters[reason] == 1


@pytest.mark.parametrize("frame,reason", [
    (b'{"type":"l2update","product_id":"SKL-USD","changes":[["buy","1","1"]],"time":"2021-04-17T16:43:37.1Z"}',
     Reason.NOT_SYNCED),
    (b'{"type":"l2update","product_id":"FOO-USD","changes":[]}', Reason.UNKNOWN_SYMBOL),
    (b'{"type":"error","message":"Failed to subscribe"}', Reason.UNKNOWN_MESSAGE),
    (b'{"type":"heartbeat"}', Reason.IGNORED),
    (b'[1,2', Reason.MALFORMED_JSON),
    (b'{"type":"match","product_id":"SKL-USD","trade_id":1,"sequence":5,"side":"buy",'
     b'"price":"abc","size":"1","time":"2021-04-17T16:43:37.1Z"}', Reason.BAD_PRICE),
])
def test_legacy_bad_frames(frame, reason) -> None:
    h, _ = legacy()
    assert h.on_frame(frame) == reason and h.counters[reason] == 1


def test_oversize() -> None:
    h, _ = advanced()
    h.max_frame_bytes = 10
    assert h.on_frame(b'{"channel":"l2_data","x":1}') == Reason.OVERSIZE_FRAME


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data) -> None:
    for make in (advanced, legacy):
        h, _ = make()
        assert isinstance(h.on_frame(data), Reason)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_frames(data) -> None:
    frames = read_recording(RECORDED / "COINBASE.ws.28.0.head1200")[:60]
    h, _ = legacy()
    for _, f in frames[:20]:
        h.on_frame(f)
    f = bytearray(data.draw(st.sampled_from([f for _, f in frames])))
    for _ in range(data.draw(st.integers(1, 4))):
        f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.sampled_from(b'0123456789.-,"[]{}:x '))
    assert isinstance(h.on_frame(bytes(f)), Reason)


@pytest.mark.parametrize("frame", [
    b'{"type":"match","product_id":"SKL-USD","trade_id":99999999999999999999999,"sequence":5,'
    b'"side":"buy","price":"1","size":"1","time":"2021-04-17T16:43:37.1Z"}',
    b'{"type":"match","product_id":"SKL-USD","trade_id":1,"sequence":-5,'
    b'"side":"buy","price":"1","size":"1","time":"2021-04-17T16:43:37.1Z"}',
])
def test_legacy_ids_that_do_not_fit_int64_are_refused(frame) -> None:
    h, _ = legacy()
    assert h.on_frame(frame) == Reason.MALFORMED_JSON


def test_advanced_huge_sequence_and_trade_id_are_refused() -> None:
    h, _ = advanced()
    assert h.on_frame(at_l2(2**62, "snapshot", [])) == Reason.MALFORMED_JSON
    f = orjson.dumps({"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35Z",
                      "sequence_num": 0, "events": [{"type": "update", "trades": [
                          {"trade_id": "9" * 30, "product_id": "ETH-USD", "price": "1", "size": "1",
                           "side": "BUY", "time": "2019-08-14T20:42:27.265Z"}]}]})
    assert h.on_frame(f) == Reason.MALFORMED_JSON
    # a time whose nanoseconds do not fit int64 (year 9021) is refused, not overflowed
    f = (b'{"type":"l2update","product_id":"SKL-BTC","changes":[["buy","0.00001303","5500.0"]],'
         b'"time":"9021-04-17T16:43:37.079420Z"}')
    h2, _ = legacy()
    h2.on_frame(b'{"type":"snapshot","product_id":"SKL-BTC","bids":[["0.000013","1"]],"asks":[["0.000014","1"]]}')
    assert h2.on_frame(f) == Reason.MALFORMED_JSON
