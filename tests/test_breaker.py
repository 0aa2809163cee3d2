"""Circuit breakers: every transition with injected time, and the statistical breaker."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bot4d import errors as E
from bot4d.kernels import breaker as B
from bot4d.records import EV_BREAKER, JOURNAL_EVENT_DTYPE

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
MS = 1_000_000


class Br:
    def __init__(self, **kw) -> None:
        self.br, self.cfg = B.make_breakers(2, **kw)
        self.ev = np.zeros(64, JOURNAL_EVENT_DTYPE)
        self.n = np.zeros(1, np.int64)
        self.i = B.breaker_id(1, B.COMP_ORDER_ENTRY)

    def rec(self, cat, t, lat=MS):
        return B.br_record(self.br, self.cfg, self.i, cat, lat, t, self.ev, self.n, 0)

    def allow(self, t):
        return B.br_allow(self.br, self.cfg, self.i, t, self.ev, self.n, 0)

    def state(self):
        return B.BREAKER_STATE_NAMES[int(self.br[self.i, B.BR_STATE])]

    def last(self):
        return self.ev[self.n[0] - 1]


def test_breaker_ids_are_per_venue_and_component():
    assert B.breaker_id(0, B.COMP_ORDER_ENTRY) == 0
    assert B.breaker_id(0, B.COMP_MARKET_DATA) == 1
    assert B.breaker_id(1, B.COMP_ORDER_ENTRY) == 2


def test_consecutive_failures_open_and_a_success_resets_the_run():
    b = Br(max_consec=3, min_calls=100)
    for t in range(2):
        assert b.rec(E.CAT_RETRY, T0 + t) == B.CLOSED
    b.rec(E.CAT_OK, T0 + 2)
    for t in range(2):
        b.rec(E.CAT_RECONCILE, T0 + 3 + t)
    assert b.state() == "CLOSED"
    assert b.rec(E.CAT_RATE_LIMIT, T0 + 5) == B.OPEN
    e = b.last()
    # a call breaker is about no instrument: its id is in order_id (the journal's validator
    # refuses unknown instruments)
    assert e["kind"] == EV_BREAKER and e["instrument"] == -1 and e["order_id"] == b.i and e["state"] == B.OPEN
    assert e["reason"] == B.BRR_CONSECUTIVE and e["aux0"] == B.CLOSED and e["aux1"] == 3
    assert e["ts_ns"] == T0 + 5
    # other breakers are untouched
    assert (b.br[[0, 1, 3], B.BR_STATE] == B.CLOSED).all()


def test_strategy_rejects_are_not_venue_failures():
    b = Br(max_consec=2, min_calls=2)
    for t in range(10):
        b.rec(E.CAT_REJECT, T0 + t)
    assert b.state() == "CLOSED"
    assert b.br[b.i, B.BR_CAT + E.CAT_REJECT] == 10


def test_error_rate_over_the_sliding_window():
    b = Br(max_consec=100, min_calls=20, max_err_bps=5000, window_ns=10 * S)
    # fail, fail, ok: 66 % failures but never 3 in a row; nothing before 20 calls
    t = T0
    for k in range(19):
        b.rec(E.CAT_RETRY if k % 3 != 2 else E.CAT_OK, t)
        t += 10 * MS
    assert b.state() == "CLOSED"
    b.rec(E.CAT_RETRY, t)
    assert b.state() == "OPEN" and b.last()["reason"] == B.BRR_ERROR_RATE
    assert b.last()["aux1"] == 14 * 10000 // 20


def test_old_failures_age_out_of_the_window():
    b = Br(max_consec=100, min_calls=10, max_err_bps=5000, window_ns=10 * S)
    for k in range(9):
        b.rec(E.CAT_RETRY, T0 + k * MS)
    # 20 s later those 9 failures are outside the window: 1 failure in 10 calls
    for k in range(9):
        b.rec(E.CAT_OK, T0 + 20 * S + k)
    b.rec(E.CAT_RETRY, T0 + 20 * S + 10)
    assert b.state() == "CLOSED"


def test_latency_over_threshold_opens():
    b = Br(slow_ns=100 * MS, max_consec_slow=3)
    b.rec(E.CAT_OK, T0, lat=200 * MS)
    b.rec(E.CAT_OK, T0 + 1, lat=200 * MS)
    b.rec(E.CAT_OK, T0 + 2, lat=50 * MS)       # a fast one resets the run
    b.rec(E.CAT_OK, T0 + 3, lat=200 * MS)
    b.rec(E.CAT_OK, T0 + 4, lat=100 * MS)      # exactly the threshold is not slow
    assert b.state() == "CLOSED"
    b.rec(E.CAT_OK, T0 + 5, lat=101 * MS)
    b.rec(E.CAT_OK, T0 + 6, lat=300 * MS)
    assert b.state() == "CLOSED"
    b.rec(E.CAT_OK, T0 + 7, lat=300 * MS)
    assert b.state() == "OPEN"
    assert b.last()["reason"] == B.BRR_LATENCY and b.last()["aux1"] == 300 * MS


def _open(b: Br, t: int) -> None:
    for k in range(int(b.cfg[b.i, B.BC_MAX_CONSEC])):
        b.rec(E.CAT_RETRY, t)
    assert b.state() == "OPEN"


def test_open_cools_down_into_half_open_with_bounded_probes_then_closes():
    b = Br(cooldown_ns=30 * S, probes=3, probe_ok_to_close=2)
    _open(b, T0)
    assert not b.allow(T0 + 30 * S - 1)
    # a late answer to a call made before the trip changes nothing
    assert b.rec(E.CAT_OK, T0 + S) == B.OPEN
    assert b.allow(T0 + 30 * S)
    assert b.state() == "HALF_OPEN"
    assert b.last()["reason"] == B.BRR_COOLDOWN_ELAPSED and b.last()["aux0"] == B.OPEN
    assert b.allow(T0 + 30 * S) and b.allow(T0 + 30 * S)
    assert not b.allow(T0 + 30 * S + 1)           # the 4th probe is refused
    b.rec(E.CAT_OK, T0 + 31 * S)
    assert b.state() == "HALF_OPEN"
    b.rec(E.CAT_OK, T0 + 31 * S)
    assert b.state() == "CLOSED"
    assert b.last()["reason"] == B.BRR_PROBES_OK and b.last()["aux0"] == B.HALF_OPEN
    assert b.allow(T0 + 31 * S)
    # closing forgot the old failures
    b.rec(E.CAT_RETRY, T0 + 32 * S)
    assert b.state() == "CLOSED"


@pytest.mark.parametrize("cat, lat", [(E.CAT_RETRY, MS), (E.CAT_OK, 10 * S)])
def test_failed_or_slow_probe_reopens_for_a_new_cooldown(cat, lat):
    b = Br(cooldown_ns=30 * S, slow_ns=S)
    _open(b, T0)
    assert b.allow(T0 + 30 * S)
    b.rec(cat, T0 + 31 * S, lat=lat)
    assert b.state() == "OPEN" and b.last()["reason"] == B.BRR_PROBE_FAILED
    assert b.br[b.i, B.BR_OPENED_AT] == T0 + 31 * S and b.br[b.i, B.BR_TRIPS] == 2
    assert not b.allow(T0 + 60 * S)
    assert b.allow(T0 + 61 * S)


def test_rate_limit_hold_opens_at_once_for_the_venues_wait_and_extends_only():
    b = Br(cooldown_ns=30 * S, max_consec=5, probes=1, probe_ok_to_close=1)
    assert B.br_hold(b.br, b.cfg, b.i, T0 + 2 * S, T0, b.ev, b.n, 0) == B.OPEN
    e = b.last()
    assert e["state"] == B.OPEN and e["reason"] == B.BRR_RATE_LIMITED and e["aux1"] == 2 * S
    assert b.br[b.i, B.BR_CAT + E.CAT_RATE_LIMIT] == 1
    # the venue's wait, not the configured cool-down, decides when the probe may go
    assert not b.allow(T0 + 2 * S - 1)
    B.br_hold(b.br, b.cfg, b.i, T0 + S, T0 + S // 2, b.ev, b.n, 0)   # a shorter wait changes nothing
    assert not b.allow(T0 + 2 * S - 1) and b.allow(T0 + 2 * S)
    assert b.state() == "HALF_OPEN"
    # the probe is rate limited again: open again for the new wait, one more trip
    B.br_hold(b.br, b.cfg, b.i, T0 + 5 * S, T0 + 2 * S, b.ev, b.n, 0)
    assert b.state() == "OPEN" and b.br[b.i, B.BR_TRIPS] == 2
    assert b.allow(T0 + 5 * S) and b.rec(E.CAT_OK, T0 + 5 * S) == B.CLOSED


def test_a_probe_that_was_never_sent_gives_its_slot_back():
    b = Br(cooldown_ns=S, probes=1, probe_ok_to_close=1)
    _open(b, T0)
    assert b.allow(T0 + S)
    assert not b.allow(T0 + S)          # the one probe is out
    B.br_release(b.br, b.i)              # ... but it was refused locally before it left
    assert b.allow(T0 + S)
    B.br_release(b.br, b.i)
    B.br_release(b.br, b.i)              # never below zero
    assert b.br[b.i, B.BR_PROBES] == 0
    assert b.state() == "HALF_OPEN"


def test_bad_breaker_config_is_refused():
    with pytest.raises(ValueError, match="probe_ok_to_close"):
        B.make_breakers(1, probes=1, probe_ok_to_close=2)
    with pytest.raises(ValueError, match="cooldown_ns"):
        B.make_breakers(1, cooldown_ns=-1)
    with pytest.raises(ValueError, match="window_ns"):
        B.make_breakers(1, window_ns=5)
    with pytest.raises(ValueError, match="var_limit"):
        B.make_stat_breakers(1, var_limit=0)
    with pytest.raises(ValueError, match="min_samples"):
        B.make_stat_breakers(1, window=10, min_samples=20, var_limit=1)


# --- statistical breaker ------------------------------------------------------------------------
class Stat:
    def __init__(self, **kw) -> None:
        kw.setdefault("var_limit", 10**18)
        self.st, self.ring, self.cfg = B.make_stat_breakers(2, **kw)
        self.ev = np.zeros(16, JOURNAL_EVENT_DTYPE)
        self.n = np.zeros(1, np.int64)

    def feed(self, mid, t, notional=0, i=0):
        return B.stat_update(self.st, self.ring, self.cfg, i, mid, notional, t, self.ev, self.n, 0)


def _wiggle(s: Stat, n: int, t0: int = T0) -> int:
    """Mids alternating +-0.1 %: returns with a known mean (~0) and std (~0.001)."""
    mid = 1_000_000
    for k in range(n):
        mid = mid + 1000 if k % 2 == 0 else mid - 1000
        s.feed(mid, t0 + k * S)
    return mid


def test_zscore_outlier_trips_only_with_enough_history():
    s = Stat(window=50, min_samples=30)
    # an early jump, before 30 returns exist, does not trip
    s.feed(1_000_000, T0)
    s.feed(1_100_000, T0 + 1)
    assert s.st[0, B.SB_STATE] == B.CLOSED
    s = Stat(window=50, min_samples=30)
    mid = _wiggle(s, 40)
    r = s.ring[0, : int(s.st[0, B.SB_COUNT])]
    mean, sd = r.mean(), r.std(ddof=1)
    # a move of 2.9 sigma passes, 3.1 sigma trips
    small = int(mid * (1 + mean + 2.9 * sd))
    assert s.feed(small, T0 + 100 * S) == B.CLOSED
    r = s.ring[0, : int(s.st[0, B.SB_COUNT])]
    mean, sd = r.mean(), r.std(ddof=1)
    big = int(math.ceil(small * (1 + mean + 3.1 * sd)))
    assert s.feed(big, T0 + 101 * S) == B.OPEN
    e = s.ev[s.n[0] - 1]
    assert e["kind"] == EV_BREAKER and e["reason"] == B.BRR_ZSCORE and 3000 < e["aux1"] < 3200


def test_var_limit_trips_with_a_large_position():
    # returns have std ~= 0.001; 99 % VaR of 1e12 quote units ~= 2.326 * 0.001 * 1e12
    s = Stat(window=50, min_samples=30, var_limit=2 * 10**9)
    mid = _wiggle(s, 40)
    assert s.feed(mid + 1000, T0 + 100 * S, notional=10**11) == B.CLOSED
    assert s.feed(mid, T0 + 101 * S, notional=10**12) == B.OPEN
    e = s.ev[s.n[0] - 1]
    assert e["reason"] == B.BRR_VAR and 2 * 10**9 < e["aux1"] < 3 * 10**9


def test_stat_breaker_recloses_after_cooldown_and_ignores_missing_mids():
    s = Stat(window=50, min_samples=30, cooldown_ns=60 * S)
    mid = _wiggle(s, 40)
    s.feed(mid * 2, T0 + 100 * S)
    assert s.st[0, B.SB_STATE] == B.OPEN
    assert s.feed(0, T0 + 200 * S) == B.OPEN        # no mid: nothing learned, nothing changed
    s.feed(mid * 2 + 1000, T0 + 159 * S)
    assert s.st[0, B.SB_STATE] == B.OPEN
    s.feed(mid * 2, T0 + 160 * S)
    assert s.st[0, B.SB_STATE] == B.CLOSED
    assert s.ev[s.n[0] - 1]["reason"] == B.BRR_COOLDOWN_ELAPSED
    assert s.st[1, B.SB_COUNT] == 0                  # instrument 1 untouched


def test_a_full_journal_still_opens_the_breaker_and_counts_the_missing_record():
    b = Br(max_consec=1)
    ev = np.zeros(1, JOURNAL_EVENT_DTYPE)
    n = np.ones(1, np.int64)             # the caller's array is full
    B.br_record(b.br, b.cfg, 3, E.CAT_RETRY, 0, T0, ev, n, 0)
    assert b.br[3, B.BR_STATE] == B.OPEN and b.br[3, B.BR_LOST] == 1 and n[0] == 1


def test_zscore_needs_a_minimum_move_and_reports_z_and_var():
    """In a quiet market one small move is many sigma: min_move_bps keeps it from tripping."""
    s = Stat(window=50, min_samples=30, z_milli=3000, min_move_bps=100)
    mid = 1_000_000
    for k in range(40):                  # +-1 unit: returns of 1e-6, std ~1e-6
        mid = mid + 1 if k % 2 == 0 else mid - 1
        s.feed(mid, T0 + k * S)
    assert s.feed(mid + 50, T0 + 100 * S, notional=10**9) == B.CLOSED   # 50 sigma, 0.5 bps
    assert s.st[0, B.SB_LAST_Z] > 3000 and s.st[0, B.SB_LAST_VAR] > 0
    assert s.feed(mid * 102 // 100, T0 + 101 * S) == B.OPEN              # 2 %: violent
    assert s.ev[s.n[0] - 1]["instrument"] == 0 and s.ev[s.n[0] - 1]["reason"] == B.BRR_ZSCORE
    with pytest.raises(ValueError, match="min_move_bps"):
        B.make_stat_breakers(1, var_limit=1, min_move_bps=10001)
