"""``make soak``: the real daemon trading against the simulator for N minutes, watched for growth.

Starts the simulated venue and the daemon (``tests.daemon_harness.Stack``: real processes on
loopback), lets it trade, and samples every ``--interval-s`` seconds the daemon's RSS (psutil) and
tick-to-order from the daemon's own shared histogram ``hist-t2o-0`` (``ipc.histogram``): the p99
of the interval (difference of two copies of the histogram) and of the whole run. The first sample
after the warm-up (default one minute: numba, caches, pools and the book settle) is the reference;
the verdict is the growth from it to the last sample. Writes ``bench/results/soak-<ts>.json``.

Exit status: 0 stable, 1 the RSS grew more than ``--max-rss-growth-mb`` or the daemon stopped
trading or died, 2 bad arguments. Tail latency on a shared two-core machine is noisy, so p99
growth is reported (and flagged above ``--max-p99-ratio``) without failing the run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def window_p99(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """p99 (ns) and count of what ``after`` recorded since ``before`` (copies of one histogram)."""
    from bench.bench_daemon import hist_window
    from ipc import histogram as H

    d = hist_window(before, after)
    n = int(d[H.H_BUCKETS:].sum())
    return (H.value_at_quantile(d, 0.99) if n else 0), n


def verdict(samples: list[dict[str, Any]], *, warmup_s: float, max_rss_growth_mb: float,
            max_p99_ratio: float) -> dict[str, Any]:
    """Growth from the first sample at or after the warm-up to the last one."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    if len(after) < 2:
        raise ValueError(f"need two samples after the {warmup_s:.0f} s warm-up, got {len(after)}: run longer")
    first, last = after[0], after[-1]
    rss_growth = (last["rss_bytes"] - first["rss_bytes"]) / 2**20
    # the slope over every sample after the warm-up: a steady leak and a one-off step look alike
    # in the end-to-end growth, not in the slope
    t = np.array([s["t_s"] for s in after], float)
    slope = float(np.polyfit(t / 60, np.array([s["rss_bytes"] for s in after], float) / 2**20, 1)[0]) \
        if t[-1] > t[0] else 0.0
    p0, p1 = first["t2o_p99_window_ns"], last["t2o_p99_window_ns"]
    ratio = (p1 / p0) if p0 and p1 else None
    orders = last["orders_submitted"] - first["orders_submitted"]
    problems = []
    if rss_growth > max_rss_growth_mb:
        problems.append(f"RSS grew {rss_growth:.1f} MB (limit {max_rss_growth_mb} MB)")
    if orders <= 0:
        problems.append("no order submitted after the warm-up: the daemon stopped trading")
    warnings = []
    if ratio is not None and ratio > max_p99_ratio:
        warnings.append(f"tick-to-order p99 grew x{ratio:.2f} (flag above x{max_p99_ratio})")
    if not p0 or not p1:
        warnings.append("an interval without tick-to-order samples: p99 growth not measured")
    return {"ok": not problems, "problems": problems, "warnings": warnings,
            "rss_start_mb": round(first["rss_bytes"] / 2**20, 2), "rss_end_mb": round(last["rss_bytes"] / 2**20, 2),
            "rss_growth_mb": round(rss_growth, 2), "rss_slope_mb_per_min": round(slope, 3), "t2o_p99_start_ns": p0, "t2o_p99_end_ns": p1,
            "t2o_p99_ratio": None if ratio is None else round(ratio, 3),
            "orders_after_warmup": orders, "from_t_s": first["t_s"], "to_t_s": last["t_s"]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")),
                    help="run length (default $SOAK_MINUTES or 10)")
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument("--interval-s", type=float, default=30.0)
    ap.add_argument("--max-rss-growth-mb", type=float, default=16.0)
    ap.add_argument("--max-p99-ratio", type=float, default=2.0)
    ap.add_argument("--half-spread-ticks", type=int, default=200, help="market maker's half spread (fills happen)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/soak-<ts>.json")
    a = ap.parse_args(argv)
    if not (a.minutes > 0 and a.interval_s > 0 and a.warmup_s >= 0 and a.max_rss_growth_mb >= 0
            and a.max_p99_ratio > 0 and a.half_spread_ticks >= 1):
        ap.error("minutes, interval-s, max-p99-ratio > 0; warmup-s, max-rss-growth-mb >= 0; half-spread-ticks >= 1")
    if a.warmup_s + a.interval_s > a.minutes * 60:
        ap.error(f"{a.minutes} minutes leave no interval after a {a.warmup_s:.0f} s warm-up; "
                 f"need at least {(a.warmup_s + a.interval_s) / 60:.2f} minutes")
    return a


