"""Property tests: random command and venue-report sequences through the real OMS kernels.

After every step: no order is in an illegal or impossible state, filled never exceeds quantity,
the position equals the signed sum of the fills journalled, a client order id is never accepted
twice inside its window, an OCO pair never has both legs live once one has filled or triggered,
the open-order aggregates match the live orders, and journal sequence numbers are gap-free.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot4d.kernels import oms, stp
from bot4d.kernels.oms_state import (
    LEGAL, OT_LIMIT, OT_MARKET, OT_STOP_LOSS, OT_TAKE_PROFIT, S_ACKED, S_CANCEL_PENDING, S_NEW,
    S_PARTIALLY_FILLED, S_SUBMITTED, S_VALIDATED, TERMINAL, TIF_GTC, TIF_IOC,
)
from bot4d.records import CMD_CANCEL, CMD_PLACE, CMD_REPLACE, EV_FILL, EV_ORDER_NEW, EV_ORDER_STATE
from tests.test_oms_support import Driver, intent, report

WINDOW = 3_000_000_000
LIVE_WORKING = (S_VALIDATED, S_SUBMITTED, S_ACKED, S_PARTIALLY_FILLED)
_TRANSITION_REASONS = (oms.R_NONE, oms.R_STP, oms.R_OCO_PEER, oms.R_VENUE, oms.R_TRIGGERED,
                       oms.R_CANCEL_REJECTED, oms.R_STP_DECREMENT)

place = st.tuples(st.just("place"), st.integers(1, 25), st.integers(0, 1), st.integers(95, 105),
                  st.integers(1, 6), st.sampled_from([OT_LIMIT, OT_LIMIT, OT_MARKET, OT_STOP_LOSS,
                                                      OT_TAKE_PROFIT]),
                  st.sampled_from([TIF_GTC, TIF_IOC]), st.booleans(), st.integers(0, 2))
cancel = st.tuples(st.just("cancel"), st.integers(0, 50), st.integers(100, 200))
replace = st.tuples(st.just("replace"), st.integers(0, 50), st.integers(95, 105), st.integers(1, 9),
                    st.integers(200, 300))
rep = st.tuples(st.just("report"), st.integers(0, 50),
                st.sampled_from([oms.RP_ACK, oms.RP_ACK] + [oms.RP_FILL] * 6 +
                                [oms.RP_REJECT, oms.RP_CANCELLED, oms.RP_EXPIRED,
                                 oms.RP_CANCEL_REJECT, oms.RP_REPLACED, oms.RP_REPLACE_REJECT]),
                st.integers(1, 4), st.integers(95, 105))
mark = st.tuples(st.just("mark"), st.integers(85, 115))
tick = st.tuples(st.just("time"), st.integers(1, 2 * WINDOW))
ops = st.lists(st.one_of(place, place, cancel, replace, rep, rep, rep, rep, mark, mark, tick),
               min_size=10, max_size=80)


class Model:
    def __init__(self, stp_mode: int, all_or_none: bool) -> None:
        self.d = Driver(capacity=16, idem_capacity=4096, idem_window_ns=WINDOW,
                        idem_tick_ns=WINDOW // 10, batch_all_or_none=all_or_none)
        self.d.st.stp_mode[0] = stp_mode
        self.d.st.filters.ref_px[0] = 100
        self.ids: list[int] = []           # every order id ever seen
        self.accepted: dict[int, int] = {}  # coid -> time of last acceptance
        self.fill_sum = 0
        self.next_cmd_coid = 1_000_000
        self.pairs: list[tuple[int, int]] = []
        self.fired: set[int] = set()       # order ids that filled or triggered
        self.seen_events = 0

    def _pick(self, k: int) -> int:
        """Mostly a live order (so fills and cancels land), sometimes any id ever seen (stale
        ids must be refused), 12345 when nothing was placed yet."""
        live = [int(x) for x in self.d.st.o_id if x != 0]
        if live and k % 5:
            return live[k % len(live)]
        return self.ids[k % len(self.ids)] if self.ids else 12345

    def step(self, op) -> None:
        d = self.d
        kind = op[0]
        if kind == "place":
            _, coid, side, px, qty, ot, tif, oco, batch = op
            kw = dict(side=side, px=px if ot == OT_LIMIT else 0, qty=qty, ot=ot, tif=tif,
                      stop=px if ot == OT_STOP_LOSS else 0, tp=px if ot == OT_TAKE_PROFIT else 0,
                      batch=batch)
            if oco:
                other = dict(kw, ot=OT_LIMIT, px=px, stop=0, tp=0, tif=TIF_GTC)
                d.submit(intent(coid, oco=coid, **kw), intent(coid + 100, oco=coid, **other))
            else:
                d.submit(intent(coid, **kw))
        elif kind == "cancel":
            self.next_cmd_coid += 1
            d.submit(intent(self.next_cmd_coid, cmd=CMD_CANCEL, target=self._pick(op[1])))
        elif kind == "replace":
            self.next_cmd_coid += 1
            d.submit(intent(self.next_cmd_coid, cmd=CMD_REPLACE, target=self._pick(op[1]),
                            px=op[2], qty=op[3]))
        elif kind == "report":
            _, k, rk, qty, px = op
            oid = self._pick(k)
            if rk == oms.RP_REPLACED:
                s = d.slot(oid)
                if d.st.o_id[s] == oid and d.st.o_new_qty[s] > 0:
                    px, qty = int(d.st.o_new_px[s]), int(d.st.o_new_qty[s])
            d.apply(report(rk, oid, px, qty, ts=d.now))
        elif kind == "mark":
            d.apply(report(oms.RP_MARK, px=op[1], inst=0, ts=d.now))
        else:
            d.now += op[1]
        self.absorb()
        self.check()

    def absorb(self) -> None:
        d = self.d
        new = d.events[self.seen_events:]
        self.seen_events = len(d.events)
        legs: dict[int, int] = {}
        for e in new:
            oid = int(e["order_id"])
            if e["kind"] == EV_ORDER_NEW:
                coid = int(e["client_order_id"])
                last = self.accepted.get(coid)
                assert last is None or d.now - last >= WINDOW, "duplicate accepted inside window"
                self.accepted[coid] = d.now
                self.ids.append(oid)
                g = int(e["aux2"])  # OCO group (records.py contract)
                if g:
                    if g in legs:
                        self.pairs.append((legs.pop(g), oid))
                    else:
                        legs[g] = oid
            elif e["kind"] == EV_FILL:
                self.fill_sum += int(e["qty"]) if e["side"] == 0 else -int(e["qty"])
                self.fired.add(oid)
            elif e["kind"] == EV_ORDER_STATE and e["reason"] == oms.R_TRIGGERED:
                self.fired.add(oid)
            if e["kind"] == EV_ORDER_STATE and e["reason"] in _TRANSITION_REASONS and oid:
                a, b = int(e["aux1"]), int(e["state"])  # aux1: the state before (aux0: venue order id)
                assert a == b or LEGAL[a, b], (a, b)

    def check(self) -> None:
        d = self.d
        s_ = d.st
        live = np.nonzero(s_.o_id != 0)[0]
        for s in live:
            state = int(s_.o_state[s])
            assert not TERMINAL[state] and state != S_NEW
            assert 0 <= s_.o_filled[s] <= s_.o_qty[s]
            assert s_.o_filled[s] < s_.o_qty[s]   # a fully filled order is FILLED and gone
        # position == signed sum of the fills journalled == the kernel's own fill audit
        assert s_.positions.qty[0, 0] == self.fill_sum == s_.positions.fill_qty[0, 0]
        # aggregates
        buy = sum(int(s_.o_qty[s] - s_.o_filled[s]) for s in live if s_.o_side[s] == 0)
        sell = sum(int(s_.o_qty[s] - s_.o_filled[s]) for s in live if s_.o_side[s] == 1)
        assert s_.open_orders[0, 0] == len(live)
        assert s_.open_buy_qty[0, 0] == buy and s_.open_sell_qty[0, 0] == sell
        assert s_.nfree[0] + len(live) == s_.o_id.shape[0]
        # OCO: once one leg filled or triggered, the other is not live
        for a, b in self.pairs:
            for x, y in ((a, b), (b, a)):
                if x in self.fired:
                    assert d.state(y) not in LIVE_WORKING, "both OCO legs live"
        # journal sequence gap-free
        seqs = [int(e["seq"]) for e in d.events]
        assert seqs == list(range(1, len(seqs) + 1))
        # never two places for one order id
        placed = [int(o["target_order_id"]) for o in d.sent if o["command"] == CMD_PLACE]
        assert len(placed) == len(set(placed))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([stp.STP_CANCEL_NEW, stp.STP_CANCEL_RESTING, stp.STP_CANCEL_BOTH,
                             stp.STP_DECREMENT_BOTH, stp.STP_NONE]), st.booleans())
def test_random_sequences_keep_invariants(seq, mode, all_or_none):
    m = Model(mode, all_or_none)
    for op in seq:
        m.step(op)


def test_a_repeated_ack_does_not_revive_an_oco_leg_being_cancelled():
    """Found by the property test: one OCO leg fills, the other goes CANCEL_PENDING, then a second
    ACK of that leg arrived and moved it back to ACKED: both legs live."""
    m = Model(stp.STP_CANCEL_RESTING, False)
    for op in [('place', 1, 0, 95, 1, OT_LIMIT, TIF_IOC, False, 0),
               ('place', 2, 0, 95, 1, OT_LIMIT, TIF_IOC, True, 0),
               ('report', 1, oms.RP_ACK, 1, 95),
               ('report', 26, oms.RP_FILL, 1, 95)]:
        m.step(op)  # check() after every step asserts the OCO invariant
    assert len(m.pairs) == 1 and m.fired
    (a, b), = m.pairs
    peer = b if a in m.fired else a
    d = m.d
    assert int(d.st.o_state[d.slot(peer)]) == S_CANCEL_PENDING  # the situation the bug needed
    m.step(('report', 1, oms.RP_ACK, 1, 95))                    # its repeated ack
    last = d.events[-1]
    assert (int(last["kind"]), int(last["order_id"]), int(last["reason"]), int(last["aux2"])) == \
        (EV_ORDER_STATE, peer, oms.R_ILLEGAL, S_ACKED)   # aux2: the refused target state
    assert int(d.st.o_state[d.slot(peer)]) == S_CANCEL_PENDING
