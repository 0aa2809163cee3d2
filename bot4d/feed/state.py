"""The per-instrument book-state table every consumer reads, and stale detection.

One int8 per instrument holding a ``bot4d.venues.sync.SyncState`` value (SYNCING, LIVE,
RESYNCING, STALE), with the time of the last market data seen for it. Consumers must treat only
``LIVE`` as usable: the table is the single place that says so. The arrays are plain numpy so the
table can later be laid over a shared-memory segment (pass ``buffer``) without changing readers.

Why the feed client (not the venue module) owns STALE: a venue module sees only the frames it is
given, so silence is invisible to it. The client folds the venue's own state with staleness:
published = venue state, except LIVE becomes STALE when nothing arrived for the instrument for
longer than its threshold. Fresh data on a chain the venue still vouches for (sequence numbers or
checksums) makes it LIVE again; a connection stall instead ends in a reconnect and a resync.
"""
from __future__ import annotations

import numpy as np

from bot4d.venues.sync import SyncState

SYNCING = int(SyncState.SYNCING)
LIVE = int(SyncState.LIVE)
RESYNCING = int(SyncState.RESYNCING)
STALE = int(SyncState.STALE)

STATE_TABLE_DTYPE = np.dtype([
    ("state", np.int8),
    ("_pad", np.int8, 7),
    ("last_data_ns", np.int64),   # injected monotonic clock, last record seen for the instrument
    ("changed_ns", np.int64),     # when ``state`` last changed
    ("transitions", np.int64),    # how many state changes (monitors spot flapping)
])


class BookStateTable:
    """Per-instrument published book state; index = instrument id."""

    def __init__(self, n_instruments: int, buffer: memoryview | np.ndarray | None = None) -> None:
        if buffer is None:
            self.rows = np.zeros(n_instruments, STATE_TABLE_DTYPE)
        else:
            self.rows = np.frombuffer(buffer, STATE_TABLE_DTYPE, count=n_instruments)
        self.rows["state"] = SYNCING
        self.state = self.rows["state"]          # views: writes go to the table
        self.last_data_ns = self.rows["last_data_ns"]
        # per-instrument stale threshold (ns); 0 disables (e.g. an illiquid symbol)
        self.stale_after_ns = np.zeros(n_instruments, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def is_live(self, instrument: int) -> bool:
        return int(self.state[instrument]) == LIVE

    def get(self, instrument: int) -> SyncState:
        return SyncState(int(self.state[instrument]))

    def set(self, instrument: int, state: int, now_ns: int) -> bool:
        """Set one instrument's state; returns True if it changed."""
        if int(self.state[instrument]) == state:
            return False
        r = self.rows[instrument]
        r["state"] = state
        r["changed_ns"] = now_ns
        r["transitions"] += 1
        return True

    def publish(self, instruments: np.ndarray, venue_states: np.ndarray, now_ns: int) -> int:
        """Fold venue states with staleness for ``instruments``; returns how many changed."""
        changed = 0
        for i, vs in zip(instruments.tolist(), venue_states.tolist()):
            s = vs
            if vs == LIVE:
                thr = int(self.stale_after_ns[i])
                if thr and now_ns - int(self.last_data_ns[i]) > thr:
                    s = STALE
            changed += self.set(i, s, now_ns)
        return changed

    def touch(self, instruments: np.ndarray, now_ns: int) -> None:
        """Market data arrived for these instruments (duplicates allowed)."""
        self.last_data_ns[instruments] = now_ns
