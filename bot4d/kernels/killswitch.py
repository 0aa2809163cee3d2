"""Kill switch: trip conditions, the trading state, and recovery plans, all in one int64 array.

The state is data, not a Python flag: a ``KS_WORDS`` int64 array per shard, in the shard's own
memory, and every change is journalled (EV_KILL_SWITCH / EV_TRADING_STATE). The array itself does
not outlive the process: the daemon's io thread saves its words (state, trip, reason, plan, counts)
with the shard's peak and day-start equity to ``daemon.state_dir`` on every state change and
periodically (``bot4d.daemon.riskstate``), and restores them at start, so a restarted daemon is
still tripped; a missing or corrupt saved state starts it REDUCING. :func:`attach` accepts any
buffer of the layout and refuses one whose magic or version it does not know.

Layout (int64 words)::

    0 K_MAGIC    KS_MAGIC                  8  K_PLAN       recovery plan of the current trip
    1 K_VERSION  KS_VERSION                9  K_RESUME_AT  ns when an auto cool-off ends
    2 K_STATE    TS_ACTIVE/REDUCING/HALTED 10 K_CHANGES    state changes so far (monitors)
    3 K_TRIPPED  1 while tripped           11 K_EVENTS_LOST records that found the array full
                                           12..15          reserved
    4 K_REASON   TRIP_* of the trip        16..            three sliding windows (rejects,
    5 K_TRIP_TS  ns of the trip                            errors, breaker opens), 2*KS_NB words
    6 K_DETAIL   measured value at trip                    each (see risk_window)
    7 K_TRIP_COUNT

Trip conditions (``kcfg``, KC_*): drawdown from peak beyond KC_MAX_DD_BPS (default 15 %), daily
loss beyond KC_MAX_DAILY_LOSS, more than KC_MAX_REJECTS risk rejects / KC_MAX_ERRORS venue errors
/ KC_MAX_BREAKER_OPENS breaker trips inside KC_WINDOW_NS, market data older than KC_MD_STALE_NS,
journal ring fuller than KC_JOURNAL_MAX_BPS, and a manual trip. A trip moves the trading state to
HALTED (cancels only) and records reason, time and the measured value as an EV_KILL_SWITCH event.
Each reason has a recovery plan: PLAN_MANUAL (stays HALTED until :func:`ks_resume`) or
PLAN_AUTO_COOLOFF (after KC_COOLOFF_NS the state becomes REDUCING by itself; back to ACTIVE only by
an operator) or PLAN_REDUCE (straight to REDUCING, back to ACTIVE only by an operator: a protective
stop the venue refused, TRIP_STOP_REFUSED, where closing positions must stay possible). Losses default to manual, storms/staleness/backpressure to the cool-off. A second
condition while tripped does not overwrite the first reason, except that a manual trip upgrades an
automatic plan to a manual one, and a trip that halts replaces one that only reduces (a violent
move's TRIP_STAT_BREAKER is PLAN_REDUCE too). The storms' windows are fed by the shard loop: risk
rejects, venue errors and order-entry breaker opens (``bot4d.daemon.guards``).
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.kernels.risk_window import win_add, win_clear, win_sum
from bot4d.records import EV_KILL_SWITCH, EV_TRADING_STATE

TS_ACTIVE = 0
TS_REDUCING = 1
TS_HALTED = 2
STATE_NAMES = {TS_ACTIVE: "ACTIVE", TS_REDUCING: "REDUCING", TS_HALTED: "HALTED"}

TRIP_NONE = 0
TRIP_DRAWDOWN = 1
TRIP_DAILY_LOSS = 2
TRIP_REJECT_STORM = 3
TRIP_ERROR_STORM = 4
TRIP_BREAKER_STORM = 5
TRIP_STALE_MARKET_DATA = 6
TRIP_JOURNAL_BACKPRESSURE = 7
TRIP_MANUAL = 8
TRIP_STOP_REFUSED = 9    # the venue refused a protective stop: a position may be unprotected
TRIP_STAT_BREAKER = 10   # a statistical breaker opened (violent return or VaR; bot4d.daemon.guards)
TRIP_LAST = TRIP_STAT_BREAKER   # trip reasons are 1..TRIP_LAST (telemetry has a series each)
RESUME_MANUAL = 20       # reason of an EV_TRADING_STATE after an operator's resume
RESUME_COOLOFF = 21      # reason of an EV_TRADING_STATE after an automatic cool-off
TRIP_NAMES = {v: k for k, v in globals().items() if k.startswith(("TRIP_", "RESUME_")) and k != "TRIP_LAST"}

PLAN_MANUAL = 0
PLAN_AUTO_COOLOFF = 1
PLAN_REDUCE = 2          # trip straight to REDUCING (positions may still be closed), manual resume

KS_MAGIC = 0x4B494C4C53573031  # "KILLSW01"
KS_VERSION = 1

K_MAGIC = 0
K_VERSION = 1
K_STATE = 2
K_TRIPPED = 3
K_REASON = 4
K_TRIP_TS = 5
K_DETAIL = 6
K_TRIP_COUNT = 7
K_PLAN = 8
K_RESUME_AT = 9
K_CHANGES = 10
K_EVENTS_LOST = 11       # journal records that did not fit the caller's array
KS_NB = 8
K_WIN_REJECTS = 16
K_WIN_ERRORS = K_WIN_REJECTS + 2 * KS_NB
K_WIN_BREAKERS = K_WIN_ERRORS + 2 * KS_NB
KS_WORDS = K_WIN_BREAKERS + 2 * KS_NB

# which window ks_note counts into
NOTE_REJECT = 0
NOTE_ERROR = 1
NOTE_BREAKER_OPEN = 2

KC_MAX_DD_BPS = 0
KC_MAX_DAILY_LOSS = 1
KC_WINDOW_NS = 2
KC_MAX_REJECTS = 3
KC_MAX_ERRORS = 4
KC_MAX_BREAKER_OPENS = 5
KC_MD_STALE_NS = 6
KC_JOURNAL_MAX_BPS = 7
KC_COOLOFF_NS = 8
KC_DAY_OFFSET_NS = 9     # the trading day (daily loss) starts this long after 00:00 UTC
KC_PLAN = 16             # KC_PLAN + TRIP_* -> PLAN_*
KC_N = KC_PLAN + 16


def make_killswitch() -> np.ndarray:
    ks = np.zeros(KS_WORDS, np.int64)
    ks[K_MAGIC] = KS_MAGIC
    ks[K_VERSION] = KS_VERSION
    ks[K_STATE] = TS_ACTIVE
    for base in (K_WIN_REJECTS, K_WIN_ERRORS, K_WIN_BREAKERS):
        win_clear(ks, base, KS_NB)
    return ks


def make_ks_config(
    *, max_daily_loss: int, max_dd_bps: int = 1500, window_ns: int = 10_000_000_000,
    max_rejects: int = 200, max_errors: int = 50, max_breaker_opens: int = 3,
    md_stale_ns: int = 5_000_000_000, journal_max_bps: int = 9000,
    cooloff_ns: int = 60_000_000_000, day_offset_ns: int = 0,
) -> np.ndarray:
    vals = dict(max_daily_loss=max_daily_loss, max_dd_bps=max_dd_bps, window_ns=window_ns,
                max_rejects=max_rejects, max_errors=max_errors,
                max_breaker_opens=max_breaker_opens, md_stale_ns=md_stale_ns,
                journal_max_bps=journal_max_bps, cooloff_ns=cooloff_ns)
    for k, v in vals.items():
        if not isinstance(v, int) or v < 0 or v >= 1 << 63:
            raise ValueError(f"{k}={v!r} must be a non-negative int64")
    if window_ns < KS_NB:
        raise ValueError(f"window_ns must be at least {KS_NB} ns")
    if not 0 <= day_offset_ns < 86_400 * 10**9:
        raise ValueError(f"day_offset_ns={day_offset_ns!r} must be within one day")
    c = np.zeros(KC_N, np.int64)
    c[KC_MAX_DD_BPS] = max_dd_bps
    c[KC_MAX_DAILY_LOSS] = max_daily_loss
    c[KC_WINDOW_NS] = window_ns
    c[KC_MAX_REJECTS] = max_rejects
    c[KC_MAX_ERRORS] = max_errors
    c[KC_MAX_BREAKER_OPENS] = max_breaker_opens
    c[KC_MD_STALE_NS] = md_stale_ns
    c[KC_JOURNAL_MAX_BPS] = journal_max_bps
    c[KC_COOLOFF_NS] = cooloff_ns
    c[KC_DAY_OFFSET_NS] = day_offset_ns
    for r in (TRIP_REJECT_STORM, TRIP_ERROR_STORM, TRIP_BREAKER_STORM, TRIP_STALE_MARKET_DATA,
              TRIP_JOURNAL_BACKPRESSURE):
        c[KC_PLAN + r] = PLAN_AUTO_COOLOFF
    for r in (TRIP_DRAWDOWN, TRIP_DAILY_LOSS, TRIP_MANUAL):
        c[KC_PLAN + r] = PLAN_MANUAL
    c[KC_PLAN + TRIP_STOP_REFUSED] = PLAN_REDUCE
    c[KC_PLAN + TRIP_STAT_BREAKER] = PLAN_REDUCE   # closing positions must stay possible
    return c


def attach(buf) -> np.ndarray:
    """View ``buf`` (mmap, bytes-like, array) as a kill-switch array; refuse unknown layouts."""
    a = np.frombuffer(buf, dtype=np.int64, count=KS_WORDS) if not isinstance(buf, np.ndarray) \
        else buf.view(np.int64)[:KS_WORDS]
    if a.shape[0] < KS_WORDS:
        raise ValueError(f"kill-switch buffer holds {a.shape[0]} words, need {KS_WORDS}")
    if int(a[K_MAGIC]) != KS_MAGIC:
        raise ValueError(f"not a kill-switch array (magic {int(a[K_MAGIC]):#x})")
    if int(a[K_VERSION]) != KS_VERSION:
        raise ValueError(f"kill-switch layout version {int(a[K_VERSION])}, this build knows {KS_VERSION}")
    if int(a[K_STATE]) not in STATE_NAMES:
        raise ValueError(f"kill-switch array holds unknown trading state {int(a[K_STATE])}")
    return a


@helper
def _event(ev, ev_count, kind, ks, reason, detail, now_ns, shard, old_state):
    n = ev_count[0]
    if n >= ev.shape[0]:
        # the state change stands (halting must not wait for the journal) and the trip's facts
        # stay in this array; only the record is missing, and that is counted
        ks[K_EVENTS_LOST] += 1
        return False
    e = ev[n]
    e["seq"] = 0
    e["ts_ns"] = now_ns
    e["kind"] = kind
    e["shard"] = shard
    e["instrument"] = -1
    e["order_id"] = 0
    e["client_order_id"] = 0
    e["side"] = 0
    e["order_type"] = 0
    e["tif"] = 0
    e["state"] = ks[K_STATE]
    e["reason"] = reason
    e["price"] = 0
    e["qty"] = 0
    e["filled_qty"] = 0
    e["fee"] = 0
    e["stop_price"] = 0
    e["aux0"] = detail
    e["aux1"] = ks[K_PLAN]
    e["aux2"] = ks[K_RESUME_AT]
    e["aux3"] = old_state
    e["aux4"] = ks[K_TRIP_COUNT]
    ev_count[0] = n + 1
    return True


@kernel
def ks_trip(ks, kcfg, reason, detail, now_ns, ev, ev_count, shard):
    """Trip for ``reason``. Returns True if the state changed (an event was written)."""
    plan = kcfg[KC_PLAN + reason]
    if ks[K_TRIPPED] != 0:
        # a manual plan overrides an automatic one; a trip that halts overrides one that only
        # reduces (an error storm while REDUCING after a violent move still halts)
        if not ((plan == PLAN_MANUAL and ks[K_PLAN] != PLAN_MANUAL)
                or (ks[K_PLAN] == PLAN_REDUCE and plan != PLAN_REDUCE)):
            return False
    old = ks[K_STATE]
    ks[K_TRIPPED] = 1
    ks[K_REASON] = reason
    ks[K_TRIP_TS] = now_ns
    ks[K_DETAIL] = detail
    ks[K_TRIP_COUNT] += 1
    ks[K_PLAN] = plan
    ks[K_RESUME_AT] = now_ns + kcfg[KC_COOLOFF_NS] if plan == PLAN_AUTO_COOLOFF else 0
    ks[K_STATE] = TS_REDUCING if plan == PLAN_REDUCE else TS_HALTED
    ks[K_CHANGES] += 1
    _event(ev, ev_count, EV_KILL_SWITCH, ks, reason, detail, now_ns, shard, old)
    return True


@kernel
def ks_resume(ks, to_state, now_ns, ev, ev_count, shard):
    """An operator's resume: clears the trip and sets ACTIVE or REDUCING."""
    old = ks[K_STATE]
    ks[K_TRIPPED] = 0
    ks[K_RESUME_AT] = 0
    ks[K_STATE] = to_state
    ks[K_CHANGES] += 1
    _event(ev, ev_count, EV_TRADING_STATE, ks, RESUME_MANUAL, 0, now_ns, shard, old)


