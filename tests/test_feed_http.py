"""The snapshot HTTP client against canned responses on a loopback socket: every malformed or
oversize answer is a clear HttpError, and nothing larger than max_bytes is read into memory."""
from __future__ import annotations

import asyncio

import pytest

from bot4d.feed.http import HttpError, http_get


async def serve_once(raw: bytes):
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(raw)
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], got


def fetch(raw: bytes, **kw):
    async def go():
        srv, port, got = await serve_once(raw)
        try:
            return await http_get(f"http://127.0.0.1:{port}/api/v3/depth?symbol=X&limit=5", **kw), got
        finally:
            srv.close()
            await srv.wait_closed()
    return asyncio.run(go())


def test_content_length_body_and_request_line() -> None:
    (status, body), got = fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert (status, body) == (200, b"hello")
    assert got[0].startswith(b"GET /api/v3/depth?symbol=X&limit=5 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in got[0]


def test_chunked_body() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n"
    (status, body), _ = fetch(raw)
    assert (status, body) == (200, b"abcdefg")


def test_error_status_is_returned_with_its_body() -> None:
    (status, body), _ = fetch(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}")
    assert (status, body) == (429, b"{}")


@pytest.mark.parametrize("raw, msg", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n", "larger than 1000"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"a" * 0x800 + b"\r\n0\r\n\r\n",
     "larger than 1000"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 5000, "larger than 1000"),
    (b"SSH-2.0-OpenSSH\r\n", "not an HTTP response"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed before the body"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
])
def test_bad_answers_are_clear_errors(raw: bytes, msg: str) -> None:
    with pytest.raises(HttpError, match=msg):
        fetch(raw, max_bytes=1000)


def test_refused_connection_and_bad_url() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(HttpError, match="ConnectionRefused"):
        asyncio.run(http_get(f"http://127.0.0.1:{port}/x"))
    with pytest.raises(HttpError, match="not an http"):
        asyncio.run(http_get("ftp://example.com/x"))
