"""Feed adapter for Binance spot (and USD-M futures) around ``bot4d.venues.binance.BinanceFeed``.

What "resync" means on Binance: the diff stream continues; the venue module buffers diffs and
asks for a REST depth snapshot (``needs_snapshot``), which the client fetches and hands back. A
lost connection drops the chain for every symbol (``force_resync``) and the next connection
starts over. Binance pings at the WebSocket level (the client answers with pongs), so there is no
application ping.

The venue module applies records to its ``books`` itself (snapshots and the buffered diffs it
replays after one never leave it otherwise), so the adapter hands it a ``Tap`` that forwards to
the real book and keeps every record for the ingress ring.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bot4d.feed.adapter import SnapshotRequest
from bot4d.feed.refbook import Tap
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import binance as vb
from bot4d.venues import binance_futures as vbf
from bot4d.venues.sync import Reason, SyncState


class BinanceAdapter:
    venue = vb.VENUE
    ping_interval_s = None
    _feed_cls: Any = vb.BinanceFeed

    def __init__(self, table: InstrumentTable, symbols: list[str], books: Any = None, *,
                 depth_limit: int = 1000, max_frame: int = 1 << 20, req_id: int = 1,
                 book_capacity: int = 5000) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        self.tap = Tap(books)
        self.feed = self._feed_cls(table, self.tap, max_frame=max_frame)
        self.symbols = list(symbols)
        unknown = [s for s in self.symbols if s not in self.feed.symbols]
        if unknown:
            raise ValueError(f"{self.venue}: symbols not in the instrument table: {unknown}")
        self.instrument_ids = np.array([self.feed.symbols[s].id for s in self.symbols], np.int32)
        self.counters = self.feed.counters
        self.depth_limit = depth_limit
        self._req_id = req_id
        self._streams = vb.stream_names([s for s in self.symbols])
        self._mine = frozenset(self.symbols)

    def ws_path(self) -> str:
        return "/stream"

    def subscribe_messages(self) -> list[bytes]:
        self._req_id += 1
        return [vb.subscribe_message(self._streams, self._req_id)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        self.feed.on_frames(frames, np.full(len(frames), recv_ts_ns, np.int64))

    def drain(self) -> np.ndarray:
        return self.tap.drain()

    def venue_states(self) -> np.ndarray:
        st = self.feed.state[self.instrument_ids]  # fancy indexing: a copy
        # the module's private BRIDGING (snapshot applied, first diff pending) is not LIVE yet
        st[st == vb.ST_BRIDGING] = int(SyncState.SYNCING)
        return st

    def snapshot_requests(self) -> list[SnapshotRequest]:
        base = vb.snapshot_url if not self.feed.futures else vbf.snapshot_url
        out = []
        mine = self._mine
        for s in self.feed.needs_snapshot():
            if s not in mine:
                continue  # the venue module covers every symbol of the venue; we carry ours
            url = base(s, self.depth_limit)
            out.append(SnapshotRequest(s, url[url.index("/", 8):]))
        return out

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        return self.feed.on_snapshot(symbol, body, recv_ts_ns)

    def take_resubscribe(self) -> list[bytes]:
        return []  # the diff stream never stops; resync is a REST snapshot

    def ping_message(self) -> bytes | None:
        return None

    def on_disconnect(self) -> None:
        for s in self.symbols:
            self.feed.force_resync(s)

    def force_resync(self) -> None:
        # the diff stream goes on: buffering restarts and fresh REST snapshots are fetched
        self.on_disconnect()


class BinanceFuturesAdapter(BinanceAdapter):
    venue = vbf.VENUE
    _feed_cls = vbf.BinanceFuturesFeed
