"""Order-book-imbalance taker: takes liquidity when one side of the book dominates.

imbalance = (bid depth - ask depth) / (bid depth + ask depth) over LEVELS levels, scaled by 1e9.
At or above +THRESHOLD it buys QTY with an IOC limit SLIP ticks through the best ask; at or below
-THRESHOLD it sells through the best bid. Each entry carries a protective stop STOP_TICKS from the
price it pays. It never holds more than MAX_POS, waits COOLDOWN_NS between entries and has at most
one order in flight. A position older than HOLD_NS is closed with a reduce-only IOC (no stop: it
only reduces). Nothing is sent while the book is not LIVE.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import drop_stale_cache, files, kernel
from bot4d.kernels import book as bk
from bot4d.kernels import oms_state as oms
from bot4d.records import (EV_ORDER_STATE, EV_RISK_REJECT, INTENT_FLAG_REDUCE_ONLY, SIDE_ASK,
                           SIDE_BID)
from bot4d.strategies import api
from bot4d.kernels import book_math

drop_stale_cache(__file__, files(bk, api, oms, book_math))  # book accessors are compiled in

P_LEVELS = api.N_COMMON_PARAMS + 0
P_THRESHOLD_E9 = api.N_COMMON_PARAMS + 1
P_QTY = api.N_COMMON_PARAMS + 2
P_MAX_POS = api.N_COMMON_PARAMS + 3
P_STOP_TICKS = api.N_COMMON_PARAMS + 4
P_SLIP_TICKS = api.N_COMMON_PARAMS + 5
P_COOLDOWN_NS = api.N_COMMON_PARAMS + 6
P_HOLD_NS = api.N_COMMON_PARAMS + 7
N_PARAMS = api.N_COMMON_PARAMS + 8

S_PENDING = api.N_COMMON_STATE + 0   # client order id in flight, 0 when none
S_LAST_ENTRY_NS = api.N_COMMON_STATE + 1
S_OPENED_NS = api.N_COMMON_STATE + 2  # when the current position went from flat to non-flat
S_LAST_POS = api.N_COMMON_STATE + 3
N_STATE = api.N_COMMON_STATE + 4


def make(strategy_id: int, *, tick: int, levels: int, threshold_e9: int, qty: int, max_pos: int,
         stop_ticks: int, slip_ticks: int = 0, cooldown_ns: int = 0, hold_ns: int = 10**9) -> tuple[np.ndarray, np.ndarray]:
    if min(tick, levels, qty, stop_ticks) < 1 or not 0 < threshold_e9 <= 10**9 or max_pos < qty:
        raise ValueError("imbalance taker: tick, levels, qty, stop ticks >= 1; threshold in (0, 1e9]; "
                         "max_pos >= qty")
    p = np.zeros(N_PARAMS, np.int64)
    p[api.P_STRATEGY_ID] = strategy_id
    p[api.P_COID_BASE] = (strategy_id + 1) << 40
    p[api.P_TICK] = tick
    p[P_LEVELS], p[P_THRESHOLD_E9], p[P_QTY], p[P_MAX_POS] = levels, threshold_e9, qty, max_pos
    p[P_STOP_TICKS], p[P_SLIP_TICKS], p[P_COOLDOWN_NS], p[P_HOLD_NS] = stop_ticks, slip_ticks, cooldown_ns, hold_ns
    return p, np.zeros(N_STATE, np.int64)


@kernel(_nrt=False)
def on_book(levels, bstate, inst, now_ns, pos, book_live, params, state, out, n):
    if state[S_LAST_POS] == 0 and pos != 0:
        state[S_OPENED_NS] = now_ns
    state[S_LAST_POS] = pos
    if not book_live or state[S_PENDING] != 0:
        return n
    tick = params[api.P_TICK]
    bb, _ = bk.best_bid(levels, bstate, inst)
    ba, _ = bk.best_ask(levels, bstate, inst)
    if bb == 0 or ba == 0:
        return n
    slip = params[P_SLIP_TICKS] * tick
    if pos != 0 and now_ns - state[S_OPENED_NS] >= params[P_HOLD_NS]:
        side = SIDE_ASK if pos > 0 else SIDE_BID
        px = bb - slip if pos > 0 else ba + slip
        if px <= 0:
            px = tick
        n2, c = api.emit_place(out, n, params, state, inst, now_ns, side, oms.OT_LIMIT, oms.TIF_IOC,
                               px, abs(pos), 0, INTENT_FLAG_REDUCE_ONLY)
        if n2 > n:
            state[S_PENDING] = c
        return n2
    if now_ns - state[S_LAST_ENTRY_NS] < params[P_COOLDOWN_NS]:
        return n
    imb = bk.imbalance(levels, bstate, inst, params[P_LEVELS])
    q = params[P_QTY]
    stop = params[P_STOP_TICKS] * tick
    if imb >= params[P_THRESHOLD_E9] and pos + q <= params[P_MAX_POS] and ba + slip - stop > 0:
        px = ba + slip
        n2, c = api.emit_place(out, n, params, state, inst, now_ns, SIDE_BID, oms.OT_LIMIT, oms.TIF_IOC,
                               px, q, px - stop, 0)
    elif imb <= -params[P_THRESHOLD_E9] and pos - q >= -params[P_MAX_POS]:
        px = bb - slip
        if px <= 0:
            return n
        n2, c = api.emit_place(out, n, params, state, inst, now_ns, SIDE_ASK, oms.OT_LIMIT, oms.TIF_IOC,
                               px, q, px + stop, 0)
    else:
        return n
    if n2 > n:
        state[S_PENDING] = c
        state[S_LAST_ENTRY_NS] = now_ns
    return n2


@kernel(_nrt=False)
def on_order(events, start, end, params, state):
    for k in range(start, end):
        e = events[k]
        if e.client_order_id != 0 and e.client_order_id == state[S_PENDING]:
            if (e.kind == EV_ORDER_STATE and api.is_terminal(e.state)) or e.kind == EV_RISK_REJECT:
                state[S_PENDING] = 0


def warmup() -> None:
    from bot4d.records import JOURNAL_EVENT_DTYPE, MD_LEVEL, MD_UPDATE_DTYPE

    b = bk.make_books(1, 8)
    u = np.zeros(2, MD_UPDATE_DTYPE)
    u["kind"], u["side"], u["price"], u["qty"] = MD_LEVEL, [SIDE_BID, SIDE_ASK], [100, 110], [9, 1]
    b.apply(u)
    p, s = make(0, tick=1, levels=1, threshold_e9=5 * 10**8, qty=1, max_pos=2, stop_ticks=5)
    on_book(b.levels, b.state, 0, 1, 0, True, p, s, api.intents(4), 0)
    on_order(np.zeros(1, JOURNAL_EVENT_DTYPE), 0, 1, p, s)
