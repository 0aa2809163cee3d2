"""Order management kernels: commands in, venue reports in, journal events and venue commands out.

Two batched entry points, both pure (no I/O, time passed in) and both ``nogil``:

* ``submit(st, intents, decision, approved_qty, now_ns, journal, jcount, outbox, ocount)`` takes
  ``bot4d.records.ORDER_INTENT_DTYPE`` commands (place / cancel / replace) together with pre-trade
  risk's verdict for each (``decision[k]`` 0 = accepted, else risk's reject code, as returned by
  ``bot4d.kernels.risk.check_batch``; ``approved_qty[k]`` > 0 overrides the intent's qty when risk
  sized it). Risk journals its own rejects, so the OMS only counts them.
* ``apply(st, reports, journal, jcount, outbox, ocount)`` takes ``VENUE_REPORT_DTYPE`` records:
  acks, rejects, fills, cancels, expiries, replace answers from the venue, and marks (last price)
  that trigger stop-loss / take-profit orders and mark positions.

Outputs: ``journal`` is a caller-provided ``JOURNAL_EVENT_DTYPE`` array and ``jcount[0]`` how
many records are filled; every record gets ``seq`` from the shard's own counter (``st.seq``), so
sequence numbers are gap-free and increasing across calls. ``outbox`` (``ORDER_INTENT_DTYPE``,
count in ``ocount[0]``) holds what must be sent to the venue: ``command`` CMD_PLACE / CMD_CANCEL /
CMD_REPLACE with ``target_order_id`` = our order id. Both functions process inputs while both
buffers have room for an input's worst case, and return how many inputs they consumed; the caller
publishes, resets the counts and calls again with the rest (0 consumed with empty buffers means the
buffers are smaller than one input's worst case).

Rules:

* State machine ``oms_state.LEGAL``; a transition not in it is refused, counted
  (``C_ILLEGAL_TRANSITION``) and journalled as an EV_ORDER_STATE with ``reason`` R_ILLEGAL,
  ``state`` the unchanged state and ``aux2`` the refused target; the order is not modified.
  Every EV_ORDER_STATE carries the venue's order id (aux0, once a report named it) and the state
  before (aux1): see ``_state_ev`` and ``bot4d.persist.decode``.
* A fill larger than the remaining quantity is refused whole (``C_OVERFILL``); so is a fill whose
  position or fee arithmetic would leave int64 (``C_OVERFLOW``), so an order's filled quantity
  never exceeds its quantity and a position is always the signed sum of the fills applied.
* Every command's client order id passes the bounded idempotency table first: a retried command
  inside its window is journalled as R_DUPLICATE and never sent again.
* Batches: consecutive intents with the same non-zero ``batch_id`` are one batch; consecutive
  intents with the same non-zero ``oco_group`` are one OCO pair. With the shard policy
  P_BATCH_ALL_OR_NONE a batch with any member refused by risk or by the filters is refused whole
  (others get R_BATCH_PEER); an OCO pair is always all-or-none.
* OCO: a fill on one leg, or one leg's trigger, cancels the other leg in the same call (directly
  if it never left, through CANCEL_PENDING + a venue cancel otherwise); when one leg is cancelled
  or rejected, the other is cancelled too.
* OT_STOP_LIMIT is the venue's own stop-loss-limit: it goes to the venue at once with its trigger
  (``stop_price``) and limit, and rests there even while this process is down (the protective
  stops of ``bot4d.kernels.protect``). A place intent with ``replace_order_id`` naming a live
  order of ours asks the venue to cancel that order in the same request (cancel-replace): the old
  order goes to CANCEL_PENDING and the venue's answers finish both.
* An OCO pair whose first leg is an OT_STOP_LIMIT and whose second is a limit order (the
  protective stop and its take-profit, ``bot4d.kernels.protect``) goes to the venue as ONE order
  list: the second leg's place is folded into the first's outbox record (``take_profit_price`` its
  price, ``oco_group`` its order id; the shard copies them to ``tp_price`` / ``tp_order_id``).
  Each leg keeps its slot; the venue's reports for each leg finish it.
* An opening order's ``take_profit_price`` is kept like its stop (``o_tp``); its fill records it in
  ``tp_fill`` for the protective OCO.
* Local stop-loss / take-profit orders wait in VALIDATED; a mark at or through the trigger sends them
  as market orders (Binance's rule: BUY STOP_LOSS when price >= stop, SELL STOP_LOSS when price <=
  stop, TAKE_PROFIT the opposite). One that would trigger at once is rejected (R_WOULD_TRIGGER).
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.kernels import fees as _fees
from bot4d.kernels import filters as _filters
from bot4d.kernels import idempotency as _idem
from bot4d.kernels import positions as _pos
from bot4d.kernels import stp as stpk
from bot4d.kernels.oms_state import (
    C_BAD_INPUT, C_DUPLICATE_COID, C_FILTER_REJECT, C_IDEM_EVICTED_LIVE, C_ILLEGAL_TRANSITION,
    C_JOURNAL_FULL, C_NO_SLOT, C_OCO_CANCELLED, C_OVERFILL, C_OVERFLOW, C_RISK_REJECT, C_STP,
    C_TRIGGERED, C_UNKNOWN_ORDER, OT_LIMIT, OT_MARKET, OT_STOP_LIMIT, OT_STOP_LOSS, OT_TAKE_PROFIT,
    P_BATCH_ALL_OR_NONE, S_ACKED, S_CANCEL_PENDING, S_CANCELLED, S_EXPIRED, S_FILLED, S_NEW,
    S_PARTIALLY_FILLED, S_REJECTED, S_SUBMITTED, S_VALIDATED, TIF_FOK, TIF_GTC, TIF_POST_ONLY,
    OmsState, make_oms,
)
from bot4d.records import (
    CMD_CANCEL, CMD_PLACE, CMD_REPLACE, EV_FILL, EV_ORDER_NEW, EV_ORDER_STATE, EV_POSITION,
    INTENT_FLAG_POST_ONLY, INTENT_FLAG_PROTECTIVE, INTENT_FLAG_REDUCE_ONLY, JFLAG_INTENT_SHIFT, JFLAG_OPENS_POSITION, JOURNAL_EVENT_DTYPE,
    ORDER_INTENT_DTYPE, SIDE_ASK, SIDE_BID,
)

__all__ = ["submit", "apply", "mark_report", "VENUE_REPORT_DTYPE", "OmsState", "make_oms"]

# --- venue reports -------------------------------------------------------------------------------
RP_ACK = 1
RP_REJECT = 2
RP_FILL = 3
RP_CANCELLED = 4
RP_EXPIRED = 5
RP_CANCEL_REJECT = 6
RP_REPLACED = 7
RP_REPLACE_REJECT = 8
RP_MARK = 9

RP_FLAG_FEE_GIVEN = 1   # ``fee`` is the venue's own figure: use it instead of the fee model
RP_FLAG_RECOVERED = 2   # a fill found by reconciliation (query), not seen on the venue's stream
RP_FLAG_AFTER_BALANCES = 4  # an earlier run's fill (``boot`` != 0) the venue made after this run
                            # read its balances (an earlier run's protective stop left resting
                            # on the position): it moves the position (the balances lack it)

VENUE_REPORT_DTYPE = np.dtype(
    [
        ("ts_ns", np.int64),       # venue event time or local receive time (injected)
        ("order_id", np.int64),    # our shard-local order id (RP_MARK: unused)
        ("price", np.int64),       # fill price / replaced price / mark price
        ("qty", np.int64),         # fill qty / replaced total qty
        ("fee", np.int64),         # notional units, with RP_FLAG_FEE_GIVEN
        ("kind", np.int8),         # RP_*
        ("maker", np.int8),        # fill: 1 if we were the maker
        ("side", np.int8),         # fill: SIDE_BID / SIDE_ASK (a recovered fill of another boot's
                                   # order has no slot to take it from)
        ("_pad", np.int8),
        ("instrument", np.int32),  # the report's instrument (every kind: the venue names the symbol)
        ("reason", np.int32),      # venue's reject/expiry code, journalled as the state's detail
        ("flags", np.int32),       # RP_FLAG_*
        ("trade_id", np.int64),    # fill: the venue's trade id (0 unknown), journalled in aux1
        ("venue_order_id", np.int64),  # the venue's order id (0 unknown): kept on the order
        ("boot", np.int64),        # recovered fill of another run's order: that run's boot id as
                                   # int(boot, 36); 0: this run
    ],
    align=True,
)

@kernel(_nrt=False)
def mark_report(r, ts_ns, instrument, price):
    """Fill report record ``r`` as an RP_MARK: ``instrument`` last priced at ``price``."""
    r.kind = RP_MARK
    r.ts_ns = ts_ns
    r.instrument = instrument
    r.price = price
    r.qty = 0
    r.order_id = 0
    r.fee = 0
    r.maker = 0
    r.flags = 0
    r.reason = 0
    r.trade_id = 0
    r.venue_order_id = 0
    r.boot = 0
    r.side = 0


# --- journal reasons (``reason`` field of EV_ORDER_STATE / EV_ORDER_NEW) --------------------------
R_NONE = 0
R_ILLEGAL = 1
R_UNKNOWN_ORDER = 2
R_OVERFILL = 3
R_DUPLICATE = 4
R_RISK = 5
R_BATCH_PEER = 6
R_STP = 7
R_NO_SLOT = 8
R_OVERFLOW = 9
R_OCO_PEER = 10
R_VENUE = 11
R_IDEM_FULL = 12
R_BAD_INPUT = 13
R_WOULD_TRIGGER = 14
R_TRIGGERED = 15
R_REPLACE_PENDING = 16
R_REPLACED = 17
R_REPLACE_REJECTED = 18
R_CANCEL_REJECTED = 19
R_STP_DECREMENT = 20
# filter failures use the F_* codes of bot4d.kernels.filters (101..)

_WORST_FIXED = 8      # events of one input besides the per-order part
_OCO_DEAD = -2        # o_peer marker: this leg's partner fired, so this leg must not stay live


@helper(_nrt=False)
def _slot_of(st, order_id: int) -> int:
    """Slot of a live order id, or -1 (unknown, stale or malformed)."""
    if order_id <= 0:
        return -1
    s = order_id & ((1 << st.slot_bits[0]) - 1)
    if st.o_id[s] != order_id:
        return -1
    return s


@helper(_nrt=False)
def _emit(st, j, jc, kind: int, ts: int, s: int, state: int, reason: int, px: int, qty: int,
          fee: int, a0: int, a1: int, a2: int) -> None:
    """One journal record from slot ``s`` (or without an order when s < 0)."""
    k = jc[0]
    e = j[k]
    e.seq = st.seq[0]
    st.seq[0] += 1
    e.ts_ns = ts
    e.kind = kind
    e.shard = st.shard[0]
    if s >= 0:
        e.instrument = st.o_inst[s]
        e.order_id = st.o_id[s]
        e.client_order_id = st.o_coid[s]
        e.side = st.o_side[s]
        e.order_type = st.o_type[s]
        e.tif = st.o_tif[s]
        e.filled_qty = st.o_filled[s]
        # a stop order's trigger, else the protective stop the order asked for
        e.stop_price = st.o_trigger[s] if st.o_trigger[s] != 0 else st.o_stop[s]
    else:
        e.instrument = -1
        e.order_id = 0
        e.client_order_id = 0
        e.side = 0
        e.order_type = 0
        e.tif = 0
        e.filled_qty = 0
        e.stop_price = 0
    e.state = state
    e.reason = reason
    e.price = px
    e.qty = qty
    e.fee = fee
    e.aux0 = a0
    e.aux1 = a1
    e.aux2 = a2
    e.aux3 = 0
    e.aux4 = 0
    jc[0] = k + 1


@helper(_nrt=False)
def _state_ev(st, j, jc, ts: int, s: int, state: int, reason: int, px: int, qty: int, fee: int,
              frm: int, target: int, detail: int, cause: int, vid: int) -> int:
    """One EV_ORDER_STATE: aux0 the venue's order id, aux1 the state before, aux2 the state asked
    for (differs from ``state`` only when refused), aux3 the detail (venue code, trigger mark),
    aux4 the report kind or command that caused a refusal. Returns the record's index."""
    k = jc[0]
    _emit(st, j, jc, EV_ORDER_STATE, ts, s, state, reason, px, qty, fee,
          st.o_venue_id[s] if s >= 0 else vid, frm, target)
    j[k].aux3 = detail
    j[k].aux4 = cause
    return k


