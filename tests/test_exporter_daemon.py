"""``bot4d-exporter`` (its real command line) against the real daemon trading on the simulator:
/metrics parses with prometheus-client's own parser and carries what the daemon itself reports
over its control socket, and monitors coming and going change nothing the daemon does."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot4d.monitor.catalog import DaemonView
from ipc.histogram import LatencyHistogram
from tests.daemon_harness import Stack, free_port, wait_for

EXPORTER = Path(sys.executable).parent / "bot4d-exporter"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("exd"), name="exd")
    try:
        s.start()
        wait_for(lambda: s.counters()["placed"] >= 4, 60, "the market maker to quote", [s.daemon])
        yield s
    finally:
        s.close()


def start_exporter(instance: str) -> tuple[subprocess.Popen, int]:
    assert EXPORTER.exists(), f"{EXPORTER}: the package's console script is not installed"
    port = free_port()
    p = subprocess.Popen([str(EXPORTER), "--instance", instance, "--listen", f"127.0.0.1:{port}",
                          "--min-interval", "0.05"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: fetch(port), 60, "the exporter to serve /metrics", [p])
    return p, port


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def parse(text: str) -> dict:
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def stop(p: subprocess.Popen) -> str:
    p.terminate()
    _, err = p.communicate(timeout=30)
    return err.decode(errors="replace")


@pytest.fixture(scope="module")
def exporter(stack):
    p, port = start_exporter(stack.instance)
    try:
        yield port
    finally:
        if p.poll() is None:
            stop(p)


def test_metrics_carry_the_daemons_real_values(stack, exporter):
    hist = LatencyHistogram.attach(stack.instance, "hist-t2o-0")
    try:
        c0, lag0, t2o0 = stack.counters(), stack.ok("journal-lag")["0"]["lag"], hist.percentiles()["count"]
        time.sleep(0.1)  # past the exporter's min interval: this scrape reads shared memory now
        m = parse(fetch(exporter))
        c1, lag1, t2o1 = stack.counters(), stack.ok("journal-lag")["0"]["lag"], hist.percentiles()["count"]
    finally:
        hist.close()
    st = stack.ok("status")
    assert m[("bot4d_up", (("instance", stack.instance),))] == 1
    assert st["trading_state"] == {"0": "ACTIVE"}
    assert m[("bot4d_trading_state", (("shard", "0"), ("state", "ACTIVE")))] == 1
    assert m[("bot4d_trading_state", (("shard", "0"), ("state", "HALTED")))] == 0
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert m[("bot4d_book_state", (("state", "LIVE"), ("symbol", sym), ("venue", "BINANCE")))] == 1

        def top(mm: dict) -> tuple[float, float]:
            return (mm[("bot4d_book_best_bid", (("symbol", sym), ("venue", "BINANCE")))],
                    mm[("bot4d_book_best_ask", (("symbol", sym), ("venue", "BINANCE")))])
        bid, ask = top(m)
        # the simulator's book is thin: a side, rarely both, may be empty for a moment (shown as
        # 0); a later scrape must then show prices again
        t_end = time.monotonic() + 10
        while bid + ask == 0 and time.monotonic() < t_end:
            time.sleep(0.2)
            bid, ask = top(parse(fetch(exporter)))
        assert bid >= 0 and ask >= 0 and bid + ask > 0 and (bid == 0 or ask == 0 or bid < ask), (sym, bid, ask)
    # counters: what the shard's own counters said just before and just after the scrape
    sub = m[("bot4d_orders_submitted_total", (("shard", "0"),))]
    assert 0 < c0["placed"] <= sub <= c1["placed"]
    assert c0["filled"] <= m[("bot4d_orders_filled_total", (("shard", "0"),))] <= c1["filled"]
    assert lag0 <= m[("bot4d_journal_lag_events", (("shard", "0"),))] <= lag1 and lag0 > 0
    # the tick-to-order histogram: the daemon's real samples, cumulative buckets up to +Inf
    n = m[("bot4d_tick_to_order_seconds_count", (("shard", "0"),))]
    assert 0 < t2o0 <= n <= t2o1
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                      if k[0] == "bot4d_tick_to_order_seconds_bucket"))
    assert len(buckets) > 10 and buckets[-1] == (float("inf"), n)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert m[("bot4d_tick_to_order_seconds_sum", (("shard", "0"),))] > 0
    assert m[("bot4d_order_ack_seconds_count", (("venue", "BINANCE"),))] > 0
    # io thread series
    assert m[("bot4d_md_messages_total", (("venue", "BINANCE"),))] > 0
    assert 0 <= m[("bot4d_md_last_message_age_seconds", (("venue", "BINANCE"),))] < 10
    assert m[("bot4d_breaker_state", (("component", "order_entry"), ("state", "CLOSED"), ("venue", "BINANCE")))] == 1
    assert m[("bot4d_shard_heartbeat_age_seconds", (("shard", "0"),))] < 2
    # the io thread's heartbeat is on the monitors' clock (the exporter clamps at 0, so read raw)
    from ipc.segment import Segment

    seg = Segment.attach(stack.instance, "catalog", readonly=True)
    try:
        assert 0 <= time.monotonic_ns() - seg.heartbeat_ns() < 5e9
    finally:
        seg.close()
    assert m[("bot4d_process_resident_memory_bytes", ())] > 50e6
    # positions as the daemon reports them (read after the scrape: equal unless a fill came between)
    pos = stack.ok("positions")
    for sym, row in pos.items():
        got = m[("bot4d_position", (("symbol", sym), ("venue", "BINANCE")))]
        assert Decimal(str(got)) == Decimal(row["qty"]) or stack.counters()["filled"] != c1["filled"]
    # every series the catalog lists is rendered
    v = DaemonView(stack.instance)
    try:
        listed = {s["metric"] for s in v.meta["counters"]}
    finally:
        v.close()
    rendered = {k[0] for k in m} | {k[0] + "_total" for k in m}
    # (bot4d-persist's own series live in its segment, which exists only while a sidecar runs: none here)
    sidecar = {x for x in listed if x.startswith("bot4d_persist_")}
    assert listed - sidecar <= rendered, listed - sidecar - rendered


def test_monitors_coming_and_going_change_nothing_the_daemon_does(stack, exporter):
    start = stack.counters()
    log_before = len(stack.daemon_log.read_text(errors="replace"))
    procs: list[subprocess.Popen] = []
    ports: list[int] = []
    errors = []
    try:
        for _ in range(4):
            p, port = start_exporter(stack.instance)
            procs.append(p)
            ports.append(port)
        t_end = time.monotonic() + 4
        k = 0
        while time.monotonic() < t_end:
            for port in ports:
                parse(fetch(port))
            if k == 3:  # one monitor goes away, another attaches while the daemon trades
                errors.append(stop(procs.pop(0)))
                ports.pop(0)
                p, port = start_exporter(stack.instance)
                procs.append(p)
                ports.append(port)
            k += 1
            time.sleep(0.05)
        # orders keep flowing with monitors attached
        wait_for(lambda: stack.counters()["placed"] > start["placed"] + 2, 60, "orders while monitors scrape",
                 [stack.daemon])
    finally:
        for p in procs:
            errors.append(stop(p))
    after = stack.counters()
    assert stack.daemon.poll() is None
    st = stack.ok("status")
    assert st["trading_state"] == {"0": "ACTIVE"} and st["books_live"] == "2/2"
    assert after["oms_illegal_transitions"] == 0
    assert after["journal_backpressure"] == start["journal_backpressure"]
    new_log = stack.daemon_log.read_text(errors="replace")[log_before:]
    assert "Traceback" not in new_log and " ERROR " not in new_log and " CRITICAL " not in new_log, new_log[-2000:]
    for e in errors:
        assert "Traceback" not in e, e
    # the daemon's own view still matches a fresh monitor's
    m = parse(fetch(exporter))
    assert m[("bot4d_orders_submitted_total", (("shard", "0"),))] >= after["placed"] > start["placed"]
