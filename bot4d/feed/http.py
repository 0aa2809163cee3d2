"""The feed's REST snapshot GET: one request over ``bot4d.gateway.rest.RestClient``.

The feed needs one request shape (GET, a JSON body of bounded size) and a hard limit on what it
will buffer; the order gateway's HTTP/1.1 client already parses responses that way (Content-Length
or chunked bodies, anything larger than the limit refused before it is buffered), so the feed uses
it for a single request on a connection of its own and reports failures as ``HttpError``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from bot4d.gateway.rest import RestClient, RestError, RestTimeout


class HttpError(Exception):
    """The snapshot request failed; the message says how."""


async def http_get(url: str, *, timeout_s: float = 10.0, max_bytes: int = 8 << 20,
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url``; returns (status, body). Raises HttpError (or TimeoutError)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise HttpError(f"not an http(s) URL: {url!r}")
    client = RestClient(f"{u.scheme}://{u.netloc}", connections=1, timeout_s=timeout_s,
                        max_body_bytes=max_bytes)
    try:
        resp = await client.request("GET", u.path or "/", query=u.query,
                                    headers={"Connection": "close", **(headers or {})})
    except RestTimeout as e:
        raise TimeoutError(str(e)) from None
    except RestError as e:
        raise HttpError(str(e)) from None
    finally:
        await client.close()
    return resp.status, resp.body
