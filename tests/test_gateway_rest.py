"""The keep-alive REST client pool against real loopback servers."""
from __future__ import annotations

import asyncio
import socket

import pytest

from bot4d.gateway.rest import RestClient, RestError, RestTimeout
from bot4d.sim import http as simhttp


def run(coro, limit_s: float = 20.0):
    asyncio.run(asyncio.wait_for(coro, limit_s))


class Scripted:
    """A raw TCP server: reads one request head (+ Content-Length body) and answers with the
    next scripted action: bytes to send, then 'close' / 'keep' / 'hang' / 'vanish'."""

    def __init__(self, script: list[tuple[bytes, str]]) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.conns = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.conns += 1
        try:
            while self.script:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                body = await r.readexactly(n) if n else b""
                self.requests.append(head + body)
                out, then = self.script.pop(0)
                if then == "vanish":
                    return
                w.write(out)
                await w.drain()
                if then == "hang":
                    await asyncio.sleep(3600)
                if then == "close":
                    return
        finally:
            w.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_keep_alive_reuses_connections_and_all_methods_work():
    async def go():
        seen = []

        async def handler(req):
            seen.append((req.method, req.path, req.query, req.body, req.headers.get("x-k")))
            return simhttp.Response.json(200, {"m": req.method})

        srv = await simhttp.serve(handler)
        c = RestClient(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", connections=2)
        for meth in ("GET", "POST", "PUT", "DELETE", "get"):
            r = await c.request(meth, "/p", query="a=1&b=2", body=b"x=1" if meth == "POST" else b"",
                                headers={"X-K": "v"})
            assert r.status == 200 and r.json() == {"m": meth.upper()}
            assert r.headers["content-type"].startswith("application/json")
        assert c.connects == 1 and c.requests == 5     # one connection carried all five
        assert seen[1] == ("POST", "/p", "a=1&b=2", b"x=1", "v")
        # concurrent requests spread over the pool, never more connections than its size
        rs = await asyncio.gather(*(c.request("GET", "/q") for _ in range(10)))
        assert all(r.status == 200 for r in rs) and c.connects == 2
        with pytest.raises(ValueError, match="unsupported method"):
            await c.request("PATCH", "/p")
        with pytest.raises(ValueError, match="bad request target"):
            await c.request("GET", "/p q")
        await c.close()
        with pytest.raises(RestError, match="closed"):
            await c.request("GET", "/p")
        srv.close()
    run(go())


def test_bad_construction_is_refused():
    for url in ("ftp://x", "http://", "http://h/path", "http://h?q=1"):
        with pytest.raises(ValueError):
            RestClient(url)
    with pytest.raises(ValueError):
        RestClient("http://h", connections=0)


def test_chunked_and_close_delimited_bodies_and_reconnect_after_peer_close():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    script = [
        (chunked, "keep"),
        (ok(b"bye", "Connection: close\r\n"), "close"),   # peer closes after answering
        (b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nno length, until close", "close"),
        (ok(b"{}"), "keep"),
    ]

    async def go():
        s = Scripted(script)
        c = RestClient(f"http://127.0.0.1:{await s.start()}", connections=1)
        r = await c.request("GET", "/a")
        assert (r.status, r.body) == (200, b"hello world")
        r = await c.request("GET", "/b")
        assert r.body == b"bye"
        r = await c.request("GET", "/c")
        assert (r.status, r.body) == (404, b"no length, until close")
        r = await c.request("GET", "/d")
        assert r.json() == {} and c.connects == 3 and s.conns == 3
        await c.close()
        await s.stop()
    run(go())


def test_bodies_over_the_limit_and_malformed_answers_are_errors():
    script = [
        (ok(b"x" * 100), "keep"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"y" * 64 + b"\r\n40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n", "keep"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "keep"),
        (b"SMTP ready\r\n\r\n", "keep"),
        (ok(b"fine"), "keep"),
    ]

    async def go():
        s = Scripted(script)
        c = RestClient(f"http://127.0.0.1:{await s.start()}", connections=1, max_body_bytes=99)
        with pytest.raises(RestError, match="larger than 99") as e:
            await c.request("GET", "/big")
        assert e.value.written
        with pytest.raises(RestError, match="larger than 99"):
            await c.request("GET", "/bigchunks")
        with pytest.raises(RestError, match="bad chunk size"):
            await c.request("GET", "/badchunk")
        with pytest.raises(RestError, match="not an HTTP response"):
            await c.request("GET", "/smtp")
        r = await c.request("GET", "/ok")      # a broken connection is never reused
        assert r.body == b"fine" and c.connects == 5
        await c.close()
        await s.stop()
    run(go())


def test_timeout_and_lost_answer_say_the_request_was_written_refused_connect_says_not():
    async def go():
        s = Scripted([(b"", "hang"), (b"", "vanish"), (ok(b"after"), "keep")])
        c = RestClient(f"http://127.0.0.1:{await s.start()}", connections=1, timeout_s=0.3)
        with pytest.raises(RestTimeout) as e:
            await c.request("POST", "/order", body=b"a=1")
        assert e.value.written
        with pytest.raises(RestError) as e:
            await c.request("POST", "/order", body=b"a=2")
        assert e.value.written and not isinstance(e.value, RestTimeout)
        r = await c.request("GET", "/x", timeout_s=5)
        assert r.body == b"after"
        assert [q.split(b"\r\n")[0] for q in s.requests] == [
            b"POST /order HTTP/1.1", b"POST /order HTTP/1.1", b"GET /x HTTP/1.1"]
        await c.close()
        await s.stop()
        # nobody listening: the request never left
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        c2 = RestClient(f"http://127.0.0.1:{port}")
        written = []
        with pytest.raises(RestError) as e:
            await c2.request("POST", "/order", on_written=lambda: written.append(1))
        assert not e.value.written and written == []
        await c2.close()
    run(go())