@helper(_nrt=False)
def _out(st, ob, oc, cmd: int, s: int, ts: int, px: int, qty: int) -> None:
    k = oc[0]
    o = ob[k]
    o.client_order_id = st.o_coid[s]
    o.ts_ns = ts
    o.command = cmd
    o.side = st.o_side[s]
    # a triggered local stop / take-profit goes out as a market order; a venue-native stop rests
    # at the venue with its trigger
    o.order_type = OT_MARKET if st.o_type[s] == OT_STOP_LOSS or st.o_type[s] == OT_TAKE_PROFIT else st.o_type[s]
    o.tif = st.o_tif[s]
    o.instrument = st.o_inst[s]
    o.price = px
    o.qty = qty
    o.stop_price = st.o_trigger[s] if st.o_type[s] == OT_STOP_LIMIT else 0
    o.take_profit_price = 0
    o.replace_order_id = 0
    o.target_order_id = st.o_id[s]
    o.batch_id = 0
    o.oco_group = 0
    o.strategy = st.o_strategy[s]
    o.flags = 0
    oc[0] = k + 1


@helper(_nrt=False)
def _left(st, s: int) -> int:
    return st.o_qty[s] - st.o_filled[s]


@helper(_nrt=False)
def _open_add(st, s: int, sign: int) -> None:
    """Add (+1) or remove (-1) slot s's remaining qty from the open-order aggregates (not a
    protective order's: see oms_state ``o_prot``)."""
    if st.o_prot[s] != 0:
        return
    a = st.o_acct[s]
    i = st.o_inst[s]
    st.open_orders[a, i] += sign
    if st.o_side[s] == SIDE_BID:
        st.open_buy_qty[a, i] += sign * _left(st, s)
    else:
        st.open_sell_qty[a, i] += sign * _left(st, s)


