"""The exporter against a real stand-in daemon process publishing known values in shared memory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot4d.monitor.catalog import DaemonView
from bot4d.monitor.exporter import registry_for

ROOT = Path(__file__).resolve().parents[1]

# The stand-in publishes through the daemon's own Telemetry, then keeps counting until told to stop.
DAEMON = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from bot4d.telemetry import Telemetry
    from bot4d.records import JOURNAL_EVENT_DTYPE
    from ipc.counters import counter_add, counter_set
    from ipc.histogram import record
    from ipc.ring import Ring

    inst = sys.argv[1]
    t = Telemetry(inst, venues=["BINANCE"], instruments=[("BINANCE", "BTCUSDT", 2, 5)], shards=1,
                  md_reasons=["MALFORMED_JSON", "GAP"], reject_reasons=["MAX_NOTIONAL"],
                  trip_reasons=["DRAWDOWN", "MANUAL"], config_hash="abc123")
    io, sh = t.counter_array("ctr-io"), t.counter_array("ctr-shard0")
    counter_set(io, t.io.index("bot4d_md_messages_total", venue="BINANCE"), 1234)
    counter_set(io, t.io.index("bot4d_md_gaps_total", venue="BINANCE"), 2)
    counter_set(io, t.io.index("bot4d_md_rejects_total", venue="BINANCE", reason="GAP"), 2)
    counter_set(io, t.io.index("bot4d_md_last_message_age_seconds", venue="BINANCE"), time.time_ns())
    counter_set(io, t.io.index("bot4d_breaker_state", venue="BINANCE", component="order_entry"), 1)
    b = t.shard_blocks[0]
    counter_set(sh, b.index("bot4d_orders_submitted_total", shard="0"), 10)
    counter_set(sh, b.index("bot4d_orders_rejected_total", shard="0", reason="MAX_NOTIONAL"), 3)
    counter_set(sh, b.index("bot4d_trading_state", shard="0"), 2)
    counter_set(sh, b.index("bot4d_killswitch_trips_total", shard="0", reason="MANUAL"), 1)
    rec = np.zeros(1, t.books.dtype)
    rec["state"], rec["best_bid"], rec["best_ask"], rec["last_update_ns"] = 1, 6000000, 6000100, time.time_ns()
    t.books.write(0, rec[0])
    pos = np.zeros(1, t.positions.dtype)
    pos["qty"], pos["realised"] = 15000, -1234500000
    t.positions.write(0, pos[0])
    for _ in range(99):
        record(t.hist_tick_to_order[0].hist, 1000)
    record(t.hist_tick_to_order[0].hist, 2_000_000)
    j = Ring.create(inst, "journal-0", JOURNAL_EVENT_DTYPE, 64, kind="journal", n_gating=1, policy="fail")
    j.publish(np.zeros(5, JOURNAL_EVENT_DTYPE))
    from bot4d.persist.sidecar import counter_names   # and what bot4d-persist publishes beside it
    from ipc.counters import Counters
    persist = Counters.create(inst, "persist", counter_names([0]))
    t.heartbeat(time.time_ns())
    print("ready", flush=True)
    k = b.index("bot4d_orders_filled_total", shard="0")
    n = 0
    while sys.stdin.readline().strip() != "stop":   # each line: one step of deterministic work
        for _ in range(1000):
            counter_add(sh, k, 1)
            n += 1
        print(n, flush=True)
    j.unlink(); j.close()
    persist.unlink(); persist.close()
    t.close()
""")


@pytest.fixture()
def daemon():
    inst = f"t{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", DAEMON, inst], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    yield inst, p
    if p.poll() is None:
        p.stdin.write("stop\n")
        p.stdin.flush()
        p.wait(30)


def scrape(inst: str) -> dict:
    text = generate_latest(registry_for(inst)).decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):  # prometheus-client's own parser
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_carry_the_daemons_values(daemon):
    inst, _ = daemon
    m = scrape(inst)
    assert m[("bot4d_up", (("instance", inst),))] == 1
    assert m[("bot4d_md_messages_total", (("venue", "BINANCE"),))] == 1234
    assert m[("bot4d_md_gaps_total", (("venue", "BINANCE"),))] == 2
    assert m[("bot4d_md_rejects_total", (("reason", "GAP"), ("venue", "BINANCE")))] == 2
    assert 0 <= m[("bot4d_md_last_message_age_seconds", (("venue", "BINANCE"),))] < 60
    assert m[("bot4d_breaker_state", (("component", "order_entry"), ("state", "OPEN"), ("venue", "BINANCE")))] == 1
    assert m[("bot4d_breaker_state", (("component", "order_entry"), ("state", "CLOSED"), ("venue", "BINANCE")))] == 0
    assert m[("bot4d_orders_submitted_total", (("shard", "0"),))] == 10
    assert m[("bot4d_orders_rejected_total", (("reason", "MAX_NOTIONAL"), ("shard", "0")))] == 3
    assert m[("bot4d_trading_state", (("shard", "0"), ("state", "HALTED")))] == 1
    assert m[("bot4d_killswitch_trips_total", (("reason", "MANUAL"), ("shard", "0")))] == 1
    assert m[("bot4d_book_state", (("state", "LIVE"), ("symbol", "BTCUSDT"), ("venue", "BINANCE")))] == 1
    assert m[("bot4d_book_best_bid", (("symbol", "BTCUSDT"), ("venue", "BINANCE")))] == 60000.0
    assert m[("bot4d_position", (("symbol", "BTCUSDT"), ("venue", "BINANCE")))] == 0.15
    assert m[("bot4d_pnl_realised", (("symbol", "BTCUSDT"), ("venue", "BINANCE")))] == -123.45
    assert m[("bot4d_journal_lag_events", (("shard", "0"),))] == 5
    assert m[("bot4d_tick_to_order_seconds_count", (("shard", "0"),))] == 100
    le = {dict(k[1])["le"]: v for k, v in m.items() if k[0] == "bot4d_tick_to_order_seconds_bucket"}
    assert le["1e-06"] == 0 and le["2e-06"] == 99 and le["0.001"] == 99 and le["0.0025"] == 100
    import numba
    import platform
    assert m[("bot4d_build_info", (("numba", numba.__version__), ("python", platform.python_version()),
                                   ("version", "0.1.0")))] == 1
    assert any(k[0] == "bot4d_config_info" and dict(k[1])["config_hash"] == "abc123" for k in m)
    assert m[("bot4d_process_resident_memory_bytes", ())] > 1e6
    names = {k[0] for k in m}
    assert all(n.startswith("bot4d_") for n in names)
    assert not any("order_id" in dict(k[1]) for k in m)  # labels stay bounded


