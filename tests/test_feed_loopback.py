"""The feed client against the loopback feed server, over real sockets on 127.0.0.1.

Every test ends with books that are LIVE and identical, level by level in integer units, to the
venue's own book (the server's market) — and, for the recorded stream, to a direct replay of the
recording through the venue module. Faults are injected by the server; the client must count
them, resync, and never show a book as LIVE while it cannot be trusted. Time is injected: the
client's clock only moves when a test (or a backoff sleep) moves it, so nothing here depends on
how fast this shared machine is; real time only bounds how long we wait.
"""
from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.binance import BinanceAdapter
from bot4d.feed.client import FeedConnection
from bot4d.feed.counters import ConnEvent
from bot4d.feed.refbook import RefBooks
from bot4d.feed.state import LIVE, STALE, BookStateTable
from bot4d.instruments import InstrumentTable
from bot4d.kernels.book import make_books
from bot4d.records import MD_UPDATE_DTYPE
from bot4d.sim.feedserver import (BinanceMarket, Fault, FeedServer, generate_binance,
                                  recorded_binance)
from bot4d.venues.binance import BinanceFeed
from bot4d.venues.sync import Reason
from tests.conftest import RECORDED

S = 1_000_000_000
REC_SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
GEN_SYMBOLS = ["AAAUSDT", "BBBUSDT"]


class FakeTime:
    """The client's clock: moves only when told (or when the client sleeps for a backoff)."""

    def __init__(self) -> None:
        self.now = 1_000 * S
        self.slept: list[float] = []

    def clock(self) -> int:
        return self.now

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.now += int(d * S)
        await asyncio.sleep(0)


