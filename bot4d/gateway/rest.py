"""Keep-alive HTTP/1.1 client pool on asyncio streams, for venue REST order entry.

Why not a library: order entry needs to know exactly whether a request's bytes were handed to the
socket (a lost answer after that means the order's outcome is unknown and it must never be sent
again), a hard bound on what is buffered, and no hidden retries. A pool of N persistent
connections carries one request at a time each; a connection the peer closed is replaced
before use, and a connection whose request failed half-way is never reused.
"""
from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
_METHODS = ("GET", "POST", "PUT", "DELETE")


class RestError(Exception):
    """A request failed in transport. ``written``: its bytes may have reached the peer, so a
    non-idempotent request (an order) has an unknown outcome."""

    def __init__(self, msg: str, *, written: bool) -> None:
        super().__init__(msg)
        self.written = written


class RestTimeout(RestError):
    """No complete answer within the request's timeout."""


class BodyError(ValueError):
    """A response body is malformed or larger than allowed."""


async def read_chunked(reader: asyncio.StreamReader, max_bytes: int,
                       error: type[Exception] = BodyError) -> bytes:
    """Read a chunked transfer-coded body (RFC 9112 section 7.1), refusing more than
    ``max_bytes`` before buffering it; malformed framing raises ``error``."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise error(f"bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise error(f"bad chunk size line {line[:40]!r}")
        if size == 0:
            # trailer section: header lines up to an empty line (bounded like a head)
            seen = 0
            while True:
                t = await reader.readline()
                seen += len(t)
                if t in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
                if seen > MAX_HEAD_BYTES:
                    raise error("chunked trailer too large")
        total += size
        if total > max_bytes:
            raise error(f"body larger than {max_bytes} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise error("chunk not followed by CRLF")


@dataclass(frozen=True)
class RestResponse:
    status: int
    headers: dict[str, str]   # lower-cased names
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (ValueError if it is not)."""
        return json.loads(self.body)


