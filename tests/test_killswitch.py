"""Kill switch: every trip condition, both recovery plans, and a trip that survives a restart."""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from bot4d.kernels import killswitch as K
from bot4d.records import EV_KILL_SWITCH, EV_TRADING_STATE, JOURNAL_EVENT_DTYPE

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
EQ = 10**14


class KS:
    def __init__(self, **kw) -> None:
        self.ks = K.make_killswitch()
        self.cfg = K.make_ks_config(max_daily_loss=kw.pop("max_daily_loss", 10**12), **kw)
        self.ev = np.zeros(16, JOURNAL_EVENT_DTYPE)
        self.n = np.zeros(1, np.int64)

    def evaluate(self, now=T0, equity=EQ, peak=EQ, day_start=EQ, md=T0, used=0, cap=1024) -> int:
        return K.ks_evaluate(self.ks, self.cfg, equity, peak, day_start, md, used, cap, now,
                             self.ev, self.n, 3)

    def events(self) -> np.ndarray:
        return self.ev[: self.n[0]]

    def state(self) -> str:
        return K.STATE_NAMES[int(self.ks[K.K_STATE])]


def test_healthy_inputs_do_not_trip():
    k = KS()
    assert k.evaluate() == K.TRIP_NONE
    assert k.state() == "ACTIVE" and k.n[0] == 0


