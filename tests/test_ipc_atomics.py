"""ipc.atomics: the numba atomics really synchronise threads (and refuse read-only arrays)."""
import threading
import time

import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

from ipc import atomics as A

pytestmark = pytest.mark.timeout(120)


@numba.njit(nogil=True)
def _spin_until(flag, i, target, max_iters):
    # the pattern NOTES.md reports miscompiled with a plain ``flag[i]``: the load would be hoisted
    n = 0
    while A.load_acquire(flag, i) != target:
        A.cpu_pause()
        n += 1
        if n >= max_iters:
            return -1
    return n


@numba.njit(nogil=True)
def _add_many(arr, n):
    for _ in range(n):
        A.fetch_add(arr, 0, 1)


@numba.njit(nogil=True)
def _cas_increment_many(arr, n):
    for _ in range(n):
        while True:
            v = A.load_relaxed(arr, 0)
            if A.compare_exchange(arr, 0, v, v + 1):
                break


@numba.njit(nogil=True)
def _publish_then_flag(data, flag, n):
    # message passing: data first, then the flag with release ordering
    for k in range(n):
        data[k] = k + 1
    A.store_release(flag, 0, 1)


@numba.njit(nogil=True)
def _wait_flag_then_check(data, flag, n, max_iters):
    it = 0
    while A.load_acquire(flag, 0) == 0:
        A.cpu_pause()
        it += 1
        if it > max_iters:
            return -2
    bad = 0
    for k in range(n):
        if data[k] != k + 1:
            bad += 1
    return bad


def test_spin_wait_on_value_published_by_another_thread_terminates():
    flag = np.zeros(16, np.int64)
    assert _spin_until(flag, 3, 0, 10) == 0      # compile first: JIT time must not hide the wait
    out = []
    # the spinning kernel starts first and must see the store that happens 50 ms later
    t = threading.Thread(target=lambda: out.append(_spin_until(flag, 3, 42, 2_000_000_000)))
    t.start()
    time.sleep(0.05)
    A.store_release(flag, 3, 42)   # from plain Python
    t.join(timeout=60)
    assert not t.is_alive()
    assert out[0] > 0, "spin ended before the store (or never saw it)"


def test_message_passing_release_acquire_between_threads():
    for _ in range(20):
        data, flag = np.zeros(4096, np.int64), np.zeros(8, np.int64)
        res = []
        t = threading.Thread(target=lambda: res.append(
            _wait_flag_then_check(data, flag, data.size, 2_000_000_000)))
        t.start()
        _publish_then_flag(data, flag, data.size)
        t.join(timeout=60)
        assert res == [0]


def test_fetch_add_and_cas_are_atomic_across_threads():
    n = 500_000
    for fn in (_add_many, _cas_increment_many):
        arr = np.zeros(8, np.int64)
        ts = [threading.Thread(target=fn, args=(arr, n)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert arr[0] == 2 * n, fn.__name__


def test_python_equivalents_and_return_values():
    a = np.zeros(8, np.int64)
    assert A.fetch_add(a, 1, 5) == 0 and a[1] == 5
    assert A.compare_exchange(a, 1, 5, 9) and a[1] == 9
    assert not A.compare_exchange(a, 1, 5, 11) and a[1] == 9
    A.store_release(a, 2, -7)
    assert A.load_acquire(a, 2) == -7 and A.load_relaxed(a, 2) == -7
    A.store_release_at(a, 24, 123)            # byte offset 24 = word 3
    assert a[3] == 123 and A.load_acquire_at(a, 24) == 123
    src = np.arange(8, dtype=np.int64)
    dst = np.zeros(8, np.int64)
    A.copy_bytes(dst, 8, src, 16, 24)         # words 2..4 -> 1..3
    assert list(dst) == [0, 2, 3, 4, 0, 0, 0, 0]
    assert A.count_leading_zeros(1) == 63 and A.count_leading_zeros(-1) == 0
    A.fence_seq_cst(); A.fence_acquire(); A.fence_release(); A.cpu_pause()


def test_monotonic_clock_from_numba_is_clock_monotonic():
    a = time.monotonic_ns()
    b = A.monotonic_ns()
    c = time.monotonic_ns()
    assert a <= b <= c


def test_cycle_counter_advances_and_calibrates():
    c0 = A.cycle_counter()
    time.sleep(0.01)
    assert A.cycle_counter() > c0
    assert 0.01 < A.tsc_ns_per_tick() < 100


@pytest.mark.parametrize("call", [
    lambda r: A.store_release(r, 0, 1),
    lambda r: A.store_relaxed(r, 0, 1),
    lambda r: A.fetch_add(r, 0, 1),
    lambda r: A.compare_exchange(r, 0, 0, 1),
    lambda r: A.store_release_at(r, 0, 1),
    lambda r: A.copy_bytes(r, 0, np.zeros(2, np.int64), 0, 8),
])
def test_writes_to_read_only_array_are_refused_at_compile_time(call):
    r = np.zeros(4, np.int64)
    r.setflags(write=False)
    with pytest.raises(TypingError, match="read-only"):
        call(r)
    assert A.load_acquire(r, 0) == 0     # reading stays allowed


def test_non_int64_array_refused():
    with pytest.raises(TypingError, match="int64"):
        A.load_acquire(np.zeros(4, np.int32), 0)


def test_byte_offset_operations_refuse_strided_arrays():
    a = np.zeros(16, np.int64)
    with pytest.raises(TypingError, match="C-contiguous"):
        A.copy_bytes(a[::2], 0, a, 0, 8)
    with pytest.raises(TypingError, match="C-contiguous"):
        A.load_acquire_at(a[::2], 0)


def test_ring_kernels_refuse_strided_buffers():
    from ipc import ring as R
    from ipc.loadgen import LOAD_DTYPE

    ctrl = np.zeros(R.ctrl_words(1), np.int64)
    ctrl[R.C_CAPACITY], ctrl[R.C_MASK], ctrl[R.C_ITEMSIZE], ctrl[R.C_N_GATING] = 8, 7, 64, 1
    recs, src = np.zeros(8, LOAD_DTYPE), np.zeros(8, LOAD_DTYPE)
    with pytest.raises(TypingError, match="C-contiguous"):
        R.publish_batch(recs, ctrl, src[::2], 4)


def test_realtime_clock_and_eventfd_from_nogil_code():
    import os
    import threading
    import time

    import numba

    from ipc.atomics import eventfd_signal, eventfd_wait, realtime_ns

    @numba.njit(nogil=True)
    def now():
        return realtime_ns()

    @numba.njit(nogil=True)
    def wait(fd, ms):
        return eventfd_wait(fd, ms)

    @numba.njit(nogil=True)
    def signal(fd):
        return eventfd_signal(fd)

    t0 = time.time_ns()
    t = now()
    assert t0 <= t <= time.time_ns()
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        assert wait(fd, 0) == 0                      # nothing signalled: timeout
        assert signal(fd) == 8                       # write(2) of the 8-byte counter
        signal(fd)
        assert wait(fd, 1000) == 1 and wait(fd, 0) == 0, "one wait consumes every signal so far"
        th = threading.Thread(target=lambda: (time.sleep(0.05), os.eventfd_write(fd, 1)))
        th.start()
        assert wait(fd, 10_000) == 1                 # woken by another thread, not by the timeout
        th.join()
    finally:
        os.close(fd)
