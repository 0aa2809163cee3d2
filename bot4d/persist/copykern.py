"""numba kernels that write binary-COPY tuples column by column straight into one byte buffer.

Same bytes as ``copybin.encode`` (tests check both against each other, and copybin's against
PostgreSQL): a tuple is int16 field count, then per field int32 length + big-endian value;
NUMERIC is the fixed 10-digit form described in ``copybin``. Doing it in one pass per column with
no temporaries cut the sidecar's client CPU per event several times over (numpy needed a dozen
temporary arrays per NUMERIC column).
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel

PG_EPOCH_NS = 946_684_800 * 1_000_000_000
NUMERIC_BYTES = 28  # 4 header words + 10 digits, int16 each


@helper
def _be(out, p, v, width):
    """Store the low ``width`` bytes of ``v`` big-endian at ``out[p:]``."""
    for b in range(width):
        out[p + b] = (v >> (8 * (width - 1 - b))) & 0xFF


@kernel
def put_count(out, stride, nfields, n):
    for i in range(n):
        _be(out, i * stride, nfields, 2)


@kernel
def put_int(out, stride, off, width, vals, n):
    """Integers of any numpy int type as big-endian ``width``-byte fields (caller checks range)."""
    for i in range(n):
        p = i * stride + off
        _be(out, p, width, 4)
        _be(out, p + 4, np.int64(vals[i]), width)


@kernel
def put_ts(out, stride, off, ts_ns, n):
    """timestamptz from Unix ns: µs since 2000-01-01, floor."""
    for i in range(n):
        p = i * stride + off
        _be(out, p, 8, 4)
        d = ts_ns[i] - PG_EPOCH_NS
        us = d // 1000  # numba's // on ints floors like Python's
        _be(out, p + 4, us, 8)


@kernel
def put_numeric(out, stride, off, units, scales, idx, n):
    """NUMERIC ``units[i] / 10**scales[idx[i]]``, exactly, in the fixed 10-digit binary form."""
    for i in range(n):
        p = i * stride + off
        _be(out, p, NUMERIC_BYTES, 4)
        u = np.int64(units[i])
        s = np.int64(scales[idx[i]])
        neg = u < 0
        # |INT64_MIN| does not fit in int64: work in uint64
        mag = np.uint64(-(u + 1)) + np.uint64(1) if neg else np.uint64(u)
        p10 = np.uint64(1)
        for _ in range(s):
            p10 *= np.uint64(10)
        ip = mag // p10
        frac = mag % p10
        # frac has s decimals: scale to 20 decimals as hi (first 10) and lo (next 10)
        if s <= 10:
            m = np.uint64(1)
            for _ in range(10 - s):
                m *= np.uint64(10)
            hi = frac * m
            lo = np.uint64(0)
        else:
            dn = np.uint64(1)
            for _ in range(s - 10):
                dn *= np.uint64(10)
            up = np.uint64(1)
            for _ in range(20 - s):
                up *= np.uint64(10)
            hi = frac // dn
            lo = (frac % dn) * up
        _be(out, p + 4, 10, 2)
        _be(out, p + 6, 4, 2)
        _be(out, p + 8, 0x4000 if neg else 0, 2)
        _be(out, p + 10, s, 2)
        d4 = np.uint64(10000)
        _be(out, p + 12, np.int64(ip // np.uint64(10**16)), 2)
        _be(out, p + 14, np.int64((ip // np.uint64(10**12)) % d4), 2)
        _be(out, p + 16, np.int64((ip // np.uint64(10**8)) % d4), 2)
        _be(out, p + 18, np.int64((ip // d4) % d4), 2)
        _be(out, p + 20, np.int64(ip % d4), 2)
        _be(out, p + 22, np.int64(hi // np.uint64(10**6)), 2)
        _be(out, p + 24, np.int64((hi // np.uint64(100)) % d4), 2)
        _be(out, p + 26, np.int64((hi % np.uint64(100)) * np.uint64(100) + lo // np.uint64(10**8)), 2)
        _be(out, p + 28, np.int64((lo // d4) % d4), 2)
        _be(out, p + 30, np.int64(lo % d4), 2)


def warmup() -> None:
    """Compile for the argument types the writer passes (strided field views of journal records)."""
    from bot4d.persist import synth
    from bot4d.persist.decode import RefData
    from bot4d.persist.writer import ROUTES, _cols, by_presence
    from bot4d.persist import copybin

    ev = synth.stamp(synth.events(20))
    sc = np.array([2, 4, 3], np.int16)
    ref = RefData(sc, sc, sc, sc)
    for table, kinds in ROUTES:
        sel = ev[np.isin(ev["kind"], kinds)]
        for cols in by_presence(_cols(sel, ref, table, np.full(len(sel), 1, np.int64))):
            copybin.encode(cols)
