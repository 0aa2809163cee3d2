"""End to end with real processes: the simulated Binance venue and the daemon (market maker on two
instruments), driven through bot4ctl's control socket and inspected at the venue and in the
daemon's journal. The tests run in order on one stack: trade, halt, flatten, reduce-only, SIGKILL
and restart, SIGTERM."""
from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import numpy as np
import pytest

from bot4d.kernels import killswitch as ksk
from bot4d.kernels import risk as rk
from bot4d.records import (EV_CONTROL, EV_KILL_SWITCH, EV_ORDER_NEW, EV_RISK_REJECT, INTENT_FLAG_PROTECTIVE,
                           JFLAG_INTENT_SHIFT)
from tests.daemon_harness import Stack, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("e2e"))
    try:
        s.start()
        yield s
    finally:
        s.close()


def boot_of(coid: str) -> str:
    return coid.split("-")[0][2:]


def quotes(stack) -> list[dict]:
    """The strategies' orders at the venue: all but the protective stops, which rest there for as
    long as a position is open, halted or not (tests/test_protective_stops.py)."""
    return [o for o in stack.venue_open_orders() if o["type"] != "STOP_LOSS_LIMIT"]


def test_it_trades_both_instruments(stack):
    wait_for(lambda: stack.ok("status")["orders_sent"] >= 6, 60, "the market maker to quote")
    st = stack.ok("status")
    assert st["trading_state"] == {"0": "ACTIVE"} and st["books_live"] == "2/2"
    wait_for(lambda: {o["symbol"] for o in stack.venue_open_orders()} == {"BTCUSDT", "ETHUSDT"}, 30,
             "quotes on both instruments at the venue")
    # what the venue holds is what the daemon believes is live (by client order id)
    boot = st["boot"]
    ours = [o for o in stack.venue_open_orders() if boot_of(o["clientOrderId"]) == boot]
    assert ours
    book = stack.ok("books", symbol="BTCUSDT")
    assert book["state"] == "LIVE" and book["bids"] and book["asks"]
    j = stack.journal()
    assert np.count_nonzero(j["kind"] == EV_ORDER_NEW) >= 6
    assert np.all(np.diff(j["seq"]) == 1), "journal sequence must be gap-free"


def test_halt_stops_new_orders_at_once_while_cancels_still_go_out(stack):
    before = stack.counters()
    r = stack.ok("halt")
    assert r["0"].endswith("HALTED")
    j_at_halt = len(stack.journal())
    # the market maker pulls its quotes: cancels leave, nothing new is placed (only a protective
    # stop may follow a position a late fill changed: halted means no new risk, not no protection)
    wait_for(lambda: not quotes(stack), 30, "quotes to be cancelled after halt")
    time.sleep(1.5)
    after = stack.counters()
    new = stack.journal()[j_at_halt:]
    new = new[new["kind"] == EV_ORDER_NEW]
    assert np.all(((new["aux0"] >> JFLAG_INTENT_SHIFT) & INTENT_FLAG_PROTECTIVE) != 0), \
        "a strategy order was placed after halt"
    assert after["cancels_sent"] > before["cancels_sent"]
    j = stack.journal()
    ctl = j[j["kind"] == EV_CONTROL]
    assert len(ctl) and ctl[-1]["aux0"] == os.getuid() and ctl[-1]["aux1"] > 0  # who asked: uid, pid
    ks = j[j["kind"] == EV_KILL_SWITCH]
    assert ks[-1]["reason"] == ksk.TRIP_MANUAL and ks[-1]["state"] == ksk.TS_HALTED
    # refusals are sentences, and trading commands keep their roles
    bad = stack.ctl("books", symbol="DOGEUSDT")
    assert not bad["ok"] and "unknown instrument 'DOGEUSDT'" in bad["error"]
    bad = stack.ctl("limits-set", symbol="BTCUSDT", key="max_position", value="-1")
    assert not bad["ok"] and "positive" in bad["error"]


