"""Protective OCOs and the exits around them, with real processes: the simulated Binance venue and
the daemon over loopback.

* An entry that names a take-profit is protected by ONE venue order list (OCO): a STOP_LOSS_LIMIT
  and a LIMIT_MAKER for the whole position. The price rising through the take-profit fills that
  leg, the venue takes the stop leg out, the position is flat and the daemon places nothing more.
* SIGKILL with the OCO resting: both legs stay at the venue; a restarted daemon replaces the list
  with its own for the same stop and take-profit, and there is never a second list.
* Overshoot: when the protective stop fires, the strategy's resting order on the same side is
  cancelled, so a price coming back does not fill it and flip the position.
* An earlier run's stop that fills after the restarted daemon read its balances moves the position.

The strategy is a small Python strategy (below) that buys once at the best ask with a stop and a
take-profit; the simulator's ``price_jump`` fault moves the market through them.
"""
from __future__ import annotations

import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bot4d.kernels import oms_state as oms
from bot4d.records import EV_FILL, EV_ORDER_NEW, EV_POSITION, INTENT_FLAG_PROTECTIVE, JFLAG_INTENT_SHIFT, SIDE_ASK, SIDE_BID
from tests.daemon_harness import Raw, Stack, wait_for

SYM = "BTCUSDT"
NEUTRAL = Decimal("10")
ROOT = str(Path(__file__).resolve().parents[1])
NONE = '[instruments.strategy]\nkind = "none"\n'


class Entry:
    """Buys ``qty`` once at the best ask (IOC, again until something filled) with a stop
    ``stop_ticks`` under and, with ``tp_ticks``, a take-profit that far above; with
    ``closing_ticks`` it then rests a SELL for the position that far above the entry. Then it only
    watches: flat again, it does not re-enter."""

    def __init__(self, params, ctx):
        self.qty = ctx.qty(Decimal(str(params["qty"])))
        self.stop = int(params["stop_ticks"]) * ctx.tick
        self.tp = int(params.get("tp_ticks", 0)) * ctx.tick
        self.closing = int(params.get("closing_ticks", 0)) * ctx.tick
        self.entry = 0
        self.held = False
        self.closing_sent = False
        self.last_try = 0

    def on_tick(self, view, ctx):
        if not view.usable or not view.ask:
            return []
        if view.position > 0:
            self.held = True
        if not self.held:
            if view.orders or view.now_ns - self.last_try < 500_000_000:
                return []
            self.last_try = view.now_ns
            self.entry = view.ask
            return [ctx.place(view.now_ns, SIDE_BID, view.ask, self.qty, stop=view.ask - self.stop,
                              take_profit=view.ask + self.tp if self.tp else 0, tif=oms.TIF_IOC)]
        if self.closing and not self.closing_sent and view.position > 0:
            self.closing_sent = True
            return [ctx.place(view.now_ns, SIDE_ASK, self.entry + self.closing, view.position)]
        return []


