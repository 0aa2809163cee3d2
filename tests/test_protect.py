"""The protective-stop kernel against the real OMS (no venue): what it asks for as positions move.
The proof with the daemon and the venue is tests/test_protective_stops.py."""
from __future__ import annotations

import numpy as np

from bot4d.kernels import oms as oms_k
from bot4d.kernels import protect as pt
from bot4d.kernels.oms_state import (OT_LIMIT, OT_MARKET, OT_STOP_LIMIT, S_ACKED, S_CANCEL_PENDING, TIF_GTC,
                                     make_oms)
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_ORDER_STATE, JOURNAL_EVENT_DTYPE, ORDER_INTENT_DTYPE, SIDE_ASK,
                           SIDE_BID)

T = 1_700_000_000_000_000_000


class Rig:
    def __init__(self, default_bps: int = 200, limit_bps: int = 50) -> None:
        self.st = make_oms(1, 2, capacity=64, idem_capacity=256, idem_window_ns=10**12)
        self.st.filters.tick[:] = 10
        self.st.filters.step[:] = 5
        self.pr = pt.make_protection(2)
        pt.configure(self.pr, 0, enabled=True, default_bps=default_bps, limit_bps=limit_bps, retry_ns=1000)
        self.j = np.zeros(256, JOURNAL_EVENT_DTYPE)
        self.jc = np.zeros(1, np.int64)
        self.ob = np.zeros(64, ORDER_INTENT_DTYPE)
        self.oc = np.zeros(1, np.int64)
        self.it = np.zeros(4, ORDER_INTENT_DTYPE)
        self.now = T

    def submit(self, it: np.ndarray) -> None:
        z = np.zeros(len(it), np.int64)
        oms_k.submit(self.st, it, z.astype(np.int32), z, self.now, self.j, self.jc, self.ob, self.oc)

    def report(self, kind: int, oid: int, **kw) -> None:
        r = np.zeros(1, oms_k.VENUE_REPORT_DTYPE)
        r["kind"], r["order_id"], r["ts_ns"], r["instrument"] = kind, oid, self.now, 0
        for k, v in kw.items():
            r[k] = v
        j0 = int(self.jc[0])
        oms_k.apply(self.st, r, self.j, self.jc, self.ob, self.oc)
        return pt.note_journal(self.pr, self.st, self.j, j0, int(self.jc[0]))

    def entry(self, side: int, px: int, qty: int, stop: int, coid: int, tp: int = 0) -> int:
        it = np.zeros(1, ORDER_INTENT_DTYPE)
        it["command"], it["side"], it["order_type"], it["tif"] = CMD_PLACE, side, OT_LIMIT, TIF_GTC
        it["price"], it["qty"], it["stop_price"], it["client_order_id"] = px, qty, stop, coid
        it["take_profit_price"] = tp
        self.submit(it)
        oid = int(self.ob[self.oc[0] - 1]["target_order_id"])
        self.report(oms_k.RP_ACK, oid, venue_order_id=900 + coid)
        return oid

    def plan(self) -> np.void | None:
        """One protective pass: the intent it made (already submitted), or None."""
        self.oc[0] = 0
        n = pt.plan(self.pr, self.st, 0, self.now, self.it, 0)
        n = pt.cancel_fired(self.pr, self.st, 0, self.now, self.it, n)
        if n == 0:
            return None
        self.submit(self.it[:n])
        for q in range(n):
            pt.adopt(self.pr, self.st, 0, self.it, q, self.now)
        return self.it[0].copy() if n == 1 else self.it[:n].copy()


def test_a_fill_gets_a_stop_for_the_whole_position_at_the_strategys_price():
    r = Rig()
    oid = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, oid, price=10_000, qty=20, trade_id=7, maker=1)
    it = r.plan()
    assert it["command"] == CMD_PLACE and it["order_type"] == OT_STOP_LIMIT and it["side"] == SIDE_ASK
    assert it["qty"] == 20 and it["stop_price"] == 9_500 and it["replace_order_id"] == 0
    # the limit 50 bps beyond the trigger, on the tick
    assert it["price"] == 9_450
    out = r.ob[0]
    assert out["order_type"] == OT_STOP_LIMIT and out["stop_price"] == 9_500 and out["price"] == 9_450
    stop = int(r.pr.st[0, pt.X_OID])
    assert r.pr.st[0, pt.X_SINCE] == r.now
    assert r.plan() is None, "one stop at a time: no second while the first has no answer"
    r.now += 3_000_000
    r.report(oms_k.RP_ACK, stop, venue_order_id=5555)
    assert r.plan() is None
    assert r.pr.st[0, pt.X_SINCE] == 0
    assert r.pr.hist[0] == 1 and r.pr.hist[1] == 3_000_000   # one unprotected spell of 3 ms