def run(a: argparse.Namespace) -> int:
    import psutil

    from ipc import histogram as H
    from ipc.histogram import LatencyHistogram
    from tests.daemon_harness import Stack, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    stack = Stack(tmp, name="soak", half_spread_ticks=a.half_spread_ticks, orders_per_second=40)
    text = stack.config.read_text()
    # no sidecar here: a journal with a gating consumer nobody drains would fill and halt trading
    assert "[persist]\nenabled = true" in text, "the harness's persist section changed"
    stack.config.write_text(text.replace("[persist]\nenabled = true", "[persist]\nenabled = false"))
    samples: list[dict[str, Any]] = []
    hist = None
    status = "ok"
    try:
        stack.start()
        proc = psutil.Process(stack.daemon.pid)
        wait_for(lambda: stack.counters()["placed"] > 0, 60, "the first order", [stack.daemon, stack.sim])
        hist = LatencyHistogram.attach(stack.instance, "hist-t2o-0")
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        prev = hist.hist.copy()
        # samples at the warm-up's end, then every interval, and at the end
        ticks = [a.warmup_s] + list(np.arange(a.warmup_s + a.interval_s, a.minutes * 60, a.interval_s)) + [a.minutes * 60]
        print(f"soak: instance {stack.instance}, {a.minutes:g} min, warm-up {a.warmup_s:g} s, "
              f"sample every {a.interval_s:g} s; logs in {tmp}", flush=True)
        for tick in sorted(set(round(float(x), 3) for x in ticks)):
            while time.monotonic() < t0 + tick:
                if stack.daemon.poll() is not None or stack.sim.poll() is not None:
                    raise RuntimeError(f"a process exited (daemon {stack.daemon.returncode}, sim {stack.sim.returncode})")
                time.sleep(min(1.0, max(0.0, t0 + tick - time.monotonic())))
            cur = hist.hist.copy()
            p99w, nw = window_p99(prev, cur)
            prev = cur
            c = stack.counters()
            s = {"t_s": round(time.monotonic() - t0, 1), "rss_bytes": proc.memory_info().rss,
                 "t2o_p99_window_ns": p99w, "t2o_window_count": nw,
                 "t2o_p99_cumulative_ns": H.value_at_quantile(cur, 0.99), "orders_submitted": c["placed"],
                 "md_records": c["md"], "fills": c["filled"], "journal_events": c["journal_events"],
                 "cpu_s": round(sum(proc.cpu_times()[:2]), 2), "threads": proc.num_threads()}
            samples.append(s)
            print(f"  t={s['t_s']:7.1f}s rss={s['rss_bytes'] / 2**20:7.1f} MB t2o p99 (interval)="
                  f"{p99w / 1e3:9.1f} us n={nw:6d} orders={s['orders_submitted']} fills={s['fills']}", flush=True)
            if time.monotonic() >= end:
                break
        v = verdict(samples, warmup_s=a.warmup_s, max_rss_growth_mb=a.max_rss_growth_mb, max_p99_ratio=a.max_p99_ratio)
    except Exception as e:
        status = f"failed: {e}"
        v = {"ok": False, "problems": [str(e)], "warnings": []}
    finally:
        if hist is not None:
            hist.close()
        try:
            rc = stack.stop_daemon(timeout=60) if stack.daemon is not None else None
        except Exception as e:
            rc = f"did not stop: {e}"
        stack.close()
    from bench.harness import environment

    doc = {"kind": "soak", "environment": environment(), "status": status, "daemon_exit": rc,
           "args": {k: (str(v_) if isinstance(v_, Path) else v_) for k, v_ in vars(a).items()},
           "verdict": v, "samples": samples, "logs": str(tmp)}
    out = a.out or HERE / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if v.get("ok"):
        print(f"soak: STABLE: RSS {v['rss_start_mb']} -> {v['rss_end_mb']} MB ({v['rss_growth_mb']:+.2f} MB), "
              f"slope {v['rss_slope_mb_per_min']:+.2f} MB/min, t2o p99 {v['t2o_p99_start_ns'] / 1e3:.1f} -> {v['t2o_p99_end_ns'] / 1e3:.1f} us "
              f"(x{v['t2o_p99_ratio']}), {v['orders_after_warmup']} orders after warm-up")
    else:
        print(f"soak: FAILED: {'; '.join(v['problems'])}"
              + (f" (slope {v['rss_slope_mb_per_min']:+.2f} MB/min)" if "rss_slope_mb_per_min" in v else ""))
    for w in v.get("warnings", []):
        print(f"soak: warning: {w}")
    print(f"wrote {out}")
    return 0 if v.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
