"""Strategy kernels against real books and journal events: quotes, skew, stops, tracking."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from bot4d.kernels import book as bk
from bot4d.kernels import oms_state as oms
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_ORDER_NEW, EV_ORDER_STATE, EV_RISK_REJECT,
                           INTENT_FLAG_REDUCE_ONLY, JOURNAL_EVENT_DTYPE, MD_CLEAR, MD_LEVEL,
                           MD_UPDATE_DTYPE, SIDE_ASK, SIDE_BID)
from bot4d.strategies import api, imbalance_taker as it, market_maker as mm

TICK = 10


def book(bids, asks):
    b = bk.make_books(1, 64)
    set_book(b, bids, asks)
    return b


def set_book(b, bids, asks):
    u = np.zeros(1 + len(bids) + len(asks), MD_UPDATE_DTYPE)
    u[0]["kind"] = MD_CLEAR
    for k, (px, q) in enumerate(bids):
        u[1 + k]["kind"], u[1 + k]["side"], u[1 + k]["price"], u[1 + k]["qty"] = MD_LEVEL, SIDE_BID, px, q
    for k, (px, q) in enumerate(asks):
        j = 1 + len(bids) + k
        u[j]["kind"], u[j]["side"], u[j]["price"], u[j]["qty"] = MD_LEVEL, SIDE_ASK, px, q
    b.apply(u)


def events(*evs):
    e = np.zeros(len(evs), JOURNAL_EVENT_DTYPE)
    for k, (kind, coid, oid, state) in enumerate(evs):
        e[k]["kind"], e[k]["client_order_id"], e[k]["order_id"], e[k]["state"] = kind, coid, oid, state
    return e


def run_mm(b, p, s, pos=0, live=True, now=10**9, cap=8):
    out = api.intents(cap)
    n = mm.on_book(b.levels, b.state, 0, now, pos, live, p, s, out, 0)
    return out[:n]


def mm_params(**kw):
    args = dict(tick=TICK, half_spread_ticks=2, qty=5, max_inventory=20, skew_ticks_per_lot=1,
                lot=5, stop_ticks=50)
    args.update(kw)
    return mm.make(3, **args)


def test_mm_quotes_around_microprice_with_stops():
    b = book([(1000, 10)], [(1100, 10)])  # microprice 1050
    p, s = mm_params()
    out = run_mm(b, p, s)
    assert list(out["command"]) == [CMD_PLACE, CMD_PLACE]
    bid, ask = out
    assert (bid["side"], bid["price"], bid["tif"], bid["qty"]) == (SIDE_BID, 1030, oms.TIF_POST_ONLY, 5)
    assert (ask["side"], ask["price"]) == (SIDE_ASK, 1070)
    assert bid["stop_price"] == 1030 - 500 and ask["stop_price"] == 1070 + 500
    assert bid["client_order_id"] != ask["client_order_id"] and bid["strategy"] == 3
    assert run_mm(b, p, s).size == 0  # pending: nothing more until the OMS answers


def test_mm_microprice_leans_toward_the_thin_side_and_never_crosses():
    b = book([(1000, 90)], [(1020, 10)])  # microprice = (1000*10 + 1020*90)/100 = 1018
    p, s = mm_params(half_spread_ticks=1)
    bid, ask = run_mm(b, p, s)
    assert bid["price"] == 1000 and ask["price"] == 1030
    assert bid["price"] < 1020 and ask["price"] > 1000


def test_mm_inventory_skew_and_limit():
    b = book([(1000, 10)], [(1100, 10)])
    p, s = mm_params()
    flat = run_mm(b, p, s, pos=0)
    p, s = mm_params()
    long = run_mm(b, p, s, pos=10)  # 2 lots long -> quotes 2 ticks lower
    assert long[0]["price"] == flat[0]["price"] - 20 and long[1]["price"] == flat[1]["price"] - 20
    p, s = mm_params()
    at_max = run_mm(b, p, s, pos=20)
    assert list(at_max["side"]) == [SIDE_ASK]  # buying more would pass max inventory


def test_mm_tracks_orders_requotes_and_pulls_quotes_when_book_not_live():
    b = book([(1000, 10)], [(1100, 10)])
    p, s = mm_params()
    bid, ask = run_mm(b, p, s)
    mm.on_order(events((EV_ORDER_NEW, bid["client_order_id"], 77, oms.S_NEW),
                       (EV_ORDER_NEW, ask["client_order_id"], 78, oms.S_NEW)), 0, 2, p, s)
    assert run_mm(b, p, s).size == 0  # working at the right prices
    set_book(b, [(1200, 10)], [(1300, 10)])  # market moved 20 ticks
    out = run_mm(b, p, s)
    assert list(out["command"]) == [CMD_CANCEL, CMD_CANCEL]
    assert list(out["target_order_id"]) == [77, 78]
    assert run_mm(b, p, s).size == 0  # cancels in flight: nothing is sent twice
    mm.on_order(events((EV_ORDER_STATE, bid["client_order_id"], 77, oms.S_CANCELLED),
                       (EV_ORDER_STATE, ask["client_order_id"], 78, oms.S_CANCELLED)), 0, 2, p, s)
    new = run_mm(b, p, s)
    assert list(new["command"]) == [CMD_PLACE, CMD_PLACE] and new[0]["price"] == 1230
    mm.on_order(events((EV_ORDER_NEW, new[0]["client_order_id"], 90, 0),
                       (EV_RISK_REJECT, new[1]["client_order_id"], 0, 0)), 0, 2, p, s)
    pulled = run_mm(b, p, s, live=False)
    assert list(pulled["command"]) == [CMD_CANCEL] and pulled[0]["target_order_id"] == 90
    # a refused cancel (the order had just filled) leaves the quote working, not stuck
    mm.on_order(events((EV_ORDER_STATE, pulled[0]["client_order_id"], 0, oms.S_REJECTED)), 0, 1, p, s)
    assert list(run_mm(b, p, s, live=False)["target_order_id"]) == [90]


def test_mm_never_writes_past_the_output():
    b = book([(1000, 10)], [(1100, 10)])
    p, s = mm_params()
    out = api.intents(1)
    assert mm.on_book(b.levels, b.state, 0, 1, 0, True, p, s, out, 0) == 1
    assert mm.on_book(b.levels, b.state, 0, 1, 0, True, p, s, out, 1) == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 50), st.integers(1, 100), st.integers(1, 100),
       st.integers(-40, 40), st.integers(1, 5))
def test_mm_property_stops_ticks_and_post_only(bid_t, spread_t, bq, aq, pos, half):
    bp, ap = bid_t * TICK, (bid_t + spread_t) * TICK
    b = book([(bp, bq)], [(ap, aq)])
    p, s = mm_params(half_spread_ticks=half)
    for o in run_mm(b, p, s, pos=pos):
        assert o["price"] % TICK == 0 and o["price"] > 0
        if o["side"] == SIDE_BID:
            assert o["price"] < ap and 0 < o["stop_price"] < o["price"]
            assert pos + o["qty"] <= 20
        else:
            assert o["price"] > bp and o["stop_price"] > o["price"]
            assert pos - o["qty"] >= -20


def taker(**kw):
    args = dict(tick=TICK, levels=2, threshold_e9=600_000_000, qty=3, max_pos=6, stop_ticks=20,
                slip_ticks=1, cooldown_ns=100, hold_ns=1000)
    args.update(kw)
    return it.make(4, **args)


def run_taker(b, p, s, pos=0, now=10_000, live=True):
    out = api.intents(4)
    return out[: it.on_book(b.levels, b.state, 0, now, pos, live, p, s, out, 0)]


def test_taker_buys_on_bid_imbalance_with_stop_and_waits_for_answer():
    b = book([(1000, 90), (990, 90)], [(1010, 10), (1020, 10)])  # imbalance 0.8
    p, s = taker()
    (o,) = run_taker(b, p, s)
    assert (o["side"], o["price"], o["tif"], o["qty"]) == (SIDE_BID, 1020, oms.TIF_IOC, 3)
    assert o["stop_price"] == 1020 - 200 and o["flags"] == 0
    assert run_taker(b, p, s, now=20_000).size == 0  # one order in flight
    it.on_order(events((EV_ORDER_STATE, o["client_order_id"], 5, oms.S_FILLED)), 0, 1, p, s)
    (o2,) = run_taker(b, p, s, pos=3, now=20_000)
    assert o2["side"] == SIDE_BID
    it.on_order(events((EV_ORDER_STATE, o2["client_order_id"], 6, oms.S_FILLED)), 0, 1, p, s)
    assert run_taker(b, p, s, pos=6, now=20_200).size == 0  # at max position


def test_taker_sells_on_ask_imbalance_cooldown_and_not_live():
    b = book([(1000, 10)], [(1010, 90)])
    p, s = taker()
    assert run_taker(b, p, s, live=False).size == 0
    (o,) = run_taker(b, p, s)
    assert o["side"] == SIDE_ASK and o["price"] == 990 and o["stop_price"] == 990 + 200
    it.on_order(events((EV_RISK_REJECT, o["client_order_id"], 0, 0)), 0, 1, p, s)
    assert run_taker(b, p, s, now=10_050).size == 0  # cooldown
    assert run_taker(b, p, s, now=10_100).size == 1
    balanced = book([(1000, 10)], [(1010, 10)])
    p, s = taker()
    assert run_taker(balanced, p, s).size == 0


def test_taker_exits_after_hold_with_reduce_only_and_no_stop():
    b = book([(1000, 10)], [(1010, 10)])
    p, s = taker()
    assert run_taker(b, p, s, pos=3, now=1_000).size == 0  # position opened at t=1000
    (o,) = run_taker(b, p, s, pos=3, now=2_000)
    assert (o["side"], o["qty"], o["flags"], o["stop_price"]) == (SIDE_ASK, 3, INTENT_FLAG_REDUCE_ONLY, 0)
    assert o["price"] == 990
