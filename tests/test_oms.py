"""OMS unit tests: every transition, refusals, batches, OCO, STP, replace, buffers, injected time."""
from __future__ import annotations

import numpy as np
import pytest

from bot4d.kernels import oms, stp
from bot4d.kernels import filters as F
from bot4d.kernels.oms_state import (
    C_DUPLICATE_COID, C_ILLEGAL_TRANSITION, C_OVERFILL, C_RISK_REJECT, C_UNKNOWN_ORDER, LEGAL,
    OT_MARKET, OT_STOP_LOSS, OT_TAKE_PROFIT, P_BATCH_ALL_OR_NONE, S_ACKED, S_CANCEL_PENDING,
    S_CANCELLED, S_EXPIRED, S_FILLED, S_NEW, S_PARTIALLY_FILLED, S_REJECTED, S_SUBMITTED,
    S_VALIDATED, STATE_NAMES, TERMINAL,
)
from bot4d.records import (
    CMD_CANCEL, CMD_PLACE, CMD_REPLACE, EV_FILL, EV_ORDER_NEW, EV_ORDER_STATE, EV_POSITION,
    JOURNAL_EVENT_DTYPE, ORDER_INTENT_DTYPE, SIDE_ASK, SIDE_BID,
)
from tests.test_oms_support import Driver, intent, report

BUY, SELL = SIDE_BID, SIDE_ASK


def test_place_goes_new_validated_submitted_with_gap_free_seq():
    d = Driver()
    oid = d.place(1, side=BUY, px=100, qty=10)
    ev = d.events
    assert [e["kind"] for e in ev] == [EV_ORDER_NEW, EV_ORDER_STATE, EV_ORDER_STATE]
    assert [e["state"] for e in ev] == [S_NEW, S_VALIDATED, S_SUBMITTED]
    assert [e["seq"] for e in ev] == [1, 2, 3]
    assert all(e["order_id"] == oid and e["client_order_id"] == 1 for e in ev)
    assert len(d.sent) == 1 and d.sent[0]["command"] == CMD_PLACE
    assert d.sent[0]["target_order_id"] == oid and d.sent[0]["qty"] == 10
    assert d.st.open_orders[0, 0] == 1 and d.st.open_buy_qty[0, 0] == 10
    # sequence continues across calls
    d.apply(report(oms.RP_ACK, oid))
    assert d.events[-1]["seq"] == 4 and d.events[-1]["state"] == S_ACKED


def test_fill_path_updates_position_and_frees_slot():
    d = Driver()
    oid = d.place(1, side=BUY, px=100, qty=10)
    d.apply(report(oms.RP_ACK, oid), report(oms.RP_FILL, oid, 100, 4, maker=1))
    assert d.state(oid) == S_PARTIALLY_FILLED
    assert d.st.open_buy_qty[0, 0] == 6
    d.apply(report(oms.RP_FILL, oid, 101, 6))
    assert d.state(oid) == -1   # terminal: slot released, id no longer live
    assert d.st.open_orders[0, 0] == 0 and d.st.open_buy_qty[0, 0] == 0
    assert d.st.positions.qty[0, 0] == 10
    assert d.st.positions.cost[0, 0] == 400 + 606
    kinds = [e["kind"] for e in d.events]
    assert kinds.count(EV_FILL) == 2 and kinds.count(EV_POSITION) == 2
    fills = [e for e in d.events if e["kind"] == EV_FILL]
    assert [int(f["filled_qty"]) for f in fills] == [4, 10]
    # a report for the released id is refused as unknown
    d.apply(report(oms.RP_FILL, oid, 101, 1))
    assert d.st.counters[C_UNKNOWN_ORDER] == 1
    assert d.st.positions.qty[0, 0] == 10


# --- every transition ----------------------------------------------------------------------------

