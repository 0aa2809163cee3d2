"""Simulator benchmarks: orders matched per second in the matching kernel."""
from __future__ import annotations

import time

import numpy as np

from bench.harness import benchmark, result
from bot4d.kernels import matching as m


def _flow(n: int, seed: int) -> np.ndarray:
    """A realistic mix: passive limits near the touch, marketable limits, cancels of live ids."""
    rng = np.random.default_rng(seed)
    o = np.zeros(n, m.SIM_ORDER_DTYPE)
    o["op"] = m.OP_NEW
    o["order_id"] = np.arange(1, n + 1)
    o["side"] = rng.integers(0, 2, n)
    o["otype"] = m.T_LIMIT
    o["tif"] = m.TIF_GTC
    o["account"] = rng.integers(0, 8, n)
    o["qty"] = rng.integers(1, 20, n)
    mid = 10_000
    # buys below / sells above mid mostly (resting), 20 % cross the spread (trade)
    off = rng.integers(1, 50, n)
    cross = rng.random(n) < 0.2
    sign = np.where(o["side"] == 0, -1, 1)
    o["price"] = mid + sign * np.where(cross, -off // 5, off)
    cancel = rng.random(n) < 0.3
    o["op"][cancel] = m.OP_CANCEL
    o["order_id"][cancel] = rng.integers(1, n + 1, cancel.sum())
    return o


@benchmark("sim.match")
def bench_match(quick: bool) -> list[dict]:
    n = 200_000 if quick else 2_000_000
    orders = _flow(n, 7)
    batch = 1024
    s = m.make_engine(1, max_levels=4096, max_orders=1 << 20, max_stops=16, n_accounts=8)
    m.warmup()
    # room for the engine's worst case with the whole pool live (see matching.event_reserve)
    ev = np.zeros(5 * (1 << 20) + 64 * batch, m.SIM_EVENT_DTYPE)
    lat = np.empty(n // batch + 1, np.int64)
    events = 0
    t0 = time.perf_counter_ns()
    i = k = 0
    while i < n:
        t = time.perf_counter_ns()
        used, ne = m.match_batch(s, orders[i:i + batch], ev)
        lat[k] = (time.perf_counter_ns() - t) // max(used, 1)
        k += 1
        i += used
        events += ne
    took = (time.perf_counter_ns() - t0) / 1e9
    return [result("sim.match", "orders", throughput_per_s=n / took, latency_ns=lat[:k],
                   latency_basis=f"per order, averaged over batches of {batch}",
                   events_per_s=events / took, trades=int(s.counters[2]))]


@benchmark("backtest.events")
def bench_backtest(quick: bool) -> list[dict]:
    from bot4d.sim import backtest as bt

    bt.run(bt.BacktestConfig(steps=5))  # load the compiled kernels
    steps = 3000 if quick else 30000
    r = bt.run(bt.BacktestConfig(seed=1, steps=steps))
    return [result("backtest.events", "market events", throughput_per_s=r.events / r.seconds,
                   events=r.events, fills=r.report["fills"], orders=r.report["orders_sent"],
                   strategy="market_maker", note="full pipeline in one kernel call: engine, L2 book, "
                   "strategy, risk, OMS, latency queue; timing excludes set-up")]
