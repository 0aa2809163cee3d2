"""Seqlock-published snapshot areas: N fixed-size records, each with its own version word.

For state that is overwritten in place and read by observers who want a consistent copy —
top of book per instrument, positions, risk state — without ever blocking the writer.

Layout of a ``snapshot`` segment's payload: ``seqs`` (int64, one 64-byte cache line per record:
word ``8*i`` is record i's version; separate lines so writers of different records never share
one) followed by ``records`` (``n`` records of the area's dtype), 64-byte aligned.

Protocol (one writer per record; any number of readers, read-only mappings included):

* writer: ``v = seqs[i]`` (its own), ``store_relaxed(seqs[i], v+1)`` (odd: write in progress),
  ``fence_release`` (the odd version is visible before any data store — on x86 stores are
  already ordered, the fence stops the compiler; on ARM it is ``dmb ish``), write the record,
  ``store_release(seqs[i], v+2)`` (the data is visible before the new even version).
* reader: ``v1 = load_acquire(seqs[i])``; if odd, a write is in progress: pause and retry;
  copy the record; ``fence_acquire`` (the copy's loads complete before the re-check);
  ``v2 = load(seqs[i])``; accept iff ``v1 == v2``. A writer that started in between changed
  the version first, so a torn copy is always detected and retried.

A writer killed mid-write leaves an odd version forever: readers give up after ``max_tries``
and report it (``read`` returns -1; :meth:`SnapshotArea.read` raises) instead of spinning.
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ipc.atomics import (
    copy_bytes, cpu_pause, fence_acquire, fence_release, load_acquire, load_relaxed,
    store_relaxed, store_release,
)
from ipc.segment import CACHE_LINE, Segment, SegmentError, dtype_from_json, dtype_to_json

CL = CACHE_LINE // 8
_J = dict(cache=True, nogil=True)


@numba.njit(**_J)
def write_begin(seqs, i):
    """Mark record ``i`` as being written (version becomes odd). Single writer per record."""
    v = load_relaxed(seqs, i * CL)
    store_relaxed(seqs, i * CL, v + 1)
    fence_release()


@numba.njit(**_J)
def write_end(seqs, i):
    """Publish record ``i`` (version becomes even again, release ordering)."""
    store_release(seqs, i * CL, load_relaxed(seqs, i * CL) + 1)


@numba.njit(**_J)
def write(records, seqs, i, src, j):
    """Publish ``src[j]`` as record ``i`` (same item size; C-contiguous arrays)."""
    isz = records.itemsize
    write_begin(seqs, i)
    copy_bytes(records, i * isz, src, j * isz, isz)
    write_end(seqs, i)


@numba.njit(**_J)
def read(records, seqs, i, dst, j, max_tries):
    """Consistent copy of record ``i`` into ``dst[j]``; returns its (even) version, or -1 if
    no consistent copy was obtained in ``max_tries`` attempts (writer stuck or dead mid-write)."""
    isz = records.itemsize
    for _ in range(max_tries):
        v1 = load_acquire(seqs, i * CL)
        if v1 & 1:
            cpu_pause()
            continue
        copy_bytes(dst, j * isz, records, i * isz, isz)
        fence_acquire()
        if load_relaxed(seqs, i * CL) == v1:
            return v1
        cpu_pause()
    return -1


@numba.njit(**_J)
def version(seqs, i):
    """Record ``i``'s current version (even = stable; it grows by 2 per write)."""
    return load_acquire(seqs, i * CL)


class SnapshotArea:
    """``n`` seqlock-protected records in a segment; kernels receive ``records`` and ``seqs``."""

    def __init__(self, seg: Segment) -> None:
        m = seg.meta
        if m.get("kind") != "snapshot":
            raise SegmentError(f"{seg.path}: is a {m.get('kind')!r} segment, not a snapshot area")
        try:
            self.dtype = dtype_from_json(m["dtype"])
            self.n = int(m["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise SegmentError(f"{seg.path}: snapshot description incomplete: {e!r}") from None
        self.segment = seg
        self.seqs: np.ndarray = seg.array(0, np.int64, self.n * CL)
        self.records: np.ndarray = seg.array(self.n * CACHE_LINE, self.dtype, self.n)

    @classmethod
    def create(cls, instance: str, name: str, dtype: Any, n: int, *,
               reclaim_dead: bool = False) -> "SnapshotArea":
        dt = np.dtype(dtype)
        if n < 1:
            raise ValueError(f"a snapshot area needs n >= 1 records, got {n}")
        meta = {"kind": "snapshot", "dtype": dtype_to_json(dt), "n": n}
        return cls(Segment.create(instance, name, n * CACHE_LINE + n * dt.itemsize, meta,
                                  reclaim_dead=reclaim_dead))

    @classmethod
    def attach(cls, instance: str, name: str, readonly: bool = True,
               dtype: Any = None) -> "SnapshotArea":
        seg = Segment.attach(instance, name, readonly=readonly, kind="snapshot")
        try:
            a = cls(seg)
        except SegmentError:
            seg.close()
            raise
        if dtype is not None and np.dtype(dtype) != a.dtype:
            seg.close()
            raise SegmentError(f"{seg.path}: records are {a.dtype}, expected {np.dtype(dtype)}")
        return a

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise IndexError(f"snapshot record {i} out of range 0..{self.n - 1}")

    def write(self, i: int, rec: Any) -> None:
        """Publish one record (a np.void of the area's dtype, or a 1-element array)."""
        self._check(i)
        src = np.ascontiguousarray(np.asarray(rec, dtype=self.dtype).reshape(-1)[:1])
        write(self.records, self.seqs, i, src, 0)

    def read(self, i: int, max_tries: int = 1_000_000) -> np.void:
        """A consistent copy of record ``i``; raises if the writer is stuck mid-write."""
        self._check(i)
        dst = np.empty(1, self.dtype)
        if read(self.records, self.seqs, i, dst, 0, max_tries) < 0:
            raise SegmentError(f"{self.segment.path}: record {i} is being written and never "
                               f"finished (writer dead mid-write?)")
        return dst[0]

    def close(self) -> None:
        self.records = self.seqs = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


def warmup() -> None:
    dt = np.dtype([("a", np.int64), ("b", np.int64)])
    recs, seqs, buf = np.zeros(2, dt), np.zeros(2 * CL, np.int64), np.zeros(1, dt)
    write(recs, seqs, 0, buf, 0)
    read(recs, seqs, 0, buf, 0, 10)
    version(seqs, 0)
