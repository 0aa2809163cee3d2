"""Protective stops with real processes: the simulated Binance venue and the daemon over loopback.

A position the daemon holds keeps a STOP_LOSS_LIMIT for its whole size resting at the venue: seen
through `bot4ctl protection` and at the venue itself; it follows the position by cancel-replace;
it stays at the venue when the daemon is SIGKILLed and closes the position when the price crosses
it; a restarted daemon takes the earlier run's stop over in one request, never leaving the position
bare; a stop the venue refuses trips the kill switch to REDUCING.

The simulated book is thin (agents' bids tens of dollars below the mid), so the market maker's
quotes, 20 ticks from the mid, are the best prices: a taker account selling into our bid gives
the daemon a position, and a small sell through the agents' bids crosses the stop.
"""
from __future__ import annotations

import signal
import threading
import time
from decimal import Decimal

import numpy as np
import pytest

from bot4d.kernels import killswitch as ksk
from bot4d.kernels.oms_state import OT_STOP_LIMIT
from bot4d.records import EV_KILL_SWITCH, EV_ORDER_NEW, JFLAG_OPENS_POSITION
from tests.daemon_harness import Raw, Stack, market_maker, wait_for

SYM = "BTCUSDT"
NEUTRAL = Decimal("10")
# the market maker's stop: 30000 ticks ($300, 0.5 %) under its entry, beyond what the simulated
# market drifts during a test (tens of dollars in seconds); quotes of 0.004: the taker takes more
# from our bid than the agents' flow takes from our ask
BTC_MM = market_maker("0.004", "0.0040", 20, stop_ticks=30000)
# what a restart quotes on BTCUSDT: nothing
NO_STRATEGY = {"instruments": {SYM: {"strategy": Raw('[instruments.strategy]\nkind = "none"\n')}}}


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path, name="prot", taker_account=True,
              strategies={SYM: BTC_MM, "ETHUSDT": market_maker("0.01", "0.010", 2000)})
    try:
        s.start()
        yield s
    finally:
        s.close()


def venue(stack: Stack) -> dict:
    """The daemon's account as the venue holds it (the simulator's stats: polling them costs the
    daemon none of its request weight, which the simulator counts per address)."""
    return stack.sim_stats()["accounts"]["1"]


def venue_stops(stack: Stack) -> list[dict]:
    return [o for o in venue(stack)["open_orders"] if o["symbol"] == SYM and o["type"] == "STOP_LOSS_LIMIT"]


def held(stack: Stack) -> Decimal:
    return Decimal(venue(stack)["balances"]["BTC"])


def take_position(stack: Stack, at_least: Decimal = Decimal("0.002")) -> Decimal:
    """The taker sells into our best bid, then the strategy is paused so the position stays put;
    again while the agents' flow (which also takes our asks) leaves the position under
    ``at_least``. Returns the daemon's position (as the venue's balance says)."""
    for _ in range(20):
        stack.ok("unpause", symbol=SYM)
        bids = wait_for(lambda: [o for o in stack.ok("orders", symbol=SYM) if o["side"] == "BUY" and o["state"] == "ACKED"
                                      and not o["protective"]],
                        30, "a resting BTCUSDT bid")
        bid = max(bids, key=lambda o: Decimal(o["price"]))
        # everything bid at or above ours, and ours
        depth = stack.rest("GET", "/api/v3/depth", {"symbol": SYM, "limit": 1000})[1]
        px = Decimal(bid["price"])
        qty = sum((Decimal(q) for p, q in depth["bids"] if Decimal(p) >= px), Decimal(0))
        st, r = stack.rest("POST", "/api/v3/order", {"symbol": SYM, "side": "SELL", "type": "LIMIT", "timeInForce": "IOC",
                                                     "quantity": max(qty, Decimal(bid["qty"])), "price": px},
                           signed=True, account=stack.taker)
        assert st == 200, r
        stack.ok("pause", symbol=SYM)
        # the strategy's quotes are gone; what the venue holds is the position to protect
        wait_for(lambda: not [o for o in venue(stack)["open_orders"] if o["type"] != "STOP_LOSS_LIMIT"], 30,
                 "the paused strategy's quotes to be cancelled")
        pos = held(stack) - NEUTRAL
        wait_for(lambda: Decimal(stack.ok("positions")[SYM]["qty"]) == pos, 30, "the daemon to see its position")
        if pos >= at_least:
            return pos
    raise AssertionError(f"no long position of {at_least} after 20 tries (position {pos})")


def protected(stack: Stack, pos: Decimal) -> dict:
    p = stack.ok("protection")[SYM]
    stops = venue_stops(stack)
    if not (p["protected"] and Decimal(p["stop_qty"]) == abs(pos) and len(stops) == 1):
        return {}
    return {"daemon": p, "venue": stops[0]}


