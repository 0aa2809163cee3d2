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
* MAX_NUM_ORDERS: ``open orders on the symbol < maxNumOrders`` before a new one is accepted
  ("the maximum number of orders an account is allowed to have open on a symbol"). The count is
  ``open_now``, which the caller binds to its own count of live orders (``bind``).

In the daemon (``bot4d.daemon.app``) a shard's table is loaded from ``GET /api/v3/exchangeInfo``
at start and on reload, and ``bind`` points ``ref_px`` at the shard's mark (the book's mid: the
last price, as if ``avgPriceMins`` were 0) and ``open_now`` at the OMS's live-order count of its
account, so both are current without anyone copying them. An order check that fails is journalled
with its F_* code as the reason; ``count_rejects`` tallies those per instrument and rule (``rejects``)
for ``bot4ctl`` and the exporter.

Units: prices in price units, quantities in quantity units, notionals in notional units (price
units x quantity units), multipliers in 1e-8 units (``MULT_SCALE``: "1.3000" -> 130_000_000).
The percent bands are evaluated exactly: ``price <= floor(ref * up / 1e8)`` and
``price >= ceil(ref * down / 1e8)`` with 128-bit intermediates, which is the documented
inequality for integer prices, never a float approximation.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import NamedTuple

import numpy as np

from bot4d.fixedpoint import INT64_MAX, FixedPointError, to_fixed
from bot4d.jitcache import helper, kernel
from bot4d.kernels.oms_arith import mul_div_ceil_nonneg_div, mul_ok
from bot4d.records import EV_ORDER_STATE, JOURNAL_EVENT_DTYPE

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
F_MAX_NUM_ORDERS = 122
F_FIRST = F_BAD_QTY
F_LAST = F_MAX_NUM_ORDERS
N_CODES = F_LAST - F_FIRST + 1
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
    F_BAD_INSTRUMENT: "unknown instrument", F_MAX_NUM_ORDERS: "MAX_NUM_ORDERS maxNumOrders",
}
# one Prometheus label value per code: the Binance filter and its rule ("LOT_SIZE.stepSize"), or
# what was wrong with the order itself
FILTER_LABELS = {c: n.replace(" (stop)", ".stop").replace(" ", ".") if n.split()[0].isupper()
                 else {F_BAD_QTY: "quantity", F_BAD_PRICE: "price", F_NO_REFERENCE: "no_reference",
                       F_OVERFLOW: "overflow", F_BAD_INSTRUMENT: "instrument"}[c]
                 for c, n in sorted(FILTER_REASON_NAMES.items())}


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
    max_orders: np.ndarray      # MAX_NUM_ORDERS maxNumOrders; 0 disables
    open_now: np.ndarray        # live orders per instrument (``bind`` to the OMS's count)
    rejects: np.ndarray         # int64 [instrument, N_CODES]: orders refused, by F_* code


def make_filters(n_instruments: int) -> FilterTable:
    """A table with every rule disabled. Its ``open_now`` and ``ref_px`` are its own zeros until
    ``bind`` points them at the caller's counts and prices (unbound, MAX_NUM_ORDERS never refuses)."""
    z = lambda dt=np.int64: np.zeros(n_instruments, dt)  # noqa: E731
    return FilterTable(z(), z(), z(), z(), z(), z(), z(), z(), z(), z(), z(), z(np.int8),
                       z(np.int8), z(), z(), z(), z(), z(), z(), z(),
                       np.zeros((n_instruments, N_CODES), np.int64))


def bind(ft: FilterTable, open_now: np.ndarray, ref_px: np.ndarray) -> FilterTable:
    """The same table reading its live-order counts and reference prices from the caller's own
    arrays (no copy: they stay current as the caller updates them). Both must be int64 arrays
    of one element per instrument."""
    n = ft.tick.shape[0]
    for name, a in (("open_now", open_now), ("ref_px", ref_px)):
        if a.dtype != np.int64 or a.shape != (n,) or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous int64 array of {n} elements")
    return ft._replace(open_now=open_now, ref_px=ref_px)


