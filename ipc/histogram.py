"""HDR-style log-linear latency histogram of int64 buckets, in shared memory or local.

Values are nanoseconds. Values below 128 get one bucket each; above, every power of two
``[2^k, 2^(k+1))`` (k = 7..35) is split into 64 equal sub-buckets, so a bucket's width is at
most 1/64 (1.6 %) of its lower bound. The highest trackable value is ``2^36 - 1`` ns (68.7 s);
larger values are counted in the last bucket and in ``overflow``. 1984 buckets, 16 KiB.

Array layout (int64): word 0 count, 1 sum, 2 min, 3 max, 4 overflow, 5..7 reserved, then the
buckets. One writer per histogram (a shard's kernel calls :func:`record`); it stores every word
with relaxed atomics, so the compiler never keeps them in registers across a long kernel loop
and monitors (read-only mappings) see progress; aligned 8-byte words are never torn. A reader's
copy may be a few records inconsistent between words (``count`` vs the bucket sum): percentiles
are computed from the bucket counts themselves.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ipc.atomics import count_leading_zeros, load_relaxed, store_relaxed
from ipc.segment import Segment, SegmentError

SUB_BITS = 6                 # 64 sub-buckets per power of two -> <= 1/64 relative width
SUB = 1 << SUB_BITS          # 64
LINEAR = 2 * SUB             # values < 128 are exact
MAX_EXP = 36                 # highest value 2**36 - 1 ns = 68.7 s
N_BUCKETS = LINEAR + (MAX_EXP - SUB_BITS - 1) * SUB  # 128 + 29*64 = 1984
H_COUNT, H_SUM, H_MIN, H_MAX, H_OVERFLOW = 0, 1, 2, 3, 4
H_BUCKETS = 8
HIST_WORDS = H_BUCKETS + N_BUCKETS
INT64_MAX = np.iinfo(np.int64).max
MAX_TRACKABLE = (1 << MAX_EXP) - 1

_J = dict(cache=True, nogil=True)


@numba.njit(**_J)
def bucket_index(v):
    """Bucket of value ``v`` (0 <= v <= MAX_TRACKABLE)."""
    if v < LINEAR:
        return v
    msb = 63 - count_leading_zeros(v)
    shift = msb - SUB_BITS
    return LINEAR + (msb - SUB_BITS - 1) * SUB + ((v >> shift) - SUB)


def bucket_bounds(idx: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value of bucket(s) ``idx``."""
    idx = np.asarray(idx, dtype=np.int64)
    b = np.maximum(idx - LINEAR, 0)
    shift = b // SUB + 1
    m = b % SUB + SUB
    lo = np.where(idx < LINEAR, idx, m << shift)
    hi = np.where(idx < LINEAR, idx, ((m + 1) << shift) - 1)
    return lo, hi


@numba.njit(**_J)
def reset(h):
    """Empty the histogram (its writer only)."""
    for i in range(h.shape[0]):
        store_relaxed(h, i, 0)
    store_relaxed(h, H_MIN, INT64_MAX)


@numba.njit(**_J)
def record(h, value_ns):
    """Count one value (ns). Negative values count as 0; huge ones go to the last bucket."""
    v = value_ns
    if v < 0:
        v = 0
    if v > MAX_TRACKABLE:
        store_relaxed(h, H_OVERFLOW, load_relaxed(h, H_OVERFLOW) + 1)
        i = H_BUCKETS + N_BUCKETS - 1
    else:
        i = H_BUCKETS + bucket_index(v)
    store_relaxed(h, i, load_relaxed(h, i) + 1)
    store_relaxed(h, H_SUM, load_relaxed(h, H_SUM) + v)
    if v < load_relaxed(h, H_MIN):
        store_relaxed(h, H_MIN, v)
    if v > load_relaxed(h, H_MAX):
        store_relaxed(h, H_MAX, v)
    store_relaxed(h, H_COUNT, load_relaxed(h, H_COUNT) + 1)


@numba.njit(**_J)
def record_many(h, values, n):
    """Count ``values[:n]`` in one call (batching: a numba call costs ~250 ns)."""
    for k in range(n):
        record(h, values[k])