class _Conn:
    __slots__ = ("reader", "writer", "requests")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.requests = 0

    def usable(self) -> bool:
        # a peer that closed an idle keep-alive connection has already fed EOF to the reader
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class RestClient:
    """A pool of ``connections`` persistent HTTP/1.1 connections to one origin."""

    def __init__(self, base_url: str, *, connections: int = 4, timeout_s: float = 5.0,
                 max_body_bytes: int = 8 << 20) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        if u.path not in ("", "/") or u.query:
            raise ValueError(f"base URL must be an origin without path or query: {base_url!r}")
        if connections < 1:
            raise ValueError("connections must be >= 1")
        if timeout_s <= 0 or max_body_bytes < 1:
            raise ValueError("timeout_s and max_body_bytes must be positive")
        self.base_url = f"{u.scheme}://{u.netloc}"
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.netloc = u.netloc
        self.ssl = ssl_module.create_default_context() if u.scheme == "https" else None
        self.connections = connections
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._slots: asyncio.Queue[_Conn | None] | None = None
        self._all: set[_Conn] = set()
        self._closed = False
        self.connects = 0        # TCP connections opened (first ones and replacements)
        self.requests = 0
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"RestClient({self.base_url!r}, connections={self.connections})"

    def _queue(self) -> "asyncio.Queue[_Conn | None]":
        if self._slots is None:
            # created on first use, inside the loop that will use it; LIFO so that the warm
            # connection just used goes out again before an idle (or never opened) one
            self._slots = asyncio.LifoQueue()
            for _ in range(self.connections):
                self._slots.put_nowait(None)
        return self._slots

    async def request(self, method: str, path: str, *, query: str = "", body: bytes = b"",
                      headers: dict[str, str] | None = None, timeout_s: float | None = None,
                      on_written: Callable[[], None] | None = None) -> RestResponse:
        """Send one request and return the answer whatever its status.

        Raises RestError / RestTimeout on transport failure (``written`` tells whether the
        request may have reached the peer); ``on_written`` runs once the request's bytes are
        handed to the socket. Waiting for a free connection counts against the timeout.
        """
        method = method.upper()
        if method not in _METHODS:
            raise ValueError(f"unsupported method {method!r}")
        if not path.startswith("/") or any(c in path + query for c in " \r\n#"):
            raise ValueError(f"bad request target {path!r}")
        if self._closed:
            raise RestError("client is closed", written=False)
        slots = self._queue()
        state = {"written": False}
        conn: _Conn | None = None
        got_slot = False
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                conn = await slots.get()
                got_slot = True
                if conn is not None and not conn.usable():
                    self._drop(conn)
                    conn = None
                if conn is None:
                    conn = await self._connect()
                self.in_flight += 1
                try:
                    resp, keep = await self._exchange(conn, method, path, query, body,
                                                      headers or {}, state, on_written)
                finally:
                    self.in_flight -= 1
        except TimeoutError:
            self._drop(conn)
            conn = None
            raise RestTimeout(f"{method} {path}: no answer within {timeout_s or self.timeout_s} s",
                              written=state["written"]) from None
        except (OSError, asyncio.IncompleteReadError, BodyError, ssl_module.SSLError) as e:
            self._drop(conn)
            conn = None
            raise RestError(f"{method} {path}: {type(e).__name__}: {e}",
                            written=state["written"]) from None
        except BaseException:
            self._drop(conn)
            conn = None
            raise
        finally:
            if got_slot:
                slots.put_nowait(conn)
        if not keep:
            self._drop(conn)
            # the slot holds a dead connection; it is replaced on next use
        return resp

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                                       limit=MAX_HEAD_BYTES)
        self.connects += 1
        c = _Conn(reader, writer)
        self._all.add(c)
        return c

    def _drop(self, conn: _Conn | None) -> None:
        if conn is not None:
            conn.close()
            self._all.discard(conn)

    async def _exchange(self, conn: _Conn, method: str, path: str, query: str, body: bytes,
                        headers: dict[str, str], state: dict, on_written: Callable[[], None] | None
                        ) -> tuple[RestResponse, bool]:
        target = path + (f"?{query}" if query else "")
        h = {"Host": self.netloc, "Connection": "keep-alive", "User-Agent": "bot4d",
             "Accept": "application/json"}
        if body or method in ("POST", "PUT"):
            h["Content-Length"] = str(len(body))
            if body:
                h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        h.update(headers)
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        state["written"] = True  # from here on the peer may see the request
        conn.writer.write(head.encode("latin-1") + b"\r\n" + body)
        await conn.writer.drain()
        conn.requests += 1
        self.requests += 1
        if on_written is not None:
            on_written()
        return await self._read_response(conn.reader, method)

    async def _read_response(self, reader: asyncio.StreamReader, method: str
                             ) -> tuple[RestResponse, bool]:
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise BodyError("status line too long") from None
            parts = line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise BodyError(f"not an HTTP response: {line[:60]!r}")
            try:
                status = int(parts[1])
            except ValueError:
                raise BodyError(f"bad status line {line[:60]!r}") from None
            headers: dict[str, str] = {}
            size = 0
            while True:
                try:
                    hl = await reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError:
                    raise BodyError("response head too large") from None
                size += len(hl)
                if size > MAX_HEAD_BYTES:
                    raise BodyError("response head too large")
                if hl == b"\r\n":
                    break
                k, sep, v = hl.decode("latin-1").partition(":")
                if not sep:
                    raise BodyError(f"malformed header line {hl[:60]!r}")
                headers[k.strip().lower()] = v.strip()
            if 100 <= status < 200:
                continue  # interim answer (100 Continue): the real one follows
            break
        keep = headers.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
        te = headers.get("transfer-encoding", "").lower()
        try:
            if method == "HEAD" or status in (204, 304):
                body = b""
            elif "chunked" in te:
                body = await read_chunked(reader, self.max_body_bytes)
            elif "content-length" in headers:
                try:
                    n = int(headers["content-length"])
                except ValueError:
                    raise BodyError("bad Content-Length") from None
                if n < 0:
                    raise BodyError("bad Content-Length")
                if n > self.max_body_bytes:
                    raise BodyError(f"body of {n} bytes is larger than {self.max_body_bytes}")
                body = await reader.readexactly(n)
            else:
                # delimited by the peer closing the connection
                body = await reader.read(self.max_body_bytes + 1)
                while len(body) <= self.max_body_bytes:
                    more = await reader.read(self.max_body_bytes + 1 - len(body))
                    if not more:
                        break
                    body += more
                if len(body) > self.max_body_bytes:
                    raise BodyError(f"body larger than {self.max_body_bytes} bytes")
                keep = False
        except asyncio.IncompleteReadError:
            raise BodyError("connection closed before the body was complete") from None
        return RestResponse(status, headers, body), keep

    async def close(self) -> None:
        """Close every connection; later requests fail with RestError."""
        self._closed = True
        for c in list(self._all):
            c.close()
        self._all.clear()
