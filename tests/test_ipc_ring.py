"""ipc.ring in one process: policies, counters, gating slots, lapped readers, refusals."""
import glob
import os
import threading
import time
import uuid

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba.core.errors import TypingError

from ipc import ring as R
from ipc.loadgen import LOAD_DTYPE, fill, record_ok
from ipc.ring import Ring
from ipc.segment import SegmentError

pytestmark = pytest.mark.timeout(120)

QDT = np.dtype([("a", np.int64), ("b", np.int32), ("c", np.int8)], align=True)


@pytest.fixture
def inst():
    name = f"t{os.getpid()}{uuid.uuid4().hex[:6]}"
    yield name
    for p in glob.glob(f"/dev/shm/bot4d.{name}.*"):
        os.unlink(p)


def load(start, n):
    a = np.zeros(n, LOAD_DTYPE)
    fill(a, start, n)
    return a


def test_layout_cache_lines_and_alignment(inst):
    r = Ring.create(inst, "q", QDT, 16)
    assert r.records.ctypes.data % 64 == 0
    # producer cursor, producer counters and each slot on different 64-byte lines
    lines = {R.C_PROD // 8, R.C_FAILED // 8, (R.C_SLOT0 + R.S_POS) // 8}
    assert len(lines) == 3 and R.C_CAPACITY // 8 == 0
    assert r.ctrl.ctypes.data % 64 == 0
    m = Ring.attach(inst, "q", readonly=True, dtype=QDT)
    assert m.capacity == 16 and m.ring_kind == "queue" and m.dtype == QDT


def test_queue_fail_policy_counts_and_never_overwrites(inst):
    r = Ring.create(inst, "q", LOAD_DTYPE, 8, policy="fail")
    assert r.publish(load(0, 10)) == 8
    s = r.stats()
    assert (s["published"], s["failed"], s["full"], s["timeouts"]) == (8, 2, 1, 0)
    got = r.consume(0, 5)
    assert list(got["seq"]) == [0, 1, 2, 3, 4]
    assert r.publish(load(8, 10)) == 5       # only the 5 consumed places are reused
    got = r.consume(0, 100)
    assert list(got["seq"]) == [5, 6, 7] + list(range(8, 13))
    assert all(record_ok(x, x["seq"]) for x in got)
    assert r.stats()["failed"] == 7 and r.consume(0).size == 0


def test_queue_block_policy_times_out_then_resumes(inst):
    r = Ring.create(inst, "q", LOAD_DTYPE, 16, policy="block", timeout_ns=30_000_000, spin=100)
    assert r.publish(load(0, 16)) == 16
    assert r.publish(load(16, 4)) == 0       # consumer stopped: bounded wait, then give up
    s = r.stats()
    assert s["waits"] == 1 and s["timeouts"] == 1 and s["failed"] == 4
    assert s["wait_ns"] >= 30_000_000        # it did wait its timeout (not a perf assertion)
    # a consumer that comes back in the middle of a blocked publish lets it complete
    t = threading.Timer(0.005, lambda: r.consume(0, 16))
    t.start()
    assert r.publish(load(16, 4)) == 4
    t.join()
    assert r.stats()["timeouts"] == 1
    assert list(r.consume(0)["seq"]) == [16, 17, 18, 19]


def test_journal_gating_consumer_stops_producer_applies_policy_and_resumes(inst):
    j = Ring.create(inst, "j", LOAD_DTYPE, 32, kind="journal", n_gating=1, policy="fail")
    # the reserved slot protects events published before the sidecar attaches
    assert j.publish(load(0, 40)) == 32
    assert j.stats()["failed"] == 8
    side = Ring.attach(inst, "j")
    assert side.open_slot(0) == 0
    got = side.consume(0, 10)
    assert list(got["seq"]) == list(range(10))
    assert j.publish(load(32, 40)) == 10
    got = side.consume(0, 1000)
    assert list(got["seq"]) == list(range(10, 42))
    assert all(record_ok(x, x["seq"]) for x in got)


def test_journal_stamps_seq_and_sidecar_read_commit(inst):
    j = Ring.create(inst, "j", LOAD_DTYPE, 16, kind="journal")
    src = load(0, 5)
    src["seq"] = 999                          # whatever the producer left there: the ring stamps
    assert j.publish(src) == 5
    dst = np.zeros(8, LOAD_DTYPE)
    assert R.read_batch(j.records, j.ctrl, 0, 2, dst, 8) == 3
    assert list(dst["seq"][:3]) == [2, 3, 4]
    assert j.slot_position(0) == 0            # reading does not consume
    assert R.commit(j.ctrl, 0, 3) and j.slot_position(0) == 3
    assert not R.commit(j.ctrl, 0, 2)         # backwards
    assert not R.commit(j.ctrl, 0, 6)         # beyond the cursor
    assert R.read_batch(j.records, j.ctrl, 0, 1, dst, 8) == -1  # before the slot: unprotected
    with pytest.raises(SegmentError, match="cannot start at 1"):
        j.open_slot(0, start_seq=1)
    assert j.open_slot(0, start_seq=5) == 5


def test_non_gating_reader_is_told_it_was_lapped_and_resynchronises(inst):
    j = Ring.create(inst, "j", LOAD_DTYPE, 64, kind="journal", n_gating=0)
    mon = Ring.attach(inst, "j", readonly=True)
    rd = mon.reader(0)
    assert j.publish(load(0, 10)) == 10
    assert list(rd.read()["seq"]) == list(range(10))
    assert j.publish(load(10, 200)) == 200    # no gating consumer: the producer runs free
    dst = np.zeros(16, LOAD_DTYPE)
    ret = R.journal_read(mon.records, mon.ctrl, 10, dst, 16)
    assert ret < 0 and R.resync_seq(ret) == 210 - 32
    got = rd.read(1000)
    assert rd.laps == 1 and rd.missed == 178 - 10
    assert list(got["seq"]) == list(range(178, 210))
    assert all(record_ok(x, x["seq"]) for x in got)
    assert rd.read().size == 0
    assert j.publish(load(210, 3)) == 3
    assert list(rd.read()["seq"]) == [210, 211, 212]
    # a reader ahead of the producer just gets nothing
    assert R.journal_read(mon.records, mon.ctrl, 10_000, dst, 16) == 0


def test_register_release_and_dead_slots(inst):
    j = Ring.create(inst, "j", LOAD_DTYPE, 8, kind="journal", n_gating=2, policy="fail",
                    reserve_gating=False)
    assert j.publish(load(0, 20)) == 20       # no active slot: nothing gates
    s0 = j.register()
    assert s0 == 0 and j.slot_position(0) == 20
    assert j.register() == 1
    with pytest.raises(SegmentError, match="all 2 gating slots are taken"):
        j.register()
    assert j.publish(load(20, 10)) == 8       # gated by both
    j.release_slot(1)
    assert list(j.consume(0, 100)["seq"]) == list(range(20, 28))
    assert j.publish(load(28, 8)) == 8        # slot 1 released: only slot 0 gates
    # a slot whose consumer process died is released by release_dead_slots, a live one is not
    j.ctrl[R.C_SLOT0 + R.S_PID] = os.getpid()
    assert j.release_dead_slots() == []
    j.ctrl[R.C_SLOT0 + R.S_START] += 1        # "another process" with our pid: dead
    assert j.release_dead_slots() == [0]
    assert j.publish(load(36, 20)) == 20


def test_registration_races_a_free_running_producer(inst):
    # the registrant's start position must never be overwritten before it consumes it
    j = Ring.create(inst, "j", LOAD_DTYPE, 256, kind="journal", n_gating=1, policy="block",
                    reserve_gating=False, timeout_ns=10_000_000_000)
    stop = threading.Event()
    src = load(0, 64)

    def produce():
        while not stop.is_set():
            R.publish_batch(j.records, j.ctrl, src, 64)

    t = threading.Thread(target=produce)
    t.start()
    try:
        for _ in range(50):
            slot = j.register()
            pos = j.slot_position(slot)
            got = j.consume(slot, 300)
            assert got.size == 0 or got["seq"][0] == pos
            assert (np.diff(got["seq"]) == 1).all()
            j.release_slot(slot)
    finally:
        stop.set()
        t.join()


def test_refusals(inst):
    with pytest.raises(ValueError, match="power of two"):
        Ring.create(inst, "x", QDT, 100)
    with pytest.raises(ValueError, match="int64 field 'seq'"):
        Ring.create(inst, "x", QDT, 16, kind="journal")
    with pytest.raises(ValueError, match="exactly one consumer"):
        Ring.create(inst, "x", QDT, 16, n_gating=2)
    with pytest.raises(ValueError, match="kind must be"):
        Ring.create(inst, "x", QDT, 16, kind="stack")
    with pytest.raises(ValueError, match="policy must be"):
        Ring.create(inst, "x", QDT, 16, policy="overwrite")
    with pytest.raises(ValueError, match="structured"):
        Ring.create(inst, "x", np.int64, 16)
    r = Ring.create(inst, "q", QDT, 16)
    with pytest.raises(TypeError, match="cannot go into a ring"):
        r.publish(np.zeros(3, LOAD_DTYPE))
    assert R.publish_batch(r.records, r.ctrl, np.zeros(3, LOAD_DTYPE), 3) == -1
    assert R.consume_batch(r.records, r.ctrl, 0, np.zeros(3, LOAD_DTYPE), 3) == -1
    with pytest.raises(SegmentError, match="ring records are"):
        Ring.attach(inst, "q", dtype=LOAD_DTYPE)
    with pytest.raises(ValueError, match="slot 3 out of range"):
        r.consume(3)
    with pytest.raises(SegmentError, match="need a journal"):
        r.reader()
    assert r.stats()["published"] == 0


def test_read_only_monitor_cannot_publish_or_consume(inst):
    Ring.create(inst, "q", LOAD_DTYPE, 16)
    mon = Ring.attach(inst, "q", readonly=True)
    with pytest.raises(ValueError, match="read-only"):
        mon.records[0] = mon.records[1]
    with pytest.raises(TypingError, match="read-only"):
        R.publish_batch(mon.records, mon.ctrl, load(0, 1), 1)
    with pytest.raises(TypingError, match="read-only"):
        R.consume_batch(mon.records, mon.ctrl, 0, np.zeros(1, LOAD_DTYPE), 1)
    assert mon.cursor == 0 and mon.stats()["failed"] == 0
    for call in (lambda: mon.publish(load(0, 1)), lambda: mon.consume(0), mon.register,
                 lambda: mon.open_slot(0)):
        with pytest.raises(SegmentError, match="through a read-only mapping"):
            call()


def test_attach_refuses_inconsistent_control_block(inst):
    r = Ring.create(inst, "q", LOAD_DTYPE, 16)
    r.ctrl[R.C_MASK] = 3                          # corrupt: mask no longer capacity - 1
    with pytest.raises(SegmentError, match="control block disagrees"):
        Ring.attach(inst, "q")


def test_warmup_for_a_real_record_dtype():
    dt = np.dtype([("seq", np.int64), ("px", np.int64), ("side", np.int8)], align=True)
    R.warmup_dtype(dt)                            # compiles writable and read-only variants
    sigs = [sig for sig in R.journal_read.signatures if sig[0].dtype.size == dt.itemsize]
    assert {sig[0].mutable for sig in sigs} == {True, False}
    assert any(sig[0].dtype.size == 24 for sig in R.publish_batch.signatures)


@settings(max_examples=40, deadline=None)
@given(cap_log=st.integers(1, 5), kind=st.sampled_from(["queue", "journal"]),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 70)), min_size=1, max_size=40))
def test_ring_matches_a_fifo_model_for_any_batch_sizes(cap_log, kind, ops):
    # arbitrary publish/consume batch sizes around odd capacities exercise the wrap-split copies
    inst = f"h{os.getpid()}{uuid.uuid4().hex[:6]}"
    cap = 1 << cap_log
    r = Ring.create(inst, "m", LOAD_DTYPE, cap, kind=kind, policy="fail")
    try:
        next_pub = next_con = 0
        for is_pub, k in ops:
            if is_pub:
                room = cap - (next_pub - next_con)
                got = r.publish(load(next_pub, k))
                assert got == min(k, room)
                next_pub += got
            else:
                out = r.consume(0, k)
                assert out.size == min(k, next_pub - next_con)
                assert list(out["seq"]) == list(range(next_con, next_con + out.size))
                assert all(record_ok(x, x["seq"]) for x in out)
                next_con += out.size
        assert r.cursor == next_pub and r.slot_position(0) == next_con
    finally:
        r.unlink()
