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
        s = "".join(kraken.kraken_text_checksum.__globals__["kraken_token"](p) +
                    kraken.kraken_text_checksum.__globals__["kraken_token"](q)
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


@benchmark("md.kraken")
def bench_md_kraken(quick: bool) -> list[dict]:
    frames, decs = kraken_frames()
    reps = 2 if quick else 10
    kraken.KrakenV1  # noqa: B018
    ours_holder: list[kraken.KrakenV1] = []

    def ours_factory():
        h = make_ours(decs)
        ours_holder.append(h)
        return h

    # warm: compile/load kernels before timing
    w = make_ours(decs)
    for f in frames[:50]:
        w.on_frame(f)

    res = []
    figures = {}
    finals = {}
    for name, factory in (("ours", ours_factory), ("pure-python", PurePythonKraken),
                          ("order-book", OrderBookKraken)):
        objs: list[Any] = []

        def process(f, objs=objs):
            objs[-1].on_frame(f)

        total = 0.0
        lat = None
        t_all = 0
        n_all = 0
        for _ in range(reps):
            objs.append(factory())
            t0 = time.perf_counter_ns()
            fps, lat = timed_run(process, frames, 1)
            t_all += time.perf_counter_ns() - t0
            n_all += len(frames)
        figures[name] = (n_all / (t_all / 1e9), lat)
        finals[name] = objs[-1]
    ours = finals["ours"]
    assert ours.counters[Reason.CHECKSUM_MISMATCH] == 0 and ours.counters.rejects() == 0
    assert finals["pure-python"].mismatches == 0
    # order-book's Kraken checksum formats Decimals itself; count (not hide) any disagreement
    ob_mismatches = finals["order-book"].mismatches
    for sym in decs:
        b, a = _ours_levels(ours, sym)
        pb, pa = finals["pure-python"].books[sym]
        assert b == [(k, Decimal(v[1])) for k, v in pb.items()], sym
        assert a == [(k, Decimal(v[1])) for k, v in pa.items()], sym
        ob = finals["order-book"].books[sym]
        assert b == list(ob.bids.to_dict().items()) and a == list(ob.asks.to_dict().items()), sym
    base = {n: result(f"md.kraken.{n}", "frames", throughput_per_s=figures[n][0],
                      latency_ns=figures[n][1]) for n in ("pure-python", "order-book")}
    r = result("md.kraken", "frames", throughput_per_s=figures["ours"][0],
               latency_ns=figures["ours"][1], baseline=baseline_of(base["pure-python"]),
               baseline_order_book=baseline_of(base["order-book"]),
               speedup_vs_pure_python=figures["ours"][0] / figures["pure-python"][0],
               speedup_vs_order_book=figures["ours"][0] / figures["order-book"][0],
               frames=len(frames), checksums_verified=ours.checked,
               order_book_checksum_mismatches=ob_mismatches,
               latency_basis="per frame, raw bytes to verified book (one on_frame call)",
               books_equal=True)
    res.append(r)
    res.extend(base.values())
    return res