def _to_state(d: Driver, start: int) -> int:
    """Drive a fresh order into ``start`` through real commands and reports."""
    if start == S_VALIDATED:
        d.apply(report(oms.RP_MARK, px=100, inst=0))
        return d.place(50, side=SELL, ot=OT_STOP_LOSS, stop=90, qty=10, px=0)
    oid = d.place(51, side=BUY, px=100, qty=10)
    if start == S_SUBMITTED:
        return oid
    if start == S_CANCEL_PENDING:
        d.submit(intent(52, cmd=CMD_CANCEL, target=oid))
        return oid
    d.apply(report(oms.RP_ACK, oid))
    if start == S_PARTIALLY_FILLED:
        d.apply(report(oms.RP_FILL, oid, 100, 3))
    return oid


# (event name, how to cause it, target state it asks for)
_EVENTS = {
    "ack": (lambda d, o: d.apply(report(oms.RP_ACK, o)), S_ACKED),
    "partial": (lambda d, o: d.apply(report(oms.RP_FILL, o, 100, 1)), S_PARTIALLY_FILLED),
    "fill_rest": (lambda d, o: d.apply(report(oms.RP_FILL, o, 100,
                                              int(d.st.o_qty[d.slot(o)] - d.st.o_filled[d.slot(o)]))),
                  S_FILLED),
    "cancel_cmd": (lambda d, o: d.submit(intent(99, cmd=CMD_CANCEL, target=o)), S_CANCEL_PENDING),
    "cancelled": (lambda d, o: d.apply(report(oms.RP_CANCELLED, o)), S_CANCELLED),
    "rejected": (lambda d, o: d.apply(report(oms.RP_REJECT, o, reason=-2010)), S_REJECTED),
    "expired": (lambda d, o: d.apply(report(oms.RP_EXPIRED, o)), S_EXPIRED),
    "trigger": (lambda d, o: d.apply(report(oms.RP_MARK, px=80, inst=0)), S_SUBMITTED),
}

# what each (start, event) must lead to; None = refused and counted as illegal
_EXPECT = {
    (S_VALIDATED, "ack"): None, (S_VALIDATED, "partial"): None, (S_VALIDATED, "fill_rest"): None,
    (S_VALIDATED, "cancel_cmd"): S_CANCELLED,  # never left: cancelled locally at once
    (S_VALIDATED, "cancelled"): S_CANCELLED, (S_VALIDATED, "rejected"): S_REJECTED,
    (S_VALIDATED, "expired"): S_EXPIRED, (S_VALIDATED, "trigger"): S_SUBMITTED,
    (S_SUBMITTED, "ack"): S_ACKED, (S_SUBMITTED, "partial"): S_PARTIALLY_FILLED,
    (S_SUBMITTED, "fill_rest"): S_FILLED, (S_SUBMITTED, "cancel_cmd"): S_CANCEL_PENDING,
    (S_SUBMITTED, "cancelled"): S_CANCELLED, (S_SUBMITTED, "rejected"): S_REJECTED,
    (S_SUBMITTED, "expired"): S_EXPIRED, (S_SUBMITTED, "trigger"): S_SUBMITTED,
    (S_ACKED, "ack"): None, (S_ACKED, "partial"): S_PARTIALLY_FILLED,
    (S_ACKED, "fill_rest"): S_FILLED, (S_ACKED, "cancel_cmd"): S_CANCEL_PENDING,
    (S_ACKED, "cancelled"): S_CANCELLED, (S_ACKED, "rejected"): None,
    (S_ACKED, "expired"): S_EXPIRED, (S_ACKED, "trigger"): S_ACKED,
    (S_PARTIALLY_FILLED, "ack"): None, (S_PARTIALLY_FILLED, "partial"): S_PARTIALLY_FILLED,
    (S_PARTIALLY_FILLED, "fill_rest"): S_FILLED,
    (S_PARTIALLY_FILLED, "cancel_cmd"): S_CANCEL_PENDING,
    (S_PARTIALLY_FILLED, "cancelled"): S_CANCELLED, (S_PARTIALLY_FILLED, "rejected"): None,
    (S_PARTIALLY_FILLED, "expired"): S_EXPIRED, (S_PARTIALLY_FILLED, "trigger"): S_PARTIALLY_FILLED,
    (S_CANCEL_PENDING, "ack"): S_CANCEL_PENDING,  # ack raced the cancel: remembered, no change
    (S_CANCEL_PENDING, "partial"): S_CANCEL_PENDING, (S_CANCEL_PENDING, "fill_rest"): S_FILLED,
    (S_CANCEL_PENDING, "cancel_cmd"): None, (S_CANCEL_PENDING, "cancelled"): S_CANCELLED,
    (S_CANCEL_PENDING, "rejected"): None, (S_CANCEL_PENDING, "expired"): S_EXPIRED,
    (S_CANCEL_PENDING, "trigger"): S_CANCEL_PENDING,
}