@helper(_nrt=False)
def _release(st, s: int) -> None:
    """Terminal state reached: drop from aggregates and lists, free the slot."""
    _open_add(st, s, -1)
    a = st.o_acct[s]
    i = st.o_inst[s]
    p = st.o_prev_link[s]
    n = st.o_next[s]
    if p >= 0:
        st.o_next[p] = n
    else:
        st.list_head[a, i] = n
    if n >= 0:
        st.o_prev_link[n] = p
    st.o_next[s] = -1
    st.o_prev_link[s] = -1
    peer = st.o_peer[s]
    if peer >= 0 and st.o_peer[peer] == s:
        st.o_peer[peer] = -1
    st.o_peer[s] = -1
    st.o_id[s] = 0
    st.free[st.nfree[0]] = s
    st.nfree[0] += 1


@helper(_nrt=False)
def _to(st, j, jc, s: int, new: int, ts: int, reason: int, a0: int) -> bool:
    """Apply a transition if legal (journalled); refuse and count it otherwise."""
    cur = st.o_state[s]
    if not st.legal[cur, new]:
        st.counters[C_ILLEGAL_TRANSITION] += 1
        _state_ev(st, j, jc, ts, s, cur, R_ILLEGAL, st.o_px[s], st.o_qty[s], 0, cur, new, a0, 0, 0)
        return False
    st.o_state[s] = new
    _state_ev(st, j, jc, ts, s, new, reason, st.o_px[s], st.o_qty[s], 0, cur, new, a0, 0, 0)
    if new == S_FILLED or new == S_CANCELLED or new == S_REJECTED or new == S_EXPIRED:
        _release(st, s)
    return True


@helper(_nrt=False)
def _cancel(st, j, jc, ob, oc, s: int, ts: int, reason: int) -> None:
    """Cancel slot s: at once if it never left, through CANCEL_PENDING if the venue has it."""
    cur = st.o_state[s]
    if cur == S_VALIDATED:
        _to(st, j, jc, s, S_CANCELLED, ts, reason, 0)
    elif cur == S_SUBMITTED or cur == S_ACKED or cur == S_PARTIALLY_FILLED:
        st.o_prev[s] = cur
        _to(st, j, jc, s, S_CANCEL_PENDING, ts, reason, 0)
        _out(st, ob, oc, CMD_CANCEL, s, ts, st.o_px[s], _left(st, s))
    elif cur == S_CANCEL_PENDING:
        pass  # already on its way out
    else:
        _to(st, j, jc, s, S_CANCELLED, ts, reason, 0)  # refused and counted (terminal/NEW)


@helper(_nrt=False)
def _would_trigger(otype: int, buy: bool, trig: int, mark: int) -> bool:
    if mark <= 0:
        return False
    if otype == OT_STOP_LOSS:
        return mark >= trig if buy else mark <= trig
    if otype == OT_TAKE_PROFIT:
        return mark <= trig if buy else mark >= trig
    return False


# --- submit: commands ------------------------------------------------------------------------------

@helper(_nrt=False)
def _intent_account(st, it) -> int:
    sg = it.strategy
    if sg < 0 or sg >= st.strat_acct.shape[0]:
        return -1
    return st.strat_acct[sg]


@helper(_nrt=False)
def _place_verdict(st, it, qty: int) -> int:
    """R_NONE or why a place intent cannot be accepted (stateless checks only)."""
    if it.side != SIDE_BID and it.side != SIDE_ASK:
        return R_BAD_INPUT
    ot = it.order_type
    if ot < OT_LIMIT or ot > OT_STOP_LIMIT:
        return R_BAD_INPUT
    if it.tif < TIF_GTC or it.tif > TIF_POST_ONLY:
        return R_BAD_INPUT
    inst = it.instrument
    if inst < 0 or inst >= st.open_orders.shape[1]:
        return R_BAD_INPUT
    a = _intent_account(st, it)
    if a < 0 or a >= st.open_orders.shape[0]:
        return R_BAD_INPUT
    buy = it.side == SIDE_BID
    market = ot != OT_LIMIT and ot != OT_STOP_LIMIT
    trig = 0
    if ot == OT_STOP_LOSS or ot == OT_STOP_LIMIT:
        trig = it.stop_price
    elif ot == OT_TAKE_PROFIT:
        trig = it.take_profit_price
    if (ot == OT_STOP_LOSS or ot == OT_TAKE_PROFIT or ot == OT_STOP_LIMIT) and trig <= 0:
        return R_BAD_INPUT
    if market and (it.tif == TIF_POST_ONLY or (it.flags & INTENT_FLAG_POST_ONLY) != 0):
        return R_BAD_INPUT   # a market order cannot be post-only
    r = _filters.check_order(st.filters, inst, buy, market, it.price, qty, trig)
    if r != _filters.F_OK:
        return r
    # the venue refuses a stop that would trigger at once (Binance -2010): so do we
    if _would_trigger(OT_STOP_LOSS if ot == OT_STOP_LIMIT else ot, buy, trig,
                      st.positions.mark_px[inst]):
        return R_WOULD_TRIGGER
    return R_NONE


@helper(_nrt=False)
def _reserve(st, it) -> int:
    """Journal records a command can produce at most (STP may touch every live order of its
    account and instrument: state change + cancel/replace each)."""
    inst = it.instrument
    a = _intent_account(st, it)
    extra = 0
    if 0 <= inst < st.open_orders.shape[1] and 0 <= a < st.open_orders.shape[0]:
        extra = 2 * st.open_orders[a, inst]
    return _WORST_FIXED + extra


