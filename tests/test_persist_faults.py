"""Fault tests with real processes: the producer stand-in, the bot4d-persist sidecar, PostgreSQL.

After each fault the rows in the database must equal the events journaled: per shard, every
sequence 0..n-1 exactly once (journal_rows unions every destination table).
"""
from __future__ import annotations

import glob
import itertools
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from bot4d.persist.sidecar import ST_DB_DOWN
from ipc.counters import Counters
from ipc.ring import Ring
from ipc.segment import SegmentError

pytest_plugins = ["tests.pg"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "NUMBA_CACHE_DIR": os.path.join(ROOT, ".numba_cache")}
_n = itertools.count()


@pytest.fixture
def instance():
    name = f"pt{os.getpid()}x{next(_n)}"
    procs: list[subprocess.Popen] = []
    yield name, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    for f in glob.glob(f"/dev/shm/bot4d.{name}.*"):
        os.unlink(f)


def producer(inst, procs, n, *, rate=0.0, capacity=4096, bad_at=-1) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "bot4d.persist.synth", "--instance", inst, "-n", str(n),
                          "--rate", str(rate), "--capacity", str(capacity), "--bad-at", str(bad_at)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def sidecar(dsn, inst, procs, *, batch=512) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "bot4d.persist.main", "run", "--dsn", dsn, "--instance", inst,
                          "--shards", "0", "--batch", str(batch), "--ring-wait", "60"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def cursor(dsn, shard=0) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as c:
            r = c.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s", (shard,)).fetchone()
            return -1 if r is None else r[0]
    except psycopg.OperationalError:
        return -2


def wait_for(cond, timeout=30.0, what="condition"):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def attach_ring(inst) -> Ring:
    out: list[Ring] = []

    def ready() -> bool:
        try:
            out.append(Ring.attach(inst, "journal-0", readonly=True))
            return True
        except SegmentError:  # not there yet, or its creator is still initialising it
            return False

    wait_for(ready, what="the journal ring")
    return out[0]


def assert_exactly_once(dsn, n, shard=0):
    with psycopg.connect(dsn) as c:
        total, distinct, lo, hi = c.execute(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM journal_rows WHERE shard = %s",
            (shard,)).fetchone()
        assert (total, distinct, lo, hi) == (n, n, 0, n - 1), "gap or duplicate in the persisted journal"
        assert c.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s", (shard,)).fetchone()[0] == n - 1


def test_sidecar_sigkill_mid_batch_resumes_exactly_once(persist_db, instance):
    inst, procs = instance
    n = 24_000
    prod = producer(inst, procs, n, rate=12_000)
    side = sidecar(persist_db, inst, procs)
    for threshold in (3_000, 9_000):
        wait_for(lambda: cursor(persist_db) > threshold, what=f"cursor > {threshold}")
        side.send_signal(signal.SIGKILL)
        side.wait()
        side = sidecar(persist_db, inst, procs)
    assert prod.wait(60) == 0
    wait_for(lambda: cursor(persist_db) == n - 1, what="everything persisted")
    assert_exactly_once(persist_db, n)


def test_postgres_crash_restart_under_load(pg_server, persist_db, instance):
    inst, procs = instance
    n = 24_000
    prod = producer(inst, procs, n, rate=12_000)
    side = sidecar(persist_db, inst, procs)
    wait_for(lambda: cursor(persist_db) > 3_000, what="cursor > 3000")
    pg_server.stop("immediate")  # a crash: uncommitted transactions vanish
    time.sleep(0.5)
    pg_server.start()
    assert prod.wait(60) == 0
    wait_for(lambda: cursor(persist_db) == n - 1, what="everything persisted")
    assert_exactly_once(persist_db, n)
    counters = Counters.attach(inst, "persist")
    assert counters.get("shard0_reconnects") >= 1
    assert side.poll() is None  # the sidecar rode through it
    counters.close()


