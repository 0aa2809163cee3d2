"""The venue's rules in the running daemon (issue 12, items 5-8): exchange filters refuse an order
before the wire, every order carries its instrument's STP mode, a fee paid in BNB is charged to
P&L at BNB's mark, signed requests follow the venue's clock, and a balance equity cannot value
stops the start. The real daemon against the simulated venue over loopback sockets
(tests/daemon_harness.py); the simulator serves BNBUSDT, charges commission in BNB and runs its
clock 3 s ahead of this machine's from before the daemon starts.

Binance's documents these tests follow (binance/binance-spot-api-docs): filters.md (NOTIONAL,
MAX_NUM_ORDERS, PERCENT_PRICE_BY_SIDE), rest-api.md "Timing security" and errors.md -1021,
enums.md "STP Modes", rest-api.md "Query Commission Rates" and faqs/commission_faq.md.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.config import load
from bot4d.daemon import venue_rules
from bot4d.gateway.clock import VenueClock
from bot4d.kernels import fees as feek
from bot4d.kernels import filters as F
from bot4d.kernels import oms_state as oms
from bot4d.monitor.catalog import DaemonView
from bot4d.records import EV_FILL, EV_ORDER_STATE, JOURNAL_EVENT_DTYPE
from tests.daemon_harness import STRATEGY, Stack, wait_for

SIM_ARGS = ["--symbols", "BTCUSDT,ETHUSDT,BNBUSDT", "--fee-asset", "BNB", "--balance", "BNB=50",
            "--maker-fee", "0.001", "--taker-fee", "0.001"]
# BTCUSDT quotes 0.00005 BTC (~3 USDT) under its 5 USDT minNotional, rarely (every 2 s a side);
# ETHUSDT quotes near the touch asking the venue for EXPIRE_BOTH; BNBUSDT only gives BNB's mark
BTC_UNDER_MIN = STRATEGY.format(qty="0.00005", inv="0.0005", hs=20).replace("min_requote_ms = 200",
                                                                          "min_requote_ms = 2000")
ETH_STP = 'stp = "cancel_both"\n' + STRATEGY.format(qty="0.02", inv="0.2", hs=20)
BNB_MARK = """
[[instruments]]
venue = "binance"
symbol = "BNBUSDT"
shard = 0
max_position = "1"
max_notional = "5000"
neutral_base = "50"
"""
RECV_WINDOW_MS = 2000   # the venue 3 s ahead is outside it: unstamped by the offset, every order is -1021
SYNC_S = 5              # the offset is measured this often


def _venue_keys(s: Stack, extra: str) -> None:
    text = s.config.read_text()
    anchor = f'api_secret_file = "{s.sec_f}"\n'
    assert anchor in text
    s.config.write_text(text.replace(anchor, anchor + extra))


@pytest.fixture(scope="module")
def stack():
    tmp = Path(tempfile.mkdtemp(prefix="bot4d-rules-"))
    s = Stack(tmp, name="rules", taker_account=True, sim_args=SIM_ARGS,
              strategies={"BTCUSDT": BTC_UNDER_MIN, "ETHUSDT": ETH_STP})
    s.config.write_text(s.config.read_text() + BNB_MARK)
    _venue_keys(s, f"recv_window_ms = {RECV_WINDOW_MS}\ntime_sync_interval_s = {SYNC_S}\n")
    try:
        s.start_sim()
        s.fault("clock_offset", seconds=3)
        s.start_daemon()
        wait_for(lambda: [o for o in _open_orders(s) if o["symbol"] == "ETHUSDT"], 60,
                 "the ETHUSDT quotes at the venue")
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


# the harness signs with this machine's clock; the venue's runs seconds ahead: a wide window
WIDE = {"recvWindow": 60000}


def _open_orders(s: Stack) -> list[dict]:
    st, body = s.rest("GET", "/api/v3/openOrders", WIDE, signed=True)
    assert st == 200, body
    return body


def _series(s: Stack, metric: str) -> dict[tuple, float]:
    """The exporter's view of one metric (the catalog in shared memory, as bot4d-exporter reads it)."""
    v = DaemonView(s.instance)
    try:
        return {tuple(sorted(x.labels.items())): x.value for x in v.samples() if x.metric == metric}
    finally:
        v.close()


