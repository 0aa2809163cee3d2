"""CPU atomics, fences, pause and clocks for numba kernels (and the same from plain Python).

numba has no atomics (numba issue #2988): a spin-wait on a plain numpy element is miscompiled,
because LLVM may hoist the load out of the loop, and plain stores may be reordered or sunk by
the compiler. Everything that *publishes* or *observes* a sequence across threads/processes goes
through the intrinsics below, which emit LLVM atomic instructions via llvmlite's IRBuilder
(``load_atomic``, ``store_atomic``, ``atomic_rmw``, ``cmpxchg``, ``fence``).

Memory ordering, in one paragraph
    ``store_release`` is an LLVM ``store atomic ... release``: every load/store that precedes it
    in program order becomes visible to another core before the stored value does.
    ``load_acquire`` is ``load atomic ... acquire``: no load/store that follows it in program
    order can be performed before it. A writer that fills a record and then
    ``store_release``-es a sequence, paired with a reader that ``load_acquire``-s the sequence and
    only then reads the record, can never see the new sequence with the old record.
    On x86-64 (TSO) both compile to a plain ``mov``: the hardware already keeps stores in order
    and loads in order, so the only job of these instructions there is to stop the *compiler*
    (LLVM) from reordering, caching in registers, or hoisting out of loops. On ARMv8 they become
    ``stlr`` / ``ldar``, so the same code stays correct on weakly-ordered CPUs.
    ``fence_seq_cst`` is ``mfence`` on x86 (the only x86 reordering, store->load, is forbidden by
    it) and ``dmb ish`` on ARM; ``fence_acquire``/``fence_release`` cost nothing on x86 but still
    act as compiler barriers.

API (all take an int64 numpy array and an element index; the ``*_at`` variants take any
contiguous array and a *byte* offset into its buffer, used for the ``seq`` field of structured
records). Each is a ``@njit`` function, so it is callable from Python as well as inlined into
kernels; a write on a read-only (``PROT_READ``) array is refused at compile time.
"""
from __future__ import annotations

import platform
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")

_I64 = ir.IntType(64)


def _check_array(arr, what: str, writable: bool) -> None:
    if not isinstance(arr, types.Array):
        raise TypingError(f"{what}: expected a numpy array, got {arr}")
    if writable and not arr.mutable:
        raise TypingError(f"{what}: the array is read-only (a monitor's PROT_READ mapping?)")


def _elem_ptr(context, builder, aryty, ary, idx):
    """Pointer to int64 element ``idx`` of an int64 array (no bounds check: callers own it)."""
    a = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, a, [idx], wraparound=False)


def _byte_ptr(context, builder, aryty, ary, off):
    """``arr.data + off`` cast to ``i64*``: any array, any 8-byte-aligned byte offset."""
    a = context.make_array(aryty)(context, builder, ary)
    base = builder.ptrtoint(a.data, _I64)
    return builder.inttoptr(builder.add(base, off), _I64.as_pointer())


def _check_contiguous(arr, what: str) -> None:
    # byte-offset access assumes a C-contiguous buffer: a strided view would be silently wrong
    if not isinstance(arr, types.Array) or arr.layout != "C":
        raise TypingError(f"{what}: needs a C-contiguous array, got {arr}")


def _is_i64_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64


# ---------------------------------------------------------------- element of an int64 array --
def _make_load(ordering: str):
    @intrinsic
    def _load(typingctx, arr, idx):
        if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
            raise TypingError(f"load_{ordering}(arr, i): arr must be an int64 array")
        sig = types.int64(arr, idx)

        def codegen(context, builder, signature, args):
            i = context.cast(builder, args[1], signature.args[1], types.intp)
            ptr = _elem_ptr(context, builder, signature.args[0], args[0], i)
            return builder.load_atomic(ptr, ordering, 8)

        return sig, codegen

    return _load


