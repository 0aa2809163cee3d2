"""Kraken v1 through the feed client and the loopback server: the recorded book stream, and the
faults Kraken can detect (a corrupted checksum, a dropped connection, a 10 MB frame), each ending
with LIVE books equal to the venue's own. Resync on Kraken is a resubscription on the open
connection: the server answers it with a snapshot at that point of the stream."""
from __future__ import annotations

import pytest

from bot4d.feed.counters import ConnEvent
from bot4d.feed.kraken import KrakenV1Adapter
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.sim.feedserver import Fault, KrakenV1Market
from bot4d.venues import kraken as vk
from bot4d.venues.l2sync import read_recording
from bot4d.venues.sync import Reason
from tests.conftest import RECORDED
from tests.test_feed_loopback import Rig, book_side, finish, run, until

PAIRS = {  # pair -> price decimals on the wire (as in tests/test_venue_kraken.py)
    "ADA/XBT": 9, "XBT/CHF": 5, "OMG/USD": 6, "OCEAN/XBT": 9, "ETH/CHF": 5, "SC/EUR": 6,
    "GRT/ETH": 9, "KSM/XBT": 8, "XMR/USD": 8, "WAVES/EUR": 6,
}


def kraken_table() -> InstrumentTable:
    t = InstrumentTable()
    for pair, dec in PAIRS.items():
        t.add(vk.VENUE, pair, dec, 8)
    return t


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [f for _, f in read_recording(RECORDED / "KRAKEN.ws.50.0")]


def kraken_rig(frames, **kw) -> Rig:
    return Rig(KrakenV1Market(frames), list(PAIRS), adapter_cls=KrakenV1Adapter,
               t=kraken_table(), venue=vk.VENUE, **kw)


def test_recorded_kraken_through_the_client_equals_direct_replay(frames) -> None:
    t = kraken_table()
    books = make_books(len(t), 1024)
    direct = vk.KrakenV1(t, books)
    direct.on_frames(frames)
    assert direct.counters[Reason.CHECKSUM_MISMATCH] == 0 and direct.checked == 4269

    async def go():
        rig = kraken_rig(frames)
        async with rig:
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.all_live()
            rig.assert_books_match_venue()
            for p in PAIRS:
                i = t.get(vk.VENUE, p).id
                for side in (0, 1):
                    assert book_side(rig.adapter.books, i, side) == book_side(books, i, side)
            assert rig.adapter.handler.checked == 4269
            assert rig.adapter.counters.rejects() == 0
            assert b'"subscribe"' in rig.server.client_messages[0]
    run(go())


@pytest.mark.parametrize("fault", [Fault.CORRUPT, Fault.DROP, Fault.OVERSIZE, Fault.MALFORMED],
                         ids=lambda f: f.value)
def test_kraken_fault_ends_live_and_identical(frames, fault: Fault) -> None:
    async def go():
        rig = kraken_rig(frames)
        rig.server.hold(1000)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="first part")
            assert rig.all_live()
            rig.server.inject(fault, at=1500)
            rig.server.release()
            rig.server.hold(3000)  # (no await in between: the pump resumes, then stops at 3000)
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="after fault")
            if fault is Fault.CORRUPT:
                # one pair resynced over the open connection: unsubscribe + subscribe, new snapshot
                assert rig.adapter.counters[Reason.CHECKSUM_MISMATCH] == 1
                assert rig.conn.counters[ConnEvent.RESUBSCRIBES] == 2  # unsubscribe, subscribe
                assert rig.conn.counters[ConnEvent.CONNECTED] == 1
                assert any(b'"unsubscribe"' in m for m in rig.server.client_messages)
            elif fault is Fault.DROP:
                assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 1
                assert rig.conn.counters[ConnEvent.CONNECTED] == 2
            elif fault is Fault.MALFORMED:
                # the lost update may lie below the checksummed top 10: every pair resyncs
                assert rig.adapter.counters[Reason.MALFORMED_JSON] == 1
                assert rig.conn.counters[ConnEvent.RESUBSCRIBES] == 2
                assert rig.conn.counters[ConnEvent.CONNECTED] == 1
            else:
                assert rig.conn.counters[ConnEvent.OVERSIZE_FRAME] == 1
                assert rig.adapter.counters[Reason.OVERSIZE_FRAME] == 1
            await finish(rig, 3000)
            assert rig.server.stats.faults_fired == {fault.value: 1}
            if fault is not Fault.MALFORMED:  # (a resync may race an in-flight update there)
                assert rig.adapter.counters[Reason.CHECKSUM_MISMATCH] == (fault is Fault.CORRUPT)
    run(go())


def test_kraken_app_ping_when_idle(frames) -> None:
    """Heartbeat rule: when the client has sent nothing for ping_interval_s it pings (Kraken
    answers with a pong event, which the venue module ignores)."""
    async def go():
        rig = kraken_rig(frames, stall_after_s=60.0)
        rig.adapter.ping_interval_s = 5.0
        rig.server.hold(50)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="start")
            rig.time.now += 4 * 1_000_000_000
            rig.conn.check()
            assert rig.conn.counters[ConnEvent.PINGS_SENT] == 0
            rig.time.now += 2 * 1_000_000_000
            rig.conn.check()
            assert rig.conn.counters[ConnEvent.PINGS_SENT] == 1
            await until(lambda: rig.server.market.pings == 1, what="ping at the server")
            await until(rig.caught_up, what="pong read")
            assert rig.adapter.counters[Reason.IGNORED] > 0
            rig.server.release()
    run(go())


# --- Kraken WebSocket v2 (the live API) on generated traffic ------------------------------------------
V2_SYMBOLS = ["BTC/USD", "ETH/USD"]


def v2_rig(frames) -> Rig:
    from bot4d.feed.kraken import KrakenV2Adapter
    from bot4d.sim.feedserver import KrakenV2Market

    t = InstrumentTable()
    for s in V2_SYMBOLS:
        t.add(vk.VENUE, s, 1, 8)
    return Rig(KrakenV2Market(frames), V2_SYMBOLS, adapter_cls=KrakenV2Adapter, t=t, venue=vk.VENUE)


@pytest.mark.parametrize("fault", [None, Fault.CORRUPT, Fault.MALFORMED, Fault.DROP],
                         ids=lambda f: f.value if f else "clean")
def test_kraken_v2_ends_live_and_identical(fault) -> None:
    from bot4d.sim.feedserver import generate_kraken_v2

    frames = generate_kraken_v2(V2_SYMBOLS, 900, seed=5)

    async def go():
        rig = v2_rig(frames)
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
                assert rig.adapter.handler.checked == len(frames)  # every frame's checksum
            elif fault is Fault.DROP:
                assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 1
            else:
                # depth 10 and checksum over the top 10: every lost or bad update is caught
                assert c[Reason.CHECKSUM_MISMATCH] + c[Reason.MALFORMED_JSON] >= 1
                assert rig.conn.counters[ConnEvent.RESUBSCRIBES] == 2
                assert rig.conn.counters[ConnEvent.CONNECTED] == 1
    run(go())