def test_flatten_then_reduce_only_from_flat_refuses_every_opening_order(stack):
    stack.ok("resume")
    # stop both strategies, close what they hold, then come back in reduce-only
    for sym in ("BTCUSDT", "ETHUSDT"):
        stack.ok("pause", symbol=sym)
    wait_for(lambda: not quotes(stack), 30, "paused strategies to pull their quotes")

    def flat():
        if all(p["qty"].strip("0.") in ("", "-") for p in stack.ok("positions").values()):
            return True
        # the simulated book is thin: a market order may fill in part and expire; an operator
        # repeats flatten until flat, so does the test
        stack.ok("flatten")
        time.sleep(0.5)
        return False
    wait_for(flat, 30, "flat positions")
    stack.ok("reduce-only")
    j0 = len(stack.journal())
    placed = stack.counters()["placed"]
    for sym in ("BTCUSDT", "ETHUSDT"):
        stack.ok("unpause", symbol=sym)

    def refused_enough():
        j = stack.journal()[j0:]
        return np.count_nonzero((j["kind"] == EV_RISK_REJECT) & (j["reason"] == rk.REJ_REDUCING)) >= 8
    wait_for(refused_enough, 30, "opening orders to be refused in reduce-only")
    j = stack.journal()[j0:]
    assert np.count_nonzero(j["kind"] == EV_ORDER_NEW) == 0, "an opening order got through reduce-only"
    assert stack.counters()["placed"] == placed
    assert stack.ok("risk")["0"]["trading_state"] == "REDUCING"
    assert not stack.venue_open_orders()   # flat: no protective stop either
    # the kill switch did not count policy refusals as a storm
    assert stack.ok("risk")["0"]["tripped"] is False
    stack.ok("resume")
    wait_for(lambda: stack.counters()["placed"] > placed, 30, "quoting again after resume")


def test_sigkill_then_restart_reconciles_without_duplicates_or_losses(stack):
    wait_for(lambda: len(stack.venue_open_orders()) >= 2, 30, "live quotes before the kill")
    old_boot = stack.ok("status")["boot"]
    stack.stop_daemon(signal.SIGKILL)
    left = stack.venue_open_orders()
    assert left and all(boot_of(o["clientOrderId"]) == old_boot for o in left)
    stack.start_daemon()
    st = stack.ok("status")
    assert st["boot"] != old_boot
    rec = st["reconciled"]["binance"]
    # every order the dead run left ends known at the venue: filled meanwhile, cancelled by the
    # new run's reconciliation, or (a protective stop on a position) replaced by the new run's
    # stop; none is left working behind the new run's back
    def final():
        f = {o["clientOrderId"]: stack.rest("GET", "/api/v3/order", {"symbol": o["symbol"],
             "origClientOrderId": o["clientOrderId"]}, signed=True)[1]["status"] for o in left}
        return set(f.values()) <= {"FILLED", "CANCELED"} and f
    f = wait_for(final, 30, "every order of the dead run filled or cancelled")
    taken_over = stack.ok("status")["venues"]["binance"]["counters"]["stops_taken_over"]
    assert rec["leftover_orders_cancelled"] + taken_over == list(f.values()).count("CANCELED")
    # nothing of the dead run stays live at the venue; the new run quotes with its own ids
    wait_for(lambda: stack.venue_open_orders() and all(boot_of(o["clientOrderId"]) == st["boot"]
                                                       for o in stack.venue_open_orders()), 30,
             "only the new run's orders at the venue")
    ids = [o["clientOrderId"] for o in stack.venue_open_orders()]
    assert len(ids) == len(set(ids))


def test_sigterm_cancels_open_orders_drains_and_exits_0(stack):
    wait_for(lambda: stack.venue_open_orders(), 30, "live quotes")
    positions = stack.ok("positions")
    assert stack.stop_daemon(signal.SIGTERM) == 0
    # the quotes are gone; what stays is a protective stop for each open position, and only that
    assert quotes(stack) == []
    stops = {o["symbol"]: o for o in stack.venue_open_orders()}
    assert set(stops) == {s for s, p in positions.items() if Decimal(p["qty"]) != 0}, (stops, positions)
    j = stack.journal()  # the ring outlives the process (the sidecar may still drain it)
    assert np.all(np.diff(j["seq"]) == 1)
    st = j[j["kind"] == EV_KILL_SWITCH]
    assert len(st) and st[-1]["state"] == ksk.TS_HALTED
    assert "stopped" in stack.daemon_log.read_text()
