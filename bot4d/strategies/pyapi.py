"""Python strategies: for logic that does not need the nogil fast path.

A Python strategy is a class configured per instrument::

    [instruments.strategy]
    kind = "python"
    class = "bot4d.strategies.py_quoter:Quoter"
    interval_ms = 200          # how often on_tick is called (at most)
    [instruments.strategy.params]
    offset_ticks = 50          # the class's own parameters (strings, integers, booleans)

The daemon builds it once with ``Class(params, ctx)`` and then, every ``interval_ms`` on the io
thread, calls ``on_tick(view, ctx) -> list`` with a consistent :class:`View` of its instrument
taken on the shard's thread (top of book, position, its own live orders, whether trading is
allowed). It returns intents made with ``ctx.place`` / ``ctx.cancel``; they go to the shard and
through pre-trade risk and the OMS like a kernel strategy's (an opening order without a protective
stop is refused by risk). Prices and quantities are the instrument's int units; ``ctx.price`` /
``ctx.qty`` convert from Decimal. An exception in a strategy is logged and the strategy is paused
(its orders are cancelled): a bug never takes the daemon down.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from bot4d.fixedpoint import to_fixed
from bot4d.kernels import oms_state as oms
from bot4d.records import (CMD_CANCEL, CMD_PLACE, INTENT_FLAG_REDUCE_ONLY, INTENT_FLAG_WANTS_SIZING, ORDER_INTENT_DTYPE,
                           SIDE_ASK, SIDE_BID)

__all__ = ["View", "Context", "PyStrategy", "BUY", "SELL"]

BUY = SIDE_BID
SELL = SIDE_ASK


@dataclass(frozen=True)
class View:
    now_ns: int
    usable: bool            # book LIVE, strategy not paused, trading state allows new orders
    bid: int                # best bid price units (0: none)
    bid_qty: int
    ask: int
    ask_qty: int
    position: int           # signed, qty units
    orders: list[dict[str, Any]] = field(default_factory=list)  # own live orders: order_id,
                                                                 # client_order_id, side, price,
                                                                 # qty, filled, state


@dataclass
class Context:
    instrument: int
    symbol: str
    tick: int               # price units per tick
    price_scale: int
    qty_scale: int
    coid_base: int          # this strategy's client order id space
    next_coid: int = 0

    def price(self, d: Decimal | str) -> int:
        return to_fixed(d, self.price_scale)

    def qty(self, d: Decimal | str) -> int:
        return to_fixed(d, self.qty_scale)

    def _intent(self, now_ns: int) -> np.void:
        self.next_coid += 1
        it = np.zeros(1, ORDER_INTENT_DTYPE)[0]
        it["client_order_id"] = self.coid_base + self.next_coid
        it["ts_ns"] = now_ns
        it["instrument"] = self.instrument
        it["strategy"] = self.instrument   # one strategy per instrument: its Kelly statistics' row
        return it

    def place(self, now_ns: int, side: int, price: int, qty: int, *, stop: int = 0, post_only: bool = False,
              tif: int = oms.TIF_GTC, reduce_only: bool = False, sized: bool = False,
              take_profit: int = 0) -> np.void:
        """A limit order (``post_only``: rejected rather than taking). Opening orders need ``stop``;
        ``take_profit`` > 0 makes the position's protection at the venue an OCO of the stop and a
        take-profit at that price (bot4d.kernels.protect).
        ``sized``: risk sets the quantity by the Kelly fraction of this strategy's closed trades
        (``risk.kelly_cap``, ``risk.kelly_min_trades``; ``qty`` > 0 caps it); before enough trades
        it is refused (REJ_KELLY_NO_STATS)."""
        it = self._intent(now_ns)
        it["command"] = CMD_PLACE
        it["side"] = side
        it["order_type"] = oms.OT_LIMIT
        it["tif"] = oms.TIF_POST_ONLY if post_only else tif
        it["price"] = price
        it["qty"] = qty
        it["stop_price"] = stop
        it["take_profit_price"] = take_profit
        it["flags"] = (INTENT_FLAG_REDUCE_ONLY if reduce_only else 0) | (INTENT_FLAG_WANTS_SIZING if sized else 0)
        return it

    def cancel(self, now_ns: int, order_id: int) -> np.void:
        it = self._intent(now_ns)
        it["command"] = CMD_CANCEL
        it["target_order_id"] = order_id
        return it


class PyStrategy(Protocol):
    def __init__(self, params: dict[str, Any], ctx: Context) -> None: ...

    def on_tick(self, view: View, ctx: Context) -> list[np.void]: ...


def load(class_path: str) -> type:
    """``package.module:Class`` -> the class; a clear error if it cannot be imported."""
    import importlib

    mod, _, name = class_path.partition(":")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"strategy class {class_path!r} cannot be loaded: {e}") from None
    if not callable(getattr(cls, "on_tick", None)):
        raise ValueError(f"strategy class {class_path!r} has no on_tick(view, ctx) method")
    return cls
