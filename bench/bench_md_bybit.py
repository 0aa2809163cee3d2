"""Market data: Bybit v5 ``orderbook.50`` frames from raw bytes to the book applied.

No Bybit recording exists here, so frames are generated in Bybit's exact v5 format (one
snapshot, then deltas of 1-10 levels with ``u`` +1 and rising ``seq``). The same frames go
through bot4d (numba parse + sync + book kernel), a pure-Python pipeline (orjson + Decimal +
SortedDict) and orjson + the order-book 0.6.1 C extension; final books must be identical.
"""
from __future__ import annotations

import random
import time
from decimal import Decimal

import numpy as np

from bench.harness import baseline_of, benchmark, result

# CPU seconds of the last timed run (thread time): on a shared machine wall-clock throughput
# includes time the thread was preempted; frames / CPU-second is the per-core figure
CPU_S = [0.0]

SYMBOL = "BTCUSDT"
PS, QS = 2, 3


def _t(units: int, scale: int) -> str:
    return f"{units // 10**scale}.{units % 10**scale:0{scale}d}"


def generate(n: int, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    bb, ba = 1649350, 1649400  # 16493.50 / 16494.00
    bids = {bb - 50 * k: rng.randint(1, 9000) for k in range(50)}
    asks = {ba + 50 * k: rng.randint(1, 9000) for k in range(50)}
    u, seq, ts = 18521288, 7961638724, 1672304484978

    def lv(d, rev):
        return ",".join(f'["{_t(p, PS)}","{_t(q, QS)}"]' for p, q in sorted(d.items(), reverse=rev))

    head = f'{{"topic":"orderbook.50.{SYMBOL}","type":'
    frames = [(f'{head}"snapshot","ts":{ts},"data":{{"s":"{SYMBOL}","b":[{lv(bids, True)}],'
               f'"a":[{lv(asks, False)}],"u":{u},"seq":{seq}}},"cts":{ts - 3}}}').encode()]
    for k in range(n - 1):
        b, a = {}, {}
        for _ in range(rng.randint(1, 10)):
            if rng.random() < 0.5:
                p, side, out = bb - 50 * rng.randint(0, 60), bids, b
            else:
                p, side, out = ba + 50 * rng.randint(0, 60), asks, a
            q = 0 if (p in side and rng.random() < 0.3) else rng.randint(1, 9000)
            if q:
                side[p] = q
            else:
                side.pop(p, None)
            out[p] = q
        u += 1
        seq += rng.randint(1, 40)
        ts += 20
        frames.append((f'{head}"delta","ts":{ts},"data":{{"s":"{SYMBOL}","b":[{lv(b, True)}],'
                       f'"a":[{lv(a, False)}],"u":{u},"seq":{seq}}},"cts":{ts - 3}}}').encode())
    return frames


def run_bot4d(frames: list[bytes], batch: int):
    from bot4d.instruments import InstrumentTable
    from bot4d.kernels.book import make_books
    from bot4d.venues.bybit import BybitFeed
    from bot4d.venues.scan import frames_to_batch

    t = InstrumentTable()
    t.add("BYBIT", SYMBOL, PS, QS)
    books = make_books(1, 1024)
    feed = BybitFeed(t, books)
    # snapshot + JIT load outside the timed region, on the path that is timed
    if batch == 1:
        feed.on_frame(frames[0])
    else:
        feed.on_frames(frames[:1])
    rest = frames[1:]
    if batch == 1:
        lat = np.empty(len(rest), np.int64)
        on_frame = feed.on_frame
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        for j, f in enumerate(rest):
            t1 = time.perf_counter_ns()
            on_frame(f)
            lat[j] = time.perf_counter_ns() - t1
    else:
        nb = (len(rest) + batch - 1) // batch
        lat = np.empty(nb, np.int64)
        recv = np.zeros(batch, np.int64)
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        for j in range(nb):
            chunk = rest[j * batch:(j + 1) * batch]
            t1 = time.perf_counter_ns()
            buf, ends = frames_to_batch(chunk)
            feed.on_batch(buf, ends, recv[:len(chunk)])
            lat[j] = (time.perf_counter_ns() - t1) // len(chunk)
    took = (time.perf_counter_ns() - t0) / 1e9
    CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
    assert feed.counters.rejects() == 0, feed.counters.as_dict()
    lv = getattr(books, "levels_of", None) or books.levels
    return len(rest) / took, lat, (lv(0, 0), lv(0, 1))


def _apply_py(frames, make_side, delete):
    import orjson

    bids = asks = None
    last_u = 0
    lat = np.empty(len(frames) - 1, np.int64)
    t0 = 0
    for k, f in enumerate(frames):
        if k == 1:
            t0 = time.perf_counter_ns()
            c0 = time.thread_time_ns()
        t = time.perf_counter_ns()
        m = orjson.loads(f)
        d = m["data"]
        if m["type"] == "snapshot":
            bids, asks = make_side(), make_side()
        elif d["u"] != last_u + 1:
            raise RuntimeError("gap in generated stream")
        for side, lvls in ((bids, d["b"]), (asks, d["a"])):
            for p, q in lvls:
                qd = Decimal(q)
                if qd:
                    side[Decimal(p)] = qd
                else:
                    delete(side, Decimal(p))
        last_u = d["u"]
        if k:
            lat[k - 1] = time.perf_counter_ns() - t
    took = (time.perf_counter_ns() - t0) / 1e9
    CPU_S[0] = (time.thread_time_ns() - c0) / 1e9
    return (len(frames) - 1) / took, lat, bids, asks


def run_python(frames):
    from sortedcontainers import SortedDict

    rate, lat, b, a = _apply_py(frames, SortedDict, lambda s, p: s.pop(p, None))
    return rate, lat, (list(reversed(b.items())), list(a.items()))


def run_order_book(frames):
    from order_book import OrderBook

    books = []

    def make_side():
        if not books or len(books[-1]) == 2:
            books.append([OrderBook()])
            return books[-1][0].bids
        books[-1].append(None)
        return books[-1][0].asks

    def delete(side, p):
        if p in side:
            del side[p]

    rate, lat, _, _ = _apply_py(frames, make_side, delete)
    d = books[-1][0].to_dict()
    return rate, lat, (sorted(d["bid"].items(), reverse=True), sorted(d["ask"].items()))


def _units(levels):
    return [(int(p * 10**PS), int(q * 10**QS)) for p, q in levels]


@benchmark("md.bybit")
def bench_bybit(quick: bool) -> list[dict]:
    n = 60_000 if quick else 600_000
    n_base = 15_000 if quick else 150_000
    frames = generate(n)
    py_rate, py_lat, py_book = run_python(frames[:n_base])
    py_cpu = (n_base - 1) / CPU_S[0]
    ob_rate, ob_lat, ob_book = run_order_book(frames[:n_base])
    ob_cpu = (n_base - 1) / CPU_S[0]
    _, _, ours = run_bot4d(frames[:n_base], 256)
    assert ours == (_units(py_book[0]), _units(py_book[1])), "bot4d and pure-Python books differ"
    assert ours == (_units(ob_book[0]), _units(ob_book[1])), "bot4d and order-book books differ"
    rate, lat, _ = run_bot4d(frames, 256)
    cpu = (len(frames) - 1) / CPU_S[0]
    one_rate, one_lat, _ = run_bot4d(frames[:n_base], 1)
    one_cpu = (n_base - 1) / CPU_S[0]
    py = result("md.bybit.baseline_python", "frames", throughput_per_s=py_rate, latency_ns=py_lat,
                baseline=None, pipeline="orjson + Decimal + SortedDict", cpu_throughput_per_s=py_cpu)
    ob = result("md.bybit.baseline_order_book", "frames", throughput_per_s=ob_rate,
                latency_ns=ob_lat, baseline=None, pipeline="orjson + Decimal + order-book 0.6.1",
                cpu_throughput_per_s=ob_cpu)
    main = result("md.bybit", "frames", throughput_per_s=rate, latency_ns=lat,
                  baseline=baseline_of(py), baseline_order_book=baseline_of(ob),
                  latency_basis="per frame, amortised over batches of 256 frames",
                  frames=len(frames), speedup_vs_python=round(rate / py_rate, 1),
                  speedup_vs_order_book=round(rate / ob_rate, 1), cpu_throughput_per_s=cpu,
                  cpu_speedup_vs_python=round(cpu / py_cpu, 1),
                  cpu_speedup_vs_order_book=round(cpu / ob_cpu, 1), books_equal=True)
    single = result("md.bybit.one_frame_per_call", "frames", throughput_per_s=one_rate,
                    latency_ns=one_lat, baseline=baseline_of(py), cpu_throughput_per_s=one_cpu,
                    latency_basis="per frame, one frame per call (no batching)")
    return [main, single, py, ob]