async def until(pred, timeout: float = 30.0, what: str = "") -> None:
    """Wait for ``pred()``; the timeout only stops a hung test, it asserts nothing about speed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.005)


def book_side(books, i: int, side: int) -> list[tuple[int, int]]:
    """One side of the kernel's book, best first (the kernel's accessor has been renamed once)."""
    f = getattr(books, "levels_of", None)
    return f(i, side) if f is not None else books.levels(i, side)


def table(symbols) -> InstrumentTable:
    t = InstrumentTable()
    for s in symbols:
        t.add("BINANCE", s, 8, 8)
    return t


class Rig:
    """Server + client + the books on both sides of the ingress ring."""

    def __init__(self, market, symbols: list[str], *, adapter_cls=BinanceAdapter,
                 policy: BackoffPolicy | None = None, t: InstrumentTable | None = None,
                 venue: str = "BINANCE", **conn_kw) -> None:
        self.market = market
        self.symbols = symbols
        self.venue = venue
        self.t = t if t is not None else table(symbols)
        self.time = FakeTime()
        self.adapter = adapter_cls(self.t, symbols)
        self.states = BookStateTable(len(self.t))
        self.ring_books = RefBooks()   # what a shard rebuilds from the forwarded records
        self.server = FeedServer(market)
        self.policy = policy or BackoffPolicy(base_s=0.01, max_s=0.1, max_attempts=50, seed=5)
        self.conn_kw = conn_kw

    async def __aenter__(self) -> "Rig":
        await self.server.start()
        self.conn = FeedConnection(
            self.adapter, self.server.ws_base, states=self.states, sink=self._to_shard,
            rest_base=self.server.rest_base, policy=self.policy, clock=self.time.clock,
            sleep=self.time.sleep, **self.conn_kw)
        self.conn.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.conn.stop()
        await self.server.close()

    def _to_shard(self, recs: np.ndarray) -> int:
        self.ring_books.apply(recs)
        return len(recs)

    def ids(self) -> list[int]:
        return [self.t.get(self.venue, s).id for s in self.symbols]

    def caught_up(self) -> bool:
        """The client has read everything the venue sent on this connection."""
        return (self.conn.connected and self.server.sent_on_connection > 0
                and self.conn.frames_on_connection == self.server.sent_on_connection
                and not self.conn._pending)

    def all_live(self) -> bool:
        return all(self.states.is_live(i) for i in self.ids())

    def resync_settled(self) -> bool:
        """No snapshot needed or in flight: the next diffs will bridge."""
        return not self.adapter.snapshot_requests() and not self.conn._snap_tasks

    def assert_books_match_venue(self) -> None:
        for s in self.symbols:
            inst = self.t.get(self.venue, s)
            i = inst.id
            want = self.market.book_units(s, inst.price_scale, inst.qty_scale)
            kernel = (book_side(self.adapter.books, i, 0), book_side(self.adapter.books, i, 1))
            assert kernel == want, f"{s}: kernel book differs from the venue's"
            assert self.ring_books.levels(i) == want, f"{s}: records forwarded rebuild another book"
            assert len(want[0]) >= 5 and len(want[1]) >= 5  # a real book, not an empty match


def run(coro, timeout: float = 90.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


# --- recorded traffic ------------------------------------------------------------------------------
def direct_replay(frames, snaps):
    """The recording through the venue module alone, with the recorded snapshots."""
    t = table(REC_SYMBOLS)
    books = make_books(len(t), 5000)
    feed = BinanceFeed(t, books)
    feed.on_frames(frames)
    for s in REC_SYMBOLS:
        assert feed.on_snapshot(s, snaps[s]) == Reason.OK
    return t, books, feed


def test_recorded_binance_through_the_client_equals_direct_replay() -> None:
    frames, snaps = recorded_binance(RECORDED)
    t, books, feed = direct_replay(frames, snaps)
    assert all(feed.sync_state(s) == 1 for s in REC_SYMBOLS)

    async def go():
        market = BinanceMarket(frames, snaps)
        rig = Rig(market, REC_SYMBOLS)
        rig.server.hold(8)  # let the client buffer, fetch its four snapshots, then stream on
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 4
                        and rig.resync_settled(), what="first snapshots")
            assert not any(rig.states.is_live(i) for i in rig.ids())  # nothing LIVE before sync
            rig.server.release()
            await rig.server.done.wait()
            await until(rig.all_live, what="all LIVE")
            await until(lambda: rig.conn.counters[ConnEvent.FRAMES] >= len(frames), what="all read")
            rig.assert_books_match_venue()
            for s in REC_SYMBOLS:
                i = rig.t.get("BINANCE", s).id
                assert book_side(rig.adapter.books, i, 0) == book_side(books, i, 0)
                assert book_side(rig.adapter.books, i, 1) == book_side(books, i, 1)
            # the subscription went out, and nothing was refused but events older than snapshots
            assert b'"SUBSCRIBE"' in rig.server.client_messages[0]
            assert rig.adapter.counters.rejects() == rig.adapter.counters[Reason.STALE_EVENT]
            assert rig.conn.counters[ConnEvent.CONNECTED] == 1
    run(go())


# --- injected faults -------------------------------------------------------------------------------
FAULTS = {
    Fault.SKIP: lambda r: r.adapter.counters[Reason.GAP] >= 1,
    Fault.MALFORMED: lambda r: r.adapter.counters[Reason.MALFORMED_JSON] == 1
    and r.adapter.counters[Reason.GAP] >= 1,
    Fault.DROP: lambda r: r.conn.counters[ConnEvent.PEER_VANISHED] == 1,
    Fault.VANISH: lambda r: r.conn.counters[ConnEvent.PEER_VANISHED] == 1,
    Fault.OVERSIZE: lambda r: r.conn.counters[ConnEvent.OVERSIZE_FRAME] == 1
    and r.adapter.counters[Reason.OVERSIZE_FRAME] == 1,
    # a message over the limit in small fragments is refused by the client's own cap
    Fault.OVERSIZE_FRAGMENTS: lambda r: r.conn.counters[ConnEvent.OVERSIZE_FRAME] == 1
    and r.adapter.counters[Reason.OVERSIZE_FRAME] == 1,
}


async def synced_start(rig: Rig) -> None:
    await until(lambda: rig.server.held.is_set() and rig.resync_settled()
                and rig.conn.counters[ConnEvent.SNAPSHOT_OK] >= len(rig.symbols), what="sync")
    rig.server.release()


async def finish(rig: Rig, hold_at: int) -> None:
    """After a fault: let the client finish its resync while the market waits, then play the
    rest of the script and require LIVE books equal to the venue's."""
    await until(lambda: rig.server.held.is_set(), what="hold point")
    await until(rig.resync_settled, what="resync settled")
    rig.server.release()
    await rig.server.done.wait()
    await until(rig.all_live, what="LIVE again")
    await until(rig.caught_up, what="caught up")
    rig.assert_books_match_venue()


