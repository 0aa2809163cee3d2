"""Protective stops: every open position keeps a stop for its whole size resting at the venue.

The shard calls :func:`sync` after each pass of venue reports and marks. For each instrument with
protection enabled it compares what rests at the venue with what the position needs:

* the position's size (rounded down to the lot step; below the minimum lot it is dust that no
  venue order can cover, counted apart) and side (a long is protected by a SELL stop, a short by
  a BUY stop);
* the trigger: the stop price that the last opening order which filled asked for (a strategy's
  ``stop_price``), or, when none did (a position found at start, an operator's order), the
  average entry price moved ``default_bps`` against the position. The shard carries a position
  found at start at its first mark (its avg_px); should a position have no entry price yet, the
  mark of the first pass that sees it is the reference, kept until the position is flat: a
  reference that followed the mark would trail the price down and protect nothing. The limit price sits
  ``limit_bps`` beyond the trigger so that the triggered order fills in a fast market.

and asks the OMS for the difference as intents that bypass pre-trade risk (they only ever reduce
a position, and a halted or reducing account needs them most): a venue-native stop-loss-limit
(``oms_state.OT_STOP_LIMIT``), placed as a cancel-replace of the previous stop when one rests, so
the venue swaps them in one request and the position is never without one for longer than that
request's round trip; a cancel when the position is flat. A stop whose trigger the mark has already
crossed cannot be placed (the venue refuses it); the position is then closed at market, which is
what the stop would have done.

**Take-profit (OCO).** When the last opening fill's order also named a ``take_profit_price``, the
stop rests together with a take-profit leg (a post-only limit at that price, same side and size) as
one venue OCO (the OMS folds the pair into one request; Binance ``POST /api/v3/orderList/oco``):
the venue cancels the other leg when one fills or triggers. A take-profit the mark has already
reached (a maker order there would be refused) or one on the wrong side of the stop is dropped: the
stop rests alone. An order list cannot be cancel-replaced; a resize names the old stop leg to
replace and the gateway cancels the old list, then places the new one (docs/architecture.md).

**Overshoot.** A strategy's live orders on the exit's side could fill together with the protective
exit and flip the position. When a protective order fills (stop, take-profit) or a market exit is
sent, every non-protective live order of the instrument on that side is cancelled
(:func:`cancel_fired`): the overshoot is bounded by what fills of those orders in the round trip of
their cancel.

A protective order the venue refuses is an alarm: counted, and the kill switch trips to REDUCING
(``killswitch.TRIP_STOP_REFUSED``) so no new position is opened while one may be unprotected.
The next attempt for that instrument waits ``retry_ns``.

How long a position goes without full protection (from the first report that left it
under-protected to the venue's acknowledgement of a stop that covers it) is recorded per shard in
a latency histogram. Pure functions over arrays; the caller owns the OMS and the journal.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.kernels import oms as oms_k
from bot4d.kernels.oms_state import (OT_LIMIT, OT_MARKET, OT_STOP_LIMIT, S_ACKED, S_PARTIALLY_FILLED,
                                     S_REJECTED, S_SUBMITTED, S_VALIDATED, TIF_GTC, TIF_POST_ONLY)
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_FILL, EV_ORDER_STATE, INTENT_FLAG_POST_ONLY,
                           INTENT_FLAG_PROTECTIVE, INTENT_FLAG_REDUCE_ONLY, SIDE_ASK, SIDE_BID)
from ipc.histogram import record

# per-instrument configuration (Protection.cfg[i, PC_*])
PC_ENABLED = 0
PC_DEFAULT_BPS = 1       # trigger distance from the average entry when no order named one
PC_LIMIT_BPS = 2         # limit price beyond the trigger
PC_RETRY_NS = 3          # wait after a refusal before the next attempt
PC_N = 4

# per-instrument counters (Protection.ctr[i, P_*]), shown by `bot4ctl protection`
P_PLACED = 0             # stops placed (first or cancel-replace)
P_CANCELLED = 1          # stops cancelled because the position went flat
P_REFUSED = 2            # protective orders the venue (or the OMS) refused
P_EXITS = 3              # market exits because the trigger was already crossed
P_DUST = 4               # passes that found a position below the minimum lot
P_OMS_REFUSED = 5        # protective orders the OMS refused before the wire (journalled)
P_OCO = 6                # of P_PLACED: placed as an OCO with a take-profit leg
P_CLOSING_CANCELLED = 7  # strategy orders on the exit's side cancelled when protection fired
P_N = 8

# per-instrument state (Protection.st[i, X_*])
X_OID = 0                # our live protective stop's order id (0: none)
X_EXIT_OID = 1           # a market exit on its way (0: none)
X_WANT_PX = 2            # trigger asked for by the last opening fill (0: use the default distance)
X_SINCE = 3              # ns since the position is not fully protected (0: protected or flat)
X_RETRY_AT = 4           # ns before which no new attempt is made after a refusal
X_COID = 5               # client order id serial for protective intents
X_PREV_OID = 6           # the stop a cancel-replace is replacing (back in force if the venue
                         # refuses the swap)
X_LAST_REFUSAL = 7       # the venue's code of the last refusal (> 0: the OMS's own reason R_*)
X_VENUE_CROSSED = 8      # 1: the venue said the stop would trigger at once (its last price is
                         # through it, whatever our book's mark says): exit at market instead
X_TP_OID = 9             # the take-profit leg resting with the stop as one OCO (0: none)
X_WANT_TP = 10           # take-profit asked for by the last opening fill (0: a lone stop)
X_FIRED = 11             # side + 1 of a protective order that filled or an exit sent: the
                         # strategy's live orders on that side are to be cancelled (0: none)
X_REF_PX = 12            # the mark a position without an entry price is measured from, taken
                         # once (0: none taken); cleared when flat
X_N = 13

COID_BASE = 1 << 61      # protective intents' client order ids: apart from strategies' ids
# the code the gateway gives a stop whose cancel-replace was not attempted because the old order
# could not be cancelled (it had just filled or gone: Binance -2022 with NOT_ATTEMPTED): a race to
# retry, not a refused stop
SWAP_NOT_ATTEMPTED = -2022
STOP_WOULD_TRIGGER = -20101   # bot4d.gateway.binance: the venue's "Stop price would trigger immediately"


@helper(_nrt=False)
def _transient(code):
    """A refusal that says nothing about the stop itself: the swap was not attempted, the request
    was held back or refused for rate (-1003 also when the gateway's budget or breaker held it
    locally, -1015), or it never left (-1001). Retried after ``retry_ns``, no alarm."""
    return code == SWAP_NOT_ATTEMPTED or code == -1003 or code == -1015 or code == -1001

ACCOUNT = 0


class Protection(NamedTuple):
    cfg: np.ndarray      # int64[n, PC_N]
    st: np.ndarray       # int64[n, X_N]
    ctr: np.ndarray      # int64[n, P_N]
    hist: np.ndarray     # int64 latency histogram (ipc.histogram layout): unprotected time


def make_protection(n_instruments: int, hist: np.ndarray | None = None) -> Protection:
    from ipc.histogram import new_histogram

    return Protection(np.zeros((n_instruments, PC_N), np.int64), np.zeros((n_instruments, X_N), np.int64),
                      np.zeros((n_instruments, P_N), np.int64), new_histogram() if hist is None else hist)


def configure(pr: Protection, i: int, *, enabled: bool, default_bps: int, limit_bps: int,
              retry_ns: int = 500_000_000) -> None:
    if not 0 < default_bps < 10_000 or not 0 <= limit_bps < 10_000 or retry_ns < 0:
        raise ValueError("protective stop distances must be in (0, 10000) bps")
    pr.cfg[i, PC_ENABLED] = 1 if enabled else 0
    pr.cfg[i, PC_DEFAULT_BPS] = default_bps
    pr.cfg[i, PC_LIMIT_BPS] = limit_bps
    pr.cfg[i, PC_RETRY_NS] = retry_ns


@kernel(_nrt=False)
def is_protective(pr, i, oid):
    return oid != 0 and (pr.st[i, X_OID] == oid or pr.st[i, X_EXIT_OID] == oid or pr.st[i, X_TP_OID] == oid
                         or pr.st[i, X_PREV_OID] == oid)


@kernel(_nrt=False)
def note_journal(pr, st, journal, j0, j1):
    """Learn from this pass's journal: the stop (and take-profit) prices opening fills asked for,
    protective orders that filled, and refusals of protective orders. Returns how many protective
    orders were refused (the caller trips)."""
    refused = 0
    for k in range(j0, j1):
        e = journal[k]
        i = e.instrument
        if i < 0 or i >= pr.st.shape[0] or pr.cfg[i, PC_ENABLED] == 0:
            continue
        if e.kind == EV_FILL and e.aux4 == 0 and is_protective(pr, i, e.order_id):
            pr.st[i, X_FIRED] = e.side + 1
        elif e.kind == EV_FILL and e.stop_price > 0 and e.aux4 == 0:
            pr.st[i, X_WANT_PX] = e.stop_price
            pr.st[i, X_WANT_TP] = st.tp_fill[ACCOUNT, i]
        elif e.kind == EV_ORDER_STATE and e.state == S_REJECTED and is_protective(pr, i, e.order_id):
            if _transient(e.aux3):
                pr.st[i, X_RETRY_AT] = e.ts_ns + pr.cfg[i, PC_RETRY_NS]
                continue
            if e.aux3 == STOP_WOULD_TRIGGER:
                pr.st[i, X_VENUE_CROSSED] = 1   # not a refusal of protection: the stop fired already
                continue
            pr.ctr[i, P_REFUSED] += 1
            pr.st[i, X_RETRY_AT] = e.ts_ns + pr.cfg[i, PC_RETRY_NS]
            pr.st[i, X_LAST_REFUSAL] = e.aux3 if e.aux3 != 0 else e.reason
            refused += 1
    return refused


@helper(_nrt=False)
def _round_down(x, unit):
    return x if unit <= 1 else x - x % unit


@helper(_nrt=False)
def _round_up(x, unit):
    if unit <= 1:
        return x
    r = x % unit
    return x if r == 0 else x + unit - r


@helper(_nrt=False)
def _live(st, oid):
    """Slot and state of our order ``oid`` while the venue may hold it, else (-1, 0)."""
    s = oms_k._slot_of(st, oid)
    if s < 0:
        return -1, 0
    return s, st.o_state[s]


@helper(_nrt=False)
def _trigger(pr, st, i, long):
    """The stop's trigger for instrument i, on the tick (always on the protective side)."""
    tick = st.filters.tick[i]
    px = pr.st[i, X_WANT_PX]
    if px <= 0:
        avg = st.positions.avg_px[ACCOUNT, i]
        if avg <= 0:
            # no entry price: the mark, once; kept, so the stop does not trail the price down
            avg = pr.st[i, X_REF_PX]
            if avg <= 0:
                avg = st.positions.mark_px[i]
                pr.st[i, X_REF_PX] = avg
        if avg <= 0:
            return 0
        d = avg // 10_000 * pr.cfg[i, PC_DEFAULT_BPS] + avg % 10_000 * pr.cfg[i, PC_DEFAULT_BPS] // 10_000
        px = avg - d if long else avg + d
    return _round_down(px, tick) if long else _round_up(px, tick)


