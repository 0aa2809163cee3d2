"""Configuration keys that had no test of their own, each proven by what a user sees of the running
daemon (docs/config.md names these tests beside the keys).

Real processes on loopback (tests/daemon_harness.py): the simulated venue and the daemon, watched
through bot4ctl, the venue's own view (/sim/stats) and, where the key is about it, the operating
system (a thread's CPU affinity, the sd_notify socket, another Unix user on the control socket).
Four daemon starts (one test class each), each with several keys set:

* ``TestDaemonKeys``: ``[daemon] io_core`` and ``watchdog_interval_s``, ``[control] socket`` and
  ``monitor_group``, credentials from ``$CREDENTIALS_DIRECTORY`` (``api_key_credential``),
  ``[risk.stat_breaker] sample_ms`` and ``[instruments.protection] retry_ms`` (a refused stop is
  not tried again before it).
* ``TestProtectionKeys``: ``default_stop_bps`` and ``limit_offset_bps`` on the stop of a position
  found at start, protection ``enabled = false``, ``[control] admin_group``, ``[daemon] on_stop =
  "leave"``, ``[risk] day_start_utc`` and ``[risk.stat_breaker] enabled = false``.
* ``TestRiskKeys``: ``[risk] max_position_pct`` and ``[[instruments]] max_notional`` refuse the
  quotes before the wire, ``reject_storm`` trips the kill switch on those refusals;
  ``[persist] enabled = false`` and ``journal_capacity``.
* ``TestLimitKeys``: ``[[instruments]] max_open_orders`` and ``band_bps`` refuse before the wire,
  ``[risk] breaker_storm`` trips the kill switch.

And a refusal with a clear message for a bad value of each validated key no other test covers.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.kernels import risk as R
from bot4d.records import EV_ORDER_NEW, EV_RISK_REJECT
from tests.daemon_harness import Stack, market_maker, wait_for
from tests.test_config import BASE, cfgdir, edit, refused  # noqa: F401 (cfgdir is a fixture)
from tests.test_daemon_failures import NotifySocket
from tests.test_risk_persistence import SYSTEM_PY, _as_nobody, _nogroup

CORES = sorted(os.sched_getaffinity(0))
NONE = {"kind": "none"}
CAN_BE_NOBODY = os.geteuid() == 0 and shutil.which("runuser") and SYSTEM_PY and _nogroup()


def public_tmp(prefix: str) -> Path:
    # `nobody` must reach the control socket: a 0755 directory
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)
    return tmp


def venue_account(s: Stack) -> dict:
    """The daemon's account as the venue holds it (costs the daemon no request weight)."""
    return s.sim_stats()["accounts"]["1"]


def venue_stops(s: Stack, symbol: str) -> list[dict]:
    return [o for o in venue_account(s)["open_orders"] if o["symbol"] == symbol and o["type"] == "STOP_LOSS_LIMIT"]


# --- [daemon], [control], credentials, protection.retry_ms ------------------------------------------
@pytest.fixture(scope="class")
def daemon_keys():
    tmp = public_tmp("bot4d-cfgd-")
    creds = tmp / "credentials"
    creds.mkdir()
    io_core = CORES[0] if len(CORES) > 1 else None
    s = Stack(tmp, name="cfgd", sim_args=["--balance", "BTC=10.01"], strategies={"BTCUSDT": NONE, "ETHUSDT": NONE},
              extra_risk="[risk.stat_breaker]\nsample_ms = 100\n",
              config={"daemon": {"io_core": io_core, "watchdog_interval_s": "3600"},
                      "control": {"socket": str(tmp / "ctl" / "bot4d.sock"),
                                  **({"monitor_group": "nogroup"} if _nogroup() else {})},
                      "venues": {"binance": {"api_key_file": None, "api_secret_file": None,
                                             "api_key_credential": "binance-key",
                                             "api_secret_credential": "binance-secret"}},
                      # a refused stop waits ten minutes before the next attempt
                      "instruments": {"BTCUSDT": {"protection": {"retry_ms": 600000}}}})
    for name, src in (("binance-key", s.key_f), ("binance-secret", s.sec_f)):
        shutil.copy(src, creds / name)
        (creds / name).chmod(0o600)
        src.unlink()   # the credential is the only copy the daemon can read
    (tmp / "ctl").mkdir()
    (tmp / "ctl").chmod(0o755)
    s.sock = str(tmp / "ctl" / "bot4d.sock")
    s.io_core = io_core
    note = NotifySocket(str(tmp / "notify.sock"))
    s.notify = note
    try:
        s.start_sim()
        s.fault("reject_stops")        # the first stop the daemon places is refused
        s.start_daemon(env={"CREDENTIALS_DIRECTORY": str(creds), "NOTIFY_SOCKET": note.path})
        yield s
    finally:
        s.close()
        note.close()
        shutil.rmtree(tmp, ignore_errors=True)


