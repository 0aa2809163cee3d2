"""L3 price-time-priority matching engine: the simulated venue's heart.

One engine holds the books of several instruments. Resting orders live in a preallocated pool and
are chained first-in-first-out per price level, so queue position is respected. Price levels are
kept in sorted arrays stored *worst-first* (bids ascending, asks descending): the best level is
the last element, so the common cases — trading through the best level, adding at the top — touch
the end of the array and shift nothing.

Behaviour follows Binance spot (its field names and error codes are applied at the server's edge
from the REJ_* table below):
* order types LIMIT (GTC/IOC/FOK), LIMIT_MAKER (post-only: rejected when it would take), MARKET,
  STOP_LOSS / STOP_LOSS_LIMIT / TAKE_PROFIT / TAKE_PROFIT_LIMIT (triggered by the last trade price:
  a BUY STOP_LOSS when price >= stop, a SELL STOP_LOSS when price <= stop; TAKE_PROFIT the opposite;
  a stop that would trigger at once is rejected, as Binance does), and OCO pairs (when one leg
  trades or triggers, or is cancelled, the other is cancelled in the same call).
* self-trade prevention by the taker's mode (Binance STP FAQ,
  https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq): EXPIRE_TAKER,
  EXPIRE_MAKER, EXPIRE_BOTH, DECREMENT (both leaves reduced by the prevented quantity; the smaller
  expires, or both when equal).
* filters: PRICE_FILTER (tick), LOT_SIZE (step, min, max), NOTIONAL (min notional of a limit order).
* fees: maker/taker rates per account in 1e-8 units (negative = rebate); a positive fee is rounded
  up and a rebate rounded toward zero, so the venue never pays for rounding.

Every kernel here is compiled with ``_nrt=False``: the engine state is a tuple of ~40 arrays,
and with numba's reference counting on, each internal call increfs and decrefs every one of them
(measured: 1.7 µs per passive order; 0.5 µs without). Nothing here allocates, so the refcounts
protect nothing. The flag is numba-internal; if a numba release drops it, the cost is speed only.

The kernel never raises: every refusal is an event with a REJ_* code. It processes orders while
the event buffer has room for an order's worst case (see ``event_reserve``) and returns how many
orders it consumed, so the caller drains events and calls again.
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.records import SIDE_ASK, SIDE_BID

# --- order input -------------------------------------------------------------------------------
OP_NEW = 1
OP_CANCEL = 2

T_LIMIT = 1
T_MARKET = 2
T_LIMIT_MAKER = 3
T_STOP_LOSS = 4
T_STOP_LOSS_LIMIT = 5
T_TAKE_PROFIT = 6
T_TAKE_PROFIT_LIMIT = 7

TIF_GTC = 1
TIF_IOC = 2
TIF_FOK = 3

STP_NONE = 0
STP_EXPIRE_TAKER = 1
STP_EXPIRE_MAKER = 2
STP_EXPIRE_BOTH = 3
STP_DECREMENT = 4

SIM_ORDER_DTYPE = np.dtype(
    [
        ("op", np.int8), ("side", np.int8), ("otype", np.int8), ("tif", np.int8),
        ("stp", np.int8), ("_pad", np.int8, 3),
        ("instrument", np.int32), ("account", np.int32),
        ("ts_ns", np.int64), ("order_id", np.int64),
        ("price", np.int64), ("qty", np.int64), ("stop_price", np.int64),
        ("oco_peer", np.int64),  # order id of the other OCO leg (placed earlier), 0 if none
    ],
    align=True,
)

# --- events out ---------------------------------------------------------------------------------
E_NEW = 1          # accepted (resting, pending trigger, or about to match)
E_TRADE = 2        # one side of a fill: qty at price, maker flag
E_CANCELED = 3     # cancelled by request or by its OCO peer
E_EXPIRED = 4      # IOC/FOK/market remainder, or self-trade prevention
E_REJECTED = 5     # refused; code says why; nothing changed
E_TRIGGERED = 6    # a stop order's condition was met; it now trades as market/limit
E_DECREMENTED = 7  # STP DECREMENT: qty is the prevented quantity taken off this order's leaves

REJ_NONE = 0
REJ_PRICE_FILTER = 1
REJ_LOT_SIZE = 2
REJ_NOTIONAL = 3
REJ_WOULD_TAKE = 4
REJ_DUPLICATE = 5
REJ_UNKNOWN_ORDER = 6
REJ_CAPACITY = 7
REJ_STOP_WOULD_TRIGGER = 8
REJ_BAD_PARAM = 9
REJ_UNKNOWN_INSTRUMENT = 10
REJ_UNKNOWN_ACCOUNT = 11
# reasons carried by E_EXPIRED / E_CANCELED
EXP_IOC = 20
EXP_FOK = 21
EXP_MARKET_NO_LIQUIDITY = 22
EXP_STP = 23
CXL_REQUEST = 30
CXL_OCO = 31

# code -> (Binance error code, Binance message). Used by the simulated server's responses.
BINANCE_REJECTS: dict[int, tuple[int, str]] = {
    REJ_PRICE_FILTER: (-1013, "Filter failure: PRICE_FILTER"),
    REJ_LOT_SIZE: (-1013, "Filter failure: LOT_SIZE"),
    REJ_NOTIONAL: (-1013, "Filter failure: NOTIONAL"),
    REJ_WOULD_TAKE: (-2010, "Order would immediately match and take."),
    REJ_DUPLICATE: (-2010, "Duplicate order sent."),
    REJ_UNKNOWN_ORDER: (-2011, "Unknown order sent."),
    REJ_CAPACITY: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
    REJ_STOP_WOULD_TRIGGER: (-2010, "Stop price would trigger immediately."),
    REJ_BAD_PARAM: (-1102, "A mandatory parameter was not sent, was empty/null, or malformed."),
    REJ_UNKNOWN_INSTRUMENT: (-1121, "Invalid symbol."),
    REJ_UNKNOWN_ACCOUNT: (-2014, "API-key format invalid."),
}

SIM_EVENT_DTYPE = np.dtype(
    [
        ("kind", np.int8), ("side", np.int8), ("otype", np.int8), ("maker", np.int8),
        ("instrument", np.int32),
        ("account", np.int32), ("code", np.int32),
        ("ts_ns", np.int64), ("order_id", np.int64),
        ("price", np.int64),        # trade price for E_TRADE, order price otherwise
        ("qty", np.int64),          # traded qty for E_TRADE, order qty otherwise
        ("leaves_qty", np.int64), ("cum_qty", np.int64),
        ("fee", np.int64),          # quote units at price_scale + qty_scale
        ("counter_order_id", np.int64),
        ("trade_id", np.int64),
    ],
    align=True,
)

_INT64_MAX = np.iinfo(np.int64).max
_FEE_ONE = 100_000_000  # fee rates are in 1e-8

# pool slot state
_FREE = 0
_RESTING = 1
_STOP_PENDING = 2


class MatchState(NamedTuple):
    # per instrument: filters
    tick: np.ndarray          # int64[n]
    step: np.ndarray          # int64[n]
    min_qty: np.ndarray       # int64[n]
    max_qty: np.ndarray       # int64[n]
    min_notional: np.ndarray  # int64[n], price units * qty units
    last_px: np.ndarray       # int64[n], last trade price (0: none yet)
    # levels: [n, 2, L], worst-first
    lv_px: np.ndarray
    lv_qty: np.ndarray
    lv_head: np.ndarray       # int32 pool slot of first (oldest) order
    lv_tail: np.ndarray
    lv_cnt: np.ndarray        # int32[n, 2]
    # order pool
    o_id: np.ndarray
    o_acct: np.ndarray
    o_inst: np.ndarray
    o_side: np.ndarray
    o_type: np.ndarray
    o_tif: np.ndarray
    o_stp: np.ndarray
    o_px: np.ndarray
    o_qty: np.ndarray
    o_left: np.ndarray
    o_cum: np.ndarray
    o_stop: np.ndarray
    o_peer: np.ndarray        # pool slot of the OCO peer, -1 if none
    o_next: np.ndarray
    o_prev: np.ndarray
    o_state: np.ndarray
    free: np.ndarray          # stack of free slots
    nfree: np.ndarray         # int64[1]
    # order id -> slot (open addressing, linear probing, backward-shift deletion)
    h_key: np.ndarray
    h_val: np.ndarray
    # pending stops per instrument
    st_slot: np.ndarray       # int32[n, S]
    st_cnt: np.ndarray        # int32[n]
    # per account fees (1e-8), and valid accounts are 0..A-1
    fee_maker: np.ndarray
    fee_taker: np.ndarray
    # [0] trade id counter, [1] rejects, [2] trades
    counters: np.ndarray


def make_engine(
    n_instruments: int,
    *,
    max_levels: int = 4096,
    max_orders: int = 1 << 16,
    max_stops: int = 1024,
    n_accounts: int = 16,
) -> MatchState:
    """Preallocate an engine; set filters and fees on the returned arrays before use."""
    n, L, P = n_instruments, max_levels, max_orders
    hcap = 1
    while hcap < 2 * P:
        hcap <<= 1
    return MatchState(
        tick=np.ones(n, np.int64), step=np.ones(n, np.int64),
        min_qty=np.ones(n, np.int64), max_qty=np.full(n, _INT64_MAX, np.int64),
        min_notional=np.zeros(n, np.int64), last_px=np.zeros(n, np.int64),
        lv_px=np.zeros((n, 2, L), np.int64), lv_qty=np.zeros((n, 2, L), np.int64),
        lv_head=np.full((n, 2, L), -1, np.int32), lv_tail=np.full((n, 2, L), -1, np.int32),
        lv_cnt=np.zeros((n, 2), np.int32),
        o_id=np.zeros(P, np.int64), o_acct=np.zeros(P, np.int32), o_inst=np.zeros(P, np.int32),
        o_side=np.zeros(P, np.int8), o_type=np.zeros(P, np.int8), o_tif=np.zeros(P, np.int8),
        o_stp=np.zeros(P, np.int8), o_px=np.zeros(P, np.int64), o_qty=np.zeros(P, np.int64),
        o_left=np.zeros(P, np.int64), o_cum=np.zeros(P, np.int64), o_stop=np.zeros(P, np.int64),
        o_peer=np.full(P, -1, np.int32), o_next=np.full(P, -1, np.int32),
        o_prev=np.full(P, -1, np.int32), o_state=np.zeros(P, np.int8),
        free=np.arange(P - 1, -1, -1, dtype=np.int32), nfree=np.array([P], np.int64),
        h_key=np.zeros(hcap, np.int64), h_val=np.full(hcap, -1, np.int32),
        st_slot=np.full((n, max_stops), -1, np.int32), st_cnt=np.zeros(n, np.int32),
        fee_maker=np.zeros(n_accounts, np.int64), fee_taker=np.zeros(n_accounts, np.int64),
        counters=np.zeros(8, np.int64),
    )


@kernel(_nrt=False)
def event_reserve(s) -> int:
    """Events the next order can produce at most: each live order traded, decremented or expired
    (4 each, plus an OCO cancel), each pending stop triggering and trading, plus the order's own few."""
    stops = 0
    for i in range(s.st_cnt.shape[0]):
        stops += s.st_cnt[i]
    live = s.o_id.shape[0] - s.nfree[0]
    return 5 * live + 6 * (stops + 1) + 16


