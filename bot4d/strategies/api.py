"""The strategy API.

A fast-path strategy is a module with two ``@njit(nogil=True)`` kernels and a parameter layout:

``on_book(levels, bstate, inst, now_ns, pos, book_live, params, state, out, n) -> n``
    Called by the shard loop after a batch of market data touched instrument ``inst``.
    ``levels``/``bstate`` are the shard's ``Books.levels`` and ``Books.state`` (the book accessors
    take these two arrays); ``pos`` the strategy account's signed
    position in qty units; ``book_live`` whether the book is LIVE (a strategy must never price off
    a book that is not: pull quotes, place nothing). It appends ``ORDER_INTENT_DTYPE`` records to
    ``out`` from index ``n`` and returns the new count. It must not write past ``out.shape[0]``.
``on_order(events, start, end, params, state) -> None``
    Called with the shard's journal events (``JOURNAL_EVENT_DTYPE``) produced since the last call,
    so the strategy learns the order ids, fills and ends of its own orders by client order id.

``params`` and ``state`` are int64 arrays owned by the strategy instance (one instance trades one
instrument); prices and quantities in them are the instrument's int units. Client order ids are
``params[P_COID_BASE] + state[S_NEXT_COID]``, so each strategy has its own id space and a retried
intent keeps its id (the OMS idempotency table then refuses the duplicate).

Every position-opening order carries a protective ``stop_price`` (below the entry for a buy,
above for a sell): risk refuses an opening order without one. Orders that only reduce a position
are flagged ``INTENT_FLAG_REDUCE_ONLY`` and need none.

Python strategies (logic that does not need the fast path) are classes configured as
``kind = "python"``, ``class = "package.module:Class"``; they are described in
``bot4d.strategies.pyapi`` and called by the io thread at a bounded rate with a consistent view
of their instrument (top of book, position, their own live orders); their intents enter the same
risk and OMS kernels as everything else, on the shard's thread.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import kernel
from bot4d.kernels import oms_state as oms
from bot4d.records import CMD_CANCEL, CMD_PLACE, ORDER_INTENT_DTYPE

# params common to every strategy (each strategy adds its own after these)
P_STRATEGY_ID = 0
P_COID_BASE = 1
P_TICK = 2           # price units per tick
N_COMMON_PARAMS = 3
# state common to every strategy
S_NEXT_COID = 0
N_COMMON_STATE = 1

TERMINAL_STATES = (oms.S_FILLED, oms.S_CANCELLED, oms.S_REJECTED, oms.S_EXPIRED)


@kernel(_nrt=False)
def next_coid(params, state):
    state[S_NEXT_COID] += 1
    return params[P_COID_BASE] + state[S_NEXT_COID]


@kernel(_nrt=False)
def emit_place(out, n, params, state, inst, now_ns, side, order_type, tif, price, qty, stop, flags):
    """Append a place intent; returns (new n, its client order id). n unchanged when out is full."""
    if n >= out.shape[0]:
        return n, np.int64(0)
    coid = next_coid(params, state)
    it = out[n]
    it.client_order_id = coid
    it.ts_ns = now_ns
    it.command = CMD_PLACE
    it.side = side
    it.order_type = order_type
    it.tif = tif
    it.instrument = inst
    it.price = price
    it.qty = qty
    it.stop_price = stop
    it.take_profit_price = 0
    it.target_order_id = 0
    it.batch_id = 0
    it.oco_group = 0
    it.strategy = params[P_STRATEGY_ID]
    it.flags = flags
    return n + 1, coid


@kernel(_nrt=False)
def emit_cancel(out, n, params, state, inst, now_ns, order_id):
    """Append a cancel of OMS order ``order_id``; returns (new n, the cancel's client order id)."""
    if n >= out.shape[0]:
        return n, np.int64(0)
    coid = next_coid(params, state)
    it = out[n]
    it.client_order_id = coid
    it.ts_ns = now_ns
    it.command = CMD_CANCEL
    it.side = 0
    it.order_type = 0
    it.tif = 0
    it.instrument = inst
    it.price = 0
    it.qty = 0
    it.stop_price = 0
    it.take_profit_price = 0
    it.target_order_id = order_id
    it.batch_id = 0
    it.oco_group = 0
    it.strategy = params[P_STRATEGY_ID]
    it.flags = 0
    return n + 1, coid


@kernel(_nrt=False)
def is_terminal(state):
    return (state == oms.S_FILLED or state == oms.S_CANCELLED or state == oms.S_REJECTED
            or state == oms.S_EXPIRED)


def intents(n: int) -> np.ndarray:
    return np.zeros(n, ORDER_INTENT_DTYPE)
