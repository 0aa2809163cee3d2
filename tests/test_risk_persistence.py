"""Risk protection that acts in the running daemon and survives its restarts.

First the file format on its own (bot4d.daemon.riskstate), then the real daemon against the
simulated venue over loopback (tests/daemon_harness.py), one stack in order: the day's start equity
is a real valuation; money lost at the venue trips the daily-loss limit; an operator's halt and a
drawdown trip survive SIGKILL and a restart until an admin resumes (an operator cannot); a corrupt
or lost state file starts REDUCING with a log line; SIGTERM does not leave the shutdown's own halt
behind; a first start follows risk.first_start_state.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.daemon import riskstate as R
from bot4d.daemon.app import CONTROL_CODES
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import risk as rk
from bot4d.records import EV_CONTROL, EV_KILL_SWITCH, EV_TRADING_STATE, JOURNAL_EVENT_DTYPE
from tests.daemon_harness import Stack, wait_for

Q = 10 ** rk.QUOTE_SCALE


# --- the file on its own ------------------------------------------------------------------------
def _tripped_shard(shard: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ks = ksk.make_killswitch()
    kcfg = ksk.make_ks_config(max_daily_loss=100)
    ev = np.zeros(4, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    ksk.ks_trip(ks, kcfg, ksk.TRIP_DRAWDOWN, 1234, 5_000, ev, n, shard)
    acct = np.zeros(rk.A_N, np.int64)
    acct[rk.A_DAY] = -1
    rk.update_equity(acct, 1_000 * Q, 7 * rk.DAY_NS + 5)
    rk.update_equity(acct, 900 * Q, 7 * rk.DAY_NS + 6)
    return ks, acct


def _snap(instance: str = "t", shards=(0,)) -> R.RiskSnapshot:
    recs = []
    for s in shards:
        ks, acct = _tripped_shard(s)
        recs.append(R.capture(s, ks, acct))
    return R.RiskSnapshot(instance, 123, "boot01", 0, tuple(recs))


def test_saved_state_round_trips_into_fresh_arrays(tmp_path: Path) -> None:
    path = R.save(tmp_path / "st", _snap())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in sorted((tmp_path / "st").iterdir())] == ["risk-t.initialised", "risk-t.json"]
    body = json.loads(path.read_text())
    assert body["shards"][0]["trading_state"] == "HALTED" and body["shards"][0]["reason"] == "DRAWDOWN"
    got = R.load(tmp_path / "st", "t")
    assert got.kind == "restored" and got.snapshot == _snap()
    ks, acct = ksk.make_killswitch(), np.zeros(rk.A_N, np.int64)
    acct[rk.A_DAY] = -1
    R.restore(got.snapshot.shards[0], ks, acct, equity=True, day=True)
    want_ks, want_acct = _tripped_shard()
    assert np.array_equal(ks[:ksk.K_WIN_REJECTS], want_ks[:ksk.K_WIN_REJECTS])
    assert acct[rk.A_PEAK_EQUITY] == 1_000 * Q and acct[rk.A_DAY_START_EQUITY] == 1_000 * Q and acct[rk.A_DAY] == 7
    # the restored words keep working: the kill switch stays tripped, a resume clears it
    ev, n = np.zeros(4, JOURNAL_EVENT_DTYPE), np.zeros(1, np.int64)
    assert ksk.ks_evaluate(ks, ksk.make_ks_config(max_daily_loss=100), 900 * Q, 1_000 * Q, 1_000 * Q, 0, 0, 0,
                           10_000, ev, n, 0) == ksk.TRIP_NONE and ks[ksk.K_STATE] == ksk.TS_HALTED
    # no temporary file is left behind by the atomic writes
    R.save(tmp_path / "st", _snap())
    assert not [p for p in (tmp_path / "st").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage, why", [
    (lambda b: b.replace(b'"HALTED"', b'"ACTIVE"'), "checksum mismatch"),
    (lambda b: b[: len(b) // 2], "not JSON"),
    (lambda b: b"", "not JSON"),
    (lambda b: b"[]", "not a JSON object"),
])
def test_a_damaged_file_is_refused_and_moved_aside(tmp_path: Path, damage, why: str) -> None:
    path = R.save(tmp_path, _snap())
    path.write_bytes(damage(path.read_bytes()))
    got = R.load(tmp_path, "t")
    assert got.kind == "corrupt" and got.snapshot is None and why in got.message, got.message
    assert not path.exists() and len(list(tmp_path.glob("risk-t.json.corrupt-*"))) == 1


def test_a_valid_file_of_another_instance_or_layout_is_refused(tmp_path: Path) -> None:
    R.save(tmp_path, _snap("other"))
    os.rename(tmp_path / "risk-other.json", tmp_path / "risk-t.json")
    got = R.load(tmp_path, "t")
    assert got.kind == "corrupt" and "saved by instance 'other', this is 't'" in got.message
    # a well-formed file whose content is wrong: an unknown reason, checksum recomputed
    body = json.loads(R.encode(_snap()))
    body.pop("sha256")
    body["shards"][0]["reason"] = "SOLAR_FLARE"
    body["sha256"] = __import__("hashlib").sha256(R._canonical(body)).hexdigest()
    (tmp_path / "risk-t.json").write_text(json.dumps(body))
    got = R.load(tmp_path, "t")
    assert got.kind == "corrupt" and "reason = 'SOLAR_FLARE' is not one of" in got.message


def test_missing_file_is_a_first_start_only_where_nothing_was_ever_saved(tmp_path: Path) -> None:
    assert R.load(tmp_path, "t").kind == "first start"
    R.save(tmp_path, _snap())
    (tmp_path / "risk-t.json").unlink()
    got = R.load(tmp_path, "t")
    assert got.kind == "missing" and "was initialised" in got.message


# --- the daemon ----------------------------------------------------------------------------------
SYM = "BTCUSDT"
SELL_STEP = Decimal("0.3")   # BTC the other account sells per step to push the price down


@pytest.fixture(scope="module")
def stack(request):
    # `nobody` must reach the control socket (operator-but-not-admin check): a 0755 directory
    tmp = Path(tempfile.mkdtemp(prefix="bot4d-risk-"))
    os.chmod(tmp, 0o755)
    s = Stack(tmp, name="rp", taker_account=True)
    # `nobody`'s primary group is made the operator group: it may halt but not resume
    s.config.write_text(s.config.read_text() + '\n[control]\noperator_group = "nogroup"\n'
                        if _nogroup() else s.config.read_text())
    try:
        s.start()
        wait_for(lambda: s.ok("status")["orders_sent"] >= 2, 60, "the market maker to quote")
        yield s
    finally:
        s.close()
        if not request.session.testsfailed:   # else kept: the daemon's log is in it
            shutil.rmtree(tmp, ignore_errors=True)


def _nogroup() -> bool:
    import grp

    try:
        grp.getgrnam("nogroup")
        return True
    except KeyError:
        return False


def state_file(s: Stack) -> Path:
    return R.paths(s.tmp / "state", s.instance)[0]


def risk(s: Stack) -> dict:
    return s.ok("risk")["0"]


def restart(s: Stack, sig: int = signal.SIGKILL) -> None:
    s.stop_daemon(sig)
    s.start_daemon()


def sell_until(s: Stack, done, what: str, steps: int = 30) -> dict:
    """The other account sells BTC at market, step by step, until ``done(risk)``: the daemon's BTC
    (10 BTC of inventory and its quotes) loses value at the venue."""
    for _ in range(steps):
        r = risk(s)
        if done(r):
            return r
        st, body = s.rest("POST", "/api/v3/order", {"symbol": SYM, "side": "SELL", "type": "MARKET",
                                                    "quantity": SELL_STEP}, signed=True, account=s.taker)
        assert st == 200, body
        time.sleep(0.5)
    return wait_for(lambda: (lambda r: r if done(r) else None)(risk(s)), 10, what)


def log_since(s: Stack, mark: int) -> str:
    return s.daemon_log.read_bytes()[mark:].decode(errors="replace")


def test_the_days_start_equity_is_a_full_valuation(stack):
    """Reported: `bot4ctl risk` showed day_start_equity 0E-8 beside a real equity, for good (the
    warm-up recorded the unreconciled account's 0 as the day's start; then quote balances alone)."""
    r = wait_for(lambda: (lambda r: r if r["trading_day_start"] else None)(risk(stack)), 30, "a valuation")
    eq, start, peak = Decimal(r["equity"]), Decimal(r["day_start_equity"]), Decimal(r["peak_equity"])
    # the account holds 100000 USDT, 10 BTC and 100 ETH: about 1 M USDT at the simulator's marks
    assert start > 500_000 and abs(eq - start) < 5_000 and peak >= start, r
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT00:00Z")
    assert r["trading_day_start"] == today
    saved = stack.ok("risk")["saved_state"]
    assert saved["at_start"] == "first start" and saved["save_error"] is None and saved["saved_ns"]
    assert "first start of this instance: starting ACTIVE" in stack.daemon_log.read_text()
    assert R.load(stack.tmp / "state", stack.instance).kind == "restored"


def test_daily_loss_trips_on_the_simulated_venue(stack):
    """Money lost at the venue trips the daily-loss limit: HALTED, journalled with the loss, shown
    by bot4ctl risk and status, and saved."""
    assert risk(stack)["trading_state"] == "ACTIVE"
    j0 = len(stack.journal())
    stack.ok("limits-set", key="max_daily_loss", value="300")
    r = sell_until(stack, lambda r: r["trip_reason"] == "TRIP_DAILY_LOSS", "the daily-loss trip")
    assert r["trading_state"] == "HALTED" and r["tripped"] is True
    assert stack.ok("status")["trading_state"] == {"0": "HALTED"}
    j = stack.journal()[j0:]
    trip = j[(j["kind"] == EV_KILL_SWITCH) & (j["reason"] == ksk.TRIP_DAILY_LOSS)]
    assert len(trip) == 1 and trip[0]["state"] == ksk.TS_HALTED and trip[0]["aux0"] > 300 * Q
    saved = wait_for(lambda: (lambda g: g if g.snapshot.shards[0].reason == ksk.TRIP_DAILY_LOSS else None)(
        R.load(stack.tmp / "state", stack.instance)), 5, "the trip in the saved state")
    assert saved.snapshot.shards[0].trading_state == ksk.TS_HALTED
    # back to trading: a limit the loss is within, and an admin's resume
    stack.ok("limits-set", key="max_daily_loss", value="1000000")
    stack.ok("resume")
    assert risk(stack)["trading_state"] == "ACTIVE"


SYSTEM_PY = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
# a control client that imports nothing of ours, so `nobody` can run it
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(json.dumps({"id": 7, "cmd": sys.argv[2], "args": {}}).encode() + b"\\n")
print(s.makefile().readline().strip())
"""