# ------------------------------------------------------------------------------------------------
# id hash
@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _hash(key, mask):
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(17)) & mask


@helper(_nrt=False)
def _h_find(h_key, h_val, key):
    mask = h_key.shape[0] - 1
    i = _hash(key, mask)
    while h_val[i] != -1:
        if h_key[i] == key:
            return i
        i = (i + 1) & mask
    return -1


@helper(_nrt=False)
def _h_put(h_key, h_val, key, slot):
    mask = h_key.shape[0] - 1
    i = _hash(key, mask)
    while h_val[i] != -1:
        i = (i + 1) & mask
    h_key[i] = key
    h_val[i] = slot


@helper(_nrt=False)
def _h_del(h_key, h_val, i):
    # backward-shift deletion keeps probe chains intact without tombstones
    mask = h_key.shape[0] - 1
    j = i
    while True:
        h_val[i] = -1
        while True:
            j = (j + 1) & mask
            if h_val[j] == -1:
                return
            k = _hash(h_key[j], mask)
            # can the entry at j move to the hole at i?
            if (i <= j and (k <= i or k > j)) or (i > j and (k <= i and k > j)):
                break
        h_key[i] = h_key[j]
        h_val[i] = h_val[j]
        i = j


# ------------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _better(side, a, b):
    """Is price a strictly better than b for resting orders on this side?"""
    return a > b if side == SIDE_BID else a < b


