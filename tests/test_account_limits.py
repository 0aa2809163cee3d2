"""Account-wide limits: daily loss, drawdown, position-% and gross exposure hold for the account
across every shard (bot4d.daemon.account), not per shard.

* Kernel level, on two real shards built through the daemon's own code path (real rings and the
  real account area in /dev/shm, time injected, no threads): a shard's equity is the account's
  (quote balances once + every shard's part); nothing is valued, recorded or quoted before every
  shard's holdings have a mark; a loss no shard reaches alone trips both.
* The real processes: the daemon with two shards on two cores, BTCUSDT on shard 0 and ETHUSDT on
  shard 1, against the simulated venue over loopback sockets, watched through bot4ctl and the
  exporter: the second shard's orders over its slice of ``risk.max_gross_exposure`` are refused
  locally and never reach the venue, and when each shard has lost about 60 % of
  ``risk.max_daily_loss`` the account trips and both shards stop opening.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.config import ConfigError, load
from bot4d.daemon import account as acc
from bot4d.daemon import riskstate
from bot4d.daemon import shard_kernel as K
from bot4d.daemon.app import Daemon
from bot4d.daemon.warm import PAPER_RULES
from bot4d.feed.state import LIVE
from bot4d.fixedpoint import to_fixed
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import risk as R
from bot4d.paperkeys import ensure
from bot4d.records import (CMD_PLACE, EV_KILL_SWITCH, EV_ORDER_NEW, EV_RISK_REJECT, MD_CLEAR, MD_FLAG_FRAME_END,
                           MD_LEVEL, MD_SNAPSHOT_END, MD_UPDATE_DTYPE, ORDER_INTENT_DTYPE, SIDE_ASK, SIDE_BID)
from bot4d.venues import binance as vb
from tests.daemon_harness import Raw, Stack, config_doc, config_toml, market_maker, wait_for
from tests.risk_engine import RiskEngine

Q = 10**8   # risk quote units per USDT
CORES = sorted(os.sched_getaffinity(0))
two_cores = pytest.mark.skipif(len(CORES) < 2, reason="two shards need two cores")

# --- the kernel, on two shards ---------------------------------------------------------------------


def kernel_config(tmp: Path, inst: str, cores: list[int], risk: str = "") -> str:
    """The kernel tests' daemon: BTCUSDT on shard 0 and ETHUSDT on the last of ``cores``' shards,
    no journal, no venue behind the URLs; ``risk`` is TOML added to [risk]."""
    mm = dict(half_spread_ticks=10, skew_ticks_per_lot=1, stop_ticks=1000, requote_ticks=1, min_requote_ms=0)
    return config_toml(config_doc(tmp, inst, 1, 1, "paper.key", "paper.secret", {
        "daemon": {"shard_cores": cores, "on_stop": None, "state_dir": str(tmp)},
        "persist": {"enabled": False, "journal_capacity": None},
        "risk": {"max_daily_loss": "1000", "first_start_state": None, "extra": Raw(risk)},
        "venues": {"binance": {"orders_per_second": 1000, "weight_budget_per_min": None}},
        "instruments": {
            "BTCUSDT": {"max_position": "1", "max_notional": "100000", "max_open_orders": None, "band_bps": None,
                        "strategy": market_maker("0.001", "0.01", **mm)},
            "ETHUSDT": {"shard": len(cores) - 1, "max_position": "10", "max_notional": "100000",
                        "max_open_orders": None, "band_bps": None, "strategy": market_maker("0.01", "0.1", **mm)}}}))


ETH_RULES = dict(PAPER_RULES, base="ETH", stepSize=Decimal("0.0001"), minQty=Decimal("0.0001"), qty_scale=4)
BASE = 100_000 * Q     # the quote balances, counted once


@pytest.fixture
def two(tmp_path: Path):
    if len(CORES) < 2:
        pytest.skip("two shards need two cores")
    ensure(tmp_path)
    (tmp_path / "c.toml").write_text(kernel_config(tmp_path, f"ak{os.getpid()}x{time.monotonic_ns() % 10**6}",
                                                   CORES[:2]))
    d = Daemon(load(tmp_path / "c.toml"))
    d.rules[("binance", "BTCUSDT")] = PAPER_RULES
    d.rules[("binance", "ETHUSDT")] = ETH_RULES
    d.table.add(vb.VENUE, "BTCUSDT", 2, 5)
    d.table.add(vb.VENUE, "ETHUSDT", 2, 4)
    d._build()
    for sh in d.shards:   # what reconciliation does before the shards start
        acc.reset(sh.si.acv, BASE)
    yield d
    d.close()


def book(i: int, bid: int, ask: int, recv: int) -> np.ndarray:
    """A snapshot of instrument i: clear, one level per side, end."""
    u = np.zeros(4, MD_UPDATE_DTYPE)
    u["instrument"] = i
    u[0]["kind"] = MD_CLEAR
    u[1]["kind"], u[1]["side"], u[1]["price"], u[1]["qty"] = MD_LEVEL, SIDE_BID, bid, 10_000
    u[2]["kind"], u[2]["side"], u[2]["price"], u[2]["qty"] = MD_LEVEL, SIDE_ASK, ask, 10_000
    u[3]["kind"] = MD_SNAPSHOT_END
    u["recv_ts_ns"] = recv
    u[-1]["flags"] = MD_FLAG_FRAME_END
    return u


CLOCK = [time.time_ns()]


def tick() -> int:
    """Injected time, 1 ms per pass: a slow first call (numba loading its cache) is no stale feed."""
    CLOCK[0] += 1_000_000
    return CLOCK[0]


def feed(d: Daemon, s: int, i: int, bid: int, ask: int) -> None:
    """Instrument i's book to shard s, and one pass of that shard."""
    sh = d.shards[s]
    d.states.state[i] = LIVE
    now = tick()
    sh.rings.ingress.publish(book(i, bid, ask, now))
    K.step(now, *sh._args())


