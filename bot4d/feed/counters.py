"""Connection-level event counters per venue, and logging that says each problem once per burst.

Frame-level refusals (malformed JSON, gaps, checksum mismatches, ...) are counted by the venue
module in its ``ReasonCounters``; what only the client can see (a peer that vanished, a stall, an
oversize frame refused by the WebSocket layer, a reconnect held back by the cap) is counted here.
Both are int64 arrays so a monitor can publish them from shared memory later.
"""
from __future__ import annotations

import logging
from enum import IntEnum

import numpy as np


class ConnEvent(IntEnum):
    CONNECT_ATTEMPTS = 0
    CONNECTED = 1
    CONNECT_FAILED = 2      # refused, handshake failed, timed out
    DISCONNECTED = 3        # any end of an established connection
    PEER_VANISHED = 4       # closed without a close handshake (possibly mid-frame)
    OVERSIZE_FRAME = 5      # the WebSocket layer refused a frame above max_frame_size
    STALLS = 6              # no traffic for too long: connection dropped on purpose
    STALE_MARKS = 7         # instruments marked STALE
    RECONNECT_CAPPED = 8    # a reconnect delay was set by the attempts-per-window cap
    SNAPSHOT_OK = 9
    SNAPSHOT_FAILED = 10    # REST snapshot request failed (status, size, timeout, refused)
    RESYNCS = 11            # instruments forced to resync by the client (disconnects)
    ADAPTER_ERRORS = 12     # the venue adapter raised: a bug, contained, connection reset
    FRAMES = 13
    BYTES = 14
    PINGS_SENT = 15
    RESUBSCRIBES = 16
    SINK_REFUSED = 17       # records the ingress ring did not take: the books resync


N_CONN_EVENTS = len(ConnEvent)


class ConnCounters:
    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = np.zeros(N_CONN_EVENTS, np.int64)

    def bump(self, ev: ConnEvent, n: int = 1) -> None:
        self.counts[int(ev)] += n

    def __getitem__(self, ev: ConnEvent) -> int:
        return int(self.counts[int(ev)])

    def as_dict(self, nonzero: bool = True) -> dict[str, int]:
        return {e.name: int(self.counts[e]) for e in ConnEvent if not nonzero or self.counts[e]}


class BurstLog:
    """Log a given (venue, reason) once per burst: the first occurrence, then at most one summary
    per ``interval_ns`` saying how many more happened. A flood of bad frames costs a counter
    increment each, not a log line each. Time is injected."""

    def __init__(self, logger: logging.Logger, interval_ns: int = 10_000_000_000) -> None:
        self.logger = logger
        self.interval_ns = interval_ns
        self._last: dict[tuple[str, str], int] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self.lines = 0

    def event(self, venue: str, reason: str, n: int, now_ns: int, detail: str = "") -> None:
        key = (venue, reason)
        last = self._last.get(key)
        if last is None or now_ns - last >= self.interval_ns:
            more = self._suppressed.pop(key, 0)
            self.logger.warning("%s feed: %s x%d%s%s", venue, reason, n + more,
                                f" ({more} since last report)" if more else "",
                                f": {detail}" if detail else "")
            self._last[key] = now_ns
            self.lines += 1
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + n