@helper(_nrt=False)
def _level_index(st_px, cnt, side, px):
    """Index of px in a worst-first level row, or -(insert position) - 1."""
    lo, hi = 0, cnt
    while lo < hi:
        mid = (lo + hi) >> 1
        p = st_px[mid]
        if p == px:
            return mid
        if _better(side, px, p):
            lo = mid + 1
        else:
            hi = mid
    return -lo - 1


@kernel(_nrt=False)
def _fee(notional, rate):
    if rate == 0:
        return np.int64(0)
    r = rate if rate > 0 else -rate
    a = notional // _FEE_ONE
    b = notional % _FEE_ONE
    prod_hi = a * r
    prod_lo = b * r
    q = prod_hi + prod_lo // _FEE_ONE
    rem = prod_lo % _FEE_ONE
    if rate > 0:
        return q + (1 if rem != 0 else 0)
    return -q


@helper(_nrt=False)
def _emit(ev, n, kind, ts, st_o_id, st_o_acct, st_o_inst, st_o_side, st_o_type,
          px, qty, leaves, cum, maker, fee, counter, trade_id, code):
    e = ev[n]
    e.kind = kind
    e.ts_ns = ts
    e.order_id = st_o_id
    e.account = st_o_acct
    e.instrument = st_o_inst
    e.side = st_o_side
    e.otype = st_o_type
    e.price = px
    e.qty = qty
    e.leaves_qty = leaves
    e.cum_qty = cum
    e.maker = maker
    e.fee = fee
    e.counter_order_id = counter
    e.trade_id = trade_id
    e.code = code
    return n + 1


