"""Binance exchange filters, rule by rule, with the documentation's own examples.

Source for every rule and example value:
https://github.com/binance/binance-spot-api-docs/blob/master/filters.md (PRICE_FILTER,
PERCENT_PRICE, PERCENT_PRICE_BY_SIDE, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL, NOTIONAL).
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.fixedpoint import FixedPointError, to_fixed
from bot4d.kernels import filters as F

PS, QS = 8, 5   # price x qty scales must leave the notional (scale 13) inside int64

DOC_FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.00000100", "maxPrice": "100000.00000000",
     "tickSize": "0.00000100"},
    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.3000", "multiplierDown": "0.7000",
     "avgPriceMins": 5},
    {"filterType": "LOT_SIZE", "minQty": "0.00100000", "maxQty": "100000.00000000",
     "stepSize": "0.00100000"},
    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00100000", "maxQty": "100000.00000000",
     "stepSize": "0.00100000"},
    {"filterType": "NOTIONAL", "minNotional": "10.00000000", "applyMinToMarket": False,
     "maxNotional": "10000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
]


def p(v: str) -> int:
    return to_fixed(v, PS)


def q(v: str) -> int:
    return to_fixed(v, QS)


@pytest.fixture()
def ft():
    t = F.make_filters(2)
    F.set_from_binance(t, 0, DOC_FILTERS, PS, QS)
    t.ref_px[0] = p("100")
    return t


def chk(t, px="100", qty="1", buy=True, market=False, stop="0") -> int:
    return F.check_order(t, 0, buy, market, p(px) if px else 0, q(qty), p(stop))


def test_loaded_values(ft):
    assert ft.tick[0] == 100 and ft.min_price[0] == 100 and ft.max_price[0] == 10**13
    assert ft.step[0] == 100 and ft.bid_up[0] == 130_000_000 and ft.ask_down[0] == 70_000_000
    assert ft.min_notional[0] == to_fixed("10", PS + QS)


def test_passes(ft):
    assert chk(ft) == F.F_OK


@pytest.mark.parametrize("kw,code", [
    (dict(qty="0"), F.F_BAD_QTY),
    (dict(px="0"), F.F_BAD_PRICE),
    (dict(px="0.00000099", qty="100000"), F.F_PRICE_MIN),
    (dict(px="100000.000001"), F.F_PRICE_MAX),
    (dict(px="100.00000050"), F.F_PRICE_TICK),
    (dict(qty="0.0009"), F.F_QTY_MIN),
    (dict(qty="100000.001", px="0.001"), F.F_QTY_MAX),
    (dict(qty="1.0005"), F.F_QTY_STEP),
    (dict(qty="0.001", px="100"), F.F_NOTIONAL_MIN),    # 0.1 < 10
    (dict(qty="101", px="100"), F.F_NOTIONAL_MAX),      # 10100 > 10000
    (dict(px="130.000001"), F.F_PERCENT_UP),
    (dict(px="69.999999"), F.F_PERCENT_DOWN),
    (dict(stop="0.00000050"), F.F_STOP_MIN),
    (dict(stop="200000"), F.F_STOP_MAX),
    (dict(stop="99.00000001"), F.F_STOP_TICK),
])
def test_each_failure(ft, kw, code):
    assert chk(ft, **kw) == code
    assert code in F.FILTER_REASON_NAMES


def test_percent_band_is_inclusive_at_exact_bounds(ft):
    assert chk(ft, px="130") == F.F_OK      # price <= avg * 1.3
    assert chk(ft, px="70") == F.F_OK       # price >= avg * 0.7


def test_percent_price_by_side_doc_example():
    t = F.make_filters(1)
    F.set_from_binance(t, 0, [{"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "1.2",
                               "bidMultiplierDown": "0.2", "askMultiplierUp": "5",
                               "askMultiplierDown": "0.8", "avgPriceMins": 1}], 2, 0)
    t.ref_px[0] = 100_00
    c = lambda px, buy: F.check_order(t, 0, buy, False, px, 1, 0)  # noqa: E731
    assert c(120_00, True) == F.F_OK and c(120_01, True) == F.F_PERCENT_UP
    assert c(20_00, True) == F.F_OK and c(19_99, True) == F.F_PERCENT_DOWN
    assert c(500_00, False) == F.F_OK and c(500_01, False) == F.F_PERCENT_UP
    assert c(80_00, False) == F.F_OK and c(79_99, False) == F.F_PERCENT_DOWN


def test_market_orders(ft):
    # market: no price rules, LOT_SIZE and MARKET_LOT_SIZE apply, notional only if asked
    assert chk(ft, px=None, qty="101", market=True) == F.F_OK
    ft.max_to_market[0] = 1
    assert chk(ft, px=None, qty="101", market=True) == F.F_NOTIONAL_MAX
    ft.mkt_max_qty[0] = q("50")
    assert chk(ft, px=None, qty="60", market=True) == F.F_MKT_QTY_MAX
    ft.ref_px[0] = 0
    ft.mkt_max_qty[0] = 0
    assert chk(ft, px=None, qty="60", market=True) == F.F_NO_REFERENCE


def test_min_notional_legacy_filter():
    t = F.make_filters(1)
    F.set_from_binance(t, 0, [{"filterType": "MIN_NOTIONAL", "minNotional": "0.00100000",
                               "applyToMarket": True, "avgPriceMins": 5}], 8, 8)
    t.ref_px[0] = 1
    assert F.check_order(t, 0, True, True, 0, 1, 0) == F.F_NOTIONAL_MIN
    assert F.check_order(t, 0, True, False, to_fixed("1", 8), to_fixed("0.001", 8), 0) == F.F_OK


def test_percent_needs_reference(ft):
    ft.ref_px[0] = 0
    assert chk(ft) == F.F_NO_REFERENCE


def test_disabled_rules_and_bad_instrument():
    t = F.make_filters(1)
    assert F.check_order(t, 0, True, False, 7, 3, 0) == F.F_OK
    assert F.check_order(t, 1, True, False, 7, 3, 0) == F.F_BAD_INSTRUMENT
    assert F.check_order(t, -1, True, False, 7, 3, 0) == F.F_BAD_INSTRUMENT


def test_notional_overflow_is_a_refusal_not_a_wrap():
    t = F.make_filters(1)
    t.max_notional[0] = 10**18
    assert F.check_order(t, 0, True, False, 2**40, 2**40, 0) == F.F_NOTIONAL_MAX
    t.max_notional[0] = 0
    t.min_notional[0] = 1
    assert F.check_order(t, 0, True, False, 2**40, 2**40, 0) == F.F_OVERFLOW


def test_unrepresentable_config_fails_at_load():
    t = F.make_filters(1)
    with pytest.raises(FixedPointError):
        F.set_from_binance(t, 0, [{"filterType": "PRICE_FILTER", "minPrice": "0.001",
                                   "maxPrice": "1", "tickSize": "0.001"}], 2, 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**9), st.integers(1, 10**9), st.integers(1, 5 * 10**8),
       st.integers(1, 10**8))
def test_percent_band_matches_decimal(px, ref, up, down):
    t = F.make_filters(1)
    t.ref_px[0] = ref
    t.bid_up[0] = up
    t.bid_down[0] = down
    r = F.check_order(t, 0, True, False, px, 1, 0)
    d_ref = Decimal(ref)
    want = F.F_OK
    if Decimal(px) > d_ref * Decimal(up) / Decimal(10**8):
        want = F.F_PERCENT_UP
    elif Decimal(px) < d_ref * Decimal(down) / Decimal(10**8):
        want = F.F_PERCENT_DOWN
    assert r == want


def test_check_batch():
    t = F.make_filters(1)
    t.tick[0] = 5
    out = np.zeros(3, np.int32)
    bad = F.check_batch(t, np.zeros(3, np.int32), np.ones(3, np.int8), np.zeros(3, np.int8),
                        np.array([10, 11, 15], np.int64), np.ones(3, np.int64),
                        np.zeros(3, np.int64), out)
    assert bad == 1 and list(out) == [0, F.F_PRICE_TICK, 0]


def test_scales_whose_notional_leaves_int64_are_never_wrapped():
    # maxNotional 10000 at price scale 8 + qty scale 8 is 1e20 units, past int64: every notional
    # that int64 holds is below it, so it is no bound (never a wrapped one); a minimum past
    # int64 admits nothing representable: refused at load
    t = F.make_filters(1)
    F.set_from_binance(t, 0, DOC_FILTERS, 8, 8)
    assert t.max_notional[0] == 2**63 - 1 and t.min_notional[0] == 10 * 10**16
    t.ref_px[0] = 100 * 10**8
    big = 10**12   # 10000 at qty scale 8; times price 100 (1e10 units): 1e22, past int64
    assert F.check_order(t, 0, True, False, 100 * 10**8, big, 0) == F.F_NOTIONAL_MAX
    with pytest.raises(FixedPointError):
        F.set_from_binance(F.make_filters(1), 0, [{"filterType": "NOTIONAL", "minNotional": "1000",
                                                   "maxNotional": "0", "applyMinToMarket": False,
                                                   "applyMaxToMarket": False}], 8, 8)
