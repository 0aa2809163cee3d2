"""Binance USD-M futures: the ``pu`` chain on recorded traffic, through the real book.

Rules (https://developers.binance.com/docs/derivatives/usds-margined-futures/
websocket-market-streams/How-to-manage-a-local-order-book-correctly): drop events with
``u < lastUpdateId``; the first applied has ``U <= lastUpdateId <= u``; then each event's ``pu``
equals the previous event's ``u``.
"""
from __future__ import annotations

import json

from bot4d.kernels.book import make_books
from bot4d.records import MD_BBO
from bot4d.venues import binance_futures as bf
from bot4d.venues.sync import Reason, SyncState
from tests.test_venue_binance import (
    DictBook, book_levels, load_http, load_ws, snapshot_body, spot_table, timeline,
)

FUT_SYMBOLS = ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]
WS, HTTP = "BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0"


def fut_table():
    # futures sizes are contracts with at most 3 decimals here; 1e-8 units would put the
    # deepest AKRO levels (1.6e8 contracts) beyond what the book's int64 sums may hold
    return spot_table("BINANCE_FUTURES", FUT_SYMBOLS, qty_scale=3)


def replay(feed_cls=bf.BinanceFuturesFeed, drop=None, spot_rule=False, hook=None):
    t = fut_table()
    books = make_books(len(t), 4096)
    feed = feed_cls(t, books)
    if spot_rule:
        feed.futures = False
    fi = -1
    for ts, kind, x in timeline(WS, HTTP):
        if kind == "snapshot":
            feed.on_snapshot(*x)
            continue
        fi += 1
        if drop is not None and fi == drop:
            continue
        r = feed.on_frames([x])
        if hook:
            hook(fi, x, r, feed, books)
    return t, books, feed


def test_urls_and_subscription():
    assert bf.snapshot_url("sushiusdt") == \
        "https://fapi.binance.com/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
    assert json.loads(bf.subscribe_message(["sushiusdt@depth@100ms"], 3)) == \
        {"method": "SUBSCRIBE", "params": ["sushiusdt@depth@100ms"], "id": 3}
    assert bf.combined_stream_url(["a@b"]) == "wss://fstream.binance.com/stream?streams=a@b"


def test_futures_replay_holds_the_pu_chain_and_matches_a_reference_book():
    tickers, tops = [], {}

    def hook(fi, frame, r, feed, books):
        d = json.loads(frame)["data"]
        if d.get("e") == "depthUpdate" and int(r.status[0]) == Reason.OK:
            i = int(r.instruments[0])
            tops[(i, d["u"])] = (books.best_bid(i), books.best_ask(i))
        tickers.extend(rec.copy() for rec in r.records if rec["kind"] == MD_BBO)

    t, books, feed = replay(hook=hook)
    c = feed.counters
    assert c[Reason.GAP] == 0 and c[Reason.OUT_OF_ORDER] == 0
    assert c.rejects() == c[Reason.STALE_EVENT] == 12   # pre-snapshot events, dropped by rule
    snaps = load_http(HTTP)
    for sym in FUT_SYMBOLS:
        assert feed.sync_state(sym) == SyncState.LIVE
        snap = json.loads(snaps[sym][1])
        lid = snap["lastUpdateId"]
        ref = DictBook()
        ref.snapshot(snap)
        prev = None
        for _, b in load_ws(WS):
            ev = json.loads(b)["data"]
            if ev.get("e") != "depthUpdate" or ev["s"] != sym or ev["u"] < lid:
                continue
            if prev is None:
                assert ev["U"] <= lid <= ev["u"]
            else:
                assert ev["pu"] == prev
            prev = ev["u"]
            ref.diff(ev)
        i = t.get("BINANCE_FUTURES", sym).id
        assert book_levels(books, i) == ref.units(8, 3)
        assert feed.last_u[i] == prev
    # bookTicker at the same update id as a depth event equals the book's top there
    same = [r for r in tickers if (int(r["instrument"]), int(r["venue_seq"])) in tops]
    assert len(same) == 50
    for r in same:
        (bp, bq), (ap, aq) = tops[(int(r["instrument"]), int(r["venue_seq"]))]
        assert (bp, bq, ap, aq) == (r["price"], r["qty"], r["aux_px"], r["aux_qty"])


def test_first_event_may_end_exactly_at_last_update_id_on_futures():
    # AKROUSDT: the first event at/after the snapshot has u == lastUpdateId; the futures rule
    # applies it (U <= L <= u) where the spot rule would drop it and then see a gap
    lid = json.loads(load_http(HTTP)["AKROUSDT"][1])["lastUpdateId"]
    evs = [json.loads(b)["data"] for _, b in load_ws(WS)]
    first = next(e for e in evs if e.get("e") == "depthUpdate" and e["s"] == "AKROUSDT"
                 and e["u"] >= lid)
    assert first["u"] == lid
    _, _, spot_ruled = replay(spot_rule=True)
    assert spot_ruled.counters[Reason.GAP] > 0     # ids are not contiguous on futures
    _, _, fut = replay()
    assert fut.counters[Reason.GAP] == 0


