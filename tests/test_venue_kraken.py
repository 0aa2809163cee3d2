"""Kraken v1 (recordings) and v2 (live format): parsing, book sync, checksums, bad input."""
from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.records import MD_CLEAR, MD_LEVEL, MD_SNAPSHOT_END, MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues import kraken
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason, SyncState
from tests.conftest import RECORDED

PAIRS_V1 = {  # pair -> price decimals on the wire (checked on every level of KRAKEN.ws.50.0)
    "ADA/XBT": 9, "XBT/CHF": 5, "OMG/USD": 6, "OCEAN/XBT": 9, "ETH/CHF": 5, "SC/EUR": 6,
    "GRT/ETH": 9, "KSM/XBT": 8, "XMR/USD": 8, "WAVES/EUR": 6,
}


def side_levels(books, i, side):
    """Best-first levels (the book's accessor was renamed levels -> levels_of)."""
    f = getattr(books, "levels_of", None)
    return f(i, side) if f is not None else books.levels(i, side)


def v1_handler(extra_scale: int = 0, depth_capacity: int = 1024):
    # quantities stay at 8 decimals: OMG/USD has 22,000,000 lots at one level, and the book's
    # quantity ceiling (INT64_MAX / (2 * capacity)) leaves no room for finer units at depth 1000
    t = InstrumentTable()
    for pair, dec in PAIRS_V1.items():
        t.add(kraken.VENUE, pair, dec + extra_scale, 8)
    books = make_books(len(t), depth_capacity)
    return kraken.KrakenV1(t, books), t, books


@pytest.fixture(scope="module")
def book_frames():
    return read_recording(RECORDED / "KRAKEN.ws.50.0")


def test_every_recorded_checksum_is_reproduced(book_frames) -> None:
    n_ck = sum(b'"c":"' in f for _, f in book_frames)
    assert n_ck == 4269
    for extra in (0, 2):  # book units at the wire's decimals, and finer than them
        h, t, books = v1_handler(extra)
        if extra == 0:  # the Python reference path, frame by frame
            for recv, frame in book_frames:
                r = h.on_frame(frame, recv)
                assert r in (Reason.OK, Reason.IGNORED), (r, frame[:200])
        else:  # the batch hot path
            h.on_frames([f for _, f in book_frames], [r for r, _ in book_frames])
        assert h.checked == n_ck
        assert h.counters[Reason.CHECKSUM_MISMATCH] == 0
        assert h.counters.rejects() == 0
        assert all(h.state(p) == SyncState.LIVE for p in PAIRS_V1)


def _reference_books(frames):
    """A plain dict model of Kraken's rules, to cross-check the book kernel's final state."""
    books: dict[str, list[dict]] = defaultdict(lambda: [{}, {}])
    for _, frame in frames:
        m = json.loads(frame)
        if not isinstance(m, list):
            continue
        pair, depth = m[-1], int(m[-2][5:])
        bk = books[pair]
        for d in m[1:-2]:
            for key, lv in d.items():
                if key == "c":
                    continue
                side = bk[1] if key[0] == "a" else bk[0]
                if key in ("as", "bs"):
                    side.clear()
                for e in lv:
                    p, q = Decimal(e[0]), Decimal(e[1])
                    if q == 0:
                        side.pop(p, None)
                    else:
                        side[p] = q
        for side, rev in ((bk[0], True), (bk[1], False)):
            for p in sorted(side, reverse=not rev)[: max(0, len(side) - depth)]:
                del side[p]
    return books


def test_final_books_equal_a_reference_model(book_frames) -> None:
    h, t, books = v1_handler()
    for recv, frame in book_frames:
        h.on_frame(frame, recv)
    ref = _reference_books(book_frames)
    for inst in t:
        bpx, bq, nb, apx, aq, na = h.top(inst, 2000)
        rb, ra = ref[inst.symbol]
        want_b = sorted(rb.items(), reverse=True)
        want_a = sorted(ra.items())
        got_b = [(inst.price(p), inst.qty(q)) for p, q in zip(bpx[:nb], bq[:nb])]
        got_a = [(inst.price(p), inst.qty(q)) for p, q in zip(apx[:na], aq[:na])]
        assert got_b == want_b and got_a == want_a, inst.symbol


