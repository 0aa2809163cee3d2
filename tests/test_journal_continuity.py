"""The audit trail across daemon restarts, with the real processes: the simulated venue, the daemon
trading on it, bot4d-persist and a real PostgreSQL.

What a user must be able to rely on: every event of every journal ring the daemon ever wrote is in
PostgreSQL exactly once, in one gap-free shard sequence, whether the daemon was SIGKILLed while
bot4d-persist ran (it follows the new ring by itself) or while it was down (the old ring is kept
until it is drained); and when events cannot reach PostgreSQL, the daemon and bot4d-persist say so.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bot4d.config import ConfigError, PersistConfig, load
from bot4d.persist import schema
from bot4d.persist.sidecar import GLOBAL, counter_names
from bot4d.telemetry import Telemetry
from ipc.counters import Counters
from ipc.ring import C_PROD, Ring, kept_name
from tests.daemon_harness import STRATEGY, Stack, wait_for
from tests.test_config import BASE, cfgdir, refused, write  # noqa: F401 (fixture)
from tests.test_exporter import scrape
from tests.test_persist_faults import ENV, assert_exactly_once  # every seq 0..n-1 once, the cursor at n-1

pytest_plugins = ["tests.pg"]


@pytest.fixture
def db(pg_db: str) -> str:
    schema.migrate(pg_db, log=lambda *_: None)
    return pg_db


# the market maker as the harness configures it; the journal's continuity is the subject here, so the
# protective stops (tests/test_protective_stops.py) are off and do not add their own order flow
PLAIN = {sym: STRATEGY.format(qty=qty, inv=inv, hs=2000) + "[instruments.protection]\nenabled = false\n"
         for sym, qty, inv in (("BTCUSDT", "0.001", "0.01"), ("ETHUSDT", "0.02", "0.2"))}


@pytest.fixture
def stack(tmp_path: Path):
    s = Stack(tmp_path, name="jc", strategies=PLAIN)
    try:
        s.start_sim()
        yield s
    finally:
        s.close()


def persist_keys(s: Stack, text: str) -> None:
    """Add keys to the [persist] table of the stack's configuration."""
    cfg = s.config.read_text()
    assert "journal_capacity = 65536\n" in cfg
    s.config.write_text(cfg.replace("journal_capacity = 65536\n", "journal_capacity = 65536\n" + text))


def start_sidecar(s: Stack, dsn: str, *args: str) -> subprocess.Popen:
    log = open(s.tmp / "persist.log", "ab")
    p = subprocess.Popen([sys.executable, "-m", "bot4d.persist.main", "run", "-v", "--dsn", dsn, "--instance",
                          s.instance, "--batch", "512", *(args or ("--shards", "0"))],
                         env=ENV, stdout=log, stderr=subprocess.STDOUT)
    s.extra.append(p)
    return p


def sidecar_log(s: Stack) -> str:
    return (s.tmp / "persist.log").read_text(errors="replace")


def journal(s: Stack, name: str = "journal-0") -> Ring:
    return Ring.attach(s.instance, name, readonly=True)


def produced(r: Ring) -> int:
    return int(r.ctrl[C_PROD])  # a plain read: the ring's producer is gone or the value may be a moment old


def db_cursor(dsn: str) -> tuple[int, int, int]:
    """(last_seq, journal_id, seq_base) of shard 0."""
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT last_seq, journal_id, seq_base FROM journal_cursor WHERE shard = 0").fetchone()
        return tuple(row) if row else (-1, 0, 0)


def trade_until(s: Stack, orders: int) -> None:
    base = s.ok("status")["orders_sent"]
    wait_for(lambda: s.ok("status")["orders_sent"] >= base + orders, 60, f"{orders} more orders", [s.daemon])


def kept_files(s: Stack) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"bot4d.{s.instance}.journal-0-kept-*"))