@pytest.mark.parametrize("start,event", sorted(_EXPECT, key=lambda k: (k[0], k[1])),
                         ids=lambda v: STATE_NAMES[v] if isinstance(v, int) else v)
def test_every_transition(start, event):
    d = Driver()
    oid = _to_state(d, start)
    assert d.state(oid) == start
    before = int(d.st.counters[C_ILLEGAL_TRANSITION])
    cause, target = _EVENTS[event]
    cause(d, oid)
    want = _EXPECT[(start, event)]
    illegal = int(d.st.counters[C_ILLEGAL_TRANSITION]) - before
    if want is None:
        assert illegal == 1, "an illegal transition must be refused and counted"
        assert d.state(oid) == start, "a refused transition must not be applied"
        last = d.events[-1]
        assert last["reason"] == oms.R_ILLEGAL and last["state"] == start
    else:
        assert illegal == 0
        got = d.state(oid)
        if TERMINAL[want]:
            assert got == -1
            assert any(e["order_id"] == oid and e["state"] == want for e in d.events)
        else:
            assert got == want
    # the table and the kernel agree on every applied step
    states = [int(e["state"]) for e in d.events if e["order_id"] == oid and
              e["kind"] == EV_ORDER_STATE and e["reason"] != oms.R_ILLEGAL]
    for a, b in zip(states, states[1:]):
        if a != b:
            assert LEGAL[a, b], (STATE_NAMES[a], STATE_NAMES[b])


def test_terminal_states_have_no_exit():
    for t in np.nonzero(TERMINAL)[0]:
        assert not LEGAL[t].any()
    assert LEGAL[S_NEW, S_VALIDATED] and not LEGAL[S_NEW, S_FILLED]


def test_cancel_reject_returns_to_previous_state():
    d = Driver()
    oid = d.place(1, px=100, qty=10)
    d.apply(report(oms.RP_ACK, oid))
    d.submit(intent(2, cmd=CMD_CANCEL, target=oid))
    assert d.state(oid) == S_CANCEL_PENDING
    assert d.sent[-1]["command"] == CMD_CANCEL
    d.apply(report(oms.RP_CANCEL_REJECT, oid, reason=-2011))
    assert d.state(oid) == S_ACKED
    # a fill that raced the cancel makes the way back PARTIALLY_FILLED
    d.submit(intent(3, cmd=CMD_CANCEL, target=oid))
    d.apply(report(oms.RP_FILL, oid, 100, 2), report(oms.RP_CANCEL_REJECT, oid))
    assert d.state(oid) == S_PARTIALLY_FILLED
    # cancel reject when no cancel is pending: refused
    n = int(d.st.counters[C_ILLEGAL_TRANSITION])
    d.apply(report(oms.RP_CANCEL_REJECT, oid))
    assert d.st.counters[C_ILLEGAL_TRANSITION] == n + 1


def test_overfill_refused_whole():
    d = Driver()
    oid = d.place(1, px=100, qty=10)
    d.apply(report(oms.RP_FILL, oid, 100, 7))
    d.apply(report(oms.RP_FILL, oid, 100, 4))
    assert d.st.counters[C_OVERFILL] == 1
    s = d.slot(oid)
    assert d.st.o_filled[s] == 7 and d.st.positions.qty[0, 0] == 7
    assert d.events[-1]["reason"] == oms.R_OVERFILL


