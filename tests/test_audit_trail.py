"""The audit trail loses no fill and joins to the venue's records (issue 13, items 4 and 5).

Gateway against the simulated venue over real loopback sockets (fast): fills the stream never
delivered are found by a sweep of the venue's trades (``myTrades`` from ``fromId``) and reported
once, in trade-id order, flagged as recovered; an earlier run's fills name that run's boot.

Then the real processes: the simulated venue, the daemon, PostgreSQL and bot4d-persist. The
daemon is SIGKILLed while its quotes rest at the venue, another account trades against them, the
daemon starts again: the fills made while it was down are journalled (recovered, with the earlier
boot), PostgreSQL's fills equal the venue's trades by trade id, the daemon's positions equal the
venue's balances, and every persisted order event joins to the venue's order by venue order id
and client order id string.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import psycopg
import pytest

from bot4d.daemon import fillmarks
from bot4d.gateway.binance import BinanceGateway
from bot4d.gateway.rest import RestClient
from bot4d.kernels import matching as m
from bot4d.kernels.oms import RP_ACK, RP_FILL, RP_FLAG_RECOVERED
from bot4d.persist import schema
from bot4d.persist.decode import boot_int
from bot4d.records import CMD_PLACE, EV_FILL, EV_ORDER_STATE, JOURNAL_EVENT_DTYPE, SIDE_ASK, SIDE_BID
from bot4d.sim.binance_server import SimServer
from bot4d.venues.binance import sign
from ipc.ring import Ring
from tests.daemon_harness import PY, ROOT, Stack, wait_for
from tests.test_gateway_binance import KEY, SECRET, SYMS, Sink, cmd, make_venue, run, running

pytest_plugins = ["tests.pg"]

OLD, NEW = "a0b1c2", "k3x9q1"   # boot ids of an earlier run and of this one
QUIET_MM = """
[instruments.strategy]
kind = "market_maker"
quote_qty = "{qty}"
max_inventory = "{inv}"
half_spread_ticks = 20
skew_ticks_per_lot = 5
stop_ticks = 2000
requote_ticks = 400
min_requote_ms = 5000
"""


def agent(venue, side: int, price: int, qty: int, oid: int, inst: int = 0) -> None:
    """The simulated market (account 0) rests or takes liquidity."""
    o = np.zeros(1, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"], o["order_id"], o["instrument"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, \
        side, oid, inst
    o["price"], o["qty"] = price, qty
    venue.submit_agent_orders(o, time.time_ns())


async def place(base: str, **params) -> dict:
    """An order sent with the account's key by hand (as an earlier run or a person would)."""
    rc = RestClient(base)
    try:
        q = urlencode({**params, "timestamp": int(time.time() * 1000)})
        r = await rc.request("POST", "/api/v3/order", query=f"{q}&signature={sign(q, SECRET)}",
                             headers={"X-MBX-APIKEY": KEY})
        assert r.status == 200, r.json()
        return r.json()
    finally:
        await rc.close()


def fills(sink: Sink) -> list[np.void]:
    return [r for r in sink.reports if int(r["kind"]) == RP_FILL]


# --- the gateway -----------------------------------------------------------------------------------

