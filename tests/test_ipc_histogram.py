"""Latency histogram: percentiles match numpy's within the bucket precision; merge; shared."""
import glob
import math
import multiprocessing as mp
import os
import uuid

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from numba.core.errors import TypingError

from ipc import histogram as H
from ipc.histogram import LatencyHistogram
from ipc.segment import SegmentError

FORK = mp.get_context("fork")
pytestmark = pytest.mark.timeout(120)
REL = 1 / H.SUB     # a bucket is at most 1/64 of its lower bound wide


def check_against_numpy(values):
    v = np.asarray(values, dtype=np.int64)
    h = H.new_histogram()
    H.record_many(h, v, v.size)
    p = H.percentiles(h)
    assert p["count"] == v.size and p["max_ns"] == v.max()
    srt = np.sort(v)
    for key, q in (("p50_ns", 0.5), ("p99_ns", 0.99), ("p999_ns", 0.999)):
        # numpy's inverted_cdf definition (the smallest sample whose rank reaches q*n), with the
        # rank computed from the same float q as the histogram (numpy divides q by 100 first,
        # which moves some ranks by one through float rounding)
        exact = int(srt[max(1, math.ceil(q * v.size)) - 1])
        got = p[key]
        assert exact <= got <= exact + exact * REL, (key, exact, got)
        ref = np.percentile(v, q * 100, method="inverted_cdf")
        assert abs(got - ref) <= max(ref, exact) * REL + abs(ref - exact)


def test_bucket_bounds_cover_every_value_once():
    vals = np.unique(np.concatenate([np.arange(0, 5000), 2 ** np.arange(7, 36),
                                     2 ** np.arange(7, 36) - 1, [H.MAX_TRACKABLE]]))
    idx = np.array([H.bucket_index(int(x)) for x in vals])
    lo, hi = H.bucket_bounds(idx)
    assert (lo <= vals).all() and (vals <= hi).all()
    assert ((hi - lo) <= np.maximum(lo, 1) * REL).all()
    assert idx.max() == H.N_BUCKETS - 1
    all_lo, all_hi = H.bucket_bounds(np.arange(H.N_BUCKETS))
    assert (all_lo[1:] == all_hi[:-1] + 1).all()           # contiguous, no gaps or overlaps


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60_000_000_000), min_size=1, max_size=3000))
def test_percentiles_match_numpy_within_precision(values):
    check_against_numpy(values)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_on_latency_like_data(seed):
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.lognormal(6, 1.0, 200_000),            # ~400 ns body
                        rng.exponential(50_000, 2_000)]).astype(np.int64)  # tail
    check_against_numpy(v)


def test_merge_equals_recording_everything_in_one():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 10**9, 5000), rng.integers(0, 10**6, 7000)
    ha, hb, hall = H.new_histogram(), H.new_histogram(), H.new_histogram()
    H.record_many(ha, a, a.size)
    H.record_many(hb, b, b.size)
    H.record_many(hall, np.concatenate([a, b]), a.size + b.size)
    H.merge(ha, hb)
    assert (ha == hall).all()
    H.merge(ha, H.new_histogram())         # merging an empty one changes nothing
    assert (ha == hall).all()


def test_edges_negative_overflow_empty_reset():
    h = H.new_histogram()
    assert H.percentiles(h) == {"p50_ns": 0, "p99_ns": 0, "p999_ns": 0, "max_ns": 0, "count": 0}
    H.record(h, -5)                        # a clock step backwards counts as 0, not a crash
    H.record(h, 10**12)                    # 1000 s: beyond range, counted, last bucket
    assert h[H.H_OVERFLOW] == 1 and h[H.H_COUNT] == 2 and h[H.H_MIN] == 0
    assert H.percentiles(h)["max_ns"] == 10**12
    H.reset(h)
    assert h[H.H_COUNT] == 0 and h[H.H_MIN] == H.INT64_MAX


def _record_in_child(inst, n):
    s = LatencyHistogram.attach(inst, "lat", readonly=False)
    H.record_many(s.hist, np.arange(1, n + 1, dtype=np.int64), n)


def test_shared_histogram_written_by_kernel_in_another_process_read_by_monitor():
    inst = f"t{os.getpid()}{uuid.uuid4().hex[:6]}"
    try:
        LatencyHistogram.create(inst, "lat")
        H.record_many(H.new_histogram(), np.arange(3, dtype=np.int64), 3)   # compile before fork
        p = FORK.Process(target=_record_in_child, args=(inst, 10_000))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        mon = LatencyHistogram.attach(inst, "lat")
        pc = mon.percentiles()
        assert pc["count"] == 10_000 and pc["max_ns"] == 10_000
        assert 5000 <= pc["p50_ns"] <= 5000 * (1 + REL)
        with pytest.raises(TypingError, match="read-only"):
            H.record(mon.hist, 1)
        with pytest.raises(SegmentError, match="not a histogram"):
            from ipc.counters import Counters
            Counters.create(inst, "c", ["x"])
            LatencyHistogram(Counters.attach(inst, "c").segment)
    finally:
        for f in glob.glob(f"/dev/shm/bot4d.{inst}.*"):
            os.unlink(f)
