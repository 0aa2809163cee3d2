"""Per-instrument order validation with Binance's exchange-filter rules, in integer units.

Rules as documented in https://github.com/binance/binance-spot-api-docs/blob/master/filters.md
(also https://developers.binance.com/docs/binance-spot-api-docs/filters), section by section:

* PRICE_FILTER: ``price >= minPrice``, ``price <= maxPrice``, ``price % tickSize == 0``; each rule
  disabled when its parameter is 0; applies to ``price`` and ``stopPrice``.
* LOT_SIZE: ``quantity >= minQty``, ``quantity <= maxQty``, ``quantity % stepSize == 0``
  (a 0 here disables the rule too, so an unconfigured instrument is not silently unusable).
* MARKET_LOT_SIZE: the same three rules for MARKET orders (0 = disabled).
* MIN_NOTIONAL / NOTIONAL: ``price * quantity >= minNotional`` and ``<= maxNotional``; for MARKET
  orders the reference (average) price replaces ``price`` and each bound applies only if
  ``applyMinToMarket`` / ``applyMaxToMarket`` (MIN_NOTIONAL's ``applyToMarket``) is set.
* PERCENT_PRICE: ``price <= weightedAveragePrice * multiplierUp`` and
  ``price >= weightedAveragePrice * multiplierDown``;
  PERCENT_PRICE_BY_SIDE: the same with ``bidMultiplierUp/Down`` for BUY and
  ``askMultiplierUp/Down`` for SELL. ``weightedAveragePrice`` is ``ref_px`` here, which the caller
  keeps current (the venue's average price, or the last price when ``avgPriceMins`` is 0).

Units: prices in price units, quantities in quantity units, notionals in notional units (price
units x quantity units), multipliers in 1e-8 units (``MULT_SCALE``: "1.3000" -> 130_000_000).
The percent bands are evaluated exactly: ``price <= floor(ref * up / 1e8)`` and
``price >= ceil(ref * down / 1e8)`` with 128-bit intermediates, which is the documented
inequality for integer prices, never a float approximation.
"""
from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import numba as nb
import numpy as np

from bot4d.fixedpoint import to_fixed
from bot4d.kernels.oms_arith import mul_div_ceil_nonneg_div, mul_ok

MULT_SCALE = 100_000_000
MULT_DECIMALS = 8

F_OK = 0
F_BAD_QTY = 101          # quantity <= 0
F_BAD_PRICE = 102        # limit price <= 0 (or negative stop)
F_PRICE_MIN = 103
F_PRICE_MAX = 104
F_PRICE_TICK = 105
F_QTY_MIN = 106
F_QTY_MAX = 107
F_QTY_STEP = 108
F_NOTIONAL_MIN = 109
F_NOTIONAL_MAX = 110
F_PERCENT_UP = 111
F_PERCENT_DOWN = 112
F_NO_REFERENCE = 113     # a rule needs ref_px and there is none yet
F_OVERFLOW = 114
F_MKT_QTY_MIN = 115
F_MKT_QTY_MAX = 116
F_MKT_QTY_STEP = 117
F_STOP_MIN = 118
F_STOP_MAX = 119
F_STOP_TICK = 120
F_BAD_INSTRUMENT = 121
FILTER_REASON_NAMES = {
    F_BAD_QTY: "quantity must be > 0", F_BAD_PRICE: "price must be > 0",
    F_PRICE_MIN: "PRICE_FILTER minPrice", F_PRICE_MAX: "PRICE_FILTER maxPrice",
    F_PRICE_TICK: "PRICE_FILTER tickSize", F_QTY_MIN: "LOT_SIZE minQty",
    F_QTY_MAX: "LOT_SIZE maxQty", F_QTY_STEP: "LOT_SIZE stepSize",
    F_NOTIONAL_MIN: "NOTIONAL minNotional", F_NOTIONAL_MAX: "NOTIONAL maxNotional",
    F_PERCENT_UP: "PERCENT_PRICE multiplierUp", F_PERCENT_DOWN: "PERCENT_PRICE multiplierDown",
    F_NO_REFERENCE: "no reference price", F_OVERFLOW: "value out of int64 range",
    F_MKT_QTY_MIN: "MARKET_LOT_SIZE minQty", F_MKT_QTY_MAX: "MARKET_LOT_SIZE maxQty",
    F_MKT_QTY_STEP: "MARKET_LOT_SIZE stepSize", F_STOP_MIN: "PRICE_FILTER minPrice (stop)",
    F_STOP_MAX: "PRICE_FILTER maxPrice (stop)", F_STOP_TICK: "PRICE_FILTER tickSize (stop)",
    F_BAD_INSTRUMENT: "unknown instrument",
}