class TestDaemonKeys:
    """The daemon with [daemon], [control], credential and retry_ms keys set (one start)."""

    def test_control_socket_and_credentials_directory(self, daemon_keys):
        """[control] socket is where bot4ctl finds the daemon (not <runtime_dir>/control.sock); the
        venue keys come from $CREDENTIALS_DIRECTORY (api_key_credential / api_secret_credential): the
        daemon's signed requests were accepted, so it reconciled and trades."""
        s = daemon_keys
        assert Path(s.sock).is_socket() and not (s.tmp / "control.sock").exists()
        st = s.ok("status")
        assert st["ready"] and st["reconciled"], st
        assert not (s.tmp / "paper.key").exists()

    def test_io_core_pins_the_io_thread(self, daemon_keys):
        """[daemon] io_core: the daemon's io thread (its main thread: feeds, gateway, control socket)
        runs on that core only; the shard on its own core."""
        s = daemon_keys
        if s.io_core is None:
            pytest.skip("io_core must differ from the shard's core: needs two cores")
        status = Path(f"/proc/{s.daemon.pid}/status").read_text()
        allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", status).group(1)
        assert allowed == str(s.io_core), status
        sh = s.ok("shards")["0"]
        assert sh["core"] == CORES[-1] and sh["pinned"] == [CORES[-1]]

    def test_watchdog_interval_s_sets_the_ping_rate(self, daemon_keys):
        """[daemon] watchdog_interval_s = 3600: after READY=1 one WATCHDOG=1 ping, then none for half
        an hour (without the key and without WATCHDOG_USEC the daemon pings twice a second)."""
        note = daemon_keys.notify
        wait_for(lambda: "READY=1" in note.lines(), 30, "READY=1")
        wait_for(lambda: "WATCHDOG=1" in note.lines(), 30, "the first watchdog ping")
        time.sleep(3.0)
        lines = note.lines()
        assert lines.count("WATCHDOG=1") == 1, lines

    @pytest.mark.skipif(not CAN_BE_NOBODY, reason="needs root, runuser, a system python3 and the group nogroup")
    def test_monitor_group_may_read_but_not_steer(self, daemon_keys):
        """[control] monitor_group: a member (here `nobody`, group nogroup) reads status but may not halt."""
        s = daemon_keys
        st = _as_nobody(s, "status")
        assert st["ok"] and st["result"]["instance"] == s.instance, st
        halt = _as_nobody(s, "halt")
        assert not halt["ok"] and "'halt' needs the operator role" in halt["error"], halt
        assert s.ok("status")["trading_state"]["0"] != "HALTED"

    def test_stat_breaker_samples_every_sample_ms(self, daemon_keys):
        """[risk.stat_breaker] enabled (the default), sample_ms = 100: each instrument's mid returns
        accumulate in its breaker (bot4ctl risk), one per sample."""
        b = wait_for(lambda: (b := daemon_keys.ok("risk")["0"]["stat_breakers"])["BTCUSDT"]["returns"] >= 5 and b,
                     30, "returns sampled by the breaker")
        assert b["ETHUSDT"]["returns"] >= 1

    def test_a_refused_stop_waits_retry_ms(self, daemon_keys):
        """[instruments.protection] retry_ms = 600000: the position found at start (0.01 BTC over
        neutral_base) gets a stop, the venue refuses it, the kill switch goes to REDUCING, and no
        second attempt is made while retry_ms runs (tests/test_protective_stops.py shows the default
        500 ms retry putting the stop in place)."""
        s = daemon_keys
        p = wait_for(lambda: (p := s.ok("protection")["BTCUSDT"])["refused"] >= 1 and p, 30, "the refused stop")
        assert Decimal(p["position"]) == Decimal("0.01") and not p["protected"]
        r = s.ok("risk")["0"]
        assert (r["trading_state"], r["trip_reason"]) == ("REDUCING", "TRIP_STOP_REFUSED"), r
        time.sleep(3.0)
        p = s.ok("protection")["BTCUSDT"]
        assert p["refused"] == 1 and p["placed"] == 1 and not p["protected"], p
        assert venue_stops(s, "BTCUSDT") == []