def test_dropped_event_breaks_the_pu_chain_and_resync_restores_the_book():
    frames = [b for _, b in load_ws(WS)]
    sushi = [i for i, b in enumerate(frames) if b"sushiusdt@depth" in b]
    dropped = sushi[100]
    t = fut_table()
    ref_books, vic_books = make_books(len(t), 4096), make_books(len(t), 4096)
    ref, vic = bf.BinanceFuturesFeed(t, ref_books), bf.BinanceFuturesFeed(t, vic_books)
    i = t.get("BINANCE_FUTURES", "SUSHIUSDT").id
    bodies, fi, done = [], -1, False
    for ts, kind, x in timeline(WS, HTTP):
        if kind == "snapshot":
            ref.on_snapshot(*x)
            vic.on_snapshot(*x)
            continue
        fi += 1
        ref.on_frames([x])
        if fi in sushi and ref.sync_state("SUSHIUSDT") == SyncState.LIVE:
            bodies.append(snapshot_body(ref_books, i, int(ref.last_u[i]), 8, 3))
        if fi == dropped:
            continue
        vic.on_frames([x])
        if vic.counters[Reason.GAP] and not done and vic.needs_snapshot():
            assert vic.needs_snapshot() == ["SUSHIUSDT"]
            # a snapshot lagging by one event: the buffered diff with U <= L <= u bridges it
            assert vic.on_snapshot("SUSHIUSDT", bodies[-2]) == Reason.OK
            done = True
            assert vic.sync_state("SUSHIUSDT") == SyncState.LIVE
    assert vic.counters[Reason.GAP] == 1 and done
    for sym in FUT_SYMBOLS:
        j = t.get("BINANCE_FUTURES", sym).id
        assert vic.sync_state(sym) == SyncState.LIVE
        assert book_levels(vic_books, j) == book_levels(ref_books, j)


def test_futures_duplicate_is_dropped_and_wrong_pu_is_a_gap():
    t = fut_table()
    feed = bf.BinanceFuturesFeed(t, make_books(len(t), 64))
    feed.on_snapshot("SUSHIUSDT", b'{"lastUpdateId":1000,"E":1,"T":1,"bids":[["7.5","1"]],'
                                  b'"asks":[["7.6","1"]]}')

    def ev(U, u, pu):
        return (f'{{"stream":"s","data":{{"e":"depthUpdate","E":1,"T":1,"s":"SUSHIUSDT",'
                f'"U":{U},"u":{u},"pu":{pu},"b":[["7.5","2"]],"a":[]}}}}').encode()

    r = feed.on_frames([ev(990, 999, 980), ev(995, 1003, 999), ev(1010, 1020, 1003),
                        ev(1010, 1020, 1003), ev(1030, 1040, 1025)])
    assert [int(s) for s in r.status] == [Reason.STALE_EVENT, Reason.OK, Reason.OK,
                                          Reason.OUT_OF_ORDER, Reason.GAP]
    no_pu = (b'{"stream":"s","data":{"e":"depthUpdate","E":1,"s":"SUSHIUSDT","U":1,"u":2,'
             b'"b":[],"a":[]}}')
    assert int(feed.on_frames([no_pu]).status[0]) == Reason.MALFORMED_JSON


def test_snapshot_exactly_at_an_event_boundary_is_bridged_by_pu():
    # documented bridge: U <= lastUpdateId <= u. A snapshot whose lastUpdateId is the previous
    # event's u is continued by the event with pu == lastUpdateId (U > lastUpdateId there)
    t = fut_table()
    feed = bf.BinanceFuturesFeed(t, make_books(len(t), 64))
    feed.on_snapshot("SUSHIUSDT", b'{"lastUpdateId":1000,"bids":[["7.5","1"]],"asks":[["7.6","1"]]}')
    f = (b'{"stream":"s","data":{"e":"depthUpdate","E":1,"T":1,"s":"SUSHIUSDT","U":1005,'
         b'"u":1010,"pu":1000,"b":[["7.4","3"]],"a":[]}}')
    assert feed.on_frame(f) == Reason.OK and feed.sync_state("SUSHIUSDT") == SyncState.LIVE
    # without that continuity (pu elsewhere) it is a gap: the snapshot is older than the stream
    feed.on_snapshot("SUSHIUSDT", b'{"lastUpdateId":1000,"bids":[],"asks":[]}')
    g = f.replace(b'"pu":1000', b'"pu":1002')
    assert feed.on_frame(g) == Reason.GAP and "SUSHIUSDT" in feed.needs_snapshot()
