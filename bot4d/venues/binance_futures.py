"""Binance USD-M futures market data: the spot frame kernel with the futures chaining rule.

Futures diff depth events carry ``pu`` (the previous event's final update id) because update
ids are not contiguous there: an event chains when ``pu == previous u``. After the REST
snapshot (``/fapi/v1/depth``), events with ``u < lastUpdateId`` are dropped and the first
applied one has ``U <= lastUpdateId <= u`` (note: not ``lastUpdateId + 1`` as on spot).
Source: "How to manage a local order book correctly",
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/How-to-manage-a-local-order-book-correctly
"""
from __future__ import annotations

import json

from bot4d.venues.binance import BinanceFeed, stream_names, unsubscribe_message  # noqa: F401

VENUE = "BINANCE_FUTURES"
WS_URL = "wss://fstream.binance.com/stream"
REST_DEPTH_URL = "https://fapi.binance.com/fapi/v1/depth"


def snapshot_url(symbol: str, limit: int = 1000) -> str:
    if limit not in (5, 10, 20, 50, 100, 500, 1000):
        raise ValueError(f"Binance futures depth limit {limit} is not one of the allowed values")
    return f"{REST_DEPTH_URL}?symbol={symbol.upper()}&limit={limit}"


def subscribe_message(streams: list[str], req_id: int = 1) -> bytes:
    """Same SUBSCRIBE request as spot, sent on an fstream connection."""
    return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": req_id},
                      separators=(",", ":")).encode()


def combined_stream_url(streams: list[str]) -> str:
    return f"{WS_URL}?streams={'/'.join(streams)}"


class BinanceFuturesFeed(BinanceFeed):
    """USD-M futures feed: the spot machinery with ``pu`` chaining (see module docstring)."""

    futures = True
    venue = VENUE

    def snapshot_url(self, symbol: str, limit: int = 1000) -> str:
        return snapshot_url(symbol, limit)