class FilterTable(NamedTuple):
    min_price: np.ndarray
    max_price: np.ndarray
    tick: np.ndarray
    min_qty: np.ndarray
    max_qty: np.ndarray
    step: np.ndarray
    mkt_min_qty: np.ndarray
    mkt_max_qty: np.ndarray
    mkt_step: np.ndarray
    min_notional: np.ndarray
    max_notional: np.ndarray
    min_to_market: np.ndarray   # int8 0/1
    max_to_market: np.ndarray   # int8 0/1
    bid_up: np.ndarray          # 1e-8 units; 0 disables (PERCENT_PRICE sets bid_* = ask_*)
    bid_down: np.ndarray
    ask_up: np.ndarray
    ask_down: np.ndarray
    ref_px: np.ndarray          # weightedAveragePrice, price units; 0 = unknown


def make_filters(n_instruments: int) -> FilterTable:
    """A table with every rule disabled."""
    z = lambda dt=np.int64: np.zeros(n_instruments, dt)  # noqa: E731
    return FilterTable(z(), z(), z(), z(), z(), z(), z(), z(), z(), z(), z(), z(np.int8),
                       z(np.int8), z(), z(), z(), z(), z())


def _mult(v: str | Decimal) -> int:
    return to_fixed(v, MULT_DECIMALS)


def set_from_binance(ft: FilterTable, inst: int, filters: list[dict], price_scale: int,
                     qty_scale: int) -> None:
    """Load one symbol's ``/exchangeInfo`` filters (strings, exact) into row ``inst``.

    Raises FixedPointError if a value is not representable at the instrument's scales, so a
    misconfigured instrument fails at load time rather than rejecting (or passing) orders later.
    """
    nscale = price_scale + qty_scale
    for f in filters:
        t = f["filterType"]
        if t == "PRICE_FILTER":
            ft.min_price[inst] = to_fixed(f["minPrice"], price_scale)
            ft.max_price[inst] = to_fixed(f["maxPrice"], price_scale)
            ft.tick[inst] = to_fixed(f["tickSize"], price_scale)
        elif t == "LOT_SIZE":
            ft.min_qty[inst] = to_fixed(f["minQty"], qty_scale)
            ft.max_qty[inst] = to_fixed(f["maxQty"], qty_scale)
            ft.step[inst] = to_fixed(f["stepSize"], qty_scale)
        elif t == "MARKET_LOT_SIZE":
            ft.mkt_min_qty[inst] = to_fixed(f["minQty"], qty_scale)
            ft.mkt_max_qty[inst] = to_fixed(f["maxQty"], qty_scale)
            ft.mkt_step[inst] = to_fixed(f["stepSize"], qty_scale)
        elif t == "MIN_NOTIONAL":
            ft.min_notional[inst] = to_fixed(f["minNotional"], nscale)
            ft.min_to_market[inst] = 1 if f.get("applyToMarket") else 0
        elif t == "NOTIONAL":
            ft.min_notional[inst] = to_fixed(f["minNotional"], nscale)
            ft.max_notional[inst] = to_fixed(f["maxNotional"], nscale)
            ft.min_to_market[inst] = 1 if f.get("applyMinToMarket") else 0
            ft.max_to_market[inst] = 1 if f.get("applyMaxToMarket") else 0
        elif t == "PERCENT_PRICE":
            ft.bid_up[inst] = ft.ask_up[inst] = _mult(f["multiplierUp"])
            ft.bid_down[inst] = ft.ask_down[inst] = _mult(f["multiplierDown"])
        elif t == "PERCENT_PRICE_BY_SIDE":
            ft.bid_up[inst] = _mult(f["bidMultiplierUp"])
            ft.bid_down[inst] = _mult(f["bidMultiplierDown"])
            ft.ask_up[inst] = _mult(f["askMultiplierUp"])
            ft.ask_down[inst] = _mult(f["askMultiplierDown"])
        # other filter types (order counts, iceberg, trailing) are not per-order arithmetic