# --- [instruments.protection], [control] admin_group, [daemon] on_stop = "leave"; [risk] day_start_utc,
# [risk.stat_breaker] enabled ------------------------------------------------------------------------
_two_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
DAY_START = _two_hours_ago.strftime("%H:%M")
@pytest.fixture(scope="class")
def protection_keys():
    tmp = public_tmp("bot4d-cfgp-")
    s = Stack(tmp, name="cfgp", sim_args=["--balance", "BTC=10.01", "--balance", "ETH=100.5"], on_stop="leave",
              extra_risk=f'day_start_utc = "{DAY_START}"\n[risk.stat_breaker]\nenabled = false\n',
              strategies={"BTCUSDT": NONE, "ETHUSDT": market_maker("0.02", "0.2", 2000)},
              config={"control": {"admin_group": "nogroup"} if _nogroup() else {},
                      "instruments": {"BTCUSDT": {"protection": {"default_stop_bps": 300, "limit_offset_bps": 100}},
                                      "ETHUSDT": {"protection": {"enabled": False}}}})
    try:
        s.start()
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


class TestProtectionKeys:
    """The daemon with protection, admin_group, on_stop, day_start_utc and stat-breaker keys set (one start)."""

    def test_default_stop_bps_and_limit_offset_bps_place_the_stop(self, protection_keys):
        """A position found at start has no order that named a stop: its stop triggers
        default_stop_bps (300) from its entry price, or from the mark when it has none (a holding
        found at start), and its limit sits limit_offset_bps (100) under the trigger; the venue
        holds exactly that order."""
        s = protection_keys

        def stop():
            p = s.ok("protection")["BTCUSDT"]
            pos = s.ok("positions")["BTCUSDT"]
            v = venue_stops(s, "BTCUSDT")
            if not p["protected"] or len(v) != 1 or Decimal(v[0]["stopPrice"]) != Decimal(p["stop_price"]):
                return None
            return p, pos, v[0]
        p, pos, v = wait_for(stop, 30, "BTCUSDT's stop, the same at the venue")
        ref = Decimal(pos["avg_px"]) or Decimal(pos["mark"])
        trig, limit = Decimal(p["stop_price"]), Decimal(p["limit_price"])
        # 300 bps under the reference (the mark may have moved a little since): not the default 200
        assert ref > 0 and Decimal("0.965") < trig / ref < Decimal("0.975"), (ref, trig)
        assert abs(limit - trig * Decimal("0.99")) <= Decimal("0.01") and limit < trig, (trig, limit)
        assert (Decimal(v["price"]), Decimal(v["qty"]), v["side"]) == (limit, Decimal("0.01"), "SELL"), v

    def test_protection_enabled_false_leaves_the_position_without_a_stop(self, protection_keys):
        s = protection_keys
        wait_for(lambda: s.ok("protection")["BTCUSDT"]["protected"], 30, "BTCUSDT's stop")
        assert Decimal(s.ok("positions")["ETHUSDT"]["qty"]) > 0
        time.sleep(1.0)
        assert venue_stops(s, "ETHUSDT") == []
        assert s.ok("protection")["ETHUSDT"]["placed"] == 0

    @pytest.mark.skipif(not CAN_BE_NOBODY, reason="needs root, runuser, a system python3 and the group nogroup")
    def test_admin_group_may_resume(self, protection_keys):
        """[control] admin_group: a member (here `nobody`) may halt and resume."""
        s = protection_keys
        assert _as_nobody(s, "halt")["ok"]
        assert s.ok("status")["trading_state"]["0"] == "HALTED"
        r = _as_nobody(s, "resume")
        assert r["ok"] and r["result"]["0"] == "HALTED -> ACTIVE", r

    def test_day_start_utc_is_the_trading_days_start(self, protection_keys):
        """[risk] day_start_utc: the trading day of max_daily_loss began at that UTC time (here two
        hours ago, so today or yesterday); its start equity is the first valuation of this run."""
        s = protection_keys
        r = wait_for(lambda: (r := s.ok("risk")["0"])["trading_day_start"] and r, 30, "a valuation")
        assert r["trading_day_start"] == _two_hours_ago.strftime("%Y-%m-%dT%H:%MZ"), r
        assert Decimal(r["day_start_equity"]) > 500_000

    def test_stat_breaker_enabled_false_samples_nothing(self, protection_keys):
        """[risk.stat_breaker] enabled = false: no mid return is ever sampled (bot4ctl risk shows 0
        returns per instrument; test_stat_breaker_samples_every_sample_ms shows them accumulate)."""
        wait_for(lambda: protection_keys.ok("risk")["0"]["trading_day_start"], 30, "a valuation")
        time.sleep(1.0)
        off = protection_keys.ok("risk")["0"]["stat_breakers"]
        assert {sym: b["returns"] for sym, b in off.items()} == {"BTCUSDT": 0, "ETHUSDT": 0}, off

    def test_on_stop_leave_keeps_orders_working_after_sigterm(self, protection_keys):
        """[daemon] on_stop = "leave": at SIGTERM the daemon exits 0 and its quotes stay working at
        the venue (with "cancel", tests/test_daemon_e2e.py shows them cancelled)."""
        s = protection_keys
        quotes = lambda: [o for o in venue_account(s)["open_orders"] if o["type"] != "STOP_LOSS_LIMIT"]  # noqa: E731
        wait_for(quotes, 60, "the ETHUSDT quotes at the venue")
        assert s.stop_daemon(signal.SIGTERM) == 0
        left = quotes()
        assert left and {o["symbol"] for o in left} == {"ETHUSDT"}, left
        assert len(venue_stops(s, "BTCUSDT")) == 1


