"""OKX v5: every recorded checksum reproduced through parser + book, seqId/prevSeqId chain,
checksum 0 = not published, bad input."""
from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numpy as np

from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.records import MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues import okx
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason, SyncState
from tests.conftest import RECORDED

INSTS = {"BTC-USD-220527": (1, 0), "UNI-USD-SWAP": (3, 0), "BTC-USDT": (1, 8)}


def handler(extra: int = 0, capacity: int = 1024):
    t = InstrumentTable()
    for s, (ps, qs) in INSTS.items():
        t.add(okx.VENUE, s, ps + extra, qs + extra)
    return okx.OkxV5(t, make_books(len(t), capacity)), t


@pytest.fixture(scope="module")
def frames():
    return read_recording(RECORDED / "OKX.ws.1.0")


def test_every_recorded_checksum_is_reproduced(frames) -> None:
    n_books = sum(b'"channel":"books"' in f and b'"data"' in f for _, f in frames)
    assert n_books == 290
    for extra in (0, 3):
        h, t = handler(extra)
        for recv, f in frames:
            assert h.on_frame(f, recv) in (Reason.OK, Reason.IGNORED), f[:200]
        assert h.checked == n_books
        assert h.counters[Reason.CHECKSUM_MISMATCH] == 0 and h.counters.rejects() == 0
        assert all(h.state(s) == SyncState.LIVE for s in INSTS)


def test_final_books_equal_a_reference_model(frames) -> None:
    h, t = handler()
    ref: dict[str, list[dict]] = {}
    for recv, f in frames:
        h.on_frame(f, recv)
        m = json.loads(f)
        if m.get("arg", {}).get("channel") != "books" or "data" not in m:
            continue
        bk = ref.setdefault(m["arg"]["instId"], [{}, {}])
        if m["action"] == "snapshot":
            bk[0].clear(), bk[1].clear()
        d = m["data"][0]
        for side, key in ((bk[0], "bids"), (bk[1], "asks")):
            for p, q, *_ in d[key]:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        # the reference model agrees with OKX's own checksum, independently of our book
        bids = sorted(bk[0].items(), reverse=True)
        asks = sorted(bk[1].items())
        txt = lambda xs: [(format(p.normalize(), "f"), format(q.normalize(), "f"))  # noqa: E731
                          for p, q in xs]
        assert okx.book_checksum(txt(bids), txt(asks)) == d["checksum"]
    for inst in t:
        bpx, bq, nb, apx, aq, na = h.top(inst, 1000)
        rb, ra = ref[inst.symbol]
        assert [(inst.price(p), inst.qty(q)) for p, q in zip(bpx[:nb], bq[:nb])] == sorted(rb.items(), reverse=True)
        assert [(inst.price(p), inst.qty(q)) for p, q in zip(apx[:na], aq[:na])] == sorted(ra.items())


def _book_frame(inst, action, bids, asks, checksum, seq=None, prev=None):
    d = {"asks": [[p, q, "0", "1"] for p, q in asks], "bids": [[p, q, "0", "1"] for p, q in bids],
         "ts": "1652459225464", "checksum": checksum}
    if seq is not None:
        d["seqId"], d["prevSeqId"] = seq, prev
    return orjson.dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [d]})


BIDS = [("30200.1", "5"), ("30200", "3")]
ASKS = [("30201", "2"), ("30202.5", "7")]


def test_seq_chain_with_checksum_zero_not_published() -> None:
    h, t = handler()
    i = "BTC-USD-220527"
    assert h.on_frame(_book_frame(i, "snapshot", BIDS, ASKS, 0, 100, -1)) == Reason.OK
    assert h.on_frame(_book_frame(i, "update", [("30200.1", "6")], [], 0, 101, 100)) == Reason.OK
    # no change for a while: seqId == prevSeqId, empty books
    assert h.on_frame(_book_frame(i, "update", [], [], 0, 101, 101)) == Reason.OK
    assert h.checked == 0 and h.seq_checked == 2
    # a duplicate (already applied) push is dropped, not applied twice
    assert h.on_frame(_book_frame(i, "update", [("30200.1", "6")], [], 0, 101, 100)) == Reason.OUT_OF_ORDER
    assert h.state(i) == SyncState.LIVE
    # maintenance reset: seqId < prevSeqId, chain continues from the new seqId
    assert h.on_frame(_book_frame(i, "update", [], [("30201", "1")], 0, 5, 101)) == Reason.OK
    assert h.on_frame(_book_frame(i, "update", [], [("30201", "3")], 0, 6, 5)) == Reason.OK
    # a gap: resync and a re-subscription request
    assert h.on_frame(_book_frame(i, "update", [], [("30201", "4")], 0, 9, 8)) == Reason.GAP
    assert h.state(i) == SyncState.RESYNCING and h.take_resync_requests() == [i]
    assert h.on_frame(_book_frame(i, "update", [], [], 0, 10, 9)) == Reason.NOT_SYNCED
    assert h.on_frame(_book_frame(i, "snapshot", BIDS, ASKS, 0, 50, -1)) == Reason.OK
    inst = t.get(okx.VENUE, i)
    bpx, bq, nb, apx, aq, na = h.top(inst, 5)
    assert list(bpx[:nb]) == [302001, 302000] and list(aq[:na]) == [2, 7]


