"""Gaps found in the review of issue 12's wiring, each proven with the real daemon against the
simulated venue over loopback sockets (tests/daemon_harness.py):

* a Python strategy's (or the operator's) orders that the exchange filters refuse are counted
  like the shard kernel's own: per rule in `bot4ctl status` and `bot4d_filter_rejects_total`;
* the OMS's own refusals are not venue rejects: counted as reason "local", they never feed the
  error storm, which the venue's refusals still trip;
* a position found at start (a base balance away from `neutral_base`) is valued at its mark in
  the account's equity;
* the local self-trade check applies the instrument's configured `stp` policy.
"""
from __future__ import annotations

import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.kernels import filters as F
from bot4d.kernels import oms as oms_k
from bot4d.kernels import oms_state as oms
from bot4d.monitor.catalog import DaemonView
from bot4d.records import EV_ORDER_STATE
from bot4d.strategies.pyapi import BUY, SELL
from tests.daemon_harness import ROOT, STRATEGY, Stack, wait_for

UNPROTECTED = "[instruments.protection]\nenabled = false\n"
NONE = '[instruments.strategy]\nkind = "none"\n' + UNPROTECTED
# BTCUSDT: the Python quoter asks for 0.00005 BTC (~3 USDT) per side, under the venue's 5 USDT
# minNotional, every 100 ms: a burst of orders the OMS refuses before the wire
UNDER_MIN = """[instruments.strategy]
kind = "python"
class = "bot4d.strategies.py_quoter:Quoter"
interval_ms = 100
[instruments.strategy.params]
qty = "0.00005"
max_position = "0.001"
offset_ticks = 2000
stop_ticks = 500
requote_ticks = 1000
""" + UNPROTECTED
PY_SPACE = 1   # BTCUSDT is instrument 0: its Python strategy's client ids are (0 + 1) << 40 + n


def _series(s: Stack, metric: str, **labels: str) -> float | None:
    """One series as bot4d-exporter reads it (the catalog in shared memory)."""
    v = DaemonView(s.instance)
    try:
        for x in v.samples():
            if x.metric == metric and all(x.labels.get(k) == w for k, w in labels.items()):
                return x.value
        return None
    finally:
        v.close()


def _filter_refusals(s: Stack) -> np.ndarray:
    j = s.journal()
    return j[(j["kind"] == EV_ORDER_STATE) & (j["state"] == oms.S_REJECTED) & (j["instrument"] == 0)
             & (j["reason"] == F.F_NOTIONAL_MIN)]


# ==================================================================================================
@pytest.fixture(scope="module")
def refusing():
    """BTCUSDT: the Python quoter under minNotional; ETHUSDT: the market maker, whose orders reach
    the venue. An error storm is more than 4 venue errors in 3 s."""
    tmp = Path(tempfile.mkdtemp(prefix="bot4d-gaps-"))
    s = Stack(tmp, name="gaps", strategies={"BTCUSDT": UNDER_MIN,
                                            "ETHUSDT": STRATEGY.format(qty="0.02", inv="0.2", hs=2000) + UNPROTECTED},
              extra_risk='error_storm = 4\nstorm_window_s = "3"\n')
    try:
        s.start()
        wait_for(lambda: s.ok("status")["orders_sent"] >= 2, 60, "the ETHUSDT maker to quote")
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_python_strategy_orders_refused_by_a_filter_are_counted(refusing):
    """Every refusal of the Python strategy's orders is journalled naming the filter, counted per
    rule in `bot4ctl status` and in the exporter's series, and the venue never saw one."""
    s = refusing
    r = wait_for(lambda: (lambda r: (r,) if len(r) >= 10 else None)(_filter_refusals(s)), 30,
                 "ten of the Python strategy's orders refused by NOTIONAL")[0]
    assert (r["client_order_id"] >> 40 == PY_SPACE).all(), r["client_order_id"]
    counts = s.ok("status")["venue_rules"]["instruments"]["BTCUSDT"]["filter_rejects"]
    # counted when refused: the status read after the journal read holds at least as many
    assert set(counts) == {"NOTIONAL.minNotional"} and counts["NOTIONAL.minNotional"] >= len(r), (counts, len(r))
    wait_for(lambda: (_series(s, "bot4d_filter_rejects_total", symbol="BTCUSDT",
                              filter="NOTIONAL.minNotional") or 0) >= len(r), 10, "the exporter's count")
    st = s.sim_stats()
    assert st["order_requests"].get("BTCUSDT", 0) == 0 and st["filter_failures"] == {}, st