# the rule arrays (everything but the bound ones and the counts): cleared before a reload, so a
# filter the venue dropped stops applying
_RULES = ("min_price", "max_price", "tick", "min_qty", "max_qty", "step", "mkt_min_qty",
          "mkt_max_qty", "mkt_step", "min_notional", "max_notional", "min_to_market",
          "max_to_market", "bid_up", "bid_down", "ask_up", "ask_down", "max_orders")


def _mult(v: str | Decimal) -> int:
    return to_fixed(v, MULT_DECIMALS)


def _bound(v: str | Decimal, scale: int, lower: bool) -> int:
    """A minimum or maximum at ``scale``. Binance writes bounds with 8 decimals whatever the
    symbol's step (BTCUSDT's MARKET_LOT_SIZE maxQty has 8 where its step has 5): a lower bound is
    rounded up and an upper bound down, which for values at ``scale`` is the same inequality
    (x >= 0.000012 <=> x >= 0.00002 at 5 decimals). An upper bound past int64 is no bound.
    Ticks and steps stay exact (``to_fixed``): a step finer than the scale is a real mismatch."""
    if isinstance(v, float):
        raise FixedPointError("floats are not accepted for money; pass a str or Decimal")
    try:
        d = Decimal(v)
    except (InvalidOperation, TypeError):
        raise FixedPointError(f"not a decimal number: {v!r}") from None
    if not d.is_finite() or d < 0:
        raise FixedPointError(f"not a bound: {v!r}")
    units = int(d.scaleb(scale).to_integral_value(ROUND_CEILING if lower else ROUND_FLOOR))
    if not lower and d > 0 and units == 0:
        # 0 would read as "disabled"; a maximum under one unit admits nothing at this scale
        raise FixedPointError(f"maximum {v} is below one unit at scale {scale}")
    if units > INT64_MAX:
        if lower:
            raise FixedPointError(f"{v} at scale {scale} does not fit in int64")
        return INT64_MAX
    return units


def set_from_binance(ft: FilterTable, inst: int, filters: list[dict], price_scale: int,
                     qty_scale: int) -> None:
    """Load one symbol's ``/exchangeInfo`` filters (strings, exact) into row ``inst``.

    Every rule of the row is reset first (a filter the venue no longer lists stops applying).
    The row is written only once every value converted: raises FixedPointError (a value not
    representable at the instrument's scales), or KeyError / ValueError (a malformed filter), with
    the row unchanged, so a misconfigured instrument fails at load time rather than rejecting (or
    passing) orders later, and a bad reload leaves the rules in force.
    """
    row = parse_binance(filters, price_scale, qty_scale)
    for k, v in row.items():
        getattr(ft, k)[inst] = v