# --- [risk] max_position_pct, reject_storm; [[instruments]] max_notional; [persist] -------------------
@pytest.fixture(scope="class")
def risk_keys(tmp_path_factory):
    # BTCUSDT quotes 0.01 BTC (hundreds of USDT) against a limit of 0.01 % of an equity of about a
    # million USDT (about 100 USDT); the instrument's own max_position (0.1) allows them. ETHUSDT
    # quotes 0.02 ETH (tens of USDT) over its max_notional of 1 USDT.
    s = Stack(tmp_path_factory.mktemp("cfgr"), name="cfgr",
              strategies={"BTCUSDT": market_maker("0.01", "0.01", 2000), "ETHUSDT": market_maker("0.02", "0.2", 2000)},
              extra_risk='max_position_pct = "0.01"\nreject_storm = 5\n',
              config={"persist": {"enabled": False, "journal_capacity": 8192},
                      "instruments": {"BTCUSDT": {"protection": {"enabled": False}},
                                      "ETHUSDT": {"max_notional": "1", "protection": {"enabled": False}}}})
    try:
        s.start()
        yield s
    finally:
        s.close()


class TestRiskKeys:
    """The daemon with max_position_pct, reject_storm, max_notional and [persist] keys set (one start)."""

    def test_position_pct_and_max_notional_refuse_before_the_wire_and_reject_storm_trips(self, risk_keys):
        """[risk] max_position_pct: every BTCUSDT quote would make its worst-case position more than
        0.01 % of the account's equity: risk refuses it (REJ_MAX_POSITION, journalled).
        [[instruments]] max_notional = "1": every ETHUSDT quote is refused (REJ_MAX_NOTIONAL). The
        venue never sees an order. [risk] reject_storm = 5: the sixth refusal in the window trips the
        kill switch (TRIP_REJECT_STORM, HALTED)."""
        s = risk_keys
        r = wait_for(lambda: (r := s.ok("risk")["0"])["tripped"] and r, 60, "the reject storm")
        assert (r["trading_state"], r["trip_reason"]) == ("HALTED", "TRIP_REJECT_STORM"), r
        assert r["risk_rejects"] > 5
        j = s.journal()
        rej = j[(j["kind"] == EV_RISK_REJECT) & (j["reason"] != R.REJ_HALTED)]
        assert len(rej) > 5
        by_inst = {i: set(np.unique(rej[rej["instrument"] == i]["reason"]).tolist()) for i in (0, 1)}
        assert by_inst[0] <= {R.REJ_MAX_POSITION} and by_inst[1] <= {R.REJ_MAX_NOTIONAL}, by_inst
        assert by_inst[0] or by_inst[1]
        assert not np.any(j["kind"] == EV_ORDER_NEW)
        assert venue_account(s)["open_orders"] == [] and s.ok("status")["orders_sent"] == 0
        assert s.ok("limits")["account"]["max_position_pct"] == "0.01"

    def test_persist_disabled_and_journal_capacity(self, risk_keys):
        """[persist] enabled = false: no bot4d-persist is waited for (status, journal-lag: DISABLED)
        and the journal is removed when the daemon exits; journal_capacity sizes the ring."""
        s = risk_keys
        assert s.ok("status")["persistence"] is False
        lag = s.ok("journal-lag")["0"]
        assert lag["consumer"] == "DISABLED" and lag["persisted"] is None, lag
        ring = Path(lag["ring"])
        from ipc.ring import Ring
        r = Ring.attach(s.instance, "journal-0", readonly=True)
        try:
            assert r.capacity == 8192
        finally:
            r.close()
        assert ring.exists()
        assert s.stop_daemon(signal.SIGTERM) == 0
        assert not ring.exists()