@pytest.mark.parametrize("fault", list(FAULTS), ids=lambda f: f.value)
def test_fault_ends_live_and_identical(fault: Fault) -> None:
    frames, snaps = generate_binance(GEN_SYMBOLS, 1200, seed=11)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            await until(rig.all_live, what="LIVE before the fault")
            rig.server.inject(fault, at=400)
            rig.server.hold(800)
            await until(lambda: FAULTS[fault](rig), what=f"{fault} counted")
            # the broken book was withdrawn: some instrument left LIVE after the fault
            assert int(rig.states.rows["transitions"][rig.ids()].sum()) > len(GEN_SYMBOLS)
            await finish(rig, 800)
            assert rig.server.stats.faults_fired == {fault.value: 1}
            conns = rig.conn.counters[ConnEvent.CONNECTED]
            assert conns == (1 if fault in (Fault.SKIP, Fault.MALFORMED) else 2)
            assert rig.conn.counters[ConnEvent.PEER_VANISHED] == (fault in (Fault.DROP, Fault.VANISH))
            assert rig.conn.counters[ConnEvent.ADAPTER_ERRORS] == 0
    run(go())


def test_fragmented_update_is_reassembled() -> None:
    """A legal fragmented message carrying a book update: reassembled and applied, no resync."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 600, seed=19)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            rig.server.inject(Fault.FRAGMENTED, at=200)
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.server.stats.faults_fired == {"fragmented": 1}
            assert rig.all_live() and rig.adapter.counters.rejects() == rig.adapter.counters[Reason.STALE_EVENT]
            assert rig.conn.counters[ConnEvent.CONNECTED] == 1
            assert rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 2
            rig.assert_books_match_venue()
    run(go())


def test_websocket_ping_is_answered_with_its_payload() -> None:
    """Binance pings at the WebSocket level and disconnects clients that do not pong; the
    client answers every ping with the same payload and counts it as traffic."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 100, seed=20)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.hold(10)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="connected")
            rig.time.now += 3 * S
            rig.server.ping(b"abc")
            rig.server.ping(b"def")
            await until(lambda: len(rig.server.pongs) == 2, what="pongs")
            assert rig.server.pongs == [b"abc", b"def"]
            assert rig.conn._last_frame_ns == rig.time.now   # a ping is proof of life
            rig.server.release()
    run(go())


def test_stall_goes_stale_then_reconnects() -> None:
    frames, snaps = generate_binance(GEN_SYMBOLS, 1200, seed=12)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS, stale_after_s=5.0, stall_after_s=15.0)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            rig.server.inject(Fault.STALL, at=400)
            await until(lambda: rig.server.cursor == 400 and rig.caught_up(),
                        what="client caught up to the stall")
            assert rig.all_live()
            rig.server.hold(800)
            rig.time.now += 4 * S
            rig.conn.check()
            assert rig.all_live()                      # 4 s of silence: still within 5 s
            rig.time.now += 2 * S
            rig.conn.check()
            assert all(rig.states.get(i) == STALE for i in rig.ids())
            assert rig.conn.counters[ConnEvent.STALE_MARKS] == 2
            assert rig.conn.connected and rig.conn.counters[ConnEvent.STALLS] == 0
            rig.time.now += 10 * S                     # 16 s > stall_after: reconnect
            rig.conn.check()
            assert rig.conn.counters[ConnEvent.STALLS] == 1
            await until(lambda: rig.conn.counters[ConnEvent.CONNECTED] == 2, what="reconnect")
            await finish(rig, 800)
            assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 0  # we closed it, not the peer
    run(go())


