"""Counters area: named int64 counters, each written by a single writer, read by observers.

Each counter sits on its own 64-byte cache line (word ``8*i``) so that writers of different
counters never share a line, and a monitor polling one counter does not slow the writer of
another. Single writer per counter means no read-modify-write atomics are needed: the writer
``load_relaxed`` + ``store_release``-es, observers ``load_acquire``; an aligned 8-byte store is
never torn (x86-64 and ARMv8), so a reader sees either the old or the new value.
"""
from __future__ import annotations

import numba
import numpy as np

from ipc.atomics import load_acquire, load_relaxed, store_release
from ipc.segment import CACHE_LINE, Segment, SegmentError

CL = CACHE_LINE // 8
_J = dict(cache=True, nogil=True)


@numba.njit(**_J)
def counter_add(c, i, v):
    """Counter ``i`` += ``v`` (its single writer only)."""
    store_release(c, i * CL, load_relaxed(c, i * CL) + v)


@numba.njit(**_J)
def counter_set(c, i, v):
    store_release(c, i * CL, v)


@numba.njit(**_J)
def counter_get(c, i):
    return load_acquire(c, i * CL)


class Counters:
    """Named counters in a segment; kernels receive ``values`` and use counter_* with an index."""

    def __init__(self, seg: Segment) -> None:
        if seg.meta.get("kind") != "counters":
            raise SegmentError(f"{seg.path}: is a {seg.meta.get('kind')!r} segment, not counters")
        try:
            self.names: list[str] = [str(n) for n in seg.meta["names"]]
        except (KeyError, TypeError) as e:
            raise SegmentError(f"{seg.path}: counters description incomplete: {e!r}") from None
        self.segment = seg
        self.values: np.ndarray = seg.array(0, np.int64, len(self.names) * CL)
        self._index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def create(cls, instance: str, name: str, names: list[str], *,
               reclaim_dead: bool = False) -> "Counters":
        if not names or len(set(names)) != len(names):
            raise ValueError("counter names must be a non-empty list without duplicates")
        seg = Segment.create(instance, name, len(names) * CACHE_LINE,
                             {"kind": "counters", "names": list(names)}, reclaim_dead=reclaim_dead)
        return cls(seg)

    @classmethod
    def attach(cls, instance: str, name: str, readonly: bool = True) -> "Counters":
        seg = Segment.attach(instance, name, readonly=readonly, kind="counters")
        try:
            return cls(seg)
        except SegmentError:
            seg.close()
            raise

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no counter {name!r}; known: {self.names}") from None

    def add(self, name: str, v: int = 1) -> None:
        counter_add(self.values, self.index(name), v)

    def set(self, name: str, v: int) -> None:
        counter_set(self.values, self.index(name), v)

    def get(self, name: str) -> int:
        return int(counter_get(self.values, self.index(name)))

    def snapshot(self) -> dict[str, int]:
        return {n: int(counter_get(self.values, i)) for i, n in enumerate(self.names)}

    def close(self) -> None:
        self.values = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


def warmup() -> None:
    c = np.zeros(2 * CL, np.int64)
    counter_add(c, 1, 1)
    counter_set(c, 0, 1)
    counter_get(c, 1)