def test_bad_fill_values_refused():
    d = Driver()
    oid = d.place(1, px=100, qty=10)
    d.apply(report(oms.RP_FILL, oid, 100, 0), report(oms.RP_FILL, oid, 0, 1),
            report(oms.RP_FILL, oid, 100, -3))
    assert d.st.o_filled[d.slot(oid)] == 0 and d.st.positions.qty[0, 0] == 0
    assert [e["reason"] for e in d.events[-3:]] == [oms.R_BAD_INPUT] * 3


def test_stale_id_after_slot_reuse_is_refused():
    d = Driver(capacity=2)
    a = d.place(1, px=100, qty=1)
    d.apply(report(oms.RP_CANCELLED, a))
    b = d.place(2, px=100, qty=1)
    c = d.place(3, px=101, qty=1)
    assert a not in (b, c) and d.slot(a) in (d.slot(b), d.slot(c))
    d.apply(report(oms.RP_FILL, a, 100, 1))
    assert d.st.counters[C_UNKNOWN_ORDER] == 1
    assert d.st.positions.qty[0, 0] == 0


def test_no_free_slot_rejects_cleanly():
    d = Driver(capacity=2)
    d.place(1, qty=1)
    d.place(2, qty=1)
    d.submit(intent(3, qty=1))
    assert d.events[-1]["state"] == S_REJECTED and d.events[-1]["reason"] == oms.R_NO_SLOT
    assert len(d.sent) == 2


# --- idempotency through the OMS -----------------------------------------------------------------

def test_duplicate_client_order_id_is_never_sent_twice_within_window():
    d = Driver(idem_window_ns=5_000_000_000)
    oid = d.place(77, px=100, qty=1)
    d.submit(intent(77, px=100, qty=1), now=d.now + 1_000_000_000)
    assert d.st.counters[C_DUPLICATE_COID] == 1
    assert len(d.sent) == 1
    dup = d.events[-1]
    assert dup["reason"] == oms.R_DUPLICATE and dup["order_id"] == oid
    # after the window (time injected) the id may be used again
    d.submit(intent(77, px=100, qty=1), now=d.now + 6_000_000_000)
    assert len(d.sent) == 2


def test_retried_cancel_is_not_sent_twice():
    d = Driver()
    oid = d.place(1, px=100, qty=1)
    d.submit(intent(2, cmd=CMD_CANCEL, target=oid))
    d.submit(intent(2, cmd=CMD_CANCEL, target=oid))
    assert [int(o["command"]) for o in d.sent] == [CMD_PLACE, CMD_CANCEL]


# --- risk decisions and batches -----------------------------------------------------------------

def test_risk_reject_is_counted_not_sent():
    d = Driver()
    d.submit(intent(1), decision=[7])
    assert d.st.counters[C_RISK_REJECT] == 1 and not d.sent and not d.events


def test_risk_sized_quantity_is_used():
    d = Driver()
    d.submit(intent(1, qty=10), approved=[4])
    assert d.sent[0]["qty"] == 4


def test_batch_all_or_none_on_risk_reject():
    d = Driver()
    d.submit(intent(1, batch=9), intent(2, batch=9), intent(3, batch=9), decision=[0, 5, 0])
    assert not d.sent
    rej = [e for e in d.events if e["state"] == S_REJECTED]
    assert sorted(int(e["client_order_id"]) for e in rej) == [1, 3]
    assert all(e["reason"] == oms.R_BATCH_PEER for e in rej)
    assert d.st.open_orders.sum() == 0


def test_batch_all_or_none_on_filter_failure():
    d = Driver()
    d.st.filters.tick[0] = 5
    d.submit(intent(1, px=100, batch=4), intent(2, px=101, batch=4))
    assert not d.sent
    reasons = sorted(int(e["reason"]) for e in d.events)
    assert reasons == sorted([oms.R_BATCH_PEER, F.F_PRICE_TICK])


def test_batch_per_order_policy():
    d = Driver(batch_all_or_none=False)
    assert d.st.policy[P_BATCH_ALL_OR_NONE] == 0
    d.submit(intent(1, batch=9), intent(2, batch=9), decision=[0, 5])
    assert len(d.sent) == 1 and d.sent[0]["client_order_id"] == 1