@helper(_nrt=False)
def _stp(st, j, jc, ob, oc, s: int, ts: int) -> bool:
    """Self-trade prevention for new slot s; returns False if the new order must be rejected."""
    a = st.o_acct[s]
    mode = st.stp_mode[a, st.o_inst[s]]   # the instrument's configured policy
    if mode == stpk.STP_NONE:
        return True
    buy = st.o_side[s] == SIDE_BID
    market = st.o_type[s] == OT_MARKET
    px = st.o_px[s]
    r = st.list_head[a, st.o_inst[s]]
    reject_new = False
    while r >= 0:
        nxt = st.o_next[r]
        rs = st.o_state[r]
        working = rs == S_SUBMITTED or rs == S_ACKED or rs == S_PARTIALLY_FILLED or rs == S_CANCEL_PENDING
        if r != s and working and st.o_side[r] != st.o_side[s] and st.o_type[r] == OT_LIMIT \
                and stpk.crosses(buy, market, px, st.o_px[r]):
            st.counters[C_STP] += 1
            if mode == stpk.STP_CANCEL_NEW:
                reject_new = True
                break
            if mode == stpk.STP_CANCEL_RESTING or mode == stpk.STP_CANCEL_BOTH:
                _cancel(st, j, jc, ob, oc, r, ts, R_STP)
                if mode == stpk.STP_CANCEL_BOTH:
                    reject_new = True
            elif mode == stpk.STP_DECREMENT_BOTH and rs != S_CANCEL_PENDING:
                new_left, rest_left = stpk.decrement(_left(st, s), _left(st, r))
                d = _left(st, s) - new_left
                # the new order never left: shrink it in place (aggregates follow)
                _open_add(st, s, -1)
                st.o_qty[s] -= d
                _open_add(st, s, 1)
                if rest_left == 0:
                    _cancel(st, j, jc, ob, oc, r, ts, R_STP_DECREMENT)
                else:
                    nq = st.o_filled[r] + rest_left
                    st.o_new_px[r] = st.o_px[r]
                    st.o_new_qty[r] = nq
                    _state_ev(st, j, jc, ts, r, rs, R_REPLACE_PENDING, st.o_px[r], nq, 0, rs, rs,
                              R_STP_DECREMENT, 0, 0)
                    _out(st, ob, oc, CMD_REPLACE, r, ts, st.o_px[r], nq)
                if new_left == 0:
                    reject_new = True
                    break
        r = nxt
    return not reject_new


@helper(_nrt=False)
def _new_slot(st, it, a: int, qty: int, ts: int) -> int:
    s = st.free[st.nfree[0] - 1]
    st.nfree[0] -= 1
    oid = (st.serial[0] << st.slot_bits[0]) | s
    st.serial[0] += 1
    st.o_id[s] = oid
    st.o_coid[s] = it.client_order_id
    st.o_acct[s] = a
    st.o_inst[s] = it.instrument
    st.o_side[s] = it.side
    st.o_type[s] = it.order_type
    tif = it.tif
    if (it.flags & INTENT_FLAG_POST_ONLY) != 0:
        tif = TIF_POST_ONLY
    st.o_tif[s] = tif
    st.o_state[s] = S_NEW
    st.o_prev[s] = S_NEW
    ot = it.order_type
    st.o_px[s] = it.price if ot == OT_LIMIT or ot == OT_STOP_LIMIT else 0
    st.o_qty[s] = qty
    st.o_filled[s] = 0
    trig = 0
    if ot == OT_STOP_LOSS or ot == OT_STOP_LIMIT:
        trig = it.stop_price
    elif ot == OT_TAKE_PROFIT:
        trig = it.take_profit_price
    st.o_trigger[s] = trig
    # the protective stop an entry asks for (a stop order's own trigger is not one)
    st.o_stop[s] = it.stop_price if ot == OT_LIMIT or ot == OT_MARKET else 0
    st.o_tp[s] = it.take_profit_price if (ot == OT_LIMIT or ot == OT_MARKET) and \
        (it.flags & INTENT_FLAG_PROTECTIVE) == 0 else 0
    st.o_venue_id[s] = 0
    st.o_prot[s] = 1 if (it.flags & INTENT_FLAG_PROTECTIVE) != 0 else 0
    st.o_peer[s] = -1
    st.o_ts[s] = ts
    st.o_new_px[s] = 0
    st.o_new_qty[s] = 0
    st.o_stp[s] = st.stp_mode[a, it.instrument]
    st.o_strategy[s] = it.strategy
    st.o_oco_id[s] = 0
    # link at the head of its (account, instrument) list
    h = st.list_head[a, it.instrument]
    st.o_prev_link[s] = -1
    st.o_next[s] = h
    if h >= 0:
        st.o_prev_link[h] = s
    st.list_head[a, it.instrument] = s
    _open_add(st, s, 1)
    return s


@helper(_nrt=False)
def _reject_intent(st, j, jc, it, ts: int, reason: int, detail: int, order_id: int) -> None:
    """Journal a command refused before it had an order slot."""
    k = _state_ev(st, j, jc, ts, -1, S_REJECTED, reason, it.price, it.qty, 0, S_NEW, S_REJECTED,
                  detail, it.command, 0)
    e = j[k]
    e.instrument = it.instrument
    e.order_id = order_id
    e.client_order_id = it.client_order_id
    e.side = it.side
    e.order_type = it.order_type
    e.tif = it.tif
    e.stop_price = it.stop_price


@helper(_nrt=False)
def _unit_end(intents, k: int, n: int) -> int:
    """End (exclusive) of the batch / OCO pair starting at k."""
    e = k + 1
    b = intents[k].batch_id
    g = intents[k].oco_group
    while e < n:
        if b != 0 and intents[e].batch_id == b:
            e += 1
        elif g != 0 and intents[e].oco_group == g and e == k + 1:
            e += 1
        else:
            break
    return e


@helper(_nrt=False)
def _cancel_by_id(st, j, jc, ob, oc, s: int, oid: int, ts: int, reason: int) -> None:
    """Cancel slot s only if it still holds order oid (it may have been released and reused)."""
    if s >= 0 and oid > 0 and st.o_id[s] == oid:
        if reason == R_OCO_PEER:
            st.counters[C_OCO_CANCELLED] += 1
            st.o_peer[s] = _OCO_DEAD   # if the venue refuses this cancel, it is sent again
        _cancel(st, j, jc, ob, oc, s, ts, reason)


@helper(_nrt=False)
def _unpair(st, s: int) -> tuple[int, int]:
    """Break s's OCO link before s changes state; returns the partner (slot, id) or (-1, 0)."""
    p = st.o_peer[s]
    if p < 0:
        return -1, 0
    st.o_peer[s] = -1
    if st.o_peer[p] == s:
        st.o_peer[p] = -1
    return p, st.o_id[p]


