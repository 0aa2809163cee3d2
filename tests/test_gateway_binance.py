"""The Binance order gateway against the simulated venue over real loopback sockets."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from decimal import Decimal
from urllib.parse import urlencode

import numpy as np
import pytest
from picows import WSMsgType

from bot4d.gateway.binance import (
    CLOSED, OPEN, BinanceGateway, GatewayError, SymbolInfo, fetch_exchange_info,
)
from bot4d.gateway.rest import RestClient
from bot4d.kernels import matching as m
from bot4d.kernels.oms import (
    RP_ACK, RP_CANCELLED, RP_FILL, RP_FLAG_FEE_GIVEN, RP_REJECT, RP_REPLACE_REJECT,
)
from bot4d.kernels.oms_state import OT_LIMIT, OT_MARKET, TIF_GTC, TIF_POST_ONLY
from bot4d.records import CMD_CANCEL, CMD_PLACE, CMD_REPLACE, ORDER_COMMAND_DTYPE, SIDE_ASK, SIDE_BID
from bot4d.sim.binance_server import DEFAULT_SYMBOLS, SimServer
from bot4d.sim.binance_venue import BinanceVenue
from bot4d.venues.binance import sign
from ipc.histogram import LatencyHistogram

KEY, SECRET = "gwkey" + "K" * 59, "gwsecret" + "S" * 56
SYMS = [SymbolInfo(0, 0, "BTCUSDT", "BTC", "USDT", 2, 5), SymbolInfo(1, 1, "ETHUSDT", "ETH", "USDT", 2, 4)]


def run(coro, limit_s: float = 30.0):
    """Give-up bound only: a hung test fails instead of hanging the suite."""
    asyncio.run(asyncio.wait_for(coro, limit_s))


class Sink:
    def __init__(self) -> None:
        self.reports: list[np.void] = []

    def __call__(self, a: np.ndarray) -> None:
        self.reports.extend(a.copy())

    def of(self, order_id: int, kind: int | None = None) -> list[np.void]:
        return [r for r in self.reports if int(r["order_id"]) == order_id
                and (kind is None or int(r["kind"]) == kind)]

    async def wait(self, pred, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise AssertionError(f"condition not met; reports: {[(int(r['order_id']), int(r['kind'])) for r in self.reports][-20:]}")
            await asyncio.sleep(0.01)


def make_venue(**kw) -> BinanceVenue:
    v = BinanceVenue(DEFAULT_SYMBOLS, **kw)
    a = v.add_account(KEY, SECRET, {"USDT": "100000", "BTC": "2", "ETH": "10"})
    v.set_fees(a.index, "0.001", "0.001")
    return v


def cmd(command: int, order_id: int, *, price: int = 5_000_000, qty: int = 100, side: int = SIDE_BID,
        ot: int = OT_LIMIT, tif: int = TIF_GTC, inst: int = 0, tick: int = 0) -> np.ndarray:
    a = np.zeros(1, ORDER_COMMAND_DTYPE)
    a["command"], a["order_id"], a["price"], a["qty"], a["side"] = command, order_id, price, qty, side
    a["order_type"], a["tif"], a["instrument"], a["shard"] = ot, tif, inst, SYMS[inst].shard
    a["tick_recv_ns"], a["ts_ns"] = tick, time.time_ns()
    return a


def agent_ask(venue: BinanceVenue, price: int, qty: int, oid: int = 1 << 41) -> None:
    o = np.zeros(1, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"], o["order_id"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, SIDE_ASK, oid
    o["price"], o["qty"] = price, qty
    venue.submit_agent_orders(o, time.time_ns())


def venue_orders(venue: BinanceVenue, cid: str) -> list:
    return [o for o in venue.orders.values() if o.client_order_id == cid]


@asynccontextmanager
async def running(venue: BinanceVenue | None = None, boot: str = "T1", **kw):
    venue = venue or make_venue()
    srv = SimServer(venue)
    await srv.start()
    sink = Sink()
    gw = BinanceGateway(rest_base=f"http://127.0.0.1:{srv.rest_port}",
                        ws_base=f"ws://127.0.0.1:{srv.ws_port}", api_key=kw.pop("api_key", KEY),
                        secret=kw.pop("secret", SECRET), symbols=SYMS, boot_id=boot,
                        on_reports=sink, **kw)
    await gw.start()
    try:
        yield srv, venue, gw, sink
    finally:
        await gw.stop()
        await srv.stop()


@pytest.fixture()
def hists():
    inst = f"g{os.getpid()}{uuid.uuid4().hex[:6]}"
    t2o = LatencyHistogram.create(inst, "t2o0")
    ack = LatencyHistogram.create(inst, "ack")
    yield t2o, ack
    for h in (t2o, ack):
        seg = h.segment
        h.close()
        seg.unlink()


def test_client_order_ids_round_trip_and_bad_boot_ids_are_refused():
    gw = BinanceGateway(rest_base="http://127.0.0.1:1", ws_base="ws://127.0.0.1:1", api_key=KEY,
                        secret=SECRET, symbols=SYMS, boot_id="a1B2c3", on_reports=Sink())
    cid = gw.client_order_id(7, (1 << 63) - 1)
    assert cid == f"b4a1B2c3-7-{(1 << 63) - 1}" and len(cid) <= 36
    assert BinanceGateway.parse_client_order_id(cid) == ("a1B2c3", 7, (1 << 63) - 1)
    for foreign in ("manual-1", "b4x-1", "b4x-1-2-3", "b4x-a-1", "", "web_abc123", "b4-1-2",
                    "b4x-1-99999999999999999999"):
        assert BinanceGateway.parse_client_order_id(foreign) is None, foreign
    with pytest.raises(ValueError, match="out of range"):
        gw.client_order_id(1000, 1)
    with pytest.raises(ValueError, match="out of range"):
        gw.client_order_id(0, -1)
    for bad, msg in (("a-b", r"\[A-Za-z0-9_\]"), ("", r"\[A-Za-z0-9_\]"), ("x" * 11, "too long")):
        with pytest.raises(ValueError, match=msg):
            BinanceGateway(rest_base="http://127.0.0.1:1", ws_base="ws://127.0.0.1:1", api_key=KEY,
                           secret=SECRET, symbols=SYMS, boot_id=bad, on_reports=Sink())
    with pytest.raises(ValueError, match="scheme"):
        BinanceGateway(rest_base="ws://127.0.0.1:1", ws_base="ws://127.0.0.1:1", api_key=KEY,
                       secret=SECRET, symbols=SYMS, boot_id="a", on_reports=Sink())
    with pytest.raises(GatewayError, match="before start"):
        gw.send(cmd(CMD_PLACE, 1))
    with pytest.raises(TypeError, match="ORDER_COMMAND_DTYPE"):
        gw.send(np.zeros(1, np.int64))


def test_exchange_info_scales_and_unknown_symbol():
    async def go():
        srv = SimServer(make_venue())
        await srv.start()
        try:
            base = f"http://127.0.0.1:{srv.rest_port}"
            info = await fetch_exchange_info(base, ["BTCUSDT", "ETHUSDT"])
            assert info["BTCUSDT"]["tickSize"] == Decimal("0.01")
            assert info["BTCUSDT"]["stepSize"] == Decimal("0.00001")
            assert info["BTCUSDT"]["minNotional"] == Decimal("5")
            assert (info["ETHUSDT"]["price_scale"], info["ETHUSDT"]["qty_scale"]) == (2, 4)
            assert info["ETHUSDT"]["base"] == "ETH" and info["ETHUSDT"]["quote"] == "USDT"
            with pytest.raises(GatewayError, match="unknown symbol.*NOPEUSDT"):
                await fetch_exchange_info(base, ["BTCUSDT", "NOPEUSDT"])
        finally:
            await srv.stop()
    run(go())


def test_place_ack_fill_cancel_and_latencies(hists):
    t2o, ack = hists

    async def go():
        async with running(t2o_hists={0: t2o}, ack_hist=ack) as (srv, venue, gw, sink):
            agent_ask(venue, 6_000_000, 200)  # 60000.00 x 0.00200 resting
            tick = time.time_ns() - 1000
            # buy 0.003 @ 60001: takes the agent's 0.002, rests 0.001
            gw.send(cmd(CMD_PLACE, 11, price=6_000_100, qty=300, tick=tick))
            await sink.wait(lambda: sink.of(11, RP_FILL))
            fill = sink.of(11, RP_FILL)[0]
            assert (int(fill["price"]), int(fill["qty"]), int(fill["maker"])) == (6_000_000, 200, 0)
            # commission 0.12 USDT (0.1 % of 120) in notional units (scale 2 + 5)
            assert int(fill["fee"]) == 1_200_000 and int(fill["flags"]) == RP_FLAG_FEE_GIVEN
            assert int(fill["trade_id"]) > 0 and int(fill["instrument"]) == 0
            gw.send(cmd(CMD_CANCEL, 11))
            await sink.wait(lambda: sink.of(11, RP_CANCELLED))
            kinds = [int(r["kind"]) for r in sink.of(11)]
            assert kinds == [RP_ACK, RP_FILL, RP_CANCELLED]
            # a market sell on the ETH shard, and a post-only that rests
            gw.send(np.concatenate([cmd(CMD_PLACE, 12, price=5_000_000, qty=100, tif=TIF_POST_ONLY),
                                    cmd(CMD_PLACE, 13, price=0, qty=10, ot=OT_MARKET, side=SIDE_ASK, inst=1)]))
            await sink.wait(lambda: sink.of(12, RP_ACK) and sink.of(13))
            (o12,) = venue_orders(venue, gw.client_order_id(0, 12))
            assert o12.otype == m.T_LIMIT_MAKER and o12.price == Decimal("50000.00")
            (o13,) = venue_orders(venue, gw.client_order_id(1, 13))
            assert o13.otype == m.T_MARKET and o13.qty == Decimal("0.0010") and o13.symbol == "ETHUSDT"
            st = gw.status()
            assert st["user_stream_connected"] and st["breaker"] == "CLOSED"
            assert 0 < st["weight_used"] <= st["weight_budget"]
            json.dumps(st)
        assert t2o.percentiles()["count"] == 1       # only the place that carried a tick time
        assert ack.percentiles()["count"] >= 2

    run(go())


def test_rest_rejects_carry_binance_codes_and_replace_is_refused():
    async def go():
        async with running() as (srv, venue, gw, sink):
            gw.send(cmd(CMD_PLACE, 21, price=6_000_000, qty=1_000_000))    # 10 BTC: balance
            gw.send(cmd(CMD_PLACE, 22, price=10_000, qty=1))               # notional 0.001 < 5
            gw.send(cmd(CMD_PLACE, 23, price=5_000_000, qty=100, tif=9))   # no such TIF
            gw.send(cmd(CMD_REPLACE, 24))
            await sink.wait(lambda: all(sink.of(i) for i in (21, 22, 23, 24)))
            assert [int(r["reason"]) for r in sink.of(21, RP_REJECT)] == [-2010]
            assert [int(r["reason"]) for r in sink.of(22, RP_REJECT)] == [-1013]
            assert [int(r["reason"]) for r in sink.of(23, RP_REJECT)] == [-1115]
            assert [int(r["kind"]) for r in sink.of(24)] == [RP_REPLACE_REJECT]
            venue.inject("reject_orders", 1)
            gw.send(cmd(CMD_PLACE, 25))
            await sink.wait(lambda: sink.of(25))
            assert [(int(r["kind"]), int(r["reason"])) for r in sink.of(25)] == [(RP_REJECT, -2010)]
            # cancelling an order the venue does not know: a cancel reject with -2011
            gw.send(cmd(CMD_CANCEL, 26))
            await sink.wait(lambda: sink.of(26))
            assert [int(r["reason"]) for r in sink.of(26)] == [-2011]
            assert gw.status()["errors_by_category"]["reject_to_strategy"] >= 3
            assert not venue_orders(venue, gw.client_order_id(0, 21))

    run(go())


def test_unknown_outcome_is_resolved_by_client_order_id_never_resent():
    async def go():
        async with running(recv_window_ms=500) as (srv, venue, gw, sink):
            venue.inject("unknown_outcome", 1)   # accepted, but the answer never arrives
            gw.send(cmd(CMD_PLACE, 31))
            await sink.wait(lambda: gw.counters["unknown_resolved_found"] == 1)
            assert [int(r["kind"]) for r in sink.of(31)] == [RP_ACK]   # exactly one ACK
            assert len(venue_orders(venue, gw.client_order_id(0, 31))) == 1
            # a 5xx before the venue took it: not found once its recvWindow passed -> reject
            venue.inject("http_5xx", 1)
            gw.send(cmd(CMD_PLACE, 32))
            await sink.wait(lambda: sink.of(32))
            assert [(int(r["kind"]), int(r["reason"])) for r in sink.of(32)] == [(RP_REJECT, -2013)]
            assert venue_orders(venue, gw.client_order_id(0, 32)) == []
            assert gw.counters["unknown_outcomes"] == 2 and gw.counters["unknown_resolved_reject"] == 1
            # a fill that happened while the answer was lost comes with its trade id, once
            agent_ask(venue, 6_000_000, 100)
            venue.inject("unknown_outcome", 1)
            srv.disconnect_all()   # and the stream is away too: only the query can tell
            gw.send(cmd(CMD_PLACE, 33, price=6_000_000, qty=100))
            await sink.wait(lambda: sink.of(33, RP_FILL))
            await sink.wait(lambda: gw.status()["user_stream_connected"])
            await asyncio.sleep(0.3)   # the reconnect's reconciliation must not repeat it
            assert [int(r["kind"]) for r in sink.of(33)] == [RP_ACK, RP_FILL]
            assert int(sink.of(33, RP_FILL)[0]["trade_id"]) > 0
            assert len(venue_orders(venue, gw.client_order_id(0, 33))) == 1

    run(go())


def test_rate_limit_storm_opens_breaker_holds_cancels_and_recovers():
    halts: list[str] = []

    async def go():
        async with running(on_halt=halts.append) as (srv, venue, gw, sink):
            gw.send(cmd(CMD_PLACE, 41))
            await sink.wait(lambda: sink.of(41, RP_ACK))
            venue.inject("rate_limit_storm", 3)
            gw.send(cmd(CMD_PLACE, 42))
            await sink.wait(lambda: sink.of(42))
            assert [(int(r["kind"]), int(r["reason"])) for r in sink.of(42)] == [(RP_REJECT, -1003)]
            assert gw.breaker_state == OPEN and gw.status()["breaker"] == "OPEN"
            gw.send(cmd(CMD_PLACE, 43))        # refused locally: nothing reaches the venue
            await sink.wait(lambda: sink.of(43))
            assert [(int(r["kind"]), int(r["reason"])) for r in sink.of(43)] == [(RP_REJECT, -1003)]
            assert venue.faults["rate_limit_storm"] == 2
            gw.send(cmd(CMD_CANCEL, 41))       # held, then sent as the half-open probe
            await sink.wait(lambda: sink.of(41, RP_CANCELLED), timeout=15)
            assert venue.faults["rate_limit_storm"] == 0   # one probe per Retry-After
            assert gw.breaker_state == CLOSED
            gw.send(cmd(CMD_PLACE, 44))
            await sink.wait(lambda: sink.of(44, RP_ACK))
            st = gw.status()
            assert st["errors_by_category"]["wait_rate_limit"] == 3 and st["halted"] is None
            assert gw.counters["local_rejects_rate_limit"] == 1
        assert halts == []

    run(go())


def test_ip_ban_halts_order_entry():
    halts: list[str] = []

    async def go():
        async with running(on_halt=halts.append) as (srv, venue, gw, sink):
            venue.limiter.banned_until["127.0.0.1"] = venue.clock_ns() / 1e9 + 300
            gw.send(cmd(CMD_PLACE, 51))
            await sink.wait(lambda: sink.of(51))
            gw.send(cmd(CMD_PLACE, 52))
            await sink.wait(lambda: sink.of(52))
            assert all(int(r["kind"]) == RP_REJECT for r in sink.of(51) + sink.of(52))
            assert gw.counters["local_rejects_halted"] == 1
            assert gw.status()["errors_by_category"]["halt"] == 1
        assert len(halts) == 1 and "IP banned" in halts[0]

    run(go())


def test_reconciliation_burst_stays_inside_the_weight_budget():
    """150 live orders; the stream drops and 100 of them are cancelled meanwhile. Reconciling
    needs about 410 weight against a budget of 300 a minute (the venue allows 320): the
    queries wait for the next minute instead of drawing a 429, and every order is reconciled."""
    shift = [0]

    def clock() -> int:   # the venue's clock, shared by the gateway's request timestamps
        return time.time_ns() + shift[0]

    async def go():
        venue = make_venue(clock_ns=clock, weight_limit=320)
        async with running(venue, weight_budget_per_min=300, clock_ns=clock) as (srv, _, gw, sink):
            # start the placing at the beginning of a minute: 150 places fit in one window
            shift[0] += int((60 - (clock() / 1e9) % 60) * 1e9) + 10_000_000
            ids = list(range(1000, 1150))
            gw.send(np.concatenate([cmd(CMD_PLACE, i, price=5_000_000 - (i - 1000), qty=20) for i in ids]))
            await sink.wait(lambda: all(sink.of(i, RP_ACK) for i in ids), timeout=20)
            # jump to 2 s before the next minute; the stream drops, 100 orders are cancelled
            shift[0] += int((58 - (clock() / 1e9) % 60) * 1e9) % 60_000_000_000
            acct = venue.accounts[KEY]
            venue.inject("disconnect")
            for i in ids[:100]:
                venue._cancel_order(acct, {"symbol": "BTCUSDT", "origClientOrderId": gw.client_order_id(0, i)}, clock())
            await sink.wait(lambda: all(sink.of(i, RP_CANCELLED) for i in ids[:100]), timeout=20)
            st = gw.status()
            assert st["errors_by_category"]["wait_rate_limit"] == 0 and gw.counters["rate_limited"] == 0
            assert gw.counters["weight_waits"] >= 1 and gw.budget.peak <= 300
            assert venue.limiter.strikes.get("127.0.0.1", 0) == 0
            assert all(len(sink.of(i)) == 2 for i in ids[:100])    # ACK, CANCELLED
            assert all(len(sink.of(i)) == 1 for i in ids[100:])    # ACK only: still open
            assert st["user_stream_connected"] and gw.counters["stream_disconnects"] == 1

    run(go(), 60)


def test_malformed_and_unknown_stream_frames_are_counted_and_skipped():
    async def go():
        async with running() as (srv, venue, gw, sink):
            conns = [c for c in srv.conns if c.listen_key]
            assert len(conns) == 1
            t = conns[0].transport
            t.send(WSMsgType.TEXT, b'{"e":"executionReport","x":')      # cut JSON
            t.send(WSMsgType.TEXT, b'[1,2,3]')
            t.send(WSMsgType.TEXT, b'{"e":"somethingNew","E":1}')
            t.send(WSMsgType.TEXT, b'{"e":"executionReport","x":"NEW","c":"b4T1-0-99"}')  # no symbol
            t.send(WSMsgType.TEXT, json.dumps({"e": "executionReport", "x": "NEW", "c": "b4OLD-0-5", "s": "BTCUSDT"}).encode())
            t.send(WSMsgType.TEXT, json.dumps({"e": "executionReport", "x": "NEW", "c": "web_123", "s": "BTCUSDT"}).encode())
            gw.send(cmd(CMD_PLACE, 61))
            await sink.wait(lambda: sink.of(61, RP_ACK))
            c = gw.counters
            assert c["stream_malformed"] == 3 and c["stream_unknown_event"] == 1
            assert c["stream_other_boot"] == 1 and c["stream_foreign_order"] == 1
            assert [int(r["order_id"]) for r in sink.reports] == [61]

    run(go())


def test_secrets_never_appear_in_logs_status_reprs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    halts: list[str] = []
    errors: list[str] = []

    async def go():
        async with running(recv_window_ms=300) as (srv, venue, gw, sink):
            venue.inject("http_5xx", 1)
            gw.send(cmd(CMD_PLACE, 71))
            gw.send(cmd(CMD_PLACE, 72, qty=10_000_000))
            venue.inject("unknown_outcome", 1)
            gw.send(cmd(CMD_PLACE, 73))
            await sink.wait(lambda: sink.of(71) and sink.of(72) and gw.counters["unknown_resolved_found"] == 1)
            errors.append(repr(gw))
            errors.append(json.dumps(gw.status()))
            # a wrong secret: signatures fail, -1022 halts order entry
            bad = BinanceGateway(rest_base=f"http://127.0.0.1:{srv.rest_port}",
                                 ws_base=f"ws://127.0.0.1:{srv.ws_port}", api_key=KEY,
                                 secret=SECRET[:-1] + "x", symbols=SYMS, boot_id="B", on_reports=sink,
                                 on_halt=halts.append)
            await bad.start()
            bad.send(cmd(CMD_PLACE, 74))
            await sink.wait(lambda: sink.of(74))
            assert [int(r["reason"]) for r in sink.of(74)] == [-1022]
            errors.append(repr(bad))
            errors.append(json.dumps(bad.status()))
            await bad.stop()
            nokey = BinanceGateway(rest_base=f"http://127.0.0.1:{srv.rest_port}",
                                   ws_base=f"ws://127.0.0.1:{srv.ws_port}", api_key="nope" + SECRET,
                                   secret=SECRET, symbols=SYMS, boot_id="C", on_reports=sink)
            with pytest.raises(GatewayError) as ei:
                await nokey.start()
            errors.append(str(ei.value))
            await nokey.stop()

    run(go())
    assert len(halts) == 1 and "-1022" in halts[0]
    text = caplog.text + "\n".join(errors)
    assert "HALTED" in caplog.text and "outcome unknown" in caplog.text   # logging did happen
    assert KEY not in text and SECRET not in text and SECRET[:-1] not in text


def test_leftovers_of_a_previous_boot_are_found_and_cancelled():
    async def go():
        venue = make_venue()
        srv = SimServer(venue)
        await srv.start()
        try:
            base, ws = f"http://127.0.0.1:{srv.rest_port}", f"ws://127.0.0.1:{srv.ws_port}"
            sink1 = Sink()
            old = BinanceGateway(rest_base=base, ws_base=ws, api_key=KEY, secret=SECRET,
                                 symbols=SYMS, boot_id="OLD", on_reports=sink1)
            await old.start()
            rec0 = await old.reconcile()
            assert rec0.open_orders == [] and rec0.balances["USDT"] == (Decimal("100000"), Decimal(0))
            old.send(np.concatenate([cmd(CMD_PLACE, 1), cmd(CMD_PLACE, 2, inst=1, price=200_000, qty=100)]))
            await sink1.wait(lambda: sink1.of(1, RP_ACK) and sink1.of(2, RP_ACK))
            await old.stop()   # a crash would leave the same: orders open under the old boot id
            # a foreign order, placed by hand with the same key
            rc = RestClient(base)
            q = urlencode({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                           "quantity": "0.01000", "price": "70000.00", "newClientOrderId": "manual-1",
                           "timestamp": int(time.time() * 1000)})
            r = await rc.request("POST", "/api/v3/order", query=f"{q}&signature={sign(q, SECRET)}",
                                 headers={"X-MBX-APIKEY": KEY})
            assert r.status == 200
            await rc.close()
            sink2 = Sink()
            new = BinanceGateway(rest_base=base, ws_base=ws, api_key=KEY, secret=SECRET,
                                 symbols=SYMS, boot_id="NEW", on_reports=sink2)
            await new.start()
            rec = await new.reconcile()
            assert rec.ours == []
            assert sorted((o.boot_id, o.shard, o.order_id) for o in rec.previous_boots) == [("OLD", 0, 1), ("OLD", 1, 2)]
            assert [(o.client_order_id, o.side, o.price, o.qty, o.executed) for o in rec.foreign] == \
                [("manual-1", "SELL", Decimal("70000"), Decimal("0.01"), Decimal(0))]
            assert rec.balances["USDT"][1] > 0 and rec.balances["BTC"][1] == Decimal("0.01")
            assert await new.cancel_leftovers(rec) == 2
            await new.stop()
            assert sorted(o.client_order_id for o in venue.orders.values() if o.open) == ["manual-1"]
            assert sink2.reports == []   # other boots' events never reach this boot's shards
        finally:
            await srv.stop()

    run(go())


class CuttingProxy:
    """TCP proxy in front of the venue's WebSocket port; when armed, the next chunk from the
    venue is forwarded only half-way and then the connection vanishes (no close frame)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.cuts = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(r, w, from_venue):
            try:
                while data := await r.read(65536):
                    if from_venue and self.armed and len(data) > 4:
                        self.armed = False
                        self.cuts += 1
                        w.write(data[: len(data) // 2])
                        await w.drain()
                        break
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                for x in (cw, uw):
                    x.transport.abort()

        await asyncio.gather(pipe(cr, uw, False), pipe(ur, cw, True))

    async def stop(self) -> None:
        self.server.close()


def test_user_stream_peer_vanishing_mid_message_reconnects_and_reconciles():
    async def go():
        venue = make_venue()
        srv = SimServer(venue)
        await srv.start()
        proxy = CuttingProxy(srv.ws_port)
        pport = await proxy.start()
        sink = Sink()
        gw = BinanceGateway(rest_base=f"http://127.0.0.1:{srv.rest_port}",
                            ws_base=f"ws://127.0.0.1:{pport}", api_key=KEY, secret=SECRET,
                            symbols=SYMS, boot_id="P", on_reports=sink)
        await gw.start()
        try:
            gw.send(cmd(CMD_PLACE, 81))
            await sink.wait(lambda: sink.of(81, RP_ACK))
            proxy.armed = True   # the CANCELED report is cut in half, then the peer is gone
            venue._cancel_order(venue.accounts[KEY], {"symbol": "BTCUSDT", "origClientOrderId": gw.client_order_id(0, 81)}, time.time_ns())
            await sink.wait(lambda: sink.of(81, RP_CANCELLED))
            assert proxy.cuts == 1 and gw.counters["stream_disconnects"] == 1
            assert [int(r["kind"]) for r in sink.of(81)] == [RP_ACK, RP_CANCELLED]
            assert gw.counters["stream_malformed"] == 0   # half a frame is never parsed
            await sink.wait(lambda: gw.status()["user_stream_connected"])
            gw.send(cmd(CMD_PLACE, 82))                  # and the new connection carries events
            await sink.wait(lambda: sink.of(82, RP_ACK))
        finally:
            await gw.stop()
            await proxy.stop()
            await srv.stop()

    run(go())