def step(d: Daemon, s: int) -> None:
    K.step(tick(), *d.shards[s]._args())


def quote_units(usdt: str) -> int:
    return to_fixed(Decimal(usdt), 8)


def test_each_shard_measures_the_accounts_equity_and_nothing_opens_before_all_are_valued(two):
    d = two
    s0, s1 = d.shards
    feed(d, 0, 0, 6_000_000, 6_000_100)          # BTC 60000.00 / 60001.00
    # shard 1 has published nothing yet: no valuation of the account, no day start, no quote
    assert s0.rs.acct[R.A_EQUITY] == 0 and s0.rs.acct[R.A_DAY] == -1
    assert len(s0.rings.egress.consume()) == 0
    feed(d, 1, 1, 300_000, 300_010)              # ETH 3000.00 / 3000.10
    want = BASE + quote_units("10") * 60000_50 // 100 + quote_units("100") * 3000_05 // 100
    assert s1.rs.acct[R.A_EQUITY] == want        # its own ETH, shard 0's BTC and the quote balances once
    step(d, 0)
    assert s0.rs.acct[R.A_EQUITY] == want and s0.rs.acct[R.A_DAY_START_EQUITY] == want
    assert s0.rs.acct[R.A_PEAK_EQUITY] == want
    feed(d, 0, 0, 6_000_000, 6_000_100)          # valued now: the market maker quotes
    assert len(s0.rings.egress.consume()) > 0
    rows = acc.read_rows(d.telemetry.account)
    assert [int(r["part"]) for r in rows] == [quote_units("600005"), quote_units("300005")]
    assert all(r["valued"] == 1 and r["pass_ns"] > 0 for r in rows)
    t = acc.summary(d.telemetry.account, BASE)
    assert Decimal(t["equity"]) == Decimal(want) / Q and t["valued"] is True
    assert t["shards"]["1"]["exposure_slice"] is None          # no [risk] max_gross_exposure


def test_a_loss_no_shard_reaches_alone_trips_both(two):
    """max_daily_loss 1000: shard 0's BTC loses 600, the account is within the limit; shard 1's ETH
    loses 600 more: both shards trip on their next pass, with the account's loss."""
    d = two
    feed(d, 0, 0, 6_000_000, 6_000_100)
    feed(d, 1, 1, 300_000, 300_010)
    step(d, 0)
    day0 = int(d.shards[0].rs.acct[R.A_DAY_START_EQUITY])
    feed(d, 0, 0, 5_994_000, 5_994_100)          # BTC -60.00: 10 BTC lose 600
    step(d, 1)
    for sh in d.shards:
        assert sh.rs.ks[ksk.K_STATE] == ksk.TS_ACTIVE, "600 of 1000 lost: no trip"
        assert day0 - sh.rs.acct[R.A_EQUITY] == 600 * Q
    feed(d, 1, 1, 299_400, 299_410)              # ETH -6.00: 100 ETH lose 600
    step(d, 0)
    for sh in d.shards:
        ks = sh.rs.ks
        assert (ks[ksk.K_STATE], ks[ksk.K_REASON]) == (ksk.TS_HALTED, ksk.TRIP_DAILY_LOSS)
        assert ks[ksk.K_DETAIL] == 1200 * Q                  # the account's loss
        r = sh.rings.journal
        ev = r.records[:r.cursor]                             # (small journals never wrap)
        trip = ev[(ev["kind"] == EV_KILL_SWITCH) & (ev["reason"] == ksk.TRIP_DAILY_LOSS)]
        assert len(trip) == 1 and trip[0]["aux0"] == 1200 * Q
    # each shard's own part lost 600 only: the per-shard view of before would never have tripped
    rows = acc.read_rows(d.telemetry.account)
    assert [int(r["part"]) for r in rows] == [quote_units("599405"), quote_units("299405")]