def test_checksum_when_published_with_seq_ids() -> None:
    h, t = handler()
    i = "BTC-USD-220527"
    assert h.on_frame(_book_frame(i, "snapshot", BIDS, ASKS, okx.book_checksum(BIDS, ASKS), 1, -1)) == Reason.OK
    good = okx.book_checksum([("30200.1", "6"), ("30200", "3")], ASKS)
    assert h.on_frame(_book_frame(i, "update", [("30200.1", "6")], [], good, 2, 1)) == Reason.OK
    assert h.checked == 2
    assert h.on_frame(_book_frame(i, "update", [("30200.1", "7")], [], good, 3, 2)) == Reason.CHECKSUM_MISMATCH
    assert h.state(i) == SyncState.RESYNCING


BAD = [
    (b'{"arg":{"channel":"books","instId":"X"},', Reason.MALFORMED_JSON),
    (b'pong', Reason.IGNORED),
    (b'{"event":"error","code":"60012","msg":"Invalid request"}', Reason.UNKNOWN_MESSAGE),
    (b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', Reason.IGNORED),
    (_book_frame("NOPE-USDT", "snapshot", BIDS, ASKS, 0), Reason.UNKNOWN_SYMBOL),
    (_book_frame("BTC-USD-220527", "update", BIDS, ASKS, 0), Reason.NOT_SYNCED),
    (b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"weird","data":[{}]}', Reason.MALFORMED_JSON),
    (b'{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[]}', Reason.UNKNOWN_MESSAGE),
    (b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1",'
     b'"px":"-1","sz":"1","side":"buy","ts":"1"}]}', Reason.BAD_PRICE),
    (b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1",'
     b'"px":"1","sz":"0","side":"buy","ts":"1"}]}', Reason.BAD_QTY),
    (b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1",'
     b'"px":"1","sz":"1","side":"buy","ts":"999999999999999999"}]}', Reason.MALFORMED_JSON),
]


@pytest.mark.parametrize("frame,reason", BAD)
def test_bad_frames_are_counted(frame, reason) -> None:
    h, _ = handler()
    assert h.on_frame(frame) == reason and h.counters[reason] == 1


@pytest.mark.parametrize("bids,asks,reason", [
    ([("abc", "1")], [], Reason.BAD_PRICE),
    ([("0", "1")], [], Reason.BAD_PRICE),
    ([("30200.12", "1")], [], Reason.BAD_PRICE),   # finer than the instrument's tick
    ([("30200", "-1")], [], Reason.BAD_QTY),
    ([("30200", "1.5")], [], Reason.BAD_QTY),      # contracts are whole on this instrument
    ([("30300", "1")], [], Reason.CROSSED_BOOK),
])
def test_bad_levels_resync(bids, asks, reason) -> None:
    h, _ = handler()
    i = "BTC-USD-220527"
    h.on_frame(_book_frame(i, "snapshot", BIDS, ASKS, 0, 1, -1))
    assert h.on_frame(_book_frame(i, "update", bids, asks, 0, 2, 1)) == reason
    assert h.state(i) == SyncState.RESYNCING and h.counters[reason] == 1


def test_oversize_and_trades(frames) -> None:
    h, t = handler()
    h.max_frame_bytes = 64
    assert h.on_frame(frames[5][1]) == Reason.OVERSIZE_FRAME
    h.max_frame_bytes = 1 << 20
    f = next(f for _, f in frames if b'"channel":"trades"' in f and b'"data"' in f)
    assert h.on_frame(f) == Reason.OK
    r = h.drain()[0]
    m = json.loads(f)["data"][0]
    inst = t.get(okx.VENUE, m["instId"])
    assert r["kind"] == MD_TRADE and r["venue_seq"] == int(m["tradeId"])
    assert inst.price(r["price"]) == Decimal(m["px"]) and inst.qty(r["qty"]) == Decimal(m["sz"])
    assert r["side"] == (SIDE_BID if m["side"] == "buy" else SIDE_ASK)
    assert r["exch_ts_ns"] == int(m["ts"]) * 1_000_000
    assert json.loads(okx.subscribe(["BTC-USDT"])) == {"op": "subscribe", "args": [
        {"channel": "books", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "BTC-USDT"}]}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data) -> None:
    h, _ = handler(capacity=16)
    assert isinstance(h.on_frame(data), Reason)
    h.on_frames([data, b'{"arg":' + data, data + b"}"])  # the batch path: counted, never raised
    assert int(h.counters.counts.sum()) == 4


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_real_frames(frames, data) -> None:
    h, _ = handler()
    real = [f for _, f in frames[25:120]]
    for f in real[:5]:
        h.on_frame(f)
    f = bytearray(data.draw(st.sampled_from(real)))
    for _ in range(data.draw(st.integers(1, 4))):
        f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.sampled_from(b'0123456789.-,"[]{}:x '))
    assert isinstance(h.on_frame(bytes(f)), Reason)
    assert int(h.counters.counts.sum()) == 6