def _make_store(ordering: str):
    @intrinsic
    def _store(typingctx, arr, idx, val):
        if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
            raise TypingError(f"store_{ordering}(arr, i, v): arr must be an int64 array")
        _check_array(arr, f"store_{ordering}", writable=True)
        sig = types.void(arr, idx, val)

        def codegen(context, builder, signature, args):
            i = context.cast(builder, args[1], signature.args[1], types.intp)
            v = context.cast(builder, args[2], signature.args[2], types.int64)
            ptr = _elem_ptr(context, builder, signature.args[0], args[0], i)
            builder.store_atomic(v, ptr, ordering, 8)
            return context.get_dummy_value()

        return sig, codegen

    return _store


def _make_load_at(ordering: str):
    @intrinsic
    def _load(typingctx, arr, off):
        if not isinstance(arr, types.Array) or not isinstance(off, types.Integer):
            raise TypingError(f"load_{ordering}_at(arr, byte_off): arr must be an array")
        _check_contiguous(arr, f"load_{ordering}_at")
        sig = types.int64(arr, off)

        def codegen(context, builder, signature, args):
            o = context.cast(builder, args[1], signature.args[1], types.int64)
            ptr = _byte_ptr(context, builder, signature.args[0], args[0], o)
            return builder.load_atomic(ptr, ordering, 8)

        return sig, codegen

    return _load


def _make_store_at(ordering: str):
    @intrinsic
    def _store(typingctx, arr, off, val):
        if not isinstance(arr, types.Array) or not isinstance(off, types.Integer):
            raise TypingError(f"store_{ordering}_at(arr, byte_off, v): arr must be an array")
        _check_contiguous(arr, f"store_{ordering}_at")
        _check_array(arr, f"store_{ordering}_at", writable=True)
        sig = types.void(arr, off, val)

        def codegen(context, builder, signature, args):
            o = context.cast(builder, args[1], signature.args[1], types.int64)
            v = context.cast(builder, args[2], signature.args[2], types.int64)
            ptr = _byte_ptr(context, builder, signature.args[0], args[0], o)
            builder.store_atomic(v, ptr, ordering, 8)
            return context.get_dummy_value()

        return sig, codegen

    return _store


_load_acquire = _make_load("acquire")
_load_relaxed = _make_load("monotonic")
_store_release = _make_store("release")
_store_relaxed = _make_store("monotonic")
_load_acquire_at = _make_load_at("acquire")
_load_relaxed_at = _make_load_at("monotonic")
_store_release_at = _make_store_at("release")
_store_relaxed_at = _make_store_at("monotonic")


@intrinsic
def _fetch_add(typingctx, arr, idx, val):
    if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
        raise TypingError("fetch_add(arr, i, v): arr must be an int64 array")
    _check_array(arr, "fetch_add", writable=True)
    sig = types.int64(arr, idx, val)

    def codegen(context, builder, signature, args):
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        v = context.cast(builder, args[2], signature.args[2], types.int64)
        ptr = _elem_ptr(context, builder, signature.args[0], args[0], i)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return sig, codegen


