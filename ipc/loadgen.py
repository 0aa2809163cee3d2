"""Synthetic, self-checking traffic for ring tests and benchmarks (numba kernels, nogil).

Record ``s`` of :data:`LOAD_DTYPE` (64 bytes) carries ``seq = s`` and fields derived from ``s``,
so a consumer can check every record for loss, duplication, reordering and corruption without
any side channel: :func:`expected_checksum` gives the xor-sum of the first ``n`` records.
"""
from __future__ import annotations

import numba
import numpy as np

from ipc.atomics import cpu_pause, monotonic_ns
from ipc.histogram import record as hist_record
from ipc.ring import consume_batch, publish_batch

LOAD_DTYPE = np.dtype([("seq", np.int64), ("ts_ns", np.int64), ("a", np.int64), ("b", np.int64),
                       ("c", np.int64), ("d", np.int64), ("e", np.int64), ("f", np.int64)])
assert LOAD_DTYPE.itemsize == 64
GOLD = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64 (wrapping multiplier)

# result words of consume_into
R_RECEIVED, R_ERRORS, R_CHECKSUM, R_FIRST_BAD, R_EMPTY_POLLS = 0, 1, 2, 3, 4

_J = dict(cache=True, nogil=True)


@numba.njit(**_J)
def fill(src, start, n):
    """Records ``start .. start+n-1`` into ``src[:n]`` (timestamp left to the caller)."""
    for k in range(n):
        s = start + k
        src[k].seq = s
        src[k].a = s * GOLD
        src[k].b = ~s
        src[k].c = s + 1
        src[k].d = s ^ 0x5555
        src[k].e = -s
        src[k].f = s * 3


@numba.njit(**_J)
def record_ok(r, s):
    return (r.seq == s and r.a == s * GOLD and r.b == ~s and r.c == s + 1
            and r.d == (s ^ 0x5555) and r.e == -s and r.f == s * 3)


@numba.njit(**_J)
def produce(records, ctrl, src, start, n_total, batch, pace_ns):
    """Publish records ``start .. start+n_total-1`` in batches; ``pace_ns > 0`` publishes one
    record every ``pace_ns`` (busy-waiting, for latency runs). Stamps ``ts_ns`` with
    CLOCK_MONOTONIC just before publishing. Returns how many were published (stops early only
    if the ring's policy refused records)."""
    done = 0
    nxt = monotonic_ns()
    while done < n_total:
        b = batch if n_total - done > batch else n_total - done
        if pace_ns > 0:
            b = 1
            while monotonic_ns() < nxt:
                cpu_pause()
            nxt += pace_ns
        fill(src, start + done, b)
        t = monotonic_ns()
        for k in range(b):
            src[k].ts_ns = t
        got = publish_batch(records, ctrl, src, b)
        done += got
        if got < b:
            break
    return done


@numba.njit(**_J)
def consume_into(records, ctrl, slot, dst, start, n_total, timeout_ns, res, hist, use_hist):
    """Consume until ``n_total`` records arrived or ``timeout_ns`` without progress.

    Checks each record against its expected sequence; fills ``res`` (R_* words) and, with
    ``use_hist``, records ``now - ts_ns`` of every record into ``hist``.
    """
    expect = start
    last_progress = monotonic_ns()
    polls = 0
    res[R_FIRST_BAD] = -1
    while expect - start < n_total:
        n = consume_batch(records, ctrl, slot, dst, dst.shape[0])
        if n <= 0:
            polls += 1
            cpu_pause()
            if (polls & 255) == 0 and monotonic_ns() - last_progress > timeout_ns:
                break
            continue
        if use_hist:
            now = monotonic_ns()
            for k in range(n):
                hist_record(hist, now - dst[k].ts_ns)
        for k in range(n):
            if not record_ok(dst[k], expect):
                res[R_ERRORS] += 1
                if res[R_FIRST_BAD] < 0:
                    res[R_FIRST_BAD] = expect
            res[R_CHECKSUM] ^= dst[k].a + dst[k].seq
            expect += 1
        last_progress = monotonic_ns()
    res[R_RECEIVED] = expect - start
    res[R_EMPTY_POLLS] = polls
    return expect - start


def expected_checksum(start: int, n: int) -> int:
    s = np.arange(start, start + n, dtype=np.int64)
    with np.errstate(over="ignore"):
        return int(np.bitwise_xor.reduce(s * GOLD + s)) if n else 0


def warmup() -> None:
    from ipc.histogram import new_histogram
    from ipc.ring import C_CAPACITY, C_ITEMSIZE, C_MASK, C_N_GATING, C_POLICY, C_SLOT0, \
        POLICY_FAIL, S_STATE, SLOT_ACTIVE, ctrl_words

    ctrl = np.zeros(ctrl_words(1), np.int64)
    ctrl[C_CAPACITY], ctrl[C_MASK], ctrl[C_POLICY], ctrl[C_N_GATING] = 8, 7, POLICY_FAIL, 1
    ctrl[C_ITEMSIZE], ctrl[C_SLOT0 + S_STATE] = 64, SLOT_ACTIVE
    recs, src, dst = np.zeros(8, LOAD_DTYPE), np.zeros(4, LOAD_DTYPE), np.zeros(4, LOAD_DTYPE)
    res = np.zeros(8, np.int64)
    produce(recs, ctrl, src, 0, 4, 4, 0)
    consume_into(recs, ctrl, 0, dst, 0, 4, 1000, res, new_histogram(), True)
