"""The interface between the feed client and one venue's protocol module.

The client knows sockets, time and failure; the adapter knows the venue's JSON, its sync rules
and what "resync" means there. One adapter instance serves one WebSocket connection (the
instruments subscribed on it). Everything the client needs from a venue is below, and nothing
else: the client never looks inside a frame.

Contract:

* ``on_frames`` never raises for venue input; refusals are counted in ``counters`` (a
  ``bot4d.venues.sync.ReasonCounters``). If it raises anyway (a bug), the client counts it,
  forces a resync of every instrument and reconnects.
* ``drain`` returns the MD_UPDATE records produced since the last drain, in order, including
  MD_CLEAR / MD_SNAPSHOT_END markers; the client forwards them to the shard's ingress ring.
* ``venue_states`` is the venue module's own view (SyncState values) for ``instrument_ids``;
  the client folds staleness into it and publishes the result in the BookStateTable.
* Resync, venue by venue: ``snapshot_requests`` lists (symbol, path) REST snapshots the client
  must fetch and hand to ``on_snapshot`` (Binance); ``take_resubscribe`` returns messages to send
  on the open connection to get a fresh WebSocket snapshot (Kraken, OKX). An adapter may use
  either or both.
* ``force_resync``: the same while the connection stays up (downstream lost records).
* ``on_disconnect``: the chain is broken for every instrument of the connection: clear state so
  that reconnecting starts a full sync.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from bot4d.venues.sync import Reason, ReasonCounters


@dataclass(frozen=True)
class SnapshotRequest:
    symbol: str
    path: str            # path and query on the venue's REST host, e.g. /api/v3/depth?symbol=..


@runtime_checkable
class FeedAdapter(Protocol):
    venue: str
    instrument_ids: np.ndarray       # int32, the instruments this connection carries
    counters: ReasonCounters
    # heartbeat rules: send ``ping_message()`` when nothing was sent for ``ping_interval_s``
    # (None: the venue pings us at the WebSocket level and picows answers with pongs)
    ping_interval_s: float | None

    def ws_path(self) -> str:
        """Path (and query) of the WebSocket endpoint to connect to."""

    def subscribe_messages(self) -> list[bytes]:
        """Messages to send right after every (re)connect."""

    def on_frames(self, frames: list[bytes], recv_ts_ns: int) -> None:
        """Parse, sync-check and apply a batch of frames read together off the socket."""

    def drain(self) -> np.ndarray:
        """MD_UPDATE_DTYPE records produced since the last call."""

    def venue_states(self) -> np.ndarray:
        """int8 SyncState per ``instrument_ids`` entry, as the venue module sees it."""

    def snapshot_requests(self) -> list[SnapshotRequest]:
        """REST snapshots needed now (the client de-duplicates in-flight requests)."""

    def on_snapshot(self, symbol: str, body: bytes, recv_ts_ns: int) -> Reason:
        """Apply a REST snapshot body; Reason.OK if used."""

    def take_resubscribe(self) -> list[bytes]:
        """Messages to send now to resync instruments over the open connection."""

    def ping_message(self) -> bytes | None:
        """Application-level ping, if the venue wants one."""

    def on_disconnect(self) -> None:
        """The connection is gone: every instrument must resync from scratch."""

    def force_resync(self) -> None:
        """Downstream lost records (ingress ring full): resync every instrument over the open
        connection (new snapshots / resubscriptions), marking them not LIVE at once."""