def test_producer_sigkill_leaves_every_published_event_persisted(persist_db, instance):
    inst, procs = instance
    prod = producer(inst, procs, 100_000, rate=15_000)
    sidecar(persist_db, inst, procs)
    ring = attach_ring(inst)
    wait_for(lambda: ring.cursor > 5_000, what="producer progress")
    prod.send_signal(signal.SIGKILL)
    prod.wait()
    published = ring.cursor
    assert 5_000 < published < 100_000
    wait_for(lambda: cursor(persist_db) == published - 1, what="published events persisted")
    assert_exactly_once(persist_db, published)
    ring.close()


def test_journal_fills_while_postgres_is_down_and_nothing_is_dropped(pg_server, persist_db, instance):
    inst, procs = instance
    n, cap = 6_000, 1024
    side = sidecar(persist_db, inst, procs)
    prod = producer(inst, procs, 1_000, capacity=cap)  # first a little traffic that gets persisted
    assert prod.wait(60) == 0
    wait_for(lambda: cursor(persist_db) == 999, what="first events persisted")
    procs.remove(prod)
    ring = attach_ring(inst)
    pg_server.stop("fast")
    try:
        # the stand-in has exited; the test now plays the daemon on the same journal
        from bot4d.persist import synth
        wring = Ring.attach(inst, "journal-0", readonly=False)
        ev = synth.events(n, seed=2)[1_000:]
        ev["ts_ns"] = time.time_ns()
        sent = wring.publish(ev)
        assert sent == cap  # the ring is full: the rest was refused, not overwritten
        assert wring.stats()["failed"] == len(ev) - cap
        counters = Counters.attach(inst, "persist")
        wait_for(lambda: counters.get("shard0_state") == ST_DB_DOWN, what="sidecar noticing")
        wait_for(lambda: counters.get("shard0_lag_events") == cap and counters.get("shard0_lag_us") > 0,
                 what="lag published")
    finally:
        pg_server.start()
    # the daemon keeps the refused events and retries: none is dropped
    rest = ev[sent:]
    t0 = time.monotonic()
    while len(rest):
        k = wring.publish(rest)
        rest = rest[k:]
        assert time.monotonic() - t0 < 60
        if len(rest):
            time.sleep(0.001)
    wait_for(lambda: cursor(persist_db) == n - 1, what="everything persisted")
    assert_exactly_once(persist_db, n)
    assert side.poll() is None
    counters.close(), wring.close(), ring.close()


def test_undecodable_record_stops_sidecar_without_skipping_it(persist_db, instance):
    inst, procs = instance
    prod = producer(inst, procs, 2_000, bad_at=700)
    assert prod.wait(60) == 0
    side = sidecar(persist_db, inst, procs)
    assert side.wait(60) == 2
    err = side.stderr.read()
    assert "seq 700" in err and "unknown event kind" in err
    assert cursor(persist_db) == 699
    ring = attach_ring(inst)
    assert ring.slot_position(0) == 700  # the bad record and all after it are still in the journal
    ring.close()
    assert_exactly_once(persist_db, 700)


def test_journal_of_unknown_layout_is_refused(persist_db, instance):
    import numpy as np

    inst, procs = instance
    other = np.dtype([("seq", np.int64), ("ts_ns", np.int64), ("kind", np.int16), ("pad", np.int16, (3,))])
    ring = Ring.create(inst, "journal-0", other, 64, kind="journal")
    side = sidecar(persist_db, inst, procs)
    assert side.wait(60) == 2
    assert "cannot use journal ring" in side.stderr.read()
    assert cursor(persist_db) == -1
    ring.close()


