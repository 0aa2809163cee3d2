"""OKX v5 through the feed client and the loopback server: the recorded ``books`` stream equals a
direct replay, and a corrupted checksum or a lost update resyncs over the open connection
(unsubscribe + subscribe, answered by a snapshot) to LIVE books equal to the venue's."""
from __future__ import annotations

import pytest

from bot4d.feed.counters import ConnEvent
from bot4d.feed.okx import OkxAdapter
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.sim.feedserver import Fault, OkxMarket
from bot4d.venues import okx as vo
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason
from tests.conftest import RECORDED
from tests.test_feed_loopback import Rig, book_side, finish, run, until

INSTS = {"BTC-USD-220527": (1, 0), "UNI-USD-SWAP": (3, 0), "BTC-USDT": (1, 8)}  # price, qty decimals


def okx_table() -> InstrumentTable:
    t = InstrumentTable()
    for s, (ps, qs) in INSTS.items():
        t.add(vo.VENUE, s, ps, qs)
    return t


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [f for _, f in read_recording(RECORDED / "OKX.ws.1.0")]


def okx_rig(frames) -> Rig:
    return Rig(OkxMarket(frames), list(INSTS), adapter_cls=OkxAdapter, t=okx_table(),
               venue=vo.VENUE)


def test_recorded_okx_through_the_client_equals_direct_replay(frames) -> None:
    t = okx_table()
    books = make_books(len(t), 1024)
    direct = vo.OkxV5(t, books)
    direct.on_frames(frames)
    assert direct.counters[Reason.CHECKSUM_MISMATCH] == 0 and direct.checked > 250

    async def go():
        rig = okx_rig(frames)
        async with rig:
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.all_live()
            rig.assert_books_match_venue()
            for s in INSTS:
                i = t.get(vo.VENUE, s).id
                for side in (0, 1):
                    assert book_side(rig.adapter.books, i, side) == book_side(books, i, side)
            assert rig.adapter.handler.checked == direct.checked
            assert rig.adapter.counters.rejects() == 0
    run(go())


@pytest.mark.parametrize("fault", [Fault.CORRUPT, Fault.SKIP, Fault.MALFORMED], ids=lambda f: f.value)
def test_okx_fault_resyncs_by_resubscribing(frames, fault: Fault) -> None:
    async def go():
        rig = okx_rig(frames)
        rig.server.hold(150)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="first part")
            assert rig.all_live()
            rig.server.inject(fault, at=170)
            rig.server.release()
            rig.server.hold(300)
            await until(lambda: rig.conn.counters[ConnEvent.RESUBSCRIBES] >= 2, what="resubscribe")
            await finish(rig, 300)
            if fault is Fault.MALFORMED:
                assert rig.adapter.counters[Reason.MALFORMED_JSON] == 1  # resync without waiting
            else:
                assert rig.adapter.counters[Reason.CHECKSUM_MISMATCH] >= 1  # 2022: checksums only
            assert rig.conn.counters[ConnEvent.CONNECTED] == 1
            assert any(b'"unsubscribe"' in m for m in rig.server.client_messages)
    run(go())