@intrinsic
def _compare_exchange(typingctx, arr, idx, expected, desired):
    if not _is_i64_array(arr) or not isinstance(idx, types.Integer):
        raise TypingError("compare_exchange(arr, i, expected, desired): arr must be int64")
    _check_array(arr, "compare_exchange", writable=True)
    sig = types.boolean(arr, idx, expected, desired)

    def codegen(context, builder, signature, args):
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        e = context.cast(builder, args[2], signature.args[2], types.int64)
        d = context.cast(builder, args[3], signature.args[3], types.int64)
        ptr = _elem_ptr(context, builder, signature.args[0], args[0], i)
        res = builder.cmpxchg(ptr, e, d, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return sig, codegen


def _make_fence(ordering: str):
    @intrinsic
    def _fence(typingctx):
        sig = types.void()

        def codegen(context, builder, signature, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return sig, codegen

    return _fence


_fence_seq_cst = _make_fence("seq_cst")
_fence_acquire = _make_fence("acquire")
_fence_release = _make_fence("release")


@intrinsic
def _cpu_pause(typingctx):
    sig = types.void()

    def codegen(context, builder, signature, args):
        if IS_X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        else:  # no portable pause: a seq_cst fence at least keeps the loop honest
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _cycle_counter(typingctx):
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def _ctlz(typingctx, v):
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, [_I64, ir.IntType(1)]), "llvm.ctlz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])

    return sig, codegen


@intrinsic
def _copy_bytes(typingctx, dst, dst_off, src, src_off, nbytes):
    if not isinstance(dst, types.Array) or not isinstance(src, types.Array):
        raise TypingError("copy_bytes(dst, dst_off, src, src_off, n): arrays expected")
    _check_contiguous(dst, "copy_bytes (dst)")
    _check_contiguous(src, "copy_bytes (src)")
    _check_array(dst, "copy_bytes", writable=True)
    sig = types.void(dst, dst_off, src, src_off, nbytes)

    def codegen(context, builder, signature, args):
        d = context.cast(builder, args[1], signature.args[1], types.int64)
        s = context.cast(builder, args[3], signature.args[3], types.int64)
        n = context.cast(builder, args[4], signature.args[4], types.int64)
        dp = builder.bitcast(_byte_ptr(context, builder, signature.args[0], args[0], d),
                             ir.IntType(8).as_pointer())
        sp = builder.bitcast(_byte_ptr(context, builder, signature.args[2], args[2], s),
                             ir.IntType(8).as_pointer())
        cgutils.raw_memcpy(builder, dp, sp, n, 1)
        return context.get_dummy_value()

    return sig, codegen


# ---- libc calls from nogil code: declared as external symbols, resolved by the JIT linker from
# the process's own libc (no ctypes object, so ``cache=True`` still works) ---------------------
_I32 = ir.IntType(32)
_CLOCK_MONOTONIC = 1  # Linux
_CLOCK_REALTIME = 0


def _clock_gettime_ns(builder, clock_id: int):
    """IR for ``clock_gettime(clock_id)`` in ns (struct timespec on x86-64/arm64)."""
    ts = cgutils.alloca_once(builder, ir.ArrayType(_I64, 2))
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32, [_I32, ir.IntType(8).as_pointer()]),
        "clock_gettime")
    builder.call(fn, [ir.Constant(_I32, clock_id), builder.bitcast(ts, ir.IntType(8).as_pointer())])
    zero = ir.Constant(_I32, 0)
    sec = builder.load(builder.gep(ts, [zero, zero]))
    nsec = builder.load(builder.gep(ts, [zero, ir.Constant(_I32, 1)]))
    return builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)


@intrinsic
def _monotonic_ns(typingctx):
    def codegen(context, builder, signature, args):
        return _clock_gettime_ns(builder, _CLOCK_MONOTONIC)

    return types.int64(), codegen


@intrinsic
def _realtime_ns(typingctx):
    def codegen(context, builder, signature, args):
        return _clock_gettime_ns(builder, _CLOCK_REALTIME)

    return types.int64(), codegen


@intrinsic
def _eventfd_signal(typingctx, fd):
    """write(fd, &(uint64)1, 8): what eventfd_write(fd, 1) does."""
    sig = types.int64(fd)

    def codegen(context, builder, signature, args):
        one = cgutils.alloca_once_value(builder, ir.Constant(_I64, 1))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I64, [_I32, ir.IntType(8).as_pointer(), _I64]), "write")
        v = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.call(fn, [v, builder.bitcast(one, ir.IntType(8).as_pointer()), ir.Constant(_I64, 8)])

    return sig, codegen