# --- the batch hot path (okx_scan) must be indistinguishable from the Python reference ---------
def _with_seq_ids(frames):
    """The recording with seqId/prevSeqId added (as OKX sends since 2022) and, from the middle
    on, checksum 0 (as production sends since June 2026): both checks through both paths."""
    out, last = [], {}
    for k, (recv, f) in enumerate(frames):
        m = json.loads(f)
        if m.get("arg", {}).get("channel") == "books" and "data" in m:
            inst = m["arg"]["instId"]
            seq = last.get(inst, 1000) + 7
            d = m["data"][0]
            d["seqId"], d["prevSeqId"] = seq, (-1 if m["action"] == "snapshot" else last.get(inst, 1000))
            last[inst] = seq
            if k > len(frames) // 2:
                d["checksum"] = 0
            f = orjson.dumps(m)
        out.append((recv, f))
    return out


def _tamper(frames, seed):
    import random

    rnd = random.Random(seed)
    out = []
    for recv, f in frames:
        x = rnd.random()
        if b'"action":"update"' in f:
            if x < 0.03:
                f = f.replace(b'"checksum":', b'"checksum":1', 1)
            elif x < 0.05:
                f = f[: len(f) // 2]
            elif x < 0.07:
                out.append((recv, f))  # a duplicate push
            elif x < 0.09:
                continue  # a lost push
            elif x < 0.1:
                f = f.replace(b'"bids":[["', b'"bids":[["-', 1)
        out.append((recv, f))
        if b'"action":"snapshot"' in f and x < 0.5:
            out.append((recv, f))  # snapshots again later recover resynced books
    return out


@pytest.mark.parametrize("variant", ["plain", "seq", "tampered", "seq-tampered"])
def test_batch_path_equals_frame_path(frames, variant) -> None:
    fr = _with_seq_ids(frames) if "seq" in variant else list(frames)
    if "tampered" in variant:
        fr = _tamper(fr, 3)
        snaps = [x for x in fr if b'"action":"snapshot"' in x[1]]
        fr = fr + snaps + fr[-60:]
    a, t = handler()
    b, _ = handler()
    for recv, f in fr:
        a.on_frame(f, recv)
    for k in range(0, len(fr), 50):
        chunk = fr[k:k + 50]
        b.on_frames([f for _, f in chunk], [r for r, _ in chunk])
    assert a.counters.as_dict() == b.counters.as_dict()
    assert (a.checked, a.seq_checked) == (b.checked, b.seq_checked)
    if variant == "seq":
        assert a.seq_checked == 287 and 0 < a.checked < 290 and a.counters.rejects() == 0
    if variant == "tampered":
        assert a.counters[Reason.CHECKSUM_MISMATCH] > 0 and a.counters[Reason.MALFORMED_JSON] > 0
    if variant == "seq-tampered":
        assert a.counters[Reason.GAP] > 0
    assert (a.drain() == b.drain()).all()
    for inst in t:
        assert a.books.top(inst.id, 500)[2] == b.books.top(inst.id, 500)[2]
        for x, y in zip(a.books.top(inst.id, 500), b.books.top(inst.id, 500)):
            assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
    assert list(a.last_seq) == list(b.last_seq)
    assert a.take_resync_requests() == b.take_resync_requests()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_batch_path_mutated_frames(frames, data) -> None:
    base = [f for _, f in _with_seq_ids(frames)[25:90] if b'"channel":"books"' in f]
    a, _ = handler()
    b, _ = handler()
    picked = []
    for _ in range(data.draw(st.integers(1, 8))):
        f = bytearray(data.draw(st.sampled_from(base)))
        for _ in range(data.draw(st.integers(0, 3))):
            f[data.draw(st.integers(0, len(f) - 1))] = data.draw(st.sampled_from(b'0123456789.-,"[]{}:x '))
        picked.append(bytes(f))
    for f in base[:5] + picked:
        a.on_frame(f)
    b.on_frames(base[:5] + picked)
    assert a.counters.as_dict() == b.counters.as_dict()
    assert (a.drain() == b.drain()).all()


def test_batch_path_sends_what_strict_json_refuses_to_the_python_path(frames) -> None:
    h, _ = handler()
    ref, _ = handler()
    snap = next(f for _, f in frames if b'"action":"snapshot"' in f and b'"BTC-USD-220527"' in f)
    upd = next(f for _, f in frames if b'"action":"update"' in f and b'"BTC-USD-220527"' in f)
    bad = [upd.replace(b'"0","1"]', b'"0","\xff"]', 1),                         # invalid UTF-8
           upd.replace(b'"checksum":', b'"checksum":0', 1),                      # leading zero
           upd.replace(b'"ts":', b'"extra":1,"ts":', 1)]                         # unknown key
    for f in [snap, *bad]:
        ref.on_frame(f)
    h.on_frames([snap, *bad])
    assert h.counters.as_dict() == ref.counters.as_dict()
    assert h.counters[Reason.MALFORMED_JSON] >= 2
