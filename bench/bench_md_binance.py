"""Market data: Binance diff-depth frames from raw bytes to the book applied.

Frames are generated in Binance's exact combined-stream format (1-10 levels per diff, contiguous
U/u, prices near the top of the real NKNUSDT snapshot from the recording), because the recording
holds only 177 depth events. Three pipelines get the same frames in the same run:

* bot4d: frames copied into one buffer per batch, one numba call parses + sync-checks them into
  MD records, one numba call applies them to the L2 book;
* baseline "pure Python": orjson + Decimal + sortedcontainers.SortedDict per side;
* baseline "order-book": orjson + Decimal + the order-book 0.6.1 C extension.

All three must end with identical books (checked). Latency is reported per frame: amortised over
a batch for the batched run, and per call for a one-frame-per-call run (what a frame waiting
alone would see).
"""
from __future__ import annotations

import json
import random
import time
from decimal import Decimal

import numpy as np

from bench.harness import baseline_of, benchmark, result

# CPU seconds of the last timed run (thread time): on a shared machine wall-clock throughput
# includes time the thread was preempted; frames / CPU-second is the per-core figure
CPU_S = [0.0]

SYMBOL = "NKNUSDT"
SCALE = 8


def _txt(units: int) -> str:
    return f"{units // 10**SCALE}.{units % 10**SCALE:0{SCALE}d}"


def recorded_snapshot() -> tuple[int, list, list]:
    from tests.conftest import RECORDED

    for line in (RECORDED / "BINANCE.http.0.0").read_text().splitlines():
        if f"symbol={SYMBOL}&" in line:
            body = json.loads(line.partition(" -> ")[2].partition(": ")[2])
            return body["lastUpdateId"], body["bids"], body["asks"]
    raise RuntimeError("NKNUSDT snapshot missing from the recording")


def generate(n: int, seed: int = 1) -> tuple[bytes, list[bytes]]:
    """(snapshot body, n depth frames) continuing the recorded NKNUSDT snapshot."""
    lid, bids, asks = recorded_snapshot()
    rng = random.Random(seed)
    bb = int(Decimal(bids[0][0]) * 10**SCALE)
    ba = int(Decimal(asks[0][0]) * 10**SCALE)
    tick = 10_000  # 0.0001
    live_b = {int(Decimal(p) * 10**SCALE) for p, _ in bids}
    live_a = {int(Decimal(p) * 10**SCALE) for p, _ in asks}
    frames = []
    u = lid
    head = '{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":'
    for k in range(n):
        b, a = [], []
        for _ in range(rng.randint(1, 10)):
            if rng.random() < 0.5:
                p = bb - tick * rng.randint(0, 30)
                side, lst = live_b, b
            else:
                p = ba + tick * rng.randint(0, 30)
                side, lst = live_a, a
            if p in side and rng.random() < 0.3:
                q = 0
                side.discard(p)
            else:
                q = rng.randint(1, 5_000_000) * 10**SCALE // 100
                side.add(p)
            lst.append(f'["{_txt(p)}","{_txt(q)}"]')
        U = u + 1
        u = U + rng.randint(0, 3)
        frames.append((f'{head}{1633998512068 + k},"s":"{SYMBOL}","U":{U},"u":{u},'
                       f'"b":[{",".join(b)}],"a":[{",".join(a)}]}}}}').encode())
    snap = json.dumps({"lastUpdateId": lid, "bids": bids, "asks": asks}).encode()
    return snap, frames


# --- bot4d ------------------------------------------------------------------------------------
def make_feed():
    from bot4d.instruments import InstrumentTable
    from bot4d.kernels.book import make_books
    from bot4d.venues.binance import BinanceFeed

    t = InstrumentTable()
    t.add("BINANCE", SYMBOL, SCALE, SCALE)
    books = make_books(1, 2048)
    return BinanceFeed(t, books), books


def run_bot4d(snap: bytes, frames: list[bytes], batch: int):
    from bot4d.venues.scan import frames_to_batch

    feed, books = make_feed()
    feed.on_snapshot(SYMBOL, snap)
    # bridge + JIT load outside the timed region, on the path that is timed
    if batch == 1:
        feed.on_frame(frames[0])
    else:
        feed.on_frames(frames[:1])
    rest = frames[1:]
    if batch == 1:  # the one-frame path a feed client uses when a frame arrives alone
        lat = np.empty(len(rest), np.int64)
        on_frame = feed.on_frame
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        for j, f in enumerate(rest):
            t = time.perf_counter_ns()
            on_frame(f)
            lat[j] = time.perf_counter_ns() - t
        took = (time.perf_counter_ns() - t0) / 1e9
        CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
        assert feed.counters.rejects() == 0, feed.counters.as_dict()
        return len(rest) / took, lat, feed, books
    nb = (len(rest) + batch - 1) // batch
    lat = np.empty(nb, np.int64)
    recv = np.zeros(batch, np.int64)
    t0 = time.perf_counter_ns()
    c0 = time.thread_time_ns()
    for j in range(nb):
        chunk = rest[j * batch:(j + 1) * batch]
        t = time.perf_counter_ns()
        buf, ends = frames_to_batch(chunk)
        feed.on_batch(buf, ends, recv[:len(chunk)], chunk)
        lat[j] = (time.perf_counter_ns() - t) // len(chunk)
    took = (time.perf_counter_ns() - t0) / 1e9
    CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
    assert feed.counters.rejects() == 0, feed.counters.as_dict()
    return len(rest) / took, lat, feed, books