@helper(_nrt=False)
def _emit_slot(s, ev, n, kind, ts, slot, px, qty, maker, fee, counter, trade_id, code):
    return _emit(ev, n, kind, ts, s.o_id[slot], s.o_acct[slot], s.o_inst[slot],
                 s.o_side[slot], s.o_type[slot], px, qty, s.o_left[slot], s.o_cum[slot],
                 maker, fee, counter, trade_id, code)


@helper(_nrt=False)
def _release(s, slot):
    hi = _h_find(s.h_key, s.h_val, s.o_id[slot])
    if hi >= 0:
        _h_del(s.h_key, s.h_val, hi)
    s.o_state[slot] = _FREE
    peer = s.o_peer[slot]
    if peer >= 0 and s.o_peer[peer] == slot:  # a reused slot must never look like a peer
        s.o_peer[peer] = -1
    s.o_peer[slot] = -1
    s.free[s.nfree[0]] = slot
    s.nfree[0] += 1


@helper(_nrt=False)
def _unlink_resting(s, slot):
    """Take a resting order out of its level (and the level out of the book if it empties)."""
    inst = s.o_inst[slot]
    side = s.o_side[slot]
    cnt = s.lv_cnt[inst, side]
    li = _level_index(s.lv_px[inst, side], cnt, side, s.o_px[slot])
    prv = s.o_prev[slot]
    nxt = s.o_next[slot]
    if prv >= 0:
        s.o_next[prv] = nxt
    else:
        s.lv_head[inst, side, li] = nxt
    if nxt >= 0:
        s.o_prev[nxt] = prv
    else:
        s.lv_tail[inst, side, li] = prv
    s.lv_qty[inst, side, li] -= s.o_left[slot]
    if s.lv_head[inst, side, li] < 0:
        for k in range(li, cnt - 1):
            s.lv_px[inst, side, k] = s.lv_px[inst, side, k + 1]
            s.lv_qty[inst, side, k] = s.lv_qty[inst, side, k + 1]
            s.lv_head[inst, side, k] = s.lv_head[inst, side, k + 1]
            s.lv_tail[inst, side, k] = s.lv_tail[inst, side, k + 1]
        s.lv_cnt[inst, side] = cnt - 1


@helper(_nrt=False)
def _rest(s, slot):
    """Append a live limit order at the back of its price level's queue. False if no room."""
    inst = s.o_inst[slot]
    side = s.o_side[slot]
    cnt = s.lv_cnt[inst, side]
    li = _level_index(s.lv_px[inst, side], cnt, side, s.o_px[slot])
    if li < 0:
        if cnt >= s.lv_px.shape[2]:
            return False
        li = -li - 1
        for k in range(cnt, li, -1):
            s.lv_px[inst, side, k] = s.lv_px[inst, side, k - 1]
            s.lv_qty[inst, side, k] = s.lv_qty[inst, side, k - 1]
            s.lv_head[inst, side, k] = s.lv_head[inst, side, k - 1]
            s.lv_tail[inst, side, k] = s.lv_tail[inst, side, k - 1]
        s.lv_px[inst, side, li] = s.o_px[slot]
        s.lv_qty[inst, side, li] = 0
        s.lv_head[inst, side, li] = -1
        s.lv_tail[inst, side, li] = -1
        s.lv_cnt[inst, side] = cnt + 1
    tail = s.lv_tail[inst, side, li]
    s.o_prev[slot] = tail
    s.o_next[slot] = -1
    if tail >= 0:
        s.o_next[tail] = slot
    else:
        s.lv_head[inst, side, li] = slot
    s.lv_tail[inst, side, li] = slot
    s.lv_qty[inst, side, li] += s.o_left[slot]
    s.o_state[slot] = _RESTING
    return True


