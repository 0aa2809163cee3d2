"""All market-data connections of the daemon behind one object.

A venue may need several connections (stream-count limits per connection, spreading symbols to
keep each socket's read batches small); every connection has its own adapter, reconnect policy
and counters, and all of them publish into one BookStateTable, so a consumer asks one place
whether an instrument's book is LIVE. Counters are reported per venue and reason, summed over the
venue's connections.
"""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from bot4d.feed.adapter import FeedAdapter
from bot4d.feed.client import FeedConnection, Sink
from bot4d.feed.state import LIVE, BookStateTable


class FeedClient:
    def __init__(self, n_instruments: int, states: BookStateTable | None = None) -> None:
        self.states = states if states is not None else BookStateTable(n_instruments)
        self.connections: list[FeedConnection] = []
        self._owner: dict[int, FeedConnection] = {}

    def add(self, adapter: FeedAdapter, ws_base: str, *, sink: Sink | None,
            rest_base: str | None = None, **kw: Any) -> FeedConnection:
        """Add a connection; an instrument may be carried by one connection only (two writers of
        one state row would fight)."""
        ids = [int(i) for i in adapter.instrument_ids]
        taken = [i for i in ids if i in self._owner]
        if taken:
            raise ValueError(f"instruments {taken} already have a feed connection")
        conn = FeedConnection(adapter, ws_base, states=self.states, sink=sink,
                              rest_base=rest_base, **kw)
        for i in ids:
            self._owner[i] = conn
        self.connections.append(conn)
        return conn

    def start(self) -> None:
        for c in self.connections:
            c.start()

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connections))

    def live(self) -> np.ndarray:
        """bool per instrument: True only where the published state is LIVE."""
        return self.states.state == LIVE

    def counters(self) -> dict[str, dict[str, int]]:
        """{venue: {event or reason name: count}}, summed over the venue's connections."""
        out: dict[str, dict[str, int]] = {}
        for c in self.connections:
            d = out.setdefault(c.venue, {})
            for src in (c.counters.as_dict(), c.adapter.counters.as_dict()):
                for k, v in src.items():
                    d[k] = d.get(k, 0) + v
        return out
