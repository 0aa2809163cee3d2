"""Feed adapter for OKX v5 public ``books`` around ``bot4d.venues.okx.OkxV5``.

What "resync" means on OKX: the snapshot comes in the stream when a ``books`` subscription
starts; the seqId/prevSeqId chain (and, where OKX still publishes it, the checksum) is checked on
every update. A book the venue module distrusts is resynced by unsubscribing and subscribing that
instrument again on the open connection. Heartbeat rules (OKX docs, "connection"): the server
drops a connection idle for 30 s, so the client sends the text ``ping`` when it has sent nothing
for ``ping_interval_s`` and OKX answers ``pong``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bot4d.feed.adapter import SnapshotRequest
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import okx as vo
from bot4d.venues.sync import Reason, SyncState


class OkxAdapter:
    venue = vo.VENUE

    def __init__(self, table: InstrumentTable, inst_ids: list[str], books: Any = None, *,
                 book_capacity: int = 1024, ping_interval_s: float | None = 20.0,
                 channels: tuple[str, ...] = ("books", "trades"), max_frame: int = 1 << 20) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        self.handler = vo.OkxV5(table, books, max_frame_bytes=max_frame)
        self.inst_ids = list(inst_ids)
        missing = [s for s in self.inst_ids if self.handler.instrument(s) is None]
        if missing:
            raise ValueError(f"{self.venue}: instruments not in the table: {missing}")
        self.instrument_ids = np.array([self.handler.instrument(s).id for s in self.inst_ids], np.int32)
        self.counters = self.handler.counters
        self.ping_interval_s = ping_interval_s
        self.channels = channels

    def ws_path(self) -> str:
        return "/ws/v5/public"

    def subscribe_messages(self) -> list[bytes]:
        return [vo.subscribe(self.inst_ids, self.channels)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        bad = self.counters.counts[Reason.MALFORMED_JSON]
        self.handler.on_frames(frames, np.full(len(frames), recv_ts_ns, np.int64))
        if self.counters.counts[Reason.MALFORMED_JSON] != bad:
            # an unreadable frame may have been an update; where OKX publishes no seqId (the
            # 2022 feed) only the top-25 checksum would show it, so resync every instrument
            self.force_resync()

    def drain(self) -> np.ndarray:
        return self.handler.drain()

    def venue_states(self) -> np.ndarray:
        return self.handler.states[self.instrument_ids]

    def snapshot_requests(self) -> list[SnapshotRequest]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        return Reason.UNKNOWN_MESSAGE  # OKX snapshots arrive in the stream

    def take_resubscribe(self) -> list[bytes]:
        insts = self.handler.take_resync_requests()
        if not insts:
            return []
        return [vo.unsubscribe(insts, ("books",)), vo.subscribe(insts, ("books",))]

    def ping_message(self) -> bytes | None:
        return b"ping"

    def _all_resyncing(self) -> None:
        self.handler.states[self.instrument_ids] = int(SyncState.RESYNCING)
        # the chain restarts at the next snapshot
        self.handler.last_seq[self.instrument_ids] = vo.NO_SEQ

    def on_disconnect(self) -> None:
        self._all_resyncing()
        self.handler.take_resync_requests()

    def force_resync(self) -> None:
        self._all_resyncing()
        self.handler.resync_requests = list(self.inst_ids)
