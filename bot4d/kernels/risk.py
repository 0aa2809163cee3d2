"""Pre-trade risk: one kernel decides a batch of order intents, with a reason code per reject.

Inputs are plain arrays so that risk depends on nobody's object model:

* ``intents``: ``bot4d.records.ORDER_INTENT_DTYPE`` records.
* ``pos``, ``open_orders``, ``open_buy``, ``open_sell`` (int64 per instrument, owned by the OMS):
  signed position in qty units, number of live orders, and unfilled qty of live buy / sell orders.
* ``mid`` (int64 per instrument, price units; 0 = no market data).
* ``corr`` (float64 n x n): rolling return correlations from ``bot4d.kernels.correlation``
  (NaN where there is not enough history: such a pair is not capped). Statistics of returns may
  be float; every price, quantity and balance here is int64.
* risk-owned arrays built by :func:`make_risk`: ``cfg`` (C_*), ``inst`` (I_* columns per
  instrument), ``acct`` (A_*: equity, peak, day start), ``strat`` (S_* Kelly statistics per
  strategy), ``bucket`` (B_* token bucket per venue) and ``work`` (scratch, all zero between calls).
* ``ks``: the kill-switch array (``bot4d.kernels.killswitch``); its K_STATE is the trading state
  the kernel enforces: ACTIVE, REDUCING (only orders that strictly reduce an existing position),
  HALTED (cancels only).

Quote scale: notional, equity and losses are int64 in units of ``10**-QUOTE_SCALE`` of the quote
currency (QUOTE_SCALE = 8). For an instrument with price scale ``ps`` and qty scale ``qs`` the
product ``price_units * qty_units`` has scale ``ps + qs``; the instrument row carries the exact
integer factor that brings it to the quote scale (I_NOTIONAL_DIV = 10**(ps+qs-8) or
I_NOTIONAL_MUL = 10**(8-ps-qs)). The product is checked against int64 *before* it is formed: an
order whose notional would not fit is rejected with REJ_OVERFLOW, never wrapped.

The OMS (``bot4d.kernels.oms_state``) keeps positions and open orders as [account, instrument]
int64 arrays: pass the account's rows (``positions.qty[acct]``, ``open_orders[acct]``,
``open_buy_qty[acct]``, ``open_sell_qty[acct]``; views, no copy). Its P&L and balances are in
*notional units* (price units x qty units of each instrument): ``q = units * I_NOTIONAL_MUL //
I_NOTIONAL_DIV`` converts them exactly to the quote scale used for equity here.

Definitions the checks rely on:

* An order on instrument i *reduces* when it cannot increase |position| even if every live and
  already-accepted order on the same side fills: a buy reduces iff
  ``pos < 0 and open_buy + batch_buy + qty <= -pos`` (mirror for a sell). Every other place or
  replace *opens* risk: it needs a protective stop (``stop_price`` below the entry for a buy,
  above for a sell), is refused while the daily loss or drawdown limit is breached, must keep
  the worst-case position notional within ``max_pos_bps`` of equity, and must not add exposure in
  the direction of an existing position whose return correlation exceeds the cap, and must keep
  the caller's committed gross exposure within its slice of the account's limit (below).
* Worst-case position after a buy: ``pos + open_buy + batch_buy + qty``, valued at the mid. A
  replace is checked as if its whole new qty were added (the old order's remaining qty is not
  known here): conservative, never optimistic.
* Account-wide limits: ``acct`` holds the *account's* equity, peak and trading-day start (the shard
  loop measures them across every shard: ``bot4d.daemon.account``), so the daily-loss, drawdown and
  position-% checks hold for the account. Gross exposure: the committed exposure of instrument i
  is its worst-case |position| whichever side fills, ``max(pos + open_buy + batch_buy,
  -(pos - open_sell - batch_sell))``, valued at the mid; the caller's committed gross exposure is
  the sum over its instruments (those with no mid count 0). An opening order that would grow it
  and take it above ``cfg[C_MAX_GROSS]`` (this shard's slice of the account's limit; INT64_MAX: none) is
  refused with REJ_GROSS_EXPOSURE; one that leaves it where it is (its side's worst case stays
  within the other side's) is not, even above the limit. Slices add up to at most the account's limit, so the account
  never exceeds it whatever the shards do at the same moment, and no shard waits for another.
* Correlation cap: a buy of i is refused when some other instrument j with a long position has
  ``corr[i, j] > cap`` or one with a short position has ``corr[i, j] < -cap`` (it would add to
  the same bet); a sell mirrors that. Hedges are never refused by this rule.
* Rate: a token bucket per venue refilled at B_RATE tokens per second of *injected* time; each
  accepted place/replace takes one token. Cancels never wait for risk (they reduce risk).
* Batches: consecutive intents with the same non-zero ``batch_id`` form a batch. Under
  POLICY_ALL_OR_NONE the batch is accepted whole or not at all (the failing member keeps its own
  reason, the others get REJ_BATCH_PEER, and the effects of already passed members are undone);
  under POLICY_INDEPENDENT each intent stands alone. Either way later intents see the effect of
  accepted earlier ones (open orders, same-side exposure, rate tokens).
* Kelly sizing (INTENT_FLAG_WANTS_SIZING): full Kelly for a win/loss bet from the strategy's
  realised statistics, ``f = p - (1-p)/b = wins*(sum_win-sum_loss)/(n*sum_win)``, capped at
  C_KELLY_CAP_BPS (25 %); the order gets ``floor(equity*f / price)`` (capped by the intent's qty
  when that is non-zero) and then passes every other check with that quantity. The statistics
  come from :func:`note_trade` (realised P&L per closed trade).

Each reject writes one EV_RISK_REJECT record to the caller's journal array (``reason`` = REJ_*,
``state`` = trading state, ``aux0`` = batch id, ``aux1`` = strategy, ``aux2`` = the measured value
that failed, e.g. the notional or the blocking instrument, ``aux3`` = command). The shard loop
counts them into the kill switch's reject-storm window (``killswitch.ks_note``). The kernel never
raises and allocates nothing: ``check_batch`` and the helpers it calls are compiled without numba's
reference counting (``_nrt=False``, as in ``bot4d.kernels.positions``), which also makes the compiler
refuse any allocation added to them. Reference counting the array arguments on entry and exit cost
about 0.7 us per call, whatever the number of intents: most of a one-intent call (the shard loop
decides each pass's intents in one call).
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.kernels.killswitch import K_STATE, TS_HALTED, TS_REDUCING, make_killswitch
from bot4d.records import (
    CMD_CANCEL,
    CMD_PLACE,
    CMD_REPLACE,
    EV_RISK_REJECT,
    INTENT_FLAG_WANTS_SIZING,
    JOURNAL_EVENT_DTYPE,
    ORDER_INTENT_DTYPE,
    SIDE_ASK,
    SIDE_BID,
)

QUOTE_SCALE = 8
INT64_MAX = np.iinfo(np.int64).max
TOKEN = 1_000_000_000  # one rate token in nano-tokens (the bucket refills per ns of injected time)

# --- reject reasons (journal ``reason``) -------------------------------------------------------
ACCEPT = 0
REJ_BAD_COMMAND = 1
REJ_BAD_INSTRUMENT = 2
REJ_BAD_QTY = 3
REJ_BAD_PRICE = 4
REJ_HALTED = 5
REJ_REDUCING = 6
REJ_MAX_QTY = 7
REJ_NO_MARKET_DATA = 8
REJ_PRICE_BAND = 9
REJ_OVERFLOW = 10
REJ_MAX_NOTIONAL = 11
REJ_NO_STOP_LOSS = 12
REJ_BAD_STOP_LOSS = 13
REJ_DAILY_LOSS = 14
REJ_DRAWDOWN = 15
REJ_MAX_POSITION = 16
REJ_CORRELATION = 17
REJ_MAX_OPEN_ORDERS = 18
REJ_RATE_LIMIT = 19
REJ_BATCH_PEER = 20
REJ_KELLY_NO_STATS = 21
REJ_KELLY_NO_EDGE = 22
REJ_INSTRUMENT_DISABLED = 23
REJ_GROSS_EXPOSURE = 24

REASON_NAMES: dict[int, str] = {
    v: k for k, v in globals().items() if k.startswith("REJ_") or k == "ACCEPT"
}
REJ_LAST = REJ_GROSS_EXPOSURE   # reasons are 1..REJ_LAST (telemetry has a series each); not a name

POLICY_INDEPENDENT = 0
POLICY_ALL_OR_NONE = 1

# --- cfg (int64 vector) ------------------------------------------------------------------------
C_POLICY = 0
C_MAX_POS_BPS = 1        # max worst-case |position| notional per instrument, bps of equity
C_MAX_DAILY_LOSS = 2     # quote units
C_MAX_DD_BPS = 3         # max drawdown from peak equity, bps
C_CORR_CAP_BPS = 4       # correlation cap in bps of 1.0
C_KELLY_CAP_BPS = 5
C_KELLY_MIN_TRADES = 6
C_MAX_GROSS = 7          # committed gross exposure this caller may hold, quote units (INT64_MAX: none)
C_N = 8

# --- inst (int64, one row per instrument) ------------------------------------------------------
I_VENUE = 0
I_MAX_QTY = 1            # qty units
I_MAX_NOTIONAL = 2       # quote units
I_MAX_OPEN_ORDERS = 3
I_BAND_BPS = 4           # max |limit price - mid| in bps of mid (fat finger)
I_NOTIONAL_MUL = 5
I_NOTIONAL_DIV = 6
I_ENABLED = 7
I_N = 8

# --- acct (int64 vector): the account's figures, whichever shard holds the array ----------------
A_EQUITY = 0
A_PEAK_EQUITY = 1
A_DAY_START_EQUITY = 2
A_DAY = 3                # UTC day number (ns // 86400e9) that A_DAY_START_EQUITY belongs to
A_N = 4

# --- strat (int64, one row per strategy) -------------------------------------------------------
S_WINS = 0
S_LOSSES = 1
S_SUM_WIN = 2            # quote units, >= 0
S_SUM_LOSS = 3           # quote units, >= 0 (magnitude)
S_N = 4

# --- bucket (int64, one row per venue) ---------------------------------------------------------
B_TOKENS = 0             # nano-tokens
B_LAST_NS = 1
B_CAPACITY = 2           # tokens
B_RATE = 3               # tokens per second
B_N = 4

# --- work (int64 scratch per instrument) -------------------------------------------------------
W_BUY = 0
W_SELL = 1
W_ORDERS = 2
W_FLAGS = 3              # which per-call caches below are filled for this instrument
W_RAW_NOTIONAL = 4       # largest price*qty product whose notional is within I_MAX_NOTIONAL
W_RAW_POSITION = 5       # largest mid*worst product whose notional is within the position limit
W_CORR_BUY = 6           # 1 + instrument whose correlation blocks a buy, or -1
W_CORR_SELL = 7
W_GROSS = 8              # the instrument's committed exposure (quote units) with this call's accepted intents
W_N = 9
WF_NOTIONAL = 1
WF_POSITION = 2
WF_CORR = 4
WF_GROSS = 8
SMALL = 1 << 31          # both factors below this: the product fits int64 without a check

DAY_NS = 86_400 * 1_000_000_000


def set_limits(rs: RiskState, *, max_daily_loss: int, max_pos_bps: int = 200,
               max_dd_bps: int = 1500, corr_cap_bps: int = 7000, kelly_cap_bps: int = 2500,
               kelly_min_trades: int = 20, policy: int = POLICY_ALL_OR_NONE,
               max_gross: int = INT64_MAX) -> None:
    """Account-wide limits; every bps value is within 0..10000 (the kernel relies on it).
    ``max_gross``: the committed gross exposure (quote units) this caller may hold: its slice of
    the account's limit (INT64_MAX: no limit)."""
    for name, v in (("max_pos_bps", max_pos_bps), ("max_dd_bps", max_dd_bps),
                    ("corr_cap_bps", corr_cap_bps), ("kelly_cap_bps", kelly_cap_bps)):
        if not 0 <= v <= 10000:
            raise ValueError(f"{name}={v} must be within 0..10000")
    if not 0 <= max_daily_loss <= INT64_MAX or kelly_min_trades < 0 or not 0 <= max_gross <= INT64_MAX:
        raise ValueError("max_daily_loss, kelly_min_trades and max_gross must be non-negative int64")
    if policy not in (POLICY_INDEPENDENT, POLICY_ALL_OR_NONE):
        raise ValueError(f"unknown batch policy {policy}")
    rs.cfg[C_POLICY] = policy
    rs.cfg[C_MAX_POS_BPS] = max_pos_bps
    rs.cfg[C_MAX_DAILY_LOSS] = max_daily_loss
    rs.cfg[C_MAX_DD_BPS] = max_dd_bps
    rs.cfg[C_CORR_CAP_BPS] = corr_cap_bps
    rs.cfg[C_KELLY_CAP_BPS] = kelly_cap_bps
    rs.cfg[C_KELLY_MIN_TRADES] = kelly_min_trades
    rs.cfg[C_MAX_GROSS] = max_gross


