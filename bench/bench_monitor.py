"""monitor.overhead: publisher throughput with 0 and with 4 monitors scraping continuously.

The publisher is a shard-like process (the daemon's own ``Telemetry`` segments; per event a
counter add, a latency-histogram record and a seqlock snapshot write, in one nogil kernel) pinned
to one core; the monitors are exporter processes calling the Prometheus collector on the other core, every
100 ms (the headline) and back-to-back (CPU contention), measured once past their start-up. Phases alternate (0, 4, 0, 4, ...) within one run so drift hits both alike; the
result compares the medians.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np

from bench.harness import benchmark, result

ROOT = Path(__file__).resolve().parents[1]

PUBLISHER = textwrap.dedent("""
    import os, sys, time
    import numba, numpy as np
    from bot4d.telemetry import Telemetry
    from ipc.counters import counter_add
    from ipc.histogram import record
    from ipc.seqlock import write_begin, write_end

    @numba.njit(nogil=True)  # compiled before "ready": not in the measurement
    def work(ctr, k, hist, recs, seqs, n, start):
        for i in range(n):
            counter_add(ctr, k, 1)
            record(hist, 100 + (i & 1023))
            write_begin(seqs, 0)
            recs[0]["best_bid"] = start + i
            recs[0]["best_ask"] = start + i + 1
            recs[0]["last_update_ns"] = start + i
            write_end(seqs, 0)
        return n

    os.sched_setaffinity(0, {int(sys.argv[2])})
    t = Telemetry(sys.argv[1], venues=["BINANCE"], instruments=[("BINANCE", "BTCUSDT", 2, 5)], shards=1,
                  md_reasons=["GAP"], reject_reasons=["X"], trip_reasons=["MANUAL"])
    ctr = t.counter_array("ctr-shard0")
    k = t.shard_blocks[0].index("bot4d_orders_submitted_total", shard="0")
    h = t.hist_tick_to_order[0].hist
    recs, seqs = t.books.records, t.books.seqs
    work(ctr, k, h, recs, seqs, 10, 0)
    t.heartbeat(time.time_ns())
    print("ready", flush=True)
    chunk = 200_000
    for line in sys.stdin:
        secs = float(line)
        if secs <= 0:
            break
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < secs:
            n += work(ctr, k, h, recs, seqs, chunk, n)
        print(n / (time.perf_counter() - t0), flush=True)
    t.close()
""")

MONITOR = textwrap.dedent("""
    import os, sys, time
    from prometheus_client import generate_latest
    from bot4d.monitor.exporter import registry_for
    os.sched_setaffinity(0, {int(sys.argv[2])})
    period = float(sys.argv[3])
    reg = registry_for(sys.argv[1], min_interval_s=0.0)  # every scrape reads shared memory
    generate_latest(reg)
    print("scraping", flush=True)  # start-up (imports, kernel loading) is over
    while True:
        t = time.monotonic()
        generate_latest(reg)
        if period:
            time.sleep(max(0.0, period - (time.monotonic() - t)))
""")


def _measure(quick: bool, period_s: float) -> tuple[list[float], list[float]]:
    cpus = sorted(os.sched_getaffinity(0))
    pub_cpu, mon_cpu = cpus[-1], cpus[0]
    inst = f"bench{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, inst, str(pub_cpu)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
    assert pub.stdout.readline().strip() == "ready"
    phase_s = 1.0 if quick else 3.0
    rounds = 2 if quick else 5
    base, loaded = [], []
    try:
        for _ in range(rounds):
            pub.stdin.write(f"{phase_s}\n")
            pub.stdin.flush()
            base.append(float(pub.stdout.readline()))
            mons = [subprocess.Popen([sys.executable, "-c", MONITOR, inst, str(mon_cpu), str(period_s)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(4)]
            for mproc in mons:  # measure only once every monitor is past its start-up
                assert mproc.stdout.readline().strip() == "scraping"
            pub.stdin.write(f"{phase_s}\n")
            pub.stdin.flush()
            loaded.append(float(pub.stdout.readline()))
            for mproc in mons:
                mproc.kill()
                mproc.wait()
    finally:
        pub.stdin.write("0\n")
        pub.stdin.flush()
        pub.wait(30)
    return base, loaded


@benchmark("monitor.overhead")
def bench_overhead(quick: bool) -> list[dict]:
    out = []
    for name, period, note in (
        ("monitor.overhead", 0.1, "4 monitors each scraping every 100 ms (10 Hz) for the whole phase; goal < 1 %"),
        ("monitor.overhead.back_to_back", 0.0,
         "4 monitors scraping in a tight loop on the other core: measures CPU contention on a shared 2-core box"),
    ):
        base, loaded = _measure(quick, period)
        b, l_ = float(np.median(base)), float(np.median(loaded))
        baseline = {"name": f"{name}.0_monitors", "unit": "events", "throughput_per_s": b}
        out.append(result(name, "events", throughput_per_s=l_, baseline=baseline, monitors=4,
                          difference_pct=round((b - l_) / b * 100.0, 2), phases_0=base, phases_4=loaded,
                          publisher="shard-like stand-in (Telemetry segments), not the full daemon",
                          note=note))
    return out