def test_a_grown_position_resizes_the_stop_by_cancel_replace_and_flat_cancels_it():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=1)   # partial
    r.plan()
    s1 = int(r.pr.st[0, pt.X_OID])
    r.report(oms_k.RP_ACK, s1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=2)
    it = r.plan()
    assert it["qty"] == 20 and it["replace_order_id"] == s1
    assert r.ob[0]["replace_order_id"] == s1
    slot = s1 & 63
    assert r.st.o_state[slot] == S_CANCEL_PENDING
    s2 = int(r.pr.st[0, pt.X_OID])
    r.report(oms_k.RP_CANCELLED, s1)
    r.report(oms_k.RP_ACK, s2)
    assert r.plan() is None
    # flat (a sell closes it): the stop is cancelled
    b = r.entry(SIDE_ASK, 10_100, 20, 0, 2)
    r.report(oms_k.RP_FILL, b, price=10_100, qty=20, trade_id=3)
    it = r.plan()
    assert it["command"] == CMD_CANCEL and it["target_order_id"] == s2


def test_a_swap_the_venue_could_not_do_keeps_the_old_stop_in_force():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=1)
    r.plan()
    s1 = int(r.pr.st[0, pt.X_OID])
    r.report(oms_k.RP_ACK, s1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=2)
    r.plan()
    s2 = int(r.pr.st[0, pt.X_OID])
    # Binance -2022: the cancel failed, the new order was not attempted: no alarm
    assert r.report(oms_k.RP_CANCEL_REJECT, s1, reason=-2011) == 0
    assert r.report(oms_k.RP_REJECT, s2, reason=pt.SWAP_NOT_ATTEMPTED) == 0
    assert r.pr.ctr[0, pt.P_REFUSED] == 0
    assert r.plan() is None   # a transient refusal is retried after retry_ns, without an alarm
    r.now += 1000
    it = r.plan()   # the old stop is ours again, and replaced anew
    assert it is not None and it["replace_order_id"] == s1


def test_a_refused_stop_counts_and_waits_before_the_next_attempt():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    r.plan()
    s1 = int(r.pr.st[0, pt.X_OID])
    assert r.report(oms_k.RP_REJECT, s1, reason=-2010) == 1
    assert r.pr.ctr[0, pt.P_REFUSED] == 1
    assert r.plan() is None, "retry waits retry_ns"
    r.now += 1000
    assert r.plan()["order_type"] == OT_STOP_LIMIT


def test_a_crossed_stop_closes_at_market_and_a_short_gets_a_buy_stop_above():
    r = Rig()
    a = r.entry(SIDE_ASK, 10_000, 20, 0, 1)    # no stop price named: the default distance
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    it = r.plan()
    assert it["side"] == SIDE_BID and it["stop_price"] == 10_200 and it["price"] == 10_260  # 2 % up, limit beyond
    r.report(oms_k.RP_ACK, int(r.pr.st[0, pt.X_OID]))
    r.report(oms_k.RP_MARK, 0, price=10_300)   # through the stop while it was being... replaced
    r.pr.st[0, pt.X_WANT_PX] = 10_250            # a new trigger the mark already crossed
    it = r.plan()
    assert it["order_type"] == OT_MARKET and it["side"] == SIDE_BID and it["qty"] == 20
    assert r.pr.ctr[0, pt.P_EXITS] == 1


def test_dust_below_the_lot_gets_no_stop_and_a_venue_order_id_is_journalled():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 5, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=5, trade_id=1)
    r.st.filters.min_qty[:] = 10   # the venue's minimum lot rose above what is held (dust)
    assert r.plan() is None and r.pr.ctr[0, pt.P_DUST] == 1
    st_ev = r.j[: r.jc[0]]
    acks = st_ev[(st_ev["kind"] == EV_ORDER_STATE) & (st_ev["state"] == S_ACKED)]
    assert acks[0]["aux0"] == 901 and acks[0]["aux2"] == S_ACKED