def test_start_reports_an_earlier_runs_fills_after_the_journals_mark_once_in_trade_id_order():
    """Trades of an earlier run's orders after the journal's last trade id are reported as
    recovered fills naming that run's boot, its order ids, the venue's order ids and the side;
    trades of orders bot4d did not place are not; a second reconciliation reports nothing."""
    async def go():
        venue = make_venue()
        srv = SimServer(venue)
        await srv.start()
        base = f"http://127.0.0.1:{srv.rest_port}"
        try:
            for k in range(6):
                agent(venue, SIDE_ASK, 6_000_000, 100, (1 << 41) + k)
            placed = {}
            for cid, qty in ((f"b4{OLD}-0-5", "0.00200"), ("manual-1", "0.00100"), (f"b4{OLD}-0-6", "0.00200")):
                r = await place(base, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                quantity=qty, price="60000.00", newClientOrderId=cid)
                assert r["status"] == "FILLED", r
                placed[cid] = r["orderId"]
            trades = sorted(venue.trades_by_account[(venue.accounts[KEY].index, "BTCUSDT")], key=lambda t: t["id"])
            assert len(trades) == 5
            mark = trades[0]["id"]   # the journal holds the first one already
            sink = Sink()
            gw = BinanceGateway(rest_base=base, ws_base=f"ws://127.0.0.1:{srv.ws_port}", api_key=KEY, secret=SECRET,
                                symbols=SYMS, boot_id=NEW, on_reports=sink)
            await gw.start()
            try:
                assert sink.reports == []   # nothing before the marks are known
                gw.set_fill_marks({"BTCUSDT": mark})
                await gw.reconcile()
                want = [t for t in trades[1:] if t["orderId"] != placed["manual-1"]]
                got = fills(sink)
                assert [int(r["trade_id"]) for r in got] == [t["id"] for t in want]   # in trade-id order
                oid = {placed[f"b4{OLD}-0-5"]: 5, placed[f"b4{OLD}-0-6"]: 6}
                for r, t in zip(got, want):
                    assert int(r["flags"]) & RP_FLAG_RECOVERED
                    assert (int(r["boot"]), int(r["order_id"]), int(r["venue_order_id"]), int(r["side"])) == \
                        (boot_int(OLD), oid[t["orderId"]], t["orderId"], SIDE_BID)
                    assert (int(r["price"]), int(r["qty"]), int(r["maker"]), int(r["instrument"])) == (6_000_000, 100, 0, 0)
                assert gw.counters["fills_recovered_other_runs"] == 3 and gw.counters["trades_not_ours"] == 1
                assert gw.fill_recovery()["BTCUSDT"] == {"reported_up_to_trade": trades[-1]["id"], "in_order": True,
                                                         "held_events": 0}
                await gw.reconcile()
                assert len(fills(sink)) == 3   # exactly once
            finally:
                await gw.stop()
        finally:
            await srv.stop()

    run(go())


def test_fills_a_silent_stream_missed_are_swept_after_the_reconnect_in_trade_id_order():
    """The user stream stays connected but the venue stops sending our events; the market fills
    both resting bids. After the reconnect the sweep reports those fills (recovered, this run's,
    with the venue's order ids), once each and in trade-id order; then the stream carries fills
    again, not flagged."""
    async def go():
        async with running(boot=NEW) as (srv, venue, gw, sink):
            gw.send(cmd(CMD_PLACE, 11, price=6_000_000, qty=200))
            gw.send(cmd(CMD_PLACE, 12, price=5_999_000, qty=100))
            await sink.wait(lambda: sink.of(11, RP_ACK) and sink.of(12, RP_ACK))
            acct = venue.accounts[KEY]
            lk = next(k for k, idx in venue.listen_keys.items() if idx == acct.index)
            del venue.listen_keys[lk]   # events for our account go nowhere now
            agent(venue, SIDE_ASK, 5_999_000, 300, 1 << 41)   # sells into both bids: two trades
            await asyncio.sleep(0.2)
            assert fills(sink) == []
            venue.listen_keys[lk] = acct.index
            srv.disconnect_all()
            await sink.wait(lambda: len(fills(sink)) == 2)
            mine = sorted(venue.trades_by_account[(acct.index, "BTCUSDT")], key=lambda t: t["id"])
            got = fills(sink)
            assert [int(r["trade_id"]) for r in got] == [t["id"] for t in mine]
            vid = {gw.orders[gw.client_order_id(0, o)].venue_id: o for o in (11, 12)}
            assert [int(r["order_id"]) for r in got] == [vid[t["orderId"]] for t in mine] == [11, 12]
            assert all(int(r["flags"]) & RP_FLAG_RECOVERED and int(r["boot"]) == 0 and int(r["maker"]) == 1
                       and int(r["side"]) == SIDE_BID for r in got)
            assert [int(r["venue_order_id"]) for r in got] == [t["orderId"] for t in mine]
            await sink.wait(lambda: gw.fill_recovery()["BTCUSDT"]["in_order"])
            agent(venue, SIDE_ASK, 6_010_000, 100, (1 << 41) + 1)
            gw.send(cmd(CMD_PLACE, 13, price=6_010_000, qty=100))
            await sink.wait(lambda: sink.of(13, RP_FILL))
            assert not int(sink.of(13, RP_FILL)[0]["flags"]) & RP_FLAG_RECOVERED   # from the stream
            assert len({int(r["trade_id"]) for r in fills(sink)}) == len(fills(sink)) == 3

    run(go())


