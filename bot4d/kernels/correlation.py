"""Rolling return correlations between instruments, for risk's portfolio correlation cap.

The caller samples every instrument's mid at a fixed cadence (e.g. once a second of injected
time) and pushes the vector with :func:`corr_push`; the kernel turns it into simple returns
``(mid - prev) / prev`` and keeps the last ``window`` rows in a ring. :func:`corr_compute` fills
the n x n Pearson correlation matrix over the rows where both instruments have a return (NaN
where fewer than ``min_samples`` such rows exist, or a series is flat). Correlations are
statistics of returns, so float64 is fine here; prices stay int64.

Cost: a push is O(n); a full recompute is O(window * n^2) and runs at the sampling cadence, not
per order. Risk reads the matrix only for orders that open exposure.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

CR_COUNT = 0
CR_HEAD = 1
CR_N = 2


def make_correlation(n_instruments: int, window: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ring [window, n] float64, meta int64, last mid int64 [n], corr [n, n] float64 all NaN)."""
    if n_instruments <= 0 or window < 3:
        raise ValueError("need n_instruments >= 1 and window >= 3")
    ring = np.full((window, n_instruments), np.nan)
    meta = np.zeros(CR_N, np.int64)
    last = np.zeros(n_instruments, np.int64)
    corr = np.full((n_instruments, n_instruments), np.nan)
    return ring, meta, last, corr


@nb.njit(cache=True, nogil=True)
def corr_push(ring, meta, last, mids):
    """Append one sample of mids (price units, 0 = none) as a row of returns."""
    h = meta[CR_HEAD]
    n = mids.shape[0]
    for j in range(n):
        m = mids[j]
        p = last[j]
        ring[h, j] = (m - p) / p if (m > 0 and p > 0) else np.nan
        if m > 0:
            last[j] = m
    meta[CR_HEAD] = (h + 1) % ring.shape[0]
    if meta[CR_COUNT] < ring.shape[0]:
        meta[CR_COUNT] += 1


@nb.njit(cache=True, nogil=True)
def corr_compute(ring, meta, out, min_samples):
    """Fill ``out`` with pairwise Pearson correlations over the ring (two-pass per pair)."""
    rows = meta[CR_COUNT]
    n = ring.shape[1]
    for a in range(n):
        out[a, a] = 1.0
        for b in range(a + 1, n):
            cnt = 0
            sa = 0.0
            sb = 0.0
            for r in range(rows):
                x = ring[r, a]
                y = ring[r, b]
                if x == x and y == y:
                    cnt += 1
                    sa += x
                    sb += y
            c = np.nan
            if cnt >= min_samples:
                ma = sa / cnt
                mb = sb / cnt
                sab = 0.0
                saa = 0.0
                sbb = 0.0
                for r in range(rows):
                    x = ring[r, a]
                    y = ring[r, b]
                    if x == x and y == y:
                        dx = x - ma
                        dy = y - mb
                        sab += dx * dy
                        saa += dx * dx
                        sbb += dy * dy
                if saa > 0.0 and sbb > 0.0:
                    c = sab / math.sqrt(saa * sbb)
                    if c > 1.0:
                        c = 1.0
                    elif c < -1.0:
                        c = -1.0
            out[a, b] = c
            out[b, a] = c


def warmup() -> None:
    ring, meta, last, corr = make_correlation(2, window=4)
    for m in ((100, 200), (101, 202), (103, 205), (102, 204)):
        corr_push(ring, meta, last, np.array(m, np.int64))
    corr_compute(ring, meta, corr, 2)