class RiskState(NamedTuple):
    cfg: np.ndarray
    inst: np.ndarray
    acct: np.ndarray
    strat: np.ndarray
    bucket: np.ndarray
    work: np.ndarray
    ks: np.ndarray


def make_risk(n_instruments: int, n_venues: int = 1, n_strategies: int = 1) -> RiskState:
    """Arrays with the issue's defaults: 2 % position, 15 % drawdown, 0.7 correlation, 25 % Kelly.

    Per-instrument limits start at zero (nothing may trade) until :func:`set_instrument` is called.
    """
    if n_instruments <= 0 or n_venues <= 0 or n_strategies <= 0:
        raise ValueError("need at least one instrument, venue and strategy")
    cfg = np.zeros(C_N, np.int64)
    cfg[C_POLICY] = POLICY_ALL_OR_NONE
    cfg[C_MAX_POS_BPS] = 200
    cfg[C_MAX_DD_BPS] = 1500
    cfg[C_CORR_CAP_BPS] = 7000
    cfg[C_KELLY_CAP_BPS] = 2500
    cfg[C_KELLY_MIN_TRADES] = 20
    cfg[C_MAX_GROSS] = INT64_MAX
    inst = np.zeros((n_instruments, I_N), np.int64)
    inst[:, I_NOTIONAL_MUL] = 1
    inst[:, I_NOTIONAL_DIV] = 1
    acct = np.zeros(A_N, np.int64)
    acct[A_DAY] = -1
    strat = np.zeros((n_strategies, S_N), np.int64)
    bucket = np.zeros((n_venues, B_N), np.int64)
    work = np.zeros((n_instruments, W_N), np.int64)
    return RiskState(cfg, inst, acct, strat, bucket, work, make_killswitch())


