"""Top-of-book publication through a real seqlock snapshot area in /dev/shm, read by real
processes with read-only mappings: values, what gets republished, and no torn snapshot under
a concurrently publishing writer."""
from __future__ import annotations

import glob
import mmap
import multiprocessing as mp
import os
import time
import uuid

import numba
import numpy as np
import pytest

from bot4d.kernels import book as bk
from bot4d.kernels import book_publish as bp
from bot4d.records import MD_FLAG_FRAME_END, MD_LEVEL, MD_UPDATE_DTYPE, SIDE_ASK, SIDE_BID
from ipc import seqlock as SL
from ipc.atomics import load_acquire, store_release
from ipc.seqlock import SnapshotArea

FORK = mp.get_context("fork")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def inst():
    name = f"tb{os.getpid()}{uuid.uuid4().hex[:6]}"
    yield name
    for p in glob.glob(f"/dev/shm/bot4d.{name}.*"):
        os.unlink(p)


def levels(rows: list[tuple]) -> np.ndarray:
    """rows of (instrument, side, price, qty, venue_seq, recv_ts)."""
    u = np.zeros(len(rows), MD_UPDATE_DTYPE)
    u["kind"] = MD_LEVEL
    for k, (i, s, p, q, seq, ts) in enumerate(rows):
        u[k]["instrument"], u[k]["side"], u[k]["price"], u[k]["qty"] = i, s, p, q
        u[k]["venue_seq"], u[k]["recv_ts_ns"] = seq, ts
    return u


def _read_in_child(instance: str, instrument: int, conn) -> None:
    try:
        conn.send(tuple(int(x) for x in bp.read_top(instance, instrument).tolist()))
    except Exception as e:  # report, never hang the parent
        conn.send(repr(e))
    conn.close()


def read_from_other_process(instance: str, instrument: int) -> tuple:
    a, b = FORK.Pipe()
    p = FORK.Process(target=_read_in_child, args=(instance, instrument, b))
    p.start()
    got = a.recv()
    p.join(10)
    assert isinstance(got, tuple), got
    return got


def test_published_top_read_by_another_process(inst: str) -> None:
    books = bk.make_books(3, 16)
    books.set_limits(2, 1000, 1000)
    pub = bp.TopOfBookPublisher.create(books, inst)
    try:
        assert read_from_other_process(inst, 0) == (0,) * 10  # valid empty record from the start
        err = pub.apply(levels([(1, SIDE_BID, 100, 5, 7, 111), (1, SIDE_BID, 99, 1, 8, 112),
                                (1, SIDE_ASK, 103, 2, 9, 113)]))
        assert err == 0
        want = (100, 5, 103, 2, 2, 1, 9, 0, 113, 3)
        assert read_from_other_process(inst, 1) == want
        assert tuple(pub.area.read(1).tolist()) == want
        v0 = SL.version(pub.area.seqs, 0)
        v1 = SL.version(pub.area.seqs, 1)
        # a refused record: the book is unchanged but its error is published
        assert pub.apply(levels([(2, SIDE_BID, 5000, 1, 10, 114)])) == bk.ERR_BAD_PRICE
        assert read_from_other_process(inst, 2)[7] == bk.ERR_BAD_PRICE
        # only touched instruments are republished
        assert SL.version(pub.area.seqs, 0) == v0 and SL.version(pub.area.seqs, 1) == v1
        pub.apply(levels([(1, SIDE_BID, 100, 0, 11, 115)]))
        assert SL.version(pub.area.seqs, 1) == v1 + 2
        assert read_from_other_process(inst, 1)[:4] == (99, 1, 103, 2)
    finally:
        pub.close()
        pub.unlink()


def test_area_shape_is_checked(inst: str) -> None:
    books = bk.make_books(4, 8)
    small = SnapshotArea.create(inst, "small", bp.TOP_OF_BOOK_DTYPE, 2)
    other = SnapshotArea.create(inst, "other", np.dtype([("x", np.int64)]), 8)
    try:
        with pytest.raises(ValueError):
            bp.TopOfBookPublisher(books, small)
        with pytest.raises(ValueError):
            bp.TopOfBookPublisher(books, other)
    finally:
        small.close()
        other.close()


