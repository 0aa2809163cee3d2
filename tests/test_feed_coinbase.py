"""Coinbase (legacy Exchange feed) through the feed client and the loopback server: the recorded
level2 stream equals a direct replay; a dropped connection and a malformed update both end with
LIVE books equal to the venue's (the malformed one through a resubscription)."""
from __future__ import annotations

import pytest

from bot4d.feed.coinbase import CoinbaseLegacyAdapter
from bot4d.feed.counters import ConnEvent
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.sim.feedserver import CoinbaseLegacyMarket, Fault
from bot4d.venues import coinbase as vc
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason
from tests.conftest import RECORDED
from tests.test_feed_loopback import Rig, book_side, finish, run, until

# (price decimals, size decimals) as seen in the recording (tests/test_venue_coinbase.py)
PRODUCTS = {"SKL-USD": (4, 1), "SKL-BTC": (8, 1), "BAND-GBP": (4, 2), "NMR-EUR": (4, 3),
            "BAND-BTC": (8, 2), "YFI-BTC": (5, 6), "DASH-BTC": (8, 8), "NU-GBP": (4, 6),
            "CRV-EUR": (4, 2), "SKL-GBP": (4, 1)}


def cb_table() -> InstrumentTable:
    t = InstrumentTable()
    for p, (ps, qs) in PRODUCTS.items():
        t.add(vc.VENUE, p, ps, qs)
    return t


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [f for _, f in read_recording(RECORDED / "COINBASE.ws.28.0.head1200")]


def cb_rig(frames) -> Rig:
    return Rig(CoinbaseLegacyMarket(frames), list(PRODUCTS), adapter_cls=CoinbaseLegacyAdapter,
               t=cb_table(), venue=vc.VENUE)


def test_recorded_coinbase_through_the_client_equals_direct_replay(frames) -> None:
    t = cb_table()
    books = make_books(len(t), 2048)
    direct = vc.CoinbaseLegacy(t, books)
    for f in frames:
        direct.on_frame(f)
    assert direct.counters.rejects() == 0

    async def go():
        rig = cb_rig(frames)
        async with rig:
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.all_live()
            rig.assert_books_match_venue()
            for p in PRODUCTS:
                i = t.get(vc.VENUE, p).id
                for side in (0, 1):
                    assert book_side(rig.adapter.books, i, side) == book_side(books, i, side)
            assert rig.adapter.counters.rejects() == 0
    run(go())


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.MALFORMED], ids=lambda f: f.value)
def test_coinbase_fault_ends_live_and_identical(frames, fault: Fault) -> None:
    async def go():
        rig = cb_rig(frames)
        rig.server.hold(400)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="first part")
            assert rig.all_live()
            rig.server.inject(fault, at=420)
            rig.server.release()
            rig.server.hold(900)
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="after fault")
            await finish(rig, 900)
            if fault is Fault.DROP:
                assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 1
                assert rig.conn.counters[ConnEvent.CONNECTED] == 2
            else:
                # legacy level2 has no sequence to show the loss: the unreadable frame itself
                # makes the adapter resync every product (unsubscribe + subscribe)
                assert rig.adapter.counters[Reason.MALFORMED_JSON] == 1
                assert rig.conn.counters[ConnEvent.RESUBSCRIBES] == 2
                assert rig.conn.counters[ConnEvent.CONNECTED] == 1
    run(go())
