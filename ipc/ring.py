"""Single-producer rings of fixed-size numpy structured records in a shared-memory segment.

Two kinds:

* **queue** — one consumer (gating slot 0, active from creation). The producer never laps it:
  when the ring is full the ring's *policy* applies.
* **journal** — ``n_gating`` gating slots (e.g. the persistence sidecar) the producer never
  laps, plus any number of *non-gating* readers (monitors, read-only mappings) that the producer
  ignores and that detect being lapped from the ``seq`` stamped in each record. A journal dtype
  must start with an int64 field ``seq``; the ring stamps it.

Policy when full (explicit per ring, never a silent overwrite of unconsumed data):
``"block"`` waits with a bounded strategy — ``spin`` rounds of ``pause``, then ``sched_yield``,
then 50 µs sleeps — up to ``timeout_ns``, then gives up; ``"fail"`` returns at once. Either way
the records that did not fit are not published, the call returns how many were, and the control
block counts the refusals (``failed``, ``full``, ``waits``, ``timeouts``, ``wait_ns``).

Control block (``ring.ctrl``, int64; every group on its own 64-byte cache line):

====== ===================================================================================
words  contents
====== ===================================================================================
0-7    immutable config: capacity, mask, kind, policy, n_gating, timeout_ns, spin, itemsize
8      producer cursor = next sequence to publish = number of records ever published
9      producer's cached gate (min active slot position; producer-private)
16-20  counters written by the producer: failed, full, waits, timeouts, wait_ns
24+8i  gating slot i: position (next sequence it will consume), state, pid, pid start time
====== ===================================================================================

Sequences are int64 that only grow: record ``s`` lives at index ``s & (capacity - 1)``.

Memory ordering (see docs/ipc.md for the long form)
    Producer: write records ``[c, c+k)`` with plain stores, then ``store_release(cursor, c+k)``.
    Consumer: ``load_acquire(cursor)``, read records below it, then ``store_release(slot.pos)``.
    Release/acquire makes the records visible before the cursor that covers them, and the
    consumer's reads complete before the producer can see the slot move and reuse the space.
    On x86-64 (TSO) these are plain ``mov``s and the intrinsics only stop LLVM from reordering
    or hoisting; on ARM they are ``stlr``/``ldar``.

    Journal stamps: to overwrite index ``i`` with sequence ``s`` the producer stores ``-1`` into
    the record's ``seq``, ``fence_release``, writes the other words, then ``store_release``-es
    ``seq = s``. A non-gating reader wanting ``s`` loads ``seq`` (acquire), copies the record,
    ``fence_acquire``, and re-loads ``seq``: the copy is accepted only if both loads saw ``s``,
    otherwise the reader was lapped. (A seqlock per record with the sequence as version.)

    Registering a gating slot races with a producer that does not yet see it. The producer
    refreshes its gate with ``fence_seq_cst`` then reads the slots, and with no active slot it
    never runs more than one capacity ahead of the cursor it stored before that fence; the
    registrant marks the slot active, ``fence_seq_cst``, re-reads the cursor ``c1`` and starts at
    ``c1``: either the producer saw the slot, or ``c1`` is at least the cursor the producer's
    gate was computed from, so nothing at or after ``c1`` can be overwritten (Dekker's argument).

A gone consumer holds its slot until someone releases it: releasing is explicit
(:meth:`Ring.release_slot`, or :meth:`Ring.release_dead_slots` for slots whose recorded pid no
longer exists). A producer with ``policy="block"`` facing a stuck consumer times out and counts
it; it is never blocked forever.

Kept journals: until its gating consumers took them, a journal's records exist nowhere else, so
``Ring.create(kind="journal", reclaim_dead=True)`` never replaces a dead producer's journal that
still holds unconsumed records: :func:`keep_if_undrained` first renames it to
``<name>-kept-<journal_id>`` (processes mapping it keep their mapping). Consumers find those with
:func:`kept_rings` (oldest run first), drain them, and remove them with :func:`remove_kept`.
:attr:`Ring.journal_id` (the creation time, ns) and :attr:`Ring.boot_id` (from ``identity``) tell
one producer run from the next; :meth:`Ring.is_named` tells a consumer its name now leads to
another file.
"""
from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np