def test_batch_larger_than_free_slots_is_refused_whole():
    d = Driver(capacity=2)
    d.submit(intent(1, batch=3), intent(2, batch=3), intent(3, batch=3))
    assert not d.sent and d.st.open_orders.sum() == 0
    assert {int(e["reason"]) for e in d.events} == {oms.R_NO_SLOT}


def test_bad_intent_fields_rejected_with_reason():
    d = Driver()
    d.submit(intent(1, side=5), intent(2, inst=9), intent(3, ot=9), intent(4, tif=0),
             intent(5, strategy=999), intent(6, cmd=42), intent(7, ot=OT_STOP_LOSS, stop=0),
             intent(8, ot=OT_MARKET, tif=4, px=0))
    assert not d.sent
    assert [int(e["reason"]) for e in d.events] == [oms.R_BAD_INPUT] * 8


# --- OCO, stops, take-profits -----------------------------------------------------------------

def _oco(d: Driver):
    """Long position protection: a take-profit limit sell at 110 and a stop-loss sell at 90."""
    d.apply(report(oms.RP_MARK, px=100, inst=0))
    d.submit(intent(10, side=SELL, px=110, qty=5, oco=1),
             intent(11, side=SELL, px=0, qty=5, ot=OT_STOP_LOSS, stop=90, oco=1))
    tp = d.order_id_of(10)
    sl = d.order_id_of(11)
    return tp, sl


def test_oco_fill_cancels_other_leg_in_same_call():
    d = Driver()
    tp, sl = _oco(d)
    assert d.state(tp) == S_SUBMITTED and d.state(sl) == S_VALIDATED
    assert d.st.o_peer[d.slot(tp)] == d.slot(sl)
    d.apply(report(oms.RP_FILL, tp, 110, 1))
    assert d.state(sl) == -1   # never left: cancelled locally at once
    assert any(e["order_id"] == sl and e["state"] == S_CANCELLED and e["reason"] == oms.R_OCO_PEER
               for e in d.events)


def test_oco_trigger_cancels_other_leg_through_venue():
    d = Driver()
    tp, sl = _oco(d)
    d.apply(report(oms.RP_MARK, px=89, inst=0))
    assert d.state(sl) == S_SUBMITTED
    assert d.sent[-2]["command"] == CMD_PLACE and d.sent[-2]["order_type"] == OT_MARKET
    assert d.sent[-2]["target_order_id"] == sl
    assert d.state(tp) == S_CANCEL_PENDING
    assert d.sent[-1]["command"] == CMD_CANCEL and d.sent[-1]["target_order_id"] == tp


def test_oco_leg_rejected_takes_pair_down():
    d = Driver()
    d.apply(report(oms.RP_MARK, px=100, inst=0))
    # stop at 105 for a sell would trigger at once: rejected, so the limit leg is refused too
    d.submit(intent(10, side=SELL, px=110, qty=5, oco=2),
             intent(11, side=SELL, px=0, qty=5, ot=OT_STOP_LOSS, stop=105, oco=2))
    assert not d.sent and d.st.open_orders.sum() == 0
    assert {int(e["reason"]) for e in d.events if e["state"] == S_REJECTED} == \
        {oms.R_WOULD_TRIGGER, oms.R_BATCH_PEER}


def test_cancelling_one_oco_leg_cancels_the_other():
    d = Driver()
    tp, sl = _oco(d)
    d.submit(intent(20, cmd=CMD_CANCEL, target=tp))
    assert d.state(tp) == S_CANCEL_PENDING and d.state(sl) == -1


def test_take_profit_triggers_in_favour():
    d = Driver()
    d.apply(report(oms.RP_MARK, px=100, inst=0))
    oid = d.place(1, side=SELL, ot=OT_TAKE_PROFIT, tp=120, px=0, qty=3)
    assert d.state(oid) == S_VALIDATED and not d.sent
    d.apply(report(oms.RP_MARK, px=119, inst=0))
    assert d.state(oid) == S_VALIDATED
    d.apply(report(oms.RP_MARK, px=120, inst=0))
    assert d.state(oid) == S_SUBMITTED and d.sent[-1]["qty"] == 3
    buy_sl = d.place(2, side=BUY, ot=OT_STOP_LOSS, stop=130, px=0, qty=1)
    d.apply(report(oms.RP_MARK, px=131, inst=0))
    assert d.state(buy_sl) == S_SUBMITTED