@nb.njit(cache=True, nogil=True, _nrt=False)
def _price_rules(ft, inst: int, px: int, r_min: int, r_max: int, r_tick: int) -> int:
    if ft.min_price[inst] != 0 and px < ft.min_price[inst]:
        return r_min
    if ft.max_price[inst] != 0 and px > ft.max_price[inst]:
        return r_max
    if ft.tick[inst] != 0 and px % ft.tick[inst] != 0:
        return r_tick
    return F_OK


@nb.njit(cache=True, nogil=True, _nrt=False)
def check_order(ft, inst: int, buy: bool, market: bool, px: int, qty: int, stop_px: int) -> int:
    """F_OK or the first failing rule's F_* code. ``px`` is ignored for market orders."""
    if inst < 0 or inst >= ft.tick.shape[0]:
        return F_BAD_INSTRUMENT
    if qty <= 0:
        return F_BAD_QTY
    if stop_px < 0 or (not market and px <= 0):
        return F_BAD_PRICE
    if stop_px > 0:
        r = _price_rules(ft, inst, stop_px, F_STOP_MIN, F_STOP_MAX, F_STOP_TICK)
        if r != F_OK:
            return r
    if not market:
        r = _price_rules(ft, inst, px, F_PRICE_MIN, F_PRICE_MAX, F_PRICE_TICK)
        if r != F_OK:
            return r
    # LOT_SIZE applies to every order; MARKET_LOT_SIZE additionally to market orders
    if ft.min_qty[inst] != 0 and qty < ft.min_qty[inst]:
        return F_QTY_MIN
    if ft.max_qty[inst] != 0 and qty > ft.max_qty[inst]:
        return F_QTY_MAX
    if ft.step[inst] != 0 and qty % ft.step[inst] != 0:
        return F_QTY_STEP
    if market:
        if ft.mkt_min_qty[inst] != 0 and qty < ft.mkt_min_qty[inst]:
            return F_MKT_QTY_MIN
        if ft.mkt_max_qty[inst] != 0 and qty > ft.mkt_max_qty[inst]:
            return F_MKT_QTY_MAX
        if ft.mkt_step[inst] != 0 and qty % ft.mkt_step[inst] != 0:
            return F_MKT_QTY_STEP
    # NOTIONAL
    want_min = ft.min_notional[inst] != 0 and (not market or ft.min_to_market[inst] != 0)
    want_max = ft.max_notional[inst] != 0 and (not market or ft.max_to_market[inst] != 0)
    if want_min or want_max:
        npx = px
        if market:
            npx = ft.ref_px[inst]
            if npx <= 0:
                return F_NO_REFERENCE
        notional, ok = mul_ok(npx, qty)
        if not ok:
            # too big to represent: certainly above any configured maximum
            return F_NOTIONAL_MAX if want_max else F_OVERFLOW
        if want_min and notional < ft.min_notional[inst]:
            return F_NOTIONAL_MIN
        if want_max and notional > ft.max_notional[inst]:
            return F_NOTIONAL_MAX
    # PERCENT_PRICE(_BY_SIDE), limit prices only
    if not market:
        up = ft.bid_up[inst] if buy else ft.ask_up[inst]
        down = ft.bid_down[inst] if buy else ft.ask_down[inst]
        if up != 0 or down != 0:
            ref = ft.ref_px[inst]
            if ref <= 0:
                return F_NO_REFERENCE
            if up != 0:
                # floor(ref*up/S) == -ceil(-ref*up/S)
                c, ok = mul_div_ceil_nonneg_div(-ref, up, MULT_SCALE)
                if ok and px > -c:
                    return F_PERCENT_UP
            if down != 0:
                lo, ok = mul_div_ceil_nonneg_div(ref, down, MULT_SCALE)
                if not ok or px < lo:
                    return F_PERCENT_DOWN
    return F_OK


@nb.njit(cache=True, nogil=True, _nrt=False)
def check_batch(ft, inst, buy, market, px, qty, stop_px, out) -> int:
    """check_order over arrays; writes codes into ``out`` and returns how many failed."""
    bad = 0
    for i in range(inst.shape[0]):
        out[i] = check_order(ft, inst[i], buy[i] != 0, market[i] != 0, px[i], qty[i], stop_px[i])
        if out[i] != F_OK:
            bad += 1
    return bad


def warmup() -> None:
    ft = make_filters(1)
    check_order(ft, 0, True, False, 100, 1, 0)
    one = np.ones(1, np.int64)
    check_batch(ft, np.zeros(1, np.int32), np.ones(1, np.int8), np.zeros(1, np.int8), one, one,
                np.zeros(1, np.int64), np.zeros(1, np.int32))