def test_a_position_gets_a_stop_at_the_venue_that_outlives_the_daemon_and_closes_it(stack):
    pos = take_position(stack)
    assert pos > 0
    seen = wait_for(lambda: protected(stack, pos), 30, "a protective stop for the whole position")
    d, v = seen["daemon"], seen["venue"]
    assert v["side"] == "SELL" and Decimal(v["qty"]) == pos
    assert Decimal(v["stopPrice"]) == Decimal(d["stop_price"]) and Decimal(v["price"]) < Decimal(v["stopPrice"])
    assert v["clientOrderId"].startswith("b4" + stack.ok("status")["boot"])
    # the stop is the strategy's own: 30000 ticks under the price of the bid that last filled
    trades = stack.rest("GET", "/api/v3/myTrades", {"symbol": SYM}, signed=True)[1]
    last_buy = [t for t in trades if t["isBuyer"]][-1]
    assert Decimal(v["stopPrice"]) == Decimal(last_buy["price"]) - Decimal("300.00")

    stack.stop_daemon(signal.SIGKILL)
    stops = venue_stops(stack)
    assert [s["clientOrderId"] for s in stops] == [v["clientOrderId"]], "the stop did not outlive the daemon"

    # the price crosses the stop while nobody watches: a third party bids a cent under the stop,
    # the taker sells through every bid down to it, so a trade prints under the stop. Triggered,
    # the stop is a limit sell that rests if the bids beyond it are gone (a stop-limit's known
    # risk in a gap): a buyer then takes it.
    stop_px = Decimal(v["stopPrice"])
    low = stop_px - Decimal("0.01")

    def stop_order() -> dict:
        return stack.rest("GET", "/api/v3/order", {"symbol": SYM, "origClientOrderId": v["clientOrderId"]},
                          signed=True)[1]
    for _ in range(10):
        o = stop_order()
        if o["status"] == "FILLED":
            break
        if o["isWorking"]:
            st, r = stack.rest("POST", "/api/v3/order", {"symbol": SYM, "side": "BUY", "type": "LIMIT",
                                                         "timeInForce": "IOC", "price": o["price"],
                                                         "quantity": Decimal(o["origQty"]) - Decimal(o["executedQty"])},
                               signed=True, account=stack.taker2)
        else:
            st, r = stack.rest("POST", "/api/v3/order", {"symbol": SYM, "side": "BUY", "type": "LIMIT",
                                                         "timeInForce": "GTC", "price": low, "quantity": "0.001"},
                               signed=True, account=stack.taker2)
            assert st == 200, r
            depth = stack.rest("GET", "/api/v3/depth", {"symbol": SYM, "limit": 5000})[1]
            above = sum((Decimal(q) for p, q in depth["bids"] if Decimal(p) >= low), Decimal(0))
            assert above < Decimal(5), above
            st, r = stack.rest("POST", "/api/v3/order", {"symbol": SYM, "side": "SELL", "type": "LIMIT",
                                                         "timeInForce": "IOC", "price": low, "quantity": above},
                               signed=True, account=stack.taker)
        assert st == 200, r
        time.sleep(0.3)
    wait_for(lambda: stop_order()["status"] == "FILLED", 30, "the venue to close the position through the stop")
    assert held(stack) == NEUTRAL, "the position is not closed at the venue"

    # the next run (quoting nothing on BTCUSDT) finds the position closed and keeps no stop
    stack.write_config(NO_STRATEGY)
    stack.start_daemon()
    assert Decimal(stack.ok("positions")[SYM]["qty"]) == 0
    assert stack.ok("protection")[SYM]["protected"] is True
    assert venue_stops(stack) == []


def test_restart_takes_the_stop_over_without_leaving_the_position_bare(stack):
    pos = take_position(stack)
    old = wait_for(lambda: protected(stack, pos), 30, "a protective stop")["venue"]
    before = stack.sim_stats()["cancel_replaces"]
    stack.stop_daemon(signal.SIGKILL)
    # the next run quotes nothing on BTCUSDT, so the position stays what the stop was made for
    stack.write_config(NO_STRATEGY)
    bare: list[float] = []
    done = threading.Event()

    def watch():  # the venue's side, polled the whole time the daemon is away and coming back
        while not done.is_set():
            if not venue_stops(stack):
                bare.append(time.monotonic())
            time.sleep(0.01)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        stack.start_daemon()
        new = wait_for(lambda: (x := protected(stack, pos)) and x["venue"]["clientOrderId"] != old["clientOrderId"]
                       and x, 30, "the new run's stop")["venue"]
    finally:
        done.set()
        t.join(5)
    assert not bare, f"the position had no stop at the venue {len(bare)} times during the restart"
    assert new["clientOrderId"].startswith("b4" + stack.ok("status")["boot"])
    assert Decimal(new["qty"]) == pos and new["side"] == "SELL"
    o = stack.rest("GET", "/api/v3/order", {"symbol": SYM, "origClientOrderId": old["clientOrderId"]}, signed=True)[1]
    assert o["status"] == "CANCELED"
    # one request did it (ETHUSDT's quotes may have left a position with a stop to take over too)
    taken = stack.ok("status")["venues"]["binance"]["counters"]["stops_taken_over"]
    assert taken >= 1 and stack.sim_stats()["cancel_replaces"] >= before + 1