# --- [[instruments]] max_open_orders, band_bps; [risk] breaker_storm ---------------------------------
@pytest.fixture(scope="class")
def limit_keys(tmp_path_factory):
    # BTCUSDT's market maker wants two quotes and may have one open; ETHUSDT's quotes, 20 USDT
    # (about 67 bps) from the mid, are outside a 10 bps band. The refusals are no storm here.
    s = Stack(tmp_path_factory.mktemp("cfgl"), name="cfgl",
              extra_risk='reject_storm = 1000000\nbreaker_storm = 1\n'
                         '[risk.order_entry_breaker]\nmax_consecutive = 1\ncooldown_s = "0.3"\n',
              config={"instruments": {"BTCUSDT": {"max_open_orders": 1, "protection": {"enabled": False}},
                                      "ETHUSDT": {"band_bps": 10, "protection": {"enabled": False}}}})
    try:
        s.start()
        yield s
    finally:
        s.close()


class TestLimitKeys:
    """The daemon with max_open_orders, band_bps and breaker_storm set (one start)."""

    def test_max_open_orders_and_band_bps_refuse_before_the_wire(self, limit_keys):
        """[[instruments]] max_open_orders = 1: BTCUSDT rests one quote at the venue at most, its second is
        refused (REJ_MAX_OPEN_ORDERS); band_bps = 10: every ETHUSDT quote is refused
        (REJ_PRICE_BAND) and none reaches the venue."""
        s = limit_keys

        def rejects():
            j = s.journal()
            r = j[j["kind"] == EV_RISK_REJECT]
            got = {(int(i), int(k)) for i, k in zip(r["instrument"], r["reason"])}
            return got if {(0, R.REJ_MAX_OPEN_ORDERS), (1, R.REJ_PRICE_BAND)} <= got else None
        got = wait_for(rejects, 30, "both refusals in the journal")
        assert {k for i, k in got if i == 1} == {R.REJ_PRICE_BAND}, got
        wait_for(lambda: [o for o in venue_account(s)["open_orders"] if o["symbol"] == "BTCUSDT"], 30,
                 "the BTCUSDT quote at the venue")
        at_venue = venue_account(s)["open_orders"]
        assert len([o for o in at_venue if o["symbol"] == "BTCUSDT"]) <= 1, at_venue
        assert not [o for o in at_venue if o["symbol"] == "ETHUSDT"], at_venue
        j = s.journal()
        assert not np.any((j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 1))

    def test_breaker_storm_trips_the_kill_switch(self, limit_keys):
        """[risk] breaker_storm = 1: the venue answers HTTP 5xx; the order-entry breaker
        (max_consecutive = 1) opens, its probe after cooldown_s meets the next 5xx and opens it
        again: a second open in the window trips the kill switch (TRIP_BREAKER_STORM, HALTED)."""
        s = limit_keys
        s.fault("http_5xx", 6)
        r = wait_for(lambda: (r := s.ok("risk")["0"])["tripped"] and r, 60, "the breaker storm")
        assert (r["trading_state"], r["trip_reason"]) == ("HALTED", "TRIP_BREAKER_STORM"), r
        assert s.ok("status")["venues"]["binance"]["breaker_opened"] >= 2