def test_position_pct_and_drawdown_are_measured_on_the_accounts_equity(two):
    """Shard 1 holds 300k of a 1M account: its position limit is 2 % of the account (20k), and a
    drawdown is measured from the account's peak, which shard 0's gain raised."""
    d = two
    d.shards[1].rs.cfg[R.C_MAX_DAILY_LOSS] = 10**6 * Q
    d.shards[1].kcfg[ksk.KC_MAX_DAILY_LOSS] = 10**6 * Q
    feed(d, 0, 0, 6_000_000, 6_000_100)
    feed(d, 1, 1, 300_000, 300_010)
    eq = int(d.shards[1].rs.acct[R.A_EQUITY])
    assert eq > 10**6 * Q
    feed(d, 0, 0, 7_500_000, 7_500_100)          # BTC +15000: the account's peak rises by 150k
    step(d, 1)
    assert d.shards[1].rs.acct[R.A_PEAK_EQUITY] == eq + 150_000 * Q
    feed(d, 0, 0, 6_000_000, 6_000_100)          # back: 150k below a 1.15M peak is 13 % (< 15 %)
    step(d, 1)
    assert d.shards[1].rs.ks[ksk.K_STATE] == ksk.TS_ACTIVE
    feed(d, 1, 1, 285_000, 285_010)              # ETH -5 %: 15k more, 14.3 % ... still within
    feed(d, 0, 0, 5_900_000, 5_900_100)          # BTC -1000: 10k more: 175k of 1.15M > 15 %
    step(d, 1)
    ks = d.shards[1].rs.ks
    assert (ks[ksk.K_STATE], ks[ksk.K_REASON]) == (ksk.TS_HALTED, ksk.TRIP_DRAWDOWN)
    # position-%: 2 % of the account's equity, not of the shard's part
    rs1 = d.shards[1].rs
    rs1.ks[:] = ksk.make_killswitch()            # (back to ACTIVE for the check)
    eng = RiskEngine(rs1, max_batch=4, shard=1)
    st = d.shards[1].st
    pos, oo, ob, osl = (st.positions.qty[K.ACCOUNT], st.open_orders[K.ACCOUNT], st.open_buy_qty[K.ACCOUNT],
                        st.open_sell_qty[K.ACCOUNT])
    it = np.zeros(1, ORDER_INTENT_DTYPE)
    it["command"], it["instrument"], it["side"], it["price"] = CMD_PLACE, 1, SIDE_BID, 285_000
    it["stop_price"] = 280_000
    limit = int(rs1.acct[R.A_EQUITY]) * 200 // 10000          # quote units
    it["qty"] = limit // Q * 10**4 // 2850 + 10**4 // 2850 + 1  # just above 2 % of the account
    rs1.cfg[R.C_MAX_DD_BPS] = 10000
    d_, _ = eng.check(it, pos, oo, ob, osl, d.shards[1].si.mids, tick())
    assert d_.tolist() == [R.REJ_MAX_POSITION]
    it["qty"] = limit // Q * 10**4 // 2850 - 10**4                # 1 ETH below it: far above 2 % of 300k
    d_, _ = eng.check(it, pos, oo, ob, osl, d.shards[1].si.mids, tick())
    assert d_.tolist() == [R.ACCEPT]


