"""Circuit breakers per venue and component, and a statistical breaker on returns.

**Call breakers** (order entry, market data; one row per (venue, component), see
:func:`breaker_id`) are CLOSED, OPEN or HALF_OPEN:

* CLOSED -> OPEN when BC_MAX_CONSEC failures follow one another, when the failure rate inside the
  sliding window (BC_WINDOW_NS, at least BC_MIN_CALLS calls) exceeds BC_MAX_ERR_BPS, or when
  BC_MAX_CONSEC_SLOW calls in a row took longer than BC_SLOW_NS.
* OPEN -> HALF_OPEN once BC_COOLDOWN_NS of injected time has passed (noticed by :func:`br_allow`).
* HALF_OPEN lets through at most BC_PROBES probe calls; BC_PROBE_OK_TO_CLOSE good ones close it,
  one failed (or slow) probe opens it again for a new cool-down. A probe that was admitted but
  never made (the caller refused it locally) gives its slot back (:func:`br_release`).
* The venue itself may say how long to stay away (a rate limit's Retry-After): :func:`br_hold`
  opens the breaker at once (BRR_RATE_LIMITED) until then, or extends an open one.

The daemon's order gateway keeps one row per venue for its order entry (``bot4d.gateway.binance``:
every REST call goes through :func:`br_allow` and reports its outcome); the breaker's state is in
``bot4ctl status`` and ``bot4d_breaker_state``.

Outcomes are reported with an error *category* from :mod:`bot4d.errors` (CAT_OK for success).
Only categories that speak about the venue's health count as failures (transient/server errors,
unknown outcomes, rate limiting, auth/halt); a reject that is the strategy's own fault
(insufficient balance, a filter) means the venue answered and counts as a success. Per-category
counts are kept in the row for monitors.

**Statistical breaker** (one per instrument): each mid-price sample gives a simple return
``r = (mid - prev) / prev`` (a float statistic; prices stay int64). It trips when
``|r - mean| / std`` over the previous window exceeds SBC_Z_MILLI/1000 (default 3 sigma), or when
the parametric one-period VaR of the current position, ``VaR = z_q * std * |position notional|``
(``z_q`` = SBC_VAR_Z_MILLI/1000, default 2.326 for 99 %, std over the window including the new
return, notional in quote units), exceeds SBC_VAR_LIMIT. It re-closes after SBC_COOLDOWN_NS.

A z-score trip also needs the return to be at least SBC_MIN_MOVE_BPS away from the mean: in a quiet
market (a mid that hardly moves) the standard deviation is tiny and an ordinary one-tick move is
many sigma. The daemon samples every instrument's mid at a fixed cadence and trips its kill switch
to REDUCING when a breaker opens (``bot4d.daemon.guards``).

Every state change is an EV_BREAKER record in the caller's journal array (give it room for two
records per call; if it is full the change still happens, because a breaker must open even when
the journal cannot keep up, and BR_LOST / SB_LOST count the records that could not be written):
``instrument`` = the instrument (statistical) or -1 (call breaker: ``order_id`` = its breaker id),
``state`` = new state, ``reason`` = BRR_*, ``aux0`` = old state, ``aux1`` = the measured value:
count, error rate in bps, latency ns, ns to wait, z in milli-sigma or VaR in quote units.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from bot4d.errors import CAT_HALT, CAT_OK, CAT_RATE_LIMIT, CAT_RECONCILE, CAT_RETRY, N_CATEGORIES
from bot4d.jitcache import helper, kernel
from bot4d.kernels.risk_window import win_add, win_clear, win_sum
from bot4d.records import EV_BREAKER

CLOSED = 0
OPEN = 1
HALF_OPEN = 2
BREAKER_STATE_NAMES = {CLOSED: "CLOSED", OPEN: "OPEN", HALF_OPEN: "HALF_OPEN"}

COMP_ORDER_ENTRY = 0
COMP_MARKET_DATA = 1
N_COMPONENTS = 2

BRR_CONSECUTIVE = 1
BRR_ERROR_RATE = 2
BRR_LATENCY = 3
BRR_PROBE_FAILED = 4
BRR_COOLDOWN_ELAPSED = 5
BRR_PROBES_OK = 6
BRR_ZSCORE = 7
BRR_VAR = 8
BRR_RATE_LIMITED = 10    # the venue said how long to stay away (9 was an operator reset, removed)

BR_NB = 10  # sliding-window buckets

# --- call breaker row ---------------------------------------------------------------------------
BR_STATE = 0
BR_CONSEC_FAIL = 1
BR_CONSEC_SLOW = 2
BR_OPENED_AT = 3
BR_PROBES = 4
BR_PROBE_OK = 5
BR_REASON = 6
BR_TRIPS = 7
BR_LOST = 8       # state changes whose journal record did not fit the caller's array
BR_OPEN_UNTIL = 9  # while OPEN: the cool-down (or the venue's wait) ends here
BR_WIN_CALLS = 10
BR_WIN_FAILS = BR_WIN_CALLS + 2 * BR_NB
BR_CAT = BR_WIN_FAILS + 2 * BR_NB
BR_N = BR_CAT + N_CATEGORIES

BC_MAX_CONSEC = 0
BC_WINDOW_NS = 1
BC_MIN_CALLS = 2
BC_MAX_ERR_BPS = 3
BC_SLOW_NS = 4
BC_MAX_CONSEC_SLOW = 5
BC_COOLDOWN_NS = 6
BC_PROBES = 7
BC_PROBE_OK_TO_CLOSE = 8
BC_N = 9


def breaker_id(venue: int, component: int) -> int:
    return venue * N_COMPONENTS + component


def make_breakers(n_venues: int, *, max_consec: int = 5, window_ns: int = 10_000_000_000,
                  min_calls: int = 20, max_err_bps: int = 5000, slow_ns: int = 2_000_000_000,
                  max_consec_slow: int = 3, cooldown_ns: int = 30_000_000_000, probes: int = 3,
                  probe_ok_to_close: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(state, config) for every venue x component, all CLOSED."""
    vals = dict(max_consec=max_consec, window_ns=window_ns, min_calls=min_calls,
                max_err_bps=max_err_bps, slow_ns=slow_ns, max_consec_slow=max_consec_slow,
                cooldown_ns=cooldown_ns, probes=probes, probe_ok_to_close=probe_ok_to_close)
    for k, v in vals.items():
        if not isinstance(v, int) or v < 0 or v >= 1 << 63:
            raise ValueError(f"{k}={v!r} must be a non-negative int64")
    if window_ns < BR_NB:
        raise ValueError(f"window_ns must be at least {BR_NB}")
    if probe_ok_to_close > probes or probes == 0:
        raise ValueError("need 1 <= probe_ok_to_close <= probes")
    n = n_venues * N_COMPONENTS
    br = np.zeros((n, BR_N), np.int64)
    for i in range(n):
        win_clear(br[i], BR_WIN_CALLS, BR_NB)
        win_clear(br[i], BR_WIN_FAILS, BR_NB)
    cfg = np.zeros((n, BC_N), np.int64)
    cfg[:, BC_MAX_CONSEC] = max_consec
    cfg[:, BC_WINDOW_NS] = window_ns
    cfg[:, BC_MIN_CALLS] = min_calls
    cfg[:, BC_MAX_ERR_BPS] = max_err_bps
    cfg[:, BC_SLOW_NS] = slow_ns
    cfg[:, BC_MAX_CONSEC_SLOW] = max_consec_slow
    cfg[:, BC_COOLDOWN_NS] = cooldown_ns
    cfg[:, BC_PROBES] = probes
    cfg[:, BC_PROBE_OK_TO_CLOSE] = probe_ok_to_close
    return br, cfg