def test_snapshot_http_errors_are_counted_and_retried() -> None:
    frames, snaps = generate_binance(GEN_SYMBOLS, 600, seed=13)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.http_failures = 3
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            await rig.server.done.wait()
            await until(rig.all_live, what="LIVE")
            await until(rig.caught_up, what="caught up")
            assert rig.conn.counters[ConnEvent.SNAPSHOT_FAILED] == 3
            rig.assert_books_match_venue()
    run(go())


def test_unusable_snapshot_bodies_are_refused_and_retried() -> None:
    """A 200 whose body is cut short: the venue module refuses it (counted per reason), the
    client backs off and asks again; the books still end LIVE and identical."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 600, seed=22)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.http_bad_bodies = 3
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            await rig.server.done.wait()
            await until(rig.all_live, what="LIVE")
            await until(rig.caught_up, what="caught up")
            assert rig.conn.counters[ConnEvent.SNAPSHOT_FAILED] == 3
            assert rig.adapter.counters[Reason.MALFORMED_JSON] + \
                rig.adapter.counters[Reason.BAD_SNAPSHOT] == 3
            assert rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 2
            assert sum(1 for d in rig.time.slept if d > 0) >= 3   # each refusal backed off
            rig.assert_books_match_venue()
    run(go())


def test_book_that_cannot_resync_is_withdrawn_downstream() -> None:
    """After the connection drops and the venue's REST endpoint keeps failing, the books are
    never LIVE again and the shard's copy is empty: no level nobody vouches for is offered."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 600, seed=23)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            rig.server.hold(300)
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="at 300")
            assert rig.all_live()
            assert all(rig.ring_books.levels(i)[0] for i in rig.ids())
            rig.server.http_failures = 10_000
            rig.server.drop_now()
            await until(lambda: rig.conn.counters[ConnEvent.SNAPSHOT_FAILED] >= 4, what="failing")
            assert not any(rig.states.is_live(i) for i in rig.ids())
            assert all(rig.ring_books.levels(i) == ([], []) for i in rig.ids())
            rig.server.release()
    run(go())


class _BuggyAdapter(BinanceAdapter):
    """Raises once, as a venue-module bug would: the client must contain it."""

    calls = 0

    def on_frames(self, frames, recv_ts_ns):
        type(self).calls += 1
        if type(self).calls == 5:
            raise RuntimeError("bug in a venue module")
        super().on_frames(frames, recv_ts_ns)


def test_adapter_exception_is_contained_and_resynced() -> None:
    frames, snaps = generate_binance(GEN_SYMBOLS, 1000, seed=14)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS, adapter_cls=_BuggyAdapter)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            rig.server.hold(700)
            await until(lambda: rig.conn.counters[ConnEvent.ADAPTER_ERRORS] == 1, what="bug hit")
            await finish(rig, 700)
            assert rig.conn.counters[ConnEvent.CONNECTED] == 2
            assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 0
    run(go())


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_reconnect_attempts_follow_policy_and_cap() -> None:
    """Nobody listens: every attempt is refused. Delays stay under the exponential ceiling, and
    no more than max_attempts start in any window (measured on the injected clock)."""
    policy = BackoffPolicy(base_s=0.1, max_s=2.0, max_attempts=6, window_s=30.0, seed=9)
    t = table(GEN_SYMBOLS)
    ft = FakeTime()
    starts: list[int] = []

    async def go():
        ad = BinanceAdapter(t, GEN_SYMBOLS)
        conn = FeedConnection(ad, f"ws://127.0.0.1:{free_port()}", states=BookStateTable(len(t)),
                              policy=policy, clock=ft.clock, sleep=ft.sleep)
        orig = policy.attempt

        def attempt(now):
            starts.append(now)
            orig(now)
        policy.attempt = attempt
        conn.start()
        await until(lambda: len(starts) >= 25, what="25 attempts")
        await conn.stop()
        return conn

    conn = run(go())
    n = conn.counters[ConnEvent.CONNECT_ATTEMPTS]
    assert conn.counters[ConnEvent.CONNECT_FAILED] in (n, n - 1)  # the last may be cut by stop
    st = np.array(starts)
    for s in st:
        assert np.count_nonzero((st >= s) & (st < s + 30 * S)) <= 6
    assert conn.counters[ConnEvent.RECONNECT_CAPPED] >= 3
    # between capped waits, each delay is within its ceiling: failures k -> base * 2**(k-1)
    for k, d in enumerate(ft.slept[:5], start=1):
        assert d <= min(2.0, 0.1 * 2 ** (k - 1)) + 1e-9
    assert not any(conn.states.is_live(i) for i in range(len(t)))