@helper(_nrt=False)
def _intent(pr, it, i, cmd, otype, side, qty, trig, limit, replace, now):
    pr.st[i, X_COID] += 1
    it.client_order_id = COID_BASE + (np.int64(i) << 32) + pr.st[i, X_COID]
    it.ts_ns = now
    it.command = cmd
    it.side = side
    it.order_type = otype
    it.tif = TIF_GTC
    it.instrument = i
    it.price = limit
    it.qty = qty
    it.stop_price = trig
    it.take_profit_price = 0
    it.target_order_id = replace if cmd == CMD_CANCEL else 0
    it.batch_id = 0
    it.oco_group = 0
    it.strategy = 0
    it.flags = INTENT_FLAG_REDUCE_ONLY | INTENT_FLAG_PROTECTIVE
    it.replace_order_id = replace if cmd == CMD_PLACE else 0


@helper(_nrt=False)
def _covered(pr, i, now):
    """The position is fully protected from now on: record how long it was not."""
    since = pr.st[i, X_SINCE]
    if since != 0:
        record(pr.hist, now - since)
        pr.st[i, X_SINCE] = 0


@helper(_nrt=False)
def _working(ss):
    return ss == S_SUBMITTED or ss == S_ACKED or ss == S_PARTIALLY_FILLED