@intrinsic
def _eventfd_wait(typingctx, fd, timeout_ms):
    """poll(fd, POLLIN, timeout_ms), then read(fd) to reset it when it was signalled: 1 if it
    was, 0 on timeout (or an error: the caller's loop simply goes round again)."""
    sig = types.int64(fd, timeout_ms)

    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        pfd = cgutils.alloca_once(builder, ir.LiteralStructType([_I32, i16, i16]))  # struct pollfd
        zero = ir.Constant(_I32, 0)
        fd32 = context.cast(builder, args[0], signature.args[0], types.int32)
        builder.store(fd32, builder.gep(pfd, [zero, ir.Constant(_I32, 0)]))
        builder.store(ir.Constant(i16, 1), builder.gep(pfd, [zero, ir.Constant(_I32, 1)]))  # POLLIN
        builder.store(ir.Constant(i16, 0), builder.gep(pfd, [zero, ir.Constant(_I32, 2)]))
        poll = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [ir.IntType(8).as_pointer(), _I64, _I32]), "poll")
        t = context.cast(builder, args[1], signature.args[1], types.int32)
        n = builder.call(poll, [builder.bitcast(pfd, ir.IntType(8).as_pointer()), ir.Constant(_I64, 1), t])
        ready = builder.icmp_signed(">", n, zero)
        out = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))
        with builder.if_then(ready):
            buf = cgutils.alloca_once(builder, _I64)
            rd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_I64, [_I32, ir.IntType(8).as_pointer(), _I64]), "read")
            builder.call(rd, [fd32, builder.bitcast(buf, ir.IntType(8).as_pointer()), ir.Constant(_I64, 8)])
            builder.store(ir.Constant(_I64, 1), out)
        return builder.load(out)

    return sig, codegen


@intrinsic
def _sched_yield(typingctx):
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, []),
                                            "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def _usleep(typingctx, us):
    sig = types.int32(us)

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32]),
                                            "usleep")
        v = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.call(fn, [v])

    return sig, codegen


# ------------------------------------------------------------------ public njit wrappers ------
_J = dict(cache=True, nogil=True, inline="always")


@numba.njit(**_J)
def load_acquire(arr, i):
    """``arr[i]`` with acquire ordering (int64 array)."""
    return _load_acquire(arr, i)


@numba.njit(**_J)
def load_relaxed(arr, i):
    """``arr[i]`` atomically, no ordering: still re-read on every call (never hoisted)."""
    return _load_relaxed(arr, i)


@numba.njit(**_J)
def store_release(arr, i, v):
    """``arr[i] = v`` with release ordering: earlier writes are visible before this one."""
    _store_release(arr, i, v)


@numba.njit(**_J)
def store_relaxed(arr, i, v):
    """``arr[i] = v`` atomically, no ordering."""
    _store_relaxed(arr, i, v)


@numba.njit(**_J)
def load_acquire_at(arr, byte_off):
    """int64 at ``arr.data + byte_off`` with acquire ordering (e.g. a record's ``seq``)."""
    return _load_acquire_at(arr, byte_off)


@numba.njit(**_J)
def load_relaxed_at(arr, byte_off):
    return _load_relaxed_at(arr, byte_off)


@numba.njit(**_J)
def store_release_at(arr, byte_off, v):
    """int64 at ``arr.data + byte_off`` = v with release ordering."""
    _store_release_at(arr, byte_off, v)


@numba.njit(**_J)
def store_relaxed_at(arr, byte_off, v):
    _store_relaxed_at(arr, byte_off, v)


@numba.njit(**_J)
def fetch_add(arr, i, v):
    """Atomically ``arr[i] += v`` (seq_cst); returns the previous value."""
    return _fetch_add(arr, i, v)


@numba.njit(**_J)
def compare_exchange(arr, i, expected, desired):
    """Atomically: if ``arr[i] == expected`` set it to ``desired`` and return True (seq_cst)."""
    return _compare_exchange(arr, i, expected, desired)


@numba.njit(**_J)
def fence_seq_cst():
    """Full fence (``mfence`` on x86): orders earlier stores before later loads."""
    _fence_seq_cst()


@numba.njit(**_J)
def fence_acquire():
    """Earlier loads happen before later loads/stores (x86: compiler barrier only)."""
    _fence_acquire()


@numba.njit(**_J)
def fence_release():
    """Earlier loads/stores happen before later stores (x86: compiler barrier only)."""
    _fence_release()


@numba.njit(**_J)
def cpu_pause():
    """``pause`` (x86): polite spin-wait hint; frees the sibling hyper-thread, saves power."""
    _cpu_pause()