def test_sidecar_follows_a_sigkilled_daemon_into_its_new_ring(stack, db):
    s = stack
    s.start_daemon()
    side = start_sidecar(s, db)
    trade_until(s, 6)
    boot1 = s.ok("status")["boot"]
    old = journal(s)
    assert old.boot_id == boot1  # the ring says which daemon run wrote it
    wait_for(lambda: db_cursor(db)[0] > 0, 60, "first events persisted", [side])
    s.stop_daemon(signal.SIGKILL)
    n_old = produced(old)
    s.start_daemon()
    boot2 = s.ok("status")["boot"]
    assert boot2 != boot1
    new = journal(s)
    assert new.boot_id == boot2 and new.journal_id != old.journal_id
    trade_until(s, 6)  # trade on: the new ring fills while the running sidecar must find it
    wait_for(lambda: db_cursor(db)[0] >= n_old, 60, "the new ring's events persisted", [side])
    wait_for(lambda: s.ok("journal-lag")["0"]["consumer"] == "ATTACHED", 10, "the daemon to see the sidecar")
    # a clean stop waits for the attached sidecar to take the rest, then says so
    assert s.stop_daemon(signal.SIGTERM) == 0
    assert "journal persisted: bot4d-persist has taken every event" in s.daemon_log.read_text()
    n_new = produced(new)
    assert db_cursor(db) == (n_old + n_new - 1, new.journal_id, n_old)
    assert_exactly_once(db, n_old + n_new)
    assert side.poll() is None, "the sidecar followed without a restart"
    log = sidecar_log(s)
    assert f"journal {old.journal_id} (boot {boot1}) finished at ring sequence {n_old}" in log
    assert f"new journal ring (id {new.journal_id}, boot {boot2}, was {old.journal_id}): its record 0 is " \
           f"sequence {n_old}" in log
    assert kept_files(s) == []
    old.close(), new.close()


def test_old_ring_tail_is_persisted_by_a_sidecar_started_after_the_restart(stack, db):
    s = stack
    s.start_daemon()
    side = start_sidecar(s, db)
    trade_until(s, 4)
    wait_for(lambda: db_cursor(db)[0] > 0, 60, "first events persisted", [side])
    side.send_signal(signal.SIGTERM)
    assert side.wait(30) == 0
    old = journal(s)
    at_stop = old.unconsumed()
    trade_until(s, 6)  # the sidecar is down: a tail builds up
    boot1 = s.ok("status")["boot"]
    s.stop_daemon(signal.SIGKILL)
    n_old, tail = produced(old), old.unconsumed()
    assert tail > at_stop
    s.start_daemon()
    # the restarted daemon kept the undrained ring aside instead of replacing it, and says so
    kept = kept_name("journal-0", old.journal_id)
    assert kept_files(s) == [f"bot4d.{s.instance}.{kept}"]
    assert re.search(rf"shard 0: the journal of the previous run \(boot {boot1}, pid \d+\) holds {tail} events "
                     rf"bot4d-persist has not taken: kept as /dev/shm/bot4d\.{s.instance}\.{kept}",
                     s.daemon_log.read_text())
    lag = s.ok("journal-lag")["0"]
    assert lag["kept_rings"] == [{"ring": f"/dev/shm/bot4d.{s.instance}.{kept}", "boot": boot1, "produced": n_old,
                                  "unpersisted": tail, "consumer_pid": 0}]
    assert lag["consumer"] == "WAITING" and lag["consumer_pid"] == 0
    assert lag["backlog"] == lag["lag"] + tail
    trade_until(s, 4)
    side = start_sidecar(s, db)
    wait_for(lambda: kept_files(s) == [], 60, "the kept ring drained and removed", [side])
    new = journal(s)
    wait_for(lambda: db_cursor(db)[1] == new.journal_id, 60, "the new ring adopted", [side])
    assert s.stop_daemon(signal.SIGTERM) == 0
    n_new = produced(new)
    assert db_cursor(db) == (n_old + n_new - 1, new.journal_id, n_old)
    assert_exactly_once(db, n_old + n_new)
    assert f"kept journal {kept} (boot {boot1}) is drained: removed" in sidecar_log(s)
    old.close(), new.close()