def test_accept_then_drop_storm_is_capped() -> None:
    """A venue that accepts every connection and drops it at once (connections live ~0 s, so
    the exponent never resets): the cap still bounds the attempts per window."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 200, seed=15)
    policy = BackoffPolicy(base_s=0.01, max_s=0.05, max_attempts=4, window_s=20.0, seed=2)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS, policy=policy)
        for _ in range(12):
            rig.server.inject(Fault.DROP, at=0)
        rig.server.hold(100)
        async with rig:
            await until(lambda: rig.server.stats.faults_fired.get("drop", 0) >= 12, what="12 drops")
            await until(lambda: rig.conn.counters[ConnEvent.CONNECTED] >= 13, what="13th connect")
            assert rig.conn.counters[ConnEvent.RECONNECT_CAPPED] >= 2
            # 13 connections at <= 4 per 20 s of injected time need at least 60 s of it
            assert rig.time.now - 1_000 * S >= 60 * S
            assert rig.conn.counters[ConnEvent.PEER_VANISHED] == 12
            await finish(rig, 100)
            await until(rig.all_live, what="LIVE after the storm")
            await until(rig.caught_up, what="caught up")
            rig.assert_books_match_venue()
    run(go())


def test_records_reach_a_real_ingress_ring() -> None:
    """The sink is the shard's ingress ring (ipc.ring queue): what a consumer drains rebuilds the
    venue's book; a full ring is counted and forces a resync instead of losing records silently."""
    import os

    from ipc.ring import Ring

    frames, snaps = generate_binance(GEN_SYMBOLS, 800, seed=16)
    inst = f"feedtest{os.getpid()}"
    ring = Ring.create(inst, "ingress0", MD_UPDATE_DTYPE, 1 << 16, kind="queue", policy="fail")
    try:
        async def go():
            rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
            shard = RefBooks()
            rig.server.hold(10)
            async with rig:
                rig.conn.sink = ring.publish
                await synced_start(rig)
                await rig.server.done.wait()
                await until(rig.all_live, what="LIVE")
                await until(rig.caught_up, what="caught up")
                while True:
                    got = ring.consume(0)
                    if not len(got):
                        break
                    shard.apply(got)
                for s, i in zip(rig.symbols, rig.ids()):
                    assert shard.levels(i) == rig.market.book_units(s, 8, 8)
                assert rig.conn.counters[ConnEvent.SINK_REFUSED] == 0
        run(go())
    finally:
        ring.unlink()
        ring.close()


def test_full_ingress_is_counted_and_resyncs() -> None:
    frames, snaps = generate_binance(GEN_SYMBOLS, 1000, seed=17)

    async def go():
        rig = Rig(BinanceMarket(frames, snaps), GEN_SYMBOLS)
        shard = rig.ring_books  # finish() checks it against the venue
        refuse = {"n": 0}

        def sink(recs):
            if refuse["n"] == 0 and rig.all_live() and rig.server.cursor > 300:
                refuse["n"] = 1
                return len(recs) // 2       # the ring took half: the shard's book is broken
            shard.apply(recs)
            return len(recs)
        rig.server.hold(10)
        async with rig:
            rig.conn.sink = sink
            await synced_start(rig)
            rig.server.hold(700)
            await until(lambda: rig.conn.counters[ConnEvent.SINK_REFUSED] > 0, what="refusal")
            assert not rig.all_live()
            await finish(rig, 700)
    run(go())


# --- Binance USD-M futures: the pu chain and the U <= lastUpdateId <= u bridge ----------------------
FUT_SYMBOLS = ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]