# --- bad values: refused at load, naming the key ----------------------------------------------------
def _risk(extra: str) -> str:
    return edit(BASE, 'max_daily_loss = "5000"\n', 'max_daily_loss = "5000"\n' + extra + "\n")


def _btc(extra: str) -> str:
    return edit(BASE, 'max_notional = "5000"\n', 'max_notional = "5000"\n' + extra + "\n")


@pytest.mark.parametrize("text,expect", [
    (re.sub(r"shard_cores = \[\d+\]", "shard_cores = []", BASE), "daemon.shard_cores: expected a non-empty array"),
    (edit(BASE, 'state_dir = "state"', 'state_dir = "state"\nio_core = "0"'), "daemon.io_core: expected an integer"),
    (edit(BASE, 'state_dir = "state"', 'state_dir = "state"\nio_core = 100000'),
     "daemon.io_core: core 100000 is not in this process's CPU affinity"),
    (edit(BASE, 'state_dir = "state"', 'state_dir = ""'), "daemon.state_dir: expected a non-empty path string"),
    (edit(BASE, 'runtime_dir = "run"', "runtime_dir = 1"), "daemon.runtime_dir: expected a non-empty path string"),
    (edit(BASE, 'state_dir = "state"', 'state_dir = "state"\nwatchdog_interval_s = "3601"'),
     "daemon.watchdog_interval_s: 3601 must be <= 3600"),
    (BASE + '[control]\nmonitor_group = "Monitors"\n', "control.monitor_group: 'Monitors' is not a valid group name"),
    (BASE + '[control]\noperator_group = ""\n', "control.operator_group: '' is not a valid group name"),
    (_risk("correlation_window = 2"), "risk.correlation_window: 2 is outside 3..10000"),
    (_risk("correlation_window = 10\ncorrelation_min_samples = 11"),
     "risk.correlation_min_samples: 11 is above correlation_window 10"),
    (_risk("correlation_sample_ms = 5"), "risk.correlation_sample_ms: 5 is outside 10..3600000"),
    (_risk("kelly_min_trades = 0"), "risk.kelly_min_trades: 0 is outside 1..1000000"),
    (_risk("breaker_storm = 0"), "risk.breaker_storm: 0 is outside 1..1000000"),
    (_risk('storm_window_s = "0"'), "risk.storm_window_s: 0 must be > 0"),
    (_risk("storm_window_s = 1.5"), "risk.storm_window_s: 1.5 is a TOML float"),
    (_risk('md_stale_s = "86401"'), "risk.md_stale_s: 86401 must be <= 86400"),
    (_risk("[risk.stat_breaker]\nenabled = 1"), "risk.stat_breaker.enabled: expected true or false"),
    (_risk("[risk.stat_breaker]\nsample_ms = 9"), "risk.stat_breaker.sample_ms: 9 is outside 10..3600000"),
    (_risk("[risk.stat_breaker]\nwindow = 2"), "risk.stat_breaker.window: 2 is outside 3..10000"),
    (_risk('[risk.stat_breaker]\nmin_move_pct = "101"'), "risk.stat_breaker.min_move_pct: 101 must be <= 100"),
    (_risk('[risk.stat_breaker]\nvar_z = "0"'), "risk.stat_breaker.var_z: 0 must be > 0"),
    (_risk('[risk.stat_breaker]\ncooldown_s = "0"'), "risk.stat_breaker.cooldown_s: 0 must be > 0"),
    (_risk('[risk.order_entry_breaker]\nerror_rate_pct = "0"'), "risk.order_entry_breaker.error_rate_pct: 0 must be > 0"),
    (_risk("[risk.order_entry_breaker]\nmin_calls = 0"), "risk.order_entry_breaker.min_calls: 0 is outside 1..1000000"),
    (_risk('[risk.order_entry_breaker]\nwindow_s = "3601"'), "risk.order_entry_breaker.window_s: 3601 must be <= 3600"),
    (_risk("[risk.order_entry_breaker]\nslow_ms = 0"), "risk.order_entry_breaker.slow_ms: 0 is outside 1..600000"),
    (_risk("[risk.order_entry_breaker]\nmax_consecutive_slow = 1001"),
     "risk.order_entry_breaker.max_consecutive_slow: 1001 is outside 1..1000"),
    (_risk('[risk.order_entry_breaker]\ncooldown_s = "-1"'), "risk.order_entry_breaker.cooldown_s: -1 must be > 0"),
    (_risk("[risk.order_entry_breaker]\nprobes = 101"), "risk.order_entry_breaker.probes: 101 is outside 1..100"),
    (_btc("[instruments.protection]\nenabled = \"no\""), "instruments[0].protection.enabled: expected true or false"),
    (_btc("[instruments.protection]\ndefault_stop_bps = 0"),
     "instruments[0].protection.default_stop_bps: 0 is outside 1..5000"),
    (_btc("[instruments.protection]\nlimit_offset_bps = 5001"),
     "instruments[0].protection.limit_offset_bps: 5001 is outside 0..5000"),
    (_btc("[instruments.protection]\nretry_ms = 9"), "instruments[0].protection.retry_ms: 9 is outside 10..600000"),
    (_btc("[instruments.protection]\nretry = 100"), "instruments[0].protection.retry: unknown key (did you mean 'retry_ms'?)"),
    (edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "eth"'), "instruments[1].symbol: 'eth' is not a valid symbol"),
    (edit(BASE, 'api_secret_file = "keys/s"', 'api_secret_file = "keys/s"\nweight_budget_per_min = 0'),
     "venues.binance.weight_budget_per_min: 0 is outside 1..6000"),
])
def test_bad_values_are_refused_naming_the_key(cfgdir, text, expect):  # noqa: F811
    msg = refused(cfgdir, text)
    assert expect in msg, msg