def test_a_rate_limited_or_unsent_stop_is_retried_without_an_alarm():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    for code in (-1003, -1015, -1001):
        r.plan()
        s1 = int(r.pr.st[0, pt.X_OID])
        assert r.report(oms_k.RP_REJECT, s1, reason=code) == 0
        r.now += 1000
    assert r.pr.ctr[0, pt.P_REFUSED] == 0


def test_a_stop_the_venue_says_would_trigger_at_once_becomes_a_market_exit():
    """The venue's last price is already through the stop (our book's mid is not): Binance
    refuses the stop as one that "would trigger immediately", which is the stop firing, not a
    refusal of protection: the position is closed at market, no alarm."""
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    r.plan()
    s1 = int(r.pr.st[0, pt.X_OID])
    assert r.report(oms_k.RP_REJECT, s1, reason=pt.STOP_WOULD_TRIGGER) == 0
    it = r.plan()
    assert it["order_type"] == OT_MARKET and it["side"] == SIDE_ASK and it["qty"] == 20
    assert r.pr.ctr[0, pt.P_REFUSED] == 0 and r.pr.ctr[0, pt.P_EXITS] == 1


def test_an_entry_with_a_take_profit_gets_one_oco_request_and_the_take_profit_fill_ends_it():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1, tp=10_505)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    legs = r.plan()
    assert len(legs) == 2 and legs[0]["order_type"] == OT_STOP_LIMIT and legs[1]["order_type"] == OT_LIMIT
    assert legs[1]["price"] == 10_510 and legs[1]["side"] == SIDE_ASK and legs[1]["qty"] == 20  # on the tick, up
    assert legs[0]["oco_group"] == legs[1]["oco_group"] != 0
    # one venue request: the stop's record carries the take-profit leg's price and order id
    assert r.oc[0] == 1
    stop, tp = int(r.pr.st[0, pt.X_OID]), int(r.pr.st[0, pt.X_TP_OID])
    assert r.ob[0]["target_order_id"] == stop and r.ob[0]["take_profit_price"] == 10_510
    assert r.ob[0]["oco_group"] == tp and r.pr.ctr[0, pt.P_OCO] == 1
    r.report(oms_k.RP_ACK, stop)
    r.report(oms_k.RP_ACK, tp)
    assert r.plan() is None and r.pr.st[0, pt.X_SINCE] == 0
    # the take-profit fills: the OMS takes the stop leg out, nothing new is placed
    r.oc[0] = 0
    r.report(oms_k.RP_FILL, tp, price=10_510, qty=20, trade_id=2)
    assert r.st.positions.qty[0, 0] == 0
    assert r.oc[0] == 1 and r.ob[0]["command"] == CMD_CANCEL and r.ob[0]["target_order_id"] == stop
    r.report(oms_k.RP_CANCELLED, stop)
    assert r.plan() is None


def test_a_resize_replaces_the_oco_and_a_reached_take_profit_leaves_a_lone_stop():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1, tp=10_500)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=1)
    r.plan()
    s1, t1 = int(r.pr.st[0, pt.X_OID]), int(r.pr.st[0, pt.X_TP_OID])
    r.report(oms_k.RP_ACK, s1)
    r.report(oms_k.RP_ACK, t1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=10, trade_id=2)
    legs = r.plan()
    assert legs[0]["replace_order_id"] == s1 and legs[0]["qty"] == 20 and legs[1]["qty"] == 20
    assert r.ob[0]["replace_order_id"] == s1 and r.ob[0]["take_profit_price"] == 10_500
    # the venue cancels the old list (both legs) and acks the new one
    r.report(oms_k.RP_CANCELLED, s1)
    r.report(oms_k.RP_CANCELLED, t1)
    s2, t2 = int(r.pr.st[0, pt.X_OID]), int(r.pr.st[0, pt.X_TP_OID])
    r.report(oms_k.RP_ACK, s2)
    r.report(oms_k.RP_ACK, t2)
    assert r.plan() is None
    # the mark reaches the take-profit: a maker order there would take; the stop stays alone
    r.report(oms_k.RP_MARK, 0, price=10_600)
    it = r.plan()
    assert it["order_type"] == OT_STOP_LIMIT and it["replace_order_id"] == s2 and it["oco_group"] == 0
    assert r.pr.st[0, pt.X_TP_OID] == 0


