"""Several connections for one venue behind FeedClient: one state table, per-venue counters,
and a fault on one connection leaves the other's books LIVE."""
from __future__ import annotations

import pytest

from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.binance import BinanceAdapter
from bot4d.feed.counters import ConnEvent
from bot4d.feed.manager import FeedClient
from bot4d.feed.refbook import RefBooks
from bot4d.instruments import InstrumentTable
from bot4d.sim.feedserver import BinanceMarket, Fault, FeedServer, generate_binance
from tests.test_feed_loopback import FakeTime, book_side, run, until

A = ["AAAUSDT", "BBBUSDT"]
B = ["CCCUSDT", "DDDUSDT"]


def test_two_connections_one_state_table() -> None:
    t = InstrumentTable()
    for s in A + B:
        t.add("BINANCE", s, 8, 8)
    fa, sa = generate_binance(A, 800, seed=31)
    fb, sb = generate_binance(B, 800, seed=32)

    async def go():
        ma, mb = BinanceMarket(fa, sa), BinanceMarket(fb, sb)
        srv_a, srv_b = await FeedServer(ma).start(), await FeedServer(mb).start()
        ft = FakeTime()
        fc = FeedClient(len(t))
        shard = RefBooks()

        def sink(r):
            shard.apply(r)
            return len(r)
        ad_a, ad_b = BinanceAdapter(t, A), BinanceAdapter(t, B)
        ca = fc.add(ad_a, srv_a.ws_base, sink=sink, rest_base=srv_a.rest_base, clock=ft.clock,
                    sleep=ft.sleep, policy=BackoffPolicy(base_s=0.01, max_s=0.05, seed=1))
        cb = fc.add(ad_b, srv_b.ws_base, sink=sink, rest_base=srv_b.rest_base, clock=ft.clock,
                    sleep=ft.sleep, policy=BackoffPolicy(base_s=0.01, max_s=0.05, seed=2))
        with pytest.raises(ValueError):
            fc.add(BinanceAdapter(t, ["AAAUSDT"]), srv_a.ws_base, sink=sink)
        for srv in (srv_a, srv_b):
            srv.hold(10)
        fc.start()
        try:
            await until(lambda: srv_a.held.is_set() and srv_b.held.is_set()
                        and not ad_a.snapshot_requests() and not ad_b.snapshot_requests()
                        and not ca._snap_tasks and not cb._snap_tasks
                        and ca.counters[ConnEvent.SNAPSHOT_OK] == 2
                        and cb.counters[ConnEvent.SNAPSHOT_OK] == 2, what="sync")
            srv_a.inject(Fault.DROP, at=300)
            srv_a.release()
            srv_a.hold(600)
            srv_b.release()
            srv_b.hold(600)
            await until(lambda: ca.counters[ConnEvent.PEER_VANISHED] == 1, what="drop on A")
            # B never noticed: its books stayed LIVE while A resynced
            await until(lambda: srv_b.held.is_set() and cb.frames_on_connection == srv_b.sent_on_connection,
                        what="B caught up")
            ids_b = [t.get("BINANCE", s).id for s in B]
            assert fc.live()[ids_b].all()
            assert cb.counters[ConnEvent.CONNECTED] == 1
            await until(lambda: srv_a.held.is_set() and not ad_a.snapshot_requests()
                        and not ca._snap_tasks, what="A resynced")
            srv_a.release()
            srv_b.release()
            await srv_a.done.wait()
            await srv_b.done.wait()
            await until(lambda: ca.frames_on_connection == srv_a.sent_on_connection
                        and cb.frames_on_connection == srv_b.sent_on_connection, what="caught up")
            await until(lambda: fc.live().all(), what="all LIVE")
            for m, ad, syms in ((ma, ad_a, A), (mb, ad_b, B)):
                for s in syms:
                    i = t.get("BINANCE", s).id
                    want = m.book_units(s, 8, 8)
                    assert (book_side(ad.books, i, 0), book_side(ad.books, i, 1)) == want
                    assert shard.levels(i) == want
            c = fc.counters()["BINANCE"]
            assert c["CONNECTED"] == 3 and c["PEER_VANISHED"] == 1
            assert c["FRAMES"] == ca.counters[ConnEvent.FRAMES] + cb.counters[ConnEvent.FRAMES]
        finally:
            await fc.stop()
            await srv_a.close()
            await srv_b.close()
    run(go())