@helper
def _bev(ev, ev_count, instrument, ident, new_state, old_state, reason, detail, now_ns, shard):
    """Append one EV_BREAKER record; False when the array is full (the caller counts the loss:
    the state change itself is kept, a breaker must open even when the journal cannot keep up)."""
    n = ev_count[0]
    if n >= ev.shape[0]:
        return False
    e = ev[n]
    e["seq"] = 0
    e["ts_ns"] = now_ns
    e["kind"] = EV_BREAKER
    e["shard"] = shard
    e["instrument"] = instrument
    e["order_id"] = ident
    e["client_order_id"] = 0
    e["side"] = 0
    e["order_type"] = 0
    e["tif"] = 0
    e["state"] = new_state
    e["reason"] = reason
    e["price"] = 0
    e["qty"] = 0
    e["filled_qty"] = 0
    e["fee"] = 0
    e["stop_price"] = 0
    e["aux0"] = old_state
    e["aux1"] = detail
    e["aux2"] = 0
    e["aux3"] = 0
    e["aux4"] = 0
    ev_count[0] = n + 1
    return True


@helper
def _set(br, i, new_state, reason, detail, now_ns, ev, ev_count, shard, open_until):
    old = br[i, BR_STATE]
    br[i, BR_STATE] = new_state
    br[i, BR_REASON] = reason
    if new_state == OPEN:
        br[i, BR_OPENED_AT] = now_ns
        br[i, BR_OPEN_UNTIL] = open_until
        br[i, BR_TRIPS] += 1
    br[i, BR_PROBES] = 0
    br[i, BR_PROBE_OK] = 0
    br[i, BR_CONSEC_FAIL] = 0
    br[i, BR_CONSEC_SLOW] = 0
    if new_state == CLOSED:
        win_clear(br[i], BR_WIN_CALLS, BR_NB)
        win_clear(br[i], BR_WIN_FAILS, BR_NB)
    if not _bev(ev, ev_count, -1, i, new_state, old, reason, detail, now_ns, shard):
        br[i, BR_LOST] += 1