@numba.njit(nogil=True)
def _writer(levels_, state, stats, scratch, records, seqs, frame, k0, k1):
    # one venue frame (a bid and an ask record) per batch, each batch published; the frame is
    # rewritten in place so a long run needs no big array
    for k in range(k0, k1 + 1):
        for j in range(2):
            frame[j].qty = k
            frame[j].venue_seq = k
            frame[j].recv_ts_ns = 1000 + k
        bp.apply_and_publish(levels_, state, stats, scratch, records, seqs, frame, 0, 2)


@numba.njit(nogil=True)
def _check_reads(records, seqs, dst, ctl, max_reads):
    """Read record 0 until ctl[0] says stop; ctl[1] = reads done, ctl[2] = versions seen.
    Returns (reads, torn, versions seen)."""
    torn = 0
    seen = 0
    last = -1
    r = 0
    while r < max_reads and load_acquire(ctl, 0) == 0:
        r += 1
        v = SL.read(records, seqs, 0, dst, 0, 1_000_000)
        if v < 0:
            continue
        d = dst[0]
        k = d.last_venue_seq
        if k != 0 and not (d.bid_qty == k and d.ask_qty == k and d.level_updates == 2 * k
                           and d.bid_px == 100 and d.ask_px == 101 and d.recv_ts_ns == 1000 + k):
            torn += 1
        if v != last:
            seen += 1
            last = v
        store_release(ctl, 1, r)
        store_release(ctl, 2, seen)
    return r, torn, seen


def _reader(instance: str, ctl: np.ndarray, conn) -> None:
    area = SnapshotArea.attach(instance, bp.AREA_NAME, readonly=True, dtype=bp.TOP_OF_BOOK_DTYPE)
    dst = np.zeros(1, bp.TOP_OF_BOOK_DTYPE)
    conn.send(_check_reads(area.records, area.seqs, dst, ctl, 1 << 40))
    conn.close()


def test_no_torn_top_of_book_under_a_concurrent_writer(inst: str) -> None:
    """Every consistent snapshot satisfies bid_qty == ask_qty == last_venue_seq (and friends); a
    record read half before and half after a publish would break it. The writer keeps going
    until the reader (another process, read-only mapping) has seen thousands of versions."""
    frame = np.zeros(2, MD_UPDATE_DTYPE)
    frame["kind"] = MD_LEVEL
    frame["side"] = [SIDE_BID, SIDE_ASK]
    frame["price"] = [100, 101]
    frame["flags"][1] = MD_FLAG_FRAME_END
    books = bk.make_books(1, 8)
    pub = bp.TopOfBookPublisher.create(books, inst)
    # control words shared with the forked reader (anonymous shared mapping)
    ctl_map = mmap.mmap(-1, 64)
    ctl = np.frombuffer(ctl_map, np.int64)
    try:
        # compile both kernels before the race starts
        warm = bk.make_books(1, 8)
        _writer(warm.levels, warm.state, warm.stats, warm.scratch,
                np.zeros(1, bp.TOP_OF_BOOK_DTYPE), np.zeros(SL.CL, np.int64), frame.copy(), 1, 1)
        ctl[0] = 1
        _check_reads(pub.area.records, pub.area.seqs, np.zeros(1, bp.TOP_OF_BOOK_DTYPE), ctl, 1)
        ctl[:] = 0
        a, b = FORK.Pipe()
        p = FORK.Process(target=_reader, args=(inst, ctl, b))
        p.start()
        deadline = time.monotonic() + 60
        while load_acquire(ctl, 1) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        k = 0
        while load_acquire(ctl, 2) < 2000 and time.monotonic() < deadline:
            _writer(books.levels, books.state, books.stats, books.scratch, pub.area.records,
                    pub.area.seqs, frame, k + 1, k + 100_000)
            k += 100_000
        store_release(ctl, 0, 1)
        assert a.poll(30), "reader did not stop"
        reads, torn, seen = a.recv()
        p.join(10)
        assert torn == 0
        assert seen >= 2000, seen  # it did observe the writer at work, many times
        assert tuple(pub.area.read(0).tolist()) == (100, k, 101, k, 1, 1, k, 0, 1000 + k, 2 * k)
    finally:
        pub.close()
        pub.unlink()