# --- self-trade prevention ------------------------------------------------------------------------

def _resting(d: Driver) -> int:
    oid = d.place(1, side=SELL, px=100, qty=5)
    d.apply(report(oms.RP_ACK, oid))
    return oid


@pytest.mark.parametrize("mode", [stp.STP_CANCEL_NEW, stp.STP_CANCEL_RESTING,
                                  stp.STP_CANCEL_BOTH, stp.STP_DECREMENT_BOTH, stp.STP_NONE])
def test_stp_policies(mode):
    d = Driver()
    d.st.stp_mode[0] = mode
    rest = _resting(d)
    # a buy below the ask does not cross: no STP action under any policy
    low = d.place(2, side=BUY, px=99, qty=1)
    assert d.state(low) == S_SUBMITTED and d.state(rest) == S_ACKED
    d.submit(intent(3, side=BUY, px=100, qty=3))
    new = d.order_id_of(3)
    if mode == stp.STP_CANCEL_NEW:
        assert new == 0 and d.state(rest) == S_ACKED
        assert d.events[-1]["reason"] == oms.R_STP
    elif mode == stp.STP_CANCEL_RESTING:
        assert d.state(new) == S_SUBMITTED and d.state(rest) == S_CANCEL_PENDING
    elif mode == stp.STP_CANCEL_BOTH:
        assert new == 0 and d.state(rest) == S_CANCEL_PENDING
    elif mode == stp.STP_DECREMENT_BOTH:
        # new 3 vs resting 5: new fully prevented (rejected), resting replaced down to 2
        assert new == 0
        assert d.sent[-1]["command"] == CMD_REPLACE and d.sent[-1]["qty"] == 2
        d.apply(report(oms.RP_REPLACED, rest, 100, 2))
        assert d.st.o_qty[d.slot(rest)] == 2 and d.st.open_sell_qty[0, 0] == 2
    else:
        assert d.state(new) == S_SUBMITTED and d.state(rest) == S_ACKED


def test_stp_decrement_larger_new_order_goes_out_reduced():
    d = Driver()
    d.st.stp_mode[0] = stp.STP_DECREMENT_BOTH
    rest = _resting(d)
    d.submit(intent(3, side=BUY, px=101, qty=8))
    new = d.order_id_of(3)
    assert d.state(rest) == S_CANCEL_PENDING           # resting 5 fully prevented
    assert d.state(new) == S_SUBMITTED and d.sent[-1]["qty"] == 3
    assert d.st.open_buy_qty[0, 0] == 3


def test_stp_market_order_crosses_everything():
    d = Driver()
    rest = _resting(d)
    d.st.filters.ref_px[0] = 100
    d.submit(intent(3, side=BUY, ot=OT_MARKET, px=0, qty=1))
    assert d.order_id_of(3) == 0 and d.state(rest) == S_ACKED


def test_venue_stp_mapping():
    assert stp.venue_mode("binance", stp.STP_CANCEL_NEW) == "EXPIRE_TAKER"
    assert stp.venue_mode("binance", stp.STP_DECREMENT_BOTH) == "DECREMENT"
    assert stp.venue_mode("bybit", stp.STP_CANCEL_RESTING) == "CancelMaker"
    assert stp.venue_mode("bybit", stp.STP_DECREMENT_BOTH) is None
    assert stp.venue_mode("okx", stp.STP_CANCEL_BOTH) == "cancel_both"
    assert stp.venue_mode("coinbase", stp.STP_DECREMENT_BOTH) == "dc"
    with pytest.raises(ValueError):
        stp.venue_mode("kraken", stp.STP_CANCEL_NEW)
    with pytest.raises(ValueError):
        stp.venue_mode("binance", 42)


# --- replace ---------------------------------------------------------------------------------------