def test_sigterm_without_a_sidecar_reports_the_backlog_and_where_it_is(stack):
    s = stack
    s.start_daemon()
    trade_until(s, 4)
    lag = s.ok("journal-lag")["0"]
    ring = f"/dev/shm/bot4d.{s.instance}.journal-0"
    assert lag["consumer"] == "WAITING" and lag["consumer_pid"] == 0 and lag["persisted"] == 0
    assert lag["ring"] == ring and lag["lag"] == lag["backlog"] == lag["produced"] > 0
    st = s.ok("status")["journal"]
    assert st["on_no_sidecar"] == "trade" and st["shards"]["0"]["consumer"] == "WAITING"
    assert s.stop_daemon(signal.SIGTERM) == 0
    r = journal(s)
    n = produced(r)  # the halt and the cancels at stop came after the figures above
    assert n >= lag["produced"]
    assert (f"shard 0: {n} journal events not persisted at exit (produced {n}, persisted 0; no bot4d-persist "
            f"attached): they stay in {ring} until bot4d-persist drains them") in s.daemon_log.read_text()
    r.close()


def test_journal_nobody_drains_is_alarmed_by_sidecar_daemon_and_exporter(stack, db):
    s = stack
    persist_keys(s, 'sidecar_timeout_s = "1"\non_no_sidecar = "reduce-only"\n')
    s.start_daemon()
    # a sidecar for the wrong shards: the daemon's journal-0 has no consumer
    side = start_sidecar(s, db, "--shards", "1", "--alarm-after", "0.5")
    c = wait_for(lambda: Counters.attach(s.instance, "persist"), 60, "the sidecar's counters", [side])
    try:
        wait_for(lambda: c.get("unconsumed_events") > 0 and c.get("unconsumed_rings") == 1, 30,
                 "the sidecar counting the unconsumed journal", [side])
        m = scrape(s.instance)  # the exporter shows bot4d-persist's series through the catalog
        assert m[("bot4d_persist_unconsumed_events", ())] > 0
        assert m[("bot4d_persist_unconsumed_rings", ())] == 1
    finally:
        c.close()
    wait_for(lambda: "holds" in sidecar_log(s), 30, "the sidecar's warning", [side])
    boot = s.ok("status")["boot"]
    assert re.search(rf"journal /dev/shm/bot4d\.{s.instance}\.journal-0 \(shard 0, boot {boot}, producer alive\) "
                     r"holds \d+ events no consumer takes \(\+\d+ in \d+ s\); this sidecar drains shard\(s\) \[1\]: "
                     r"add 0 to --shards", sidecar_log(s))
    # the daemon, after persist.sidecar_timeout_s: status, metric, log, and the configured action
    wait_for(lambda: s.ok("status")["journal"]["shards"]["0"]["consumer"] == "MISSING", 30, "MISSING in status")
    m = scrape(s.instance)
    assert m[("bot4d_journal_consumer_state", (("shard", "0"), ("state", "MISSING")))] == 1
    assert m[("bot4d_journal_consumer_state", (("shard", "0"), ("state", "ATTACHED")))] == 0
    wait_for(lambda: s.ok("risk")["0"]["trading_state"] == "REDUCING", 10, "the shard put in REDUCING")
    assert re.search(r"CRITICAL .*shard 0: no bot4d-persist has attached to the journal "
                     rf"/dev/shm/bot4d\.{s.instance}\.journal-0 for \d+ s \(persist\.sidecar_timeout_s = 1\): \d+ events "
                     r"not persisted; persist\.on_no_sidecar = \"reduce-only\": shard 0 is now REDUCING",
                     s.daemon_log.read_text())
    side.send_signal(signal.SIGTERM)
    assert side.wait(30) == 0
    assert not Path(f"/dev/shm/bot4d.{s.instance}.persist").exists()
    assert ("bot4d_persist_unconsumed_events", ()) not in scrape(s.instance)  # no sidecar: no such series