@helper(_nrt=False)
def _cmd_cancel(st, j, jc, ob, oc, it, ts: int) -> None:
    s = _slot_of(st, it.target_order_id)
    if s < 0:
        st.counters[C_UNKNOWN_ORDER] += 1
        _reject_intent(st, j, jc, it, ts, R_UNKNOWN_ORDER, 0, it.target_order_id)
        return
    if st.o_state[s] == S_CANCEL_PENDING:
        # already being cancelled: refused and counted, nothing is sent twice
        _illegal_note(st, j, jc, s, S_CANCEL_PENDING, ts)
        return
    p, pid = _unpair(st, s)
    _cancel(st, j, jc, ob, oc, s, ts, R_NONE)
    _cancel_by_id(st, j, jc, ob, oc, p, pid, ts, R_OCO_PEER)


@helper(_nrt=False)
def _illegal_note(st, j, jc, s: int, target: int, ts: int) -> None:
    st.counters[C_ILLEGAL_TRANSITION] += 1
    _state_ev(st, j, jc, ts, s, st.o_state[s], R_ILLEGAL, st.o_px[s], st.o_qty[s], 0,
              st.o_state[s], target, 0, 0, 0)


@helper(_nrt=False)
def _cmd_replace(st, j, jc, ob, oc, it, qty: int, ts: int) -> None:
    s = _slot_of(st, it.target_order_id)
    if s < 0:
        st.counters[C_UNKNOWN_ORDER] += 1
        _reject_intent(st, j, jc, it, ts, R_UNKNOWN_ORDER, 0, it.target_order_id)
        return
    cur = st.o_state[s]
    if (cur != S_ACKED and cur != S_PARTIALLY_FILLED) or st.o_new_qty[s] != 0 \
            or st.o_type[s] != OT_LIMIT:
        _illegal_note(st, j, jc, s, cur, ts)
        return
    if qty <= st.o_filled[s]:
        st.counters[C_BAD_INPUT] += 1
        _reject_intent(st, j, jc, it, ts, R_BAD_INPUT, 0, st.o_id[s])
        return
    r = _filters.check_order(st.filters, st.o_inst[s], st.o_side[s] == SIDE_BID, False,
                             it.price, qty, 0)
    if r != _filters.F_OK:
        st.counters[C_FILTER_REJECT] += 1
        _reject_intent(st, j, jc, it, ts, r, 0, st.o_id[s])
        return
    st.o_new_px[s] = it.price
    st.o_new_qty[s] = qty
    _state_ev(st, j, jc, ts, s, cur, R_REPLACE_PENDING, it.price, qty, 0, cur, cur, 0, 0, 0)
    _out(st, ob, oc, CMD_REPLACE, s, ts, it.price, qty)


@helper(_nrt=False)
def _cmd_place(st, j, jc, ob, oc, it, qty: int, ts: int, verdict: int, detail: int,
               prev_slot: int, prev_id: int) -> int:
    """Place one intent whose verdict is decided; returns its slot or -1.

    For the second leg of an OCO pair ``prev_id`` is the first leg's order id (0 if it failed);
    -1 otherwise.
    """
    if verdict != R_NONE:
        if verdict == R_RISK:
            st.counters[C_RISK_REJECT] += 1   # risk journalled it already
        else:
            if verdict > 100:
                st.counters[C_FILTER_REJECT] += 1
            elif verdict == R_BAD_INPUT:
                st.counters[C_BAD_INPUT] += 1
            _reject_intent(st, j, jc, it, ts, verdict, detail, 0)
        return -1
    if st.nfree[0] == 0:
        st.counters[C_NO_SLOT] += 1
        _reject_intent(st, j, jc, it, ts, R_NO_SLOT, 0, 0)
        return -1
    a = _intent_account(st, it)
    # the rule risk applies: an order opens unless it cannot grow |position| even if every live
    # order on its side fills (journalled so the database can hold opening orders to a stop-loss).
    # An order the venue cancels in the same request (cancel-replace) is not counted; a reduce-only
    # order no larger than the position it reduces (a protective stop, its market exit, flatten)
    # is sized to close, not to open, whatever else rests on its side.
    pos = st.positions.qty[a, it.instrument]
    same = st.open_buy_qty[a, it.instrument] if it.side == SIDE_BID else st.open_sell_qty[a, it.instrument]
    r = _slot_of(st, it.replace_order_id)
    if r >= 0 and st.o_side[r] == it.side and st.o_inst[r] == it.instrument:
        same -= _left(st, r)
    closing = pos < 0 if it.side == SIDE_BID else pos > 0
    reduces = closing and (same + qty <= abs(pos) or
                           ((it.flags & INTENT_FLAG_REDUCE_ONLY) != 0 and qty <= abs(pos)))
    flags = (np.int64(it.flags) << JFLAG_INTENT_SHIFT) | (0 if reduces else JFLAG_OPENS_POSITION)
    s = _new_slot(st, it, a, qty, ts)
    k = jc[0]
    _emit(st, j, jc, EV_ORDER_NEW, ts, s, S_NEW, R_NONE, st.o_px[s], qty, 0, flags,
          it.take_profit_price, it.oco_group)
    j[k].stop_price = it.stop_price  # the protective stop (a stop order's trigger is the same field)
    _to(st, j, jc, s, S_VALIDATED, ts, R_NONE, 0)
    ot = st.o_type[s]
    if ot == OT_STOP_LOSS or ot == OT_TAKE_PROFIT:
        pass  # waits in VALIDATED for its trigger
    elif ot != OT_STOP_LIMIT and not _stp(st, j, jc, ob, oc, s, ts):
        _to(st, j, jc, s, S_REJECTED, ts, R_STP, 0)
        s = -1
    else:
        # a resting stop takes no liquidity until it triggers: no self-trade check now
        _to(st, j, jc, s, S_SUBMITTED, ts, R_NONE, 0)
        _out(st, ob, oc, CMD_PLACE, s, ts, st.o_px[s], st.o_qty[s])
        r = _slot_of(st, it.replace_order_id)
        if r >= 0 and r != s:
            rs = st.o_state[r]
            if rs == S_SUBMITTED or rs == S_ACKED or rs == S_PARTIALLY_FILLED:
                # the venue cancels r in the same request: r waits for that answer like a cancel
                st.o_prev[r] = rs
                _to(st, j, jc, r, S_CANCEL_PENDING, ts, R_REPLACED, 0)
                ob[oc[0] - 1].replace_order_id = st.o_id[r]
    # OCO: the second leg links to the first; if either did not survive, neither does
    if prev_id >= 0:
        first_live = prev_id > 0 and prev_slot >= 0 and st.o_id[prev_slot] == prev_id
        if s >= 0 and first_live:
            st.o_peer[s] = prev_slot
            st.o_peer[prev_slot] = s
            st.o_oco_id[s] = prev_id
            st.o_oco_id[prev_slot] = st.o_id[s]
            # a venue-native stop and a limit leg are one venue order list (OCO): one request,
            # the first leg's record carrying the second's price and order id
            k = oc[0]
            if st.o_type[prev_slot] == OT_STOP_LIMIT and st.o_type[s] == OT_LIMIT and k >= 2 \
                    and ob[k - 1].command == CMD_PLACE and ob[k - 1].target_order_id == st.o_id[s] \
                    and ob[k - 2].command == CMD_PLACE and ob[k - 2].target_order_id == prev_id:
                ob[k - 2].take_profit_price = st.o_px[s]
                ob[k - 2].oco_group = st.o_id[s]
                oc[0] = k - 1
        elif s >= 0:
            st.counters[C_OCO_CANCELLED] += 1
            _cancel(st, j, jc, ob, oc, s, ts, R_OCO_PEER)
            s = -1
        elif first_live:
            _cancel_by_id(st, j, jc, ob, oc, prev_slot, prev_id, ts, R_OCO_PEER)
    return s


