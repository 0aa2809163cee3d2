"""daemon.protection_gap: how long a position goes without a protective stop covering it.

The real daemon paper-trades against the simulated venue (``tests.daemon_harness.Stack``: real
processes on loopback, the simulator's agents trading) with the market maker quoting 20 ticks from
the mid, so the agents' flow fills it often and every fill changes the position. Each change leaves
the position under-protected until the venue acknowledges a stop for its new size (placed, or
swapped in by one cancel-replace request). The daemon records each such spell, from the report
that changed the position to the venue's acknowledgement, in its shared histogram
``hist-unprot-0`` (``bot4d_position_unprotected_seconds``); this reads that histogram over the run.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.harness import benchmark, result
from ipc import histogram as H

def _percentiles(h) -> dict[str, int]:
    n = int(h[H.H_BUCKETS:].sum())
    if n == 0:
        return {"p50_ns": 0, "p99_ns": 0, "p999_ns": 0, "max_ns": 0}
    return {"p50_ns": H.value_at_quantile(h, 0.5), "p99_ns": H.value_at_quantile(h, 0.99),
            "p999_ns": H.value_at_quantile(h, 0.999), "max_ns": int(h[H.H_MAX])}


@benchmark("daemon.protection_gap")
def bench_protection_gap(quick: bool) -> list[dict]:
    from bench.bench_daemon import hist_window
    from ipc.histogram import LatencyHistogram
    from tests.daemon_harness import Stack, market_maker, wait_for

    seconds = 20.0 if quick else 120.0
    with tempfile.TemporaryDirectory(prefix="bench-prot-") as tmp:
        s = Stack(Path(tmp), name="bprot", strategies={"BTCUSDT": market_maker("0.001", "0.01", 20, stop_ticks=300)})
        try:
            s.start()
            wait_for(lambda: s.ok("status")["orders_sent"] >= 4, 60, "the market maker to quote")
            hist = LatencyHistogram.attach(s.instance, "hist-unprot-0")
            try:
                before = hist.hist.copy()
                cr0, f0 = s.sim_stats()["cancel_replaces"], s.counters()["filled"]
                t0 = time.monotonic()
                time.sleep(seconds)
                elapsed = time.monotonic() - t0
                after = hist.hist.copy()
                cr1, f1 = s.sim_stats()["cancel_replaces"], s.counters()["filled"]
                prot = s.ok("protection")
            finally:
                hist.segment.close()
        finally:
            s.close()
    w = hist_window(before, after)
    n = int(w[H.H_BUCKETS:].sum())
    return [result("daemon.protection_gap", "spells", throughput_per_s=n / elapsed,
                   latency_ns=_percentiles(w), baseline=None, spells=n, seconds=round(elapsed, 1),
                   orders_filled=f1 - f0, cancel_replaces=cr1 - cr0,
                   refused={k: v["refused"] for k, v in prot.items()},
                   note="from the report that left a position under-protected to the venue's ack of a "
                        "stop covering it; bucket resolution 1/64; max is the whole run's (hist_window)")]