def test_catalog_names_the_sidecars_instance_wide_counters_where_it_puts_them():
    names = counter_names([3, 0])
    assert names[:len(GLOBAL)] == list(GLOBAL)
    t = Telemetry("jcat", venues=["BINANCE"], instruments=[("BINANCE", "BTCUSDT", 2, 5)], shards=1,
                  md_reasons=[], reject_reasons=[], trip_reasons=[])
    try:
        for ser in t.persist.series:
            assert ser.segment == "persist"
            assert ser.metric == f"bot4d_persist_{names[ser.index]}"
    finally:
        t.close(unlink=True)


def test_persist_keys_are_validated(cfgdir):  # noqa: F811
    c = load(write(cfgdir, BASE + '[persist]\nsidecar_timeout_s = "2.5"\non_no_sidecar = "halt"\n'
                                  'shutdown_wait_s = 0\n'))
    assert (str(c.persist.sidecar_timeout_s), c.persist.on_no_sidecar, str(c.persist.shutdown_wait_s)) == \
        ("2.5", "halt", "0")
    assert load(write(cfgdir, BASE)).persist == PersistConfig()  # trade, 30 s, 10 s
    assert "persist.on_no_sidecar: 'stop' is not one of 'trade', 'reduce-only', 'halt'" in \
        refused(cfgdir, BASE + '[persist]\non_no_sidecar = "stop"\n')
    assert "persist.sidecar_timeout_s: 0 must be > 0" in refused(cfgdir, BASE + "[persist]\nsidecar_timeout_s = 0\n")
    assert "persist.shutdown_wait_s: 1.5 is a TOML float" in refused(cfgdir, BASE + "[persist]\nshutdown_wait_s = 1.5\n")
    assert "persist.shutdown_wait_s: 3601 must be <= 3600" in refused(cfgdir, BASE + "[persist]\nshutdown_wait_s = 3601\n")
    assert "persist.sidecar_timout_s: unknown key (did you mean 'sidecar_timeout_s'?)" in \
        refused(cfgdir, BASE + "[persist]\nsidecar_timout_s = 5\n")
    with pytest.raises(ConfigError):
        load(write(cfgdir, BASE + '[persist]\nsidecar_timeout_s = "abc"\n'))


def test_a_dead_producers_undrained_journal_is_kept_never_replaced():
    from bot4d.records import JOURNAL_EVENT_DTYPE
    from ipc.ring import commit, keep_if_undrained, kept_rings, remove_kept

    inst = f"jck{os.getpid()}"
    try:
        # a producer process journals 300 events and dies; nobody consumed them
        subprocess.run([sys.executable, "-m", "bot4d.persist.synth", "--instance", inst, "-n", "300"], env=ENV,
                       check=True, capture_output=True)
        assert keep_if_undrained(inst, "journal-0") == (kept := kept_rings(inst, "journal-0")[0])
        new = Ring.create(inst, "journal-0", JOURNAL_EVENT_DTYPE, 64, kind="journal", reclaim_dead=True,
                          identity={"boot": "abc123"})
        assert new.boot_id == "abc123" and keep_if_undrained(inst, "journal-0") is None  # a live owner's: untouched
        old = Ring.attach(inst, kept, readonly=False)
        assert (produced(old), old.unconsumed(), old.boot_id, old.consumer_pid(0)) == (300, 300, "", 0)
        assert remove_kept(old, inst, "journal-0") is None  # records left: it stays
        assert commit(old.ctrl, 0, 300)
        assert remove_kept(old, inst, "journal-0") == kept and kept_rings(inst, "journal-0") == []
        old.close()
        new.close()
        # a drained journal of a dead producer is not kept: the creator replaces it
        subprocess.run([sys.executable, "-m", "bot4d.persist.synth", "--instance", inst, "--shard", "1", "-n", "5"],
                       env=ENV, check=True, capture_output=True)
        r = Ring.attach(inst, "journal-1", readonly=False)
        r.open_slot(0, start_seq=5)
        r.close()
        assert keep_if_undrained(inst, "journal-1") is None and kept_rings(inst, "journal-1") == []
    finally:
        for f in Path("/dev/shm").glob(f"bot4d.{inst}.*"):
            f.unlink()