@kernel(_nrt=False)
def submit(st, intents, decision, approved_qty, now_ns: int, journal, jcount, outbox, ocount) -> int:
    """Apply commands with risk's decisions; returns how many intents were consumed."""
    n = intents.shape[0]
    all_or_none = st.policy[P_BATCH_ALL_OR_NONE] != 0
    k = 0
    while k < n:
        e = _unit_end(intents, k, n)
        # worst case of the whole unit must fit, so a batch is never split across calls
        need_j = 0
        for q in range(k, e):
            need_j += _reserve(st, intents[q])
        if jcount[0] + need_j > journal.shape[0] or ocount[0] + need_j > outbox.shape[0]:
            if k == 0 and jcount[0] == 0:
                st.counters[C_JOURNAL_FULL] += 1
            break
        is_pair = e - k == 2 and intents[k].oco_group != 0 and \
            intents[k].oco_group == intents[k + 1].oco_group
        atomic = e - k > 1 and (all_or_none or is_pair)
        # pass 1: the unit's verdicts (duplicates are retries of something already done: they
        # neither fail the unit nor need a slot)
        failed = -1
        places = 0
        for q in range(k, e):
            it = intents[q]
            if it.command != CMD_PLACE:
                continue
            if _idem.lookup(st.idem, it.client_order_id, now_ns) >= 0:
                continue
            places += 1
            qty = approved_qty[q] if approved_qty[q] > 0 else it.qty
            v = R_RISK if decision[q] != 0 else _place_verdict(st, it, qty)
            if v != R_NONE and failed < 0:
                failed = q
        no_room = atomic and places > st.nfree[0]
        # pass 2: apply
        prev_slot = -1
        prev_id = 0
        for q in range(k, e):
            it = intents[q]
            qty = approved_qty[q] if approved_qty[q] > 0 else it.qty
            res = _idem.check_and_insert(st.idem, it.client_order_id, 0, now_ns)
            if res == _idem.IDEM_DUPLICATE:
                st.counters[C_DUPLICATE_COID] += 1
                prior = _idem.lookup(st.idem, it.client_order_id, now_ns)
                _reject_intent(st, journal, jcount, it, now_ns, R_DUPLICATE, 0, prior)
                if q == k:
                    prev_id = 0
                continue
            if res == _idem.IDEM_FULL:
                st.counters[C_BAD_INPUT] += 1
                _reject_intent(st, journal, jcount, it, now_ns, R_IDEM_FULL, 0, 0)
                continue
            if it.command == CMD_PLACE:
                if decision[q] != 0:
                    v = R_RISK
                    detail = decision[q]
                else:
                    v = _place_verdict(st, it, qty)
                    detail = 0
                    if v == R_NONE and no_room:
                        v = R_NO_SLOT
                    elif v == R_NONE and atomic and failed >= 0:
                        v = R_BATCH_PEER
                        detail = failed - k
                second_leg = -1
                if is_pair and q == k + 1:
                    second_leg = prev_id
                s = _cmd_place(st, journal, jcount, outbox, ocount, it, qty, now_ns, v, detail,
                               prev_slot, second_leg)
                if s >= 0:
                    _idem.set_value(st.idem, it.client_order_id, st.o_id[s])
                    prev_slot = s
                    prev_id = st.o_id[s]
                else:
                    prev_slot = -1
                    prev_id = 0
            elif it.command == CMD_CANCEL:
                _cmd_cancel(st, journal, jcount, outbox, ocount, it, now_ns)
            elif it.command == CMD_REPLACE:
                _cmd_replace(st, journal, jcount, outbox, ocount, it, qty, now_ns)
            else:
                st.counters[C_BAD_INPUT] += 1
                _reject_intent(st, journal, jcount, it, now_ns, R_BAD_INPUT, 0, 0)
        k = e
    st.counters[C_IDEM_EVICTED_LIVE] = st.idem.stats[_idem.ST_EVICTED_LIVE]
    return k


# --- apply: venue reports --------------------------------------------------------------------------

@helper(_nrt=False)
def _report_unknown(st, j, jc, rp) -> None:
    st.counters[C_UNKNOWN_ORDER] += 1
    k = _state_ev(st, j, jc, rp.ts_ns, -1, 0, R_UNKNOWN_ORDER, rp.price, rp.qty, rp.fee, 0, 0,
                  rp.reason, rp.kind, rp.venue_order_id)
    j[k].order_id = rp.order_id
    # a late report for an order already gone is routine (a cancel-reject after the fill); its
    # record names the instrument so the audit trail can store it
    if 0 <= rp.instrument < st.open_orders.shape[1]:
        j[k].instrument = rp.instrument


