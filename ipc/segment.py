"""Named shared-memory segments under ``/dev/shm`` with a self-describing, versioned header.

A segment is the file ``/dev/shm/bot4d.<instance>.<name>``, created by one *owner* (the daemon)
and attached by others (the sidecar read-write, monitors read-only with ``PROT_READ``). It is
mapped with ``os.open`` + ``mmap``, never with ``multiprocessing.shared_memory`` (Python 3.11's
resource tracker unlinks a segment when a process that merely attached to it exits).

Header (the first ``HEADER_SIZE`` = 4096 bytes; the payload starts page- and so 64-byte-aligned):

=========  ===========================================================================
word       meaning (int64 words; byte offset = 8 * word)
=========  ===========================================================================
0          magic ``b"BOT4DSHM"``
1          layout version (:data:`LAYOUT_VERSION`)
2          header size in bytes
3          total size in bytes (header + payload)
4          owner pid
5          owner process start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22),
           so a recycled pid is not mistaken for a live owner
6          creation time, ns since the epoch (CLOCK_REALTIME)
7          state: 0 = being initialised, 1 = ready (published last, with release ordering)
8          heartbeat, CLOCK_MONOTONIC ns (own cache line: the owner writes it periodically)
16         length of the JSON description at byte 256
=========  ===========================================================================

Bytes 256..4095 hold a JSON description: the segment ``kind``, its parameters and its record
dtypes (``numpy.lib.format.dtype_to_descr``), so a reader can refuse a layout it does not know
and rebuild the exact dtypes of a segment it did not create.

Ownership: a segment is never clobbered while its owner lives. ``create`` on an existing name
fails with :class:`SegmentExists` naming the owner and whether it is alive; with
``reclaim_dead=True`` (or :func:`reclaim_if_dead`) a segment whose owner is dead (pid gone, or
the pid now belongs to a process with another start time) is removed and created afresh.
Attaching to a dead owner's segment is allowed: a SIGKILLed daemon leaves every published
record readable. A new segment is built under a temporary name and published with ``link(2)``
only when complete, so a half-built segment is never visible under its name.

Identity: ``Segment.inode`` is the mapped file's inode, recorded at create/attach: a long-lived
attacher compares it with the name's current inode to learn that the name now leads elsewhere
(the owner restarted and created a new segment, or the file was renamed aside) while its mapping
still shows the old file.

Closing: ``mmap.close()`` raises ``BufferError`` while numpy views of the mapping are alive, so
:meth:`Segment.close` drops the segment's own views and closes the map only when nothing else
still holds one; otherwise the map is released when the last view is garbage-collected.
"""
from __future__ import annotations

import ast
import json
import mmap
import os
import re
import time
from typing import Any, Callable

import numpy as np

SHM_DIR = "/dev/shm"
PREFIX = "bot4d"
MAGIC = int.from_bytes(b"BOT4DSHM", "little")
LAYOUT_VERSION = 1
HEADER_SIZE = 4096
META_OFFSET = 256
META_MAX = HEADER_SIZE - META_OFFSET
CACHE_LINE = 64

H_MAGIC, H_VERSION, H_HEADER_SIZE, H_TOTAL_SIZE = 0, 1, 2, 3
H_OWNER_PID, H_OWNER_START, H_CREATED_NS, H_STATE = 4, 5, 6, 7
H_HEARTBEAT = 8
H_META_LEN = 16
STATE_INIT, STATE_READY = 0, 1

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SegmentError(Exception):
    """A segment cannot be created or attached; the message says which file and why."""


class SegmentExists(SegmentError):
    """``create`` found the name taken (by a live owner, or a dead one without reclaim)."""


