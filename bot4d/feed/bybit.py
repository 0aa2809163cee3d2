"""Feed adapter for Bybit v5 public ``orderbook`` around ``bot4d.venues.bybit.BybitFeed``.

What "resync" means on Bybit: the book comes in band (a snapshot after subscribing, then deltas
chained by ``u``); a book the venue module distrusts (a ``u`` gap, a crossed book) is resynced
by unsubscribing and subscribing its topic again, which makes Bybit send a fresh snapshot.
Heartbeat rules (Bybit docs, "How to send the heartbeat packet"): send ``{"op":"ping"}`` about
every 20 s. Bybit publishes no checksum and ``u`` catches every lost delta, so an unreadable
frame needs no resync of its own: the next delta's ``u`` shows the loss.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bot4d.feed.adapter import SnapshotRequest
from bot4d.feed.refbook import Tap
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.venues import bybit as vy
from bot4d.venues.sync import Reason, SyncState


class BybitAdapter:
    venue = vy.VENUE

    def __init__(self, table: InstrumentTable, symbols: list[str], books: Any = None, *,
                 depth: int = 50, category: str = "linear", book_capacity: int = 1024,
                 ping_interval_s: float | None = 20.0, max_frame: int = 1 << 20) -> None:
        if books is None:
            books = make_books(len(table), book_capacity)
        self.books = books
        # the venue module applies records to the book itself; the tap keeps them for the ring
        self.tap = Tap(books)
        self.feed = vy.BybitFeed(table, self.tap, depth=depth, max_frame=max_frame)
        self.symbols = list(symbols)
        missing = [s for s in self.symbols if s not in self.feed.symbols]
        if missing:
            raise ValueError(f"{self.venue}: symbols not in the instrument table: {missing}")
        self.instrument_ids = np.array([self.feed.symbols[s].id for s in self.symbols], np.int32)
        self.counters = self.feed.counters
        self.depth = depth
        self.category = category
        self.ping_interval_s = ping_interval_s
        self._mine = frozenset(self.symbols)
        self._topics = vy.topics(self.symbols, depth, trades=True, category=category)
        self._asked: set[str] = set()  # resubscribed, snapshot not here yet: do not ask again

    def ws_path(self) -> str:
        return f"/v5/public/{self.category}"

    def subscribe_messages(self) -> list[bytes]:
        return [vy.subscribe_message(self._topics)]

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        self.feed.on_frames(frames, np.full(len(frames), recv_ts_ns, np.int64))

    def drain(self) -> np.ndarray:
        return self.tap.drain()

    def venue_states(self) -> np.ndarray:
        return self.feed.state[self.instrument_ids].astype(np.int8)

    def snapshot_requests(self) -> list[SnapshotRequest]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        return Reason.UNKNOWN_MESSAGE  # snapshots arrive in the stream

    def take_resubscribe(self) -> list[bytes]:
        out: list[bytes] = []
        for s in self.feed.needs_resubscribe():
            if s in self._mine and s not in self._asked:
                self._asked.add(s)
                out += self.feed.resubscribe_messages(s)
        # a symbol that is LIVE again may be asked for again the next time it breaks
        self._asked &= {s for s in self.feed.needs_resubscribe()}
        return out

    def ping_message(self) -> bytes | None:
        return vy.ping_message()

    def on_disconnect(self) -> None:
        self.feed.state[self.instrument_ids] = int(SyncState.RESYNCING)
        self._asked = set(self.symbols)  # the subscription on reconnect brings the snapshots

    def force_resync(self) -> None:
        self.feed.state[self.instrument_ids] = int(SyncState.RESYNCING)
        self._asked = set()
