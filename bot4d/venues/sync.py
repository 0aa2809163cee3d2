"""What every venue module shares: the per-instrument sync state and the bad-input reason counters.

A venue module keeps one SyncState per instrument. Its frame handler never raises for bad venue
input: it returns a Reason (Reason.OK when the frame was used) and bumps the matching counter,
so an operator sees *why* frames were refused, and a test can prove every path was taken.

Counters live in a plain int64 numpy array indexed by Reason so that a later monitor can publish
them from shared memory without knowing any venue.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class SyncState(IntEnum):
    """Per-instrument book state. Only LIVE books may be used for trading decisions."""

    SYNCING = 0     # first sync: buffering diffs, waiting for / applying a snapshot
    LIVE = 1        # snapshot applied and every diff since chained on the venue's sequence rule
    RESYNCING = 2   # a gap / checksum failure / bad frame broke the chain: book is not usable
    STALE = 3       # feed client's business (no traffic for too long); venues never set it


class Reason(IntEnum):
    """Why a frame (or part of one) was not applied. OK means it was used."""

    OK = 0
    MALFORMED_JSON = 1     # not JSON, or JSON without the fields the message type requires
    UNKNOWN_SYMBOL = 2     # symbol not configured in the InstrumentTable
    BAD_QTY = 3            # negative, non-numeric or out-of-range quantity
    BAD_PRICE = 4          # non-numeric, negative, zero or out-of-range price
    CROSSED_BOOK = 5       # after applying, best bid >= best ask
    OUT_OF_ORDER = 6       # sequence went backwards or repeated (duplicate)
    GAP = 7                # sequence skipped ahead: updates were lost, resync needed
    CHECKSUM_MISMATCH = 8  # venue checksum disagrees with the maintained book
    OVERSIZE_FRAME = 9     # frame larger than the configured maximum, not parsed
    UNKNOWN_MESSAGE = 10   # valid JSON, but not a message type this module handles
    STALE_EVENT = 11       # event older than the snapshot: dropped by the venue's own rules
    BUFFER_OVERFLOW = 12   # too many diffs buffered while waiting for a snapshot
    BAD_SNAPSHOT = 13      # REST/WS snapshot unusable (malformed, or does not bridge the diffs)
    NOT_SYNCED = 14        # data for an instrument whose book is not LIVE (e.g. ticker vs book)
    BATCH_FULL = 15        # output record batch has no room: caller must flush and retry
    IGNORED = 16           # well-formed but deliberately unused (acks, klines, pongs)


N_REASONS = len(Reason)


class ReasonCounters:
    """Counts per Reason; one instance per venue connection (or per venue module instance)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = np.zeros(N_REASONS, np.int64)

    def bump(self, reason: Reason | int, n: int = 1) -> None:
        self.counts[int(reason)] += n

    def __getitem__(self, reason: Reason | int) -> int:
        return int(self.counts[int(reason)])

    def as_dict(self, nonzero: bool = True) -> dict[str, int]:
        return {r.name: int(self.counts[r]) for r in Reason if not nonzero or self.counts[r]}

    def rejects(self) -> int:
        """Every counted frame or part that was refused (neither used nor deliberately ignored)."""
        return int(self.counts.sum() - self.counts[Reason.OK] - self.counts[Reason.IGNORED])