@helper(_nrt=False)
def _take_profit(pr, st, i, long, trig):
    """The take-profit leg's price for instrument i (on the tick, toward the profit), or 0: none
    asked for, on the wrong side of the stop, or already reached (a maker order there would take:
    the venue refuses it)."""
    tp = pr.st[i, X_WANT_TP]
    if tp <= 0:
        return 0
    tick = st.filters.tick[i]
    tp = _round_up(tp, tick) if long else _round_down(tp, tick)
    if tp <= 0 or (tp <= trig if long else tp >= trig):
        return 0
    mark = st.positions.mark_px[i]
    if mark > 0 and (mark >= tp if long else mark <= tp):
        return 0
    return tp


@kernel(_nrt=False)
def plan(pr, st, i, now, intents, n):
    """Intents (appended at ``intents[n:]``) that bring instrument i's protection in line with
    its position; returns the new count. Leaves room checks to the caller (at most 2 intents:
    an OCO's two legs)."""
    if pr.cfg[i, PC_ENABLED] == 0:
        return n
    pos = st.positions.qty[ACCOUNT, i]
    s, ss = _live(st, pr.st[i, X_OID])
    if s < 0:
        # gone; if it was a swap the venue refused, the stop it was to replace is still in force
        # (with its take-profit leg, if it was an OCO)
        pr.st[i, X_OID] = 0
        s, ss = _live(st, pr.st[i, X_PREV_OID])
        if s >= 0 and not _working(ss):
            s = -1
        if s >= 0:
            pr.st[i, X_OID] = pr.st[i, X_PREV_OID]
            p = st.o_peer[s]
            pr.st[i, X_TP_OID] = st.o_id[p] if p >= 0 else 0
        pr.st[i, X_PREV_OID] = 0
    ts, tss = _live(st, pr.st[i, X_TP_OID])
    if ts < 0:
        pr.st[i, X_TP_OID] = 0
    es, _ = _live(st, pr.st[i, X_EXIT_OID])
    if es < 0:
        pr.st[i, X_EXIT_OID] = 0
    step = st.filters.step[i]
    want = _round_down(abs(pos), step)
    if want < st.filters.min_qty[i]:
        if want > 0 or pos != 0:
            pr.ctr[i, P_DUST] += 1
        want = 0
    if want == 0:
        pr.st[i, X_SINCE] = 0
        if pos == 0:
            pr.st[i, X_WANT_PX] = 0
            pr.st[i, X_WANT_TP] = 0
            pr.st[i, X_REF_PX] = 0
        if s >= 0 and _working(ss):
            # (the OMS cancels an OCO's other leg with it)
            _intent(pr, intents[n], i, CMD_CANCEL, OT_STOP_LIMIT, st.o_side[s], 0, 0, 0, pr.st[i, X_OID], now)
            pr.ctr[i, P_CANCELLED] += 1
            return n + 1
        if s < 0 and ts >= 0 and _working(tss):
            _intent(pr, intents[n], i, CMD_CANCEL, OT_LIMIT, st.o_side[ts], 0, 0, 0, pr.st[i, X_TP_OID], now)
            pr.ctr[i, P_CANCELLED] += 1
            return n + 1
        return n
    long = pos > 0
    side = SIDE_ASK if long else SIDE_BID
    trig = _trigger(pr, st, i, long)
    tp = _take_profit(pr, st, i, long, trig) if trig > 0 else 0
    stop_ok = s >= 0 and st.o_side[s] == side and st.o_qty[s] - st.o_filled[s] == want and st.o_trigger[s] == trig
    if tp == 0:
        tp_ok = ts < 0
    else:
        tp_ok = ts >= 0 and st.o_side[ts] == side and st.o_qty[ts] - st.o_filled[ts] == want and st.o_px[ts] == tp
    if stop_ok and tp_ok:
        if (ss == S_ACKED or ss == S_PARTIALLY_FILLED) and (ts < 0 or tss == S_ACKED or tss == S_PARTIALLY_FILLED):
            _covered(pr, i, now)
        return n   # in place, or on its way
    if pr.st[i, X_SINCE] == 0:
        pr.st[i, X_SINCE] = now
    if pr.st[i, X_EXIT_OID] != 0 or now < pr.st[i, X_RETRY_AT] or trig <= 0:
        return n   # an exit is on its way, a refusal is being waited out, or no price yet
    if s >= 0 and ss != S_ACKED and ss != S_PARTIALLY_FILLED:
        return n   # the previous stop has no answer yet (or is being cancelled): one at a time
    if ts >= 0 and tss != S_ACKED and tss != S_PARTIALLY_FILLED:
        return n   # likewise its take-profit leg
    if s < 0 and ts >= 0:
        # a take-profit leg without its stop (the venue ended the stop alone): cancel it first
        _intent(pr, intents[n], i, CMD_CANCEL, OT_LIMIT, st.o_side[ts], 0, 0, 0, pr.st[i, X_TP_OID], now)
        return n + 1
    replace = pr.st[i, X_OID] if s >= 0 else 0
    mark = st.positions.mark_px[i]
    crossed = (mark > 0 and (mark <= trig if long else mark >= trig)) or pr.st[i, X_VENUE_CROSSED] != 0
    pr.st[i, X_VENUE_CROSSED] = 0
    if crossed:
        # the stop would trigger at once (and the venue would refuse it): do what it would do
        _intent(pr, intents[n], i, CMD_PLACE, OT_MARKET, side, want, 0, 0, replace, now)
        pr.ctr[i, P_EXITS] += 1
        pr.st[i, X_FIRED] = side + 1
        return n + 1
    tick = st.filters.tick[i]
    lb = pr.cfg[i, PC_LIMIT_BPS]
    off = trig // 10_000 * lb + trig % 10_000 * lb // 10_000
    limit = _round_down(trig - off, tick) if long else _round_up(trig + off, tick)
    if limit <= 0:
        limit = tick if tick > 0 else 1
    _intent(pr, intents[n], i, CMD_PLACE, OT_STOP_LIMIT, side, want, trig, limit, replace, now)
    pr.ctr[i, P_PLACED] += 1
    if tp == 0:
        return n + 1
    # the take-profit leg: one OCO with the stop (the OMS sends the pair as one venue order list)
    g = intents[n].client_order_id
    intents[n].oco_group = g
    _intent(pr, intents[n + 1], i, CMD_PLACE, OT_LIMIT, side, want, 0, tp, 0, now)
    it = intents[n + 1]
    it.tif = TIF_POST_ONLY
    it.flags = INTENT_FLAG_REDUCE_ONLY | INTENT_FLAG_PROTECTIVE | INTENT_FLAG_POST_ONLY
    it.oco_group = g
    pr.ctr[i, P_OCO] += 1
    return n + 2


