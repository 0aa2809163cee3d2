"""md.kraken: Kraken v1 book frames from raw bytes to a checksum-verified book.

Input: the real recorded frames of KRAKEN.ws.50.0 (10 pairs, depth-1000 snapshots and 4,269
updates, each with a CRC32 checksum). Every pipeline parses each frame, applies it to its book,
truncates to the subscribed depth and verifies Kraken's checksum after every update; all final
books must be equal. Baselines, fed the same frames in the same run:
* ``pure-python``: orjson + ``sortedcontainers.SortedDict`` per side, checksum with zlib;
* ``order-book``: orjson, then the ``order-book`` 0.6.1 C extension (its own Kraken checksum).
"""
from __future__ import annotations

import time
import zlib
from decimal import Decimal
from typing import Any, Callable

import numpy as np
import orjson
from sortedcontainers import SortedDict

from bench.harness import baseline_of, benchmark, result
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import kraken
from bot4d.venues.checksum import kraken_token
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason

RECORDED = __import__("tests.conftest", fromlist=["RECORDED"]).RECORDED


def kraken_frames() -> tuple[list[bytes], dict[str, int]]:
    frames = [f for _, f in read_recording(RECORDED / "KRAKEN.ws.50.0") if f.startswith(b"[")]
    decs: dict[str, int] = {}
    for f in frames:
        m = orjson.loads(f)
        if "as" in m[1]:
            decs[m[-1]] = len(m[1]["as"][0][0].split(".")[1])
    return frames, decs


def timed_run(process: Callable[[bytes], Any], frames: list[bytes], reps: int) -> tuple[float, np.ndarray]:
    """Frames/s over ``reps`` passes and per-frame latency samples (ns) of the last pass."""
    lat = np.empty(len(frames), np.int64)
    pc = time.perf_counter_ns
    total = 0
    for _ in range(reps):
        t0 = pc()
        for k, f in enumerate(frames):
            t = pc()
            process(f)
            lat[k] = pc() - t
        total += pc() - t0
    return reps * len(frames) / (total / 1e9), lat


# --- ours ----------------------------------------------------------------------------------------
def make_ours(decs: dict[str, int]) -> kraken.KrakenV1:
    t = InstrumentTable()
    for pair, d in decs.items():
        t.add(kraken.VENUE, pair, d, 8)
    return kraken.KrakenV1(t, make_books(len(t), 1024), batch_capacity=1 << 20)


