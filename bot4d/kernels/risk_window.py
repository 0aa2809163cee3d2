"""Sliding-window event counters stored in plain int64 arrays (shared by breakers and kill switch).

A window of ``nb`` buckets, each ``width`` ns of injected time, lives at ``a[base:base+2*nb]``:
the bucket epochs (``now // width``) then the counts. A bucket whose epoch is older than the last
``nb`` epochs counts as empty, so the window needs no timer and no clearing pass: the sum covers
between ``(nb-1)*width`` and ``nb*width`` ns of history.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from bot4d.jitcache import kernel


@nb.njit(cache=True, nogil=True, inline="always")
def win_add(a: np.ndarray, base: int, nbk: int, width: int, now_ns: int, n: int) -> None:
    ep = now_ns // width
    s = ep % nbk
    if a[base + s] != ep:
        a[base + s] = ep
        a[base + nbk + s] = 0
    a[base + nbk + s] += n


@nb.njit(cache=True, nogil=True, inline="always")
def win_sum(a: np.ndarray, base: int, nbk: int, width: int, now_ns: int) -> int:
    ep = now_ns // width
    tot = 0
    for s in range(nbk):
        e = a[base + s]
        if ep - nbk < e <= ep:
            tot += a[base + nbk + s]
    return tot


@kernel
def win_clear(a: np.ndarray, base: int, nbk: int) -> None:
    for s in range(nbk):
        a[base + s] = -1
        a[base + nbk + s] = 0
