"""A Python strategy (``bot4d.strategies.pyapi``): one post-only order per side, ``offset_ticks``
behind the best price, each with a protective stop ``stop_ticks`` away; requoted when the book moved
more than ``requote_ticks``; everything pulled when the view is not usable.

Parameters: ``qty`` (decimal string, base units), ``offset_ticks``, ``stop_ticks``,
``requote_ticks`` (integers), ``max_position`` (decimal string): no side that would grow the
position beyond it is quoted.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from bot4d.strategies.pyapi import BUY, SELL, Context, View


class Quoter:
    def __init__(self, params: dict[str, Any], ctx: Context) -> None:
        try:
            self.qty = ctx.qty(Decimal(str(params["qty"])))
            self.max_pos = ctx.qty(Decimal(str(params["max_position"])))
            self.offset = int(params.get("offset_ticks", 10)) * ctx.tick
            self.stop = int(params.get("stop_ticks", 100)) * ctx.tick
            self.requote = int(params.get("requote_ticks", 5)) * ctx.tick
        except (KeyError, ValueError, ArithmeticError) as e:
            raise ValueError(f"py_quoter parameters: {e!r}") from None
        if self.qty <= 0 or self.max_pos < self.qty or self.offset < 0 or self.stop <= 0:
            raise ValueError("py_quoter: qty > 0, max_position >= qty, offset_ticks >= 0, stop_ticks > 0")

    def on_tick(self, view: View, ctx: Context) -> list[np.void]:
        now = view.now_ns
        out = []
        mine = {o["side"]: o for o in view.orders}
        if not view.usable or not view.bid or not view.ask:
            return [ctx.cancel(now, o["order_id"]) for o in view.orders]
        for side, want in ((BUY, view.bid - self.offset), (SELL, view.ask + self.offset)):
            grows = view.position + (self.qty if side == BUY else -self.qty)
            allowed = abs(grows) <= self.max_pos
            o = mine.get(side)
            if o is not None:
                if not allowed or abs(o["price"] - want) > self.requote:
                    out.append(ctx.cancel(now, o["order_id"]))
                continue  # a replacement comes once the cancel is through
            if allowed and want > 0:
                stop = want - self.stop if side == BUY else want + self.stop
                out.append(ctx.place(now, side, want, self.qty, stop=max(stop, ctx.tick), post_only=True))
        return out