@helper(_nrt=False)
def _remove_stop(s, slot):
    inst = s.o_inst[slot]
    c = s.st_cnt[inst]
    for k in range(c):
        if s.st_slot[inst, k] == slot:
            s.st_slot[inst, k] = s.st_slot[inst, c - 1]
            s.st_cnt[inst] = c - 1
            return


@helper(_nrt=False)
def _cancel_slot(s, slot, ev, n, ts, reason):
    """Cancel a live order (resting or pending stop), emit E_CANCELED, free it."""
    if s.o_state[slot] == _RESTING:
        _unlink_resting(s, slot)
    elif s.o_state[slot] == _STOP_PENDING:
        _remove_stop(s, slot)
    n = _emit_slot(s, ev, n, E_CANCELED, ts, slot, s.o_px[slot], s.o_qty[slot], 0, 0, 0, 0, reason)
    _release(s, slot)
    return n


@helper(_nrt=False)
def _oco_fire(s, slot, ev, n, ts):
    """A leg traded, triggered or was cancelled: cancel its peer, once."""
    peer = s.o_peer[slot]
    if peer >= 0:
        s.o_peer[slot] = -1
        s.o_peer[peer] = -1
        if s.o_state[peer] != _FREE:
            n = _cancel_slot(s, peer, ev, n, ts, CXL_OCO)
    return n


@helper(_nrt=False)
def _available(s, inst, side, limit, is_market):
    """Quantity the opposite side offers at prices acceptable to a taker on `side`."""
    opp = 1 - side
    tot = np.int64(0)
    for k in range(s.lv_cnt[inst, opp] - 1, -1, -1):
        px = s.lv_px[inst, opp, k]
        if not is_market:
            if side == SIDE_BID and px > limit:
                break
            if side == SIDE_ASK and px < limit:
                break
        tot += s.lv_qty[inst, opp, k]
    return tot


@helper(_nrt=False)
def _match(s, t, ev, n, ts, is_market):
    """Trade taker slot t against the opposite side. Returns (n, expired_by_stp)."""
    inst = s.o_inst[t]
    side = s.o_side[t]
    opp = 1 - side
    limit = s.o_px[t]
    acct = s.o_acct[t]
    stp = s.o_stp[t]
    while s.o_left[t] > 0 and s.lv_cnt[inst, opp] > 0:
        li = s.lv_cnt[inst, opp] - 1
        px = s.lv_px[inst, opp, li]
        if not is_market:
            if (side == SIDE_BID and px > limit) or (side == SIDE_ASK and px < limit):
                break
        m = s.lv_head[inst, opp, li]
        if stp != STP_NONE and s.o_acct[m] == acct:
            if stp == STP_EXPIRE_TAKER or stp == STP_EXPIRE_BOTH:
                if stp == STP_EXPIRE_BOTH:
                    _unlink_resting(s, m)
                    n = _emit_slot(s, ev, n, E_EXPIRED, ts, m, s.o_px[m], s.o_qty[m], 1, 0, s.o_id[t], 0, EXP_STP)
                    n = _oco_fire(s, m, ev, n, ts)
                    _release(s, m)
                return n, True
            if stp == STP_EXPIRE_MAKER:
                _unlink_resting(s, m)
                n = _emit_slot(s, ev, n, E_EXPIRED, ts, m, s.o_px[m], s.o_qty[m], 1, 0, s.o_id[t], 0, EXP_STP)
                n = _oco_fire(s, m, ev, n, ts)
                _release(s, m)
                continue
            # DECREMENT: both lose the prevented quantity (each told so); an exhausted one expires
            q = min(s.o_left[t], s.o_left[m])
            s.o_left[t] -= q
            s.o_left[m] -= q
            s.lv_qty[inst, opp, li] -= q
            n = _emit_slot(s, ev, n, E_DECREMENTED, ts, m, px, q, 1, 0, s.o_id[t], 0, EXP_STP)
            n = _emit_slot(s, ev, n, E_DECREMENTED, ts, t, px, q, 0, 0, s.o_id[m], 0, EXP_STP)
            if s.o_left[m] == 0:
                _unlink_resting(s, m)
                n = _emit_slot(s, ev, n, E_EXPIRED, ts, m, s.o_px[m], s.o_qty[m], 1, 0, s.o_id[t], 0, EXP_STP)
                n = _oco_fire(s, m, ev, n, ts)
                _release(s, m)
            if s.o_left[t] == 0:
                return n, True
            continue
        q = min(s.o_left[t], s.o_left[m])
        s.counters[0] += 1
        tid = s.counters[0]
        s.counters[2] += 1
        notional = px * q
        s.o_left[m] -= q
        s.o_cum[m] += q
        s.lv_qty[inst, opp, li] -= q
        s.o_left[t] -= q
        s.o_cum[t] += q
        s.last_px[inst] = px
        n = _emit_slot(s, ev, n, E_TRADE, ts, m, px, q, 1, _fee(notional, s.fee_maker[s.o_acct[m]]),
                       s.o_id[t], tid, 0)
        n = _emit_slot(s, ev, n, E_TRADE, ts, t, px, q, 0, _fee(notional, s.fee_taker[acct]),
                       s.o_id[m], tid, 0)
        n = _oco_fire(s, m, ev, n, ts)
        if s.o_left[m] == 0:
            _unlink_resting(s, m)
            _release(s, m)
    return n, False


