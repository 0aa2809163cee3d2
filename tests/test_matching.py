"""Matching engine: every order type, partial fills, STP modes, filters, fees, and invariants.

Semantics checked against Binance spot documentation:
* STP modes: https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq
* stop triggers (BUY STOP_LOSS when price >= stopPrice, SELL when <=; TAKE_PROFIT the reverse) and
  LIMIT_MAKER rejection ("Order would immediately match and take."):
  https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints
* filter failures are -1013 "Filter failure: <FILTER>":
  https://developers.binance.com/docs/binance-spot-api-docs/errors
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bot4d.kernels import matching as m
from bot4d.records import SIDE_ASK as SELL, SIDE_BID as BUY

A, B = 0, 1  # accounts


def engine(**kw):
    s = m.make_engine(1, max_levels=64, max_orders=256, max_stops=16, n_accounts=4, **kw)
    return s


class Ex:
    """Drives an engine one order at a time and keeps every event."""

    def __init__(self, s=None):
        self.s = s if s is not None else engine()
        self.next_id = 1
        self.events = []

    def order(self, side, qty, price=0, otype=m.T_LIMIT, tif=m.TIF_GTC, acct=A, stop=0,
              stp=m.STP_NONE, oco=0, oid=None):
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        if oid is None:
            oid = self.next_id
            self.next_id += 1
        o[0] = 0
        o["op"] = m.OP_NEW
        o["side"], o["qty"], o["price"], o["otype"], o["tif"] = side, qty, price, otype, tif
        o["account"], o["stop_price"], o["stp"], o["oco_peer"], o["order_id"] = acct, stop, stp, oco, oid
        ev = m.submit(self.s, o)
        self.events.extend(ev)
        return oid, ev

    def cancel(self, oid):
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        o["op"] = m.OP_CANCEL
        o["order_id"] = oid
        o["instrument"] = 0
        ev = m.submit(self.s, o)
        self.events.extend(ev)
        return ev

    def bids(self):
        return m.book_levels(self.s, 0, BUY)

    def asks(self):
        return m.book_levels(self.s, 0, SELL)


def kinds(ev, oid=None):
    return [int(e["kind"]) for e in ev if oid is None or e["order_id"] == oid]


def trades(ev, oid):
    return [(int(e["price"]), int(e["qty"])) for e in ev if e["kind"] == m.E_TRADE and e["order_id"] == oid]


def test_limit_rests_and_price_time_priority():
    x = Ex()
    a1, _ = x.order(SELL, 5, 101)
    a2, _ = x.order(SELL, 3, 100)
    a3, _ = x.order(SELL, 2, 100, acct=B)   # behind a2 at the same price
    assert x.asks() == [(100, 5), (101, 5)]
    t, ev = x.order(BUY, 6, 101, acct=B)
    # a2 first (better price), then a3 (same price, later), then a1
    assert trades(ev, a2) == [(100, 3)]
    assert trades(ev, a3) == [(100, 2)]
    assert trades(ev, a1) == [(101, 1)]
    assert trades(ev, t) == [(100, 3), (100, 2), (101, 1)]
    assert x.asks() == [(101, 4)]
    assert x.bids() == []


def test_partial_fill_leaves_remainder_resting_with_cum_and_leaves():
    x = Ex()
    a, _ = x.order(SELL, 10, 100)
    t, ev = x.order(BUY, 4, 100, acct=B)
    mk = [e for e in ev if e["kind"] == m.E_TRADE and e["order_id"] == a][0]
    assert (mk["cum_qty"], mk["leaves_qty"], mk["maker"]) == (4, 6, 1)
    assert x.asks() == [(100, 6)]
    # the taker filled completely: no remainder event
    assert kinds(ev, t) == [m.E_NEW, m.E_TRADE]


def test_ioc_remainder_expires_fok_all_or_nothing():
    x = Ex()
    x.order(SELL, 3, 100)
    t, ev = x.order(BUY, 5, 100, tif=m.TIF_IOC, acct=B)
    assert trades(ev, t) == [(100, 3)]
    exp = [e for e in ev if e["kind"] == m.E_EXPIRED][0]
    assert (exp["order_id"], exp["code"], exp["leaves_qty"]) == (t, m.EXP_IOC, 2)
    assert x.bids() == []  # IOC never rests

    x.order(SELL, 3, 100)
    f, ev = x.order(BUY, 5, 100, tif=m.TIF_FOK, acct=B)
    assert kinds(ev, f) == [m.E_NEW, m.E_EXPIRED]
    assert x.asks() == [(100, 3)]  # untouched
    f2, ev = x.order(BUY, 3, 100, tif=m.TIF_FOK, acct=B)
    assert trades(ev, f2) == [(100, 3)]


def test_market_sweeps_then_expires_remainder():
    x = Ex()
    x.order(SELL, 2, 100)
    x.order(SELL, 2, 105)
    t, ev = x.order(BUY, 5, otype=m.T_MARKET, acct=B)
    assert trades(ev, t) == [(100, 2), (105, 2)]
    assert [e["code"] for e in ev if e["kind"] == m.E_EXPIRED] == [m.EXP_MARKET_NO_LIQUIDITY]


def test_limit_maker_rejected_when_it_would_take():
    x = Ex()
    x.order(SELL, 2, 100)
    _, ev = x.order(BUY, 1, 100, otype=m.T_LIMIT_MAKER, tif=0, acct=B)
    assert kinds(ev) == [m.E_REJECTED] and ev[0]["code"] == m.REJ_WOULD_TAKE
    assert m.BINANCE_REJECTS[m.REJ_WOULD_TAKE] == (-2010, "Order would immediately match and take.")
    _, ev = x.order(BUY, 1, 99, otype=m.T_LIMIT_MAKER, tif=0, acct=B)
    assert kinds(ev) == [m.E_NEW] and x.bids() == [(99, 1)]


def _trade_at(x, px):
    x.order(SELL, 1, px, acct=B)
    x.order(BUY, 1, px, acct=A)


def test_stop_loss_triggers_on_last_price_both_sides():
    x = Ex()
    _trade_at(x, 100)
    # SELL STOP_LOSS at 95 triggers when the price falls to <= 95
    sl, ev = x.order(SELL, 2, otype=m.T_STOP_LOSS, stop=95)
    assert kinds(ev) == [m.E_NEW]
    x.order(BUY, 5, 90, acct=B)  # liquidity for the stop's market order
    _trade_at(x, 96)
    assert not any(e["kind"] == m.E_TRIGGERED for e in x.events)
    x.order(SELL, 1, 95, acct=B)
    _, ev = x.order(BUY, 1, 95, acct=A)
    assert m.E_TRIGGERED in kinds(ev, sl)
    assert trades(ev, sl) == [(90, 2)]
    # BUY STOP_LOSS triggers when the price rises to >= stop
    bsl, ev = x.order(BUY, 1, otype=m.T_STOP_LOSS_LIMIT, price=120, stop=110, acct=A)
    x.order(SELL, 1, 111, acct=B)       # resting liquidity for the triggered limit order
    x.order(SELL, 1, 110, acct=B)
    _, ev = x.order(BUY, 1, 110, acct=B)  # trade at 110 triggers, then the stop-limit buys 111
    assert m.E_TRIGGERED in kinds(ev, bsl)
    assert trades(ev, bsl) == [(111, 1)]


def test_take_profit_directions_and_immediate_trigger_rejected():
    x = Ex()
    _trade_at(x, 100)
    # SELL TAKE_PROFIT triggers when price >= stop: stop 99 would trigger at once
    _, ev = x.order(SELL, 1, otype=m.T_TAKE_PROFIT, stop=99)
    assert kinds(ev) == [m.E_REJECTED] and ev[0]["code"] == m.REJ_STOP_WOULD_TRIGGER
    tp, ev = x.order(SELL, 1, otype=m.T_TAKE_PROFIT_LIMIT, price=104, stop=105)
    assert kinds(ev) == [m.E_NEW]
    x.order(BUY, 3, 104, acct=B)
    _trade_at(x, 103)  # below: nothing
    assert m.E_TRIGGERED not in kinds(x.events, tp)
    x.order(SELL, 1, 105, acct=B)
    _, ev = x.order(BUY, 1, 105, acct=B)
    assert m.E_TRIGGERED in kinds(ev, tp) and trades(ev, tp) == [(104, 1)]


def test_oco_fill_cancels_other_leg_and_cancel_cancels_list():
    x = Ex()
    _trade_at(x, 100)
    lim, _ = x.order(SELL, 2, 110)                               # take-profit leg
    stp, ev = x.order(SELL, 2, otype=m.T_STOP_LOSS, stop=90, oco=lim)  # stop leg
    assert kinds(ev) == [m.E_NEW]
    _, ev = x.order(BUY, 1, 110, acct=B)  # partial fill of the limit leg
    assert trades(ev, lim) == [(110, 1)]
    cx = [e for e in ev if e["kind"] == m.E_CANCELED]
    assert len(cx) == 1 and cx[0]["order_id"] == stp and cx[0]["code"] == m.CXL_OCO

    lim2, _ = x.order(SELL, 1, 120)
    stp2, _ = x.order(SELL, 1, otype=m.T_STOP_LOSS, stop=90, oco=lim2)
    ev = x.cancel(stp2)
    assert sorted((int(e["order_id"]), int(e["code"])) for e in ev) == [(lim2, m.CXL_OCO), (stp2, m.CXL_REQUEST)]
    assert (120, 1) not in x.asks()


def test_oco_trigger_cancels_limit_leg():
    x = Ex()
    _trade_at(x, 100)
    lim, _ = x.order(SELL, 1, 110)
    stp, _ = x.order(SELL, 1, otype=m.T_STOP_LOSS_LIMIT, price=80, stop=90, oco=lim)
    x.order(BUY, 1, 85, acct=B)
    x.order(SELL, 1, 90, acct=B)
    _, ev = x.order(BUY, 1, 90, acct=B)  # last = 90 -> triggers
    assert m.E_TRIGGERED in kinds(ev, stp)
    assert [e["order_id"] for e in ev if e["kind"] == m.E_CANCELED] == [lim]
    assert trades(ev, stp) == [(85, 1)]
    assert x.asks() == []


@pytest.mark.parametrize(
    "mode,maker_left,taker_traded,expired",
    [
        (m.STP_EXPIRE_TAKER, [(100, 2)], [], {"taker"}),
        (m.STP_EXPIRE_MAKER, [], [(101, 3)], {"maker"}),
        (m.STP_EXPIRE_BOTH, [], [], {"taker", "maker"}),
    ],
)
def test_stp_expire_modes(mode, maker_left, taker_traded, expired):
    x = Ex()
    mk, _ = x.order(SELL, 2, 100, acct=A)
    other, _ = x.order(SELL, 5, 101, acct=B)
    t, ev = x.order(BUY, 3, 101, acct=A, stp=mode)
    got = set()
    for e in ev:
        if e["kind"] == m.E_EXPIRED:
            assert e["code"] == m.EXP_STP
            got.add("taker" if e["order_id"] == t else "maker")
    assert got == expired
    assert trades(ev, t) == taker_traded
    assert [lv for lv in x.asks() if lv[0] == 100] == maker_left


def test_stp_decrement_smaller_expires():
    x = Ex()
    mk, _ = x.order(SELL, 5, 100, acct=A)
    t, ev = x.order(BUY, 2, 100, acct=A, stp=m.STP_DECREMENT)
    # prevented 2: taker exhausted and expires; maker keeps 3, no trade happened; both are told
    assert trades(ev, t) == [] and trades(ev, mk) == []
    dec = {int(e["order_id"]): (int(e["qty"]), int(e["leaves_qty"])) for e in ev if e["kind"] == m.E_DECREMENTED}
    assert dec == {mk: (2, 3), t: (2, 0)}
    assert [e["order_id"] for e in ev if e["kind"] == m.E_EXPIRED] == [t]
    assert x.asks() == [(100, 3)]
    t2, ev = x.order(BUY, 3, 100, acct=A, stp=m.STP_DECREMENT)  # equal: both expire
    assert sorted(e["order_id"] for e in ev if e["kind"] == m.E_EXPIRED) == sorted([mk, t2])
    assert x.asks() == []


def test_stp_none_trades_with_itself():
    x = Ex()
    mk, _ = x.order(SELL, 1, 100, acct=A)
    t, ev = x.order(BUY, 1, 100, acct=A, stp=m.STP_NONE)
    assert trades(ev, t) == [(100, 1)]


@pytest.mark.parametrize(
    "kw,code",
    [
        (dict(price=1005), m.REJ_PRICE_FILTER),          # tick 10
        (dict(price=0), m.REJ_PRICE_FILTER),
        (dict(qty=15), m.REJ_LOT_SIZE),                  # step 10
        (dict(qty=0), m.REJ_LOT_SIZE),
        (dict(qty=5000), m.REJ_LOT_SIZE),                # max 1000
        (dict(qty=10, price=10), m.REJ_NOTIONAL),        # 100 < min notional 1000
        (dict(price=(2**62 // 10) * 10, qty=20), m.REJ_NOTIONAL),     # would overflow int64: refused, not wrapped
        (dict(otype=99), m.REJ_BAD_PARAM),
        (dict(tif=7), m.REJ_BAD_PARAM),
        (dict(acct=99), m.REJ_UNKNOWN_ACCOUNT),
    ],
)
def test_filters_reject_with_binance_codes(kw, code):
    s = engine()
    s.tick[0], s.step[0], s.min_qty[0], s.max_qty[0], s.min_notional[0] = 10, 10, 10, 1000, 1000
    x = Ex(s)
    args = dict(side=BUY, qty=10, price=1000)
    args.update(kw)
    _, ev = x.order(**args)
    assert kinds(ev) == [m.E_REJECTED] and ev[0]["code"] == code
    assert code in m.BINANCE_REJECTS
    assert x.bids() == [] and int(s.nfree[0]) == 256  # nothing changed


def test_unknown_instrument_duplicate_id_unknown_cancel():
    x = Ex()
    o = np.zeros(1, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["qty"], o["price"], o["instrument"], o["order_id"] = 1, 1, 1, 1, 5, 77
    ev = m.submit(x.s, o)
    assert ev[0]["code"] == m.REJ_UNKNOWN_INSTRUMENT
    oid, _ = x.order(BUY, 1, 50, oid=42)
    _, ev = x.order(BUY, 1, 50, oid=42)
    assert ev[0]["code"] == m.REJ_DUPLICATE
    ev = x.cancel(999)
    assert ev[0]["kind"] == m.E_REJECTED and ev[0]["code"] == m.REJ_UNKNOWN_ORDER
    assert m.BINANCE_REJECTS[m.REJ_UNKNOWN_ORDER][0] == -2011
    ev = x.cancel(42)
    assert ev[0]["kind"] == m.E_CANCELED and x.bids() == []
    ev = x.cancel(42)  # twice: unknown now
    assert ev[0]["code"] == m.REJ_UNKNOWN_ORDER


def test_pool_and_level_capacity_refuse_cleanly():
    s = m.make_engine(1, max_levels=2, max_orders=3, max_stops=1, n_accounts=2)
    x = Ex(s)
    x.order(BUY, 1, 10)
    x.order(BUY, 1, 11)
    _, ev = x.order(BUY, 1, 12)  # third level: no room -> expires, book intact
    assert ev[-1]["kind"] == m.E_EXPIRED and ev[-1]["code"] == m.REJ_CAPACITY
    assert x.bids() == [(11, 1), (10, 1)]
    x.order(BUY, 1, 11)
    _, ev = x.order(BUY, 1, 10)  # pool of 3 is full
    assert ev[0]["kind"] == m.E_REJECTED and ev[0]["code"] == m.REJ_CAPACITY


def test_fees_maker_taker_rebate_rounding():
    s = engine()
    s.fee_maker[A] = -2_500          # -0.025 % rebate
    s.fee_taker[B] = 7_500           # 0.075 %
    x = Ex(s)
    x.order(SELL, 3, 333, acct=A)
    t, ev = x.order(BUY, 3, 333, acct=B)
    mk = [e for e in ev if e["kind"] == m.E_TRADE and e["maker"] == 1][0]
    tk = [e for e in ev if e["kind"] == m.E_TRADE and e["maker"] == 0][0]
    notional = 333 * 3  # 999 units
    # taker: 999 * 7500 / 1e8 = 0.0749..: rounded up to 1; maker rebate rounded toward zero: 0
    assert tk["fee"] == 1 and mk["fee"] == 0
    big = 10**12
    assert m._fee(big, 7_500) == big * 7_500 // 10**8
    assert m._fee(big + 1, 7_500) == (big + 1) * 7_500 // 10**8 + 1
    assert m._fee(big + 1, -2_500) == -((big + 1) * 2_500 // 10**8)
    assert m._fee(9 * 10**18, 100_000) == 9 * 10**18 // 1000  # no overflow on huge notionals
    assert notional == 999


def test_event_buffer_too_small_processes_nothing_rather_than_overflow():
    x = Ex()
    o = np.zeros(2, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["qty"], o["price"], o["order_id"] = 1, 1, 1, 10, [1, 2]
    ev = np.zeros(4, m.SIM_EVENT_DTYPE)
    used, n = m.match_batch(x.s, o, ev)
    assert (used, n) == (0, 0)
    used, n = m.match_batch(x.s, o, np.zeros(64, m.SIM_EVENT_DTYPE))
    assert (used, n) == (2, 2)


# --- invariants under random flow --------------------------------------------------------------
order_st = st.tuples(
    st.sampled_from([m.OP_NEW] * 6 + [m.OP_CANCEL]),
    st.sampled_from([BUY, SELL]),
    st.sampled_from([m.T_LIMIT] * 5 + [m.T_MARKET, m.T_LIMIT_MAKER, m.T_STOP_LOSS, m.T_TAKE_PROFIT_LIMIT]),
    st.sampled_from([m.TIF_GTC, m.TIF_GTC, m.TIF_IOC, m.TIF_FOK]),
    st.integers(95, 105),   # price
    st.integers(1, 6),      # qty
    st.integers(0, 2),      # account
    st.sampled_from([m.STP_NONE, m.STP_EXPIRE_TAKER, m.STP_EXPIRE_MAKER, m.STP_EXPIRE_BOTH, m.STP_DECREMENT]),
    st.integers(0, 40),     # cancel target / oco peer choice
)


@settings(max_examples=150, deadline=None)
@given(st.lists(order_st, min_size=1, max_size=80))
def test_book_never_crosses_and_quantity_is_conserved(flow):
    s = m.make_engine(1, max_levels=32, max_orders=128, max_stops=8, n_accounts=3)
    o = np.zeros(len(flow), m.SIM_ORDER_DTYPE)
    for i, (op, side, ot, tif, px, qty, acct, stp, tgt) in enumerate(flow):
        o[i]["op"], o[i]["side"], o[i]["otype"], o[i]["tif"] = op, side, ot, tif
        o[i]["price"], o[i]["qty"], o[i]["account"], o[i]["stp"] = px, qty, acct, stp
        o[i]["stop_price"] = px
        o[i]["order_id"] = i + 1 if op == m.OP_NEW else tgt
    ev = m.submit(s, o)

    # 1. never crossed
    bids, asks = m.book_levels(s, 0, BUY), m.book_levels(s, 0, SELL)
    if bids and asks:
        assert bids[0][0] < asks[0][0]
    # 2. per order: traded qty never exceeds order qty; final state accounts for all of it
    traded: dict[int, int] = {}
    prevented: dict[int, int] = {}
    qty_of: dict[int, int] = {}
    closed: set[int] = set()
    for e in ev:
        oid = int(e["order_id"])
        if e["kind"] == m.E_NEW:
            qty_of[oid] = int(e["qty"])
        elif e["kind"] == m.E_TRADE:
            traded[oid] = traded.get(oid, 0) + int(e["qty"])
            assert traded[oid] <= qty_of[oid]
            assert e["cum_qty"] == traded[oid] and e["cum_qty"] + e["leaves_qty"] <= qty_of[oid]
        elif e["kind"] == m.E_DECREMENTED:
            prevented[oid] = prevented.get(oid, 0) + int(e["qty"])
            assert e["cum_qty"] + e["leaves_qty"] + prevented[oid] == qty_of[oid]
        elif e["kind"] in (m.E_CANCELED, m.E_EXPIRED):
            closed.add(oid)
    # 3. makers and takers traded the same total
    mk = sum(int(e["qty"]) for e in ev if e["kind"] == m.E_TRADE and e["maker"])
    tk = sum(int(e["qty"]) for e in ev if e["kind"] == m.E_TRADE and not e["maker"])
    assert mk == tk
    # 4. the book's level totals equal the leaves of the orders resting there
    live = s.o_state == 1
    for side, levels in ((BUY, bids), (SELL, asks)):
        for px, q in levels:
            sel = live & (s.o_side == side) & (s.o_px == px)
            assert int(s.o_left[sel].sum()) == q
            assert q > 0
    # 5. a resting order was neither closed nor filled
    for slot in np.nonzero(live)[0]:
        oid = int(s.o_id[slot])
        assert oid not in closed
        assert traded.get(oid, 0) + prevented.get(oid, 0) + int(s.o_left[slot]) == qty_of[oid]
    # 6. the pool's free count matches the live orders
    assert int(s.nfree[0]) + int(live.sum()) + int((s.o_state == 2).sum()) == 128