from ipc.atomics import (
    compare_exchange, copy_bytes, cpu_pause, fence_acquire, fence_release, fence_seq_cst, load_acquire,
    load_acquire_at, load_relaxed, monotonic_ns, sched_yield, sleep_us, store_relaxed,
    store_relaxed_at, store_release, store_release_at, load_relaxed_at,
)
from ipc.segment import (
    CACHE_LINE, PREFIX, SHM_DIR, Segment, SegmentError, dtype_from_json, dtype_to_json, pid_alive,
    process_start_ticks, segment_path,
)

CL = CACHE_LINE // 8  # int64 words per cache line
C_CAPACITY, C_MASK, C_KIND, C_POLICY, C_N_GATING, C_TIMEOUT_NS, C_SPIN, C_ITEMSIZE = range(8)
C_PROD = 8
C_GATE = 9
C_FAILED, C_FULL, C_WAITS, C_TIMEOUTS, C_WAIT_NS = 16, 17, 18, 19, 20
C_SLOT0 = 24
S_POS, S_STATE, S_PID, S_START = 0, 1, 2, 3

KIND_QUEUE, KIND_JOURNAL = 0, 1
POLICY_BLOCK, POLICY_FAIL = 0, 1
SLOT_FREE, SLOT_ACTIVE, SLOT_CLAIMING = 0, 1, 2

KINDS = {"queue": KIND_QUEUE, "journal": KIND_JOURNAL}
POLICIES = {"block": POLICY_BLOCK, "fail": POLICY_FAIL}
MAX_GATING = 64

_J = dict(cache=True, nogil=True)


def ctrl_words(n_gating: int) -> int:
    return C_SLOT0 + CL * n_gating


# ============================================================== kernels (njit, nogil) =======
@numba.njit(**_J)
def _refresh_gate(ctrl, prod):
    """min(position of every active slot, prod). The fence pairs with register_slot's fence."""
    fence_seq_cst()
    g = prod
    for i in range(ctrl[C_N_GATING]):
        b = C_SLOT0 + i * CL
        if load_acquire(ctrl, b + S_STATE) == SLOT_ACTIVE:
            p = load_acquire(ctrl, b + S_POS)
            if p < g:
                g = p
    store_relaxed(ctrl, C_GATE, g)
    return g


@numba.njit(**_J)
def _copy_out(records, ctrl, seq, dst, n):
    """Copy records ``[seq, seq+n)`` into ``dst[:n]`` (two memcpys around the wrap)."""
    cap = ctrl[C_CAPACITY]
    isz = ctrl[C_ITEMSIZE]
    i0 = seq & ctrl[C_MASK]
    first = cap - i0 if n > cap - i0 else n
    if first > 0:
        copy_bytes(dst, 0, records, i0 * isz, first * isz)
    if first < n:
        copy_bytes(dst, first * isz, records, 0, (n - first) * isz)