def test_local_refusals_are_not_venue_rejects_and_do_not_storm(refusing):
    """The burst of local refusals (far more than 4 in 3 s) is counted as "local", not as the
    venue's, and the error storm stays empty; the same limit of the venue's own refusals trips it."""
    s = refusing
    n0 = len(_filter_refusals(s))
    wait_for(lambda: len(_filter_refusals(s)) >= n0 + 30, 30, "thirty more local refusals")
    c = s.counters()
    assert c["venue_rejects"] == 0 and c["local_rejects"] >= n0 + 30, c
    risk = s.ok("risk")["0"]
    assert risk["trading_state"] == "ACTIVE", risk
    assert risk["storms"]["venue_errors"]["in_window"] == 0, risk["storms"]
    assert _series(s, "bot4d_orders_rejected_total", shard="0", reason="venue") == 0
    wait_for(lambda: (_series(s, "bot4d_orders_rejected_total", shard="0", reason="local") or 0) >= n0 + 30,
             10, "the exporter's local refusals")

    # now the venue refuses the maker's orders: a handful of those trips the storm
    s.fault("reject_orders", 40)
    wait_for(lambda: s.ok("risk")["0"]["trading_state"] == "HALTED", 30, "the error storm to halt trading")
    risk = s.ok("risk")["0"]
    assert risk["trip_reason"] == "TRIP_ERROR_STORM", risk
    assert s.counters()["venue_rejects"] >= 1
    wait_for(lambda: (_series(s, "bot4d_orders_rejected_total", shard="0", reason="venue") or 0) >= 1, 10,
             "the exporter's venue rejects")
    j = s.journal()
    venue = j[(j["kind"] == EV_ORDER_STATE) & (j["state"] == oms.S_REJECTED) & (j["reason"] == oms_k.R_VENUE)]
    assert len(venue) >= 1 and (venue["instrument"] == 1).all()


# ==================================================================================================
def _venue_balances(s: Stack) -> dict[str, Decimal]:
    st, body = s.rest("GET", "/api/v3/account", signed=True)
    assert st == 200, body
    return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in body["balances"]}


def test_equity_values_a_position_found_at_start_at_its_mark(tmp_path):
    """The venue holds 10.05000741 BTC (neutral 10: long 0.05, and 0.00000741 below BTCUSDT's
    0.00001 step, as a commission paid in the base asset leaves) and 99 ETH (neutral 100: short 1).
    The daemon starts (it used to stop on the finer balance), no strategy trades, and `bot4ctl
    risk`'s account equity equals the venue's balances valued at the daemon's marks, at start and
    after the prices moved."""
    s = Stack(tmp_path, name="eq0", strategies={"BTCUSDT": NONE, "ETHUSDT": NONE},
              sim_args=["--balance", "BTC=10.05000741", "--balance", "ETH=99"])
    try:
        s.start()
        pos = s.ok("positions")
        assert Decimal(pos["BTCUSDT"]["qty"]) == Decimal("0.05") and Decimal(pos["ETHUSDT"]["qty"]) == -1, pos
        bal = _venue_balances(s)
        assert bal["BTC"] == Decimal("10.05000741") and bal["ETH"] == 99 and bal["USDT"] == 100000, bal
        assert "0.00000741 BTC below the quantity step is valued at the mark" in s.daemon_log.read_text()

        def snapshot():
            """Equity with the marks it was measured at (the marks did not move around the read)."""
            a = s.ok("positions")
            acct = s.ok("risk")["account"]
            b = s.ok("positions")
            marks = {sym: Decimal(a[sym]["mark"]) for sym in ("BTCUSDT", "ETHUSDT")}
            if marks != {sym: Decimal(b[sym]["mark"]) for sym in marks} or not acct["valued"] \
                    or min(marks.values()) <= 0:
                return None
            return Decimal(acct["equity"]), marks

        seen = []
        for _ in range(2):
            eq, marks = wait_for(snapshot, 30, "a valued equity read at steady marks")
            want = bal["USDT"] + bal["BTC"] * marks["BTCUSDT"] + bal["ETH"] * marks["ETHUSDT"]
            assert abs(eq - want) <= Decimal("0.0001"), (eq, want, marks)
            seen.append(marks)
            wait_for(lambda: snapshot() is not None and snapshot()[1] != seen[0], 30, "the prices to move")
        assert _venue_balances(s) == bal   # nothing traded meanwhile
    finally:
        s.close()