def test_an_earlier_runs_order_filling_on_the_stream_is_swept_before_later_fills():
    """An earlier run's order still resting fills after this run started: its stream event is not
    this run's, so a sweep reports it (with that run's boot), and this run's fill that followed
    it goes to the shard after it, in trade-id order."""
    async def go():
        venue = make_venue()
        srv = SimServer(venue)
        await srv.start()
        base, ws = f"http://127.0.0.1:{srv.rest_port}", f"ws://127.0.0.1:{srv.ws_port}"
        try:
            old = BinanceGateway(rest_base=base, ws_base=ws, api_key=KEY, secret=SECRET, symbols=SYMS,
                                 boot_id=OLD, on_reports=Sink())
            await old.start()
            old.send(cmd(CMD_PLACE, 7, price=5_990_000, qty=100))
            await asyncio.sleep(0.3)
            await old.stop()   # its order stays at the venue
            sink = Sink()
            gw = BinanceGateway(rest_base=base, ws_base=ws, api_key=KEY, secret=SECRET, symbols=SYMS,
                                boot_id=NEW, on_reports=sink)
            await gw.start()
            try:
                gw.set_fill_marks({"BTCUSDT": 0, "ETHUSDT": 0})
                await gw.reconcile()
                gw.send(cmd(CMD_PLACE, 21, price=5_980_000, qty=100))
                await sink.wait(lambda: sink.of(21, RP_ACK))
                agent(venue, SIDE_ASK, 5_980_000, 200, 1 << 41)   # the earlier order first, then ours
                await sink.wait(lambda: len(fills(sink)) == 2)
                a, b = fills(sink)
                assert int(a["trade_id"]) < int(b["trade_id"])
                assert (int(a["order_id"]), int(a["boot"])) == (7, boot_int(OLD))
                assert (int(b["order_id"]), int(b["boot"])) == (21, 0)
                assert int(a["flags"]) & RP_FLAG_RECOVERED
                assert gw.counters["stream_other_boot_fills"] == 1
                await asyncio.sleep(0.2)
                assert len(fills(sink)) == 2   # the held stream report of ours was not repeated
            finally:
                await gw.stop()
        finally:
            await srv.stop()

    run(go())


# --- the journal's marks across restarts (bot4d.daemon.fillmarks), on real rings ----------------------

def _fills(trade_ids: list[int], inst: int = 0) -> np.ndarray:
    ev = np.zeros(len(trade_ids) * 2, JOURNAL_EVENT_DTYPE)
    ev["kind"][::2] = EV_ORDER_STATE   # other records between the fills
    ev["kind"][1::2] = EV_FILL
    ev["instrument"] = inst
    ev["aux1"][1::2] = trade_ids
    return ev


