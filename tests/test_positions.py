"""Positions and P&L against an independent Decimal reference; flips, rounding, overflow."""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.kernels import positions as P
from bot4d.kernels.oms_arith import INT64_MAX


class RefPosition:
    """The documented rules, written again in Decimal arithmetic."""

    def __init__(self) -> None:
        self.qty = Decimal(0)
        self.cost = Decimal(0)
        self.realised = Decimal(0)
        self.cash = Decimal(0)

    def fill(self, buy: bool, px: int, q: int, fee: int) -> None:
        px, q = Decimal(px), Decimal(q)
        dq = q if buy else -q
        self.cash += -dq * px - fee
        if self.qty == 0 or (self.qty > 0) == buy:
            self.cost += dq * px
            self.qty += dq
            return
        close = min(q, abs(self.qty))
        if close == abs(self.qty):
            released = self.cost
        else:
            released = (self.cost * close / abs(self.qty)).quantize(Decimal(1), ROUND_HALF_EVEN)
        close_cash = -close * px if buy else close * px
        self.realised += close_cash - released
        self.cost -= released
        self.qty += close if buy else -close
        rest = q - close
        if rest > 0:
            self.cost = rest * px if buy else -rest * px
            self.qty = rest if buy else -rest

    def avg(self) -> Decimal:
        if self.qty == 0:
            return Decimal(0)
        return (self.cost / self.qty).quantize(Decimal(1), ROUND_HALF_EVEN)


def test_simple_long_then_flip_short():
    pb = P.make_positions(1, 1)
    assert P.apply_fill(pb, 0, 0, True, 100, 3, 0)
    assert P.apply_fill(pb, 0, 0, False, 110, 5, 0)
    # closed 3 long at +10 each, then short 2 at 110
    assert pb.realised[0, 0] == 30
    assert pb.qty[0, 0] == -2 and pb.cost[0, 0] == -220 and pb.avg_px[0, 0] == 110
    assert pb.balance[0] == -300 + 550
    v, ok = P.unrealised(pb, 0, 0, 100)
    assert ok and v == 20       # short 2 from 110 marked at 100


def test_partial_close_rounds_half_even_and_conserves_cost():
    pb = P.make_positions(1, 1)
    P.apply_fill(pb, 0, 0, True, 10, 1, 0)
    P.apply_fill(pb, 0, 0, True, 11, 1, 0)     # cost 21 for 2: avg 10.5 -> 10 (half-even)
    assert pb.avg_px[0, 0] == 10
    P.apply_fill(pb, 0, 0, False, 12, 1, 0)    # releases round_half_even(21/2) = 10
    assert pb.realised[0, 0] == 2 and pb.cost[0, 0] == 11
    P.apply_fill(pb, 0, 0, False, 12, 1, 0)    # full close releases the rest exactly
    assert pb.realised[0, 0] == 2 + 1 and pb.cost[0, 0] == 0 and pb.qty[0, 0] == 0
    assert pb.balance[0] == pb.realised[0, 0]  # flat: all cash is realised


def test_fees_and_rebates_hit_balance_not_realised():
    pb = P.make_positions(1, 1)
    P.apply_fill(pb, 0, 0, True, 100, 1, 3)
    P.apply_fill(pb, 0, 0, False, 100, 1, -1)
    assert pb.realised[0, 0] == 0 and pb.fees[0, 0] == 2 and pb.balance[0] == -2


def test_overflow_is_refused_and_changes_nothing():
    pb = P.make_positions(1, 1)
    assert P.apply_fill(pb, 0, 0, True, 10, 5, 0)
    snap = [a.copy() for a in pb]
    assert not P.apply_fill(pb, 0, 0, True, INT64_MAX // 2, 3, 0)   # notional overflows
    assert not P.apply_fill(pb, 0, 0, True, 1, INT64_MAX, 0)        # qty sum overflows
    assert not P.apply_fill(pb, 0, 0, True, 10, 0, 0)               # non-positive qty
    assert not P.apply_fill(pb, 0, 0, True, -1, 1, 0)               # negative price
    for a, b in zip(snap, pb):
        assert np.array_equal(a, b)


def test_partial_close_exact_beyond_64_bit_products():
    # cost * closed does not fit in int64: the 128-bit path must still be exact
    pb = P.make_positions(1, 1)
    big_q = 3_000_000_000
    px = 1_000_000_007
    assert P.apply_fill(pb, 0, 0, True, px, big_q, 0)
    ref = RefPosition()
    ref.fill(True, px, big_q, 0)
    assert P.apply_fill(pb, 0, 0, False, px + 5, big_q - 1, 0)
    ref.fill(False, px + 5, big_q - 1, 0)
    assert pb.realised[0, 0] == int(ref.realised) and pb.cost[0, 0] == int(ref.cost)


fills = st.lists(
    st.tuples(st.booleans(), st.integers(1, 10**6), st.integers(1, 10**4), st.integers(-50, 500)),
    min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(fills)
def test_matches_decimal_reference_and_sum_of_fills(seq):
    pb = P.make_positions(2, 2)
    ref = RefPosition()
    signed = 0
    for buy, px, q, fee in seq:
        assert P.apply_fill(pb, 1, 1, buy, px, q, fee)
        ref.fill(buy, px, q, fee)
        signed += q if buy else -q
        assert pb.qty[1, 1] == int(ref.qty) == signed == pb.fill_qty[1, 1]
        assert pb.cost[1, 1] == int(ref.cost)
        assert pb.realised[1, 1] == int(ref.realised)
        assert pb.avg_px[1, 1] == int(ref.avg())
        assert pb.balance[1] == int(ref.cash)
        # cost is conserved exactly: cash of fills == realised - open cost - fees
        assert pb.balance[1] == pb.realised[1, 1] - pb.cost[1, 1] - pb.fees[1, 1]
    # other cells untouched
    assert pb.qty[0].sum() == 0 and pb.qty[1, 0] == 0 and pb.balance[0] == 0


def test_unrealised_reports_overflow():
    pb = P.make_positions(1, 2)
    P.apply_fill(pb, 0, 0, True, 10, 4, 0)
    P.apply_fill(pb, 0, 1, True, 1, 10**12, 0)
    assert P.unrealised(pb, 0, 0, 12) == (8, True)
    assert P.unrealised(pb, 0, 1, 10**8)[1] is False   # 10**20 does not fit int64


def test_make_positions_refuses_empty():
    import pytest
    with pytest.raises(ValueError):
        P.make_positions(0, 1)