@numba.njit(**_J)
def publish_batch(records, ctrl, src, n):
    """Publish ``src[:n]`` (same dtype, C-contiguous); returns how many were published.

    Applies the ring's policy when full (block up to the timeout, or fail) and counts refusals.
    Producer only: one thread of one process at a time. Returns -1 (publishing nothing) if
    ``src`` has another item size than the ring.
    """
    if src.itemsize != ctrl[C_ITEMSIZE] or records.itemsize != ctrl[C_ITEMSIZE]:
        return -1
    if n > src.shape[0]:
        n = src.shape[0]
    cap = ctrl[C_CAPACITY]
    mask = ctrl[C_MASK]
    journal = ctrl[C_KIND] == KIND_JOURNAL
    fail = ctrl[C_POLICY] == POLICY_FAIL
    isz = ctrl[C_ITEMSIZE]
    prod = load_relaxed(ctrl, C_PROD)
    gate = load_relaxed(ctrl, C_GATE)
    done = 0
    spins = 0
    t0 = 0
    waiting = False
    timed_out = False
    while done < n:
        want = n - done
        avail = gate + cap - prod
        if avail < want:
            gate = _refresh_gate(ctrl, prod)
            avail = gate + cap - prod
        if avail <= 0:
            if fail:
                break
            # bounded wait: spin with pause, then yield the core, then sleep, up to timeout_ns
            if not waiting:
                waiting = True
                spins = 0
                t0 = monotonic_ns()
                store_relaxed(ctrl, C_WAITS, load_relaxed(ctrl, C_WAITS) + 1)
            spins += 1
            if spins < ctrl[C_SPIN]:
                cpu_pause()
                if (spins & 63) != 0:
                    continue
            elif spins < ctrl[C_SPIN] + 200:
                sched_yield()
            else:
                sleep_us(50)
            if monotonic_ns() - t0 > ctrl[C_TIMEOUT_NS]:
                timed_out = True
                break
            continue
        if waiting:
            waiting = False
            store_relaxed(ctrl, C_WAIT_NS, load_relaxed(ctrl, C_WAIT_NS) + monotonic_ns() - t0)
        k = avail if avail < want else want
        if journal:
            for j in range(k):
                s = prod + j
                off = (s & mask) * isz
                store_relaxed_at(records, off, -1)   # invalidate first: readers see "being written"
                fence_release()
                copy_bytes(records, off + 8, src, (done + j) * isz + 8, isz - 8)
                store_release_at(records, off, s)
        else:
            # contiguous runs: at most two memcpys per chunk (before and after the wrap)
            i0 = prod & mask
            first = cap - i0 if k > cap - i0 else k
            copy_bytes(records, i0 * isz, src, done * isz, first * isz)
            if first < k:
                copy_bytes(records, 0, src, (done + first) * isz, (k - first) * isz)
        prod += k
        done += k
        store_release(ctrl, C_PROD, prod)
    if waiting:
        store_relaxed(ctrl, C_WAIT_NS, load_relaxed(ctrl, C_WAIT_NS) + monotonic_ns() - t0)
    if done < n:
        store_relaxed(ctrl, C_FAILED, load_relaxed(ctrl, C_FAILED) + (n - done))
        store_relaxed(ctrl, C_FULL, load_relaxed(ctrl, C_FULL) + 1)
        if timed_out:
            store_relaxed(ctrl, C_TIMEOUTS, load_relaxed(ctrl, C_TIMEOUTS) + 1)
    return done


@numba.njit(**_J)
def available(ctrl, slot):
    """Records published but not yet consumed by gating ``slot``."""
    return load_acquire(ctrl, C_PROD) - load_acquire(ctrl, C_SLOT0 + slot * CL + S_POS)


@numba.njit(**_J)
def consume_batch(records, ctrl, slot, dst, max_n):
    """Copy up to ``max_n`` records for gating ``slot`` into ``dst`` and advance; returns n.

    Returns -1 if ``dst`` has another item size than the ring.
    """
    if dst.itemsize != ctrl[C_ITEMSIZE]:
        return -1
    b = C_SLOT0 + slot * CL
    pos = load_relaxed(ctrl, b + S_POS)
    n = load_acquire(ctrl, C_PROD) - pos
    if n > max_n:
        n = max_n
    if n > dst.shape[0]:
        n = dst.shape[0]
    _copy_out(records, ctrl, pos, dst, n)
    if n > 0:
        store_release(ctrl, b + S_POS, pos + n)  # reads above complete before space is reused
    return n


@numba.njit(**_J)
def read_batch(records, ctrl, slot, from_seq, dst, max_n):
    """Copy up to ``max_n`` records from ``from_seq`` for gating ``slot`` without advancing it.

    Returns n, or -1 if ``from_seq`` is before the slot's position (no longer protected). A
    sidecar reads, persists, then :func:`commit`-s, so a crash in between loses nothing.
    """
    if dst.itemsize != ctrl[C_ITEMSIZE]:
        return -1
    b = C_SLOT0 + slot * CL
    if from_seq < load_acquire(ctrl, b + S_POS):
        return -1
    n = load_acquire(ctrl, C_PROD) - from_seq
    if n > max_n:
        n = max_n
    if n > dst.shape[0]:
        n = dst.shape[0]
    if n < 0:
        n = 0
    _copy_out(records, ctrl, from_seq, dst, n)
    return n


@numba.njit(**_J)
def commit(ctrl, slot, seq):
    """Advance gating ``slot`` to ``seq`` (everything below is consumed). False if out of range."""
    b = C_SLOT0 + slot * CL
    if seq < load_relaxed(ctrl, b + S_POS) or seq > load_acquire(ctrl, C_PROD):
        return False
    store_release(ctrl, b + S_POS, seq)
    return True


