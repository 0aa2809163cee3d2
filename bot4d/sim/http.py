"""A small HTTP/1.1 server on asyncio streams, for the simulated venue's REST API on loopback.

Keep-alive, Content-Length bodies, bounded header and body sizes; a malformed request gets a 400
and the connection is closed. Handlers are ``async (Request) -> Response``.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 418: "I'm a teapot",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
            504: "Gateway Timeout"}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # drop the connection after sending (or without sending, see `silent`)
    silent: bool = False  # send nothing at all: the peer sees the connection die

    @classmethod
    def json(cls, status: int, obj: object, headers: dict[str, str] | None = None) -> "Response":
        h = {"Content-Type": "application/json;charset=UTF-8"}
        h.update(headers or {})
        return cls(status, json.dumps(obj, separators=(",", ":")).encode(), h)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


async def _read_request(reader: asyncio.StreamReader, peer: str) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise HttpError(400, "connection closed inside the request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(413, "request head too large") from None
    if len(head) > MAX_HEADER_BYTES:
        raise HttpError(413, "request head too large")
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(400, f"unsupported protocol {version!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line!r}")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(400, "chunked bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise HttpError(413, "body too large")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed inside the body") from None
    parts = urlsplit(target)
    return Request(method.upper(), parts.path, parts.query, headers, body, peer)


def _encode(resp: Response, keep_alive: bool) -> bytes:
    reason = _REASONS.get(resp.status, "Status")
    h = {"Content-Length": str(len(resp.body)), "Connection": "keep-alive" if keep_alive else "close"}
    h.update(resp.headers)
    head = f"HTTP/1.1 {resp.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return head.encode("latin-1") + b"\r\n" + resp.body


async def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> asyncio.AbstractServer:
    """Start serving; the bound port is ``server.sockets[0].getsockname()[1]``."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        try:
            while True:
                try:
                    req = await _read_request(reader, peer)
                except HttpError as e:
                    writer.write(_encode(Response.json(e.status, {"code": -1, "msg": str(e)}), False))
                    await writer.drain()
                    return
                if req is None:
                    return
                keep = req.headers.get("connection", "").lower() != "close"
                try:
                    resp = await handler(req)
                except Exception:  # a handler bug must not take the server down
                    log.exception("handler failed for %s %s", req.method, req.path)
                    resp = Response.json(500, {"code": -1000, "msg": "An unknown error occurred while processing the request."})
                if resp.silent:
                    return
                writer.write(_encode(resp, keep and not resp.close))
                await writer.drain()
                if resp.close or not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    return await asyncio.start_server(conn, host, port, limit=MAX_HEADER_BYTES + 1024)