def _as_nobody(s: Stack, cmd: str) -> dict:
    out = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PY, "-c", CLIENT, s.sock, cmd],
                         capture_output=True, text=True, timeout=20, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_an_operators_halt_survives_sigkill_until_an_admin_resumes(stack):
    assert stack.ok("halt")["0"].endswith("HALTED")
    # saved before the answer: no wait between the halt and the kill
    assert R.load(stack.tmp / "state", stack.instance).snapshot.shards[0].reason == ksk.TRIP_MANUAL
    mark = stack.daemon_log.stat().st_size
    restart(stack)
    r = risk(stack)
    assert (r["trading_state"], r["tripped"], r["trip_reason"]) == ("HALTED", True, "TRIP_MANUAL"), r
    assert stack.ok("status")["trading_state"] == {"0": "HALTED"}
    assert "shard 0 starts HALTED (tripped: MANUAL, plan MANUAL" in log_since(stack, mark)
    time.sleep(1.0)
    # no quotes (protective stops for the positions the other account's sells left may rest)
    quotes = [o for o in stack.venue_open_orders() if "STOP" not in o["type"]]
    assert not quotes, f"a halted daemon quoted after its restart: {quotes}"
    j0 = len(stack.journal())
    can_runuser = os.geteuid() == 0 and shutil.which("runuser") and SYSTEM_PY and _nogroup()
    if can_runuser:
        # an operator may halt, not resume
        refused = _as_nobody(stack, "resume")
        assert not refused["ok"] and "'resume' needs the admin role" in refused["error"], refused
        assert risk(stack)["trading_state"] == "HALTED"
    assert stack.ok("resume")["0"] == "HALTED -> ACTIVE"
    j = stack.journal()[j0:]
    ctl = j[(j["kind"] == EV_CONTROL) & (j["reason"] == CONTROL_CODES["resume"])]
    assert len(ctl) == 1 and ctl[0]["aux0"] == os.getuid()   # only the admin's resume is journalled
    ts = j[j["kind"] == EV_TRADING_STATE]
    assert ts[-1]["reason"] == ksk.RESUME_MANUAL and ts[-1]["state"] == ksk.TS_ACTIVE
    wait_for(stack.venue_open_orders, 30, "quotes after the resume")


