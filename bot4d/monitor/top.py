"""``bot4ctl top``: a live terminal view of a running daemon, read-only through ``ipc``.

Shows shards, trading and breaker state, books, positions, order counts and latency percentiles,
refreshed at a human rate (default 2 Hz: a monitor polling in a tight loop would slow the writer
through cache-line traffic). Imports ``ipc`` only, like every monitor.
"""
from __future__ import annotations

import argparse
import sys
import time

from bot4d.monitor.catalog import DaemonView
from ipc.histogram import percentiles
from ipc.segment import SegmentError


def _fmt_ns(ns: int) -> str:
    if ns <= 0:
        return "-"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.2f}s"


def render(view: DaemonView, width: int = 100) -> str:
    """One screen of text."""
    info = view.info
    samples = view.samples()
    by_metric: dict[str, list] = {}
    for s in samples:
        by_metric.setdefault(s.metric, []).append(s)

    def states(metric: str) -> list[str]:
        out = []
        for s in by_metric.get(metric, []):
            if s.value == 1.0:
                lab = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "state")
                out.append(f"{lab}: {s.labels['state']}")
        return out

    def total(metric: str, **match: str) -> int:
        return int(sum(s.value for s in by_metric.get(metric, [])
                       if all(s.labels.get(k) == v for k, v in match.items())))

    lines = [f"bot4d {info.get('version', '?')}  instance {info.get('instance', view.instance)}  "
             f"pid {view.owner_pid}  {'UP' if view.alive() else 'DOWN'}  "
             f"heartbeat {view.catalog.heartbeat_age_s():.1f}s ago",
             "=" * width]
    lines.append("SHARDS   " + "   ".join(states("bot4d_trading_state")))
    shard_ids = sorted({s.labels["shard"] for s in by_metric.get("bot4d_orders_submitted_total", [])})
    for sh in shard_ids:
        lines.append(f"  shard {sh}: submitted {total('bot4d_orders_submitted_total', shard=sh)}  "
                     f"filled {total('bot4d_orders_filled_total', shard=sh)}  "
                     f"rejected {total('bot4d_orders_rejected_total', shard=sh)}  "
                     f"kill-switch trips {total('bot4d_killswitch_trips_total', shard=sh)}")
    lines.append("BREAKERS " + "   ".join(states("bot4d_breaker_state")))
    lines.append("")
    lines.append(f"{'BOOK':<22}{'STATE':<11}{'BID':>16}{'ASK':>16}{'AGE':>10}")
    book_state = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "state")): s.labels["state"]
                  for s in by_metric.get("bot4d_book_state", []) if s.value == 1.0}
    bids = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_book_best_bid", [])}
    asks = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_book_best_ask", [])}
    ages = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_book_last_update_age_seconds", [])}
    for key, st in sorted(book_state.items()):
        lab = dict(key)
        name = f"{lab.get('venue', '')}:{lab.get('symbol', '')}"
        age = ages.get(key, float("nan"))
        lines.append(f"{name:<22}{st:<11}{bids.get(key, 0):>16.8g}{asks.get(key, 0):>16.8g}"
                     f"{'-' if age != age else f'{age:.1f}s':>10}")
    lines.append("")
    lines.append(f"{'POSITION':<22}{'QTY':>16}{'REALISED':>16}{'UNREALISED':>16}")
    pos = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_position", [])}
    real = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_pnl_realised", [])}
    unreal = {tuple(sorted(s.labels.items())): s.value for s in by_metric.get("bot4d_pnl_unrealised", [])}
    for key in sorted(pos):
        lab = dict(key)
        lines.append(f"{lab.get('venue', '')}:{lab.get('symbol', ''):<{21 - len(lab.get('venue', ''))}}"
                     f"{pos[key]:>16.8g}{real.get(key, 0):>16.8g}{unreal.get(key, 0):>16.8g}")
    lines.append("")
    lines.append(f"{'LATENCY':<28}{'p50':>10}{'p99':>10}{'p99.9':>10}{'max':>10}{'count':>12}")
    for h, arr in view.histogram_arrays():
        p = percentiles(arr)
        lab = ",".join(f"{k}={v}" for k, v in sorted(h["labels"].items()))
        name = f"{h['metric'].replace('bot4d_', '').replace('_seconds', '')}{{{lab}}}"
        lines.append(f"{name:<28}{_fmt_ns(p['p50_ns']):>10}{_fmt_ns(p['p99_ns']):>10}"
                     f"{_fmt_ns(p['p999_ns']):>10}{_fmt_ns(p['max_ns']):>10}{int(arr[0]):>12}")
    lag = [s for s in samples if s.metric == "bot4d_journal_lag_events"]
    if lag:
        lines.append("")
        lines.append("JOURNAL LAG  " + "  ".join(f"shard {s.labels['shard']}: {int(s.value)}" for s in lag))
    return "\n".join(line[:width] for line in lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4ctl top", description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="main")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between refreshes (>= 0.01)")
    ap.add_argument("--once", action="store_true", help="print one screen and exit")
    args = ap.parse_args(argv)
    if args.interval < 0.01:
        print("bot4ctl top: --interval below 0.01 s would slow the daemon; refusing", file=sys.stderr)
        return 2
    try:
        view = DaemonView(args.instance)
    except SegmentError as e:
        print(f"bot4ctl top: no running daemon for instance {args.instance!r} ({e})", file=sys.stderr)
        return 1
    try:
        if args.once:
            print(render(view))
            return 0
        while True:
            screen = render(view)
            sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        view.close()
