"""Top-of-book publication to a seqlock snapshot area in shared memory (``ipc.seqlock``).

One ``TOP_OF_BOOK_DTYPE`` record per instrument, published after each batch for the instruments
that batch touched (``scratch[N_B:N_B + B_TOUCHED]``, left by ``book.apply_batch``), so monitors
(the exporter, ``bot4ctl top``) and other processes read a consistent best bid/ask, depth counts,
error code and sequence without ever blocking the shard. The write protocol and its memory
ordering are ``ipc.seqlock``'s: ``write_begin`` (odd version, release fence), the field stores,
``write_end`` (even version, release store); one writer per record, which the shard model gives
(a shard owns its instruments).

This module is the one place where the book kernels touch ``ipc``; ``bot4d.kernels.book`` itself
stays numpy/numba only.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import kernel
from bot4d.kernels.book import (
    B_FIRST_ERROR,
    B_TOUCHED,
    CTR_LEVELS,
    N_B,
    N_ERR,
    S_ASK_LEN,
    S_BID_LEN,
    S_ERROR,
    S_RECV_TS,
    S_SEQ,
    Books,
    apply_batch,
)
from ipc import seqlock as SL
from ipc.seqlock import SnapshotArea

TOP_OF_BOOK_DTYPE = np.dtype(
    [
        ("bid_px", np.int64),          # best bid price units (0: no bid)
        ("bid_qty", np.int64),
        ("ask_px", np.int64),          # best ask price units (0: no ask)
        ("ask_qty", np.int64),
        ("bid_levels", np.int64),      # levels held per side
        ("ask_levels", np.int64),
        ("last_venue_seq", np.int64),  # venue sequence of the last accepted book record
        ("error", np.int64),           # book.ERR_* (0 ok), sticky until the next MD_CLEAR
        ("recv_ts_ns", np.int64),      # receive time of the last accepted book record
        ("level_updates", np.int64),   # MD_LEVEL records applied so far (monitors derive a rate)
    ],
    align=True,
)
AREA_NAME = "book_top"


@kernel
def publish_one(levels, state, stats, records, seqs, i):
    """Publish instrument ``i``'s top of book as snapshot record ``i``."""
    nb_ = state[i, S_BID_LEN]
    na_ = state[i, S_ASK_LEN]
    SL.write_begin(seqs, i)
    r = records[i]
    if nb_ > 0:
        r.bid_px = levels[i, 0, nb_ - 1]
        r.bid_qty = levels[i, 1, nb_ - 1]
    else:
        r.bid_px = 0
        r.bid_qty = 0
    if na_ > 0:
        r.ask_px = levels[i, 2, na_ - 1]
        r.ask_qty = levels[i, 3, na_ - 1]
    else:
        r.ask_px = 0
        r.ask_qty = 0
    r.bid_levels = nb_
    r.ask_levels = na_
    r.last_venue_seq = state[i, S_SEQ]
    r.error = state[i, S_ERROR]
    r.recv_ts_ns = state[i, S_RECV_TS]
    r.level_updates = stats[i, N_ERR + CTR_LEVELS]
    SL.write_end(seqs, i)


@kernel
def publish_touched(levels, state, stats, scratch, records, seqs):
    """Publish every instrument the last ``apply_batch`` touched; returns how many."""
    n = scratch[B_TOUCHED]
    for k in range(n):
        publish_one(levels, state, stats, records, seqs, scratch[N_B + k])
    return n


@kernel
def apply_and_publish(levels, state, stats, scratch, records, seqs, updates, start, end):
    """``apply_batch`` then ``publish_touched`` in one call (one Python->numba crossing)."""
    applied = apply_batch(levels, state, stats, scratch, updates, start, end)
    publish_touched(levels, state, stats, scratch, records, seqs)
    return applied


class TopOfBookPublisher:
    """Owns the ``book_top`` snapshot area of an instance and publishes ``books`` into it."""

    def __init__(self, books: Books, area: SnapshotArea) -> None:
        if area.dtype != TOP_OF_BOOK_DTYPE:
            raise ValueError(f"snapshot area holds {area.dtype}, expected TOP_OF_BOOK_DTYPE")
        if area.n < books.n_instruments:
            raise ValueError(f"snapshot area has {area.n} records for {books.n_instruments} books")
        self.books = books
        self.area = area

    @classmethod
    def create(cls, books: Books, instance: str, *, reclaim_dead: bool = False) -> "TopOfBookPublisher":
        area = SnapshotArea.create(instance, AREA_NAME, TOP_OF_BOOK_DTYPE, books.n_instruments,
                                   reclaim_dead=reclaim_dead)
        p = cls(books, area)
        p.publish_all()  # readers see a valid (empty) record for every instrument from the start
        return p

    def apply(self, updates: np.ndarray) -> int:
        """Apply a batch and publish what it touched; returns the batch's first error code."""
        b = self.books
        apply_and_publish(b.levels, b.state, b.stats, b.scratch, self.area.records,
                          self.area.seqs, updates, 0, len(updates))
        return int(b.scratch[B_FIRST_ERROR])

    def publish_all(self) -> None:
        b = self.books
        for i in range(b.n_instruments):
            publish_one(b.levels, b.state, b.stats, self.area.records, self.area.seqs, i)

    def close(self) -> None:
        self.area.close()

    def unlink(self) -> None:
        self.area.unlink()


def read_top(instance: str, instrument: int) -> np.void:
    """A monitor's consistent copy of one instrument's top of book (read-only mapping)."""
    area = SnapshotArea.attach(instance, AREA_NAME, readonly=True, dtype=TOP_OF_BOOK_DTYPE)
    try:
        return area.read(instrument)
    finally:
        area.close()


def warmup() -> None:
    from bot4d.kernels.book import make_books
    from bot4d.records import MD_LEVEL, MD_UPDATE_DTYPE

    b = make_books(1, 4)
    recs = np.zeros(1, TOP_OF_BOOK_DTYPE)
    seqs = np.zeros(SL.CL, np.int64)
    u = np.zeros(1, MD_UPDATE_DTYPE)
    u["kind"] = MD_LEVEL
    u["price"] = 10
    u["qty"] = 1
    apply_and_publish(b.levels, b.state, b.stats, b.scratch, recs, seqs, u, 0, 1)
    publish_one(b.levels, b.state, b.stats, recs, seqs, 0)