def test_records_of_a_snapshot_and_an_update(book_frames) -> None:
    h, t, _ = v1_handler()
    snap = next(f for _, f in book_frames if b'"as"' in f and b'"XMR/USD"' in f)
    assert h.on_frame(snap, 7) == Reason.OK
    recs = h.drain()
    inst = t.get(kraken.VENUE, "XMR/USD")
    assert recs["kind"][0] == MD_CLEAR and recs["kind"][-1] == MD_SNAPSHOT_END
    assert (recs["instrument"] == inst.id).all() and (recs["recv_ts_ns"] == 7).all()
    levels = recs[recs["kind"] == MD_LEVEL]
    m = json.loads(snap)
    assert len(levels) == len(m[1]["as"]) + len(m[1]["bs"])
    first_ask = m[1]["as"][0]
    a0 = levels[levels["side"] == SIDE_ASK][0]
    assert a0["price"] == int(Decimal(first_ask[0]) * 10**8)
    assert a0["qty"] == int(Decimal(first_ask[1]) * 10**8)
    assert a0["exch_ts_ns"] == int(Decimal(first_ask[2]) * 10**9)
    assert recs["flags"][-1] & 1 and not recs["flags"][:-1].any()


def _first_update_after_snapshot(frames, pair):
    seen = False
    for _, f in frames:
        if f.endswith(f'"{pair}"]'.encode()):
            if b'"as"' in f:
                seen = True
            elif seen and b'"c"' in f:
                return f
    raise AssertionError


def test_checksum_mismatch_resyncs_and_a_new_snapshot_recovers(book_frames) -> None:
    h, t, _ = v1_handler()
    snap = next(f for _, f in book_frames if b'"as"' in f and b'"XMR/USD"' in f)
    upd = _first_update_after_snapshot(book_frames, "XMR/USD")
    h.on_frame(snap)
    m = json.loads(upd)
    m[-3]["c"] = str((int(m[-3]["c"]) + 1) % (1 << 32))
    assert h.on_frame(orjson.dumps(m)) == Reason.CHECKSUM_MISMATCH
    assert h.state("XMR/USD") == SyncState.RESYNCING
    assert h.take_resync_requests() == ["XMR/USD"]
    inst = t.get(kraken.VENUE, "XMR/USD")
    assert h.top(inst, 1)[2] == 0 and h.top(inst, 1)[5] == 0  # the untrusted book was cleared
    assert h.on_frame(upd) == Reason.NOT_SYNCED
    assert h.on_frame(snap) == Reason.OK and h.on_frame(upd) == Reason.OK
    assert h.state("XMR/USD") == SyncState.LIVE
    resub = json.loads(kraken.subscribe_v1(["XMR/USD"], depth=1000))
    assert resub == {"event": "subscribe", "pair": ["XMR/USD"],
                     "subscription": {"name": "book", "depth": 1000}}


BAD_V1 = [
    (b"[992,{\"b\":[[\"354.1", Reason.MALFORMED_JSON),
    (b'{"event":"nonsense"}', Reason.UNKNOWN_MESSAGE),
    (b'[1,{"a":[["1.0","1.0","1.0"]],"c":"1"},"book-10","NOPE/USD"]', Reason.UNKNOWN_SYMBOL),
    (b'[1,{"a":[["1.0","1.0","1.0"]],"c":"1"},"book-10","ETH/CHF"]', Reason.NOT_SYNCED),
    (b'[1,{"a":[["1.0","1.0","1.0"]],"c":"1"},"wat","ETH/CHF"]', Reason.UNKNOWN_MESSAGE),
    (b'{"event":"heartbeat"}', Reason.IGNORED),
    (b'"just a string"', Reason.MALFORMED_JSON),
]


