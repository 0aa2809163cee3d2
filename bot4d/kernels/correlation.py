"""Rolling return correlations between instruments, for risk's portfolio correlation cap.

The caller samples its instruments' mids at a fixed cadence (``bot4d.daemon.guards``: every
``risk.correlation_sample_ms``) and pushes the vector with :func:`corr_push`; the kernel turns it
into simple returns ``(mid - prev) / prev`` and keeps the last ``window`` rows in a ring, one column
per instrument of ``cols`` (global instrument ids: a shard keeps only its own instruments).
:func:`corr_compute` fills the Pearson correlations of every pair of ``cols`` into the global
n x n matrix risk reads (NaN where fewer than ``min_samples`` rows have both returns, or a series
is flat). Correlations are statistics of returns, so float64 is fine here; prices stay int64.

Cost: a push is O(m) for m columns; a full recompute is O(window * m^2) and runs at the sampling
cadence, never per order. Risk reads the matrix only for orders that open exposure.
"""
from __future__ import annotations

import math

import numpy as np

from bot4d.jitcache import kernel

CR_COUNT = 0
CR_HEAD = 1
CR_N = 2


def make_correlation(n_instruments: int, window: int = 256, cols: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ring [window, len(cols)] float64, meta int64, last mid int64 [len(cols)],
    corr [n, n] float64 all NaN). ``cols`` defaults to every instrument."""
    if n_instruments <= 0 or window < 3:
        raise ValueError("need n_instruments >= 1 and window >= 3")
    m = n_instruments if cols is None else len(cols)
    ring = np.full((window, m), np.nan)
    meta = np.zeros(CR_N, np.int64)
    last = np.zeros(m, np.int64)
    corr = np.full((n_instruments, n_instruments), np.nan)
    return ring, meta, last, corr


@kernel
def corr_push(ring, meta, last, mids, cols):
    """Append one sample as a row of returns: column k is instrument ``cols[k]``, whose mid is
    ``mids[cols[k]]`` (price units, 0 = none: no return in this row)."""
    h = meta[CR_HEAD]
    for k in range(cols.shape[0]):
        m = mids[cols[k]]
        p = last[k]
        ring[h, k] = (m - p) / p if (m > 0 and p > 0) else np.nan
        if m > 0:
            last[k] = m
    meta[CR_HEAD] = (h + 1) % ring.shape[0]
    if meta[CR_COUNT] < ring.shape[0]:
        meta[CR_COUNT] += 1


@kernel
def corr_compute(ring, meta, out, min_samples, cols):
    """Fill ``out[cols[a], cols[b]]`` with pairwise Pearson correlations over the ring
    (two-pass per pair)."""
    rows = meta[CR_COUNT]
    n = cols.shape[0]
    for a in range(n):
        out[cols[a], cols[a]] = 1.0
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
            out[cols[a], cols[b]] = c
            out[cols[b], cols[a]] = c


def warmup() -> None:
    cols = np.arange(2, dtype=np.int64)
    ring, meta, last, corr = make_correlation(2, window=4, cols=cols)
    for m in ((100, 200), (101, 202), (103, 205), (102, 204)):
        corr_push(ring, meta, last, np.array(m, np.int64), cols)
    corr_compute(ring, meta, corr, 2, cols)
