"""The control socket: JSON lines over AF_UNIX, with access decided by the peer's credentials.

Protocol: one request per line, ``{"id": n, "cmd": "name", "args": {...}}``; one response per
line, ``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error": "sentence"}``.

Access: the kernel tells us who is on the other end (SO_PEERCRED: pid, uid, gid); nothing the
client says about itself is trusted. A peer's role is the highest of the roles its groups map to
(root is always admin). Each command names the role it needs: read commands for monitors,
trading commands for operators, limits and resume for admins. Every mutating command reaches the
audit hook with uid, pid and arguments *before* it runs, so the journal holds even a command whose
effect failed.
"""
from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024


class Role(IntEnum):
    NONE = 0
    MONITOR = 1
    OPERATOR = 2
    ADMIN = 3


DEFAULT_GROUP_ROLES = {"bot4d-monitor": Role.MONITOR, "bot4d-operator": Role.OPERATOR,
                       "bot4d-admin": Role.ADMIN}


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    role: Role


class CommandError(Exception):
    """A command refused its input; the message is shown to the operator as is."""


Handler = Callable[[Peer, dict[str, Any]], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Command:
    name: str
    role: Role
    mutating: bool
    handler: Handler
    help: str


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def role_of(uid: int, gid: int, group_roles: dict[str, Role]) -> Role:
    """Highest role among the peer's groups (primary and supplementary); root is admin."""
    if uid == 0:
        return Role.ADMIN
    gids = {gid}
    try:
        user = pwd.getpwuid(uid).pw_name
        gids.update(os.getgrouplist(user, gid))
    except KeyError:
        pass  # a uid with no passwd entry has only its primary group
    best = Role.NONE
    for name, role in group_roles.items():
        try:
            if grp.getgrnam(name).gr_gid in gids and role > best:
                best = role
        except KeyError:
            continue  # a configured group that does not exist on this host grants nothing
    return best


class ControlServer:
    def __init__(self, path: str, *, group_roles: dict[str, Role] | None = None,
                 audit: Callable[[Peer, str, dict[str, Any]], None] | None = None,
                 secrets: tuple[str, ...] = ()):
        self.path = path
        self.group_roles = dict(DEFAULT_GROUP_ROLES if group_roles is None else group_roles)
        self.audit = audit
        self.secrets = tuple(s for s in secrets if s)
        self.commands: dict[str, Command] = {}
        self._server: asyncio.AbstractServer | None = None
        self.register("help", Role.MONITOR, False, self._help, "list the commands you may use")

    def register(self, name: str, role: Role, mutating: bool, handler: Handler, help: str) -> None:
        if name in self.commands:
            raise ValueError(f"command {name!r} registered twice")
        self.commands[name] = Command(name, role, mutating, handler, help)

    def _help(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return {c.name: c.help for c in sorted(self.commands.values(), key=lambda c: c.name)
                if peer.role >= c.role}

    async def start(self) -> None:
        if os.path.exists(self.path):
            # a socket left by a dead daemon: refuse if something still answers on it
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)
            else:
                raise RuntimeError(f"another daemon is serving {self.path}")
            finally:
                probe.close()
        self._server = await asyncio.start_unix_server(self._conn, self.path, limit=MAX_LINE + 1)
        # reaching the socket is harmless: the peer's credentials decide what it may do
        os.chmod(self.path, 0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock)
        peer = Peer(pid, uid, gid, role_of(uid, gid, self.group_roles))
        try:
            if peer.role == Role.NONE:
                # answer the peer's first request (so its client can show why), then hang up
                rid = None
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), 5.0)
                    rid = json.loads(line).get("id")
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError, AttributeError):
                    pass
                await self._send(writer, {"id": rid, "ok": False, "error":
                                          f"access denied: uid {uid} is not in a bot4d group "
                                          f"({', '.join(sorted(self.group_roles))})"})
                return
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # peer went away (possibly mid-line): nothing half-read is executed
                except asyncio.LimitOverrunError:
                    await self._send(writer, {"id": None, "ok": False,
                                              "error": f"request longer than {MAX_LINE} bytes"})
                    return
                await self._send(writer, await self.dispatch(peer, line))
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(self._redact(json.dumps(obj, separators=(",", ":"), default=str)).encode() + b"\n")
        await writer.drain()

    async def dispatch(self, peer: Peer, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"id": None, "ok": False, "error": "request is not valid JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"id": None, "ok": False, "error": 'request must be an object with a "cmd" string'}
        rid = req.get("id")
        args = req.get("args", {})
        if not isinstance(args, dict):
            return {"id": rid, "ok": False, "error": '"args" must be an object'}
        cmd = self.commands.get(req["cmd"])
        if cmd is None:
            known = ", ".join(sorted(c for c, v in self.commands.items() if peer.role >= v.role))
            return {"id": rid, "ok": False, "error": f"unknown command {req['cmd']!r}; you may use: {known}"}
        if peer.role < cmd.role:
            return {"id": rid, "ok": False, "error":
                    f"{cmd.name!r} needs the {cmd.role.name.lower()} role; uid {peer.uid} has "
                    f"{peer.role.name.lower()}"}
        if cmd.mutating and self.audit is not None:
            self.audit(peer, cmd.name, args)
        try:
            res = cmd.handler(peer, args)
            if asyncio.iscoroutine(res):
                res = await res
        except CommandError as e:
            return {"id": rid, "ok": False, "error": str(e)}
        except Exception:
            log.exception("control command %s failed", cmd.name)
            return {"id": rid, "ok": False, "error": f"{cmd.name!r} failed inside the daemon; see its log"}
        return {"id": rid, "ok": True, "result": res}


def call(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Blocking client: one request, one response."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args or {}}).encode() + b"\n")
        except BrokenPipeError:
            pass  # the daemon may have answered and hung up already: read what it said
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError("the daemon closed the control connection without answering")
    return json.loads(buf)