@helper(_nrt=False)
def _recovered_foreign_fill(st, j, jc, rp) -> None:
    """A fill that reconciliation found for an order this run has no slot for (an earlier run's):
    journalled so the audit trail equals the venue's trades, not applied (the position at start
    already came from the venue's balances, which include it), unless the gateway flags it
    RP_FLAG_AFTER_BALANCES: an earlier run's stop left resting on the position that filled after
    those balances were read moves the position (account 0, the protective stops'): the fill is
    then followed by an EV_POSITION."""
    i = rp.instrument
    if i < 0 or i >= st.open_orders.shape[1] or rp.qty <= 0 or rp.price <= 0 \
            or (rp.side != SIDE_BID and rp.side != SIDE_ASK):
        st.counters[C_BAD_INPUT] += 1
        _state_ev(st, j, jc, rp.ts_ns, -1, 0, R_BAD_INPUT, rp.price, rp.qty, rp.fee, 0, 0, 0,
                  RP_FILL, rp.venue_order_id)
        return
    moves = (rp.flags & RP_FLAG_AFTER_BALANCES) != 0
    fee = rp.fee
    if moves:
        # the balances this run's positions came from were read before this fill: apply it
        a = 0
        ok = True
        if (rp.flags & RP_FLAG_FEE_GIVEN) == 0:
            fee, ok = _fees.quote(st.fees, a, rp.price, rp.qty, rp.maker != 0)
        if ok:
            ok = _pos.apply_fill(st.positions, a, i, rp.side == SIDE_BID, rp.price, rp.qty, fee)
        if not ok:
            st.counters[C_OVERFLOW] += 1
            moves = False
    k = jc[0]
    _emit(st, j, jc, EV_FILL, rp.ts_ns, -1, 0, R_NONE, rp.price, rp.qty, fee,
          1 if rp.maker != 0 else 2, rp.trade_id, rp.venue_order_id)
    e = j[k]
    e.instrument = i
    e.order_id = rp.order_id
    e.side = rp.side
    e.aux3 = 1
    e.aux4 = rp.boot
    if moves:
        pb = st.positions
        kp = jc[0]
        _emit(st, j, jc, EV_POSITION, rp.ts_ns, -1, 0, R_NONE, pb.avg_px[0, i], pb.qty[0, i],
              pb.fees[0, i], pb.realised[0, i], pb.cost[0, i], pb.balance[0])
        j[kp].instrument = i
        j[kp].aux3 = 0


@helper(_nrt=False)
def _fill(st, j, jc, ob, oc, s: int, rp) -> None:
    ts = rp.ts_ns
    cur = st.o_state[s]
    if not (cur == S_SUBMITTED or cur == S_ACKED or cur == S_PARTIALLY_FILLED
            or cur == S_CANCEL_PENDING):
        _illegal_note(st, j, jc, s, S_FILLED, ts)
        return
    q = rp.qty
    px = rp.price
    if q <= 0 or px <= 0:
        st.counters[C_BAD_INPUT] += 1
        _state_ev(st, j, jc, ts, s, cur, R_BAD_INPUT, px, q, 0, cur, cur, 0, RP_FILL, 0)
        return
    if q > _left(st, s):
        st.counters[C_OVERFILL] += 1
        _state_ev(st, j, jc, ts, s, cur, R_OVERFILL, px, q, 0, cur, cur, 0, RP_FILL, 0)
        return
    a = st.o_acct[s]
    i = st.o_inst[s]
    buy = st.o_side[s] == SIDE_BID
    maker = rp.maker != 0
    oco = st.o_oco_id[s]
    if (rp.flags & RP_FLAG_FEE_GIVEN) != 0:
        fee = rp.fee
        ok = True
    else:
        fee, ok = _fees.quote(st.fees, a, px, q, maker)
    if ok:
        ok = _pos.apply_fill(st.positions, a, i, buy, px, q, fee)
    if not ok:
        # refused whole: the order and the position stay consistent with each other
        st.counters[C_OVERFLOW] += 1
        _state_ev(st, j, jc, ts, s, cur, R_OVERFLOW, px, q, 0, cur, cur, 0, RP_FILL, 0)
        return
    _fees.add_volume(st.fees, a, px, q)
    if st.o_stop[s] > 0 and st.o_prot[s] == 0:
        st.tp_fill[a, i] = st.o_tp[s]   # what protection rests beside the stop (0: a lone stop)
    _open_add(st, s, -1)
    st.o_filled[s] += q
    _open_add(st, s, 1)
    # aux0 liquidity 1 maker / 2 taker; aux1 the venue trade id (0 unknown); aux2 the venue's
    # order id; aux3 bit 0: recovered by reconciliation
    kf = jc[0]
    _emit(st, j, jc, EV_FILL, ts, s, cur, R_NONE, px, q, fee, 1 if maker else 2, rp.trade_id,
          st.o_venue_id[s])
    j[kf].aux3 = 1 if (rp.flags & RP_FLAG_RECOVERED) != 0 else 0
    p, pid = _unpair(st, s)
    if st.o_filled[s] == st.o_qty[s]:
        _to(st, j, jc, s, S_FILLED, ts, R_NONE, 0)
    elif cur == S_CANCEL_PENDING:
        st.o_prev[s] = S_PARTIALLY_FILLED  # where a rejected cancel now returns to
    elif cur != S_PARTIALLY_FILLED:
        _to(st, j, jc, s, S_PARTIALLY_FILLED, ts, R_NONE, 0)
    pb = st.positions
    k = jc[0]
    _emit(st, j, jc, EV_POSITION, ts, -1, 0, R_NONE, pb.avg_px[a, i], pb.qty[a, i],
          pb.fees[a, i], pb.realised[a, i], pb.cost[a, i], pb.balance[a])
    j[k].instrument = i
    j[k].aux3 = a
    # OCO: a fill on one leg takes the other out; also when the link was already broken
    # because the partner triggered first and this leg filled while being cancelled (a race at
    # the venue): the partner must not stay live either
    if p >= 0:
        _cancel_by_id(st, j, jc, ob, oc, p, pid, ts, R_OCO_PEER)
    elif oco != 0:
        _cancel_by_id(st, j, jc, ob, oc, oco & ((1 << st.slot_bits[0]) - 1), oco, ts, R_OCO_PEER)


@helper(_nrt=False)
def _mark(st, j, jc, ob, oc, rp) -> None:
    i = rp.instrument
    if i < 0 or i >= st.open_orders.shape[1] or rp.price <= 0:
        st.counters[C_BAD_INPUT] += 1
        _state_ev(st, j, jc, rp.ts_ns, -1, 0, R_BAD_INPUT, rp.price, 0, 0, 0, 0, i, RP_MARK, 0)
        return
    st.positions.mark_px[i] = rp.price
    for a in range(st.open_orders.shape[0]):
        r = st.list_head[a, i]
        while r >= 0:
            if st.o_state[r] == S_VALIDATED and _would_trigger(
                    st.o_type[r], st.o_side[r] == SIDE_BID, st.o_trigger[r], rp.price):
                st.counters[C_TRIGGERED] += 1
                p, pid = _unpair(st, r)
                _to(st, j, jc, r, S_SUBMITTED, rp.ts_ns, R_TRIGGERED, rp.price)
                _out(st, ob, oc, CMD_PLACE, r, rp.ts_ns, 0, st.o_qty[r])
                _cancel_by_id(st, j, jc, ob, oc, p, pid, rp.ts_ns, R_OCO_PEER)
            # r stays live (SUBMITTED), so its link is current even if the peer was unlinked
            r = st.o_next[r]


