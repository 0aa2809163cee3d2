"""The protection beside pre-trade risk, acting in the running daemon (bot4d/daemon/guards.py):
the correlation cap, the statistical breaker, Kelly sizing, the order-entry breaker and the error
storm. Each test drives the real daemon against the simulated venue over loopback sockets, with
faults injected at the venue (POST /sim/fault), and asserts what an operator sees: `bot4ctl`
(control socket), the exporter (its own process, over HTTP) and the journal ring.

The strategies are Python strategies (bot4d/strategies/pyapi.py) defined here, so that each test
decides exactly which orders are asked for."""
from __future__ import annotations

import subprocess
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot4d.kernels import breaker as B
from bot4d.kernels import killswitch as KS
from bot4d.kernels import oms_state as oms
from bot4d.kernels import risk as rk
from bot4d.records import (EV_BREAKER, EV_KILL_SWITCH, EV_ORDER_NEW, EV_RISK_REJECT, INTENT_FLAG_WANTS_SIZING,
                           JFLAG_INTENT_SHIFT, SIDE_ASK, SIDE_BID)
from bot4d.strategies.pyapi import BUY, SELL
from tests.daemon_harness import PY, ROOT, STRATEGY, Stack, wait_for
from tests.test_config import BASE, cfgdir, edit, refused, write  # noqa: F401 (cfgdir: a fixture)

S = 1_000_000_000


# --- strategies the daemon loads from this module (PYTHONPATH = the checkout) --------------------
def _tick(px: int, tick: int) -> int:
    return px // tick * tick