# ---------------------------------------------------------------------------------------------------
def test_venue_clock_ahead_orders_still_accepted(stack):
    """rest-api.md "Timing security": the venue refuses a timestamp more than recvWindow behind its
    clock (-1021). Its clock is 3 s ahead, recvWindow 2 s: the offset measured at start stamps every
    signed request, so orders are accepted; the offset shows in `bot4ctl status` and the exporter.
    Then the venue jumps to 6 s ahead: the next signed request meets -1021, the daemon measures
    again and sends it once more, and trading goes on without a -1021 reject reaching the OMS."""
    clock = stack.ok("status")["venues"]["binance"]["clock"]
    assert 2700 <= clock["offset_ms"] <= 3300, clock
    assert clock["invalid_timestamp_answers"] == 0, clock
    assert any(o["symbol"] == "ETHUSDT" for o in _open_orders(stack))
    off = _series(stack, "bot4d_venue_clock_offset_seconds")
    assert len(off) == 1 and 2.7 <= next(iter(off.values())) <= 3.3, off
    assert list(_series(stack, "bot4d_venue_recv_window_seconds").values()) == [RECV_WINDOW_MS / 1000]

    # measured periodically; the jump comes right after a measurement, so an order meets it first
    n = clock["measurements"]
    wait_for(lambda: stack.ok("status")["venues"]["binance"]["clock"]["measurements"] >= n + 2, 4 * SYNC_S,
             "two more periodic measurements")
    c = stack.ok("status")["venues"]["binance"]["clock"]
    wait_for(lambda: stack.ok("status")["venues"]["binance"]["clock"]["measurements"] > c["measurements"],
             2 * SYNC_S, "a fresh measurement")
    j0 = len(stack.journal())
    placed = stack.counters()["placed"]
    stack.fault("clock_offset", seconds=6)

    def remeasured():
        c = stack.ok("status")["venues"]["binance"]["clock"]
        return c if c["invalid_timestamp_answers"] >= 1 and 5700 <= c["offset_ms"] <= 6300 else None
    wait_for(remeasured, 30, "a -1021 answer and the offset measured again")
    wait_for(lambda: stack.counters()["placed"] >= placed + 4, 30, "orders placed after the jump")
    wait_for(lambda: any(o["symbol"] == "ETHUSDT" and o["time"] > int(time.time() * 1000) + 5000
                         for o in _open_orders(stack)), 30, "an order accepted at the venue's new time")
    j = stack.journal()[j0:]
    refused = j[(j["kind"] == EV_ORDER_STATE) & (j["state"] == oms.S_REJECTED) & (j["aux3"] == -1021)]
    assert len(refused) == 0, refused


def test_stp_mode_reaches_the_venue_with_every_order(stack):
    """enums.md STP Modes: ETHUSDT is configured `stp = "cancel_both"`, which every order carries
    as selfTradePreventionMode EXPIRE_BOTH; the venue records it on each order it accepted."""
    eth = wait_for(lambda: [o for o in _open_orders(stack) if o["symbol"] == "ETHUSDT"
                            and o["type"] in ("LIMIT", "LIMIT_MAKER")], 30, "ETH quotes")
    assert {o["selfTradePreventionMode"] for o in eth} == {"EXPIRE_BOTH"}, eth
    # (a protective stop, should the agents have filled a quote, is an exit: EXPIRE_MAKER)
    assert {o["selfTradePreventionMode"] for o in _open_orders(stack) if o["type"] == "STOP_LOSS_LIMIT"} <= {"EXPIRE_MAKER"}
    modes = stack.sim_stats()["stp_modes"]
    assert set(modes) <= {"EXPIRE_BOTH", "EXPIRE_MAKER"} and modes["EXPIRE_BOTH"] >= 2, modes
    rules = stack.ok("status")["venue_rules"]["instruments"]
    assert rules["ETHUSDT"]["selfTradePreventionMode"] == "EXPIRE_BOTH"
    assert rules["BTCUSDT"]["selfTradePreventionMode"] == "EXPIRE_TAKER"   # the default, cancel_new