def test_a_drawdown_trip_survives_sigkill_until_resume(stack):
    """The limit is lowered at runtime only (limits-set): after the restart the configured 15 %
    holds again, yet the trip stands until an admin resumes, and the peak it was measured from is
    the one restored."""
    stack.ok("limits-set", key="max_drawdown_pct", value="0.01")
    r = sell_until(stack, lambda r: r["trip_reason"] == "TRIP_DRAWDOWN", "the drawdown trip")
    assert r["trading_state"] == "HALTED"
    peak = Decimal(risk(stack)["peak_equity"])
    wait_for(lambda: R.load(stack.tmp / "state", stack.instance).snapshot.shards[0].reason == ksk.TRIP_DRAWDOWN,
             5, "the trip in the saved state")
    restart(stack)
    r = risk(stack)
    assert (r["trading_state"], r["trip_reason"]) == ("HALTED", "TRIP_DRAWDOWN"), r
    assert Decimal(r["peak_equity"]) >= peak and stack.ok("limits")["account"]["max_drawdown_pct"] == "15"
    time.sleep(1.5)   # no cool-off for a loss: still halted
    assert risk(stack)["trading_state"] == "HALTED"
    stack.ok("resume")
    time.sleep(1.0)
    assert risk(stack)["trading_state"] == "ACTIVE"


