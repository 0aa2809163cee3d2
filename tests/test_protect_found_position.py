"""The protective stop of a holding found at start, with real processes: the simulated Binance venue
and the daemon over loopback.

The venue holds 10.05 BTC against a neutral_base of 10: the daemon finds a long of 0.05 at start,
with no order that named a stop and no entry price. Its stop triggers ``default_stop_bps`` under
the first mark after start (the shard carries the found position at that mark: its avg_px), and
stays there: the price then declines slowly (the simulator's ``price_jump`` fault, a fraction of
the stop distance at a time) and the stop's trigger must not follow it down (it would be no stop
at all), nor when a restart finds the position again at a lower mark (the new run takes the
resting stop over at its trigger); when the price crosses the stop, the venue closes the position
through it.
"""
from __future__ import annotations

import time
from decimal import Decimal

from tests.daemon_harness import Stack, wait_for

SYM = "BTCUSDT"
NEUTRAL = Decimal("10")
HELD = Decimal("0.05")
STOP_BPS = 200          # 1.2 k USDT under a 60 k price: far beyond the agents' drift in a test
STEP_BPS = -35          # one step of the decline: about a sixth of the stop distance
NONE = '[instruments.strategy]\nkind = "none"\n'


def venue(s: Stack) -> dict:
    """The daemon's account as the venue holds it (the simulator's stats cost no request weight)."""
    return s.sim_stats()["accounts"]["1"]


def held(s: Stack) -> Decimal:
    return Decimal(venue(s)["balances"]["BTC"])


def venue_stops(s: Stack) -> list[dict]:
    return [o for o in venue(s)["open_orders"] if o["symbol"] == SYM and o["type"] == "STOP_LOSS_LIMIT"]


def mark(s: Stack) -> Decimal:
    return Decimal(s.ok("positions")[SYM]["mark"])


def test_a_found_positions_stop_stays_put_while_the_price_declines_and_closes_it(tmp_path):
    s = Stack(tmp_path, name="pfound", strategies={SYM: NONE, "ETHUSDT": NONE},
              sim_args=["--balance", f"BTC={NEUTRAL + HELD}", "--balance", "ETH=100"],
              # a breaker tripped by the jumps is not what this test is about
              extra_risk="[risk.stat_breaker]\nenabled = false\n",
              # the limit 300 bps beyond the trigger: the triggered stop fills in the thin book
              config={"instruments": {SYM: {"protection": {"default_stop_bps": STOP_BPS, "limit_offset_bps": 300}}}})
    try:
        s.start()
        assert Decimal(s.ok("positions")[SYM]["qty"]) == HELD

        def in_place():
            p = s.ok("protection")[SYM]
            v = venue_stops(s)
            if not p["protected"] or len(v) != 1 or Decimal(v[0]["stopPrice"]) != Decimal(p["stop_price"]):
                return None
            return p, v[0]
        p, v0 = wait_for(in_place, 30, "the found position's stop, the same at the venue")
        trig = Decimal(v0["stopPrice"])
        assert v0["side"] == "SELL" and Decimal(v0["qty"]) == HELD, v0
        # default_stop_bps under the price the found position is carried at (the first mark)
        entry = Decimal(s.ok("positions")[SYM]["avg_px"])
        assert entry > 0, "the found position has no reference price"
        # (a mid may fall between two ticks; `positions` shows it to the cent)
        lo, hi = (entry * (10000 - STOP_BPS) / 10000, (entry + Decimal("0.01")) * (10000 - STOP_BPS) / 10000)
        assert lo - Decimal("0.01") <= trig <= hi, (entry, trig)

        def decline(steps: int, cid: str) -> None:
            """``steps`` steps of the slow decline, each a sixth of the stop distance, each marked by
            the daemon; the stop ``cid`` rests at the venue at ``trig`` all along."""
            for k in range(steps):
                before = mark(s)
                s.fault("price_jump", symbol=SYM, bps=STEP_BPS)
                wait_for(lambda: mark(s) < before * Decimal("0.998"), 15, f"the daemon to mark decline step {k + 1}")
                assert mark(s) > trig, ("the price crossed the stop before the decline was over", mark(s), trig)
                # a stop that trailed the mark would be cancel-replaced within a pass or two of the mark
                t_end = time.monotonic() + 1.0
                while time.monotonic() < t_end:
                    v = venue_stops(s)
                    assert [(o["clientOrderId"], Decimal(o["stopPrice"])) for o in v] == [(cid, trig)], \
                        (f"step {k + 1}: the stop moved with the price", trig, v)
                    time.sleep(0.1)
            p = s.ok("protection")[SYM]
            assert p["protected"] and Decimal(p["stop_price"]) == trig and p["placed"] == 1, p

        replaces = s.sim_stats()["cancel_replaces"]
        decline(2, v0["clientOrderId"])
        assert s.sim_stats()["cancel_replaces"] == replaces
        assert Decimal(s.ok("positions")[SYM]["avg_px"]) == entry   # the reference stays where it was

        # a restart finds the position again, now at a lower mark: it takes the resting stop over at
        # its trigger (one cancel-replace, like for like) instead of measuring anew from that mark
        s.stop_daemon()
        assert [Decimal(o["stopPrice"]) for o in venue_stops(s)] == [trig], "the stop did not outlive the daemon"
        s.start_daemon()
        boot = s.ok("status")["boot"]
        _p, v1 = wait_for(lambda: (x := in_place()) and x[1]["clientOrderId"].startswith("b4" + boot) and x, 30,
                          "the restarted daemon's stop")
        assert Decimal(v1["stopPrice"]) == trig and Decimal(v1["qty"]) == HELD, (trig, v1)
        assert Decimal(s.ok("positions")[SYM]["avg_px"]) < entry   # carried at this run's first mark
        decline(2, v1["clientOrderId"])

        # the decline goes on through the stop: the venue triggers it and it closes the position
        def stop_order() -> dict:
            return s.rest("GET", "/api/v3/order", {"symbol": SYM, "origClientOrderId": v1["clientOrderId"]},
                          signed=True)[1]
        for _ in range(10):
            if stop_order()["status"] == "FILLED":
                break
            before = mark(s)
            s.fault("price_jump", symbol=SYM, bps=STEP_BPS)
            wait_for(lambda: mark(s) < before * Decimal("0.998") or stop_order()["status"] == "FILLED", 15,
                     "the daemon to mark the next step")
        wait_for(lambda: stop_order()["status"] == "FILLED", 30, "the venue to close the position through the stop")
        o = stop_order()
        assert Decimal(o["executedQty"]) == HELD and Decimal(o["stopPrice"]) == trig, o
        wait_for(lambda: held(s) == NEUTRAL, 15, "the venue's balance back at neutral")
        wait_for(lambda: Decimal(s.ok("positions")[SYM]["qty"]) == 0, 15, "the daemon to see the position closed")
        p = s.ok("protection")[SYM]
        assert p["market_exits"] == 0 and p["placed"] == 1, p   # the venue's stop closed it, nothing else
        time.sleep(0.5)
        assert venue_stops(s) == []
    finally:
        s.close()
