"""A plain-Python L2 book built from MD_UPDATE records: the reference the tests compare against.

Why it exists: the venue modules apply records to the numba book kernel when it is there; the
feed tests need the *same* records applied somewhere simple and obviously right, so that "the
book the client built" and "the book a direct replay built" (and "the server's book") can be
compared exactly, level by level, in integer units.
"""
from __future__ import annotations

import numpy as np

from bot4d.records import MD_CLEAR, MD_LEVEL, SIDE_BID


class RefBooks:
    """{instrument: (bids {price: qty}, asks {price: qty})} maintained from records."""

    def __init__(self) -> None:
        self.books: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self.applied = 0

    def _book(self, inst: int) -> tuple[dict[int, int], dict[int, int]]:
        b = self.books.get(inst)
        if b is None:
            b = self.books[inst] = ({}, {})
        return b

    def apply(self, recs: np.ndarray) -> int:
        kinds = recs["kind"].tolist()
        insts = recs["instrument"].tolist()
        sides = recs["side"].tolist()
        pxs = recs["price"].tolist()
        qtys = recs["qty"].tolist()
        for k, i, s, p, q in zip(kinds, insts, sides, pxs, qtys):
            if k == MD_LEVEL:
                side = self._book(i)[0 if s == SIDE_BID else 1]
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
            elif k == MD_CLEAR:
                b = self._book(i)
                b[0].clear()
                b[1].clear()
        self.applied += len(kinds)
        return 0

    def levels(self, inst: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids best first, asks best first) as (price units, qty units)."""
        bids, asks = self._book(inst)
        return (sorted(bids.items(), reverse=True), sorted(asks.items()))


class Tap:
    """Stands where a venue module expects its ``books``: forwards every applied record batch to
    the real book (if any) and keeps a copy for the ingress ring, so records that a venue module
    applies internally (snapshots, buffered diffs replayed after them) are never lost to the
    client."""

    def __init__(self, books=None, capacity: int = 1 << 14) -> None:
        from bot4d.records import MD_UPDATE_DTYPE

        self.books = books
        self.buf = np.zeros(capacity, MD_UPDATE_DTYPE)
        self.n = 0

    def apply(self, recs: np.ndarray) -> int:
        k = len(recs)
        if self.n + k > len(self.buf):
            bigger = np.zeros(max(2 * len(self.buf), self.n + k), self.buf.dtype)
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n : self.n + k] = recs
        self.n += k
        return int(self.books.apply(recs)) if self.books is not None else 0

    def drain(self) -> np.ndarray:
        out = self.buf[: self.n].copy()
        self.n = 0
        return out

    def __getattr__(self, name: str):
        # the venue module reads the kernel's batch summary and error codes through us
        return getattr(self.books, name)
