"""Market maker: post-only quotes around the microprice, skewed against inventory.

fair = microprice (floor to a price unit). skew = -position * SKEW_TICKS / LOT ticks (long →
quotes move down, so the ask fills first and inventory returns toward flat). The bid is
fair - HALF_SPREAD ticks + skew rounded down to a tick, the ask fair + HALF_SPREAD + skew rounded
up, and neither may cross the opposite best (post-only). A side is not quoted when filling it would
take |position| past MAX_INV. A live quote is cancelled when it is REQUOTE ticks or more away from
where it should be, and re-placed after the cancel is confirmed; quotes are replaced at most once
per MIN_REQUOTE_NS. When the book is not LIVE every quote is pulled. Every quote carries a
protective stop STOP_TICKS beyond its price; a bid too close to zero for its stop is not quoted.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import drop_stale_cache, files, helper, kernel
from bot4d.kernels import book as bk
from bot4d.kernels import oms_state as oms
from bot4d.records import EV_ORDER_NEW, EV_ORDER_STATE, EV_RISK_REJECT, SIDE_ASK, SIDE_BID
from bot4d.strategies import api
from bot4d.kernels import book_math

drop_stale_cache(__file__, files(bk, api, oms, book_math))  # book accessors are compiled in

# params
P_HALF_SPREAD = api.N_COMMON_PARAMS + 0   # ticks
P_QTY = api.N_COMMON_PARAMS + 1           # qty units per quote
P_MAX_INV = api.N_COMMON_PARAMS + 2       # qty units
P_SKEW_TICKS = api.N_COMMON_PARAMS + 3    # ticks of skew per LOT of inventory
P_LOT = api.N_COMMON_PARAMS + 4           # qty units
P_STOP_TICKS = api.N_COMMON_PARAMS + 5
P_REQUOTE_TICKS = api.N_COMMON_PARAMS + 6
P_MIN_REQUOTE_NS = api.N_COMMON_PARAMS + 7
N_PARAMS = api.N_COMMON_PARAMS + 8

# state, per side (bid block then ask block)
_COID, _OID, _PX, _LIVE, _CXL = 0, 1, 2, 3, 4
_BLOCK = 5
S_BID = api.N_COMMON_STATE
S_ASK = S_BID + _BLOCK
S_LAST_QUOTE_NS = S_ASK + _BLOCK
N_STATE = S_LAST_QUOTE_NS + 1

LIVE_NONE = 0      # no order
LIVE_PENDING = 1   # placed, OMS order id not known yet
LIVE_WORKING = 2   # known order id
LIVE_CANCELLING = 3


def make(strategy_id: int, *, tick: int, half_spread_ticks: int, qty: int, max_inventory: int,
         skew_ticks_per_lot: int, lot: int, stop_ticks: int, requote_ticks: int = 1,
         min_requote_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(params, state) for one instrument."""
    if min(tick, qty, lot, stop_ticks, requote_ticks) < 1 or half_spread_ticks < 1 or max_inventory < qty:
        raise ValueError("market maker: tick, qty, lot, stop and requote ticks >= 1, half spread >= 1, "
                         "max inventory >= qty")
    p = np.zeros(N_PARAMS, np.int64)
    p[api.P_STRATEGY_ID] = strategy_id
    p[api.P_COID_BASE] = (strategy_id + 1) << 40
    p[api.P_TICK] = tick
    p[P_HALF_SPREAD], p[P_QTY], p[P_MAX_INV] = half_spread_ticks, qty, max_inventory
    p[P_SKEW_TICKS], p[P_LOT], p[P_STOP_TICKS] = skew_ticks_per_lot, lot, stop_ticks
    p[P_REQUOTE_TICKS], p[P_MIN_REQUOTE_NS] = requote_ticks, min_requote_ns
    return p, np.zeros(N_STATE, np.int64)