def set_instrument(
    rs: RiskState, i: int, *, venue: int, price_scale: int, qty_scale: int, max_qty: int,
    max_notional: int, max_open_orders: int, band_bps: int, enabled: bool = True,
) -> None:
    """Configure instrument ``i`` (limits in int units; see :mod:`bot4d.fixedpoint` for Decimal)."""
    if not 0 <= i < rs.inst.shape[0]:
        raise ValueError(f"instrument {i} outside 0..{rs.inst.shape[0] - 1}")
    if not 0 <= venue < rs.bucket.shape[0]:
        raise ValueError(f"venue {venue} outside 0..{rs.bucket.shape[0] - 1}")
    if not (0 <= price_scale <= 18 and 0 <= qty_scale <= 18):
        raise ValueError("scales must be within 0..18")
    for name, v in (("max_qty", max_qty), ("max_notional", max_notional),
                    ("max_open_orders", max_open_orders)):
        if not 0 <= v <= INT64_MAX:
            raise ValueError(f"{name}={v} must be a non-negative int64")
    if not 0 <= band_bps <= 10000:
        raise ValueError(f"band_bps={band_bps} must be within 0..10000")
    e = price_scale + qty_scale - QUOTE_SCALE
    row = rs.inst[i]
    row[I_VENUE] = venue
    row[I_MAX_QTY] = max_qty
    row[I_MAX_NOTIONAL] = max_notional
    row[I_MAX_OPEN_ORDERS] = max_open_orders
    row[I_BAND_BPS] = band_bps
    row[I_NOTIONAL_MUL] = 10 ** (-e) if e < 0 else 1
    row[I_NOTIONAL_DIV] = 10 ** e if e > 0 else 1
    row[I_ENABLED] = 1 if enabled else 0