def test_order_under_min_notional_never_reaches_the_venue(stack):
    """filters.md NOTIONAL: price * quantity >= minNotional (5 USDT). The BTCUSDT maker's quotes
    (0.00005 BTC) are refused in the OMS, journalled with the filter as the reason, counted per
    rule in `bot4ctl status` and the exporter; the venue never saw a BTCUSDT order."""
    def refused():
        j = stack.journal()
        r = j[(j["kind"] == EV_ORDER_STATE) & (j["state"] == oms.S_REJECTED) & (j["instrument"] == 0)]
        return [r] if len(r) >= 2 else None
    r = wait_for(refused, 60, "the BTCUSDT quotes refused by the filter")[0]
    assert set(r["reason"].tolist()) == {F.F_NOTIONAL_MIN}, r["reason"]
    st = stack.sim_stats()
    assert st["order_requests"].get("BTCUSDT", 0) == 0 and st["order_requests"].get("ETHUSDT", 0) > 0, st
    assert st["filter_failures"] == {}, st["filter_failures"]
    counts = stack.ok("status")["venue_rules"]["instruments"]["BTCUSDT"]["filter_rejects"]
    assert set(counts) == {"NOTIONAL.minNotional"} and counts["NOTIONAL.minNotional"] >= 2, counts
    key = (("filter", "NOTIONAL.minNotional"), ("symbol", "BTCUSDT"), ("venue", "BINANCE"))
    wait_for(lambda: _series(stack, "bot4d_filter_rejects_total").get(key, 0) >= 2, 10,
             "the exporter series of the refusals")
    assert not any(o["symbol"] == "BTCUSDT" for o in _open_orders(stack))


def test_reload_reads_the_exchange_filters_again(stack):
    """SIGHUP / `bot4ctl reload` loads the venue's filters again (the answer says so), and the
    refusals go on under them."""
    r = stack.ok("reload")
    assert r["refused"] is None and r["exchange_filters"] == "exchange filters reloaded", r
    n = stack.ok("status")["venue_rules"]["instruments"]["BTCUSDT"]["filter_rejects"]["NOTIONAL.minNotional"]
    wait_for(lambda: stack.ok("status")["venue_rules"]["instruments"]["BTCUSDT"]["filter_rejects"]
             ["NOTIONAL.minNotional"] > n, 30, "refusals after the reload")
    assert stack.sim_stats()["order_requests"].get("BTCUSDT", 0) == 0


def test_fee_paid_in_bnb_is_charged_to_pnl(stack):
    """faqs/commission_faq.md: the commission may be paid in BNB. Another account sells into the
    daemon's ETHUSDT bid; the venue charges the daemon 0.1 % of the notional in BNB at its BNB price;
    the daemon converts it at its own BNBUSDT mark and `bot4ctl pnl` shows it as the ETHUSDT fee."""
    sym = "ETHUSDT"
    rates = stack.ok("status")["venue_rules"]["fee_rates"]["binance"]   # GET /api/v3/account/commission
    assert (Decimal(rates["maker"]), Decimal(rates["taker"]), rates["uniform"]) == (Decimal("0.001"), Decimal("0.001"), True)
    def my_trades():
        st, trades = stack.rest("GET", "/api/v3/myTrades", {"symbol": sym, **WIDE}, signed=True)
        assert st == 200, trades
        return trades

    for _ in range(30):   # the maker requotes: aim at its best bid as it stands, until one fills
        bids = wait_for(lambda: [o for o in stack.ok("orders", symbol=sym) if o["side"] == "BUY" and o["state"] == "ACKED"],
                        30, "a resting ETHUSDT bid")
        bid = max(bids, key=lambda o: Decimal(o["price"]))
        depth = stack.rest("GET", "/api/v3/depth", {"symbol": sym, "limit": 1000})[1]
        px = Decimal(bid["price"])
        qty = sum((Decimal(q) for p, q in depth["bids"] if Decimal(p) >= px), Decimal(0))
        assert qty <= 50, (qty, px)
        if qty > 0:
            st, r = stack.rest("POST", "/api/v3/order", {"symbol": sym, "side": "SELL", "type": "LIMIT",
                                                         "timeInForce": "IOC", "quantity": qty, "price": bid["price"],
                                                         **WIDE}, signed=True, account=stack.taker)
            assert st == 200, r
            if my_trades():
                break
        time.sleep(0.2)
    pnl = wait_for(lambda: (p := stack.ok("pnl")) and Decimal(p[sym]["fees"]) > 0 and p, 30, "the fee in P&L")
    mark = Decimal(stack.ok("positions")["BNBUSDT"]["mark"])
    trades = my_trades()
    assert trades and {t["commissionAsset"] for t in trades} == {"BNB"}, trades
    bnb = sum(Decimal(t["commission"]) for t in trades)
    notional = sum(Decimal(t["quoteQty"]) for t in trades)
    fees = Decimal(pnl[sym]["fees"])
    # at BNB's mark (the venue priced it at its last trade, the daemon at its mid: a few ticks apart)
    assert abs(fees / bnb - mark) <= mark * Decimal("0.02"), (fees, bnb, mark)
    assert abs(fees - notional * Decimal("0.001")) <= notional * Decimal("0.001") * Decimal("0.03"), (fees, notional)
    gw = stack.ok("status")["venues"]["binance"]["counters"]
    assert gw["fee_converted"] >= len(trades) and gw["fee_no_mark"] == 0, gw
    j = stack.journal()
    fills = j[(j["kind"] == EV_FILL) & (j["instrument"] == 1)]
    assert len(fills) >= len(trades) and np.all(fills["fee"] > 0)


