"""Bybit v5 through the feed client and the loopback server, on generated orderbook traffic:
clean, a lost delta (the ``u`` chain breaks: resubscribe), a malformed delta and a dropped
connection all end with LIVE books equal to the venue's."""
from __future__ import annotations

import pytest

from bot4d.feed.bybit import BybitAdapter
from bot4d.feed.counters import ConnEvent
from bot4d.instruments import InstrumentTable
from bot4d.sim.feedserver import BybitMarket, Fault, generate_bybit
from bot4d.venues import bybit as vy
from bot4d.venues.sync import Reason
from tests.test_feed_loopback import Rig, finish, run, until

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def bybit_rig(frames) -> Rig:
    t = InstrumentTable()
    for s in SYMBOLS:
        t.add(vy.VENUE, s, 2, 3)
    return Rig(BybitMarket(frames), SYMBOLS, adapter_cls=BybitAdapter, t=t, venue=vy.VENUE)


@pytest.mark.parametrize("fault", [None, Fault.SKIP, Fault.MALFORMED, Fault.DROP],
                         ids=lambda f: f.value if f else "clean")
def test_bybit_ends_live_and_identical(fault) -> None:
    frames = generate_bybit(SYMBOLS, 900, seed=8)

    async def go():
        rig = bybit_rig(frames)
        rig.server.hold(200)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="first part")
            assert rig.all_live()
            if fault is not None:
                rig.server.inject(fault, at=300)
            rig.server.release()
            rig.server.hold(600)
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="after fault")
            await finish(rig, 600)
            c = rig.adapter.counters
            if fault is None:
                assert c.rejects() == 0
            elif fault is Fault.DROP:
                assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 1
                assert rig.conn.counters[ConnEvent.CONNECTED] == 2
            else:
                assert c[Reason.GAP] >= 1   # the next delta's u shows the loss
                assert rig.conn.counters[ConnEvent.RESUBSCRIBES] == 2
                assert rig.conn.counters[ConnEvent.CONNECTED] == 1
                if fault is Fault.MALFORMED:
                    assert c[Reason.MALFORMED_JSON] == 1
    run(go())