def test_sigterm_finishes_cleanly_and_counters_tell_monitors_the_progress(persist_db, instance):
    inst, procs = instance
    n = 3_000
    assert producer(inst, procs, n).wait(60) == 0
    side = sidecar(persist_db, inst, procs)
    wait_for(lambda: cursor(persist_db) == n - 1, what="everything persisted")
    counters = Counters.attach(inst, "persist")  # what a monitor sees, read-only
    wait_for(lambda: counters.get("shard0_lag_events") == 0, what="lag back to 0")
    assert counters.get("shard0_persisted") == n and counters.get("shard0_last_seq") == n - 1
    assert counters.get("shard0_lag_us") == 0 and counters.get("shard0_batches") >= 1
    counters.close()
    side.send_signal(signal.SIGTERM)
    assert side.wait(30) == 0
    # the counters area went with its owner; the journal slot stays reserved for the next run
    assert not os.path.exists(f"/dev/shm/bot4d.{inst}.persist")
    ring = attach_ring(inst)
    assert ring.slot_position(0) == n
    ring.close()
    assert_exactly_once(persist_db, n)


def test_restarted_daemon_new_ring_continues_the_shard_sequence(persist_db, instance):
    inst, procs = instance
    assert producer(inst, procs, 1_500).wait(60) == 0
    side = sidecar(persist_db, inst, procs)
    wait_for(lambda: cursor(persist_db) == 1_499, what="first journal persisted")
    side.send_signal(signal.SIGTERM)
    assert side.wait(30) == 0
    # the daemon restarts: its new journal ring counts from 0 again
    os.unlink(f"/dev/shm/bot4d.{inst}.journal-0")
    assert producer(inst, procs, 700).wait(60) == 0
    ring = attach_ring(inst)
    sidecar(persist_db, inst, procs)
    wait_for(lambda: cursor(persist_db) == 2_199, what="second journal persisted after the first")
    assert_exactly_once(persist_db, 2_200)
    with psycopg.connect(persist_db) as c:
        assert c.execute("SELECT journal_id, seq_base FROM journal_cursor WHERE shard = 0").fetchone() == \
            (ring.segment.created_ns, 1_500)
    assert ring.slot_position(0) == 700
    ring.close()


def test_ring_partly_released_by_someone_else_is_not_guessed_at(persist_db, instance):
    inst, procs = instance
    assert producer(inst, procs, 500).wait(60) == 0
    ring = attach_ring(inst)
    w = Ring.attach(inst, "journal-0", readonly=False)
    w.open_slot(0, start_seq=100)  # another consumer took records 0..99 away
    side = sidecar(persist_db, inst, procs)
    assert side.wait(60) == 2
    assert "already released by someone else" in side.stderr.read()
    assert cursor(persist_db) == -1
    w.close(), ring.close()


def test_one_sidecar_drains_several_shards(persist_db, instance):
    inst, procs = instance
    sizes = {0: 4_000, 1: 2_500}
    for shard, n in sizes.items():
        p = subprocess.Popen([sys.executable, "-m", "bot4d.persist.synth", "--instance", inst, "--shard", str(shard),
                              "-n", str(n)], env=ENV, stdout=subprocess.DEVNULL)
        procs.append(p)
        assert p.wait(60) == 0
    side = subprocess.Popen([sys.executable, "-m", "bot4d.persist.main", "run", "--dsn", persist_db,
                             "--instance", inst, "--shards", "0-1", "--ring-wait", "60"], env=ENV,
                            stderr=subprocess.PIPE, text=True)
    procs.append(side)
    for shard, n in sizes.items():
        wait_for(lambda: cursor(persist_db, shard) == n - 1, what=f"shard {shard} persisted")
        assert_exactly_once(persist_db, n, shard)
    side.send_signal(signal.SIGTERM)
    assert side.wait(30) == 0


def test_second_sidecar_for_the_same_instance_refuses_to_start(persist_db, instance):
    inst, procs = instance
    assert producer(inst, procs, 200).wait(60) == 0
    first = sidecar(persist_db, inst, procs)
    wait_for(lambda: cursor(persist_db) == 199, what="first sidecar running")
    second = sidecar(persist_db, inst, procs)
    assert second.wait(30) == 2
    assert "bot4d.%s.persist" % inst in second.stderr.read()
    assert first.poll() is None
