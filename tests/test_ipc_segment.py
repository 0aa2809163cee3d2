"""ipc.segment: named /dev/shm segments, read-only monitors, refusals, dead/live owners."""
import glob
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

from ipc import segment as S
from ipc.segment import Segment, SegmentError, SegmentExists

FORK = mp.get_context("fork")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def inst():
    name = f"t{os.getpid()}{uuid.uuid4().hex[:6]}"
    yield name
    for p in glob.glob(f"/dev/shm/bot4d.{name}.*"):
        os.unlink(p)


def test_create_attach_roundtrip_and_header(inst):
    dt = np.dtype([("seq", np.int64), ("px", np.int64), ("side", np.int8)], align=True)
    seg = Segment.create(inst, "a", 1000, {"kind": "raw", "dtype": S.dtype_to_json(dt)})
    assert seg.path == f"/dev/shm/bot4d.{inst}.a"
    assert os.path.getsize(seg.path) == 4096 + 1024          # payload rounded to cache lines
    seg.payload[:4] = [1, 2, 3, 4]
    mon = Segment.attach(inst, "a")
    assert mon.readonly and mon.owner_pid == os.getpid() and mon.owner_alive()
    assert mon.meta["kind"] == "raw" and S.dtype_from_json(mon.meta["dtype"]) == dt
    assert list(mon.payload[:4]) == [1, 2, 3, 4]
    assert mon.payload.ctypes.data % 64 == 0                  # payload is cache-line aligned
    assert abs(mon.created_ns / 1e9 - __import__("time").time()) < 60
    assert S.list_segments(inst) == ["a"]
    mon.close()
    seg.close()