@numba.njit(**_J)
def cycle_counter():
    """Raw time-stamp counter (``rdtsc`` on x86). Use :func:`tsc_ns_per_tick` to convert."""
    return _cycle_counter()


@numba.njit(**_J)
def count_leading_zeros(v):
    """Leading zero bits of int64 ``v`` (64 for 0)."""
    return _ctlz(v)


@numba.njit(**_J)
def copy_bytes(dst, dst_off, src, src_off, nbytes):
    """memcpy between the buffers of two C-contiguous arrays (byte offsets, no bounds check).

    Copies records regardless of numba's record-type identity (e.g. an aligned and an unaligned
    dtype with the same layout); not atomic: publish it with a release store after it.
    """
    _copy_bytes(dst, dst_off, src, src_off, nbytes)


@numba.njit(**_J)
def monotonic_ns():
    """CLOCK_MONOTONIC in ns via libc ``clock_gettime`` (vDSO, ~25 ns), callable from nogil code.

    Same clock as ``time.monotonic_ns()`` and comparable across processes on one host.
    """
    return _monotonic_ns()


@numba.njit(**_J)
def realtime_ns():
    """CLOCK_REALTIME in ns (``time.time_ns()``), callable from nogil code."""
    return _realtime_ns()


@numba.njit(**_J)
def eventfd_signal(fd):
    """Add 1 to eventfd ``fd`` (wakes a reader's epoll) from nogil code; returns write(2)'s result."""
    return _eventfd_signal(fd)


@numba.njit(**_J)
def eventfd_wait(fd, timeout_ms):
    """Block (no GIL, no spinning) until eventfd ``fd`` is signalled or ``timeout_ms`` passed;
    consumes the signal. 1 if signalled, else 0."""
    return _eventfd_wait(fd, timeout_ms)


@numba.njit(**_J)
def sched_yield():
    """Give the core away once (``sched_yield(2)``); the GIL is not involved."""
    return _sched_yield()


@numba.njit(**_J)
def sleep_us(us):
    """``usleep(us)`` from nogil code (the last stage of a bounded wait)."""
    return _usleep(us)


# ------------------------------------------------------------------ TSC calibration ----------
_TSC_CAL: list[float] = []


def tsc_ns_per_tick(duration_s: float = 0.05) -> float:
    """Nanoseconds per cycle-counter tick, calibrated against CLOCK_MONOTONIC (cached).

    The TSC on these machines is invariant and synchronised across cores (it is the kernel's
    own clocksource), so TSC stamps from two processes are comparable after one calibration.
    """
    if not _TSC_CAL:
        t0, c0 = time.perf_counter_ns(), cycle_counter()
        time.sleep(duration_s)
        t1, c1 = time.perf_counter_ns(), cycle_counter()
        _TSC_CAL.append((t1 - t0) / max(c1 - c0, 1))
    return _TSC_CAL[0]


def warmup() -> None:
    """Compile the wrappers for int64 arrays (used by :mod:`bot4d.warmup` via ipc.warmup)."""
    a = np.zeros(8, np.int64)
    store_release(a, 0, 1)
    store_relaxed(a, 1, load_acquire(a, 0) + load_relaxed(a, 0))
    store_release_at(a, 16, fetch_add(a, 3, 1))
    compare_exchange(a, 4, 0, 1)
    load_acquire_at(a, 8)
    copy_bytes(a, 0, a, 32, 16)
    fence_seq_cst(); fence_acquire(); fence_release(); cpu_pause()
    cycle_counter(); count_leading_zeros(1); monotonic_ns(); sched_yield(); sleep_us(0)


__all__ = [
    "load_acquire", "load_relaxed", "store_release", "store_relaxed", "load_acquire_at",
    "load_relaxed_at", "store_release_at", "store_relaxed_at", "fetch_add", "compare_exchange",
    "fence_seq_cst", "fence_acquire", "fence_release", "cpu_pause", "cycle_counter",
    "count_leading_zeros", "copy_bytes", "monotonic_ns", "sched_yield", "sleep_us", "tsc_ns_per_tick", "warmup", "IS_X86",
]
