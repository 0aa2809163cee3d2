"""Positions, average entry price, realised/unrealised P&L and balances, exact in fixed point.

State layout (``PositionBook``, made by ``make_positions``); every array is indexed
``[account, instrument]`` except ``balance`` (``[account]``). Prices are instrument price units,
quantities instrument quantity units; *notional units* are price units x quantity units (one
notional unit = 10**-(price_scale + qty_scale) of the quote asset).

===============  =======  ==================================================================
array            dtype    meaning
===============  =======  ==================================================================
``qty``          int64    signed position in quantity units (+ long, - short)
``cost``         int64    signed cost basis of the open position in notional units
                          (sum of entry price x signed qty of the lots still open)
``avg_px``       int64    average entry price units = round_half_even(cost / qty), 0 if flat
``realised``     int64    realised P&L in notional units, gross of fees
``fees``         int64    fees paid in notional units (negative = rebates received)
``fill_qty``     int64    signed sum of all fills applied (audit: always equals ``qty``)
``mark_px``      int64    last mark price per instrument (shape ``[instrument]``), 0 = none
``balance``      int64    quote cash per account in notional units: deposits - sum(signed
                          qty x price) - fees
===============  =======  ==================================================================

Rounding, defined once: reducing a position releases ``round_half_even(cost * closed / |qty|)``
of the cost basis (a full close releases all of it), and realised P&L is the close's cash minus
the released cost. Cost is conserved exactly, so for every account and instrument
``sum(cash of fills) == realised - cost`` holds to the unit, and only the split between realised
and unrealised carries the half-unit rounding. A fill that goes through zero closes the whole
position and opens the remainder at the fill price. Any product or sum that would leave int64 is
refused (``apply_fill`` returns False and changes nothing) instead of wrapping.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot4d.jitcache import kernel
from bot4d.kernels.oms_arith import add_ok, div_half_even, mul_div_half_even, mul_ok


class PositionBook(NamedTuple):
    qty: np.ndarray
    cost: np.ndarray
    avg_px: np.ndarray
    realised: np.ndarray
    fees: np.ndarray
    fill_qty: np.ndarray
    mark_px: np.ndarray
    balance: np.ndarray


def make_positions(n_accounts: int, n_instruments: int) -> PositionBook:
    """All-flat positions, zero balances (set ``balance`` from deposits before trading)."""
    if n_accounts < 1 or n_instruments < 1:
        raise ValueError("need at least one account and one instrument")
    z = lambda: np.zeros((n_accounts, n_instruments), np.int64)  # noqa: E731
    return PositionBook(qty=z(), cost=z(), avg_px=z(), realised=z(), fees=z(), fill_qty=z(),
                        mark_px=np.zeros(n_instruments, np.int64),
                        balance=np.zeros(n_accounts, np.int64))


@kernel(_nrt=False)
def apply_fill(pb, acct: int, inst: int, buy: bool, px: int, q: int, fee: int) -> bool:
    """Apply one fill of ``q`` > 0 units at ``px`` with ``fee`` (notional units, signed).

    All results are computed first and written only if every step fits in int64, so a refused
    fill leaves the book unchanged.
    """
    if q <= 0 or px < 0:
        return False
    pos = pb.qty[acct, inst]
    cost = pb.cost[acct, inst]
    realised = pb.realised[acct, inst]
    dq = q if buy else -q
    notional, ok = mul_ok(px, q)
    if not ok:
        return False
    cash = -notional if buy else notional
    if pos == 0 or (pos > 0) == buy:
        # opening or adding: cost grows by the signed notional of the fill
        new_cost, ok = add_ok(cost, -cash)
        if not ok:
            return False
        new_pos, ok = add_ok(pos, dq)
        if not ok:
            return False
        new_real = realised
    else:
        apos = pos if pos > 0 else -pos
        close = q if q < apos else apos
        if close == apos:
            released = cost
        else:
            released, ok = mul_div_half_even(cost, close, apos)
            if not ok:
                return False
        close_cash, ok = mul_ok(px, close)
        if not ok:
            return False
        if buy:
            close_cash = -close_cash
        gain, ok = add_ok(close_cash, -released)
        if not ok:
            return False
        new_real, ok = add_ok(realised, gain)
        if not ok:
            return False
        new_cost = cost - released
        new_pos = pos + (close if buy else -close)
        rest = q - close
        if rest > 0:
            # through zero: the remainder opens a new position at the fill price
            open_notional, ok = mul_ok(px, rest)
            if not ok:
                return False
            new_cost = open_notional if buy else -open_notional
            new_pos = rest if buy else -rest
    new_fees, ok = add_ok(pb.fees[acct, inst], fee)
    if not ok:
        return False
    bal, ok = add_ok(pb.balance[acct], cash)
    if not ok:
        return False
    bal, ok = add_ok(bal, -fee)
    if not ok:
        return False
    new_fill, ok = add_ok(pb.fill_qty[acct, inst], dq)
    if not ok:
        return False
    if new_pos == 0:
        avg = 0
    else:
        avg, ok = div_half_even(new_cost, new_pos)
        if not ok:
            return False
    pb.qty[acct, inst] = new_pos
    pb.cost[acct, inst] = new_cost
    pb.avg_px[acct, inst] = avg
    pb.realised[acct, inst] = new_real
    pb.fees[acct, inst] = new_fees
    pb.fill_qty[acct, inst] = new_fill
    pb.balance[acct] = bal
    return True


@kernel(_nrt=False)
def unrealised(pb, acct: int, inst: int, mark: int) -> tuple[int, bool]:
    """Mark-to-market P&L of the open position at ``mark``: qty x mark - cost."""
    v, ok = mul_ok(pb.qty[acct, inst], mark)
    if not ok:
        return 0, False
    return add_ok(v, -pb.cost[acct, inst])


def warmup() -> None:
    pb = make_positions(1, 1)
    apply_fill(pb, 0, 0, True, 100, 2, 1)
    apply_fill(pb, 0, 0, False, 101, 3, 1)
    unrealised(pb, 0, 0, 100)