def test_a_protective_fill_cancels_the_strategys_orders_on_its_side():
    r = Rig()
    a = r.entry(SIDE_BID, 10_000, 20, 9_500, 1)
    r.report(oms_k.RP_FILL, a, price=10_000, qty=20, trade_id=1)
    r.plan()
    stop = int(r.pr.st[0, pt.X_OID])
    r.report(oms_k.RP_ACK, stop)
    sell = r.entry(SIDE_ASK, 10_300, 20, 0, 2)     # the strategy's closing order rests above
    buy = r.entry(SIDE_BID, 9_000, 5, 8_500, 3)     # and a bid below (not the exit's side)
    assert r.plan() is None
    r.report(oms_k.RP_FILL, stop, price=9_450, qty=20, trade_id=2)
    assert r.st.positions.qty[0, 0] == 0
    it = r.plan()
    assert it["command"] == CMD_CANCEL and it["target_order_id"] == sell
    assert r.pr.ctr[0, pt.P_CLOSING_CANCELLED] == 1
    assert r.st.o_state[buy & 63] == S_ACKED and r.plan() is None


def test_an_earlier_runs_fill_after_the_balances_moves_the_position():
    r = Rig()
    r.st.positions.qty[0, 0] = 20       # what the balances said at start
    r.st.positions.fill_qty[0, 0] = 20
    for tid, flags in ((1, oms_k.RP_FLAG_RECOVERED), (2, oms_k.RP_FLAG_RECOVERED | oms_k.RP_FLAG_AFTER_BALANCES)):
        r.report(oms_k.RP_FILL, 77, price=9_450, qty=10, trade_id=tid, side=SIDE_ASK, boot=12345, flags=flags)
    assert r.st.positions.qty[0, 0] == 10   # only the fill made after the balances were read


def _found(r: Rig, qty: int) -> None:
    """A position found at start: reconciliation sets its size only (no fill, no entry price)."""
    r.st.positions.qty[0, 0] = qty
    r.st.positions.fill_qty[0, 0] = qty


def test_a_position_without_an_entry_price_keeps_the_trigger_of_its_first_mark():
    """A reference that followed the mark would trail the price down (a stop that never fires):
    the first mark is the reference, kept while the mark falls and rises, until flat."""
    r = Rig()
    _found(r, 20)
    r.report(oms_k.RP_MARK, 0, price=10_000)
    assert r.st.positions.avg_px[0, 0] == 0
    it = r.plan()
    assert it["side"] == SIDE_ASK and it["stop_price"] == 9_800 and it["qty"] == 20   # 200 bps under
    stop = int(r.pr.st[0, pt.X_OID])
    r.report(oms_k.RP_ACK, stop)
    for mark in (9_950, 9_900, 9_850, 10_400, 9_820):   # a slow decline, a bounce, down again
        r.report(oms_k.RP_MARK, 0, price=mark)
        assert r.plan() is None, f"the stop moved with the mark at {mark}"
        assert r.pr.st[0, pt.X_OID] == stop
    r.report(oms_k.RP_MARK, 0, price=9_790)   # through it: the venue's stop does the rest
    assert r.plan() is None
    # flat: the stop is cancelled and the reference goes; the next position takes its own
    r.report(oms_k.RP_FILL, stop, price=9_790, qty=20, trade_id=1)
    assert r.st.positions.qty[0, 0] == 0
    assert r.plan() is None and r.pr.st[0, pt.X_REF_PX] == 0
    _found(r, -20)
    r.st.positions.cost[0, 0] = r.st.positions.avg_px[0, 0] = 0
    r.report(oms_k.RP_MARK, 0, price=9_500)
    it = r.plan()
    assert it["side"] == SIDE_BID and it["stop_price"] == 9_690   # 200 bps over 9_500


def test_a_found_position_carried_at_its_first_mark_keeps_its_trigger_while_the_mark_falls():
    """What the shard does with a position found at start: carried at the first mark (its cost
    and avg_px), so its stop is measured from that price and stays there."""
    r = Rig()
    _found(r, 20)
    r.st.positions.cost[0, 0] = 20 * 10_000
    r.st.positions.avg_px[0, 0] = 10_000
    r.report(oms_k.RP_MARK, 0, price=10_000)
    it = r.plan()
    assert it["stop_price"] == 9_800
    r.report(oms_k.RP_ACK, int(r.pr.st[0, pt.X_OID]))
    for mark in (9_950, 9_900, 9_850):
        r.report(oms_k.RP_MARK, 0, price=mark)
        assert r.plan() is None