def set_venue_rate(rs: RiskState, venue: int, *, capacity: int, per_second: int, now_ns: int) -> None:
    """Token bucket of ``capacity`` orders refilled at ``per_second``; starts full at ``now_ns``."""
    if capacity < 0 or per_second < 0 or capacity > INT64_MAX // TOKEN:
        raise ValueError("capacity/per_second out of range")
    rs.bucket[venue, B_CAPACITY] = capacity
    rs.bucket[venue, B_RATE] = per_second
    rs.bucket[venue, B_TOKENS] = capacity * TOKEN
    rs.bucket[venue, B_LAST_NS] = now_ns


# --- helpers -----------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always")
def _sat_mul(a: int, b: int) -> int:
    """a*b for a, b >= 0, saturated at INT64_MAX instead of wrapping."""
    if a == 0 or b == 0:
        return 0
    if a > INT64_MAX // b:
        return INT64_MAX
    return a * b


@nb.njit(cache=True, nogil=True, inline="always")
def _sat_add(a: int, b: int) -> int:
    """a+b for a, b >= 0, saturated at INT64_MAX instead of wrapping."""
    return INT64_MAX if b > INT64_MAX - a else a + b


@nb.njit(cache=True, nogil=True, inline="always")
def _notional(px: int, qty: int, mul: int, div: int) -> int:
    """Quote-unit notional of qty at px (both >= 0), floor; -1 when it does not fit int64."""
    if qty != 0 and px > INT64_MAX // qty:
        return -1
    v = (px * qty) // div
    if mul != 1:
        if v > INT64_MAX // mul:
            return -1
        v *= mul
    return v


