"""md.okx: OKX v5 ``books`` frames from raw bytes to a checksum-verified book.

Input: the real recorded frames of OKX.ws.1.0 (3 instruments, 400-level snapshots and 287
updates with signed CRC32 checksums). Snapshots are applied untimed; the updates are timed
through our handler and, in the same run, through a pure-Python book (orjson + SortedDict, zlib
checksum over the kept strings) and the ``order-book`` 0.6.1 C extension (its OKX checksum).
All final books must be equal.
"""
from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any

import orjson
from sortedcontainers import SortedDict

from bench.bench_md_kraken import RECORDED, run_md_bench
from bench.harness import benchmark
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import okx
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason

SCALES = {"BTC-USD-220527": (1, 0), "UNI-USD-SWAP": (3, 0), "BTC-USDT": (1, 8)}


def okx_frames() -> list[bytes]:
    return [f for _, f in read_recording(RECORDED / "OKX.ws.1.0")
            if b'"channel":"books"' in f and b'"data"' in f]


def make_ours() -> okx.OkxV5:
    t = InstrumentTable()
    for s, (ps, qs) in SCALES.items():
        t.add(okx.VENUE, s, ps, qs)
    return okx.OkxV5(t, make_books(len(t), 1024), batch_capacity=1 << 20)


def _signed(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


class PurePythonOkx:
    def __init__(self) -> None:
        self.books: dict[str, tuple[SortedDict, SortedDict]] = {}
        self.mismatches = 0

    def on_frame(self, frame: bytes) -> None:
        m = orjson.loads(frame)
        inst = m["arg"]["instId"]
        d = m["data"][0]
        if m["action"] == "snapshot":
            self.books[inst] = (SortedDict(lambda p: -p), SortedDict())
        bids, asks = self.books[inst]
        for side, key in ((bids, "bids"), (asks, "asks")):
            for lv in d[key]:
                p, q = lv[0], lv[1]
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, q)
        b, a = bids.values()[:25], asks.values()[:25]
        parts = []
        for i in range(max(len(b), len(a))):
            if i < len(b):
                parts.append(f"{b[i][0]}:{b[i][1]}")
            if i < len(a):
                parts.append(f"{a[i][0]}:{a[i][1]}")
        if _signed(zlib.crc32(":".join(parts).encode())) != d["checksum"]:
            self.mismatches += 1


class OrderBookOkx:
    def __init__(self) -> None:
        from order_book import OrderBook

        self._cls = OrderBook
        self.books: dict[str, Any] = {}
        self.mismatches = 0

    def on_frame(self, frame: bytes) -> None:
        m = orjson.loads(frame)
        inst = m["arg"]["instId"]
        d = m["data"][0]
        if m["action"] == "snapshot":
            self.books[inst] = self._cls(checksum_format="OKX")
        ob = self.books[inst]
        for side, key in ((ob.bids, "bids"), (ob.asks, "asks")):
            for lv in d[key]:
                p, q = Decimal(lv[0]), Decimal(lv[1])
                if q == 0:
                    if p in side:
                        del side[p]
                else:
                    side[p] = q
        if ob.checksum() != d["checksum"]:
            self.mismatches += 1


@benchmark("md.okx")
def bench_md_okx(quick: bool) -> list[dict]:
    frames = okx_frames()
    setup = [f for f in frames if b'"action":"snapshot"' in f]
    updates = [f for f in frames if b'"action":"update"' in f]

    def check(ours: okx.OkxV5, finals: dict) -> dict:
        assert ours.counters[Reason.CHECKSUM_MISMATCH] == 0 and ours.counters.rejects() == 0
        assert finals["pure-python"].mismatches == 0
        for sym in SCALES:
            inst = ours.table.get(okx.VENUE, sym)
            bp, bq, nb, ap, aq, na = ours.top(inst, 1000)
            b = [(inst.price(p), inst.qty(q)) for p, q in zip(bp[:nb], bq[:nb])]
            a = [(inst.price(p), inst.qty(q)) for p, q in zip(ap[:na], aq[:na])]
            pb, pa = finals["pure-python"].books[sym]
            assert b == [(k, Decimal(v[1])) for k, v in pb.items()], sym
            assert a == [(k, Decimal(v[1])) for k, v in pa.items()], sym
            ob = finals["order-book"].books[sym]
            assert b == list(ob.bids.to_dict().items()) and a == list(ob.asks.to_dict().items()), sym
        return {"checksums_verified": int(ours.checked),
                "order_book_checksum_mismatches": finals["order-book"].mismatches}

    return run_md_bench("md.okx", setup, updates, make_ours,
                        {"pure-python": PurePythonOkx, "order-book": OrderBookOkx}, check, quick,
                        batch=64)