@helper
def _trip(br, cfg, i, reason, detail, now_ns, ev, ev_count, shard):
    _set(br, i, OPEN, reason, detail, now_ns, ev, ev_count, shard, now_ns + cfg[i, BC_COOLDOWN_NS])


@kernel
def br_allow(br, cfg, i, now_ns, ev, ev_count, shard):
    """May a call go through breaker ``i`` now? Counts half-open probes."""
    st = br[i, BR_STATE]
    if st == CLOSED:
        return True
    if st == OPEN:
        if now_ns < br[i, BR_OPEN_UNTIL]:
            return False
        _set(br, i, HALF_OPEN, BRR_COOLDOWN_ELAPSED, now_ns - br[i, BR_OPENED_AT], now_ns, ev,
             ev_count, shard, 0)
    if br[i, BR_PROBES] >= cfg[i, BC_PROBES]:
        return False
    br[i, BR_PROBES] += 1
    return True


@kernel
def br_release(br, i):
    """A call :func:`br_allow` admitted was not made (refused locally before it left): in
    HALF_OPEN its probe slot is free again, or the breaker would wait for an answer never coming."""
    if br[i, BR_STATE] == HALF_OPEN and br[i, BR_PROBES] > br[i, BR_PROBE_OK]:
        br[i, BR_PROBES] -= 1


@kernel
def br_hold(br, cfg, i, until_ns, now_ns, ev, ev_count, shard):
    """The venue asked us to stay away until ``until_ns`` (rate limited, with its Retry-After):
    open now (a probe that earned this fails), or keep an open breaker open at least that long.
    Returns the state afterwards (OPEN)."""
    if 0 <= CAT_RATE_LIMIT < br.shape[1] - BR_CAT:
        br[i, BR_CAT + CAT_RATE_LIMIT] += 1
    if br[i, BR_STATE] == OPEN:
        if until_ns > br[i, BR_OPEN_UNTIL]:
            br[i, BR_OPEN_UNTIL] = until_ns
    else:
        _set(br, i, OPEN, BRR_RATE_LIMITED, until_ns - now_ns, now_ns, ev, ev_count, shard, until_ns)
    return br[i, BR_STATE]


@nb.njit(cache=True, nogil=True, inline="always")
def is_failure(category):
    return (category == CAT_RETRY or category == CAT_RECONCILE or category == CAT_RATE_LIMIT
            or category == CAT_HALT)