# --- baselines ------------------------------------------------------------------------------------
class PurePythonKraken:
    """A straightforward Python book: SortedDict per side keyed by Decimal price, texts kept."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[SortedDict, SortedDict]] = {}
        self.mismatches = 0

    def on_frame(self, frame: bytes) -> None:
        m = orjson.loads(frame)
        if type(m) is not list:
            return
        pair, depth = m[-1], int(m[-2][5:])
        if "as" in m[1]:
            bids, asks = SortedDict(lambda p: -p), SortedDict()
            for p, q, _ in m[1]["as"]:
                asks[Decimal(p)] = (p, q)
            for p, q, _ in m[1]["bs"]:
                bids[Decimal(p)] = (p, q)
            self.books[pair] = (bids, asks)
            return
        bids, asks = self.books[pair]
        ck = None
        for d in m[1:-2]:
            for key, lv in d.items():
                if key == "c":
                    ck = int(lv)
                    continue
                side = asks if key == "a" else bids
                for e in lv:
                    p, q = e[0], e[1]
                    if Decimal(q) == 0:
                        side.pop(Decimal(p), None)
                    else:
                        side[Decimal(p)] = (p, q)
        for side in (bids, asks):
            while len(side) > depth:
                side.popitem()
        s = "".join(kraken_token(p) + kraken_token(q)
                    for side in (asks, bids) for p, q in side.values()[:10])
        if ck is not None and zlib.crc32(s.encode()) != ck:
            self.mismatches += 1


class OrderBookKraken:
    """orjson + the order-book 0.6.1 C extension, with its built-in Kraken checksum."""

    def __init__(self) -> None:
        from order_book import OrderBook

        self._cls = OrderBook
        self.books: dict[str, Any] = {}
        self.mismatches = 0

    def on_frame(self, frame: bytes) -> None:
        m = orjson.loads(frame)
        if type(m) is not list:
            return
        pair, depth = m[-1], int(m[-2][5:])
        if "as" in m[1]:
            ob = self._cls(max_depth=depth, checksum_format="KRAKEN")
            for p, q, _ in m[1]["as"]:
                ob.asks[Decimal(p)] = Decimal(q)
            for p, q, _ in m[1]["bs"]:
                ob.bids[Decimal(p)] = Decimal(q)
            self.books[pair] = ob
            return
        ob = self.books[pair]
        ck = None
        for d in m[1:-2]:
            for key, lv in d.items():
                if key == "c":
                    ck = int(lv)
                    continue
                side = ob.asks if key == "a" else ob.bids
                for e in lv:
                    p, q = Decimal(e[0]), Decimal(e[1])
                    if q == 0:
                        if p in side:
                            del side[p]
                    else:
                        side[p] = q
        if ck is not None and ob.checksum() != ck:
            self.mismatches += 1


def _ours_levels(h: kraken.KrakenV1, sym: str) -> tuple[list, list]:
    inst = h.table.get(kraken.VENUE, sym)
    bp, bq, nb, ap, aq, na = h.top(inst, 1000)
    return ([(inst.price(p), inst.qty(q)) for p, q in zip(bp[:nb], bq[:nb])],
            [(inst.price(p), inst.qty(q)) for p, q in zip(ap[:na], aq[:na])])


def run_md_bench(name: str, setup: list[bytes], updates: list[bytes], make_ours: Callable[[], Any],
                 baselines: dict[str, Callable[[], Any]], check: Callable[[Any, dict], dict],
                 quick: bool, batch: int = 256) -> list[dict]:
    """Time ``updates`` (after ``setup`` frames, untimed) through our batch path and each baseline;
    ``check(ours, finals)`` asserts the final books are equal and returns extra figures."""
    reps = 3 if quick else 20
    w = make_ours()
    w.on_frames(setup)
    w.on_frames(updates)  # warm: kernels loaded from the cache before any timing

    pc = time.perf_counter_ns
    # ours, throughput: frames arrive in batches (the io thread drains the socket), one kernel call
    t_total = 0
    for _ in range(reps):
        ours = make_ours()
        ours.on_frames(setup)
        ours.n_out = 0
        t0 = pc()
        for k in range(0, len(updates), batch):
            ours.on_frames(updates[k:k + batch])
            ours.n_out = 0  # the ring consumer drained the records
        t_total += pc() - t0
    ours_fps = reps * len(updates) / (t_total / 1e9)
    # ours, all update frames in one call: the kernel's own rate, without per-call dispatch
    t_one = 0
    for _ in range(reps):
        whole = make_ours()
        whole.on_frames(setup)
        whole.n_out = 0
        t0 = pc()
        whole.on_frames(updates)
        t_one += pc() - t0
    one_call_fps = reps * len(updates) / (t_one / 1e9)
    # ours, latency: one frame per call, bytes in -> verified book out
    lat_ours = np.empty(len(updates), np.int64)
    single = make_ours()
    single.on_frames(setup)
    for k, f in enumerate(updates):
        one = [f]
        t = pc()
        single.on_frames(one)
        lat_ours[k] = pc() - t
        single.n_out = 0
    finals = {}
    figs = {}
    for bname, factory in baselines.items():
        t_total = 0
        for _ in range(max(1, reps // 2)):
            obj = factory()
            for f in setup:
                obj.on_frame(f)
            fps, lat = timed_run(obj.on_frame, updates, 1)
            t_total += len(updates) / fps
        figs[bname] = (max(1, reps // 2) * len(updates) / t_total, lat)
        finals[bname] = obj
    extra = check(ours, finals)
    extra.update(check(single, finals))
    extra.update(check(whole, finals))
    base = {b: result(f"{name}.{b}", "frames", throughput_per_s=f[0], latency_ns=f[1])
            for b, f in figs.items()}
    names = list(baselines)
    r = result(name, "frames", throughput_per_s=ours_fps, latency_ns=lat_ours,
               baseline=baseline_of(base[names[0]]),
               **{f"baseline_{b.replace('-', '_')}": baseline_of(base[b]) for b in names[1:]},
               **{f"speedup_vs_{b.replace('-', '_')}": ours_fps / figs[b][0] for b in names},
               throughput_one_call_per_s=one_call_fps,
               frames_timed=len(updates), levels_per_frame=_levels_per_frame(updates),
               batch_frames=batch,
               throughput_basis=f"update frames in batches of {batch}, one on_frames call each",
               latency_basis="per frame: on_frames([frame]) from raw bytes to verified book",
               books_equal=True, **extra)
    return [r, *base.values()]


def _levels_per_frame(frames: list[bytes]) -> float:
    # v1/OKX levels are arrays, v2 levels objects
    return round(sum(max(f.count(b"],["), f.count(b'},{"price"')) + 1 for f in frames)
                 / max(len(frames), 1), 2)


@benchmark("md.kraken")
def bench_md_kraken(quick: bool) -> list[dict]:
    frames, decs = kraken_frames()
    setup = [f for f in frames if b'"as"' in f]
    updates = [f for f in frames if b'"as"' not in f]

    def check(ours: kraken.KrakenV1, finals: dict) -> dict:
        assert ours.counters[Reason.CHECKSUM_MISMATCH] == 0 and ours.counters.rejects() == 0
        assert finals["pure-python"].mismatches == 0
        for sym in decs:
            b, a = _ours_levels(ours, sym)
            pb, pa = finals["pure-python"].books[sym]
            assert b == [(k, Decimal(v[1])) for k, v in pb.items()], sym
            assert a == [(k, Decimal(v[1])) for k, v in pa.items()], sym
            ob = finals["order-book"].books[sym]
            assert b == list(ob.bids.to_dict().items()) and a == list(ob.asks.to_dict().items()), sym
        return {"checksums_verified": int(ours.checked),
                "order_book_checksum_mismatches": finals["order-book"].mismatches}

    return run_md_bench("md.kraken", setup, updates, lambda: make_ours(decs),
                        {"pure-python": PurePythonKraken, "order-book": OrderBookKraken},
                        check, quick)


# --- WebSocket v2 (live format): the same recorded book, re-encoded as v2 frames ------------------
def v2_frames(frames: list[bytes]) -> list[bytes]:
    """KRAKEN.ws.50.0 in the exact v2 wire format: prices and quantities become JSON numbers
    carrying the recorded text, checksums are the recorded ones (snapshots get the checksum of
    their own text, as v2 sends one there)."""
    import datetime

    def lv(xs: list) -> str:
        return ",".join(f'{{"price":{e[0]},"qty":{e[1]}}}' for e in xs)

    out = []
    for f in frames:
        m = orjson.loads(f)
        pair = m[-1]
        if "as" in m[1]:
            asks, bids = m[1]["as"], m[1]["bs"]
            ck = kraken.book_checksum([(p, q) for p, q, _ in bids], [(p, q) for p, q, _ in asks])
            typ, extra = "snapshot", ""
        else:
            asks = [e for d in m[1:-2] for e in d.get("a", [])]
            bids = [e for d in m[1:-2] for e in d.get("b", [])]
            ck = int(next(d["c"] for d in m[1:-2] if "c" in d))
            sec, _, frac = max(e[2] for e in asks + bids).partition(".")
            t = datetime.datetime.fromtimestamp(int(sec), datetime.timezone.utc)
            typ, extra = "update", f',"timestamp":"{t:%Y-%m-%dT%H:%M:%S}.{frac}Z"'
        out.append((f'{{"channel":"book","type":"{typ}","data":[{{"symbol":"{pair}",'
                    f'"bids":[{lv(bids)}],"asks":[{lv(asks)}],"checksum":{ck}{extra}}}]}}').encode())
    return out


def _v2_json(frame: bytes, as_decimal: bool) -> Any:
    import json

    return json.loads(frame, parse_float=Decimal if as_decimal else str, parse_int=str)


class PurePythonKrakenV2(PurePythonKraken):
    """json (numbers kept as text: a float would break the checksum) + SortedDict per side."""

    depth = 1000

    def on_frame(self, frame: bytes) -> None:
        m = _v2_json(frame, False)
        d = m["data"][0]
        pair = d["symbol"]
        if m["type"] == "snapshot":
            self.books[pair] = (SortedDict(lambda p: -p), SortedDict())
        bids, asks = self.books[pair]
        for side, key in ((bids, "bids"), (asks, "asks")):
            for e in d[key]:
                p, q = e["price"], e["qty"]
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, q)
        for side in (bids, asks):
            while len(side) > self.depth:
                side.popitem()
        s = "".join(kraken_token(p) + kraken_token(q)
                    for side in (asks, bids) for p, q in side.values()[:10])
        if zlib.crc32(s.encode()) != int(d["checksum"]):
            self.mismatches += 1


class OrderBookKrakenV2(OrderBookKraken):
    """json with Decimal numbers (exact), then the order-book C extension and its checksum."""

    def on_frame(self, frame: bytes) -> None:
        m = _v2_json(frame, True)
        d = m["data"][0]
        pair = d["symbol"]
        if m["type"] == "snapshot":
            self.books[pair] = self._cls(max_depth=1000, checksum_format="KRAKEN")
        ob = self.books[pair]
        for side, key in ((ob.bids, "bids"), (ob.asks, "asks")):
            for e in d[key]:
                p, q = Decimal(e["price"]), Decimal(e["qty"])
                if q == 0:
                    if p in side:
                        del side[p]
                else:
                    side[p] = q
        if ob.checksum() != int(d["checksum"]):
            self.mismatches += 1


@benchmark("md.kraken_v2")
def bench_md_kraken_v2(quick: bool) -> list[dict]:
    frames, decs = kraken_frames()
    v2 = v2_frames(frames)
    setup = [f for f in v2 if b'"type":"snapshot"' in f]
    updates = [f for f in v2 if b'"type":"update"' in f]

    def make() -> kraken.KrakenV2:
        t = InstrumentTable()
        for pair, d in decs.items():
            t.add(kraken.VENUE, pair, d, 8)
        return kraken.KrakenV2(t, make_books(len(t), 1024), depth=1000, batch_capacity=1 << 20)

    def check(ours: kraken.KrakenV2, finals: dict) -> dict:
        assert ours.counters[Reason.CHECKSUM_MISMATCH] == 0 and ours.counters.rejects() == 0
        assert finals["pure-python"].mismatches == 0
        for sym in decs:
            b, a = _ours_levels(ours, sym)
            pb, pa = finals["pure-python"].books[sym]
            assert b == [(k, Decimal(v[1])) for k, v in pb.items()], sym
            assert a == [(k, Decimal(v[1])) for k, v in pa.items()], sym
            ob = finals["order-book"].books[sym]
            assert b == list(ob.bids.to_dict().items()) and a == list(ob.asks.to_dict().items()), sym
        return {"checksums_verified": int(ours.checked),
                "order_book_checksum_mismatches": finals["order-book"].mismatches}

    return run_md_bench("md.kraken_v2", setup, updates, make,
                        {"pure-python": PurePythonKrakenV2, "order-book": OrderBookKrakenV2},
                        check, quick)