@helper(_nrt=False)
def _floor_tick(px, tick):
    return (px // tick) * tick


@helper(_nrt=False)
def _side(out, n, params, state, base, inst, now_ns, side, want, px, stop):
    live = state[base + _LIVE]
    tick = params[api.P_TICK]
    if live == LIVE_WORKING:
        off = px - state[base + _PX]
        if off < 0:
            off = -off
        if not want or off >= params[P_REQUOTE_TICKS] * tick:
            n2, c = api.emit_cancel(out, n, params, state, inst, now_ns, state[base + _OID])
            if n2 > n:
                state[base + _LIVE] = LIVE_CANCELLING
                state[base + _CXL] = c
            return n2, False
        return n, False
    if live == LIVE_NONE and want:
        n2, c = api.emit_place(out, n, params, state, inst, now_ns, side, oms.OT_LIMIT,
                               oms.TIF_POST_ONLY, px, params[P_QTY], stop, 0)
        if n2 > n:
            state[base + _COID] = c
            state[base + _OID] = 0
            state[base + _PX] = px
            state[base + _LIVE] = LIVE_PENDING
            return n2, True
    return n, False


@kernel(_nrt=False)
def on_book(levels, bstate, inst, now_ns, pos, book_live, params, state, out, n):
    tick = params[api.P_TICK]
    if not book_live:
        # never price off a book that is not LIVE: pull what is working
        n, _ = _side(out, n, params, state, S_BID, inst, now_ns, SIDE_BID, False, 0, 0)
        n, _ = _side(out, n, params, state, S_ASK, inst, now_ns, SIDE_ASK, False, 0, 0)
        return n
    fair, _frac, ok = bk.microprice(levels, bstate, inst)
    if not ok:
        return n
    bb, _ = bk.best_bid(levels, bstate, inst)
    ba, _ = bk.best_ask(levels, bstate, inst)
    lots = pos * params[P_SKEW_TICKS]
    skew = -(abs(lots) // params[P_LOT]) if lots > 0 else abs(lots) // params[P_LOT]
    half = params[P_HALF_SPREAD]
    bid = _floor_tick(fair + (skew - half) * tick, tick)
    ask = -_floor_tick(-(fair + (skew + half) * tick), tick)  # ceiling to a tick
    if bid >= ba:
        bid = _floor_tick(ba - 1, tick)
    if ask <= bb:
        ask = -_floor_tick(-(bb + 1), tick)
    q = params[P_QTY]
    stop = params[P_STOP_TICKS] * tick
    # a bid whose stop would be at or below zero cannot be protected: it is not quoted
    want_bid = bid - stop > 0 and pos + q <= params[P_MAX_INV]
    want_ask = pos - q >= -params[P_MAX_INV]
    if now_ns - state[S_LAST_QUOTE_NS] < params[P_MIN_REQUOTE_NS]:
        return n  # quoted too recently: leave the quotes as they are
    n, pb = _side(out, n, params, state, S_BID, inst, now_ns, SIDE_BID, want_bid, bid, bid - stop)
    n, pa = _side(out, n, params, state, S_ASK, inst, now_ns, SIDE_ASK, want_ask, ask, ask + stop)
    if pb or pa:
        state[S_LAST_QUOTE_NS] = now_ns
    return n


@helper(_nrt=False)
def _track(state, base, e):
    coid = e.client_order_id
    if coid == 0:
        return
    if coid == state[base + _COID] and state[base + _LIVE] != LIVE_NONE:
        if e.kind == EV_ORDER_NEW:
            state[base + _OID] = e.order_id
            if state[base + _LIVE] == LIVE_PENDING:
                state[base + _LIVE] = LIVE_WORKING
        elif (e.kind == EV_ORDER_STATE and api.is_terminal(e.state)) or e.kind == EV_RISK_REJECT:
            state[base + _LIVE] = LIVE_NONE
            state[base + _OID] = 0
    elif coid == state[base + _CXL] and state[base + _LIVE] == LIVE_CANCELLING:
        # our cancel itself was refused (e.g. the order had just filled): the order's own
        # terminal event clears the side; otherwise it is still working
        if (e.kind == EV_ORDER_STATE and e.state == oms.S_REJECTED) or e.kind == EV_RISK_REJECT:
            state[base + _LIVE] = LIVE_WORKING


@kernel(_nrt=False)
def on_order(events, start, end, params, state):
    for k in range(start, end):
        e = events[k]
        _track(state, S_BID, e)
        _track(state, S_ASK, e)


def warmup() -> None:
    from bot4d.records import JOURNAL_EVENT_DTYPE, MD_LEVEL, MD_UPDATE_DTYPE

    b = bk.make_books(1, 8)
    u = np.zeros(2, MD_UPDATE_DTYPE)
    u["kind"], u["side"], u["price"], u["qty"] = MD_LEVEL, [SIDE_BID, SIDE_ASK], [100, 110], 5
    b.apply(u)
    p, s = make(0, tick=1, half_spread_ticks=2, qty=1, max_inventory=10, skew_ticks_per_lot=1,
                lot=1, stop_ticks=5)
    out = api.intents(8)
    on_book(b.levels, b.state, 0, 1, 0, True, p, s, out, 0)
    on_order(np.zeros(1, JOURNAL_EVENT_DTYPE), 0, 1, p, s)