def entry(**params) -> str:
    p = {"qty": "0.002", "stop_ticks": 30000, **params}
    return ('[instruments.strategy]\nkind = "python"\nclass = "tests.test_protective_oco:Entry"\n'
            'interval_ms = 50\n[instruments.strategy.params]\n' +
            "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in p.items()))


def stack_with(tmp_path, strategy: str, protection: dict | None = None,
               before_daemon: Callable[[Stack], object] | None = None) -> Stack:
    """``before_daemon`` runs against the simulated venue before the daemon (and so the strategy's
    entry) starts."""
    s = Stack(tmp_path, name="oco", taker_account=True, strategies={SYM: strategy, "ETHUSDT": NONE},
              config={"instruments": {SYM: {"protection": protection}}} if protection else None)
    s.start_sim()
    if before_daemon is not None:
        before_daemon(s)
    s.start_daemon(env={"PYTHONPATH": ROOT})
    return s


@pytest.fixture
def stacks():
    made: list[Stack] = []
    yield made
    for s in made:
        s.close()


def venue(s: Stack) -> dict:
    return s.sim_stats()["accounts"]["1"]


def lists(s: Stack) -> list[dict]:
    return [x for x in s.sim_stats()["open_order_lists"] if x["account"] == 1 and x["symbol"] == SYM]


def position(s: Stack) -> Decimal:
    return Decimal(venue(s)["balances"]["BTC"]) - NEUTRAL


def jump(s: Stack, bps: int) -> None:
    s.fault("price_jump", symbol=SYM, bps=bps)


def walls(s: Stack, ref: Decimal, *, ask_bps: int = 0, bid_bps: int = 0, qty: str = "0.5") -> list[int]:
    """A third party rests a sell ``ask_bps`` over ``ref`` and a buy ``bid_bps`` under it. The
    simulated book is thin: an agent's market order can sweep it to any resting order of ours
    (seen: a take-profit 5 % away filled within a second; a 2 % one 30 ms after it was placed);
    a wall stops the sweeps short of it. Returns the walls' venue order ids."""
    ids = []
    for side, bps in (("SELL", ask_bps), ("BUY", -bid_bps)):
        if bps:
            px = (ref * (10000 + bps) / 10000).quantize(Decimal("0.01"))
            st, r = s.rest("POST", "/api/v3/order", {"symbol": SYM, "side": side, "type": "LIMIT", "timeInForce": "GTC",
                                                     "quantity": qty, "price": px}, signed=True, account=s.taker2)
            assert st == 200, r
            ids.append(r["orderId"])
    return ids


def unwall(s: Stack, ids: list[int]) -> None:
    """Take the walls away (before a jump that must reach our orders)."""
    for oid in ids:
        st, r = s.rest("DELETE", "/api/v3/order", {"symbol": SYM, "orderId": oid}, signed=True, account=s.taker2)
        assert st == 200, r


def mid(s: Stack) -> Decimal:
    def book():
        d = s.rest("GET", "/api/v3/depth", {"symbol": SYM, "limit": 5})[1]
        return (Decimal(d["bids"][0][0]) + Decimal(d["asks"][0][0])) / 2 if d["bids"] and d["asks"] else None
    return wait_for(book, 30, "a two-sided book")


def order(s: Stack, cid: str) -> dict:
    return s.rest("GET", "/api/v3/order", {"symbol": SYM, "origClientOrderId": cid}, signed=True)[1]


def oco_in_place(s: Stack) -> dict:
    """The daemon's view and the venue's list once one OCO covers the whole position."""
    pos = position(s)
    p = s.ok("protection")[SYM]
    ls = lists(s)
    if pos <= 0 or not p["protected"] or not p["take_profit_order_id"] or len(ls) != 1:
        return {}
    legs = {leg["type"]: leg for leg in ls[0]["legs"]}
    if set(legs) != {"STOP_LOSS_LIMIT", "LIMIT_MAKER"} or any(Decimal(x["qty"]) != pos for x in legs.values()):
        return {}
    return {"daemon": p, "list": ls[0], "stop": legs["STOP_LOSS_LIMIT"], "tp": legs["LIMIT_MAKER"], "pos": pos}


def protective_places(s: Stack) -> int:
    j = s.journal()
    new = j[j["kind"] == EV_ORDER_NEW]
    return int(np.count_nonzero((new["aux0"] >> JFLAG_INTENT_SHIFT) & INTENT_FLAG_PROTECTIVE))


def test_an_entry_with_a_take_profit_rests_an_oco_whose_take_profit_closes_the_position(tmp_path, stacks):
    # the take-profit 2 % over the entry, the stop 0.5 % under it; walls 1 % over and 0.25 % under
    # the price before the entry keep the agents' sweeps from reaching either (seen: the take-profit
    # filled 30 ms after it rested, the position flat before the OCO could be looked at)
    wall_ids: list[int] = []
    s = stack_with(tmp_path, entry(tp_ticks=120000),
                   before_daemon=lambda s: wall_ids.extend(walls(s, mid(s), ask_bps=100, bid_bps=25)))
    stacks.append(s)
    seen = wait_for(lambda: oco_in_place(s), 60, "one OCO (stop + take-profit) for the whole position")
    d, stop, tp = seen["daemon"], seen["stop"], seen["tp"]
    boot = s.ok("status")["boot"]
    assert stop["clientOrderId"].startswith("b4" + boot) and tp["clientOrderId"].startswith("b4" + boot)
    # the strategy's prices: $300 under and $1200 over its entry's limit (which the fills are at or
    # under); the stop-limit's limit under its trigger
    fills = [t for t in s.rest("GET", "/api/v3/myTrades", {"symbol": SYM}, signed=True)[1] if t["isBuyer"]]
    limit_px = Decimal(stop["stopPrice"]) + 300
    assert all(Decimal(t["price"]) <= limit_px for t in fills)
    assert Decimal(tp["price"]) == Decimal(d["take_profit_price"]) == limit_px + 1200
    assert Decimal(stop["stopPrice"]) == Decimal(d["stop_price"])
    assert Decimal(stop["price"]) < Decimal(stop["stopPrice"])
    # one per size the position had (read again until both sides agree: a resize may be in flight)
    wait_for(lambda: s.ok("protection")[SYM]["oco_placed"] == s.sim_stats()["oco_places"] >= 1, 15,
             "the daemon's and the venue's count of placed OCOs to agree")
    placed = protective_places(s)

    # the market rises through the take-profit: that leg fills, the venue expires the stop leg
    unwall(s, wall_ids)
    jump(s, 400)
    wait_for(lambda: order(s, tp["clientOrderId"])["status"] == "FILLED", 30, "the take-profit leg to fill")
    assert order(s, stop["clientOrderId"])["status"] == "EXPIRED"
    assert lists(s) == []
    assert position(s) == 0
    wait_for(lambda: Decimal(s.ok("positions")[SYM]["qty"]) == 0, 30, "the daemon to see itself flat")
    p = wait_for(lambda: (lambda p: p if p["stop_order_id"] == 0 and p["take_profit_order_id"] == 0 else None)(
        s.ok("protection")[SYM]), 30, "the protection to be gone")
    assert p["protected"] is True
    # and nothing more is placed: no new protective order, nothing at the venue
    time.sleep(2)
    assert protective_places(s) == placed
    assert [o for o in venue(s)["open_orders"] if o["symbol"] == SYM] == []
    # the journal records both legs (one OCO group) and the take-profit's fill
    j = s.journal()
    new = j[j["kind"] == EV_ORDER_NEW]
    sl = new[new["order_id"] == d["stop_order_id"]]
    tl = new[new["order_id"] == d["take_profit_order_id"]]
    assert len(sl) == 1 and len(tl) == 1 and sl[0]["aux2"] == tl[0]["aux2"] != 0
    assert sl[0]["order_type"] == oms.OT_STOP_LIMIT and tl[0]["tif"] == oms.TIF_POST_ONLY
    fills = j[(j["kind"] == EV_FILL) & (j["order_id"] == seen["daemon"]["take_profit_order_id"])]
    assert len(fills) >= 1 and np.all(fills["side"] == SIDE_ASK)


def test_sigkill_leaves_both_legs_and_a_restart_takes_the_list_over_without_a_second_one(tmp_path, stacks):
    # stop 1 % under, take-profit 5 % over: the agents' flow reaches neither while the daemon is down
    s = stack_with(tmp_path, entry(stop_ticks=60000, tp_ticks=300000))
    stacks.append(s)
    seen = wait_for(lambda: oco_in_place(s), 60, "one OCO for the whole position")
    ref = Decimal(seen["stop"]["stopPrice"]) + 600
    walls(s, ref, ask_bps=100, bid_bps=50)
    old = {seen["stop"]["clientOrderId"], seen["tp"]["clientOrderId"]}
    old_boot = s.ok("status")["boot"]
    s.stop_daemon(signal.SIGKILL)
    ls = lists(s)
    assert len(ls) == 1 and {x["clientOrderId"] for x in ls[0]["legs"]} == old, "the OCO did not outlive the daemon"
    placed = s.sim_stats()["oco_places"]   # (an entry filled in two parts was protected twice)

    # the next run quotes nothing on BTCUSDT: its protection asks for the earlier run's prices again
    s.write_config({"instruments": {SYM: {"strategy": Raw(NONE)}}})
    s.start_daemon(env={"PYTHONPATH": ROOT})
    boot = s.ok("status")["boot"]
    assert boot != old_boot
    max_lists = 0
    t_end = time.monotonic() + 60
    now = {}
    while time.monotonic() < t_end:
        ls = lists(s)
        max_lists = max(max_lists, len(ls))
        now = oco_in_place(s)
        if now and all(x["clientOrderId"].startswith("b4" + boot) for x in now["list"]["legs"]):
            break
        time.sleep(0.05)
    assert now, "the restarted daemon did not take the OCO over"
    assert max_lists == 1, "two order lists rested at once"
    assert Decimal(now["stop"]["stopPrice"]) == Decimal(seen["stop"]["stopPrice"])
    assert Decimal(now["tp"]["price"]) == Decimal(seen["tp"]["price"])
    assert Decimal(now["daemon"]["take_profit_price"]) == Decimal(seen["tp"]["price"])
    for cid in old:
        assert order(s, cid)["status"] in ("CANCELED", "EXPIRED")
    assert s.sim_stats()["oco_places"] == placed + 1   # the restarted run placed one list


def test_a_stop_that_fires_cancels_the_strategys_order_on_its_side_so_the_position_cannot_flip(tmp_path, stacks):
    # the stop-limit's limit 300 bps under its trigger: it fills in the jump below
    s = stack_with(tmp_path, entry(closing_ticks=20000), {"limit_offset_bps": 300})
    stacks.append(s)
    pos = wait_for(lambda: (lambda p: p if p > 0 else None)(position(s)), 60, "a position")
    sells = wait_for(lambda: [o for o in venue(s)["open_orders"] if o["symbol"] == SYM and o["type"] == "LIMIT"
                              and o["side"] == "SELL"], 30, "the strategy's closing sell")
    assert Decimal(sells[0]["qty"]) == pos
    walls(s, Decimal(sells[0]["price"]) - 200, ask_bps=20, bid_bps=25, qty="0.05")   # sweeps stop short of ours
    stop = wait_for(lambda: [o for o in venue(s)["open_orders"] if o["symbol"] == SYM
                             and o["type"] == "STOP_LOSS_LIMIT"], 30, "the protective stop")[0]
    assert Decimal(stop["qty"]) == pos
    jump(s, -150)
    wait_for(lambda: order(s, stop["clientOrderId"])["status"] == "FILLED", 30, "the stop to close the position")
    wait_for(lambda: order(s, sells[0]["clientOrderId"])["status"] == "CANCELED", 30,
             "the strategy's sell to be cancelled when the stop fired")
    assert s.ok("protection")[SYM]["strategy_orders_cancelled_on_exit"] == 1
    # the price comes back above where the sell rested: nothing of ours sells into it
    jump(s, 300)
    time.sleep(3)
    assert position(s) == 0, "the position flipped"
    assert Decimal(s.ok("positions")[SYM]["qty"]) == 0


def test_an_earlier_runs_stop_filling_after_the_restart_read_balances_moves_the_position(tmp_path, stacks):
    s = stack_with(tmp_path, entry(), {"limit_offset_bps": 300})
    stacks.append(s)
    pos = wait_for(lambda: (lambda p: p if p > 0 else None)(position(s)), 60, "a position")
    stop = wait_for(lambda: [o for o in venue(s)["open_orders"] if o["symbol"] == SYM and o["type"] == "STOP_LOSS_LIMIT"
                             and Decimal(o["qty"]) == pos], 30, "the protective stop")[0]
    walls(s, Decimal(stop["stopPrice"]) + 300, bid_bps=25, qty="0.05")   # no sweep reaches the stop early
    s.stop_daemon(signal.SIGKILL)
    # the next run keeps no protection of its own here (so nothing replaces the earlier stop for
    # its first seconds) and quotes nothing: the earlier run's stop is left resting at start
    s.write_config({"instruments": {SYM: {"strategy": Raw(NONE), "protection": {"enabled": False}}}})
    s.start_daemon(env={"PYTHONPATH": ROOT})
    assert Decimal(s.ok("positions")[SYM]["qty"]) == pos   # from the balances, stop still resting
    assert order(s, stop["clientOrderId"])["status"] == "NEW"
    jump(s, -150)
    wait_for(lambda: order(s, stop["clientOrderId"])["status"] == "FILLED", 30, "the earlier run's stop to fill")
    assert position(s) == 0
    wait_for(lambda: Decimal(s.ok("positions")[SYM]["qty"]) == 0, 30, "the restarted daemon's position to follow the fill")
    j = s.journal()
    moved = j[(j["kind"] == EV_POSITION) & (j["instrument"] == 0)]
    assert len(moved) and moved[-1]["qty"] == 0


# --- the simulator's OCO, against a plain Binance-style client (no daemon) ------------------------

def test_the_simulated_venue_runs_an_oco_as_binance_documents_it():
    import asyncio

    from picows import ws_connect

    from bot4d.kernels import matching as m
    from bot4d.sim.binance_server import SimServer
    from tests.test_sim_binance import Client, Collector, ServerThread, make_venue

    venue, acct = make_venue()

    def agent(side: int, px: int, qty: int, oid: int) -> None:
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        o["op"], o["otype"], o["tif"], o["side"], o["order_id"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, side, oid
        o["price"], o["qty"] = px, qty
        venue.submit_agent_orders(o, time.time_ns())

    with ServerThread(SimServer(venue)) as st:
        c = Client(st.server.rest_port)
        st.call(agent, SIDE_BID, 5_900_000, 100_000, 1 << 41)   # 59000.00 bid, 1 BTC
        st.call(agent, SIDE_ASK, 6_300_000, 100_000, (1 << 41) + 1)

        def oco(tag: str, tp: str = "62500.00") -> dict:
            status, r, _ = c.request("POST", "/api/v3/orderList/oco", {
                "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01000",
                "aboveType": "LIMIT_MAKER", "abovePrice": tp, "aboveClientOrderId": f"{tag}-tp",
                "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "58000.00", "belowPrice": "57900.00",
                "belowTimeInForce": "GTC", "belowClientOrderId": f"{tag}-sl"}, True)
            assert status == 200, r
            return r

        def balance(asset: str) -> tuple[Decimal, Decimal]:
            _, a, _ = c.request("GET", "/api/v3/account", {}, True)
            b = next(x for x in a["balances"] if x["asset"] == asset)
            return Decimal(b["free"]), Decimal(b["locked"])

        def status_of(cid: str) -> str:
            return c.request("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": cid}, True)[1]["status"]

        async def flow() -> list[dict]:
            _, lk, _ = await asyncio.to_thread(c.request, "POST", "/api/v3/userDataStream")
            t, user = await ws_connect(Collector, f"ws://127.0.0.1:{st.server.ws_port}/ws/{lk['listenKey']}")
            await asyncio.sleep(0.05)
            r = await asyncio.to_thread(oco, "a", "62000.00")
            assert r["contingencyType"] == "OCO" and r["listOrderStatus"] == "EXECUTING"
            assert sorted(o["clientOrderId"] for o in r["orders"]) == ["a-sl", "a-tp"]
            assert all(o["orderListId"] == r["orderListId"] for o in r["orderReports"])
            assert await asyncio.to_thread(balance, "BTC") == (Decimal("1.99"), Decimal("0.01"))   # locked once
            _, lists_, _ = await asyncio.to_thread(c.request, "GET", "/api/v3/openOrderList", {}, True)
            assert [x["orderListId"] for x in lists_] == [r["orderListId"]]
            # a buyer lifts the take-profit: it fills, the stop leg expires (OCO_TRIGGER)
            await asyncio.to_thread(st.call, agent, SIDE_BID, 6_200_000, 1_000, (1 << 41) + 2)
            assert await asyncio.to_thread(status_of, "a-tp") == "FILLED"
            assert await asyncio.to_thread(status_of, "a-sl") == "EXPIRED"
            assert (await asyncio.to_thread(balance, "BTC")) == (Decimal("1.99"), Decimal(0))
            # cancelling one leg cancels the list; so does DELETE /api/v3/orderList
            await asyncio.to_thread(oco, "b")
            s, _, _ = await asyncio.to_thread(c.request, "DELETE", "/api/v3/order",
                                              {"symbol": "BTCUSDT", "origClientOrderId": "b-tp"}, True)
            assert s == 200
            assert await asyncio.to_thread(status_of, "b-sl") == "CANCELED"
            r3 = await asyncio.to_thread(oco, "c")
            s, body, _ = await asyncio.to_thread(c.request, "DELETE", "/api/v3/orderList",
                                                 {"symbol": "BTCUSDT", "orderListId": r3["orderListId"]}, True)
            assert s == 200 and body["listOrderStatus"] == "ALL_DONE"
            assert {await asyncio.to_thread(status_of, x) for x in ("c-sl", "c-tp")} == {"CANCELED"}
            assert (await asyncio.to_thread(balance, "BTC")) == (Decimal("1.99"), Decimal(0))
            # a SELL take-profit at or under the best bid would take: refused, nothing placed
            s, body, _ = await asyncio.to_thread(c.request, "POST", "/api/v3/orderList/oco", {
                "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.01000",
                "aboveType": "LIMIT_MAKER", "abovePrice": "58500.00",
                "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "58000.00", "belowPrice": "57900.00",
                "belowTimeInForce": "GTC"}, True)
            assert s == 400 and body["code"] == -2010
            await asyncio.sleep(0.2)
            t.disconnect()
            return user.msgs

        msgs = asyncio.run(flow())
    expired = [m_ for m_ in msgs if m_.get("e") == "executionReport" and m_["c"] == "a-sl" and m_["x"] == "EXPIRED"]
    assert len(expired) == 1 and expired[0]["eR"] == "OCO_TRIGGER" and expired[0]["g"] >= 1
    status = [(m_["g"], m_["l"]) for m_ in msgs if m_.get("e") == "listStatus"]
    assert status[:2] == [(status[0][0], "EXEC_STARTED"), (status[0][0], "ALL_DONE")]
    assert len(status) == 6   # three lists, each started and done