@pytest.mark.parametrize(
    "kw, reason, detail",
    [
        (dict(equity=EQ * 8499 // 10000), K.TRIP_DRAWDOWN, EQ - EQ * 8499 // 10000),
        (dict(equity=-5, day_start=-5), K.TRIP_DRAWDOWN, EQ),  # everything lost
        (dict(equity=EQ - 10**12 - 1, peak=EQ, day_start=EQ), K.TRIP_DAILY_LOSS, 10**12 + 1),
        (dict(md=T0 - 5 * S - 1), K.TRIP_STALE_MARKET_DATA, 5 * S + 1),
        (dict(used=922, cap=1024), K.TRIP_JOURNAL_BACKPRESSURE, 922),
    ],
)
def test_measured_trip_conditions(kw, reason, detail):
    k = KS()
    assert k.evaluate(**kw) == reason
    assert k.state() == "HALTED"
    assert k.ks[K.K_REASON] == reason and k.ks[K.K_DETAIL] == detail and k.ks[K.K_TRIP_TS] == T0
    (e,) = k.events()
    assert e["kind"] == EV_KILL_SWITCH and e["reason"] == reason and e["aux0"] == detail
    assert e["state"] == K.TS_HALTED and e["aux3"] == K.TS_ACTIVE and e["shard"] == 3


@pytest.mark.parametrize(
    "kw",
    [
        dict(equity=EQ * 85 // 100, day_start=EQ * 85 // 100),  # exactly 15 % drawdown
        dict(equity=EQ - 10**12),                # exactly the daily loss limit
        dict(md=T0 - 5 * S),                     # exactly the staleness limit
        dict(md=0),                              # feed not started yet
        dict(used=921, cap=1024),                # 921 <= floor(1024 * 0.9)
    ],
)
def test_limits_themselves_do_not_trip(kw):
    k = KS()
    assert k.evaluate(**kw) == K.TRIP_NONE and k.state() == "ACTIVE"


@pytest.mark.parametrize(
    "note, limit_kw, reason",
    [
        (K.NOTE_REJECT, "max_rejects", K.TRIP_REJECT_STORM),
        (K.NOTE_ERROR, "max_errors", K.TRIP_ERROR_STORM),
        (K.NOTE_BREAKER_OPEN, "max_breaker_opens", K.TRIP_BREAKER_STORM),
    ],
)
def test_storms_trip_inside_the_window_only(note, limit_kw, reason):
    k = KS(**{limit_kw: 5, "window_ns": 8 * S})
    # 5 in the window is the limit: fine
    for t in range(5):
        K.ks_note(k.ks, k.cfg, note, 1, T0 + t * S)
    assert k.evaluate(now=T0 + 5 * S, md=T0 + 5 * S) == K.TRIP_NONE
    # the early ones age out of the 8 s window, so 3 more still do not trip at t=12 s
    for t in range(3):
        K.ks_note(k.ks, k.cfg, note, 1, T0 + (10 + t) * S)
    assert K.ks_window(k.ks, k.cfg, note, T0 + 12 * S) < 6
    assert k.evaluate(now=T0 + 12 * S, md=T0 + 12 * S) == K.TRIP_NONE
    # a burst does
    K.ks_note(k.ks, k.cfg, note, 6, T0 + 12 * S)
    assert k.evaluate(now=T0 + 12 * S, md=T0 + 12 * S) == reason
    assert k.state() == "HALTED"


def test_manual_trip_and_manual_resume():
    k = KS()
    assert K.ks_trip(k.ks, k.cfg, K.TRIP_MANUAL, 77, T0, k.ev, k.n, 0)
    assert k.state() == "HALTED" and k.ks[K.K_PLAN] == K.PLAN_MANUAL
    # a manual plan never resumes by itself, however long we wait
    k.evaluate(now=T0 + 10**6 * S, md=T0 + 10**6 * S)
    assert k.state() == "HALTED"
    K.ks_resume(k.ks, K.TS_ACTIVE, T0 + 10**6 * S, k.ev, k.n, 0)
    assert k.state() == "ACTIVE" and k.ks[K.K_TRIPPED] == 0
    kinds = k.events()[["kind", "reason"]].tolist()
    assert kinds == [(EV_KILL_SWITCH, K.TRIP_MANUAL), (EV_TRADING_STATE, K.RESUME_MANUAL)]


def test_drawdown_is_manual_resume_only_by_default():
    k = KS(cooloff_ns=S)
    k.evaluate(equity=EQ // 2, day_start=EQ // 2)
    assert k.ks[K.K_PLAN] == K.PLAN_MANUAL
    k.evaluate(now=T0 + 100 * S, md=T0 + 100 * S, equity=EQ // 2, day_start=EQ // 2)
    assert k.state() == "HALTED" and k.n[0] == 1


def test_auto_cooloff_goes_to_reducing_then_operator_resumes():
    k = KS(cooloff_ns=60 * S)
    assert k.evaluate(md=T0 - 10 * S) == K.TRIP_STALE_MARKET_DATA
    assert k.ks[K.K_PLAN] == K.PLAN_AUTO_COOLOFF and k.ks[K.K_RESUME_AT] == T0 + 60 * S
    k.evaluate(now=T0 + 60 * S - 1, md=T0 + 60 * S - 1)
    assert k.state() == "HALTED"
    k.evaluate(now=T0 + 60 * S, md=T0 + 60 * S)
    assert k.state() == "REDUCING" and k.ks[K.K_TRIPPED] == 0
    e = k.events()[-1]
    assert e["kind"] == EV_TRADING_STATE and e["reason"] == K.RESUME_COOLOFF
    assert e["aux0"] == K.TRIP_STALE_MARKET_DATA and e["state"] == K.TS_REDUCING
    # REDUCING stays until an operator says otherwise; a new condition trips again
    assert k.evaluate(now=T0 + 70 * S, md=T0 + 60 * S) == K.TRIP_STALE_MARKET_DATA
    assert k.state() == "HALTED" and k.ks[K.K_TRIP_COUNT] == 2


def test_first_reason_is_kept_but_manual_upgrades_an_automatic_plan():
    k = KS()
    k.evaluate(md=T0 - 10 * S)
    # another automatic reason does not overwrite the first
    assert not K.ks_trip(k.ks, k.cfg, K.TRIP_ERROR_STORM, 1, T0 + 1, k.ev, k.n, 0)
    assert k.ks[K.K_REASON] == K.TRIP_STALE_MARKET_DATA
    # drawdown's plan is manual: it takes over the stale-data trip, cancelling the cool-off
    assert K.ks_trip(k.ks, k.cfg, K.TRIP_DRAWDOWN, 1, T0 + 1, k.ev, k.n, 0)
    assert k.ks[K.K_REASON] == K.TRIP_DRAWDOWN
    assert k.ks[K.K_PLAN] == K.PLAN_MANUAL and k.ks[K.K_RESUME_AT] == 0
    # while manual, another automatic reason changes nothing
    assert not K.ks_trip(k.ks, k.cfg, K.TRIP_ERROR_STORM, 1, T0 + 2, k.ev, k.n, 0)
    assert k.ks[K.K_REASON] == K.TRIP_DRAWDOWN


def test_trip_survives_restart_through_shared_memory(tmp_path):
    """A new process maps the segment and is still tripped; a copy restored from bytes too."""
    name = f"bot4d-test-ks-{uuid.uuid4().hex[:8]}"
    path = f"/dev/shm/{name}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, K.KS_WORDS * 8)
        mm = mmap.mmap(fd, K.KS_WORDS * 8)
        ks = np.frombuffer(mm, np.int64)
        ks[:] = K.make_killswitch()
        cfg = K.make_ks_config(max_daily_loss=1)
        ev = np.zeros(4, JOURNAL_EVENT_DTYPE)
        n = np.zeros(1, np.int64)
        K.ks_trip(ks, cfg, K.TRIP_MANUAL, 42, T0, ev, n, 0)
        journaled = ks.tobytes()
        del ks
        mm.close()  # this process lets go entirely; only the segment holds the state
        script = textwrap.dedent(f"""
            import mmap, os, numpy as np
            from bot4d.kernels import killswitch as K, risk as R
            from bot4d.records import ORDER_INTENT_DTYPE, CMD_PLACE, CMD_CANCEL
            from tests.risk_engine import RiskEngine
            fd = os.open({path!r}, os.O_RDWR)
            mm = mmap.mmap(fd, {K.KS_WORDS * 8})
            ks = K.attach(mm)
            rs = R.make_risk(1)._replace(ks=ks)
            R.set_instrument(rs, 0, venue=0, price_scale=2, qty_scale=8, max_qty=10**8,
                             max_notional=10**15, max_open_orders=5, band_bps=500)
            R.set_venue_rate(rs, 0, capacity=5, per_second=5, now_ns=0)
            R.update_equity(rs.acct, 10**14, 0)
            eng = RiskEngine(rs, max_batch=2)
            it = np.zeros(2, ORDER_INTENT_DTYPE)
            it['command'] = [CMD_PLACE, CMD_CANCEL]
            it['price'] = 100_00; it['qty'] = 1000; it['stop_price'] = 90_00
            z = np.zeros(1, np.int64)
            d, _ = eng.check(it, z, z, z, z, np.array([100_00], np.int64), 1)
            print(K.STATE_NAMES[int(ks[K.K_STATE])], int(ks[K.K_REASON]), int(ks[K.K_DETAIL]),
                  R.REASON_NAMES[int(d[0])], R.REASON_NAMES[int(d[1])])
        """)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["HALTED", str(K.TRIP_MANUAL), "42", "REJ_HALTED", "ACCEPT"]
        # the journaled copy restores to a tripped array as well
        restored = K.attach(bytearray(journaled))
        assert restored[K.K_STATE] == K.TS_HALTED and restored[K.K_TRIPPED] == 1
    finally:
        os.close(fd)
        os.unlink(path)


def test_attach_refuses_unknown_layouts():
    good = K.make_killswitch()
    bad = good.copy()
    bad[K.K_MAGIC] = 1
    with pytest.raises(ValueError, match="magic"):
        K.attach(bad)
    bad = good.copy()
    bad[K.K_VERSION] = 99
    with pytest.raises(ValueError, match="version 99"):
        K.attach(bad)
    bad = good.copy()
    bad[K.K_STATE] = 7
    with pytest.raises(ValueError, match="trading state 7"):
        K.attach(bad)
    with pytest.raises(ValueError):
        K.attach(bytes(16))
    assert K.attach(good.tobytes())[K.K_STATE] == K.TS_ACTIVE


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="max_daily_loss"):
        K.make_ks_config(max_daily_loss=-1)
    with pytest.raises(ValueError, match="cooloff_ns"):
        K.make_ks_config(max_daily_loss=1, cooloff_ns=1.5)
    with pytest.raises(ValueError, match="window_ns"):
        K.make_ks_config(max_daily_loss=1, window_ns=3)


def test_full_journal_still_halts_and_counts_the_missing_record():
    k = KS()
    ev = np.zeros(0, JOURNAL_EVENT_DTYPE)
    assert K.ks_trip(k.ks, k.cfg, K.TRIP_JOURNAL_BACKPRESSURE, 5, T0, ev, k.n, 0)
    assert k.state() == "HALTED" and k.ks[K.K_REASON] == K.TRIP_JOURNAL_BACKPRESSURE
    assert k.ks[K.K_EVENTS_LOST] == 1 and k.n[0] == 0


def test_stat_breaker_reduces_and_a_halting_trip_still_escalates():
    """TRIP_STAT_BREAKER keeps closing possible (REDUCING, until an operator resumes); a storm
    while reduced still halts, and a second reduce-only trip changes nothing."""
    k = KS(max_errors=3, window_ns=10 * S)
    assert K.ks_trip(k.ks, k.cfg, K.TRIP_STAT_BREAKER, 1, T0, k.ev, k.n, 0)
    assert k.state() == "REDUCING" and k.ks[K.K_PLAN] == K.PLAN_REDUCE and k.ks[K.K_RESUME_AT] == 0
    assert k.events()[-1]["reason"] == K.TRIP_STAT_BREAKER and k.events()[-1]["state"] == K.TS_REDUCING
    assert not K.ks_trip(k.ks, k.cfg, K.TRIP_STAT_BREAKER, 0, T0 + 1, k.ev, k.n, 0)
    assert k.evaluate(now=T0 + 100 * S, md=T0 + 100 * S) == K.TRIP_NONE
    assert k.state() == "REDUCING"                     # no cool-off back to anything
    K.ks_note(k.ks, k.cfg, K.NOTE_ERROR, 4, T0 + 101 * S)
    assert k.evaluate(now=T0 + 101 * S, md=T0 + 101 * S) == K.TRIP_ERROR_STORM
    assert k.state() == "HALTED" and k.ks[K.K_REASON] == K.TRIP_ERROR_STORM
    assert k.events()[-1]["aux3"] == K.TS_REDUCING     # the old state, journalled