def parse_binance(filters: list[dict], price_scale: int, qty_scale: int) -> dict[str, int]:
    """The table row (rule array name -> int value, every rule present) for one symbol's filters."""
    nscale = price_scale + qty_scale
    r = {k: 0 for k in _RULES}
    for f in filters:
        t = f["filterType"]
        if t == "PRICE_FILTER":
            r["min_price"] = _bound(f["minPrice"], price_scale, True)
            r["max_price"] = _bound(f["maxPrice"], price_scale, False)
            r["tick"] = to_fixed(f["tickSize"], price_scale)
        elif t == "LOT_SIZE":
            r["min_qty"] = _bound(f["minQty"], qty_scale, True)
            r["max_qty"] = _bound(f["maxQty"], qty_scale, False)
            r["step"] = to_fixed(f["stepSize"], qty_scale)
        elif t == "MARKET_LOT_SIZE":
            r["mkt_min_qty"] = _bound(f["minQty"], qty_scale, True)
            r["mkt_max_qty"] = _bound(f["maxQty"], qty_scale, False)
            r["mkt_step"] = to_fixed(f["stepSize"], qty_scale)
        elif t == "MIN_NOTIONAL":
            r["min_notional"] = _bound(f["minNotional"], nscale, True)
            r["min_to_market"] = 1 if f.get("applyToMarket") else 0
        elif t == "NOTIONAL":
            r["min_notional"] = _bound(f["minNotional"], nscale, True)
            r["max_notional"] = _bound(f["maxNotional"], nscale, False)
            r["min_to_market"] = 1 if f.get("applyMinToMarket") else 0
            r["max_to_market"] = 1 if f.get("applyMaxToMarket") else 0
        elif t == "PERCENT_PRICE":
            r["bid_up"] = r["ask_up"] = _mult(f["multiplierUp"])
            r["bid_down"] = r["ask_down"] = _mult(f["multiplierDown"])
        elif t == "PERCENT_PRICE_BY_SIDE":
            r["bid_up"] = _mult(f["bidMultiplierUp"])
            r["bid_down"] = _mult(f["bidMultiplierDown"])
            r["ask_up"] = _mult(f["askMultiplierUp"])
            r["ask_down"] = _mult(f["askMultiplierDown"])
        elif t == "MAX_NUM_ORDERS":
            n = f["maxNumOrders"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"MAX_NUM_ORDERS maxNumOrders {n!r} is not a count")
            r["max_orders"] = n
        # other filter types (algo/iceberg order counts, trailing, position) are not checked here
    return r


@helper(_nrt=False)
def _price_rules(ft, inst: int, px: int, r_min: int, r_max: int, r_tick: int) -> int:
    if ft.min_price[inst] != 0 and px < ft.min_price[inst]:
        return r_min
    if ft.max_price[inst] != 0 and px > ft.max_price[inst]:
        return r_max
    if ft.tick[inst] != 0 and px % ft.tick[inst] != 0:
        return r_tick
    return F_OK


@kernel(_nrt=False)
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
    if ft.max_orders[inst] != 0 and ft.open_now[inst] >= ft.max_orders[inst]:
        return F_MAX_NUM_ORDERS
    return F_OK


@kernel(_nrt=False)
def check_batch(ft, inst, buy, market, px, qty, stop_px, out) -> int:
    """check_order over arrays; writes codes into ``out`` and returns how many failed."""
    bad = 0
    for i in range(inst.shape[0]):
        out[i] = check_order(ft, inst[i], buy[i] != 0, market[i] != 0, px[i], qty[i], stop_px[i])
        if out[i] != F_OK:
            bad += 1
    return bad


@kernel(_nrt=False)
def count_rejects(ft, journal, j0: int, j1: int) -> None:
    """Tally the filter refusals among journal records ``j0..j1`` into ``ft.rejects``: the OMS
    journals a refused command as EV_ORDER_STATE with its F_* code as the reason (no other
    reason shares that range)."""
    n = ft.rejects.shape[0]
    for k in range(j0, j1):
        e = journal[k]
        if e.kind == EV_ORDER_STATE and F_FIRST <= e.reason <= F_LAST and 0 <= e.instrument < n:
            ft.rejects[e.instrument, e.reason - F_FIRST] += 1


def reject_counts(ft: FilterTable, inst: int) -> dict[str, int]:
    """``label -> count`` of the non-zero per-rule refusals of one instrument."""
    row = ft.rejects[inst]
    return {label: int(row[c - F_FIRST]) for c, label in FILTER_LABELS.items() if row[c - F_FIRST]}


def warmup() -> None:
    ft = make_filters(1)
    check_order(ft, 0, True, False, 100, 1, 0)
    one = np.ones(1, np.int64)
    check_batch(ft, np.zeros(1, np.int32), np.ones(1, np.int8), np.zeros(1, np.int8), one, one,
                np.zeros(1, np.int64), np.zeros(1, np.int32))
    count_rejects(ft, np.zeros(1, JOURNAL_EVENT_DTYPE), 0, 1)
