"""Seqlock snapshots and counters across processes: a reader never returns a torn snapshot."""
import glob
import multiprocessing as mp
import os
import time
import uuid

import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

from ipc import counters as C
from ipc.atomics import monotonic_ns
from ipc import seqlock as SL
from ipc.counters import Counters
from ipc.segment import SegmentError
from ipc.seqlock import SnapshotArea

FORK = mp.get_context("fork")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def inst():
    name = f"t{os.getpid()}{uuid.uuid4().hex[:6]}"
    yield name
    for p in glob.glob(f"/dev/shm/bot4d.{name}.*"):
        os.unlink(p)


def wide(nfields):
    return np.dtype([(f"f{k}", np.int64) for k in range(nfields)])


@numba.njit(nogil=True)
def _hammer(records, seqs, n_rec, iters):
    # every field of a written record equals the same counter value
    for v in range(1, iters + 1):
        i = v % n_rec
        SL.write_begin(seqs, i)
        w = records[i:i + 1].view(np.int64)
        for k in range(w.shape[0]):
            w[k] = v
        SL.write_end(seqs, i)
    return iters


@numba.njit(nogil=True)
def _check_reads(records, seqs, n_rec, dst, reads, want_changes, max_ns):
    """Read until ``reads`` reads and ``want_changes`` value changes (or ``max_ns``).
    Returns (torn, changes seen, starved reads, reads done)."""
    torn = 0
    changes = 0
    failed = 0
    last = -1
    d = dst[0:1].view(np.int64)
    t_end = monotonic_ns() + max_ns
    r = 0
    while r < reads or (changes < want_changes and monotonic_ns() < t_end):
        i = r % n_rec
        r += 1
        if SL.read(records, seqs, i, dst, 0, 1_000_000) < 0:
            failed += 1
            continue
        v0 = d[0]
        for k in range(1, d.shape[0]):
            if d[k] != v0:
                torn += 1
                break
        if v0 != last:
            changes += 1
            last = v0
    return torn, changes, failed, r


@numba.njit(nogil=True)
def _naive_reads(records, n_rec, dst, reads):
    torn = 0
    d = dst[0:1].view(np.int64)
    for r in range(reads):
        dst[0] = records[r % n_rec]
        for k in range(1, d.shape[0]):
            if d[k] != d[0]:
                torn += 1
                break
    return torn


def _writer(inst, name, ready, iters):
    a = SnapshotArea.attach(inst, name, readonly=False)
    ready.set()
    _hammer(a.records, a.seqs, a.n, iters)


@pytest.mark.parametrize("nfields,n_rec", [(8, 1), (32, 4)])
def test_seqlock_reader_never_returns_torn_snapshot_under_hammering_writer(inst, nfields, n_rec):
    dt = wide(nfields)
    SnapshotArea.create(inst, "s", dt, n_rec)
    mon = SnapshotArea.attach(inst, "s", readonly=True, dtype=dt)
    dst = np.zeros(1, dt)
    _check_reads(mon.records, mon.seqs, n_rec, dst, 10, 0, 0)  # compile before the writer
    _naive_reads(mon.records, n_rec, dst, 10)
    _hammer(np.zeros(n_rec, dt), np.zeros(8 * n_rec, np.int64), n_rec, 1)  # compile before fork
    ready = FORK.Event()
    p = FORK.Process(target=_writer, args=(inst, "s", ready, 1 << 60))  # until killed
    p.start()
    try:
        assert ready.wait(60)
        t_end = time.monotonic() + 30
        while SL.version(mon.seqs, 0) < 1000 and time.monotonic() < t_end:
            time.sleep(0.001)
        # rounds until the reads have raced the writer enough: on a busy machine (the suite runs on
        # both cores) reader and writer share a core and meet less often per round
        torn = changes = failed = reads = 0
        t_end = time.monotonic() + 30
        while changes < 100 and time.monotonic() < t_end:
            t, c, f, r = _check_reads(mon.records, mon.seqs, n_rec, dst, 300_000, 2_000, 8_000_000_000)
            torn, changes, failed, reads = torn + t, changes + c, failed + f, reads + r
        naive = _naive_reads(mon.records, n_rec, dst, 300_000)
        writer_running = p.is_alive()
    finally:
        p.kill()
        p.join(10)
    assert torn == 0
    # a writer that never pauses can starve a reader now and then (seqlocks favour the writer):
    # that is a retry, never a torn copy
    assert failed < reads // 10
    assert changes >= 100 and writer_running   # the reads really raced the writer
    print(f"seqlock torn=0 over {changes} changes ({failed} starved reads); "
          f"naive copy torn {naive} times")


def test_seqlock_python_api_and_stuck_writer(inst):
    dt = np.dtype([("bid", np.int64), ("ask", np.int64), ("ts", np.int64)])
    a = SnapshotArea.create(inst, "bbo", dt, 3)
    mon = SnapshotArea.attach(inst, "bbo")
    rec = np.zeros(1, dt)[0]
    rec["bid"], rec["ask"], rec["ts"] = 100, 101, 7
    a.write(2, rec)
    got = mon.read(2)
    assert (got["bid"], got["ask"], got["ts"]) == (100, 101, 7)
    assert SL.version(mon.seqs, 2) == 2 and SL.version(mon.seqs, 0) == 0
    with pytest.raises(IndexError):
        mon.read(3)
    with pytest.raises(TypingError, match="read-only"):
        SL.write(mon.records, mon.seqs, 0, np.zeros(1, dt), 0)
    with pytest.raises(SegmentError, match="records are"):
        SnapshotArea.attach(inst, "bbo", dtype=np.dtype([("x", np.int64)]))
    SL.write_begin(a.seqs, 1)              # a writer that died mid-write
    with pytest.raises(SegmentError, match="never finished"):
        mon.read(1, max_tries=1000)
    SL.write_end(a.seqs, 1)
    assert mon.read(1)["bid"] == 0


def _count(inst, n):
    c = Counters.attach(inst, "c", readonly=False)
    C.counter_add(c.values, 0, 0)
    for _ in range(n):
        C.counter_add(c.values, 1, 2)


def test_counters_single_writer_other_process(inst):
    c = Counters.create(inst, "c", ["events", "bytes", "errors"])
    assert c.values.ctypes.data % 64 == 0
    c.add("events", 3)
    p = FORK.Process(target=_count, args=(inst, 1000))
    p.start()
    p.join(60)
    mon = Counters.attach(inst, "c")
    assert mon.snapshot() == {"events": 3, "bytes": 2000, "errors": 0}
    assert mon.get("bytes") == 2000
    with pytest.raises(KeyError, match="no counter 'nope'"):
        mon.get("nope")
    with pytest.raises(TypingError, match="read-only"):
        C.counter_add(mon.values, 0, 1)
    with pytest.raises(ValueError, match="duplicates"):
        Counters.create(inst, "d", ["a", "a"])