@numba.njit(**_J)
def journal_read(records, ctrl, from_seq, dst, max_n):
    """Non-gating read of a journal from ``from_seq`` (works on a read-only mapping).

    Returns n >= 0 records copied into ``dst``, or a negative value when the reader was lapped:
    ``-(resync + 1)`` where ``resync`` (see :func:`resync_seq`) is where to continue — half a ring
    behind the producer. Records copied before the lap was detected are not reported.
    ``dst`` must have the ring's item size (else nothing is read and 0 is returned).
    """
    if dst.itemsize != ctrl[C_ITEMSIZE]:
        return 0
    cap = ctrl[C_CAPACITY]
    mask = ctrl[C_MASK]
    isz = ctrl[C_ITEMSIZE]
    prod = load_acquire(ctrl, C_PROD)
    n = prod - from_seq
    if n > max_n:
        n = max_n
    if n > dst.shape[0]:
        n = dst.shape[0]
    if n < 0:
        n = 0                               # ahead of the producer: nothing yet
    lapped = from_seq < prod - cap or from_seq < 0
    k = 0
    while not lapped and k < n:
        s = from_seq + k
        off = (s & mask) * isz
        if load_acquire_at(records, off) != s:
            lapped = True
            break
        copy_bytes(dst, k * isz, records, off, isz)
        fence_acquire()                     # the copy's loads complete before the re-check
        if load_relaxed_at(records, off) != s:
            lapped = True
            break
        k += 1
    if lapped:
        r = load_acquire(ctrl, C_PROD) - cap // 2
        if r < 0:
            r = 0
        return -(r + 1)
    return n


def resync_seq(ret: int) -> int:
    """The sequence to continue from, given a negative :func:`journal_read` result."""
    return -ret - 1


@numba.njit(**_J)
def register_slot(ctrl, pid, start_ticks):
    """Claim a free gating slot; it starts at the current cursor. Returns slot or -1 (none)."""
    for i in range(ctrl[C_N_GATING]):
        b = C_SLOT0 + i * CL
        if compare_exchange(ctrl, b + S_STATE, SLOT_FREE, SLOT_CLAIMING):
            c0 = load_acquire(ctrl, C_PROD)
            store_release(ctrl, b + S_POS, c0)
            store_release(ctrl, b + S_PID, pid)
            store_release(ctrl, b + S_START, start_ticks)
            store_release(ctrl, b + S_STATE, SLOT_ACTIVE)
            fence_seq_cst()                        # pairs with the producer's gate refresh
            c1 = load_acquire(ctrl, C_PROD)
            store_release(ctrl, b + S_POS, c1)
            return i
    return -1


@numba.njit(**_J)
def release_slot(ctrl, slot):
    """Stop gating the producer with ``slot`` (explicit: a gone consumer holds it until then)."""
    store_release(ctrl, C_SLOT0 + slot * CL + S_STATE, SLOT_FREE)


@numba.njit(**_J)
def wait_available(ctrl, slot, min_n, timeout_ns):
    """Busy-poll (pause, then yield) until ``min_n`` records wait for ``slot``; returns count."""
    t0 = monotonic_ns()
    spins = 0
    while True:
        a = available(ctrl, slot)
        if a >= min_n:
            return a
        spins += 1
        if spins < 4096:
            cpu_pause()
        else:
            sched_yield()
        if (spins & 63) == 0 and monotonic_ns() - t0 > timeout_ns:
            return a