@helper(_nrt=False)
def _validate(s, o):
    inst = o.instrument
    if inst < 0 or inst >= s.tick.shape[0]:
        return REJ_UNKNOWN_INSTRUMENT
    if o.account < 0 or o.account >= s.fee_maker.shape[0]:
        return REJ_UNKNOWN_ACCOUNT
    if o.side != SIDE_BID and o.side != SIDE_ASK:
        return REJ_BAD_PARAM
    if o.otype < T_LIMIT or o.otype > T_TAKE_PROFIT_LIMIT or o.stp < 0 or o.stp > STP_DECREMENT:
        return REJ_BAD_PARAM
    has_price = o.otype in (T_LIMIT, T_LIMIT_MAKER, T_STOP_LOSS_LIMIT, T_TAKE_PROFIT_LIMIT)
    is_stop = o.otype >= T_STOP_LOSS
    if o.tif < 0 or o.tif > TIF_FOK:  # 0 means GTC
        return REJ_BAD_PARAM
    if o.qty <= 0 or o.qty % s.step[inst] != 0 or o.qty < s.min_qty[inst] or o.qty > s.max_qty[inst]:
        return REJ_LOT_SIZE
    if has_price:
        if o.price <= 0 or o.price % s.tick[inst] != 0:
            return REJ_PRICE_FILTER
        if o.qty > _INT64_MAX // o.price or o.price * o.qty < s.min_notional[inst]:
            return REJ_NOTIONAL
    if is_stop and (o.stop_price <= 0 or o.stop_price % s.tick[inst] != 0):
        return REJ_PRICE_FILTER
    return REJ_NONE


@nb.njit(cache=True, nogil=True, inline="always", _nrt=False)
def _stop_triggered(otype, side, stop, last):
    if last <= 0:
        return False
    rising = (otype == T_STOP_LOSS or otype == T_STOP_LOSS_LIMIT) == (side == SIDE_BID)
    return last >= stop if rising else last <= stop


@helper(_nrt=False)
def _execute(s, t, ev, n, ts):
    """Run a live (accepted or triggered) order: match, then rest or expire its remainder."""
    inst = s.o_inst[t]
    ot = s.o_type[t]
    is_market = ot == T_MARKET or ot == T_STOP_LOSS or ot == T_TAKE_PROFIT
    tif = s.o_tif[t]
    if tif == TIF_FOK and not is_market:
        if _available(s, inst, s.o_side[t], s.o_px[t], False) < s.o_left[t]:
            n = _emit_slot(s, ev, n, E_EXPIRED, ts, t, s.o_px[t], s.o_qty[t], 0, 0, 0, 0, EXP_FOK)
            n = _oco_fire(s, t, ev, n, ts)
            _release(s, t)
            return n
    cum0 = s.o_cum[t]
    n, stp_expired = _match(s, t, ev, n, ts, is_market)
    if s.o_cum[t] > cum0:
        n = _oco_fire(s, t, ev, n, ts)
    if s.o_left[t] == 0 and not stp_expired:
        _release(s, t)
        return n
    if stp_expired or is_market or tif != TIF_GTC:
        reason = EXP_STP if stp_expired else (EXP_MARKET_NO_LIQUIDITY if is_market else (EXP_FOK if tif == TIF_FOK else EXP_IOC))
        n = _emit_slot(s, ev, n, E_EXPIRED, ts, t, s.o_px[t], s.o_qty[t], 0, 0, 0, 0, reason)
        n = _oco_fire(s, t, ev, n, ts)
        _release(s, t)
        return n
    if not _rest(s, t):
        # no free level: the remainder cannot rest; expire it rather than corrupt the book
        n = _emit_slot(s, ev, n, E_EXPIRED, ts, t, s.o_px[t], s.o_qty[t], 0, 0, 0, 0, REJ_CAPACITY)
        n = _oco_fire(s, t, ev, n, ts)
        _release(s, t)
    return n


