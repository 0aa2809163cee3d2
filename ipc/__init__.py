"""Shared-memory contract between the bot4d daemon, its sidecar and monitors.

This package imports nothing of ``bot4d``: monitors and the sidecar depend on it alone.

* :mod:`ipc.segment`   named, versioned, self-describing segments in /dev/shm (owner, attach,
  read-only monitors, dead-owner detection and reclaim)
* :mod:`ipc.ring`      single-producer queue and journal rings of structured records
* :mod:`ipc.seqlock`   seqlock-published snapshot areas
* :mod:`ipc.counters`  single-writer int64 counters
* :mod:`ipc.histogram` HDR-style latency histograms
* :mod:`ipc.atomics`   acquire/release loads and stores, fences, RMW, pause, clocks for numba

Memory ordering is argued in each module's docstring and in docs/ipc.md.
"""
from __future__ import annotations

from ipc.segment import Segment, SegmentError, SegmentExists, owner_alive, reclaim_if_dead

__all__ = ["Segment", "SegmentError", "SegmentExists", "owner_alive", "reclaim_if_dead",
           "warmup"]


def warmup() -> None:
    """Compile every ipc kernel (numba ``cache=True``) on tiny process-local inputs."""
    from ipc import atomics, counters, histogram, loadgen, ring, seqlock

    for m in (atomics, ring, seqlock, counters, histogram, loadgen):
        m.warmup()