def _state_then_resume(s: Stack, mark: int, at_start: str, line: str) -> None:
    r = s.ok("risk")
    assert r["0"]["trading_state"] == "REDUCING" and r["saved_state"]["at_start"] == at_start, r
    text = log_since(s, mark)
    assert line in text and "starting REDUCING" in text, text[-2000:]
    # the REDUCING start is itself saved: a second crash does not turn it into ACTIVE
    assert R.load(s.tmp / "state", s.instance).snapshot.shards[0].trading_state == ksk.TS_REDUCING
    s.ok("resume")
    assert s.ok("risk")["0"]["trading_state"] == "ACTIVE"


def test_a_corrupt_state_file_starts_reducing(stack):
    stack.stop_daemon(signal.SIGKILL)
    p = state_file(stack)
    p.write_bytes(p.read_bytes().replace(b'"ACTIVE"', b'"ACTIVF"'))
    mark = stack.daemon_log.stat().st_size
    stack.start_daemon()
    _state_then_resume(stack, mark, "corrupt", f"{p} is corrupt: checksum mismatch")
    assert list(p.parent.glob(p.name + ".corrupt-*"))


def test_a_lost_state_file_starts_reducing(stack):
    stack.stop_daemon(signal.SIGKILL)
    state_file(stack).unlink()
    mark = stack.daemon_log.stat().st_size
    stack.start_daemon()
    _state_then_resume(stack, mark, "missing", "is missing although")


def test_sigterm_does_not_save_the_shutdowns_own_halt(stack):
    assert stack.stop_daemon(signal.SIGTERM) == 0
    assert R.load(stack.tmp / "state", stack.instance).snapshot.shards[0].trading_state == ksk.TS_ACTIVE
    stack.start_daemon()
    assert risk(stack)["trading_state"] == "ACTIVE"


def test_a_first_start_follows_first_start_state(stack):
    """Neither the state nor the marker: a first start. Without first_start_state = "active" it
    trades reduce-only until an admin resumes."""
    stack.stop_daemon(signal.SIGTERM)
    for p in R.paths(stack.tmp / "state", stack.instance):
        p.unlink()
    stack.config.write_text(stack.config.read_text().replace('first_start_state = "active"\n', ""))
    mark = stack.daemon_log.stat().st_size
    stack.start_daemon()
    _state_then_resume(stack, mark, "first start", 'first start of this instance: starting REDUCING '
                                                   '(risk.first_start_state = "reducing")')