@kernel
def ks_note(ks, kcfg, which, n, now_ns):
    """Count ``n`` rejects / venue errors / breaker opens at ``now_ns`` (NOTE_*)."""
    base = K_WIN_REJECTS + which * 2 * KS_NB
    win_add(ks, base, KS_NB, kcfg[KC_WINDOW_NS] // KS_NB, now_ns, n)


@kernel
def ks_window(ks, kcfg, which, now_ns):
    return win_sum(ks, K_WIN_REJECTS + which * 2 * KS_NB, KS_NB, kcfg[KC_WINDOW_NS] // KS_NB, now_ns)


@kernel
def ks_evaluate(ks, kcfg, equity, peak_equity, day_start_equity, last_md_ns, journal_used,
                journal_cap, now_ns, ev, ev_count, shard):
    """Check every trip condition at ``now_ns``; finish an auto cool-off. Returns the TRIP_* that
    tripped now (TRIP_NONE if none). ``last_md_ns`` = 0 means the feed has not started yet."""
    if ks[K_TRIPPED] != 0 and ks[K_PLAN] == PLAN_AUTO_COOLOFF and now_ns >= ks[K_RESUME_AT]:
        old = ks[K_STATE]
        ks[K_TRIPPED] = 0
        ks[K_STATE] = TS_REDUCING
        ks[K_CHANGES] += 1
        _event(ev, ev_count, EV_TRADING_STATE, ks, RESUME_COOLOFF, ks[K_REASON], now_ns, shard, old)
    if ks[K_TRIPPED] != 0 and ks[K_PLAN] != PLAN_REDUCE:
        return TRIP_NONE   # (a REDUCING trip keeps watching: a condition that halts escalates)
    reason = TRIP_NONE
    detail = 0
    if peak_equity > 0 and equity < peak_equity:
        dd = peak_equity - equity if equity > 0 else peak_equity
        # dd/peak > bps/10000, exact in integers (floor of the right side) and overflow-free
        lim = (peak_equity // 10000) * kcfg[KC_MAX_DD_BPS] + \
            ((peak_equity % 10000) * kcfg[KC_MAX_DD_BPS]) // 10000
        if equity <= 0 or dd > lim:
            reason = TRIP_DRAWDOWN
            detail = dd
    if reason == TRIP_NONE and equity < day_start_equity:
        loss = day_start_equity - equity if equity >= 0 else day_start_equity
        if equity < 0 or loss > kcfg[KC_MAX_DAILY_LOSS]:
            reason = TRIP_DAILY_LOSS
            detail = loss
    if reason == TRIP_NONE:
        c = ks_window(ks, kcfg, NOTE_REJECT, now_ns)
        if c > kcfg[KC_MAX_REJECTS]:
            reason = TRIP_REJECT_STORM
            detail = c
    if reason == TRIP_NONE:
        c = ks_window(ks, kcfg, NOTE_ERROR, now_ns)
        if c > kcfg[KC_MAX_ERRORS]:
            reason = TRIP_ERROR_STORM
            detail = c
    if reason == TRIP_NONE:
        c = ks_window(ks, kcfg, NOTE_BREAKER_OPEN, now_ns)
        if c > kcfg[KC_MAX_BREAKER_OPENS]:
            reason = TRIP_BREAKER_STORM
            detail = c
    if reason == TRIP_NONE and last_md_ns > 0 and now_ns - last_md_ns > kcfg[KC_MD_STALE_NS]:
        reason = TRIP_STALE_MARKET_DATA
        detail = now_ns - last_md_ns
    if reason == TRIP_NONE and journal_cap > 0:
        lim = (journal_cap // 10000) * kcfg[KC_JOURNAL_MAX_BPS] + \
            ((journal_cap % 10000) * kcfg[KC_JOURNAL_MAX_BPS]) // 10000
        if journal_used > lim:
            reason = TRIP_JOURNAL_BACKPRESSURE
            detail = journal_used
    if reason != TRIP_NONE:
        ks_trip(ks, kcfg, reason, detail, now_ns, ev, ev_count, shard)
    return reason


def warmup() -> None:
    from bot4d.records import JOURNAL_EVENT_DTYPE

    ks = make_killswitch()
    c = make_ks_config(max_daily_loss=100)
    ev = np.zeros(4, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    ks_note(ks, c, NOTE_ERROR, 1, 5)
    ks_evaluate(ks, c, 50, 100, 100, 1, 0, 10, 10, ev, n, 0)
    ks_trip(ks, c, TRIP_MANUAL, 0, 11, ev, n, 0)
    ks_resume(ks, TS_ACTIVE, 12, ev, n, 0)