def segment_path(instance: str, name: str) -> str:
    """``/dev/shm/bot4d.<instance>.<name>`` after validating both parts."""
    for what, v in (("instance", instance), ("name", name)):
        if not isinstance(v, str) or not _NAME_RE.match(v):
            raise SegmentError(f"invalid segment {what} {v!r}: use 1-64 of [A-Za-z0-9_-]")
    return os.path.join(SHM_DIR, f"{PREFIX}.{instance}.{name}")


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` (``/proc/<pid>/stat`` field 22), or None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] == b"Z":  # a zombie has exited; its segment is reclaimable
        return None
    return int(rest[19])


def pid_alive(pid: int, start_ticks: int) -> bool:
    """True when process ``pid`` exists and is the same process (same start time)."""
    if pid <= 0:
        return False
    st = process_start_ticks(pid)
    return st is not None and (start_ticks == 0 or st == start_ticks)


def dtype_to_json(dt: np.dtype) -> dict[str, Any]:
    """A dtype for the JSON description: the ``.npy`` descr (padding included) + aligned flag."""
    dt = np.dtype(dt)
    return {"descr": repr(np.lib.format.dtype_to_descr(dt)), "aligned": bool(dt.isalignedstruct)}


def dtype_from_json(d: Any) -> np.dtype:
    """Inverse of :func:`dtype_to_json` (literal parsing only: no code is evaluated)."""
    try:
        dt = np.lib.format.descr_to_dtype(ast.literal_eval(d["descr"]))
        if d.get("aligned") and dt.names:
            # same offsets and size, but flagged aligned: numba treats it as the same record type
            dt = np.dtype({"names": list(dt.names),
                           "formats": [dt.fields[n][0] for n in dt.names],
                           "offsets": [dt.fields[n][1] for n in dt.names],
                           "itemsize": dt.itemsize}, align=True)
        return dt
    except (ValueError, TypeError, SyntaxError, KeyError) as e:
        raise SegmentError(f"undecodable dtype description {str(d)[:80]!r}: {e}") from None


class Segment:
    """One mapped segment. Use :meth:`create` or :meth:`attach`, not the constructor.

    ``header`` is an int64 view of the header words, ``payload`` a uint8 view of everything after
    the header (64-byte aligned), ``meta`` the decoded JSON description.
    """

    def __init__(self, path: str, mm: mmap.mmap, readonly: bool, owner: bool, inode: int = 0) -> None:
        self.path = path
        self.readonly = readonly
        self.owner = owner
        # the file this mapping is of: a name can be renamed aside or replaced, the inode cannot
        self.inode = inode
        self._mm: mmap.mmap | None = mm
        buf = np.frombuffer(mm, dtype=np.uint8)
        self.header: np.ndarray = buf[:HEADER_SIZE].view(np.int64)
        self.payload: np.ndarray = buf[HEADER_SIZE:]
        self.meta: dict[str, Any] = {}

    # ---------------------------------------------------------------- create / attach --------
    @classmethod
    def create(cls, instance: str, name: str, payload_size: int, meta: dict[str, Any] | None = None,
               *, reclaim_dead: bool = False,
               init: Callable[["Segment"], None] | None = None) -> "Segment":
        """Create and own a new segment of ``payload_size`` bytes after the header.

        The segment is built under a private temporary name, ``init(seg)`` fills its payload,
        and only then is it published under its real name with ``link(2)`` (atomic, and fails if
        the name exists): nobody can ever attach a half-built segment, and two creators cannot
        both win. Fails with :class:`SegmentExists` if the name is taken by a live owner; a dead
        owner's segment is replaced only with ``reclaim_dead=True``.
        """
        path = segment_path(instance, name)
        if payload_size < 0:
            raise SegmentError(f"{path}: negative payload size {payload_size}")
        meta = dict(meta or {})
        blob = json.dumps(meta, separators=(",", ":")).encode()
        if len(blob) > META_MAX:
            raise SegmentError(f"{path}: description is {len(blob)} bytes, max {META_MAX}")
        if os.path.exists(path) and not (reclaim_dead and reclaim_if_dead(instance, name)):
            raise SegmentExists(_exists_message(path))
        total = HEADER_SIZE + ((payload_size + CACHE_LINE - 1) // CACHE_LINE) * CACHE_LINE
        tmp = f"{path}.new{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                os.ftruncate(fd, total)
                mm = mmap.mmap(fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
            seg = cls(path, mm, readonly=False, owner=True, inode=inode)
            h = seg.header
            h[H_MAGIC] = MAGIC
            h[H_VERSION] = LAYOUT_VERSION
            h[H_HEADER_SIZE] = HEADER_SIZE
            h[H_TOTAL_SIZE] = total
            h[H_OWNER_PID] = os.getpid()
            h[H_OWNER_START] = process_start_ticks(os.getpid()) or 0
            h[H_CREATED_NS] = time.time_ns()
            h[H_HEARTBEAT] = time.monotonic_ns()
            h[H_META_LEN] = len(blob)
            np.frombuffer(mm, np.uint8)[META_OFFSET:META_OFFSET + len(blob)] = \
                np.frombuffer(blob, np.uint8)
            seg.meta = meta
            if init is not None:
                init(seg)
            from ipc.atomics import store_release

            store_release(h, H_STATE, STATE_READY)
            for attempt in range(2):
                try:
                    os.link(tmp, path)
                    break
                except FileExistsError:
                    if attempt == 0 and reclaim_dead and reclaim_if_dead(instance, name):
                        continue
                    seg.close()
                    raise SegmentExists(_exists_message(path)) from None
        finally:
            os.unlink(tmp)
        return seg

    @classmethod
    def attach(cls, instance: str, name: str, readonly: bool = True,
               *, kind: str | None = None, wait_ready_s: float = 1.0) -> "Segment":
        """Map an existing segment; ``readonly=True`` maps it ``PROT_READ`` (monitors).

        Refuses (``SegmentError``) a missing file, a wrong magic, an unknown layout version, a
        file shorter than its header says (truncated), an undecodable description, or a segment
        of another ``kind`` than expected.
        """
        path = segment_path(instance, name)
        try:
            fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError:
            raise SegmentError(f"{path}: no such segment (is the owner running?)") from None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if size < HEADER_SIZE:
                raise SegmentError(
                    f"{path}: truncated segment: {size} bytes, smaller than the {HEADER_SIZE}-byte "
                    f"header")
            head = np.frombuffer(os.pread(fd, HEADER_SIZE, 0), np.int64)
            deadline = time.monotonic() + wait_ready_s
            # a creator may still be writing the header: wait briefly for READY
            while head[H_MAGIC] == MAGIC and head[H_STATE] != STATE_READY \
                    and time.monotonic() < deadline:
                time.sleep(0.001)
                head = np.frombuffer(os.pread(fd, HEADER_SIZE, 0), np.int64)
            _validate_header(path, head, size)
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(fd, int(head[H_TOTAL_SIZE]), mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        seg = cls(path, mm, readonly=readonly, owner=False, inode=st.st_ino)
        mlen = int(seg.header[H_META_LEN])
        raw = bytes(np.frombuffer(mm, np.uint8)[META_OFFSET:META_OFFSET + mlen])
        try:
            seg.meta = json.loads(raw)
        except ValueError as e:
            seg.close()
            raise SegmentError(f"{path}: corrupt segment description: {e}") from None
        if kind is not None and seg.meta.get("kind") != kind:
            got = seg.meta.get("kind")
            seg.close()
            raise SegmentError(f"{path}: is a {got!r} segment, expected {kind!r}")
        return seg

    # ---------------------------------------------------------------- liveness ---------------
    @property
    def owner_pid(self) -> int:
        return int(self.header[H_OWNER_PID])

    @property
    def created_ns(self) -> int:
        return int(self.header[H_CREATED_NS])

    def heartbeat(self, now_ns: int | None = None) -> None:
        """Owner: stamp the heartbeat (CLOCK_MONOTONIC ns). Monitors read it with heartbeat_age."""
        if self.readonly:
            raise SegmentError(f"{self.path}: heartbeat through a read-only mapping")
        from ipc.atomics import store_release

        store_release(self.header, H_HEARTBEAT, time.monotonic_ns() if now_ns is None else now_ns)

    def heartbeat_ns(self) -> int:
        from ipc.atomics import load_acquire

        return int(load_acquire(self.header, H_HEARTBEAT))

    def heartbeat_age_s(self) -> float:
        return (time.monotonic_ns() - self.heartbeat_ns()) / 1e9

    def owner_alive(self) -> bool:
        """The owner process (pid and start time recorded at creation) still exists."""
        return pid_alive(int(self.header[H_OWNER_PID]), int(self.header[H_OWNER_START]))

    # ---------------------------------------------------------------- views -------------------
    def array(self, offset: int, dtype: np.dtype, count: int) -> np.ndarray:
        """A numpy view of ``count`` items of ``dtype`` at payload byte ``offset``."""
        dt = np.dtype(dtype)
        end = offset + dt.itemsize * count
        if offset < 0 or end > self.payload.size:
            raise SegmentError(f"{self.path}: view [{offset}, {end}) outside payload "
                               f"of {self.payload.size} bytes")
        return self.payload[offset:end].view(dt)

    def close(self) -> None:
        """Drop this segment's views and unmap (deferred while other views are alive)."""
        mm, self._mm = self._mm, None
        self.header = self.payload = None  # type: ignore[assignment]
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # other numpy views still hold the map; it is unmapped with the last one

    def unlink(self) -> None:
        """Remove the name from /dev/shm (mappings stay valid until closed)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Segment({self.path!r}, kind={self.meta.get('kind')!r}, owner_pid={self.owner_pid}"
                f", readonly={self.readonly})")


def _validate_header(path: str, head: np.ndarray, size: int) -> None:
    if int(head[H_MAGIC]) != MAGIC:
        raise SegmentError(f"{path}: not a bot4d segment (bad magic {int(head[H_MAGIC]):#018x})")
    if int(head[H_VERSION]) != LAYOUT_VERSION:
        raise SegmentError(f"{path}: layout version {int(head[H_VERSION])} is not supported by "
                           f"this reader (knows version {LAYOUT_VERSION}); upgrade the reader or "
                           f"restart the owner")
    if int(head[H_HEADER_SIZE]) != HEADER_SIZE:
        raise SegmentError(f"{path}: header size {int(head[H_HEADER_SIZE])}, expected {HEADER_SIZE}")
    if int(head[H_STATE]) != STATE_READY:
        raise SegmentError(f"{path}: segment was never completely initialised (creator pid "
                           f"{int(head[H_OWNER_PID])} died or is still creating it)")
    total = int(head[H_TOTAL_SIZE])
    if total < HEADER_SIZE or size < total:
        raise SegmentError(f"{path}: truncated segment: file has {size} bytes, header says {total}")
    if not 0 <= int(head[H_META_LEN]) <= META_MAX:
        raise SegmentError(f"{path}: corrupt description length {int(head[H_META_LEN])}")


def _read_owner(path: str) -> tuple[int, int] | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except FileNotFoundError:
        return None
    if len(raw) < 8 * (H_OWNER_START + 1):
        return (0, 0)
    head = np.frombuffer(raw[: 8 * (H_OWNER_START + 1)], np.int64)
    if int(head[H_MAGIC]) != MAGIC:
        return (0, 0)
    return int(head[H_OWNER_PID]), int(head[H_OWNER_START])


def _exists_message(path: str) -> str:
    own = _read_owner(path)
    if own is None:
        return f"{path}: exists"
    pid, start = own
    if pid_alive(pid, start):
        return f"{path}: already owned by live pid {pid}; refusing to clobber it"
    return (f"{path}: left by dead owner pid {pid}; pass reclaim_dead=True (or call "
            f"reclaim_if_dead) to replace it")


def owner_alive(instance: str, name: str) -> bool:
    """Whether the segment exists and its owner process is alive."""
    own = _read_owner(segment_path(instance, name))
    return own is not None and pid_alive(*own)


def reclaim_if_dead(instance: str, name: str) -> bool:
    """Remove the segment if its owner is dead (or it is not a valid segment at all).

    Returns True if it was removed (or absent), False if a live owner holds it: a live owner's
    segment is never removed. Processes that still map the old segment keep their mapping.
    The file is first renamed aside (atomic) and its owner re-checked there, so a segment that a
    live process re-created under the name meanwhile is put back, not deleted. Reclaiming is
    meant for the would-be owner (one daemon per instance name).
    """
    path = segment_path(instance, name)
    own = _read_owner(path)
    if own is None:
        return True
    if pid_alive(*own):
        return False
    tomb = f"{path}.dead{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(path, tomb)
    except FileNotFoundError:
        return True
    own = _read_owner(tomb)
    if own is not None and pid_alive(*own):     # raced with a new live owner: give it back
        try:
            os.link(tomb, path)
        except FileExistsError:
            pass
        os.unlink(tomb)
        return False
    os.unlink(tomb)
    return True


def list_segments(instance: str) -> list[str]:
    """Names of this instance's segments in /dev/shm."""
    segment_path(instance, "x")
    pre = f"{PREFIX}.{instance}."
    return sorted(f[len(pre):] for f in os.listdir(SHM_DIR)
                  if f.startswith(pre) and "." not in f[len(pre):])  # not temporary/dead files