@kernel
def br_record(br, cfg, i, category, latency_ns, now_ns, ev, ev_count, shard):
    """Report one call's outcome; returns the breaker's state afterwards."""
    if 0 <= category < br.shape[1] - BR_CAT:
        br[i, BR_CAT + category] += 1
    fail = is_failure(category)
    slow = latency_ns > cfg[i, BC_SLOW_NS]
    st = br[i, BR_STATE]
    if st == OPEN:
        return st  # a late answer to a call made before the trip: nothing to learn
    if st == HALF_OPEN:
        if fail:
            _trip(br, cfg, i, BRR_PROBE_FAILED, category, now_ns, ev, ev_count, shard)
        elif slow:
            _trip(br, cfg, i, BRR_PROBE_FAILED, latency_ns, now_ns, ev, ev_count, shard)
        else:
            br[i, BR_PROBE_OK] += 1
            if br[i, BR_PROBE_OK] >= cfg[i, BC_PROBE_OK_TO_CLOSE]:
                _set(br, i, CLOSED, BRR_PROBES_OK, br[i, BR_PROBE_OK], now_ns, ev, ev_count, shard, 0)
        return br[i, BR_STATE]
    width = cfg[i, BC_WINDOW_NS] // BR_NB
    row = br[i]
    win_add(row, BR_WIN_CALLS, BR_NB, width, now_ns, 1)
    if fail:
        win_add(row, BR_WIN_FAILS, BR_NB, width, now_ns, 1)
        br[i, BR_CONSEC_FAIL] += 1
    else:
        br[i, BR_CONSEC_FAIL] = 0
    br[i, BR_CONSEC_SLOW] = br[i, BR_CONSEC_SLOW] + 1 if slow else 0
    if fail and br[i, BR_CONSEC_FAIL] >= cfg[i, BC_MAX_CONSEC]:
        _trip(br, cfg, i, BRR_CONSECUTIVE, br[i, BR_CONSEC_FAIL], now_ns, ev, ev_count, shard)
    elif slow and br[i, BR_CONSEC_SLOW] >= cfg[i, BC_MAX_CONSEC_SLOW]:
        _trip(br, cfg, i, BRR_LATENCY, latency_ns, now_ns, ev, ev_count, shard)
    elif fail:
        calls = win_sum(row, BR_WIN_CALLS, BR_NB, width, now_ns)
        if calls >= cfg[i, BC_MIN_CALLS] and calls > 0:
            fails = win_sum(row, BR_WIN_FAILS, BR_NB, width, now_ns)
            bps = fails * 10000 // calls
            if bps > cfg[i, BC_MAX_ERR_BPS]:
                _trip(br, cfg, i, BRR_ERROR_RATE, bps, now_ns, ev, ev_count, shard)
    return br[i, BR_STATE]


# --- statistical breaker ------------------------------------------------------------------------
SB_STATE = 0
SB_COUNT = 1      # returns in the ring (<= window)
SB_HEAD = 2       # next slot to write
SB_LAST_MID = 3
SB_OPENED_AT = 4
SB_REASON = 5
SB_TRIPS = 6
SB_LOST = 7       # state changes whose journal record did not fit
SB_LAST_Z = 8     # |z| of the latest return in milli-sigma (0 before min_samples; monitors)
SB_LAST_VAR = 9   # the latest VaR of the position, quote units (monitors)
SB_N = 10

SBC_Z_MILLI = 0
SBC_MIN_SAMPLES = 1
SBC_VAR_Z_MILLI = 2
SBC_VAR_LIMIT = 3    # quote units
SBC_COOLDOWN_NS = 4
SBC_MIN_MOVE_BPS = 5  # a z-score trip also needs |r - mean| >= this many bps
SBC_N = 6


def stat_config(window: int, *, z_milli: int = 3000, min_samples: int = 30, var_z_milli: int = 2326,
                var_limit: int, cooldown_ns: int = 60_000_000_000, min_move_bps: int = 0) -> np.ndarray:
    """The statistical breakers' int config (validated; ``window`` is the return ring's length)."""
    if window < 2 or min_samples < 2 or min_samples > window:
        raise ValueError("need 2 <= min_samples <= window")
    for k, v in dict(z_milli=z_milli, var_z_milli=var_z_milli, var_limit=var_limit,
                     cooldown_ns=cooldown_ns).items():
        if not isinstance(v, int) or v <= 0 or v >= 1 << 63:
            raise ValueError(f"{k}={v!r} must be a positive int64")
    if not isinstance(min_move_bps, int) or not 0 <= min_move_bps <= 10000:
        raise ValueError(f"min_move_bps={min_move_bps!r} must be within 0..10000")
    return np.array([z_milli, min_samples, var_z_milli, var_limit, cooldown_ns, min_move_bps], np.int64)