@helper(_nrt=False)
def _apply_one(st, j, jc, ob, oc, rp) -> None:
    kind = rp.kind
    if kind == RP_MARK:
        _mark(st, j, jc, ob, oc, rp)
        return
    if kind == RP_FILL and rp.boot != 0:
        # an earlier run's order: its order id may equal a live one of this run (ids restart with
        # every run), so it never looks for a slot
        _recovered_foreign_fill(st, j, jc, rp)
        return
    s = _slot_of(st, rp.order_id)
    if s < 0:
        if kind == RP_FILL and (rp.flags & RP_FLAG_RECOVERED) != 0:
            _recovered_foreign_fill(st, j, jc, rp)
        else:
            _report_unknown(st, j, jc, rp)
        return
    if rp.venue_order_id != 0:
        st.o_venue_id[s] = rp.venue_order_id
    ts = rp.ts_ns
    cur = st.o_state[s]
    if kind == RP_FILL:
        _fill(st, j, jc, ob, oc, s, rp)
    elif kind == RP_ACK:
        if cur == S_CANCEL_PENDING:
            if st.o_prev[s] == S_SUBMITTED:
                st.o_prev[s] = S_ACKED  # the ack raced our cancel: remember it for a cancel reject
            else:
                # a repeated ack must not revive an order being cancelled (an OCO leg whose peer
                # filled would be live again: found by tests/test_oms_props.py)
                _illegal_note(st, j, jc, s, S_ACKED, ts)
        else:
            _to(st, j, jc, s, S_ACKED, ts, R_NONE, rp.reason)
    elif kind == RP_REJECT or kind == RP_CANCELLED or kind == RP_EXPIRED:
        new = S_REJECTED if kind == RP_REJECT else (S_CANCELLED if kind == RP_CANCELLED else S_EXPIRED)
        if st.legal[cur, new]:
            p, pid = _unpair(st, s)
            _to(st, j, jc, s, new, ts, R_VENUE if kind == RP_REJECT else R_NONE, rp.reason)
            _cancel_by_id(st, j, jc, ob, oc, p, pid, ts, R_OCO_PEER)
        else:
            _to(st, j, jc, s, new, ts, R_VENUE, rp.reason)  # refused and counted
    elif kind == RP_CANCEL_REJECT:
        if cur != S_CANCEL_PENDING:
            _illegal_note(st, j, jc, s, cur, ts)
            return
        back = st.o_prev[s]
        if st.o_filled[s] > 0 and (back == S_SUBMITTED or back == S_ACKED):
            back = S_PARTIALLY_FILLED
        _to(st, j, jc, s, back, ts, R_CANCEL_REJECTED, rp.reason)
        if st.o_peer[s] == _OCO_DEAD:
            _cancel(st, j, jc, ob, oc, s, ts, R_OCO_PEER)
    elif kind == RP_REPLACED:
        if st.o_new_qty[s] == 0:
            _illegal_note(st, j, jc, s, cur, ts)
            return
        if rp.qty <= st.o_filled[s] or rp.price <= 0:
            st.counters[C_BAD_INPUT] += 1
            _state_ev(st, j, jc, ts, s, cur, R_BAD_INPUT, rp.price, rp.qty, 0, cur, cur, 0,
                      RP_REPLACED, 0)
            return
        _open_add(st, s, -1)
        st.o_px[s] = rp.price
        st.o_qty[s] = rp.qty
        _open_add(st, s, 1)
        st.o_new_px[s] = 0
        st.o_new_qty[s] = 0
        _state_ev(st, j, jc, ts, s, cur, R_REPLACED, rp.price, rp.qty, 0, cur, cur, rp.reason, 0, 0)
    elif kind == RP_REPLACE_REJECT:
        if st.o_new_qty[s] == 0:
            _illegal_note(st, j, jc, s, cur, ts)
            return
        st.o_new_px[s] = 0
        st.o_new_qty[s] = 0
        _state_ev(st, j, jc, ts, s, cur, R_REPLACE_REJECTED, st.o_px[s], st.o_qty[s], 0, cur, cur,
                  rp.reason, 0, 0)
    else:
        st.counters[C_BAD_INPUT] += 1
        _state_ev(st, j, jc, ts, s, cur, R_BAD_INPUT, rp.price, rp.qty, 0, cur, cur, 0, kind, 0)


@kernel(_nrt=False)
def apply(st, reports, journal, jcount, outbox, ocount) -> int:
    """Apply venue reports in order; returns how many were consumed."""
    n = reports.shape[0]
    k = 0
    while k < n:
        rp = reports[k]
        need = _WORST_FIXED
        if rp.kind == RP_MARK and 0 <= rp.instrument < st.open_orders.shape[1]:
            for a in range(st.open_orders.shape[0]):
                need += 2 * st.open_orders[a, rp.instrument]
        if jcount[0] + need > journal.shape[0] or ocount[0] + need > outbox.shape[0]:
            if k == 0 and jcount[0] == 0:
                st.counters[C_JOURNAL_FULL] += 1
            break
        _apply_one(st, journal, jcount, outbox, ocount, rp)
        k += 1
    return k


# --- edges -----------------------------------------------------------------------------------------

def warmup() -> None:
    st = make_oms(1, 1, capacity=8, idem_capacity=16, idem_window_ns=1_000_000_000)
    it = np.zeros(3, ORDER_INTENT_DTYPE)
    it["command"] = CMD_PLACE
    it["order_type"] = OT_LIMIT
    it["tif"] = TIF_GTC
    it["price"] = 100
    it["qty"] = 2
    it["client_order_id"] = [1, 2, 3]
    it["side"] = [SIDE_BID, SIDE_ASK, SIDE_BID]
    it["price"] = [100, 200, 90]
    j = np.zeros(64, JOURNAL_EVENT_DTYPE)
    jc = np.zeros(1, np.int64)
    ob = np.zeros(64, ORDER_INTENT_DTYPE)
    oc = np.zeros(1, np.int64)
    submit(st, it, np.zeros(3, np.int32), np.zeros(3, np.int64), 1, j, jc, ob, oc)
    rp = np.zeros(3, VENUE_REPORT_DTYPE)
    rp["kind"] = [RP_ACK, RP_FILL, RP_MARK]
    rp["order_id"] = ob["target_order_id"][0]
    rp["price"] = 100
    rp["qty"] = 1
    apply(st, rp, j, jc, ob, oc)
    for mod in (_pos, _fees, _filters, _idem):
        mod.warmup()
