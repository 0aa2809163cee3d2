"""Fee model: tiers by trailing volume, rebates, ceil rounding, exact arithmetic."""
from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.fixedpoint import FixedPointError
from bot4d.kernels import fees as F

TIERS = [(0, "0.001", "0.001"), (1_000_000, "0.0009", "0.001"), (5_000_000, "-0.00005", "0.0007")]


def test_tier_selection_follows_volume():
    fs = F.make_fees(2, TIERS)
    assert F.tier_of(fs, 0) == 0
    fs.volume[0] = 999_999
    assert F.tier_of(fs, 0) == 0
    fs.volume[0] = 1_000_000
    assert F.tier_of(fs, 0) == 1
    fs.volume[0] = 10**12
    assert F.tier_of(fs, 0) == 2
    assert F.tier_of(fs, 1) == 0      # per account


def test_charge_uses_tier_before_the_fill_and_accumulates_volume():
    fs = F.make_fees(1, TIERS)
    fee, ok = F.charge(fs, 0, 1000, 1000, False)     # notional 1_000_000 at tier 0 taker 0.1 %
    assert ok and fee == 1000 and fs.volume[0] == 1_000_000
    fee, ok = F.charge(fs, 0, 1000, 1000, True)      # now tier 1 maker 0.09 %
    assert ok and fee == 900


def test_rebate_is_negative_and_rounded_toward_zero():
    fs = F.make_fees(1, TIERS)
    fs.volume[0] = 5_000_000
    fee, ok = F.charge(fs, 0, 333, 101, True)        # 33633 * -0.00005 = -1.68165
    assert ok and fee == -1
    fee, ok = F.charge(fs, 0, 333, 101, False)       # 33633 * 0.0007 = 23.5431 -> 24
    assert ok and fee == 24


def test_quote_does_not_touch_volume():
    fs = F.make_fees(1, TIERS)
    F.quote(fs, 0, 100, 100, True)
    assert fs.volume[0] == 0


def test_huge_notional_exact_and_overflow_refused():
    fs = F.make_fees(1, [(0, "0.00000001", "0.99999999")])
    fee, ok = F.charge(fs, 0, 3_000_000_000, 3_000_000_000, False)   # 9e18 notional
    assert ok and fee == -((-9 * 10**18 * 99_999_999) // 10**8)
    assert F.charge(fs, 0, 2**62, 4, False)[1] is False


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**12), st.integers(1, 10**6), st.integers(-10**6, 10**6))
def test_fee_for_is_ceil_of_exact_product(px, qty, rate):
    fee, ok = F.fee_for(px * qty, rate)
    want = (Decimal(px * qty) * Decimal(rate) / Decimal(10**8)).to_integral_value(ROUND_CEILING)
    assert ok and fee == int(want)


def test_bad_schedules_refused():
    with pytest.raises(ValueError):
        F.make_fees(1, [])
    with pytest.raises(ValueError):
        F.make_fees(1, [(5, "0.001", "0.001")])
    with pytest.raises(ValueError):
        F.make_fees(1, [(0, "0.001", "0.001"), (0, "0.001", "0.001")])
    with pytest.raises(ValueError):
        F.make_fees(1, [(0, "0.001", "-0.001")])       # negative taker
    with pytest.raises(FixedPointError):
        F.make_fees(1, [(0, "0.000000001", "0.001")])  # finer than 1e-8
    with pytest.raises(FixedPointError):
        F.make_fees(1, [(0, 0.001, "0.001")])          # float refused