@nb.njit(cache=True, nogil=True, inline="always")
def _bps_of(x: int, bps: int) -> int:
    """floor(x * bps / 10000), exact and overflow-free for x >= 0 and 0 <= bps <= 10000."""
    return (x // 10000) * bps + ((x % 10000) * bps) // 10000


@kernel
def update_equity(acct: np.ndarray, equity: int, now_ns: int) -> None:
    """Record equity: keeps the peak and the equity at the start of the UTC day."""
    day = now_ns // DAY_NS
    if acct[A_DAY] != day:
        acct[A_DAY] = day
        acct[A_DAY_START_EQUITY] = equity
    acct[A_EQUITY] = equity
    if equity > acct[A_PEAK_EQUITY]:
        acct[A_PEAK_EQUITY] = equity


@kernel
def note_trade(strat: np.ndarray, s: int, pnl_quote: int) -> None:
    """Feed one closed trade's realised P&L (quote units) into strategy ``s``'s Kelly statistics.

    A break-even trade counts as neither win nor loss. Sums saturate instead of wrapping.
    """
    if s < 0 or s >= strat.shape[0] or pnl_quote == 0:
        return
    if pnl_quote > 0:
        strat[s, S_WINS] += 1
        t = strat[s, S_SUM_WIN]
        strat[s, S_SUM_WIN] = INT64_MAX if t > INT64_MAX - pnl_quote else t + pnl_quote
    else:
        strat[s, S_LOSSES] += 1
        loss = INT64_MAX if pnl_quote == -INT64_MAX - 1 else -pnl_quote
        t = strat[s, S_SUM_LOSS]
        strat[s, S_SUM_LOSS] = INT64_MAX if t > INT64_MAX - loss else t + loss


@nb.njit(cache=True, nogil=True, inline="always")
def _refill(bucket: np.ndarray, v: int, now_ns: int) -> None:
    elapsed = now_ns - bucket[v, B_LAST_NS]
    if elapsed <= 0:
        return  # time never runs backwards for the bucket: no refill, keep the later stamp
    cap = bucket[v, B_CAPACITY] * TOKEN
    rate = bucket[v, B_RATE]
    if rate > 0:
        limit = cap // rate + 1  # beyond this the bucket is full anyway; keeps the product small
        if elapsed > limit:
            elapsed = limit
        t = bucket[v, B_TOKENS] + elapsed * rate
        bucket[v, B_TOKENS] = cap if t > cap else t
    bucket[v, B_LAST_NS] = now_ns


@nb.njit(cache=True, nogil=True, inline="always")
def _daily_loss_breached(acct: np.ndarray, cfg: np.ndarray) -> bool:
    eq = acct[A_EQUITY]
    start = acct[A_DAY_START_EQUITY]
    if eq >= start:
        return False
    loss = start - eq if eq >= 0 or start <= INT64_MAX + eq else INT64_MAX
    return loss > cfg[C_MAX_DAILY_LOSS]


@nb.njit(cache=True, nogil=True, inline="always")
def _drawdown_breached(acct: np.ndarray, cfg: np.ndarray) -> bool:
    peak = acct[A_PEAK_EQUITY]
    eq = acct[A_EQUITY]
    if peak <= 0 or eq >= peak:
        return False
    if eq <= 0:
        return True  # lost everything there was
    return (peak - eq) > _bps_of(peak, cfg[C_MAX_DD_BPS])


@nb.njit(cache=True, nogil=True, inline="always")
def _raw_limit(limit: int, mul: int, div: int) -> int:
    """Largest x >= 0 with floor(x/div)*mul <= limit, saturated at INT64_MAX.

    Lets the hot path compare a raw price*qty product against a per-instrument bound instead of
    dividing every product by the scale factor: floor(x/div)*mul <= L  <=>  x <= (L//mul+1)*div-1.
    """
    if limit < 0:
        return -1
    q = limit // mul + 1
    if q > INT64_MAX // div:
        return INT64_MAX
    return q * div - 1


@nb.njit(cache=True, nogil=True, inline="always")
def _product(a: int, b: int) -> int:
    """a*b for a, b >= 0, or -1 when it does not fit int64 (division only for large factors)."""
    if a < SMALL and b < SMALL:
        return a * b
    if b != 0 and a > INT64_MAX // b:
        return -1
    return a * b


@nb.njit(cache=True, nogil=True, inline="always")
def _raw_to_quote(raw: int, mul: int, div: int) -> int:
    """A price*qty product (>= 0, or -1: it did not fit) in quote units, saturated at INT64_MAX."""
    if raw < 0:
        return INT64_MAX
    v = raw // div
    if mul != 1:
        if v > INT64_MAX // mul:
            return INT64_MAX
        v *= mul
    return v


@nb.njit(cache=True, nogil=True, inline="always")
def _long_worst(p: int, buy: int) -> int:
    """The position if every ``buy`` qty fills (saturated)."""
    return p + buy if p < 0 or buy <= INT64_MAX - p else INT64_MAX


@nb.njit(cache=True, nogil=True, inline="always")
def _short_worst(p: int, sell: int) -> int:
    """The short position's size if every ``sell`` qty fills (saturated; <= 0: not short)."""
    return sell - p if p >= 0 or sell <= INT64_MAX + p else INT64_MAX


@nb.njit(cache=True, nogil=True, inline="always")
def _inst_exposure(m: int, p: int, buy: int, sell: int, mul: int, div: int) -> int:
    """Quote-unit notional at mid ``m`` of the worst-case |position| of an instrument holding ``p``
    with ``buy`` / ``sell`` qty that may still fill; INT64_MAX when it does not fit int64."""
    if m <= 0:
        return 0
    up = _long_worst(p, buy)
    dn = _short_worst(p, sell)
    w = up if up > dn else dn
    if w <= 0:
        return 0
    return _raw_to_quote(_product(m, w), mul, div)


@kernel(_nrt=False)
def committed_exposure(pos, open_buy, open_sell, mid, inst, work) -> int:
    """The committed gross exposure (quote units, saturated at INT64_MAX) of the positions and live
    orders in these arrays, with the effects ``work`` holds of intents accepted in the current call
    (all zero between calls): what ``cfg[C_MAX_GROSS]`` bounds."""
    total = np.int64(0)
    for i in range(pos.shape[0]):
        v = _inst_exposure(mid[i], pos[i], open_buy[i] + work[i, W_BUY], open_sell[i] + work[i, W_SELL],
                           inst[i, I_NOTIONAL_MUL], inst[i, I_NOTIONAL_DIV])
        total = _sat_add(total, v)
    return total


@helper(_nrt=False)
def _corr_cache(work, corr, pos, i, cap):
    """Which existing position (if any) blocks a buy / a sell of i by correlation. Positions and
    correlations do not change inside one call, so this is computed once per instrument."""
    work[i, W_CORR_BUY] = -1
    work[i, W_CORR_SELL] = -1
    for j in range(pos.shape[0]):
        pj = pos[j]
        if j == i or pj == 0:
            continue
        c = corr[i, j]
        if c != c:
            continue  # NaN: not enough history for this pair
        sc = c if pj > 0 else -c
        if sc > cap and work[i, W_CORR_BUY] < 0:
            work[i, W_CORR_BUY] = j + 1
        if -sc > cap and work[i, W_CORR_SELL] < 0:
            work[i, W_CORR_SELL] = j + 1
    work[i, W_FLAGS] |= WF_CORR


@helper(_nrt=False)
def _undo(intents, k, inst, bucket, work, qty):
    it = intents[k]
    i = it["instrument"]
    if it["command"] == CMD_CANCEL:
        return
    if it["side"] == SIDE_BID:
        work[i, W_BUY] -= qty
    else:
        work[i, W_SELL] -= qty
    if it["command"] == CMD_PLACE:
        work[i, W_ORDERS] -= 1
    v = inst[i, I_VENUE]
    bucket[v, B_TOKENS] += TOKEN


@helper(_nrt=False)
def _journal(ev, n, intents, k, state, reason, detail, now_ns, shard):
    it = intents[k]
    e = ev[n]
    e["seq"] = 0
    e["ts_ns"] = now_ns
    e["kind"] = EV_RISK_REJECT
    e["shard"] = shard
    e["instrument"] = it["instrument"]
    e["order_id"] = 0
    e["client_order_id"] = it["client_order_id"]
    e["side"] = it["side"]
    e["order_type"] = it["order_type"]
    e["tif"] = it["tif"]
    e["state"] = state
    e["reason"] = reason
    e["price"] = it["price"]
    e["qty"] = it["qty"]
    e["filled_qty"] = 0
    e["fee"] = 0
    e["stop_price"] = it["stop_price"]
    e["aux0"] = it["batch_id"]
    e["aux1"] = it["strategy"]
    e["aux2"] = detail
    e["aux3"] = it["command"]
    e["aux4"] = 0


@kernel(_nrt=False)
def check_batch(intents, cfg, inst, acct, strat, bucket, work, ks, pos, open_orders, open_buy,
                open_sell, mid, corr, now_ns, decision, out_qty, ev, ev_count, shard):
    """Decide ``intents``; ``decision[k]`` = 0 (accept) or REJ_*, ``out_qty[k]`` = approved qty.

    Rejects are appended to ``ev`` at ``ev_count[0]``. Processes whole batches while the journal
    has room for every member's reject, and returns how many intents it decided (the caller
    drains the journal and calls again with the rest).
    """
    n = intents.shape[0]
    state = ks[K_STATE]
    all_or_none = cfg[C_POLICY] == POLICY_ALL_OR_NONE
    # account-wide facts that cannot change inside one call
    eq = acct[A_EQUITY]
    pos_limit = _bps_of(eq, cfg[C_MAX_POS_BPS]) if eq > 0 else 0
    loss_hit = _daily_loss_breached(acct, cfg)
    dd_hit = _drawdown_breached(acct, cfg)
    max_gross = cfg[C_MAX_GROSS]
    gross = np.int64(-1)    # committed gross exposure, computed when an opening intent needs it
    cap = cfg[C_CORR_CAP_BPS] / 10000.0
    cap_ev = ev.shape[0]
    k = 0
    while k < n:
        bid = intents[k]["batch_id"]
        e = k + 1
        if bid != 0:
            while e < n and intents[e]["batch_id"] == bid:
                e += 1
        if ev_count[0] + (e - k) > cap_ev:
            break
        failed = -1
        for j in range(k, e):
            out_qty[j] = 0
            if failed >= 0 and all_or_none:
                decision[j] = REJ_BATCH_PEER
                continue
            # The decision is written out here rather than in a helper: numba inlining of a
            # function with many array arguments (or passing a record) cost 4-10x per intent in
            # reference-count traffic here. Each check ends the one-pass loop with a reason.
            r = ACCEPT
            detail = np.int64(0)
            gdelta = np.int64(0)
            gnew = np.int64(-1)
            for _once in range(1):
                it = intents[j]
                n_inst = inst.shape[0]
                cmd = it["command"]
                i = it["instrument"]
                side = it["side"]
                if cmd != CMD_PLACE and cmd != CMD_CANCEL and cmd != CMD_REPLACE:
                    r = REJ_BAD_COMMAND
                    detail = 0
                    break
                if i < 0 or i >= n_inst:
                    r = REJ_BAD_INSTRUMENT
                    detail = 0
                    break
                if cmd == CMD_CANCEL:  # never adds risk: allowed in every state, never rate-limited
                    out_qty[j] = 0
                    r = ACCEPT
                    detail = 0
                    break
                if side != SIDE_BID and side != SIDE_ASK:
                    r = REJ_BAD_COMMAND
                    detail = 0
                    break
                if state == TS_HALTED:
                    r = REJ_HALTED
                    detail = 0
                    break
                if inst[i, I_ENABLED] == 0:
                    r = REJ_INSTRUMENT_DISABLED
                    detail = 0
                    break
                px = it["price"]
                if px < 0:
                    r = REJ_BAD_PRICE
                    detail = px
                    break
                m = mid[i]
                if m <= 0:
                    r = REJ_NO_MARKET_DATA
                    detail = m
                    break
                ref_px = px if px > 0 else m  # market orders are valued at the mid
                qty = it["qty"]
                mul = inst[i, I_NOTIONAL_MUL]
                dv = inst[i, I_NOTIONAL_DIV]
                if it["flags"] & INTENT_FLAG_WANTS_SIZING:
                    s = it["strategy"]
                    if s < 0 or s >= strat.shape[0]:
                        r = REJ_KELLY_NO_STATS
                        detail = s
                        break
                    wins = strat[s, S_WINS]
                    losses = strat[s, S_LOSSES]
                    sw = strat[s, S_SUM_WIN]
                    sl = strat[s, S_SUM_LOSS]
                    if wins + losses < cfg[C_KELLY_MIN_TRADES] or wins <= 0 or sw <= 0:
                        r = REJ_KELLY_NO_STATS
                        detail = wins + losses
                        break
                    # statistics of returns may be float: the fraction becomes integer bps before any money
                    f = wins * (float(sw) - float(sl)) / ((wins + losses) * float(sw))
                    f_bps = int(f * 10000.0) if f > 0.0 else 0
                    if f_bps > cfg[C_KELLY_CAP_BPS]:
                        f_bps = cfg[C_KELLY_CAP_BPS]
                    eq = acct[A_EQUITY]
                    if f_bps <= 0 or eq <= 0:
                        r = REJ_KELLY_NO_EDGE
                        detail = f_bps
                        break
                    budget = _bps_of(eq, f_bps)  # quote units
                    # qty = budget * div / (mul * price), rounded down, refusing what does not fit
                    if budget > INT64_MAX // dv:
                        r = REJ_OVERFLOW
                        detail = budget
                        break
                    sized = (budget * dv) // _sat_mul(mul, ref_px)
                    if qty > 0 and sized > qty:
                        sized = qty
                    if sized <= 0:
                        r = REJ_KELLY_NO_EDGE
                        detail = f_bps
                        break
                    qty = sized
                if qty <= 0:
                    r = REJ_BAD_QTY
                    detail = qty
                    break
                if qty > inst[i, I_MAX_QTY]:
                    r = REJ_MAX_QTY
                    detail = qty
                    break
                if px > 0:
                    diff = px - m if px > m else m - px
                    # |px - m| * 10000 > band * m, exact; no division while both fit comfortably
                    if diff < SMALL and m < SMALL:
                        if diff * 10000 > inst[i, I_BAND_BPS] * m:
                            r = REJ_PRICE_BAND
                            detail = px
                            break
                    elif diff > _bps_of(m, inst[i, I_BAND_BPS]):
                        r = REJ_PRICE_BAND
                        detail = px
                        break
                raw = _product(ref_px, qty)
                if raw < 0:
                    r = REJ_OVERFLOW
                    detail = qty
                    break
                if work[i, W_FLAGS] & WF_NOTIONAL == 0:
                    work[i, W_RAW_NOTIONAL] = _raw_limit(inst[i, I_MAX_NOTIONAL], mul, dv)
                    work[i, W_FLAGS] |= WF_NOTIONAL
                if raw > work[i, W_RAW_NOTIONAL]:
                    r = REJ_MAX_NOTIONAL
                    detail = _notional(ref_px, qty, mul, dv)
                    break
                p = pos[i]
                if side == SIDE_BID:
                    same = open_buy[i] + work[i, W_BUY]
                    reduces = p < 0 and same <= -p and qty <= -p - same
                else:
                    same = open_sell[i] + work[i, W_SELL]
                    reduces = p > 0 and same <= p and qty <= p - same
                if state == TS_REDUCING and not reduces:
                    r = REJ_REDUCING
                    detail = p
                    break
                if not reduces:
                    sp = it["stop_price"]
                    if sp == 0:
                        r = REJ_NO_STOP_LOSS
                        detail = 0
                        break
                    if side == SIDE_BID:
                        if not (0 < sp < ref_px):
                            r = REJ_BAD_STOP_LOSS
                            detail = sp
                            break
                    elif sp <= ref_px:
                        r = REJ_BAD_STOP_LOSS
                        detail = sp
                        break
                    if loss_hit:
                        r = REJ_DAILY_LOSS
                        detail = acct[A_DAY_START_EQUITY] - acct[A_EQUITY]
                        break
                    if dd_hit:
                        r = REJ_DRAWDOWN
                        detail = acct[A_PEAK_EQUITY] - acct[A_EQUITY]
                        break
                    # worst case |position| if this and every live same-side order fill
                    if side == SIDE_BID:
                        worst = p + same
                        if worst > INT64_MAX - qty:
                            r = REJ_OVERFLOW
                            detail = qty
                            break
                        worst += qty
                    else:
                        worst = p - same
                        if worst < -INT64_MAX + qty:
                            r = REJ_OVERFLOW
                            detail = qty
                            break
                        worst = -(worst - qty)
                    if work[i, W_FLAGS] & WF_POSITION == 0:
                        work[i, W_RAW_POSITION] = _raw_limit(pos_limit, mul, dv)
                        work[i, W_FLAGS] |= WF_POSITION
                    wraw = _product(m, worst)
                    if wraw < 0 or wraw > work[i, W_RAW_POSITION]:
                        r = REJ_MAX_POSITION
                        detail = _notional(m, worst, mul, dv)
                        break
                    if max_gross < INT64_MAX:
                        if gross < 0:
                            gross = committed_exposure(pos, open_buy, open_sell, mid, inst, work)
                        if work[i, W_FLAGS] & WF_GROSS == 0:
                            work[i, W_GROSS] = _inst_exposure(m, p, open_buy[i] + work[i, W_BUY],
                                                              open_sell[i] + work[i, W_SELL], mul, dv)
                            work[i, W_FLAGS] |= WF_GROSS
                        # only the order's side grows (to ``worst``, valued above as wraw): past
                        # the other side's worst case it becomes the instrument's exposure
                        if side == SIDE_BID:
                            other = _short_worst(p, open_sell[i] + work[i, W_SELL])
                        else:
                            other = _long_worst(p, open_buy[i] + work[i, W_BUY])
                        if worst > other:
                            old = work[i, W_GROSS]
                            gnew = _raw_to_quote(wraw, mul, dv)
                            gdelta = gnew - old
                            if gross == INT64_MAX or gnew == INT64_MAX:
                                after = INT64_MAX   # beyond int64: beyond any limit
                            else:
                                after = _sat_add(gross - old, gnew)   # old is one of gross's terms
                            if after > max_gross:
                                r = REJ_GROSS_EXPOSURE
                                detail = after
                                break
                    if work[i, W_FLAGS] & WF_CORR == 0:
                        _corr_cache(work, corr, pos, i, cap)
                    blk = work[i, W_CORR_BUY] if side == SIDE_BID else work[i, W_CORR_SELL]
                    if blk > 0:
                        r = REJ_CORRELATION
                        detail = blk - 1
                        break
                if cmd == CMD_PLACE and open_orders[i] + work[i, W_ORDERS] >= inst[i, I_MAX_OPEN_ORDERS]:
                    r = REJ_MAX_OPEN_ORDERS
                    detail = open_orders[i] + work[i, W_ORDERS]
                    break
                v = inst[i, I_VENUE]
                _refill(bucket, v, now_ns)
                if bucket[v, B_TOKENS] < TOKEN:
                    r = REJ_RATE_LIMIT
                    detail = bucket[v, B_TOKENS]
                    break
                # accepted: later intents see this one
                bucket[v, B_TOKENS] -= TOKEN
                if gnew >= 0:
                    work[i, W_GROSS] = gnew
                    if gross < INT64_MAX:
                        gross = _sat_add(gross, gdelta)
                if side == SIDE_BID:
                    work[i, W_BUY] += qty
                else:
                    work[i, W_SELL] += qty
                if cmd == CMD_PLACE:
                    work[i, W_ORDERS] += 1
                out_qty[j] = qty
                r = ACCEPT
                detail = 0
                break
            decision[j] = r
            if r != ACCEPT:
                if failed < 0:
                    failed = j
                _journal(ev, ev_count[0], intents, j, state, r, detail, now_ns, shard)
                ev_count[0] += 1
        if failed >= 0 and all_or_none and e - k > 1:
            for j in range(k, e):
                if j < failed:
                    _undo(intents, j, inst, bucket, work, out_qty[j])
                    out_qty[j] = 0
                if j != failed:
                    decision[j] = REJ_BATCH_PEER
                    _journal(ev, ev_count[0], intents, j, state, REJ_BATCH_PEER, failed,
                             now_ns, shard)
                    ev_count[0] += 1
            # undone members' exposure: measured afresh when next needed
            gross = -1
            for j in range(k, e):
                ij = intents[j]["instrument"]
                if 0 <= ij < inst.shape[0]:
                    work[ij, W_FLAGS] &= ~WF_GROSS
        k = e
    # the effects were only needed inside this call: the OMS now owns the accepted orders
    for j in range(k):
        i = intents[j]["instrument"]
        if 0 <= i < inst.shape[0]:
            for c in range(W_N):
                work[i, c] = 0
    return k



def warmup() -> None:
    rs = make_risk(2)
    note_trade(rs.strat, 0, 5)
    note_trade(rs.strat, 0, -3)
    rs.strat[:] = 0
    set_instrument(rs, 0, venue=0, price_scale=2, qty_scale=8, max_qty=10**8,
                   max_notional=10**12, max_open_orders=4, band_bps=500)
    set_venue_rate(rs, 0, capacity=10, per_second=10, now_ns=0)
    update_equity(rs.acct, 10**13, 0)
    it = np.zeros(2, ORDER_INTENT_DTYPE)
    it["command"] = CMD_PLACE
    it["price"] = 100_00
    it["qty"] = 1000
    it["stop_price"] = 99_00
    it["batch_id"] = 1
    it["flags"][1] = INTENT_FLAG_WANTS_SIZING
    z = np.zeros(2, np.int64)
    corr = np.full((2, 2), np.nan)
    check_batch(it, rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks, z, z, z, z,
                np.array([100_00, 0], np.int64), corr, 1, np.zeros(2, np.int32), np.zeros(2, np.int64),
                np.zeros(4, JOURNAL_EVENT_DTYPE), np.zeros(1, np.int64), 0)