@helper(_nrt=False)
def _run_triggers(s, inst, ev, n, ts):
    """Trigger every pending stop whose condition the last trade price now meets; a triggered
    stop may trade and move the price, so scan again until nothing triggers."""
    again = True
    while again:
        again = False
        last = s.last_px[inst]
        k = 0
        while k < s.st_cnt[inst]:
            slot = s.st_slot[inst, k]
            if _stop_triggered(s.o_type[slot], s.o_side[slot], s.o_stop[slot], last):
                _remove_stop(s, slot)
                s.o_state[slot] = _FREE  # live but in no level until _execute rests it
                n = _emit_slot(s, ev, n, E_TRIGGERED, ts, slot, s.o_px[slot], s.o_qty[slot], 0, 0, 0, 0, 0)
                n = _oco_fire(s, slot, ev, n, ts)
                n = _execute(s, slot, ev, n, ts)
                again = True
                break
            k += 1
    return n


@helper(_nrt=False)
def _reject(o, ev, n, code):
    return _emit(ev, n, E_REJECTED, o.ts_ns, o.order_id, o.account, o.instrument, o.side,
                 o.otype, o.price, o.qty, 0, 0, 0, 0, 0, 0, code)


@helper(_nrt=False)
def _new_order(s, o, ev, n):
    ts = o.ts_ns
    code = _validate(s, o)
    if code == REJ_NONE and _h_find(s.h_key, s.h_val, o.order_id) >= 0:
        code = REJ_DUPLICATE
    peer = -1
    if code == REJ_NONE and o.oco_peer != 0:
        hi = _h_find(s.h_key, s.h_val, o.oco_peer)
        if hi < 0:
            code = REJ_UNKNOWN_ORDER
        else:
            peer = s.h_val[hi]
            if s.o_peer[peer] >= 0 or s.o_inst[peer] != o.instrument or s.o_side[peer] != o.side:
                code = REJ_BAD_PARAM  # an OCO list has exactly two legs, one symbol, one side
    inst = o.instrument
    if code == REJ_NONE:
        if s.nfree[0] == 0:
            code = REJ_CAPACITY
        elif o.otype >= T_STOP_LOSS:
            if _stop_triggered(o.otype, o.side, o.stop_price, s.last_px[inst]):
                code = REJ_STOP_WOULD_TRIGGER
            elif s.st_cnt[inst] >= s.st_slot.shape[1]:
                code = REJ_CAPACITY
        elif o.otype == T_LIMIT_MAKER:
            opp = 1 - o.side
            c = s.lv_cnt[inst, opp]
            if c > 0:
                best = s.lv_px[inst, opp, c - 1]
                if (o.side == SIDE_BID and best <= o.price) or (o.side == SIDE_ASK and best >= o.price):
                    code = REJ_WOULD_TAKE
    if code != REJ_NONE:
        s.counters[1] += 1
        return _reject(o, ev, n, code)

    s.nfree[0] -= 1
    slot = s.free[s.nfree[0]]
    s.o_id[slot] = o.order_id
    s.o_acct[slot] = o.account
    s.o_inst[slot] = inst
    s.o_side[slot] = o.side
    s.o_type[slot] = o.otype
    s.o_tif[slot] = o.tif if o.tif != 0 else TIF_GTC
    s.o_stp[slot] = o.stp
    s.o_px[slot] = o.price if o.otype in (T_LIMIT, T_LIMIT_MAKER, T_STOP_LOSS_LIMIT, T_TAKE_PROFIT_LIMIT) else 0
    s.o_qty[slot] = o.qty
    s.o_left[slot] = o.qty
    s.o_cum[slot] = 0
    s.o_stop[slot] = o.stop_price
    s.o_next[slot] = -1
    s.o_prev[slot] = -1
    s.o_peer[slot] = peer
    if peer >= 0:
        s.o_peer[peer] = slot
    _h_put(s.h_key, s.h_val, o.order_id, slot)
    n = _emit_slot(s, ev, n, E_NEW, ts, slot, s.o_px[slot], o.qty, 0, 0, 0, 0, 0)

    if o.otype >= T_STOP_LOSS:
        s.st_slot[inst, s.st_cnt[inst]] = slot
        s.st_cnt[inst] += 1
        s.o_state[slot] = _STOP_PENDING
        return n
    s.o_state[slot] = _FREE  # not linked anywhere until _execute rests it
    n = _execute(s, slot, ev, n, ts)
    return _run_triggers(s, inst, ev, n, ts)