def test_the_accounts_peak_and_day_start_survive_a_change_of_shard_count(two):
    """A state saved by a one-shard daemon, started with two shards: every shard starts as the saved
    one, and with the account's peak and day-start equity (they were never a shard's)."""
    d = two
    now = tick()
    day = (now - d.cfg.risk.day_offset_ns) // R.DAY_NS
    rec = riskstate.ShardRisk(shard=0, trading_state=ksk.TS_HALTED, tripped=True, reason=ksk.TRIP_DRAWDOWN,
                              plan=ksk.PLAN_MANUAL, trip_ns=now, detail=5, resume_at_ns=0, trip_count=1, changes=1,
                              peak_equity=1_200_000 * Q, day_start_equity=1_100_000 * Q, day=day)
    riskstate.save(d.cfg.state_dir, riskstate.RiskSnapshot(d.cfg.instance, now, "old", d.cfg.risk.day_offset_ns,
                                                           (rec,)))
    asyncio.run(d._risk_state_start())
    feed(d, 0, 0, 6_000_000, 6_000_100)
    feed(d, 1, 1, 300_000, 300_010)
    for sh in d.shards:
        assert (sh.rs.ks[ksk.K_STATE], sh.rs.ks[ksk.K_REASON]) == (ksk.TS_HALTED, ksk.TRIP_DRAWDOWN)
        assert sh.rs.acct[R.A_PEAK_EQUITY] == 1_200_000 * Q
        assert (sh.rs.acct[R.A_DAY_START_EQUITY], sh.rs.acct[R.A_DAY]) == (1_100_000 * Q, day)
    saved = riskstate.load(d.cfg.state_dir, d.cfg.instance).snapshot
    assert [r.shard for r in saved.shards] == [0, 1] and {r.peak_equity for r in saved.shards} == {1_200_000 * Q}


def test_slices_of_the_accounts_gross_exposure_never_add_up_to_more():
    assert acc.slices(None, None, 3) == [R.INT64_MAX] * 3
    assert acc.slices(1000, None, 3) == [333, 333, 333]
    assert acc.slices(1001, (70, 30), 2) == [700, 300]
    assert sum(acc.slices(10**9 + 7, (33, 33, 34), 3)) <= 10**9 + 7
    with pytest.raises(ValueError, match="adding up to 100"):
        acc.slices(1000, (50, 40), 2)


# --- configuration -----------------------------------------------------------------------------------
def _cfg(tmp_path: Path, risk: str, two_shards: bool = False) -> Path:
    """The kernel tests' configuration with ``risk`` added to [risk], on one shard or two."""
    ensure(tmp_path)
    text = kernel_config(tmp_path, "cfgtest", [CORES[0], CORES[-1]] if two_shards else [CORES[0]], risk)
    p = tmp_path / "a.toml"
    p.write_text(text)
    return p