@numba.njit(**_J)
def merge(dst, src):
    """Add ``src``'s counts into ``dst`` (dst's writer only; src may be read-only)."""
    for i in range(H_BUCKETS, H_BUCKETS + N_BUCKETS):
        c = load_relaxed(src, i)
        if c:
            store_relaxed(dst, i, load_relaxed(dst, i) + c)
    for i in (H_COUNT, H_SUM, H_OVERFLOW):
        store_relaxed(dst, i, load_relaxed(dst, i) + load_relaxed(src, i))
    if load_relaxed(src, H_COUNT) > 0:
        if load_relaxed(src, H_MIN) < load_relaxed(dst, H_MIN):
            store_relaxed(dst, H_MIN, load_relaxed(src, H_MIN))
        if load_relaxed(src, H_MAX) > load_relaxed(dst, H_MAX):
            store_relaxed(dst, H_MAX, load_relaxed(src, H_MAX))


def new_histogram() -> np.ndarray:
    """A process-local, empty histogram array."""
    h = np.zeros(HIST_WORDS, np.int64)
    h[H_MIN] = INT64_MAX
    return h


def value_at_quantile(h: np.ndarray, q: float) -> int:
    """Value at quantile ``q`` in [0, 1] (the smallest recorded value v with rank >= q*count),
    reported as its bucket's highest value, capped at the recorded max. 0 when empty."""
    counts = np.array(h[H_BUCKETS:H_BUCKETS + N_BUCKETS])   # one copy, then consistent
    total = int(counts.sum())
    if total == 0:
        return 0
    rank = max(1, math.ceil(q * total))
    idx = int(np.searchsorted(np.cumsum(counts), rank))
    _, hi = bucket_bounds(idx)
    return int(min(int(hi), int(h[H_MAX])))


def percentiles(h: np.ndarray) -> dict[str, int]:
    """p50/p99/p99.9/max in ns, plus count (the format of bench.harness results)."""
    counts = np.array(h[H_BUCKETS:H_BUCKETS + N_BUCKETS])
    total = int(counts.sum())
    return {"p50_ns": value_at_quantile(h, 0.5), "p99_ns": value_at_quantile(h, 0.99),
            "p999_ns": value_at_quantile(h, 0.999), "max_ns": int(h[H_MAX]) if total else 0,
            "count": total}


class LatencyHistogram:
    """A histogram in its own segment: ``hist`` is the int64 array kernels receive."""

    def __init__(self, seg: Segment) -> None:
        m = seg.meta
        if m.get("kind") != "histogram":
            raise SegmentError(f"{seg.path}: is a {m.get('kind')!r} segment, not a histogram")
        if m.get("sub_bits") != SUB_BITS or m.get("max_exp") != MAX_EXP \
                or m.get("words") != HIST_WORDS:
            raise SegmentError(f"{seg.path}: histogram layout {m} is not the one this reader "
                               f"knows (sub_bits={SUB_BITS}, max_exp={MAX_EXP})")
        self.segment = seg
        self.hist: np.ndarray = seg.array(0, np.int64, HIST_WORDS)

    @classmethod
    def create(cls, instance: str, name: str, *, reclaim_dead: bool = False) -> "LatencyHistogram":
        meta = {"kind": "histogram", "sub_bits": SUB_BITS, "max_exp": MAX_EXP, "words": HIST_WORDS}
        def init(seg: Segment) -> None:
            seg.array(0, np.int64, HIST_WORDS)[H_MIN] = INT64_MAX

        return cls(Segment.create(instance, name, HIST_WORDS * 8, meta,
                                  reclaim_dead=reclaim_dead, init=init))

    @classmethod
    def attach(cls, instance: str, name: str, readonly: bool = True) -> "LatencyHistogram":
        seg = Segment.attach(instance, name, readonly=readonly, kind="histogram")
        try:
            return cls(seg)
        except SegmentError:
            seg.close()
            raise

    def record(self, value_ns: int) -> None:
        record(self.hist, value_ns)

    def percentiles(self) -> dict[str, int]:
        return percentiles(self.hist)

    def close(self) -> None:
        self.hist = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


def warmup() -> None:
    h = new_histogram()
    record(h, 5)
    record_many(h, np.array([1, 2, 3], np.int64), 3)
    merge(h, new_histogram())
    reset(h)