@helper(_nrt=False)
def _cancel(s, o, ev, n):
    hi = _h_find(s.h_key, s.h_val, o.order_id)
    if hi < 0 or (o.instrument >= 0 and s.o_inst[s.h_val[hi]] != o.instrument):
        s.counters[1] += 1
        return _reject(o, ev, n, REJ_UNKNOWN_ORDER)
    slot = s.h_val[hi]
    peer = s.o_peer[slot]
    n = _cancel_slot(s, slot, ev, n, o.ts_ns, CXL_REQUEST)
    if peer >= 0 and s.o_state[peer] != _FREE:
        # cancelling one leg of an OCO cancels the list, as Binance does
        s.o_peer[peer] = -1
        n = _cancel_slot(s, peer, ev, n, o.ts_ns, CXL_OCO)
    return n


@kernel(_nrt=False)
def match_batch(s, orders, ev):
    """Process orders in sequence into events. Returns (orders consumed, events written); stops
    early (never mid-order) when the event buffer might not hold the next order's events."""
    n = 0
    cap = ev.shape[0]
    i = 0
    while i < orders.shape[0]:
        if cap - n < event_reserve(s):
            break
        o = orders[i]
        if o.op == OP_NEW:
            n = _new_order(s, o, ev, n)
        elif o.op == OP_CANCEL:
            n = _cancel(s, o, ev, n)
        else:
            s.counters[1] += 1
            n = _reject(o, ev, n, REJ_BAD_PARAM)
        i += 1
    return i, n


def submit(s: MatchState, orders: np.ndarray) -> np.ndarray:
    """Python convenience: run all orders, return every event in order."""
    out = []
    start = 0
    while start < orders.shape[0]:
        ev = np.zeros(event_reserve(s) + 8 * (orders.shape[0] - start), SIM_EVENT_DTYPE)
        used, n = match_batch(s, orders[start:], ev)
        out.append(ev[:n].copy())
        start += used
    return np.concatenate(out) if out else np.zeros(0, SIM_EVENT_DTYPE)


@kernel(_nrt=False)
def level_qty(s, inst, side, px):
    """Total resting quantity at (side, price); 0 when there is no such level."""
    li = _level_index(s.lv_px[inst, side], s.lv_cnt[inst, side], side, px)
    return s.lv_qty[inst, side, li] if li >= 0 else np.int64(0)


def best_level(s: MatchState, inst: int, side: int) -> tuple[int, int] | None:
    """(price, qty) of the best level of one side, None when the side is empty."""
    c = int(s.lv_cnt[inst, side])
    return (int(s.lv_px[inst, side, c - 1]), int(s.lv_qty[inst, side, c - 1])) if c else None


def book_levels(s: MatchState, inst: int, side: int) -> list[tuple[int, int]]:
    """(price, qty) of one side, best first (for tests and the market-data publisher)."""
    c = int(s.lv_cnt[inst, side])
    return [(int(s.lv_px[inst, side, k]), int(s.lv_qty[inst, side, k])) for k in range(c - 1, -1, -1)]


def warmup() -> None:
    s = make_engine(1, max_levels=8, max_orders=16, max_stops=4, n_accounts=2)
    o = np.zeros(4, SIM_ORDER_DTYPE)
    o["op"] = OP_NEW
    o["otype"] = T_LIMIT
    o["tif"] = TIF_GTC
    o["qty"] = 1
    o["price"] = [10, 11, 10, 11]
    o["side"] = [SIDE_BID, SIDE_ASK, SIDE_ASK, SIDE_BID]
    o["order_id"] = [1, 2, 3, 4]
    o["account"] = [0, 1, 1, 0]
    submit(s, o)