class BuyOnce:
    """Buys ``qty`` with a marketable IOC until it holds it (a long position to correlate with)."""

    def __init__(self, params, ctx):
        self.qty = ctx.qty(params["qty"])
        self.last = 0

    def on_tick(self, view, ctx):
        if not view.usable or view.ask <= 0 or view.position >= self.qty or view.orders \
                or view.now_ns - self.last < S:
            return []
        self.last = view.now_ns
        return [ctx.place(view.now_ns, BUY, view.ask + 20 * ctx.tick, self.qty,
                          stop=_tick(view.bid * 99 // 100, ctx.tick), tif=oms.TIF_IOC)]


class Probe:
    """Every ``every_ms``: an IOC order 2 % away from the market (it never fills), buy and sell in
    turn; each opens exposure, so each goes through the correlation cap."""

    def __init__(self, params, ctx):
        self.qty = ctx.qty(params["qty"])
        self.every = int(params["every_ms"]) * 1_000_000
        self.last = 0
        self.k = 0

    def on_tick(self, view, ctx):
        if not view.usable or view.bid <= 0 or view.ask <= 0 or view.now_ns - self.last < self.every:
            return []
        self.last = view.now_ns
        self.k += 1
        t = ctx.tick
        if self.k % 2:
            px = _tick(view.bid * 98 // 100, t)
            return [ctx.place(view.now_ns, BUY, px, self.qty, stop=_tick(px * 97 // 100, t), tif=oms.TIF_IOC)]
        px = _tick(view.ask * 102 // 100, t)
        return [ctx.place(view.now_ns, SELL, px, self.qty, stop=_tick(px * 103 // 100, t), tif=oms.TIF_IOC)]


class KellyRounds:
    """Round trips the test makes winners. Flat: once per round a *sized* probe (an IOC far below
    the market: risk sizes it or refuses it), then a marketable buy of ``qty``; long: a resting
    sell ``take_bps`` above the ask, which fills when the test makes the price jump."""

    def __init__(self, params, ctx):
        self.qty = ctx.qty(params["qty"])
        self.cap = ctx.qty(params["sized_cap"])
        self.take = int(params["take_bps"])
        self.rounds = 0          # round trips seen to close
        self.probed = -1         # the round whose probe went out
        self.long = False
        self.last = 0

    def on_tick(self, view, ctx):
        now = view.now_ns
        if not view.usable or view.bid <= 0 or view.ask <= 0 or view.orders or now - self.last < 300_000_000:
            return []
        self.last = now
        t = ctx.tick
        if view.position > 0:
            self.long = True
            px = _tick(view.ask * (10000 + self.take) // 10000, t)
            return [ctx.place(now, SELL, px, view.position, stop=_tick(px * 101 // 100, t))]
        if view.position < 0:
            return []
        if self.long:
            self.long = False
            self.rounds += 1
        if self.probed < self.rounds:
            self.probed = self.rounds
            px = _tick(view.bid * 99 // 100, t)
            return [ctx.place(now, BUY, px, self.cap, stop=_tick(px * 98 // 100, t), tif=oms.TIF_IOC, sized=True)]
        return [ctx.place(now, BUY, view.ask + 20 * t, self.qty, stop=_tick(view.bid * 99 // 100, t),
                          tif=oms.TIF_IOC)]


def _python(cls: str, **params: str) -> str:
    p = "\n".join(f'{k} = "{v}"' for k, v in params.items())
    return f'[instruments.strategy]\nkind = "python"\nclass = "tests.test_risk_wiring:{cls}"\ninterval_ms = 50\n' \
           f"[instruments.strategy.params]\n{p}\n"


NONE = '[instruments.strategy]\nkind = "none"\n'
UNPROTECTED = "[instruments.protection]\nenabled = false\n"


# --- the stack ------------------------------------------------------------------------------------
class RiskStack(Stack):
    """The harness's stack with extra simulator options (``--follow``) and an exporter process."""

    def __init__(self, tmp: Path, *, sim_args: list[str] = (), **kw) -> None:
        super().__init__(tmp, **kw)
        self.sim_args = list(sim_args)

    def start_sim(self) -> None:
        self.sim = subprocess.Popen([PY, "-m", "bot4d.cli", "sim", "--rest-port", str(self.rest_port), "--ws-port",
                                     str(self.ws_port), "--account", str(self.acct_file), *self.sim_args],
                                    stdout=open(self.sim_log, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.rest("GET", "/api/v3/ping")[0] == 200, 30, "the simulated venue", [self.sim])

    def start(self) -> "RiskStack":
        self.start_sim()
        self.start_daemon(env={"PYTHONPATH": str(ROOT)})
        self.start_exporter()
        wait_for(lambda: self.metric("bot4d_up") == 1, 30, "the exporter", self.extra)
        return self

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the exporter's /metrics (None: no such series)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                    return smp.value
        return None

    def risk(self) -> dict:
        return self.ok("risk")["0"]


def _stack(tmp_path_factory, name: str, **kw) -> RiskStack:
    return RiskStack(tmp_path_factory.mktemp(name), name=name, **kw)


# ==================================================================================================
@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    """ETHUSDT's price makes BTCUSDT's relative moves (the simulator's --follow). BTCUSDT buys and
    holds; ETHUSDT probes buy and sell in turn. Correlation and stat breaker sample every 100 ms."""
    s = _stack(tmp_path_factory, "corr", sim_args=["--follow", "ETHUSDT=BTCUSDT"],
               strategies={"BTCUSDT": _python("BuyOnce", qty="0.01"),
                           "ETHUSDT": _python("Probe", qty="0.1", every_ms="400")},
               extra_risk="""correlation_cap = "0.5"
correlation_window = 100
correlation_sample_ms = 100
correlation_min_samples = 20
[risk.stat_breaker]
sample_ms = 100
window = 50
min_samples = 20
z = "8"
min_move_pct = "1"
""")
    try:
        yield s.start()
    finally:
        s.close()


def test_correlated_pair_is_refused_by_the_cap(correlated):
    """Long BTCUSDT; ETHUSDT moves with it. Once the sampled returns show it (above the 0.5 cap),
    an ETHUSDT buy is the same bet again and risk refuses it, naming BTCUSDT; an ETHUSDT sell (a
    hedge) still goes to the venue. bot4ctl risk and the exporter show the correlation."""
    s = correlated
    wait_for(lambda: Decimal(s.ok("positions")["BTCUSDT"]["qty"]) >= Decimal("0.01"), 30, "the BTCUSDT position")

    def refused():
        j = s.journal()
        r = j[(j["kind"] == EV_RISK_REJECT) & (j["reason"] == rk.REJ_CORRELATION)]
        return (r,) if len(r) else None   # (wait_for wants a plain truth value)
    r = wait_for(refused, 30, "an ETHUSDT buy refused by the correlation cap")[0]
    assert (r["instrument"] == 1).all() and (r["side"] == SIDE_BID).all()
    assert (r["aux2"] == 0).all()                    # the blocking instrument: BTCUSDT
    seq0 = int(r["seq"][0])
    view = s.risk()
    c = view["correlation"]["BTCUSDT/ETHUSDT"]
    assert c is not None and c > 0.5, view["correlation"]
    assert view["correlation_samples"] >= 20
    assert s.metric("bot4d_correlation", shard="0", symbol="BTCUSDT", other="ETHUSDT") > 0.5

    def hedge_sent():
        j = s.journal()
        return len(j[(j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 1) & (j["side"] == SIDE_ASK)
                     & (j["seq"] > seq0)])
    wait_for(hedge_sent, 10, "an ETHUSDT sell (a hedge) accepted after the refusal")
    # nothing else refused those buys: every ETHUSDT buy after the cap took hold was refused by it
    j = s.journal()
    later = j[(j["seq"] > seq0) & (j["instrument"] == 1) & (j["side"] == SIDE_BID)]
    assert not len(later[later["kind"] == EV_ORDER_NEW])
    assert s.risk()["trading_state"] == "ACTIVE"


def test_violent_move_trips_the_stat_breaker_to_reducing(correlated):
    """Quiet so far: no statistical breaker opened. BTCUSDT's price jumps 3 % at once (the agents'
    book vanishes, the price gaps): its breaker opens (EV_BREAKER, z-score) and moves the account to
    REDUCING (EV_KILL_SWITCH TRIP_STAT_BREAKER), shown by bot4ctl risk / status and the exporter."""
    s = correlated
    j = s.journal()
    assert not len(j[j["kind"] == EV_BREAKER]), j[j["kind"] == EV_BREAKER]
    assert s.risk()["trading_state"] == "ACTIVE"
    assert s.metric("bot4d_stat_breaker_state", shard="0", symbol="BTCUSDT", state="CLOSED") == 1
    s.fault("price_jump", symbol="BTCUSDT", bps=300)
    wait_for(lambda: s.risk()["trading_state"] == "REDUCING", 20, "the account to go REDUCING")
    view = s.risk()
    assert view["trip_reason"] == "TRIP_STAT_BREAKER", view
    assert view["stat_breakers"]["BTCUSDT"]["state"] == "OPEN" and view["stat_breakers"]["BTCUSDT"]["trips"] == 1
    assert view["stat_breakers"]["BTCUSDT"]["returns"] >= 20
    assert s.ok("status")["trading_state"] == {"0": "REDUCING"}
    j = s.journal()
    br = j[j["kind"] == EV_BREAKER]
    assert len(br) == 1 and br["instrument"][0] == 0 and br["state"][0] == B.OPEN
    assert br["reason"][0] == B.BRR_ZSCORE and br["aux1"][0] > 8000       # z in milli-sigma
    ks = j[(j["kind"] == EV_KILL_SWITCH) & (j["reason"] == KS.TRIP_STAT_BREAKER)]
    assert len(ks) == 1 and ks["state"][0] == KS.TS_REDUCING and ks["aux0"][0] == 0   # the instrument
    wait_for(lambda: s.metric("bot4d_trading_state", shard="0", state="REDUCING") == 1, 10, "the exporter's state")
    assert s.metric("bot4d_stat_breaker_state", shard="0", symbol="BTCUSDT", state="OPEN") == 1
    assert s.metric("bot4d_killswitch_trips_total", shard="0", reason="TRIP_STAT_BREAKER") == 1
    # REDUCING: the ETHUSDT probes (each would open exposure) are refused as such from now on
    wait_for(lambda: len((lambda j: j[(j["kind"] == EV_RISK_REJECT) & (j["reason"] == rk.REJ_REDUCING)])(s.journal())),
             10, "opening orders refused while REDUCING")


# ==================================================================================================
def test_kelly_sizes_after_realised_trades(tmp_path_factory):
    """A strategy asks risk to size its orders. Before two closed trades risk refuses
    (REJ_KELLY_NO_STATS); the test makes two round trips winners (the price jumps through the
    strategy's resting sell); then the sized order goes to the venue with the Kelly quantity:
    equity x kelly_cap / price (both trades won: the fraction is the cap). The protective stop is
    off: its own exits would be round trips of their own (tests/test_protective_stops.py)."""
    s = _stack(tmp_path_factory, "kelly",
               strategies={"BTCUSDT": _python("KellyRounds", qty="0.002", sized_cap="0.05", take_bps="50")
                           + UNPROTECTED, "ETHUSDT": NONE},
               extra_risk="""kelly_cap = "0.0001"
kelly_min_trades = 2
[risk.stat_breaker]
enabled = false
""")
    try:
        s.start()

        def rejects(reason):
            j = s.journal()
            return j[(j["kind"] == EV_RISK_REJECT) & (j["reason"] == reason) & (j["instrument"] == 0)]
        wait_for(lambda: len(rejects(rk.REJ_KELLY_NO_STATS)), 30, "the first sized order refused: no statistics")
        assert int(rejects(rk.REJ_KELLY_NO_STATS)["aux1"][0]) == 0   # the strategy: BTCUSDT's
        for k in range(2):
            def resting_sell():
                return [o for o in s.venue_open_orders() if o["symbol"] == "BTCUSDT" and o["side"] == "SELL"
                        and o["type"] == "LIMIT"]
            def won():
                return s.risk()["kelly"]["BTCUSDT"]["wins"] == k + 1
            wait_for(resting_sell, 30, f"round {k + 1}: the position's resting sell at the venue")
            s.fault("price_jump", symbol="BTCUSDT", bps=200)
            try:
                wait_for(won, 20, f"round {k + 1}: a winning trade")
            except AssertionError:
                # seen once on a loaded machine: the jump met no resting sell (the strategy was
                # re-placing it); a jump through a sell that does rest must make the win
                wait_for(resting_sell, 30, f"round {k + 1}: the position's resting sell, again")
                s.fault("price_jump", symbol="BTCUSDT", bps=200)
                wait_for(won, 30, f"round {k + 1}: a winning trade")
            if k == 0:   # one trade is not enough: the next sized order is refused again
                wait_for(lambda: len(rejects(rk.REJ_KELLY_NO_STATS)) >= 2, 30, "a second refusal")
        kelly = s.risk()["kelly"]["BTCUSDT"]
        assert kelly["trades"] == 2 and kelly["losses"] == 0 and Decimal(kelly["won"]) > 0
        assert kelly["fraction"] == "0.0001"

        def sized():
            j = s.journal()
            new = j[(j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 0)
                    & ((j["aux0"] >> JFLAG_INTENT_SHIFT) & INTENT_FLAG_WANTS_SIZING != 0)]
            return (new[0],) if len(new) else None
        new = wait_for(sized, 30, "a sized order accepted")[0]
        # every refusal came before it, the last one after the first winning trade
        assert (rejects(rk.REJ_KELLY_NO_STATS)["seq"] < new["seq"]).all()
        equity = Decimal(s.risk()["equity"])
        price = Decimal(int(new["price"])) / 100                     # BTCUSDT: price scale 2
        qty = Decimal(int(new["qty"])) / 10**5                       # quantity scale 5
        expect = equity * Decimal("0.0001") / price
        assert Decimal("0.00001") <= qty < Decimal("0.05")           # sized: not the strategy's cap
        assert abs(qty - expect) <= expect * Decimal("0.02"), (qty, expect)
        assert s.metric("bot4d_kelly_trades_total", shard="0", symbol="BTCUSDT", result="win") == 2
        assert s.metric("bot4d_kelly_trades_total", shard="0", symbol="BTCUSDT", result="loss") == 0
        assert s.metric("bot4d_kelly_pnl_total", shard="0", symbol="BTCUSDT", result="win") > 0
    finally:
        s.close()


# ==================================================================================================
@pytest.fixture(scope="module")
def venue_faults(tmp_path_factory):
    """The market maker on both instruments; a breaker that opens after two failures in a row and
    cools down in 1 s; an error storm of more than 4 venue errors in 3 s. Protective stops are off
    here: a stop caught by the injected errors would move the account to REDUCING first, and a
    REDUCING market maker sends nothing the venue could refuse (tests/test_protective_stops.py)."""
    s = _stack(tmp_path_factory, "vfault", strategies={
        "BTCUSDT": STRATEGY.format(qty="0.001", inv="0.01", hs=2000) + UNPROTECTED,
        "ETHUSDT": STRATEGY.format(qty="0.02", inv="0.2", hs=2000) + UNPROTECTED}, extra_risk="""error_storm = 4
storm_window_s = "3"
[risk.order_entry_breaker]
max_consecutive = 2
cooldown_s = "1"
""")
    try:
        s.start()
        wait_for(lambda: s.ok("status")["orders_sent"] >= 4, 60, "the market maker to quote")
        yield s
    finally:
        s.close()


def test_server_errors_open_the_order_entry_breaker(venue_faults):
    """The venue answers the next two requests with HTTP 5xx: the order-entry breaker opens
    (journalled EV_BREAKER, consecutive failures), probes after its cool-down and closes again;
    bot4ctl status shows its trips and reason, the errors reach the shard's storm window (below
    the storm limit: trading goes on)."""
    s = venue_faults
    opened0 = s.ok("status")["venues"]["binance"]["breaker_opened"]
    s.fault("http_5xx", 2)

    def breaker_events():
        j = s.journal()
        return j[j["kind"] == EV_BREAKER]
    ev = wait_for(lambda: (lambda e: (e,) if (e["state"] == B.CLOSED).any() else None)(breaker_events()),
                  30, "the breaker to open and close again")[0]
    first = ev[0]
    assert first["state"] == B.OPEN and first["aux0"] == B.CLOSED and first["reason"] == B.BRR_CONSECUTIVE
    assert first["instrument"] == -1 and first["order_id"] == B.breaker_id(0, B.COMP_ORDER_ENTRY)
    assert ev["state"][1] == B.HALF_OPEN and ev["reason"][1] == B.BRR_COOLDOWN_ELAPSED
    closed = ev[ev["state"] == B.CLOSED][0]
    assert closed["aux0"] == B.HALF_OPEN and closed["reason"] == B.BRR_PROBES_OK
    st = s.ok("status")["venues"]["binance"]
    assert st["breaker"] == "CLOSED" and st["breaker_opened"] >= opened0 + 1 and st["venue_errors"] >= 2
    view = s.risk()
    assert view["venue_errors"] >= 2 and view["breaker_opens_seen"] >= 1
    assert s.metric("bot4d_venue_errors_total", shard="0") >= 2
    wait_for(lambda: s.metric("bot4d_breaker_state", venue="BINANCE", component="order_entry", state="CLOSED") == 1,
             10, "the exporter to show the breaker CLOSED")
    assert view["trading_state"] == "ACTIVE"


def test_venue_rejects_trip_the_error_storm(venue_faults):
    """The venue refuses every order (-2010): more than 4 refusals inside 3 s trip the kill switch
    (TRIP_ERROR_STORM: HALTED, its cool-off plan), journalled and shown by bot4ctl and the exporter."""
    s = venue_faults
    wait_for(lambda: s.risk()["storms"]["venue_errors"]["in_window"] == 0, 10, "the earlier errors to age out")
    trips0 = s.metric("bot4d_killswitch_trips_total", shard="0", reason="TRIP_ERROR_STORM")
    s.fault("reject_orders", 40)
    wait_for(lambda: s.risk()["trading_state"] == "HALTED", 30, "the error storm to halt trading")
    view = s.risk()
    assert view["trip_reason"] == "TRIP_ERROR_STORM", view
    assert view["storms"]["venue_errors"]["trips_above"] == 4
    assert s.ok("status")["trading_state"] == {"0": "HALTED"}
    j = s.journal()
    ks = j[(j["kind"] == EV_KILL_SWITCH) & (j["reason"] == KS.TRIP_ERROR_STORM)]
    assert len(ks) == 1 and ks["state"][0] == KS.TS_HALTED and ks["aux0"][0] > 4
    assert ks["aux1"][0] == KS.PLAN_AUTO_COOLOFF
    wait_for(lambda: s.metric("bot4d_killswitch_trips_total", shard="0", reason="TRIP_ERROR_STORM") == trips0 + 1,
             10, "the exporter's trip count")
    assert s.metric("bot4d_trading_state", shard="0", state="HALTED") == 1
    assert s.metric("bot4d_storm_window_events", shard="0", kind="venue_errors") is not None


# ==================================================================================================
def _with_risk(extra: str) -> str:
    """tests/test_config.py's valid file with more [risk] keys (and sub-tables) at the end of [risk]."""
    return edit(BASE, 'max_daily_loss = "5000"\n', f'max_daily_loss = "5000"\n{extra}\n')


@pytest.mark.parametrize("risk, error", [
    ("correlation_window = 50\ncorrelation_min_samples = 60", "risk.correlation_min_samples: 60 is above"),
    ("correlation_sample_ms = 5", "risk.correlation_sample_ms: 5 is outside 10..3600000"),
    ("storm_window_s = 0.5", "risk.storm_window_s: 0.5 is a TOML float"),
    ("breaker_storm = 0", "risk.breaker_storm: 0 is outside"),
    ("[risk.stat_breaker]\nwindow = 10\nmin_samples = 20", "risk.stat_breaker.min_samples: 20 is above window 10"),
    ("[risk.stat_breaker]\nz = \"0\"", "risk.stat_breaker.z: 0 must be > 0"),
    ("[risk.stat_breaker]\nzscore = \"3\"", "risk.stat_breaker.zscore: unknown key"),
    ("[risk.stat_breaker]\nvar_limit = \"-1\"", "risk.stat_breaker.var_limit: -1 must be > 0"),
    ("[risk.order_entry_breaker]\nprobes = 1\nprobes_to_close = 2", "risk.order_entry_breaker.probes_to_close: 2 is outside 1..1"),
    ("[risk.order_entry_breaker]\nmax_consecutive = true", "expected an integer, got boolean"),
])
def test_bad_protection_keys_are_refused_naming_the_key(cfgdir, risk, error):
    assert error in refused(cfgdir, _with_risk(risk))


def test_protection_keys_reach_the_kernels_and_reload_except_windows(cfgdir):
    import dataclasses

    from bot4d.config import load, reloadable_changes
    from bot4d.daemon import guards as G

    c = load(write(cfgdir, _with_risk('correlation_sample_ms = 250\nkelly_min_trades = 7\nstorm_window_s = "2.5"\n'
                        '[risk.stat_breaker]\nz = "4.5"\nmin_move_pct = "0.25"\n'
                        '[risk.order_entry_breaker]\nmax_consecutive = 3\ncooldown_s = "1.5"')))
    r = c.risk
    assert (r.kelly_min_trades, r.storm_window_ns) == (7, 2_500_000_000)
    assert r.order_entry_breaker.kernel_args()["max_consec"] == 3
    assert r.order_entry_breaker.kernel_args()["cooldown_ns"] == 1_500_000_000
    g = G.make_guards(1, [0], r, G.make_health(1), 0)
    assert g.cfg[G.G_CORR_SAMPLE_NS] == 250_000_000 and g.cring.shape == (300, 1)
    assert g.scfg[B.SBC_Z_MILLI] == 4500 and g.scfg[B.SBC_MIN_MOVE_BPS] == 25
    assert g.scfg[B.SBC_VAR_LIMIT] == 5000 * 10**8           # the daily-loss limit by default
    new = dataclasses.replace(c, risk=dataclasses.replace(
        r, correlation_window=400, stat_breaker=dataclasses.replace(r.stat_breaker, z=Decimal(5), window=10)))
    assert reloadable_changes(c, new) == (["risk.stat_breaker.z"],
                                          ["risk.correlation_window", "risk.stat_breaker.window"])