@pytest.mark.parametrize("frame,reason", BAD_V1)
def test_bad_v1_frames_are_counted_not_raised(frame, reason) -> None:
    h, _, _ = v1_handler()
    assert h.on_frame(frame) == reason
    assert h.counters[reason] == 1


LIVE_BAD_V1 = [
    ('[["-2213.00000","1.00000000","1.0"]]', Reason.BAD_PRICE),
    ('[["abc","1.00000000","1.0"]]', Reason.BAD_PRICE),
    ('[["0.00000","1.00000000","1.0"]]', Reason.BAD_PRICE),
    ('[["99999999999999999999.00000","1.00000000","1.0"]]', Reason.BAD_PRICE),
    ('[["2213.00000","-1.00000000","1.0"]]', Reason.BAD_QTY),
    ('[["2213.00000","x","1.0"]]', Reason.BAD_QTY),
    ('[["2213.000001","1.00000000","1.0"]]', Reason.BAD_PRICE),  # finer than the instrument
    ('[["2213.00000","1.00000000"]]', Reason.MALFORMED_JSON),
    ('[["2213.00000","1.00000000","bad"]]', Reason.MALFORMED_JSON),
    ('[["1.00000","1.00000000","1.0"]]', Reason.CROSSED_BOOK),  # an ask below the best bid
]


@pytest.mark.parametrize("levels,reason", LIVE_BAD_V1)
def test_bad_levels_on_a_live_book_resync(book_frames, levels, reason) -> None:
    h, t, _ = v1_handler()
    snap = next(f for _, f in book_frames if b'"as"' in f and b'"ETH/CHF"' in f)
    assert h.on_frame(snap) == Reason.OK
    frame = f'[496,{{"a":{levels},"c":"1"}},"book-1000","ETH/CHF"]'.encode()
    assert h.on_frame(frame) == reason
    assert h.counters[reason] == 1
    assert h.state("ETH/CHF") == SyncState.RESYNCING


def test_oversize_frame_is_refused_unparsed(book_frames) -> None:
    h, _, _ = v1_handler()
    h.max_frame_bytes = 100
    big = next(f for _, f in book_frames if b'"as"' in f)
    assert h.on_frame(big) == Reason.OVERSIZE_FRAME


@pytest.mark.parametrize("batch", [False, True])
def test_depth_truncation_drops_levels_kraken_no_longer_sends(batch) -> None:
    t = InstrumentTable()
    inst = t.add(kraken.VENUE, "XBT/USD", 1, 8)
    h = kraken.KrakenV1(t, make_books(1, 64))
    snap = {"as": [["101.0", "1.00000000", "1.0"], ["102.0", "1.00000000", "1.0"]],
            "bs": [["99.0", "1.00000000", "1.0"], ["98.0", "1.00000000", "1.0"]]}
    assert h.on_frame(orjson.dumps([1, snap, "book-2", "XBT/USD"])) == Reason.OK
    # a new best bid pushes 98.0 out of the subscribed depth of 2: Kraken sends no delete for it
    book_after = ([("100.0", "1.00000000"), ("99.0", "1.00000000")],
                  [("101.0", "1.00000000"), ("102.0", "1.00000000")])
    c = kraken.book_checksum_v1(*book_after)
    upd = orjson.dumps([1, {"b": [["100.0", "1.00000000", "2.0"]], "c": str(c)}, "book-2", "XBT/USD"])
    if batch:
        h.on_frames([upd])
    else:
        assert h.on_frame(upd) == Reason.OK
    assert h.checked == 1 and h.counters.rejects() == 0
    bpx, _, nb, _, _, _ = h.top(inst, 10)
    assert nb == 2 and list(bpx[:2]) == [1000, 990]
    recs = h.drain()
    deletes = recs[(recs["qty"] == 0) & (recs["kind"] == MD_LEVEL)]
    assert list(deletes["price"]) == [980]  # the truncation travels downstream as a delete