# ==================================================================================================
class CrossOwn:
    """Rests a sell 3 % above the ask (out of the agents' reach), then, once it is live, a buy at
    that sell's price: an order that would trade with our own (tests/test_shard_gaps.py)."""

    def __init__(self, params, ctx):
        self.qty = ctx.qty(params["qty"])
        self.step = 0

    def on_tick(self, view, ctx):
        if not view.usable or view.ask <= 0:
            return []
        t = ctx.tick
        if self.step == 0:
            self.step = 1
            self.px = (view.ask * 103 // 100) // t * t
            return [ctx.place(view.now_ns, SELL, self.px, self.qty, stop=self.px + 100 * t)]
        if self.step == 1 and any(o["side"] == SELL for o in view.orders):
            self.step = 2
            return [ctx.place(view.now_ns, BUY, self.px, self.qty, stop=self.px - 100 * t)]
        return []


def _cross_own(stp: str) -> str:
    return f'stp = "{stp}"\n[instruments.strategy]\nkind = "python"\nclass = "tests.test_shard_gaps:CrossOwn"\n' \
           f'interval_ms = 100\n[instruments.strategy.params]\nqty = "0.02"\n' + UNPROTECTED


@pytest.mark.parametrize("mode", ["cancel_resting", "cancel_new"])
def test_local_stp_follows_the_instruments_policy(tmp_path, mode):
    """ETHUSDT's `stp` decides what the OMS does with a buy that would trade with our own resting
    sell: cancel_resting cancels the sell and sends the buy (the venue takes it, with
    EXPIRE_MAKER); cancel_new refuses the buy (R_STP, a local refusal) and the sell rests on."""
    s = Stack(tmp_path, name="stp", strategies={"BTCUSDT": NONE, "ETHUSDT": _cross_own(mode)})
    try:
        s.start_sim()
        s.start_daemon(env={"PYTHONPATH": str(ROOT)})

        def stp_events():
            j = s.journal()
            e = j[(j["kind"] == EV_ORDER_STATE) & (j["instrument"] == 1) & (j["reason"] == oms_k.R_STP)]
            return (e,) if len(e) else None
        e = wait_for(stp_events, 60, "the OMS's self-trade check")[0]
        eth = lambda: [o for o in s.venue_open_orders() if o["symbol"] == "ETHUSDT"]  # noqa: E731
        if mode == "cancel_resting":
            assert (e["state"] == oms.S_CANCEL_PENDING).all() and (e["side"] == SELL).all(), e

            def buy_taken():
                j = s.journal()
                return len(j[(j["kind"] == EV_ORDER_STATE) & (j["instrument"] == 1) & (j["side"] == BUY)
                             & np.isin(j["state"], [oms.S_ACKED, oms.S_PARTIALLY_FILLED, oms.S_FILLED])])
            wait_for(buy_taken, 30, "the venue to take the buy")
            wait_for(lambda: not [o for o in eth() if o["side"] == "SELL"], 30, "the sell cancelled at the venue")
            assert s.sim_stats()["stp_modes"].get("EXPIRE_MAKER", 0) >= 1
        else:
            assert (e["state"] == oms.S_REJECTED).all() and (e["side"] == BUY).all(), e
            j = s.journal()
            sells = j[(j["kind"] == EV_ORDER_STATE) & (j["instrument"] == 1) & (j["side"] == SELL)]
            assert not (sells["state"] == oms.S_CANCEL_PENDING).any(), sells   # the sell was left alone
            c = s.counters()
            assert c["local_rejects"] >= 1 and c["venue_rejects"] == 0, c
            assert s.sim_stats()["order_requests"].get("ETHUSDT", 0) == 1     # the sell only
    finally:
        s.close()


def test_dust_below_the_step_is_split_off_and_valued_at_the_mark():
    from bot4d.daemon import account as acc
    from bot4d.telemetry import ACCOUNT_ROW_DTYPE
    from ipc.seqlock import CL

    assert acc.split_holding(Decimal("10.05000741"), 5) == (1005000, Decimal("0.00000741"))
    assert acc.split_holding(Decimal("99"), 4) == (990000, Decimal(0))
    rows, seqs = np.zeros(1, ACCOUNT_ROW_DTYPE), np.zeros(CL, np.int64)
    mids = np.zeros(2, np.int64)
    av = acc.AccountView(rows, seqs, np.zeros(2, ACCOUNT_ROW_DTYPE), np.zeros(acc.AV_N, np.int64),
                         np.zeros(2, np.int64), np.array([100, 100], np.int64), mids)
    acc.set_dust(av, 0, Decimal("0.00000741"))
    assert acc.dust_value(av) == 0                       # no mark yet
    mids[0] = 6_000_012                                  # 60000.12 at price scale 2
    # 0.00000741 x 60000.12 = 0.4446008892 quote, in 10**-8 units (rounded down)
    assert acc.dust_value(av) == 44460088
    eq, whole = acc.account_equity(av, 5, True)
    assert eq == 5 + 44460088 and whole
    acc.publish(av, 1, 5, True, 0, 0, 0, 0, 0, 0, -1)
    assert rows[0]["part"] == 5 + 44460088               # the other shards see it in this shard's part
    with pytest.raises(ValueError):
        acc.set_dust(av, 1, Decimal("-0.1"))


# ==================================================================================================
def test_a_reconciliation_that_waits_for_the_weight_budget_does_not_start_stale(tmp_path):
    """Forty of our orders from an earlier boot rest at the venue; the start-up's requests and
    their cancels need more than the 160/min weight budget, so reconciliation waits for the next
    minute while the feeds fill the shard's ingress ring. The shard then starts with seconds of
    market data to read: its first passes read old records, which is no stale feed. It used to
    trip TRIP_STALE_MARKET_DATA (HALTED) on its first pass."""
    import time

    from bot4d.kernels import killswitch as KS
    from bot4d.records import EV_KILL_SWITCH

    budget = 160
    s = Stack(tmp_path, name="waitstale", weight_budget=budget, sim_weight_limit=budget + 15,
              strategies={"BTCUSDT": NONE, "ETHUSDT": NONE}, extra_risk='md_stale_s = "2"\n')
    try:
        s.start_sim()
        for k in range(40):
            sym, px, qty = ("BTCUSDT", f"{120000 + k}.00", "0.001") if k % 2 else ("ETHUSDT", f"{6000 + k}.00", "0.02")
            st, body = s.rest("POST", "/api/v3/order", {"symbol": sym, "side": "BUY", "type": "STOP_LOSS_LIMIT",
                                                        "timeInForce": "GTC", "quantity": qty, "price": px,
                                                        "stopPrice": px, "newClientOrderId": f"b4zzzzzz-0-{k + 1}"},
                                 signed=True)
            assert st == 200, body
        # early in a minute: the start-up spends the minute's budget at once and then waits for
        # the next one, far longer than md_stale_s
        while time.time() % 60 > 20:
            time.sleep(0.5)
        s.start_daemon()
        gw = s.ok("status")["venues"]["binance"]
        assert gw["counters"]["weight_waits"] >= 1 and gw["weight_peak"] <= budget, gw
        assert s.ok("status")["reconciled"]["binance"]["leftover_orders_cancelled"] == 40
        time.sleep(3)
        risk = s.ok("risk")["0"]
        assert risk["trading_state"] == "ACTIVE" and not risk["tripped"], risk
        j = s.journal()
        stale = j[(j["kind"] == EV_KILL_SWITCH) & (j["reason"] == KS.TRIP_STALE_MARKET_DATA)]
        assert len(stale) == 0, stale
        st = s.sim_stats()
        assert st["answers"].get("429", 0) == 0 and st["answers"].get("418", 0) == 0, st
    finally:
        s.close()