def test_marks_are_the_last_journalled_trade_ids_including_what_the_old_ring_holds_after_the_file(tmp_path):
    inst = f"fm{os.getpid()}x{time.monotonic_ns() % 100000}"
    names = {0: "binance:BTCUSDT", 1: "binance:ETHUSDT"}
    first = fillmarks.load(tmp_path, inst, 1)
    assert (first.found_file, first.marks, first.problems) == (False, {}, [])   # a first start
    ring = Ring.create(inst, "journal-0", JOURNAL_EVENT_DTYPE, 64, kind="journal", n_gating=0)
    try:
        t = fillmarks.MarkTracker(tmp_path, inst, NEW, {"binance:BTCUSDT": 5})
        t.follow(0, ring, names)
        ring.publish(_fills([7, 9]))
        ring.publish(_fills([40], inst=1))
        assert t.poll()
        data, pos = t.take()
        assert fillmarks.write(t.path, data) is None
        t.written(pos, None)
        assert t.take() is None and not t.poll()          # nothing new: nothing to write
        ring.publish(_fills([11, 12]))                    # journalled, then the process dies unsaved
        got = fillmarks.load(tmp_path, inst, 1)
        assert got.found_file and got.problems == [] and got.tail_records == 4
        assert got.marks == {"binance:BTCUSDT": 12, "binance:ETHUSDT": 40}
        assert got.for_venue("binance") == {"BTCUSDT": 12, "ETHUSDT": 40}
        # more than a ring's worth after the saved position: the tail cannot be proven
        for k in range(40):
            ring.publish(_fills([100 + k]))
        lost = fillmarks.load(tmp_path, inst, 1)
        assert len(lost.problems) == 1 and "no longer holds its records from position" in lost.problems[0]
        assert lost.marks == {"binance:BTCUSDT": 9, "binance:ETHUSDT": 40}   # what the file knew
    finally:
        ring.unlink()
        ring.close()
    gone = fillmarks.load(tmp_path, inst, 1)
    assert len(gone.problems) == 1 and "is gone" in gone.problems[0]
    # a ring the file does not name, with records: said, not guessed at
    other = Ring.create(inst, "journal-0", JOURNAL_EVENT_DTYPE, 64, kind="journal", n_gating=0)
    try:
        other.publish(_fills([500]))
        t2 = fillmarks.MarkTracker(tmp_path, inst, NEW, {})
        assert fillmarks.write(t2.path, t2.take()[0]) is None   # saved before this run's rings
        unknown = fillmarks.load(tmp_path, inst, 1)
        assert len(unknown.problems) == 1 and "the marks file does not cover" in unknown.problems[0]
    finally:
        other.unlink()
        other.close()
    t3 = fillmarks.MarkTracker(tmp_path / "not-a-dir.json", inst, NEW, {})
    (tmp_path / "not-a-dir.json").write_text("x")
    err = fillmarks.write(t3.path, t3.take()[0])
    assert err is not None and "not-a-dir.json" in err


def test_a_marks_file_that_cannot_be_read_is_a_problem_not_a_guess(tmp_path):
    inst = f"fm{os.getpid()}y"
    fillmarks.path_of(tmp_path, inst).write_text('{"format": "bot4d-fill-marks", "version": 1, "marks": {"binance:X": -3}, "journals": {}}')
    got = fillmarks.load(tmp_path, inst, 1)
    assert got.marks == {} and len(got.problems) == 1 and "is not a trade id" in got.problems[0]
    fillmarks.path_of(tmp_path, inst).write_text("{half")
    assert "cannot be read" in fillmarks.load(tmp_path, inst, 1).problems[0]


# --- the real processes ------------------------------------------------------------------------------

def venue_trades(stack: Stack, symbol: str) -> list[dict]:
    """Every trade of the daemon's account on ``symbol``, by pages of 1000 from trade id 0."""
    out: list[dict] = []
    while True:
        st, page = stack.rest("GET", "/api/v3/myTrades", {"symbol": symbol, "fromId": (out[-1]["id"] + 1) if out else 0,
                                                          "limit": 1000}, signed=True)
        assert st == 200, page
        out += page
        if len(page) < 1000:
            return out