def test_the_stop_follows_the_position_by_cancel_replace(stack):
    pos = take_position(stack)
    # trade on until the position changes from one size to another without passing through flat
    # (the agents' flow takes our asks too): its stop must follow in one cancel-replace
    for _ in range(10):
        first = wait_for(lambda: protected(stack, pos), 30, "a protective stop")["venue"]
        before = stack.sim_stats()["cancel_replaces"]
        went_flat = stack.ok("protection")[SYM]["cancelled"]
        pos2 = take_position(stack, Decimal("0.001"))
        if pos2 != pos:
            second = wait_for(lambda: protected(stack, pos2), 30, "the stop resized to the position")["venue"]
            if stack.ok("protection")[SYM]["cancelled"] == went_flat:
                break
        pos = pos2
    else:
        raise AssertionError("the position never changed size without going flat")
    assert second["clientOrderId"] != first["clientOrderId"] and Decimal(second["qty"]) == pos2
    assert stack.sim_stats()["cancel_replaces"] > before
    o = stack.rest("GET", "/api/v3/order", {"symbol": SYM, "origClientOrderId": first["clientOrderId"]}, signed=True)[1]
    assert o["status"] == "CANCELED"
    # flat again (the exit replaces the stop in the same request; the thin simulated book may
    # fill a market order in part, so an operator repeats flatten, and so does the test): the
    # stop goes
    def flat():
        if held(stack) == NEUTRAL:
            return True
        stack.ok("flatten", symbol=SYM)
        time.sleep(0.5)
        return False
    wait_for(flat, 30, "a flat position")
    wait_for(lambda: not venue_stops(stack), 30, "no stop left at the venue once flat")
    assert stack.ok("protection")[SYM]["protected"] is True
    # every order the journal calls opening carries a stop-loss (the database holds it to that):
    # the stops, their swaps and the exit are journalled as closing orders
    j = stack.journal()
    new = j[j["kind"] == EV_ORDER_NEW]
    opening = new[(new["aux0"] & JFLAG_OPENS_POSITION) != 0]
    assert len(opening) and np.all(opening["stop_price"] > 0)
    assert np.count_nonzero((new["order_type"] == OT_STOP_LIMIT) & ((new["aux0"] & JFLAG_OPENS_POSITION) == 0)) >= 2


def test_a_stop_the_venue_refuses_trips_the_kill_switch_to_reducing(stack):
    # ETHUSDT's maker is paused first: a fill of its own would give its stop the refusal (seen:
    # the kill switch tripped by ETHUSDT's stop, so BTCUSDT never bid again)
    stack.ok("pause", symbol="ETHUSDT")
    wait_for(lambda: not [o for o in stack.ok("orders", symbol="ETHUSDT") if not o["protective"]], 30,
             "ETHUSDT's quotes pulled")
    stack.fault("reject_stops")
    j0 = len(stack.journal())
    pos = take_position(stack)
    r = wait_for(lambda: (x := stack.ok("risk")["0"])["tripped"] and x, 30, "the kill switch to trip")
    assert r["trading_state"] == "REDUCING" and r["trip_reason"] == "TRIP_STOP_REFUSED"
    ev = stack.journal()[j0:]
    ks = ev[(ev["kind"] == EV_KILL_SWITCH) & (ev["reason"] == ksk.TRIP_STOP_REFUSED)]
    assert len(ks) == 1 and ks[0]["state"] == ksk.TS_REDUCING
    assert stack.ok("protection")[SYM]["refused"] >= 1
    # the next attempt (after retry_ms) puts the stop in place; trading stays reducing until an admin resumes
    wait_for(lambda: protected(stack, pos), 30, "the stop placed on the next attempt")
    assert stack.ok("risk")["0"]["trading_state"] == "REDUCING"
    assert "protective stop refused by the venue" in stack.daemon_log.read_text()
    stack.ok("resume")
    assert stack.ok("risk")["0"]["trading_state"] == "ACTIVE"
    assert np.all(np.diff(stack.journal()["seq"]) == 1)
