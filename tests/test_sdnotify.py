"""sd_notify against a datagram socket of the test's own (systemd is not PID 1 here)."""
import os
import socket

import pytest

from bot4d.sdnotify import Notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(tmp_path / "notify.sock")
        s.bind(addr)
        env_addr = addr
    else:
        name = f"bot4d-test-{os.getpid()}-{id(s)}"
        s.bind("\0" + name)
        env_addr = "@" + name
    s.settimeout(2)
    yield s, env_addr
    s.close()


def test_ready_watchdog_status_stopping(listener):
    s, addr = listener
    n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "10000000"})
    assert n.ready("warming done; 2 shards")
    assert s.recv(4096) == b"READY=1\nSTATUS=warming done; 2 shards"
    assert n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"
    assert n.status("trading BTCUSDT ETHUSDT")
    assert s.recv(4096) == b"STATUS=trading BTCUSDT ETHUSDT"
    assert n.stopping()
    assert s.recv(4096) == b"STOPPING=1"
    assert n.watchdog_interval_s() == 5.0
    n.close()


def test_not_under_systemd_is_a_noop():
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    assert n.watchdog_interval_s() == 0.0


def test_watchdog_for_another_pid_is_ignored(listener):
    _, addr = listener
    assert Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_usec == 0


def test_malformed_field_refused(listener):
    _, addr = listener
    with pytest.raises(ValueError, match="KEY=value"):
        Notifier({"NOTIFY_SOCKET": addr}).notify("STATUS=a\nREADY=1")
