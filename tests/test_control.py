"""Control socket: real AF_UNIX connections, real peer credentials (other users via runuser)."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

from bot4d.control import CommandError, ControlServer, Role, call, role_of

# a client that imports nothing of ours, so another user can run it from anywhere
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(json.dumps({"id": 7, "cmd": sys.argv[2], "args": json.loads(sys.argv[3])}).encode() + b"\\n")
print(s.makefile().readline().strip())
"""

# another user cannot run root's (pyenv) interpreter; the client needs only the standard library
SYSTEM_PY = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
as_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None or SYSTEM_PY is None,
                             reason="needs root, runuser and a system python3 to act as other users")


class Daemon:
    """A control server on its own loop thread, with a few commands like the daemon's."""

    def __init__(self, group_roles=None):
        self.dir = tempfile.mkdtemp(prefix="bot4d-ctl-")
        os.chmod(self.dir, 0o755)  # other users must reach the socket; roles decide the rest
        self.path = os.path.join(self.dir, "control.sock")
        self.audit = []
        self.halted = False
        self.server = ControlServer(self.path, group_roles=group_roles,
                                    audit=lambda p, c, a: self.audit.append((p.uid, p.pid, c, a)),
                                    secrets=("s3cr3t-api-secret",))
        self.server.register("status", Role.MONITOR, False, lambda p, a: {"state": "HALTED" if self.halted else "ACTIVE"}, "state")
        self.server.register("halt", Role.OPERATOR, True, self._halt, "stop new orders")
        self.server.register("limits-set", Role.ADMIN, True, self._limits, "change a limit")
        self.server.register("leak", Role.MONITOR, False, lambda p, a: "key is s3cr3t-api-secret", "test")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _halt(self, peer, args):
        self.halted = True
        return {"state": "HALTED"}

    def _limits(self, peer, args):
        if "max_position_bps" not in args:
            raise CommandError("limits-set needs max_position_bps, e.g. {\"max_position_bps\": 150}")
        return {"max_position_bps": args["max_position_bps"]}

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self.t.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.t.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def as_user(self, user, cmd, args=None):
        out = subprocess.run(["runuser", "-u", user, "--", SYSTEM_PY, "-c", CLIENT, self.path, cmd,
                              json.dumps(args or {})], capture_output=True, text=True, timeout=20, cwd="/")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def test_root_is_admin_and_mutations_are_audited_with_uid_and_pid():
    with Daemon() as d:
        assert call(d.path, "status")["result"] == {"state": "ACTIVE"}
        r = call(d.path, "halt")
        assert r["ok"] and d.halted
        assert d.audit[0][0] == 0 and d.audit[0][1] == os.getpid() and d.audit[0][2] == "halt"
        assert sorted(call(d.path, "help")["result"]) == ["halt", "help", "leak", "limits-set", "status"]


@as_root
def test_unauthorised_peer_is_refused():
    with Daemon() as d:
        r = d.as_user("nobody", "status")
        assert not r["ok"] and r["id"] == 7 and "access denied" in r["error"] and str(pwd.getpwnam("nobody").pw_uid) in r["error"]
        assert not d.audit


@as_root
def test_operator_may_trade_but_not_change_limits():
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user to act as an operator")
    with Daemon(group_roles={"postgres": Role.OPERATOR}) as d:
        assert d.as_user("postgres", "status")["ok"]
        r = d.as_user("postgres", "limits-set", {"max_position_bps": 100})
        assert not r["ok"] and r["error"] == f"'limits-set' needs the admin role; uid {pwd.getpwnam('postgres').pw_uid} has operator"
        assert d.as_user("postgres", "halt")["ok"] and d.halted
        (uid, pid, cmd, args), = d.audit
        assert (uid, cmd) == (pwd.getpwnam("postgres").pw_uid, "halt") and pid > 0 and pid != os.getpid()


def test_bad_requests_get_sentences_and_the_server_keeps_serving():
    with Daemon() as d:
        def raw(data: bytes) -> dict:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(d.path)
                s.sendall(data)
                return json.loads(s.makefile().readline())

        assert raw(b"{nope\n")["error"] == "request is not valid JSON"
        assert raw(b"[1,2]\n")["error"] == 'request must be an object with a "cmd" string'
        assert raw(b'{"cmd": "status", "args": 3}\n')["error"] == '"args" must be an object'
        r = raw(b'{"cmd": "explode"}\n')
        assert r["error"].startswith("unknown command 'explode'; you may use: ") and "halt" in r["error"]
        r = call(d.path, "limits-set", {})
        assert not r["ok"] and "needs max_position_bps" in r["error"]
        assert raw(b"x" * (70 * 1024) + b"\n")["error"].startswith("request longer than")
        # a peer that vanishes mid-line: nothing it half-sent is executed
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.path)
            s.sendall(b'{"cmd": "halt"')
        assert call(d.path, "status")["result"] == {"state": "ACTIVE"} and not d.halted


def test_secrets_never_leave_in_responses():
    with Daemon() as d:
        r = call(d.path, "leak")
        assert r["result"] == "key is ***"


def test_stale_socket_is_replaced_but_a_live_one_is_not():
    with Daemon() as d:
        other = ControlServer(d.path)
        with pytest.raises(RuntimeError, match="another daemon"):
            asyncio.run(other.start())
    d2 = Daemon()
    open(d2.path, "w").close()  # leftover file from a crash: nothing listens
    with d2:
        assert call(d2.path, "status")["ok"]


def test_role_of_without_groups_is_none():
    assert role_of(0, 0, {}) == Role.ADMIN
    assert role_of(65534, 65534, {"no-such-group-here": Role.ADMIN}) == Role.NONE