def test_replace_flow_and_refusals():
    d = Driver()
    oid = d.place(1, px=100, qty=10)
    # not acked yet: replace refused
    d.submit(intent(2, cmd=CMD_REPLACE, target=oid, px=101, qty=12))
    assert d.st.counters[C_ILLEGAL_TRANSITION] == 1
    d.apply(report(oms.RP_ACK, oid), report(oms.RP_FILL, oid, 100, 4))
    d.submit(intent(3, cmd=CMD_REPLACE, target=oid, px=101, qty=4))   # not above filled
    assert d.events[-1]["reason"] == oms.R_BAD_INPUT
    d.submit(intent(4, cmd=CMD_REPLACE, target=oid, px=101, qty=12))
    assert d.sent[-1]["command"] == CMD_REPLACE and d.sent[-1]["qty"] == 12
    d.submit(intent(5, cmd=CMD_REPLACE, target=oid, px=102, qty=12))   # one at a time
    assert d.st.counters[C_ILLEGAL_TRANSITION] == 2
    d.apply(report(oms.RP_REPLACED, oid, 101, 12))
    s = d.slot(oid)
    assert d.st.o_px[s] == 101 and d.st.o_qty[s] == 12 and d.st.open_buy_qty[0, 0] == 8
    d.submit(intent(6, cmd=CMD_REPLACE, target=oid, px=99, qty=11))
    d.apply(report(oms.RP_REPLACE_REJECT, oid))
    assert d.st.o_px[s] == 101 and d.st.o_new_qty[s] == 0
    d.submit(intent(7, cmd=CMD_REPLACE, target=12345, px=99, qty=11))
    assert d.events[-1]["reason"] == oms.R_UNKNOWN_ORDER


# --- buffers -----------------------------------------------------------------------------------

def test_small_journal_consumes_partially_and_resumes_without_loss():
    # room is reserved for an intent's worst case (STP may touch every live order of its
    # account and instrument), so a small journal fills after a few intents
    d = Driver(jcap=40)
    it = np.array([intent(i + 1, px=100, qty=1) for i in range(10)], ORDER_INTENT_DTYPE)
    done = 0
    calls = 0
    while done < len(it):
        used = oms.submit(d.st, it[done:], np.zeros(10 - done, np.int32),
                          np.zeros(10 - done, np.int64), d.now, d.j, d.jc, d.ob, d.oc)
        assert used > 0
        d._drain()
        done += used
        calls += 1
    assert calls > 1
    assert len(d.sent) == 10
    assert [int(e["seq"]) for e in d.events] == list(range(1, 31))


def test_empty_buffers_too_small_consume_nothing():
    d = Driver(jcap=4)
    it = np.array([intent(1)], ORDER_INTENT_DTYPE)
    used = oms.submit(d.st, it, np.zeros(1, np.int32), np.zeros(1, np.int64), 0, d.j, d.jc,
                      d.ob, d.oc)
    assert used == 0 and d.jc[0] == 0 and d.st.open_orders.sum() == 0


def test_journal_records_are_journal_dtype_and_carry_shard():
    d = Driver(shard=3)
    d.place(1)
    assert d.j.dtype == JOURNAL_EVENT_DTYPE
    assert all(e["shard"] == 3 for e in d.events)
    assert all(e["ts_ns"] == d.now for e in d.events)


def test_oco_leg_filling_while_cancelled_after_partner_triggered_takes_partner_out():
    # found by the property test: the stop leg triggers (the limit leg is being cancelled), then
    # the venue reports a fill on the limit leg that raced the cancel; the triggered stop, already
    # sent, must be cancelled too so the pair never has both legs working
    d = Driver()
    tp, sl = _oco(d)
    d.apply(report(oms.RP_MARK, px=89, inst=0))
    assert d.state(sl) == S_SUBMITTED and d.state(tp) == S_CANCEL_PENDING
    d.apply(report(oms.RP_FILL, tp, 110, 2))
    assert d.state(sl) == S_CANCEL_PENDING
    assert d.sent[-1]["command"] == CMD_CANCEL and d.sent[-1]["target_order_id"] == sl