def futures_rig(market) -> Rig:
    from bot4d.feed.binance import BinanceFuturesAdapter

    t = InstrumentTable()
    for s in FUT_SYMBOLS:
        t.add("BINANCE_FUTURES", s, 8, 3)
    return Rig(market, FUT_SYMBOLS, adapter_cls=BinanceFuturesAdapter, t=t, venue="BINANCE_FUTURES")


def test_recorded_binance_futures_through_the_client_equals_direct_replay() -> None:
    from bot4d.venues.binance_futures import BinanceFuturesFeed

    frames, snaps = recorded_binance(RECORDED, "BINANCE_FUTURES")

    async def go():
        rig = futures_rig(BinanceMarket(frames, snaps, futures=True))
        books = make_books(len(rig.t), 5000)
        direct = BinanceFuturesFeed(rig.t, books)
        direct.on_frames(frames)
        for s in FUT_SYMBOLS:
            assert direct.on_snapshot(s, snaps[s]) == Reason.OK
        rig.server.hold(8)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.resync_settled()
                        and rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 4, what="snapshots")
            rig.server.release()
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.all_live()
            rig.assert_books_match_venue()
            for s, i in zip(FUT_SYMBOLS, rig.ids()):
                for side in (0, 1):
                    assert book_side(rig.adapter.books, i, side) == book_side(books, i, side)
            assert rig.adapter.counters[Reason.GAP] == 0
    run(go())


def test_binance_futures_skipped_event_resyncs_on_the_pu_chain() -> None:
    """A lost futures event breaks the pu chain; the snapshot the server then serves carries an
    id inside the next event's [U, u], which the client must bridge by the futures rule."""
    frames, snaps = recorded_binance(RECORDED, "BINANCE_FUTURES")

    async def go():
        rig = futures_rig(BinanceMarket(frames, snaps, futures=True))
        rig.server.hold(8)
        async with rig:
            await until(lambda: rig.server.held.is_set() and rig.resync_settled()
                        and rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 4, what="snapshots")
            rig.server.inject(Fault.SKIP, at=600)
            rig.server.release()
            rig.server.hold(1000)
            await until(lambda: rig.adapter.counters[Reason.GAP] >= 1, what="gap seen")
            await finish(rig, 1000)
            assert rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 5
    run(go())


def test_one_quiet_instrument_goes_stale_and_fresh_data_revives_it() -> None:
    """Per-instrument staleness on a healthy connection: BBB goes quiet while AAA keeps
    trading; only BBB is STALE. When BBB's diffs resume, its update-id chain is intact, so it is
    LIVE again without a resync (no new snapshot)."""
    frames, snaps = generate_binance(GEN_SYMBOLS, 800, seed=18)
    mid = frames[200:500]
    is_b = [b'"s":"BBBUSDT"' in f for f in mid]
    script = (frames[:200] + [f for f, b in zip(mid, is_b) if not b]
              + [f for f, b in zip(mid, is_b) if b] + frames[500:])
    n_a = is_b.count(False)

    async def go():
        rig = Rig(BinanceMarket(script, snaps), GEN_SYMBOLS, stale_after_s=5.0, stall_after_s=60.0)
        rig.server.hold(10)
        async with rig:
            await synced_start(rig)
            rig.server.hold(250)                       # inside the AAA-only stretch
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="at 250")
            assert rig.all_live()
            rig.time.now += 6 * S                       # nothing for 6 s on either ...
            rig.server.release()
            rig.server.hold(200 + n_a)                  # ... then AAA trades on, BBB stays quiet
            await until(lambda: rig.server.held.is_set() and rig.caught_up(), what="AAA stretch")
            rig.conn.check()
            a, b = rig.ids()
            assert rig.states.get(a) == LIVE and rig.states.get(b) == STALE
            assert rig.conn.connected and rig.conn.counters[ConnEvent.STALLS] == 0
            rig.server.release()
            await rig.server.done.wait()
            await until(rig.caught_up, what="caught up")
            assert rig.all_live()                       # BBB's fresh diffs revived it
            assert rig.conn.counters[ConnEvent.SNAPSHOT_OK] == 2   # without a resync
            assert rig.adapter.counters[Reason.GAP] == 0
            rig.assert_books_match_venue()
    run(go())