def test_config_gross_exposure_keys(tmp_path: Path):
    c = load(_cfg(tmp_path, 'max_gross_exposure = "2600.5"'))
    assert c.risk.max_gross_exposure == Decimal("2600.5") and c.risk.gross_exposure_split is None
    assert load(_cfg(tmp_path, "")).risk.max_gross_exposure is None
    for risk, msg in [
        ('max_gross_exposure = "0"', "risk.max_gross_exposure: 0 must be > 0"),
        ('max_gross_exposure = "1e11"', "risk.max_gross_exposure: 1e11 must be <= 10000000000"),
        ("max_gross_exposure = 2600.0", "risk.max_gross_exposure: 2600.0 is a TOML float"),
        ('max_gross_exposure = "1.123456789"', "risk.max_gross_exposure: "),
        ("gross_exposure_split = [100]", "splits risk.max_gross_exposure, which is not set"),
        ('max_gross_exposure = "10"\ngross_exposure_split = [60, 40]',
         "expected an array of 1 percentages, one per entry of daemon.shard_cores"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load(_cfg(tmp_path, risk))


@two_cores
def test_config_gross_exposure_split(tmp_path: Path):
    c = load(_cfg(tmp_path, 'max_gross_exposure = "1000"\ngross_exposure_split = [70, 30]', two_shards=True))
    assert c.risk.gross_exposure_split == (70, 30)
    for risk, msg in [
        ('max_gross_exposure = "10"\ngross_exposure_split = [70, 20]', r"\[70, 20\] adds up to 90, not 100"),
        ('max_gross_exposure = "10"\ngross_exposure_split = [101, -1]',
         r"risk.gross_exposure_split\[0\]: 101 is outside 0..100"),
        ('max_gross_exposure = "10"\ngross_exposure_split = ["50", 50]',
         r"risk.gross_exposure_split\[0\]: expected an integer"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            load(_cfg(tmp_path, risk, two_shards=True))


# --- the real processes: two shards against the simulated venue ---------------------------------------
LOSS_LIMIT = Decimal(20000)
GROSS_LIMIT = Decimal(2600)    # slices of 1300: BTC's 1200 fits, ETH's 1500 does not; 2700 together
NO_PROTECTION = {"protection": {"enabled": False}}
# wide quotes: the price moves below never cross them, so the loss is the holdings' (10 BTC, 100 ETH)
STRATEGIES = {"BTCUSDT": market_maker("0.02", "0.02", 40000), "ETHUSDT": market_maker("0.5", "0.5", 2000)}
EXTRA_RISK = f"""max_gross_exposure = "{GROSS_LIMIT}"
reject_storm = 1000000
[risk.stat_breaker]
enabled = false
"""
# ETHUSDT on a second shard, on the second core
TWO_SHARDS = {"daemon": {"shard_cores": CORES[:2]},
              "instruments": {"BTCUSDT": NO_PROTECTION, "ETHUSDT": {"shard": 1, **NO_PROTECTION}}}


def account(s: Stack) -> dict:
    return s.ok("risk")["account"]


def parts(a: dict) -> dict[str, Decimal]:
    return {k: Decimal(v["contribution"]) for k, v in a["shards"].items()}


@pytest.fixture(scope="module")
def stack():
    if len(CORES) < 2:
        pytest.skip("two shards need two cores")
    tmp = Path(tempfile.mkdtemp(prefix="bot4d-acct-"))
    s = Stack(tmp, name="acct", extra_risk=EXTRA_RISK, strategies=STRATEGIES, config=TWO_SHARDS)
    try:
        s.start()
        s.ok("limits-set", key="max_daily_loss", value=str(LOSS_LIMIT))
        # the day's start is the account's first full valuation; each shard's part then is where
        # its loss is measured from below
        a = wait_for(lambda: (lambda a: a if a["valued"] and Decimal(a["day_start_equity"]) > 0 else None)(
            account(s)), 60, "the account's first valuation")
        s.parts0 = parts(a)
        s.start_exporter()
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


def metric(s: Stack, name: str, **labels: str) -> float:
    """One sample of the exporter's /metrics (the real bot4d-exporter process)."""
    with urllib.request.urlopen(s.metrics_url, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_0-9]+)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == labels:
            return float(m.group(3))
    raise AssertionError(f"{name}{labels} not in the exporter's output: "
                         f"{[x for x in text.splitlines() if x.startswith(name)][:40]}")


def quotes(s: Stack, symbol: str) -> list[dict]:
    """Our resting orders at the venue on ``symbol`` other than protective stops."""
    return [o for o in s.venue_open_orders() if o["symbol"] == symbol and "STOP" not in o["type"]]


def test_the_second_shards_orders_over_its_slice_never_reach_the_venue(stack):
    s = stack
    assert s.ok("shards")["1"]["instruments"] == ["ETHUSDT"]
    wait_for(lambda: quotes(s, "BTCUSDT"), 30, "shard 0's quotes at the venue")
    # shard 1's market maker asks, risk refuses locally, again and again
    j, = wait_for(lambda: (lambda j: (j,) if ((j["kind"] == EV_RISK_REJECT) & (j["reason"] == R.REJ_GROSS_EXPOSURE)).sum()
                           >= 2 else None)(s.journal(1)), 30, "shard 1's gross-exposure refusals")
    rej = j[(j["kind"] == EV_RISK_REJECT) & (j["reason"] == R.REJ_GROSS_EXPOSURE)]
    assert (rej["instrument"] == 1).all() and (rej["aux2"] > 1300 * Q).all()   # its committed exposure after
    assert not (j["kind"] == EV_ORDER_NEW).any()
    assert s.sim_stats()["order_requests"].get("ETHUSDT", 0) == 0, "an ETH order reached the venue"
    assert quotes(s, "ETHUSDT") == []
    a = account(s)
    assert Decimal(a["max_gross_exposure"]) == GROSS_LIMIT
    sh0, sh1 = a["shards"]["0"], a["shards"]["1"]
    assert Decimal(sh0["exposure_slice"]) == Decimal(sh1["exposure_slice"]) == GROSS_LIMIT / 2
    assert 0 < Decimal(sh0["committed_exposure"]) <= GROSS_LIMIT / 2
    assert Decimal(sh1["committed_exposure"]) == 0
    assert Decimal(a["committed_exposure"]) <= GROSS_LIMIT
    # the exporter shows the account's figures and each shard's slice
    wait_for(lambda: metric(s, "bot4d_account_gross_exposure_limit") == float(GROSS_LIMIT), 10, "the exporter")
    assert metric(s, "bot4d_shard_exposure_slice", shard="1") == float(GROSS_LIMIT / 2)
    assert metric(s, "bot4d_account_equity") > 500_000
    assert metric(s, "bot4d_orders_rejected_total", reason="REJ_GROSS_EXPOSURE", shard="1") >= 2
    # an admin raises the limit: shard 1's slice grows at once and its quotes reach the venue
    s.ok("limits-set", key="max_gross_exposure", value="100000")
    wait_for(lambda: quotes(s, "ETHUSDT"), 30, "shard 1's quotes at the venue once its slice allows them")
    assert s.ok("limits")["account"]["max_gross_exposure"] == "100000"
    assert Decimal(account(s)["shards"]["1"]["exposure_slice"]) == 50000


def lost(s: Stack) -> tuple[dict[str, Decimal], dict]:
    """Each shard's loss since the day's start (its part then minus now), and the account."""
    a = account(s)
    now = parts(a)
    return {k: s.parts0[k] - now[k] for k in now}, a


def push_down(s: Stack, symbol: str, shard: str, target: Decimal) -> None:
    """Move ``symbol``'s price down 0.5 % at a time at the venue (its agents re-quote around the new
    price) until the shard has lost ``target``."""
    for _ in range(40):
        before = lost(s)[0][shard]
        if before >= target:
            return
        s.fault("price_jump", symbol=symbol, bps=-50)
        # the daemon marks the new price: the shard's part falls
        wait_for(lambda: lost(s)[0][shard] > before + 500, 15, f"{symbol}'s move in shard {shard}'s part")
    raise AssertionError(f"shard {shard} never lost {target}")


def test_a_daily_loss_no_shard_reaches_alone_trips_the_account(stack):
    s = stack
    risk = s.ok("risk")
    assert risk["0"]["trading_state"] == risk["1"]["trading_state"] == "ACTIVE"
    push_down(s, "BTCUSDT", "0", LOSS_LIMIT * Decimal("0.6"))
    loss, a = lost(s)
    assert LOSS_LIMIT * Decimal("0.6") <= loss["0"] < LOSS_LIMIT
    assert Decimal(a["daily_loss"]) < LOSS_LIMIT
    risk = s.ok("risk")
    assert risk["0"]["trading_state"] == risk["1"]["trading_state"] == "ACTIVE", "one shard's 60 % tripped"
    j0 = {sh: len(s.journal(sh)) for sh in (0, 1)}
    push_down(s, "ETHUSDT", "1", LOSS_LIMIT * Decimal("0.6"))
    risk = wait_for(lambda: (lambda r: r if all(r[k]["trip_reason"] == "TRIP_DAILY_LOSS" for k in "01") else None)(
        s.ok("risk")), 10, "both shards' daily-loss trip")
    loss, a = lost(s)
    assert loss["0"] < LOSS_LIMIT and loss["1"] < LOSS_LIMIT, "a shard reached the limit alone"
    assert Decimal(a["daily_loss"]) > LOSS_LIMIT
    for k in "01":
        assert risk[k]["trading_state"] == "HALTED" and Decimal(risk[k]["equity"]) < Decimal(a["day_start_equity"])
    trips = {}
    for sh in (0, 1):
        j = s.journal(sh)[j0[sh]:]
        t = j[(j["kind"] == EV_KILL_SWITCH) & (j["reason"] == ksk.TRIP_DAILY_LOSS)]
        assert len(t) == 1 and t[0]["aux0"] > int(LOSS_LIMIT) * Q   # journalled with the account's loss
        trips[sh] = int(t[0]["ts_ns"])
    # both stop opening: their quotes are pulled at the venue and no strategy order follows a trip
    wait_for(lambda: not quotes(s, "BTCUSDT") and not quotes(s, "ETHUSDT"), 15, "the quotes pulled")
    time.sleep(1.0)
    for sh in (0, 1):
        j = s.journal(sh)
        late = j[(j["kind"] == EV_ORDER_NEW) & (j["ts_ns"] > trips[sh]) & (j["client_order_id"] < (1 << 61))]
        assert len(late) == 0, f"shard {sh} opened after its trip"
    assert not quotes(s, "BTCUSDT") and not quotes(s, "ETHUSDT")