# --- baselines --------------------------------------------------------------------------------
def run_python(snap: bytes, frames: list[bytes]):
    import orjson
    from sortedcontainers import SortedDict

    s = orjson.loads(snap)
    bids = SortedDict({Decimal(p): Decimal(q) for p, q in s["bids"]})
    asks = SortedDict({Decimal(p): Decimal(q) for p, q in s["asks"]})
    last = s["lastUpdateId"]
    lat = np.empty(len(frames), np.int64)
    gaps = 0
    t0 = time.perf_counter_ns()
    c0 = time.thread_time_ns()
    for k, f in enumerate(frames):
        t = time.perf_counter_ns()
        d = orjson.loads(f)["data"]
        if d["u"] > last:
            if d["U"] > last + 1:
                gaps += 1
            for side, lv in ((bids, d["b"]), (asks, d["a"])):
                for p, q in lv:
                    qd = Decimal(q)
                    if qd:
                        side[Decimal(p)] = qd
                    else:
                        side.pop(Decimal(p), None)
            last = d["u"]
        lat[k] = time.perf_counter_ns() - t
    took = (time.perf_counter_ns() - t0) / 1e9
    CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
    assert gaps == 0
    return len(frames) / took, lat, (list(reversed(bids.items())), list(asks.items()))


def run_order_book(snap: bytes, frames: list[bytes]):
    import orjson
    from order_book import OrderBook

    s = orjson.loads(snap)
    ob = OrderBook()
    for p, q in s["bids"]:
        ob.bids[Decimal(p)] = Decimal(q)
    for p, q in s["asks"]:
        ob.asks[Decimal(p)] = Decimal(q)
    last = s["lastUpdateId"]
    lat = np.empty(len(frames), np.int64)
    t0 = time.perf_counter_ns()
    c0 = time.thread_time_ns()
    for k, f in enumerate(frames):
        t = time.perf_counter_ns()
        d = orjson.loads(f)["data"]
        if d["u"] > last:
            for side, lv in ((ob.bids, d["b"]), (ob.asks, d["a"])):
                for p, q in lv:
                    qd = Decimal(q)
                    if qd:
                        side[Decimal(p)] = qd
                    else:
                        pd = Decimal(p)
                        if pd in side:
                            del side[pd]
            last = d["u"]
        lat[k] = time.perf_counter_ns() - t
    took = (time.perf_counter_ns() - t0) / 1e9
    CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
    bd = ob.to_dict()
    return len(frames) / took, lat, (sorted(bd["bid"].items(), reverse=True), sorted(bd["ask"].items()))


def units(levels) -> list[tuple[int, int]]:
    return [(int(p * 10**SCALE), int(q * 10**SCALE)) for p, q in levels]


@benchmark("md.binance_depth")
def bench_binance_depth(quick: bool) -> list[dict]:
    n = 60_000 if quick else 600_000
    n_base = 15_000 if quick else 150_000
    snap, frames = generate(n)
    levels_per_frame = sum(f.count(b'["') for f in frames) / len(frames)  # '["' opens a level

    # the same first n_base frames through all three pipelines; books must agree
    py_rate, py_lat, py_book = run_python(snap, frames[:n_base])
    py_cpu = n_base / CPU_S[0]
    ob_rate, ob_lat, ob_book = run_order_book(snap, frames[:n_base])
    ob_cpu = n_base / CPU_S[0]
    _, _, _, chk_books = run_bot4d(snap, frames[:n_base], 256)
    lv = getattr(chk_books, "levels_of", None) or chk_books.levels
    ours = (lv(0, 0), lv(0, 1))
    assert ours == (units(py_book[0]), units(py_book[1])), "bot4d and pure-Python books differ"
    assert ours == (units(ob_book[0]), units(ob_book[1])), "bot4d and order-book books differ"

    rate, lat, feed, _ = run_bot4d(snap, frames, 256)
    cpu = (len(frames) - 1) / CPU_S[0]
    one_rate, one_lat, _, _ = run_bot4d(snap, frames[: n_base], 1)
    one_cpu = (n_base - 1) / CPU_S[0]

    py = result("md.binance_depth.baseline_python", "frames", throughput_per_s=py_rate,
                latency_ns=py_lat, baseline=None, pipeline="orjson + Decimal + SortedDict",
                cpu_throughput_per_s=py_cpu)
    ob = result("md.binance_depth.baseline_order_book", "frames", throughput_per_s=ob_rate,
                latency_ns=ob_lat, baseline=None, pipeline="orjson + Decimal + order-book 0.6.1",
                cpu_throughput_per_s=ob_cpu)
    main = result("md.binance_depth", "frames", throughput_per_s=rate, latency_ns=lat,
                  baseline=baseline_of(py), baseline_order_book=baseline_of(ob),
                  latency_basis="per frame, amortised over batches of 256 frames",
                  frames=len(frames), levels_per_frame=round(levels_per_frame, 2),
                  speedup_vs_python=round(rate / py_rate, 1),
                  speedup_vs_order_book=round(rate / ob_rate, 1),
                  cpu_throughput_per_s=cpu, cpu_speedup_vs_python=round(cpu / py_cpu, 1),
                  cpu_speedup_vs_order_book=round(cpu / ob_cpu, 1), books_equal=True)
    single = result("md.binance_depth.one_frame_per_call", "frames", throughput_per_s=one_rate,
                    latency_ns=one_lat, baseline=baseline_of(py), cpu_throughput_per_s=one_cpu,
                    latency_basis="per frame, one frame per call (no batching)")
    return [main, single, py, ob]