def test_start_refused_for_a_balance_without_a_mark(tmp_path):
    """The account also holds DOGE, which no configured instrument prices: the daemon refuses to
    start (exit 1) naming DOGE and the ways out; with DOGE in ignore_assets it starts."""
    s = Stack(tmp_path, name="nomark", sim_args=["--balance", "DOGE=1000"])
    try:
        s.start_sim()
        p = s.start_daemon(wait_ready=False)
        assert p.wait(300) == 1
        log = s.daemon_log.read_text()
        assert "the account holds DOGE, which equity cannot convert into USDT" in log, log[-3000:]
        assert "DOGEUSDT" in log and "ignore_assets" in log
        assert s.sim_stats()["order_requests"] == {}   # nothing was traded
        _venue_keys(s, 'ignore_assets = ["DOGE"]\n')
        s.start_daemon()
        assert s.ok("status")["ready"]
        assert s.stop_daemon(signal.SIGTERM) == 0
    finally:
        s.close()


# --- the pieces, one by one -------------------------------------------------------------------------
def test_filters_bounds_at_the_instrument_scale_and_max_num_orders():
    """Binance writes bounds with 8 decimals (BTCUSDT's MARKET_LOT_SIZE maxQty "83.10412228" at a
    5-decimal step): a maximum is floored, a minimum ceiled, a step must be exact. MAX_NUM_ORDERS
    (filters.md) compares the live orders bound to the table; count_rejects tallies the journal."""
    row = F.parse_binance([{"filterType": "MARKET_LOT_SIZE", "minQty": "0.000012", "maxQty": "83.10412228",
                            "stepSize": "0.00000000"},
                           {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 25}], 2, 5)
    assert (row["mkt_min_qty"], row["mkt_max_qty"], row["mkt_step"], row["max_orders"]) == (2, 8310412, 0, 25)
    with pytest.raises(ValueError):
        F.parse_binance([{"filterType": "LOT_SIZE", "minQty": "0", "maxQty": "1", "stepSize": "0.000001"}], 2, 5)
    with pytest.raises(ValueError):
        F.parse_binance([{"filterType": "LOT_SIZE", "minQty": "0", "maxQty": "0.000001", "stepSize": "0"}], 2, 5)
    with pytest.raises(ValueError):
        F.parse_binance([{"filterType": "MAX_NUM_ORDERS", "maxNumOrders": "25"}], 2, 5)
    ft = F.make_filters(2)
    open_now, marks = np.zeros(2, np.int64), np.zeros(2, np.int64)
    ft = F.bind(ft, open_now, marks)
    F.set_from_binance(ft, 0, [{"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 2},
                               {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "1.2",
                                "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.8",
                                "avgPriceMins": 1}], 2, 5)
    assert F.check_order(ft, 0, True, False, 100_00, 1, 0) == F.F_NO_REFERENCE
    marks[0] = 100_00   # the bound mark is the reference price: filters.md's example, 1.2 / 0.2 for a BUY
    assert F.check_order(ft, 0, True, False, 120_00, 1, 0) == F.F_OK
    assert F.check_order(ft, 0, True, False, 120_01, 1, 0) == F.F_PERCENT_UP
    assert F.check_order(ft, 0, False, False, 79_99, 1, 0) == F.F_PERCENT_DOWN
    open_now[0] = 2
    assert F.check_order(ft, 0, True, False, 100_00, 1, 0) == F.F_MAX_NUM_ORDERS
    open_now[0] = 1
    assert F.check_order(ft, 0, True, False, 100_00, 1, 0) == F.F_OK
    # a reload without the filter: the rule is gone (every rule of the row is reset)
    F.set_from_binance(ft, 0, [], 2, 5)
    open_now[0] = 50
    assert F.check_order(ft, 0, True, False, 100_00, 1, 0) == F.F_OK
    with pytest.raises(ValueError):
        F.bind(ft, np.zeros(3, np.int64), marks)
    j = np.zeros(3, JOURNAL_EVENT_DTYPE)
    j["kind"] = EV_ORDER_STATE
    j["instrument"] = [1, 1, 0]
    j["reason"] = [F.F_NOTIONAL_MIN, F.F_NOTIONAL_MIN, 5]   # 5: a risk reason, not a filter's
    F.count_rejects(ft, j, 0, 3)
    assert F.reject_counts(ft, 1) == {"NOTIONAL.minNotional": 2} and F.reject_counts(ft, 0) == {}


def test_commission_rates_from_the_documented_answer():
    """rest-api.md "Query Commission Rates" example: maker or taker + the larger of buyer/seller,
    for standard, tax and special commission."""
    doc = {"symbol": "BTCUSDT",
           "standardCommission": {"maker": "0.00000010", "taker": "0.00000020", "buyer": "0.00000030", "seller": "0.00000040"},
           "specialCommission": {"maker": "0.01000000", "taker": "0.02000000", "buyer": "0.03000000", "seller": "0.04000000"},
           "taxCommission": {"maker": "0.00000112", "taker": "0.00000114", "buyer": "0.00000118", "seller": "0.00000116"},
           "discount": {"enabledForAccount": True, "enabledForSymbol": True, "discountAsset": "BNB",
                        "discount": "0.75000000"}}
    maker, taker = feek.rates_from_binance(doc)
    assert maker == Decimal("0.00000010") + Decimal("0.00000040") + Decimal("0.00000112") + Decimal("0.00000118") \
        + Decimal("0.01") + Decimal("0.04")
    assert taker == Decimal("0.00000020") + Decimal("0.00000040") + Decimal("0.00000114") + Decimal("0.00000118") \
        + Decimal("0.02") + Decimal("0.04")
    fs = feek.make_fees(1, [(0, "0", "0")])
    feek.set_rates(fs, maker, taker)
    assert fs.maker[0] == 5_000_280 and fs.taker[0] == 6_000_292
    with pytest.raises(ValueError):
        feek.set_rates(fs, "0", "-0.001")
    with pytest.raises(ValueError):
        feek.rates_from_binance({"standardCommission": {"maker": "x"}})
    assert venue_rules.fee_rates({"A": doc, "B": {"standardCommission": {"maker": "0.001", "taker": "0.002"}}}) == \
        (maker, taker, False)


def test_clock_offset_and_drift():
    """serverTime read inside [t0, t1]: offset = serverTime - midpoint; drift = offset change per
    second between measurements (1000 ns/s = 1 ppm)."""
    c = VenueClock()
    assert c.observe(1_000_000_000, 4_000, 1_002_000_000) == 2_999_000_000   # 3 s ahead, 2 ms round trip
    assert c.rtt_ns == 2_000_000 and c.venue_ns(10) == 2_999_000_010
    c.observe(11_000_000_000, 14_001, 11_002_000_000)   # 10 s later, 1 ms more ahead
    assert c.offset_ns == 3_000_000_000 and c.drift_ns_per_s == 100_000   # 100 ppm
    assert c.status(11_001_000_000)["drift_ppm"] == 100.0
    with pytest.raises(ValueError):
        c.observe(5, 0, 4)


def _rules(sym: str, quote: str = "USDT", allowed: tuple = ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"),
           filters: list | None = None) -> dict:
    return {"base": sym[:-len(quote)], "quote": quote, "price_scale": 2, "qty_scale": 5, "stp_allowed": list(allowed),
            "filters": filters or []}


def test_rule_checks_name_the_instrument_and_the_rule(tmp_path):
    """A mode the symbol does not allow, a filter that does not fit the scales, a second quote
    currency: each refuses the start naming the instrument; balances without a mark are named."""
    from tests.test_config import BASE, _write_secret, KEY, SECRET, edit, write
    _write_secret(tmp_path / "keys" / "k", KEY)
    _write_secret(tmp_path / "keys" / "s", SECRET)
    cfg = load(write(tmp_path, edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "ETHUSDT"\nstp = "decrement"')))
    ics = list(cfg.instruments)
    rules = {("binance", "BTCUSDT"): _rules("BTCUSDT"), ("binance", "ETHUSDT"): _rules("ETHUSDT")}
    with pytest.raises(venue_rules.RulesError, match=r"instruments\[1\] \(binance ETHUSDT\): stp = \"decrement\" "
                                                     r"asks for selfTradePreventionMode DECREMENT, which ETHUSDT does not allow"):
        venue_rules.check(cfg, ics, rules)
    rules[("binance", "ETHUSDT")] = _rules("ETHUSDT", allowed=("DECREMENT",))
    assert venue_rules.check(cfg, ics, rules) == {"binance": "USDT"}
    rules[("binance", "BTCUSDT")] = _rules("BTCUSDT", filters=[{"filterType": "PRICE_FILTER", "minPrice": "0",
                                                                "maxPrice": "0", "tickSize": "0.001"}])
    with pytest.raises(venue_rules.RulesError, match=r"instruments\[0\] \(binance BTCUSDT\): exchange filters"):
        venue_rules.check(cfg, ics, rules)
    rules[("binance", "BTCUSDT")] = _rules("BTCBUSD", quote="BUSD")
    with pytest.raises(venue_rules.RulesError, match="instruments quoted in BUSD, USDT: set venues.binance.account_currency"):
        venue_rules.check(cfg, ics, rules)
    src = {("BTC", "USDT"): venue_rules.MarkSource(np.array([6_000_000], np.int64), 0, 2)}
    bal = {"USDT": (Decimal(5), Decimal(0)), "BTC": (Decimal(1), Decimal(0)), "DOGE": (Decimal(0), Decimal(1)),
           "XRP": (Decimal(0), Decimal(0)), "SHIB": (Decimal(3), Decimal(0))}
    assert venue_rules.unvalued_assets(bal, "USDT", src, ()) == ["DOGE", "SHIB"]
    assert venue_rules.unvalued_assets(bal, "USDT", src, ("SHIB",)) == ["DOGE"]
    assert venue_rules.mark_of(src)("BTC", "USDT") == Decimal("60000.00")
    assert venue_rules.mark_of(src)("BNB", "USDT") is None


def test_every_order_carries_the_mode_and_exits_never_expire():
    """The gateway's order parameters: the instrument's selfTradePreventionMode on every order;
    a market order or a protective stop (an exit) asks EXPIRE_MAKER instead of a mode that would
    expire it, so meeting one of our own resting orders never cancels an exit."""
    from bot4d.gateway.binance import BinanceGateway, SymbolInfo
    from bot4d.records import ORDER_COMMAND_DTYPE, SIDE_ASK

    def params(mode, ot, tif=oms.TIF_GTC):
        info = SymbolInfo(0, 0, "BTCUSDT", "BTC", "USDT", 2, 5, stp_mode=mode)
        gw = BinanceGateway(rest_base="http://127.0.0.1:9", ws_base="ws://127.0.0.1:9", api_key="k", secret="s",
                            symbols=[info], boot_id="t", on_reports=lambda a: None)
        rec = np.zeros(1, ORDER_COMMAND_DTYPE)[0]
        rec["side"], rec["qty"], rec["price"], rec["order_type"], rec["tif"] = SIDE_ASK, 100, 6_000_000, ot, tif
        if "stop_price" in ORDER_COMMAND_DTYPE.names:
            rec["stop_price"] = 5_900_000
        p, bad = gw._order_params(rec, info, "b4t-0-1")
        assert bad == 0, bad
        return p.get("selfTradePreventionMode")

    assert params("EXPIRE_BOTH", oms.OT_LIMIT) == "EXPIRE_BOTH"
    assert params("EXPIRE_TAKER", oms.OT_LIMIT, oms.TIF_POST_ONLY) == "EXPIRE_TAKER"
    assert params("EXPIRE_TAKER", oms.OT_MARKET) == "EXPIRE_MAKER"
    assert params("DECREMENT", oms.OT_MARKET) == "DECREMENT"
    assert params(None, oms.OT_LIMIT) is None
    if hasattr(oms, "OT_STOP_LIMIT"):
        assert params("EXPIRE_BOTH", oms.OT_STOP_LIMIT) == "EXPIRE_MAKER"