def test_trades_v1() -> None:
    frames = read_recording(RECORDED / "KRAKEN.ws.48.0")
    t = InstrumentTable()
    for pair, dec in PAIRS_V1.items():
        t.add(kraken.VENUE, pair, dec, 8)
    h = kraken.KrakenV1(t, make_books(len(t), 16))
    n = 0
    for recv, f in frames:
        m = json.loads(f)
        if isinstance(m, list) and m[-2] == "trade":
            n += len(m[1])
        assert h.on_frame(f, recv) in (Reason.OK, Reason.IGNORED)
    recs = h.drain()
    assert n > 0 and len(recs) == n and (recs["kind"] == MD_TRADE).all()
    x = recs[0]
    assert x["price"] == 35411000000 and x["qty"] == 89594024 and x["side"] == SIDE_ASK
    assert x["exch_ts_ns"] == 1618678142557535000
    # ticker frames (KRAKEN.ws.49.0) are well-formed and deliberately unused
    for recv, f in read_recording(RECORDED / "KRAKEN.ws.49.0"):
        assert h.on_frame(f, recv) in (Reason.IGNORED,)


# --- v2 ----------------------------------------------------------------------------------------
# The BTC/USD snapshot of Kraken's v2 checksum guide (checksum 3310070434), as Kraken sends it:
# prices and quantities are JSON numbers. https://docs.kraken.com/api/docs/guides/spot-ws-book-v2
from tests.test_venue_checksum import KRAKEN_V2_ASKS, KRAKEN_V2_BIDS, KRAKEN_V2_CHECKSUM  # noqa: E402


def v2_frame(typ, bids, asks, checksum, symbol="BTC/USD"):
    lv = lambda xs: ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in xs)  # noqa: E731
    return (f'{{"channel":"book","type":"{typ}","data":[{{"symbol":"{symbol}","bids":[{lv(bids)}],'
            f'"asks":[{lv(asks)}],"checksum":{checksum},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}'
            ).encode()


def v2_handler(pscale=1, qscale=8, depth=10):
    t = InstrumentTable()
    t.add(kraken.VENUE, "BTC/USD", pscale, qscale)
    return kraken.KrakenV2(t, make_books(1, 64), depth=depth), t


@pytest.mark.parametrize("pscale,qscale", [(1, 8), (4, 10)])
def test_v2_documented_snapshot_passes_through_parser_and_book(pscale, qscale) -> None:
    h, t = v2_handler(pscale, qscale)
    assert h.on_frame(v2_frame("snapshot", KRAKEN_V2_BIDS, KRAKEN_V2_ASKS, KRAKEN_V2_CHECKSUM)) == Reason.OK
    assert h.checked == 1 and h.state("BTC/USD") == SyncState.LIVE
    # an update deleting the best bid: the checksum of the resulting book, from the text recipe
    new_bids = KRAKEN_V2_BIDS[1:]
    c = kraken.book_checksum(new_bids, KRAKEN_V2_ASKS)
    assert h.on_frame(v2_frame("update", [("45283.5", "0")], [], c)) == Reason.OK
    assert h.checked == 2
    assert h.on_frame(v2_frame("update", [("45283.4", "0")], [], c)) == Reason.CHECKSUM_MISMATCH
    assert h.take_resync_requests() == ["BTC/USD"]


def test_v2_snapshot_with_a_wrong_checksum_is_refused() -> None:
    h, _ = v2_handler()
    f = v2_frame("snapshot", KRAKEN_V2_BIDS, KRAKEN_V2_ASKS, KRAKEN_V2_CHECKSUM + 1)
    assert h.on_frame(f) == Reason.CHECKSUM_MISMATCH
    assert h.state("BTC/USD") == SyncState.RESYNCING


