"""A small asyncio HTTP/1.1 GET client for REST depth snapshots.

Why not a library: the feed needs one request shape (GET, a JSON body of bounded size) and a hard
limit on what it will buffer; aiohttp/httpx would be a heavy dependency for that. Bodies framed by
Content-Length or chunked transfer coding are read; anything larger than ``max_bytes`` is refused
before it is buffered.
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from urllib.parse import urlsplit

from bot4d.gateway.rest import read_chunked


class HttpError(Exception):
    """The snapshot request failed; the message says how."""


async def http_get(url: str, *, timeout_s: float = 10.0, max_bytes: int = 8 << 20,
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url``; returns (status, body). Raises HttpError (or asyncio.TimeoutError)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    ctx = ssl_module.create_default_context() if u.scheme == "https" else None

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(u.hostname, port, ssl=ctx)
        try:
            hdr = {"Host": u.netloc, "Accept": "application/json", "Connection": "close",
                   "User-Agent": "bot4d"}
            hdr.update(headers or {})
            req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdr.items())
            writer.write(req.encode("latin-1") + b"\r\n")
            status_line = await reader.readline()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HttpError(f"not an HTTP response: {status_line[:60]!r}")
            try:
                status = int(parts[1])
            except ValueError:
                raise HttpError(f"bad status line {status_line[:60]!r}") from None
            length = None
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    try:
                        length = int(v.strip())
                    except ValueError:
                        raise HttpError("bad Content-Length") from None
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    chunked = True
            if chunked:
                body = await read_chunked(reader, max_bytes, HttpError)
            elif length is not None:
                if length > max_bytes:
                    raise HttpError(f"body of {length} bytes is larger than {max_bytes}")
                body = await reader.readexactly(length)
            else:
                body = await reader.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise HttpError(f"body larger than {max_bytes} bytes")
            return status, body
        except asyncio.IncompleteReadError:
            raise HttpError("connection closed before the body was complete") from None
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(go(), timeout_s)
    except OSError as e:
        raise HttpError(f"{type(e).__name__}: {e}") from None