# ============================================================== Python face =================
class Ring:
    """A ring in a shared-memory segment. ``records`` and ``ctrl`` are what kernels receive."""

    def __init__(self, seg: Segment) -> None:
        meta = seg.meta
        if meta.get("kind") != "ring":
            raise SegmentError(f"{seg.path}: is a {meta.get('kind')!r} segment, not a ring")
        try:
            self.dtype = dtype_from_json(meta["dtype"])
            self.capacity = int(meta["capacity"])
            self.n_gating = int(meta["n_gating"])
            self.ring_kind = str(meta["ring_kind"])
            rec_off = int(meta["records_offset"])
        except (KeyError, TypeError, ValueError) as e:
            raise SegmentError(f"{seg.path}: ring description incomplete: {e!r}") from None
        self.segment = seg
        self.ctrl: np.ndarray = seg.array(0, np.int64, ctrl_words(self.n_gating))
        self.records: np.ndarray = seg.array(rec_off, self.dtype, self.capacity)
        cap = self.capacity
        if cap < 2 or cap & (cap - 1) or int(self.ctrl[C_CAPACITY]) != cap \
                or int(self.ctrl[C_MASK]) != cap - 1 \
                or int(self.ctrl[C_ITEMSIZE]) != self.dtype.itemsize \
                or int(self.ctrl[C_N_GATING]) != self.n_gating \
                or self.ring_kind not in KINDS or int(self.ctrl[C_KIND]) != KINDS[self.ring_kind]:
            raise SegmentError(f"{seg.path}: control block disagrees with the description")

    # ------------------------------------------------------------- create / attach -----------
    @classmethod
    def create(cls, instance: str, name: str, dtype: Any, capacity: int, kind: str = "queue",
               n_gating: int = 1, policy: str = "block", *, timeout_ns: int = 1_000_000_000,
               spin: int = 10_000, reserve_gating: bool = True,
               reclaim_dead: bool = False, identity: dict[str, Any] | None = None) -> "Ring":
        """Create and own a ring.

        ``capacity`` must be a power of two. A queue has exactly one gating slot, active from
        creation. A journal's ``n_gating`` slots start *active at 0* when ``reserve_gating``
        (so no event is lost before the sidecar attaches: it takes the slot over with
        :meth:`open_slot`), else free (consumers :meth:`register`). ``identity`` (JSON values,
        e.g. ``{"boot": "k3x9q1"}``) is stored in the description for consumers that must tell
        one producer run from the next (:attr:`boot_id`); with ``reclaim_dead``, a dead
        producer's journal that still holds unconsumed records is never replaced: it is first
        kept aside (:func:`keep_if_undrained`).
        """
        dt = np.dtype(dtype)
        if kind not in KINDS:
            raise ValueError(f"ring kind must be one of {sorted(KINDS)}, got {kind!r}")
        if policy not in POLICIES:
            raise ValueError(f"ring policy must be one of {sorted(POLICIES)}, got {policy!r}")
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, got {capacity}")
        if kind == "queue" and n_gating != 1:
            raise ValueError("a queue has exactly one consumer (n_gating=1)")
        if not 0 <= n_gating <= MAX_GATING:
            raise ValueError(f"n_gating must be in 0..{MAX_GATING}, got {n_gating}")
        if dt.fields is None:
            raise ValueError("ring records must be a numpy structured dtype")
        if kind == "journal":
            first = min(dt.fields.items(), key=lambda kv: kv[1][1])
            if dt.names[0] != "seq" or dt.fields["seq"][0] != np.dtype(np.int64) \
                    or dt.fields["seq"][1] != 0 or first[0] != "seq":
                raise ValueError("a journal dtype must start with an int64 field 'seq' at offset 0")
            if dt.itemsize % 8:
                raise ValueError(f"a journal dtype's itemsize must be a multiple of 8, "
                                 f"got {dt.itemsize}")
        if timeout_ns < 0 or spin < 0:
            raise ValueError("timeout_ns and spin must be >= 0")
        cw = ctrl_words(n_gating)
        rec_off = ((cw * 8 + CACHE_LINE - 1) // CACHE_LINE) * CACHE_LINE
        meta = {"kind": "ring", "ring_kind": kind, "dtype": dtype_to_json(dt),
                "capacity": capacity, "n_gating": n_gating, "policy": policy,
                "records_offset": rec_off}
        if identity:
            meta["identity"] = dict(identity)
        def init(seg: Segment) -> None:
            c = seg.array(0, np.int64, cw)
            c[C_CAPACITY], c[C_MASK], c[C_KIND] = capacity, capacity - 1, KINDS[kind]
            c[C_POLICY], c[C_N_GATING], c[C_TIMEOUT_NS] = POLICIES[policy], n_gating, timeout_ns
            c[C_SPIN], c[C_ITEMSIZE] = spin, dt.itemsize
            for i in range(n_gating):
                if kind == "queue" or reserve_gating:
                    c[C_SLOT0 + i * CL + S_STATE] = SLOT_ACTIVE
            if kind == "journal":  # no record is valid until stamped
                seg.array(rec_off, np.int64, dt.itemsize * capacity // 8)[:: dt.itemsize // 8] = -1

        if reclaim_dead and kind == "journal":
            keep_if_undrained(instance, name)
        seg = Segment.create(instance, name, rec_off + dt.itemsize * capacity, meta,
                             reclaim_dead=reclaim_dead, init=init)
        return cls(seg)

    @classmethod
    def attach(cls, instance: str, name: str, readonly: bool = False,
               dtype: Any = None) -> "Ring":
        """Attach to an existing ring; ``readonly=True`` for monitors (non-gating readers).

        With ``dtype`` given, refuses a ring whose record layout differs.
        """
        seg = Segment.attach(instance, name, readonly=readonly, kind="ring")
        try:
            r = cls(seg)
        except SegmentError:
            seg.close()
            raise
        if dtype is not None and np.dtype(dtype) != r.dtype:
            seg.close()
            raise SegmentError(f"{seg.path}: ring records are {r.dtype}, expected {np.dtype(dtype)}")
        return r

    # ------------------------------------------------------------- producer -----------------
    def publish(self, arr: np.ndarray) -> int:
        """Publish records (policy applies when full); returns how many were published."""
        self._writable("publish")
        a = np.ascontiguousarray(arr)
        if a.dtype != self.dtype:
            raise TypeError(f"records of dtype {a.dtype} cannot go into a ring of {self.dtype}")
        return int(publish_batch(self.records, self.ctrl, a.reshape(-1), a.size))

    # ------------------------------------------------------------- gating consumers ----------
    def consume(self, slot: int = 0, max_n: int = 1 << 16) -> np.ndarray:
        """Copy and consume up to ``max_n`` records for gating ``slot``."""
        self._check_slot(slot)
        self._writable("consume")
        dst = np.empty(max_n, self.dtype)
        n = consume_batch(self.records, self.ctrl, slot, dst, max_n)
        return dst[:n]

    def register(self) -> int:
        """Claim a free gating slot starting at the current cursor; raises if none is free."""
        self._writable("register a gating slot")
        st = process_start_ticks(os.getpid()) or 0
        s = int(register_slot(self.ctrl, os.getpid(), st))
        if s < 0:
            raise SegmentError(f"{self.segment.path}: all {self.n_gating} gating slots are taken")
        return s

    def open_slot(self, slot: int, start_seq: int | None = None) -> int:
        """Take over a reserved/active slot (e.g. a restarted sidecar), optionally moving it
        forward to ``start_seq`` (e.g. last persisted + 1). Returns the slot's position."""
        self._check_slot(slot)
        self._writable("open a gating slot")
        b = C_SLOT0 + slot * CL
        if int(load_acquire(self.ctrl, b + S_STATE)) != SLOT_ACTIVE:
            raise SegmentError(f"{self.segment.path}: slot {slot} is not active; use register()")
        store_release(self.ctrl, b + S_PID, os.getpid())
        store_release(self.ctrl, b + S_START, process_start_ticks(os.getpid()) or 0)
        pos = int(load_acquire(self.ctrl, b + S_POS))
        if start_seq is not None and start_seq != pos:
            if not commit(self.ctrl, slot, start_seq):
                raise SegmentError(
                    f"{self.segment.path}: slot {slot} is at {pos}, cursor at {self.cursor}: "
                    f"cannot start at {start_seq} (records before {pos} may be overwritten)")
            pos = start_seq
        return pos

    def release_slot(self, slot: int) -> None:
        """Stop gating with ``slot``: the producer no longer waits for it."""
        self._check_slot(slot)
        release_slot(self.ctrl, slot)

    def release_dead_slots(self) -> list[int]:
        """Release active slots whose recorded consumer pid is dead; returns them."""
        out = []
        for i in range(self.n_gating):
            b = C_SLOT0 + i * CL
            pid, st = int(self.ctrl[b + S_PID]), int(self.ctrl[b + S_START])
            if int(load_acquire(self.ctrl, b + S_STATE)) == SLOT_ACTIVE and pid > 0 \
                    and not pid_alive(pid, st):
                release_slot(self.ctrl, i)
                out.append(i)
        return out

    def slot_position(self, slot: int) -> int:
        self._check_slot(slot)
        return int(load_acquire(self.ctrl, C_SLOT0 + slot * CL + S_POS))

    def _writable(self, what: str) -> None:
        if self.segment.readonly:
            raise SegmentError(f"{self.segment.path}: cannot {what} through a read-only mapping "
                               f"(monitors read journals with reader())")

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.n_gating:
            raise ValueError(f"slot {slot} out of range 0..{self.n_gating - 1}")

    # ------------------------------------------------------------- non-gating readers -------
    def reader(self, from_seq: int | None = None) -> "JournalReader":
        """A non-gating reader (journal only) starting at ``from_seq`` (default: the cursor)."""
        if self.ring_kind != "journal":
            raise SegmentError(f"{self.segment.path}: non-gating readers need a journal ring")
        return JournalReader(self, self.cursor if from_seq is None else from_seq)

    # ------------------------------------------------------------- observation --------------
    @property
    def cursor(self) -> int:
        return int(load_acquire(self.ctrl, C_PROD))

    @property
    def journal_id(self) -> int:
        """Identity of this ring's run: its creation time (ns), unique per create, kept when the
        file is renamed aside (a restarted producer's new ring has another one)."""
        return self.segment.created_ns

    @property
    def boot_id(self) -> str:
        """The producer's boot id from ``identity`` at creation ("" when none was given)."""
        return str(self.segment.meta.get("identity", {}).get("boot", ""))

    # Observation in plain Python reads: works on read-only mappings without compiling the
    # kernels for them, and an aligned 8-byte load is never torn. A value may be a moment old.
    def unconsumed(self) -> int:
        """Records published and not yet released by the slowest active gating slot (0 without
        one): what a journal's gating consumers have still to take."""
        c = self.ctrl
        prod = int(c[C_PROD])
        pos = [int(c[C_SLOT0 + i * CL + S_POS]) for i in range(self.n_gating)
               if int(c[C_SLOT0 + i * CL + S_STATE]) == SLOT_ACTIVE]
        return max(0, prod - min(pos)) if pos else 0

    def is_named(self, instance: str, name: str) -> bool:
        """Whether ``name`` still leads to this ring's file (not renamed aside, not replaced)."""
        try:
            return os.stat(segment_path(instance, name)).st_ino == self.segment.inode
        except FileNotFoundError:
            return False

    def consumer_pid(self, slot: int = 0) -> int:
        """The pid recorded in gating ``slot`` if that process is alive and the slot active, else 0
        (a reserved slot nobody took over, or a consumer that died)."""
        self._check_slot(slot)
        b = C_SLOT0 + slot * CL
        c = self.ctrl
        pid, st = int(c[b + S_PID]), int(c[b + S_START])
        if int(c[b + S_STATE]) != SLOT_ACTIVE or pid <= 0 or not pid_alive(pid, st):
            return 0
        return pid

    def stats(self) -> dict[str, int]:
        c = self.ctrl
        return {"published": self.cursor, "failed": int(load_relaxed(c, C_FAILED)),
                "full": int(load_relaxed(c, C_FULL)), "waits": int(load_relaxed(c, C_WAITS)),
                "timeouts": int(load_relaxed(c, C_TIMEOUTS)),
                "wait_ns": int(load_relaxed(c, C_WAIT_NS))}

    def close(self) -> None:
        self.records = self.ctrl = None  # type: ignore[assignment]
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


# ============================================================== kept journals ===============
KEPT_INFIX = "-kept-"


def kept_name(name: str, journal_id: int) -> str:
    """The name a journal ``name`` is kept under: ``<name>-kept-<journal_id>``."""
    return f"{name}{KEPT_INFIX}{journal_id}"


def kept_rings(instance: str, name: str) -> list[str]:
    """Names of the kept journals of ``name``, oldest run (smallest journal id) first."""
    pre = f"{PREFIX}.{instance}.{name}{KEPT_INFIX}"
    segment_path(instance, name)  # validates both parts
    out = []
    for f in os.listdir(SHM_DIR):
        if f.startswith(pre) and f[len(pre):].isdigit():
            out.append((int(f[len(pre):]), f[len(PREFIX) + len(instance) + 2:]))
    return [n for _, n in sorted(out)]


def keep_if_undrained(instance: str, name: str) -> str | None:
    """Before a producer replaces journal ``name``: a dead producer's journal whose gating
    consumers have not taken every record is renamed to :func:`kept_name` (atomic; processes
    mapping it keep their mapping) and that name returned, so nothing replaces it until a
    consumer drained it and removed it. None when there is nothing to keep (no file, a drained
    journal, no gating slot, or not a journal); a live owner's file is never touched.
    """
    try:
        ring = Ring.attach(instance, name, readonly=True)
    except SegmentError:
        return None  # absent, or not a valid ring: the creator's reclaim decides
    try:
        if ring.ring_kind != "journal" or ring.segment.owner_alive() or ring.unconsumed() == 0:
            return None
        keep = kept_name(name, ring.journal_id)
        try:
            os.rename(segment_path(instance, name), segment_path(instance, keep))
        except FileNotFoundError:
            return None  # someone else moved it meanwhile
        return keep
    finally:
        ring.close()


def remove_kept(ring: Ring, instance: str, name: str) -> str | None:
    """A drained kept journal goes: unlink ``ring``'s kept name if it still leads to this very
    ring, its producer is dead and its gating consumers took every record. Returns the name
    removed, or None (nothing was removed)."""
    keep = kept_name(name, ring.journal_id)
    if not ring.is_named(instance, keep) or ring.segment.owner_alive() or ring.unconsumed():
        return None
    try:
        os.unlink(segment_path(instance, keep))
    except FileNotFoundError:
        return None
    return keep


class JournalReader:
    """Non-gating journal reader: never slows the producer, learns when it was lapped."""

    def __init__(self, ring: Ring, from_seq: int) -> None:
        self.ring = ring
        self.next_seq = from_seq
        self.laps = 0
        self.missed = 0  # sequences skipped by resynchronising

    def read(self, max_n: int = 4096) -> np.ndarray:
        """Records from ``next_seq`` on; after a lap, resynchronises and counts what was missed."""
        dst = np.empty(max_n, self.ring.dtype)
        n = journal_read(self.ring.records, self.ring.ctrl, self.next_seq, dst, max_n)
        if n < 0:
            r = resync_seq(n)
            self.laps += 1
            self.missed += max(0, r - self.next_seq)
            self.next_seq = r
            n = journal_read(self.ring.records, self.ring.ctrl, self.next_seq, dst, max_n)
            if n < 0:
                return dst[:0]
        self.next_seq += n
        return dst[:n]


def warmup_dtype(dtype: Any, readonly_too: bool = True) -> None:
    """Compile (or load from numba's cache) the ring kernels for records of ``dtype``.

    numba specialises on the record type, so a process calls this at start for each ring dtype
    it uses (before READY=1), with ``readonly_too`` also for the read-only-mapping variants a
    monitor uses. Process-local arrays only: nothing is created in /dev/shm.
    """
    dt = np.dtype(dtype)
    for kind in (KIND_QUEUE, KIND_JOURNAL):
        ctrl = np.zeros(ctrl_words(1), np.int64)
        ctrl[C_CAPACITY], ctrl[C_MASK], ctrl[C_KIND], ctrl[C_POLICY] = 8, 7, kind, POLICY_FAIL
        ctrl[C_N_GATING], ctrl[C_ITEMSIZE], ctrl[C_SLOT0 + S_STATE] = 1, dt.itemsize, SLOT_ACTIVE
        recs = np.zeros(8, dt)
        src = np.zeros(4, dt)
        if kind == KIND_JOURNAL and dt.itemsize % 8 == 0:
            recs.view(np.int64)[:: dt.itemsize // 8] = -1
        publish_batch(recs, ctrl, src, 4)
        consume_batch(recs, ctrl, 0, src, 4)
        read_batch(recs, ctrl, 0, 4, src, 4)
        journal_read(recs, ctrl, 0, src, 4)
        if readonly_too:
            rr, rc = recs.copy(), ctrl.copy()
            rr.setflags(write=False)
            rc.setflags(write=False)
            journal_read(rr, rc, 0, src, 4)
            available(rc, 0)


def warmup() -> None:
    """Compile the ring kernels for a 64-byte test dtype, and the dtype-independent ones."""
    warmup_dtype(np.dtype([("seq", np.int64), ("v", np.int64, (7,))]))
    ctrl = np.zeros(ctrl_words(1), np.int64)
    ctrl[C_N_GATING] = 1
    commit(ctrl, 0, 0)
    available(ctrl, 0)
    wait_available(ctrl, 0, 0, 0)
    release_slot(ctrl, 0)
    register_slot(ctrl, 0, 0)