def make_stat_breakers(n_instruments: int, *, window: int = 100, z_milli: int = 3000,
                       min_samples: int = 30, var_z_milli: int = 2326, var_limit: int,
                       cooldown_ns: int = 60_000_000_000, min_move_bps: int = 0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int state [n, SB_N], float return ring [n, window], int config) — all CLOSED."""
    cfg = stat_config(window, z_milli=z_milli, min_samples=min_samples, var_z_milli=var_z_milli,
                      var_limit=var_limit, cooldown_ns=cooldown_ns, min_move_bps=min_move_bps)
    st = np.zeros((n_instruments, SB_N), np.int64)
    ring = np.zeros((n_instruments, window), np.float64)
    return st, ring, cfg


@helper
def _mean_std(ring, i, count):
    s = 0.0
    for k in range(count):
        s += ring[i, k]
    mean = s / count
    v = 0.0
    for k in range(count):
        d = ring[i, k] - mean
        v += d * d
    return mean, math.sqrt(v / (count - 1))


@kernel
def stat_update(st, ring, cfg, i, mid, position_notional, now_ns, ev, ev_count, shard):
    """Feed instrument ``i``'s mid (price units) and its |position| notional (quote units)."""
    if mid <= 0:
        return st[i, SB_STATE]
    if st[i, SB_STATE] == OPEN and now_ns - st[i, SB_OPENED_AT] >= cfg[SBC_COOLDOWN_NS]:
        st[i, SB_STATE] = CLOSED
        st[i, SB_REASON] = BRR_COOLDOWN_ELAPSED
        if not _bev(ev, ev_count, i, 0, CLOSED, OPEN, BRR_COOLDOWN_ELAPSED,
                    now_ns - st[i, SB_OPENED_AT], now_ns, shard):
            st[i, SB_LOST] += 1
    prev = st[i, SB_LAST_MID]
    st[i, SB_LAST_MID] = mid
    if prev <= 0:
        return st[i, SB_STATE]
    r = (mid - prev) / prev
    count = st[i, SB_COUNT]
    w = ring.shape[1]
    reason = 0
    detail = 0
    st[i, SB_LAST_Z] = 0
    if count >= cfg[SBC_MIN_SAMPLES]:
        mean, sd = _mean_std(ring, i, count)
        if sd > 0.0:
            z = abs(r - mean) / sd
            st[i, SB_LAST_Z] = int(min(z * 1000.0, 9.0e18))
            if z * 1000.0 > cfg[SBC_Z_MILLI] and abs(r - mean) * 10000.0 >= cfg[SBC_MIN_MOVE_BPS]:
                reason = BRR_ZSCORE
                detail = st[i, SB_LAST_Z]
    h = st[i, SB_HEAD]
    ring[i, h] = r
    st[i, SB_HEAD] = (h + 1) % w
    if count < w:
        count += 1
        st[i, SB_COUNT] = count
    st[i, SB_LAST_VAR] = 0
    if count >= cfg[SBC_MIN_SAMPLES] and position_notional != 0:
        _, sd = _mean_std(ring, i, count)
        var = cfg[SBC_VAR_Z_MILLI] / 1000.0 * sd * abs(float(position_notional))
        st[i, SB_LAST_VAR] = int(min(var, 9.0e18))
        if reason == 0 and var > cfg[SBC_VAR_LIMIT]:
            reason = BRR_VAR
            detail = st[i, SB_LAST_VAR]
    if reason != 0 and st[i, SB_STATE] != OPEN:
        st[i, SB_STATE] = OPEN
        st[i, SB_OPENED_AT] = now_ns
        st[i, SB_REASON] = reason
        st[i, SB_TRIPS] += 1
        if not _bev(ev, ev_count, i, 0, OPEN, CLOSED, reason, detail, now_ns, shard):
            st[i, SB_LOST] += 1
    return st[i, SB_STATE]


def warmup() -> None:
    from bot4d.records import JOURNAL_EVENT_DTYPE

    br, cfg = make_breakers(1, max_consec=2, min_calls=2)
    ev = np.zeros(8, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    br_allow(br, cfg, 0, 0, ev, n, 0)
    br_record(br, cfg, 0, CAT_OK, 10, 1, ev, n, 0)
    br_record(br, cfg, 0, CAT_RETRY, 10, 2, ev, n, 0)
    br_hold(br, cfg, 0, 10, 3, ev, n, 0)
    br_allow(br, cfg, 0, 11, ev, n, 0)
    br_release(br, 0)
    st, ring, scfg = make_stat_breakers(1, window=4, min_samples=2, var_limit=10)
    for k, m in enumerate((100, 101, 102, 150)):
        stat_update(st, ring, scfg, 0, m, 5, k, ev, n, 0)