def test_monitor_write_fails_numpy_and_os_level(inst):
    seg = Segment.create(inst, "ro", 4096, {"kind": "raw"})
    mon = Segment.attach(inst, "ro", readonly=True)
    with pytest.raises(ValueError, match="read-only"):
        mon.payload[0] = 1
    with pytest.raises(SegmentError, match="read-only"):
        mon.heartbeat()
    # below numpy: PROT_READ itself. A raw store through the monitor's mapping kills the writer
    # with SIGSEGV (in a child process, so the test survives it).
    code = ("import ctypes; from ipc.segment import Segment; "
            f"m = Segment.attach({inst!r}, 'ro', readonly=True); "
            "ctypes.memset(m.payload.ctypes.data, 7, 1); print('wrote')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60)
    assert p.returncode == -signal.SIGSEGV, (p.returncode, p.stdout, p.stderr)
    assert seg.payload[0] == 0
    mon.close()
    seg.close()


def _write_header_word(inst, name, word, value):
    w = Segment.attach(inst, name, readonly=False)
    w.header[word] = value
    w.close()


def test_refuses_bad_magic(inst):
    path = f"/dev/shm/bot4d.{inst}.junk"
    with open(path, "wb") as f:
        f.write(b"\0" * 8192)
    with pytest.raises(SegmentError, match="not a bot4d segment .bad magic"):
        Segment.attach(inst, "junk")


def test_refuses_unknown_layout_version(inst):
    Segment.create(inst, "v", 64, {"kind": "raw"})
    _write_header_word(inst, "v", S.H_VERSION, 99)
    with pytest.raises(SegmentError, match="layout version 99 is not supported"):
        Segment.attach(inst, "v")


@pytest.mark.parametrize("size", [100, 4096 + 10])
def test_refuses_truncated_segment(inst, size):
    seg = Segment.create(inst, "tr", 1 << 16, {"kind": "raw"})
    os.truncate(seg.path, size)
    with pytest.raises(SegmentError, match="truncated segment"):
        Segment.attach(inst, "tr")


def test_refuses_half_initialised_and_corrupt_description(inst):
    Segment.create(inst, "h", 64, {"kind": "raw"})
    _write_header_word(inst, "h", S.H_STATE, S.STATE_INIT)
    with pytest.raises(SegmentError, match="never completely initialised"):
        Segment.attach(inst, "h", wait_ready_s=0.01)
    Segment.create(inst, "j", 64, {"kind": "raw"})
    w = Segment.attach(inst, "j", readonly=False)
    np.frombuffer(w._mm, np.uint8)[S.META_OFFSET] = ord("#")
    w.close()
    with pytest.raises(SegmentError, match="corrupt segment description"):
        Segment.attach(inst, "j")


def test_refuses_wrong_kind_missing_and_bad_names(inst):
    Segment.create(inst, "k", 64, {"kind": "raw"})
    with pytest.raises(SegmentError, match="is a 'raw' segment, expected 'ring'"):
        Segment.attach(inst, "k", kind="ring")
    with pytest.raises(SegmentError, match="no such segment"):
        Segment.attach(inst, "missing")
    for bad in ("", "a/b", "..", "x" * 65, "a.b"):
        with pytest.raises(SegmentError, match="invalid segment name"):
            Segment.create(inst, bad, 64)
    with pytest.raises(SegmentError, match="description is"):
        Segment.create(inst, "big", 64, {"kind": "raw", "x": "y" * 5000})
    assert not os.path.exists(f"/dev/shm/bot4d.{inst}.big")


def _own_and_wait(inst, name, ready):
    seg = Segment.create(inst, name, 4096, {"kind": "raw"})
    seg.payload[0] = 42
    ready.set()
    import time
    time.sleep(60)   # until SIGKILLed (no Event.wait: a killed sleeper wedges Event.set)


def test_live_owner_never_clobbered_dead_owner_detected_and_reclaimed(inst):
    ready = FORK.Event()
    p = FORK.Process(target=_own_and_wait, args=(inst, "own", ready))
    p.start()
    try:
        assert ready.wait(30)
        mon = Segment.attach(inst, "own")
        assert mon.owner_pid == p.pid and mon.owner_alive()
        assert S.owner_alive(inst, "own")
        with pytest.raises(SegmentExists, match=f"owned by live pid {p.pid}"):
            Segment.create(inst, "own", 4096, reclaim_dead=True)
        assert S.reclaim_if_dead(inst, "own") is False
        assert mon.payload[0] == 42                    # untouched
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert not mon.owner_alive() and not S.owner_alive(inst, "own")
        with pytest.raises(SegmentExists, match=f"dead owner pid {p.pid}.*reclaim_dead=True"):
            Segment.create(inst, "own", 4096)
        # the dead owner's data is still readable by whoever attaches
        again = Segment.attach(inst, "own")
        assert again.payload[0] == 42
        again.close()
        new = Segment.create(inst, "own", 4096, {"kind": "raw"}, reclaim_dead=True)
        assert new.owner_pid == os.getpid() and new.payload[0] == 0
        assert mon.payload[0] == 42                    # old mapping stays valid
        mon.close()
        new.close()
    finally:
        if p.is_alive():
            p.kill()


def test_recycled_pid_is_not_a_live_owner(inst):
    seg = Segment.create(inst, "pid", 64, {"kind": "raw"})
    assert seg.owner_alive()
    seg.header[S.H_OWNER_START] += 1                   # same pid, other process start time
    assert not seg.owner_alive()
    assert S.reclaim_if_dead(inst, "pid") is True
    assert not os.path.exists(seg.path)


def test_heartbeat_visible_to_monitor(inst):
    seg = Segment.create(inst, "hb", 64, {"kind": "raw"})
    mon = Segment.attach(inst, "hb")
    seg.heartbeat(now_ns=12345)
    assert mon.heartbeat_ns() == 12345
    seg.heartbeat()
    assert 0 <= mon.heartbeat_age_s() < 60


def test_close_with_live_views_does_not_raise_and_unlink(inst):
    seg = Segment.create(inst, "c", 64, {"kind": "raw"})
    view = seg.array(0, np.int64, 8)
    seg.close()                 # mmap.close() would raise BufferError: deferred instead
    view[0] = 5                 # the mapping is still valid for the view
    seg.close()                 # idempotent
    seg.unlink()
    assert not os.path.exists(f"/dev/shm/bot4d.{inst}.c")
    with pytest.raises(SegmentError, match="outside payload"):
        Segment.create(inst, "d", 64, {"kind": "raw"}).array(0, np.int64, 9)


def _race_create(inst, barrier, out):
    barrier.wait(30)
    try:
        Segment.create(inst, "race", 1 << 20, {"kind": "raw"},
                       init=lambda seg: seg.payload.fill(7))
        out.put("won")
        import time
        time.sleep(2)
    except SegmentExists:
        out.put("lost")


def test_concurrent_creators_exactly_one_wins_and_nobody_sees_a_half_built_segment(inst):
    n = 3
    barrier, out = FORK.Barrier(n + 1), FORK.Queue()
    ps = [FORK.Process(target=_race_create, args=(inst, barrier, out)) for _ in range(n)]
    for p in ps:
        p.start()
    barrier.wait(30)
    seen = None
    import time
    t_end = time.monotonic() + 10
    while seen is None and time.monotonic() < t_end:
        try:
            seen = Segment.attach(inst, "race")
        except SegmentError as e:
            assert "no such segment" in str(e), e       # absent, or complete: nothing between
    results = sorted(out.get(timeout=30) for _ in ps)
    assert results == ["lost"] * (n - 1) + ["won"]
    assert seen is not None and (seen.payload == 7).all()   # init ran before publication
    for p in ps:
        p.join(30)
    assert S.list_segments(inst) == ["race"]                 # no temporary files left behind


def test_failed_init_leaves_nothing(inst):
    def boom(seg):
        raise RuntimeError("init failed")

    with pytest.raises(RuntimeError, match="init failed"):
        Segment.create(inst, "f", 64, {"kind": "raw"}, init=boom)
    assert glob.glob(f"/dev/shm/bot4d.{inst}.*") == []