def test_up_is_zero_without_a_daemon_and_after_it_dies(daemon):
    m = scrape("no-such-instance")
    assert m == {("bot4d_up", (("instance", "no-such-instance"),)): 0.0}
    inst, p = daemon
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert scrape(inst)[("bot4d_up", (("instance", inst),))] == 0
    for f in Path("/dev/shm").glob(f"bot4d.{inst}.*"):
        f.unlink()  # the stand-in died without cleaning up; a real daemon reclaims on restart


def test_monitor_cannot_write(daemon):
    inst, _ = daemon
    v = DaemonView(inst)
    v.samples()
    c = next(iter(v._counters.values()))
    with pytest.raises(ValueError):
        c.values[0] = 1  # PROT_READ mapping: numpy refuses the write
    area = next(iter(v._snaps.values()))
    with pytest.raises(ValueError):
        area.records["best_bid"][0] = 0
    v.close()


def test_attaching_monitors_changes_nothing_the_daemon_does(daemon):
    inst, p = daemon
    views = []
    for step in range(6):
        if step % 2 == 0:
            views.append(DaemonView(inst))
        else:
            views.pop(0).close()
        p.stdin.write("step\n")
        p.stdin.flush()
        assert int(p.stdout.readline()) == 1000 * (step + 1)
        scrape(inst)
    for v in views:
        v.close()
    assert scrape(inst)[("bot4d_orders_filled_total", (("shard", "0"),))] == 6000


def test_exporter_imports_ipc_only():
    code = ("import sys, bot4d.monitor.exporter; "
            "print(sorted(m for m in sys.modules if m.startswith('bot4d')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout
    assert eval(out) == ["bot4d", "bot4d.monitor", "bot4d.monitor.catalog", "bot4d.monitor.exporter"]


def test_unknown_catalog_version_is_refused():
    from ipc.segment import Segment, SegmentError

    inst = f"t{uuid.uuid4().hex[:10]}"
    seg = Segment.create(inst, "catalog", 64, {"kind": "catalog", "version": 99, "bytes": 2})
    try:
        with pytest.raises(SegmentError, match="catalog layout version 99"):
            DaemonView(inst)
        assert scrape(inst)[("bot4d_up", (("instance", inst),))] == 0
    finally:
        seg.unlink()
        seg.close()


def test_bot4ctl_top_shows_the_daemon(daemon):
    inst, _ = daemon
    out = subprocess.run([sys.executable, "-m", "bot4d.ctl", "top", "--once", "--instance", inst],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert out.returncode == 0, out.stderr
    screen = out.stdout
    assert "shard=0: HALTED" in screen
    assert "component=order_entry,venue=BINANCE: OPEN" in screen
    assert "BINANCE:BTCUSDT" in screen and "LIVE" in screen and "60000" in screen
    assert "submitted 10" in screen and "rejected 3" in screen
    assert "JOURNAL LAG  shard 0: 5" in screen
    t2o = next(line for line in screen.splitlines() if line.startswith("tick_to_order{shard=0}"))
    assert "1.0µs" in t2o and "100" in t2o


def test_bot4ctl_top_without_daemon_and_bad_interval():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "bot4d.ctl", "top", "--once", "--instance", "nothing-here"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "no running daemon for instance 'nothing-here'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "bot4d.ctl", "top", "--interval", "0.001"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "would slow the daemon" in out.stderr


def test_bot4ctl_reports_unreachable_daemon(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bot4d.ctl", f"--socket={tmp_path}/none.sock", "status"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert out.returncode == 2 and "no daemon is listening" in out.stderr
    out = subprocess.run([sys.executable, "-m", "bot4d.ctl", "limits", "frob"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert out.returncode == 2 and "limits show | limits set" in out.stderr