@kernel(_nrt=False)
def cancel_fired(pr, st, i, now, intents, n):
    """After a protective order filled or a market exit was sent (``X_FIRED``): cancel every
    non-protective live order of instrument i on the exit's side, which would otherwise add to the
    exit and flip the position. Appends cancels at ``intents[n:]`` (as many as fit; the rest on a
    later call); returns the new count."""
    f = pr.st[i, X_FIRED]
    if f == 0:
        return n
    side = f - 1
    r = st.list_head[ACCOUNT, i]
    while r >= 0:
        if n >= intents.shape[0]:
            return n   # the rest next pass (X_FIRED stays)
        nxt = st.o_next[r]
        rs = st.o_state[r]
        if st.o_prot[r] == 0 and st.o_side[r] == side and (rs == S_VALIDATED or _working(rs)):
            _intent(pr, intents[n], i, CMD_CANCEL, st.o_type[r], side, 0, 0, 0, st.o_id[r], now)
            pr.ctr[i, P_CLOSING_CANCELLED] += 1
            n += 1
        r = nxt
    pr.st[i, X_FIRED] = 0
    return n


@kernel(_nrt=False)
def adopt(pr, st, i, intents, n, now):
    """After ``oms.submit`` took the intents that :func:`plan` wrote at ``intents[n]``: remember
    the order it created (a refusal by the OMS itself counts as a refusal)."""
    it = intents[n]
    if it.command != CMD_PLACE:
        return
    oid = oms_k._idem.lookup(st.idem, it.client_order_id, now)
    s = oms_k._slot_of(st, oid) if oid > 0 else -1
    if s < 0:
        # refused before it had a slot (filters, a stop that would trigger at once): the OMS
        # journalled why; not a venue refusal, so no trip, but the next attempt waits too
        pr.ctr[i, P_OMS_REFUSED] += 1
        pr.st[i, X_RETRY_AT] = now + pr.cfg[i, PC_RETRY_NS]
        return
    if it.order_type == OT_MARKET:
        pr.st[i, X_EXIT_OID] = oid
    elif it.order_type == OT_LIMIT:
        pr.st[i, X_TP_OID] = oid
    else:
        pr.st[i, X_PREV_OID] = it.replace_order_id
        pr.st[i, X_OID] = oid
        if it.oco_group == 0:
            pr.st[i, X_TP_OID] = 0   # a lone stop: an earlier OCO's take-profit leg goes with the list


def warmup() -> None:
    """Compiled through its caller, the shard kernel (``bot4d.daemon.shard_kernel``)."""
