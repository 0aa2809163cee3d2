"""Feed adapter for the legacy Coinbase Exchange feed (``level2`` + ``matches``) around
``bot4d.venues.coinbase.CoinbaseLegacy``.

What "resync" means here: the level2 channel has no sequence numbers and no checksum, so a lost
update is invisible: the adapter therefore treats any unreadable frame as a possible lost update
and resyncs every product of the connection. The venue module itself resyncs a product whose
frame it can attribute but not use (bad numbers, crossed book). Resync is an unsubscribe +
subscribe of ``level2``, answered by a new snapshot. Heartbeats: the venue has an optional ``heartbeat`` channel; silence is
handled by the client's stale/stall detection, so no application ping is sent.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bot4d.feed.adapter import SnapshotRequest
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import coinbase as vc
from bot4d.venues.sync import Reason, SyncState


class CoinbaseLegacyAdapter:
    venue = vc.VENUE
    ping_interval_s = None

    def __init__(self, table: InstrumentTable, products: list[str], books: Any = None, *,
                 book_capacity: int = 2048, max_frame: int = 1 << 20) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        self.handler = vc.CoinbaseLegacy(table, books, max_frame_bytes=max_frame)
        self.products = list(products)
        missing = [p for p in self.products if self.handler.instrument(p) is None]
        if missing:
            raise ValueError(f"{self.venue}: products not in the instrument table: {missing}")
        self.instrument_ids = np.array([self.handler.instrument(p).id for p in self.products], np.int32)
        self.counters = self.handler.counters

    def ws_path(self) -> str:
        return "/"

    def subscribe_messages(self) -> list[bytes]:
        return [vc.subscribe_legacy(self.products)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        bad = self.counters.counts[Reason.MALFORMED_JSON]
        on_frame = self.handler.on_frame
        for f in frames:
            on_frame(f, recv_ts_ns)
        if self.counters.counts[Reason.MALFORMED_JSON] != bad:
            # an unreadable frame may have been a book update, and nothing on this channel
            # would ever show the loss: every book of the connection is resynced
            self.force_resync()

    def drain(self) -> np.ndarray:
        return self.handler.drain()

    def venue_states(self) -> np.ndarray:
        return self.handler.states[self.instrument_ids]

    def snapshot_requests(self) -> list[SnapshotRequest]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        return Reason.UNKNOWN_MESSAGE  # snapshots arrive in the stream

    def take_resubscribe(self) -> list[bytes]:
        prods = self.handler.take_resync_requests()
        if not prods:
            return []
        return [vc.subscribe_legacy(prods, ("level2",), op="unsubscribe"),
                vc.subscribe_legacy(prods, ("level2",))]

    def ping_message(self) -> bytes | None:
        return None

    def on_disconnect(self) -> None:
        self.handler.states[self.instrument_ids] = int(SyncState.RESYNCING)
        self.handler.take_resync_requests()

    def force_resync(self) -> None:
        self.handler.states[self.instrument_ids] = int(SyncState.RESYNCING)
        self.handler.resync_requests = list(self.products)