def pg_fills(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT i.symbol, f.trade_id, f.recovered, f.boot, f.venue_order_id, f.venue_client_order_id "
                         "FROM fills f JOIN instruments i ON i.id = f.instrument ORDER BY 1, 2").fetchall()


@pytest.fixture(scope="module")
def audited(tmp_path_factory, pg_server):
    """sim + PostgreSQL + bot4d-persist + daemon (quotes near the touch, a second venue account)."""
    tmp: Path = tmp_path_factory.mktemp("audit")
    # quotes near the touch that stay put (a requote cancels first: a kill then may find none)
    s = Stack(tmp, name="audit", taker_account=True,
              strategies={sym: QUIET_MM.format(qty=qty, inv=inv) for sym, qty, inv in
                          (("BTCUSDT", "0.001", "0.01"), ("ETHUSDT", "0.02", "0.2"))})
    dsn = pg_server.create_database(f"audit{os.getpid()}")
    schema.migrate(dsn, log=lambda *_: None)
    try:
        s.start_sim()
        side = subprocess.Popen([PY, "-m", "bot4d.persist.main", "run", "--dsn", dsn, "--instance", s.instance,
                                 "--shards", "0", "--ring-wait", "600"],
                                stdout=open(tmp / "persist.log", "ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        s.extra.append(side)
        s.start_daemon()
        s.dsn = dsn
        yield s
    finally:
        s.close()
        pg_server.drop_database(f"audit{os.getpid()}")


def take_our_quotes(stack: Stack, symbol: str) -> list[dict]:
    """The second account sells into our best bid and buys our best ask (what is better first)."""
    depth = stack.rest("GET", "/api/v3/depth", {"symbol": symbol, "limit": 1000})[1]
    ours = [o for o in stack.venue_open_orders() if o["symbol"] == symbol and o["type"] in ("LIMIT", "LIMIT_MAKER")]
    out = []
    for side, book, pick in (("BUY", "bids", max), ("SELL", "asks", min)):
        mine = [Decimal(o["price"]) for o in ours if o["side"] == side]
        if not mine:
            continue
        px = pick(mine)
        better = (lambda p: p >= px) if side == "BUY" else (lambda p: p <= px)
        qty = sum((Decimal(q) for p, q in depth[book] if better(Decimal(p))), Decimal(0))
        st, r = stack.rest("POST", "/api/v3/order", {"symbol": symbol, "side": "SELL" if side == "BUY" else "BUY",
                                                     "type": "LIMIT", "timeInForce": "IOC", "quantity": qty,
                                                     "price": str(px)}, signed=True, account=stack.taker)
        assert st == 200, r
        out.append(r)
    return out


def test_fills_made_while_the_daemon_is_down_are_recovered_and_postgres_equals_the_venue(audited):
    s = audited
    old_boot = s.ok("status")["boot"]
    wait_for(lambda: len(venue_trades(s, "BTCUSDT")) + len(venue_trades(s, "ETHUSDT")) >= 2, 120,
             "the market maker to trade")
    before = {sym: {t["id"] for t in venue_trades(s, sym)} for sym in ("BTCUSDT", "ETHUSDT")}
    # SIGKILL while quotes rest at the venue (checked just before the signal)
    wait_for(lambda: sum(o["type"] in ("LIMIT", "LIMIT_MAKER") for o in s.venue_open_orders()) >= 2, 120,
             "our quotes resting at the venue")
    s.stop_daemon(signal.SIGKILL)
    dead_ms = int(time.time() * 1000) + 1   # trades from here on happened with the daemon gone
    took = take_our_quotes(s, "BTCUSDT") + take_our_quotes(s, "ETHUSDT")
    assert any(Decimal(r["executedQty"]) > 0 for r in took), (took, s.venue_open_orders())
    down = [(sym, t) for sym in ("BTCUSDT", "ETHUSDT") for t in venue_trades(s, sym)
            if t["id"] not in before[sym] and t["time"] >= dead_ms]
    assert down, "nothing of ours traded while the daemon was down"
    s.start_daemon()
    assert s.ok("status")["boot"] != old_boot
    rec = s.ok("status")["reconciled"]["binance"]
    assert rec["fills_recovered"] >= len(down) and not rec["fill_marks"]["problems"], rec

    def pg_equals_venue():
        venue = sorted((sym, t["id"]) for sym in ("BTCUSDT", "ETHUSDT") for t in venue_trades(s, sym))
        pg = [(sym, tid) for sym, tid, *_ in pg_fills(s.dsn)]
        return pg == venue and venue
    wait_for(pg_equals_venue, 120, "PostgreSQL's fills to equal the venue's trades, each once")
    rows = {(sym, tid): rest for sym, tid, *rest in pg_fills(s.dsn)}
    for sym, t in down:
        recovered, boot, vid, cid = rows[(sym, t["id"])]
        st, order = s.rest("GET", "/api/v3/order", {"symbol": sym, "orderId": t["orderId"]}, signed=True)
        assert st == 200, order
        assert (recovered, boot, vid, cid) == (True, boot_int(old_boot), t["orderId"], order["clientOrderId"])

    def positions_equal_balances():
        acct = s.rest("GET", "/api/v3/account", signed=True)[1]
        held = {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in acct["balances"]}
        pos = s.ok("positions")
        return Decimal(pos["BTCUSDT"]["qty"]) == held["BTC"] - 10 and Decimal(pos["ETHUSDT"]["qty"]) == held["ETH"] - 100
    wait_for(positions_equal_balances, 30, "the daemon's positions to equal the venue's balances (no fill counted twice)")


def test_each_persisted_order_event_joins_to_the_venues_order(audited):
    """Order events, orders and fills name the venue's order id and the client order id string
    the venue knows: joined to the venue's own order they agree."""
    s = audited
    wait_for(lambda: s.ok("status")["ready"], 120, "the daemon")
    with psycopg.connect(s.dsn) as c:
        wait_for(lambda: c.execute("SELECT count(*) FROM order_events WHERE venue_order_id IS NOT NULL").fetchone()[0] >= 10,
                 120, "order events with venue order ids in PostgreSQL")
        c.commit()
        events = c.execute("SELECT DISTINCT i.symbol, e.venue_order_id, e.venue_client_order_id FROM order_events e "
                           "JOIN instruments i ON i.id = e.instrument WHERE e.venue_order_id IS NOT NULL "
                           "ORDER BY 2 DESC LIMIT 40").fetchall()
        orders = dict(((sym, vid), cid) for sym, vid, cid in c.execute(
            "SELECT i.symbol, o.venue_order_id, o.venue_client_order_id FROM orders o "
            "JOIN instruments i ON i.id = o.instrument WHERE o.venue_order_id IS NOT NULL").fetchall())
        unjoined = c.execute("SELECT count(*) FROM order_events WHERE venue_order_id IS NOT NULL "
                             "AND venue_client_order_id IS NULL").fetchone()[0]
    assert unjoined == 0
    for sym, vid, cid in events:
        st, order = s.rest("GET", "/api/v3/order", {"symbol": sym, "orderId": vid}, signed=True)
        assert st == 200, order
        assert order["clientOrderId"] == cid, (sym, vid, cid, order)
        if (sym, vid) in orders:
            assert orders[(sym, vid)] == cid
    assert len(orders) >= 5
    # and every fill names the order the venue's trade belongs to
    trades = {(sym, t["id"]): t["orderId"] for sym in ("BTCUSDT", "ETHUSDT") for t in venue_trades(s, sym)}
    for sym, tid, _rec, _boot, vid, _cid in pg_fills(s.dsn):
        assert trades[(sym, tid)] == vid
