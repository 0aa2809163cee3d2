"""Feed adapter for Kraken's WebSocket v1 public book around ``bot4d.venues.kraken.KrakenV1``.

What "resync" means on Kraken: there are no sequence numbers and no REST snapshot in the sync
path; the snapshot comes in the stream when a ``book`` subscription starts, and each update's
CRC32 of the top 10 levels is the only check. So a book the venue module distrusts (checksum
mismatch, bad frame, crossed) is resynced by unsubscribing and subscribing that pair again on the
open connection; the snapshot that answers it makes the book LIVE. A lost connection resyncs
every pair through the subscription sent on reconnect.

Heartbeat rules: Kraken sends ``{"event":"heartbeat"}`` about once a second when a channel is
quiet, so silence longer than the client's stall limit means a dead connection. The client also
sends ``{"event":"ping"}`` when it has sent nothing for ``ping_interval_s``.

Limitation worth knowing (Kraken's, not ours): the checksum covers the top 10 levels, so a lost
update that only touched deeper levels cannot be detected until it reaches the top 10. Hence an
unreadable frame (which may have been such an update) resyncs every pair of the connection.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from bot4d.feed.adapter import SnapshotRequest
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import kraken as vk
from bot4d.venues.sync import Reason, SyncState


class KrakenV1Adapter:
    venue = vk.VENUE

    def __init__(self, table: InstrumentTable, pairs: list[str], books: Any = None, *,
                 depth: int = 1000, book_capacity: int = 1024, ping_interval_s: float | None = 30.0,
                 max_frame: int = 1 << 20) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        self.handler = vk.KrakenV1(table, books, max_frame_bytes=max_frame)
        self.pairs = list(pairs)
        missing = [p for p in self.pairs if self.handler.instrument(p) is None]
        if missing:
            raise ValueError(f"{self.venue}: pairs not in the instrument table: {missing}")
        self.instrument_ids = np.array([self.handler.instrument(p).id for p in self.pairs], np.int32)
        self.counters = self.handler.counters
        self.depth = depth
        self.ping_interval_s = ping_interval_s
        self._reqid = 0

    def ws_path(self) -> str:
        return "/"

    def subscribe_messages(self) -> list[bytes]:
        return [vk.subscribe_v1(self.pairs, "book", self.depth)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        bad = self.counters.counts[Reason.MALFORMED_JSON]
        self.handler.on_frames(frames, np.full(len(frames), recv_ts_ns, np.int64))
        self._after(bad)

    def _after(self, malformed_before: int) -> None:
        if self.counters.counts[Reason.MALFORMED_JSON] != malformed_before:
            # an unreadable frame may have been an update below the checksummed top 10, which
            # no later checksum would reveal: resync every pair of the connection
            self.force_resync()

    def drain(self) -> np.ndarray:
        return self.handler.drain()

    def venue_states(self) -> np.ndarray:
        return self.handler.states[self.instrument_ids]

    def snapshot_requests(self) -> list[SnapshotRequest]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        return Reason.UNKNOWN_MESSAGE  # Kraken snapshots arrive in the stream

    def take_resubscribe(self) -> list[bytes]:
        pairs = self.handler.take_resync_requests()
        if not pairs:
            return []
        return [vk.unsubscribe_v1(pairs, "book", self.depth), vk.subscribe_v1(pairs, "book", self.depth)]

    def ping_message(self) -> bytes | None:
        self._reqid += 1
        return orjson.dumps({"event": "ping", "reqid": self._reqid})

    def on_disconnect(self) -> None:
        # the subscription sent on reconnect brings a snapshot for every pair
        self.handler.states[self.instrument_ids] = int(SyncState.RESYNCING)
        self.handler.take_resync_requests()

    def force_resync(self) -> None:
        self.handler.states[self.instrument_ids] = int(SyncState.RESYNCING)
        self.handler.resync_requests = list(self.pairs)


class KrakenV2Adapter(KrakenV1Adapter):
    """Kraken WebSocket v2 (``wss://ws.kraken.com/v2``): the same resync and heartbeat rules as
    v1, with v2's messages (``{"method": "subscribe", "params": {...}}``, ``{"method": "ping"}``),
    and a checksum on snapshots as well as on updates."""

    def __init__(self, table: InstrumentTable, symbols: list[str], books: Any = None, *,
                 depth: int = 10, book_capacity: int = 1024, ping_interval_s: float | None = 30.0,
                 max_frame: int = 1 << 20) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        self.handler = vk.KrakenV2(table, books, depth=depth, max_frame_bytes=max_frame)
        self.pairs = list(symbols)
        missing = [p for p in self.pairs if self.handler.instrument(p) is None]
        if missing:
            raise ValueError(f"{self.venue}: symbols not in the instrument table: {missing}")
        self.instrument_ids = np.array([self.handler.instrument(p).id for p in self.pairs], np.int32)
        self.counters = self.handler.counters
        self.depth = depth
        self.ping_interval_s = ping_interval_s
        self._reqid = 0

    def ws_path(self) -> str:
        return "/v2"

    def subscribe_messages(self) -> list[bytes]:
        return [vk.subscribe_v2(self.pairs, "book", self.depth)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        bad = self.counters.counts[Reason.MALFORMED_JSON]
        on_frame = self.handler.on_frame
        for f in frames:  # the v2 handler is frame by frame (JSON numbers kept as text)
            on_frame(f, recv_ts_ns)
        self._after(bad)

    def take_resubscribe(self) -> list[bytes]:
        syms = self.handler.take_resync_requests()
        if not syms:
            return []
        return [vk.unsubscribe_v2(syms, "book", self.depth), vk.subscribe_v2(syms, "book", self.depth)]

    def ping_message(self) -> bytes | None:
        self._reqid += 1
        return orjson.dumps({"method": "ping", "req_id": self._reqid})