def test_v2_float_parsing_would_have_failed() -> None:
    # the same frame through a float parser loses "0.10000000" -> 0.1: the recipe then disagrees
    f = json.loads(v2_frame("snapshot", KRAKEN_V2_BIDS, KRAKEN_V2_ASKS, KRAKEN_V2_CHECKSUM))
    d = f["data"][0]
    lossy = [(str(x["price"]), str(x["qty"])) for x in d["bids"]]
    lossy_a = [(str(x["price"]), str(x["qty"])) for x in d["asks"]]
    assert kraken.book_checksum(lossy, lossy_a) != KRAKEN_V2_CHECKSUM


def test_v2_trade_and_control_messages() -> None:
    h, t = v2_handler()
    # trade message shape from https://docs.kraken.com/api/docs/websocket-v2/trade
    f = (b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
         b'"price":45283.5,"qty":0.00100000,"ord_type":"market","trade_id":4665906,'
         b'"timestamp":"2023-09-25T07:49:37.708706Z"}]}')
    assert h.on_frame(f, 5) == Reason.OK
    r = h.drain()[0]
    assert (r["kind"], r["side"], r["price"], r["qty"], r["venue_seq"]) == (
        MD_TRADE, SIDE_ASK, 452835, 100000, 4665906)
    assert r["exch_ts_ns"] == 1695628177708706000
    assert h.on_frame(b'{"channel":"heartbeat"}') == Reason.IGNORED
    assert h.on_frame(b'{"method":"subscribe","result":{"channel":"book"},"success":true}') == Reason.IGNORED
    assert h.on_frame(b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
                      b'"bids":[],"asks":[],"checksum":1}]}') == Reason.NOT_SYNCED
    assert h.on_frame(b'{"channel":"mystery"}') == Reason.UNKNOWN_MESSAGE
    assert h.on_frame(b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
                      b'"bids":[{"price":1e3,"qty":1}],"asks":[],"checksum":1}]}') == Reason.BAD_PRICE
    sub = json.loads(kraken.subscribe_v2(["BTC/USD"], depth=25))
    assert sub == {"method": "subscribe",
                   "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 25, "snapshot": True}}
    with pytest.raises(ValueError):
        kraken.subscribe_v2(["BTC/USD"], depth=7)


# --- fuzz --------------------------------------------------------------------------------------
def _grt_frames(book_frames):
    """GRT/ETH has the smallest snapshot (133 levels): cheap enough to replay per example."""
    return [f for _, f in book_frames if f.endswith(b'"GRT/ETH"]')][:40]

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_v1_v2(data) -> None:
    for cls in (kraken.KrakenV1, kraken.KrakenV2):
        t = InstrumentTable()
        t.add(kraken.VENUE, "ETH/CHF", 5, 8)
        h = cls(t, make_books(1, 16))
        r = h.on_frame(data)
        assert isinstance(r, Reason) and r != Reason.OK or h.counters[Reason.OK] == 1
        h.on_frames([data, b"[1," + data, data + b"]"])  # the batch path: counted, never raised
        assert int(h.counters.counts.sum()) == 4


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_real_frames(book_frames, data) -> None:
    h, _, _ = v1_handler(depth_capacity=256)
    frames = _grt_frames(book_frames)
    for f in frames[:10]:
        h.on_frame(f)
    f = bytearray(data.draw(st.sampled_from(frames)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(f) - 1))
        f[i] = data.draw(st.sampled_from(b'0123456789.-,"[]{}:aceb x'))
    r = h.on_frame(bytes(f))
    assert isinstance(r, Reason)
    assert int(h.counters.counts.sum()) == 11


# --- the batch hot path (kraken_scan) must be indistinguishable from the Python reference ------
def _tampered(book_frames, seed):
    import random

    rnd = random.Random(seed)
    out = []
    for recv, f in book_frames:
        x = rnd.random()
        if x < 0.01 and b'"c":"' in f:
            m = json.loads(f)
            m[-3]["c"] = str((int(m[-3]["c"]) + 1) % (1 << 32))
            f = orjson.dumps(m)
        elif x < 0.015:
            f = f[: len(f) // 2]
        elif x < 0.02:
            f = f.replace(b'"', b"'", 1)
        elif x < 0.025 and b'"b":[["' in f:
            f = f.replace(b'"b":[["', b'"b":[["-', 1)
        out.append((recv, f))
        if x > 0.995:  # a second copy of a snapshot later in the stream resyncs the pair
            snap = next((g for _, g in book_frames if b'"as"' in g and g.endswith(f[-12:])), None)
            if snap is not None:
                out.append((recv, snap))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_path_equals_frame_path(book_frames, seed) -> None:
    frames = book_frames if seed == 0 else _tampered(book_frames, seed)
    a, t, _ = v1_handler()
    b, _, _ = v1_handler()
    for recv, f in frames:
        a.on_frame(f, recv)
    for k in range(0, len(frames), 333):  # several batches, boundaries anywhere
        chunk = frames[k:k + 333]
        b.on_frames([f for _, f in chunk], [r for r, _ in chunk])
    assert a.counters.as_dict() == b.counters.as_dict()
    assert a.checked == b.checked
    if seed:
        assert a.counters[Reason.CHECKSUM_MISMATCH] > 0 and a.counters[Reason.MALFORMED_JSON] > 0
    assert (a.drain() == b.drain()).all()
    for inst in t:
        for side in (SIDE_BID, SIDE_ASK):
            assert side_levels(a.books, inst.id, side) == side_levels(b.books, inst.id, side)
    assert [a.state(p) for p in PAIRS_V1] == [b.state(p) for p in PAIRS_V1]
    assert a.take_resync_requests() == b.take_resync_requests()


def test_batch_path_grows_a_full_batch(book_frames) -> None:
    h, _, _ = v1_handler()
    h.out = h.out[:4]
    h.on_frames([f for _, f in book_frames[:400]])
    assert h.counters[Reason.BATCH_FULL] > 0 and h.n_out > 4
    ref, _, _ = v1_handler()
    for _, f in book_frames[:400]:
        ref.on_frame(f)
    assert (ref.drain() == h.drain()).all()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_batch_path_mutated_frames(book_frames, data) -> None:
    a, _, _ = v1_handler(depth_capacity=256)
    b, _, _ = v1_handler(depth_capacity=256)
    base = _grt_frames(book_frames)
    frames = []
    for _ in range(data.draw(st.integers(1, 12))):
        f = bytearray(data.draw(st.sampled_from(base)))
        for _ in range(data.draw(st.integers(0, 3))):
            f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.sampled_from(b'0123456789.-,"[]{}:aceb x'))
        frames.append(bytes(f))
    for f in base[:10] + frames:
        a.on_frame(f)
    b.on_frames(base[:10] + frames)
    assert a.counters.as_dict() == b.counters.as_dict()
    assert (a.drain() == b.drain()).all()


def test_republished_levels_and_two_payloads_through_both_paths() -> None:
    # v1 marks a level re-sent after a deeper one left the subscribed depth with a 4th "r"
    # member, and splits asks and bids over two payload objects (doc example layout)
    t = InstrumentTable()
    t.add(kraken.VENUE, "XBT/USD", 1, 8)
    snap = orjson.dumps([1, {"as": [["101.0", "1.00000000", "1.0"], ["102.0", "1.00000000", "1.0"]],
                             "bs": [["99.0", "1.00000000", "1.0"], ["98.0", "1.00000000", "1.0"]]},
                         "book-2", "XBT/USD"])
    after = ([("99.0", "1.00000000"), ("98.0", "1.00000000")],
             [("102.0", "1.00000000"), ("103.0", "2.00000000")])
    upd = orjson.dumps([1, {"a": [["101.0", "0.00000000", "2.0"], ["103.0", "2.00000000", "2.0", "r"]]},
                        {"b": [], "c": str(kraken.book_checksum_v1(*after))}, "book-2", "XBT/USD"])
    for batch in (False, True):
        h = kraken.KrakenV1(t, make_books(1, 16))
        if batch:
            h.on_frames([snap, upd])
        else:
            assert h.on_frame(snap) == Reason.OK and h.on_frame(upd) == Reason.OK
        assert h.checked == 1 and h.counters.rejects() == 0
        assert side_levels(h.books, 0, SIDE_ASK) == [(1020, 100000000), (1030, 200000000)]


def test_stale_numba_cache_of_the_hot_path_is_dropped(tmp_path, monkeypatch) -> None:
    # numba keys a cached kernel on its own file only; the hot paths compile the book kernel in,
    # so an edit there must drop them (found the hard way: stale kernels failed every checksum)
    import numba

    from bot4d.venues.kraken_scan import drop_stale_cache

    mod = tmp_path / "hot.py"
    dep = tmp_path / "dep.py"
    mod.write_text("x = 1\n")
    dep.write_text("y = 1\n")
    cache = tmp_path / "cache" / "sub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    drop_stale_cache(str(mod), [str(dep)])  # first sight: stamp written
    (cache / "hot.run-1.py311.nbi").write_text("index")
    (cache / "hot.run-1.py311.1.nbc").write_text("code")
    (cache / "other.run-1.py311.nbi").write_text("index")
    assert drop_stale_cache(str(mod), [str(dep)]) is False
    assert (cache / "hot.run-1.py311.nbi").exists()
    dep.write_text("y = 2\n")
    assert drop_stale_cache(str(mod), [str(dep)]) is True
    assert not (cache / "hot.run-1.py311.nbi").exists() and not (cache / "hot.run-1.py311.1.nbc").exists()
    assert (cache / "other.run-1.py311.nbi").exists()


def _as_v2(book_frames):
    """The v1 recording re-encoded as WebSocket v2 frames: prices and quantities become JSON
    numbers with exactly the recorded text (as v2 sends them at full precision), checksums are
    the recorded ones, and each snapshot gets the checksum of its own text (v2 sends one there;
    computed with the text recipe, independently of our book)."""
    import datetime

    def lv(xs):
        return ",".join(f'{{"price":{e[0]},"qty":{e[1]}}}' for e in xs)

    out = []
    for recv, f in book_frames:
        m = json.loads(f)
        if not isinstance(m, list):
            continue
        pair = m[-1]
        if "as" in m[1]:
            asks, bids = m[1]["as"], m[1]["bs"]
            ck = kraken.book_checksum([(p, q) for p, q, _ in bids], [(p, q) for p, q, _ in asks])
            typ, ts = "snapshot", None
        else:
            asks = [e for d in m[1:-2] for e in d.get("a", [])]
            bids = [e for d in m[1:-2] for e in d.get("b", [])]
            ck = int(next(d["c"] for d in m[1:-2] if "c" in d))
            typ, ts = "update", max(e[2] for e in asks + bids)
        extra = ""
        if ts is not None:
            sec, _, frac = ts.partition(".")
            t = datetime.datetime.fromtimestamp(int(sec), datetime.timezone.utc)
            extra = f',"timestamp":"{t:%Y-%m-%dT%H:%M:%S}.{frac}Z"'
        out.append((recv, (f'{{"channel":"book","type":"{typ}","data":[{{"symbol":"{pair}",'
                           f'"bids":[{lv(bids)}],"asks":[{lv(asks)}],"checksum":{ck}{extra}}}]}}').encode()))
    return out


def test_v2_replay_of_the_recording_reproduces_every_checksum(book_frames) -> None:
    t = InstrumentTable()
    for pair, dec in PAIRS_V1.items():
        t.add(kraken.VENUE, pair, dec, 8)
    h = kraken.KrakenV2(t, make_books(len(t), 1024), depth=1000)
    frames = _as_v2(book_frames)
    for recv, f in frames:
        assert h.on_frame(f, recv) == Reason.OK, f[:200]
    assert h.checked == 4269 + 10 and h.counters.rejects() == 0
    # and the book equals the v1 path's book, level for level
    ref, _, _ = v1_handler()
    ref.on_frames([f for _, f in book_frames])
    for inst in t:
        for side in (SIDE_BID, SIDE_ASK):
            assert side_levels(h.books, inst.id, side) == side_levels(ref.books, inst.id, side)


@pytest.mark.parametrize("tampered", [False, True])
def test_v2_batch_path_equals_frame_path(book_frames, tampered) -> None:
    import random

    frames = _as_v2(book_frames)
    if tampered:
        rnd = random.Random(5)
        out = []
        for recv, f in frames:
            x = rnd.random()
            if b'"update"' in f:
                if x < 0.01:
                    f = f.replace(b'"checksum":', b'"checksum":1', 1)
                elif x < 0.015:
                    f = f[: len(f) // 2]
                elif x < 0.02:
                    f = f.replace(b'"price":', b'"price":-', 1)
                elif x < 0.025:
                    f = f.replace(b'"qty":', b'"qty":1e', 1)
                elif x < 0.03:
                    f = f.replace(b'"timestamp":"2', b'"timestamp":"9', 1)
            out.append((recv, f))
        snaps = [x for x in out if b'"snapshot"' in x[1]]
        frames = out + snaps + out[-300:]
    t = InstrumentTable()
    for pair, dec in PAIRS_V1.items():
        t.add(kraken.VENUE, pair, dec, 8)
    a = kraken.KrakenV2(t, make_books(len(t), 1024), depth=1000)
    b = kraken.KrakenV2(t, make_books(len(t), 1024), depth=1000)
    for recv, f in frames:
        a.on_frame(f, recv)
    for k in range(0, len(frames), 333):
        chunk = frames[k:k + 333]
        b.on_frames([f for _, f in chunk], [r for r, _ in chunk])
    assert a.counters.as_dict() == b.counters.as_dict()
    assert a.checked == b.checked
    if tampered:
        assert a.counters[Reason.CHECKSUM_MISMATCH] > 0 and a.counters[Reason.BAD_PRICE] > 0
    else:
        assert a.checked == 4279 and a.counters.rejects() == 0
    assert (a.drain() == b.drain()).all()
    for inst in t:
        for side in (SIDE_BID, SIDE_ASK):
            assert side_levels(a.books, inst.id, side) == side_levels(b.books, inst.id, side)
    assert a.take_resync_requests() == b.take_resync_requests()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_v2_batch_path(book_frames, data) -> None:
    base = [f for _, f in _as_v2([x for x in book_frames if x[1].endswith(b'"GRT/ETH"]')][:30])]
    t = InstrumentTable()
    t.add(kraken.VENUE, "GRT/ETH", 9, 8)
    a = kraken.KrakenV2(t, make_books(1, 256), depth=1000)
    b = kraken.KrakenV2(t, make_books(1, 256), depth=1000)
    picked = []
    for _ in range(data.draw(st.integers(1, 8))):
        f = bytearray(data.draw(st.sampled_from(base)))
        for _ in range(data.draw(st.integers(0, 3))):
            f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.sampled_from(b'0123456789.-+eE,"[]{}:x '))
        picked.append(bytes(f))
    for f in base[:5] + picked:
        a.on_frame(f)
    b.on_frames(base[:5] + picked)
    assert a.counters.as_dict() == b.counters.as_dict()
    assert (a.drain() == b.drain()).all()
