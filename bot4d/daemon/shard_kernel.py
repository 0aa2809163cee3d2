"""The shard loop's kernel: one call drains a shard's rings through book, strategy, risk and OMS.

``step`` is what a shard thread calls in a loop (``bot4d.daemon.shard``). Per call, nogil and
without allocating:

1. venue reports (``reports-<s>`` ring, from the order gateway) -> duplicate fills dropped by
   trade id -> ``oms.apply`` -> the strategies learn about their orders (``on_order``); the key
   of a fill is committed to the dedup table only after the OMS applied it, so a fill is never
   lost to a key committed early nor applied twice;
2. market data (``ingress-<s>`` ring, from the feeds) -> ``book.apply_batch``; MD_CLEAR withdraws
   an instrument's book, MD_SNAPSHOT_END makes it usable again;
3. every instrument whose book changed, or whose usability changed (the feed's own state table
   says STALE / RESYNCING, a book error, a pause), gets a mark at the mid (stops trigger, P&L
   marks), then its strategy's ``on_book``; the intents go through pre-trade risk
   (``risk.check_batch``, rejects journalled) and the OMS (``oms.submit``);
4. protective stops (``bot4d.kernels.protect``): every position keeps a stop for its whole size
   resting at the venue, resized by cancel-replace as fills change it, cancelled when flat; a
   refused one trips the kill switch to REDUCING;
5. the account (``bot4d.daemon.account``): the shard publishes its part of the account's equity and
   exposure in its row of the shared account area and measures the account's equity from every
   row; the kill switch is evaluated on that, staleness and journal fill;
6. the OMS outbox goes to the ``egress-<s>`` ring as ``ORDER_COMMAND_DTYPE`` records carrying the
   receive time of the frame that caused them (the gateway records tick-to-order when it writes
   the request), the journal buffer to the ``journal-<s>`` ring, top of book and positions to the
   seqlock snapshots, counters to the shard's counters segment.

Nothing here waits: a ring that is full keeps the records in the shard's buffers for the next call
(counted as backpressure), and no new input is taken while the journal buffer is backed up, so
nothing is dropped and the audit trail stays complete.

All instruments keep their global ids (arrays are sized to the daemon's instrument count; a shard
touches only the rows ``mine`` marks), so records need no translation between shards.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from bot4d.daemon import account as acc
from bot4d.daemon import guards as G
from bot4d.jitcache import drop_stale_cache, helper, kernel
from bot4d.kernels import book as bk
from bot4d.kernels import filters as filt
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import oms as oms_k
from bot4d.kernels import oms_state as oms
from bot4d.kernels import protect as pt
from bot4d.kernels import risk as rk
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_ORDER_STATE, EV_RISK_REJECT, JOURNAL_EVENT_DTYPE,
                           MD_CLEAR, MD_SNAPSHOT_END, MD_UPDATE_DTYPE, ORDER_COMMAND_DTYPE,
                           ORDER_INTENT_DTYPE)
from bot4d.strategies import imbalance_taker as it_s
from bot4d.strategies import market_maker as mm_s
from ipc import ring as R
from ipc import seqlock as SL
from ipc.atomics import cpu_pause, eventfd_signal, eventfd_wait, load_acquire, monotonic_ns, realtime_ns, sleep_us
# telemetry counters sit one per cache line (word 8*i): written through ipc.counters only
from ipc.counters import counter_add, counter_set

# numba keys this module's cache on this file only, and every kernel below has the book, risk, kill
# switch, OMS, strategies, guards and ipc compiled in: an edit there must recompile the shard loop
_SRC = Path(__file__).resolve().parents[2]
drop_stale_cache(__file__, sorted(str(f) for d in ("bot4d/kernels", "bot4d/strategies", "ipc")
                                  for f in (_SRC / d).glob("*.py"))
                 + [G.__file__, acc.__file__, str(_SRC / "bot4d/records.py"), str(_SRC / "bot4d/errors.py")])

# strategy kinds (ShardInst.kind)
K_NONE = 0
K_MARKET_MAKER = 1
K_IMBALANCE_TAKER = 2
KIND_NAMES = {"none": K_NONE, "market_maker": K_MARKET_MAKER, "imbalance_taker": K_IMBALANCE_TAKER}

ACCOUNT = 0            # the OMS account all of a shard's strategies trade (one venue account)
FEED_LIVE = 1          # bot4d.feed.state.LIVE (checked in bot4d.daemon.shard)

# counters the kernel keeps in ShardBufs.ctr (mirrored to telemetry by index, see TEL_*)
C_STEPS = 0
C_MD = 1
C_REPORTS = 2
C_DUP_FILLS = 3
C_INTENTS = 4
C_PLACED = 5
C_CANCELS_SENT = 6
C_FILLED = 7
C_RISK_REJECTS = 8
C_VENUE_REJECTS = 9
C_JOURNAL_BACKPRESSURE = 10
C_EGRESS_BACKPRESSURE = 11
C_JOURNAL_EVENTS = 12
C_EGRESS_SENT = 13
C_RP_PENDING = 14       # reports taken from the ring but not yet applied (kept at rp_ok[0:n])
C_LOCAL_REJECTS = 15    # orders the OMS refused itself (filters, STP, duplicates, no slot): never sent
N_CTR = 16

# indices into the telemetry counters array (ShardTel.idx), -1 = not shown
T_HEARTBEAT = 0
T_SUBMITTED = 1
T_FILLED = 2
T_STATE = 3
T_BACKPRESSURE = 4
T_REJECT_BASE = 5      # idx[T_REJECT_BASE] + risk reason code; the venue's rejects at code 0
T_TRIP_BASE = 6        # idx[T_TRIP_BASE] + TRIP_* - 1
T_LOCAL_REJECT = 7     # the OMS's own refusals (reason "local")
N_T = 8

MAX_MD = 4096
MAX_REPORTS = 1024
MAX_INTENTS = 64
JOURNAL_BUF = 1 << 15
JOURNAL_HIGH = JOURNAL_BUF - 8192   # above this, take no new input until the ring drained it
OUTBOX = 4096
DEDUP_CAP = 1 << 16


class ShardInst(NamedTuple):
    """Per-instrument arrays, all indexed by global instrument id."""
    mine: np.ndarray        # int64[n] 1 if this shard owns the instrument
    kind: np.ndarray        # int64[n] K_*
    params: np.ndarray      # int64[n, P] strategy params (row i)
    state: np.ndarray       # int64[n, S] strategy state
    paused: np.ndarray      # int64[n] 1: strategy not called, its quotes pulled
    live: np.ndarray        # int64[n] 1 after MD_SNAPSHOT_END, 0 after MD_CLEAR
    seen_live: np.ndarray   # int64[n] usability the strategy last saw
    last_recv: np.ndarray   # int64[n] recv_ts_ns of the latest record applied
    mids: np.ndarray        # int64[n]
    corr: np.ndarray        # float64[n, n] (risk's correlation matrix; NaN unknown)
    neutral: np.ndarray     # int64[n] base holding that counts as flat (qty units)
    conv_mul: np.ndarray    # int64[n] notional units -> risk quote units: * mul // div
    conv_div: np.ndarray
    equity0: np.ndarray     # int64[1] quote units of the shard's part at start beyond its holdings at the
                            # mark (a position found at start: its value at the first mark)
    feed_state: np.ndarray  # STATE_TABLE_DTYPE[n] the feeds' BookStateTable rows: .state (LIVE = FEED_LIVE);
                            # the rows, not the strided .state column, whose numba layout would
                            # differ between one instrument and several (a second compile at start)
    prot: pt.Protection     # protective stops (bot4d.kernels.protect)
    guard: G.Guards         # correlation, Kelly statistics, storms, stat breakers (bot4d.daemon.guards)
    acv: acc.AccountView    # the account risk area: every shard's part of equity and exposure


class ShardBufs(NamedTuple):
    md: np.ndarray
    rp: np.ndarray
    rp_ok: np.ndarray
    mark: np.ndarray
    intents: np.ndarray
    decision: np.ndarray
    approved: np.ndarray
    rj: np.ndarray
    rjc: np.ndarray
    journal: np.ndarray
    jcount: np.ndarray
    outbox: np.ndarray
    ocount: np.ndarray
    egress: np.ndarray
    ecount: np.ndarray
    touched: np.ndarray     # int64[n] instruments to run in this call, in order
    tmark: np.ndarray       # int64[n] while listed: 1 touched, | 2 by market data
    dedup: np.ndarray       # int64[2, DEDUP_CAP] two generations of fill keys
    dedup_n: np.ndarray     # int64[3] entries in gen 0 / gen 1, current generation
    ctr: np.ndarray         # int64[N_CTR]
    out: np.ndarray         # int64[4] per-call results: egress published, journal published


def make_bufs(n_instruments: int) -> ShardBufs:
    return ShardBufs(
        md=np.zeros(MAX_MD, MD_UPDATE_DTYPE), rp=np.zeros(MAX_REPORTS, oms_k.VENUE_REPORT_DTYPE),
        rp_ok=np.zeros(MAX_REPORTS, oms_k.VENUE_REPORT_DTYPE), mark=np.zeros(1, oms_k.VENUE_REPORT_DTYPE),
        intents=np.zeros(MAX_INTENTS, ORDER_INTENT_DTYPE), decision=np.zeros(MAX_INTENTS, np.int64),
        approved=np.zeros(MAX_INTENTS, np.int64), rj=np.zeros(MAX_INTENTS, JOURNAL_EVENT_DTYPE),
        rjc=np.zeros(1, np.int64), journal=np.zeros(JOURNAL_BUF, JOURNAL_EVENT_DTYPE),
        jcount=np.zeros(1, np.int64), outbox=np.zeros(OUTBOX, ORDER_INTENT_DTYPE),
        ocount=np.zeros(1, np.int64), egress=np.zeros(OUTBOX, ORDER_COMMAND_DTYPE),
        ecount=np.zeros(1, np.int64), touched=np.zeros(n_instruments, np.int64),
        tmark=np.zeros(n_instruments, np.int64), dedup=np.zeros((2, DEDUP_CAP), np.int64),
        dedup_n=np.zeros(3, np.int64), ctr=np.zeros(N_CTR, np.int64), out=np.zeros(4, np.int64))


# --- fill dedup: two generations of an open-addressing set; the older one is dropped whole -----
@kernel(_nrt=False)
def _key(instrument, trade_id):
    return (trade_id << 12) ^ (instrument + 1)


@helper(_nrt=False)
def _slot(key, cap):
    h = (key * np.int64(-7046029254386353131)) >> 20
    return h & (cap - 1)


@kernel(_nrt=False)
def dedup_has(tbl, key):
    cap = tbl.shape[1]
    for g in range(2):
        s = _slot(key, cap)
        while tbl[g, s] != 0:
            if tbl[g, s] == key:
                return True
            s = (s + 1) & (cap - 1)
    return False


@kernel(_nrt=False)
def dedup_add(tbl, n, key):
    cap = tbl.shape[1]
    g = n[2]
    if n[g] >= cap // 2:  # current generation half full: forget the older one, write there
        g = 1 - g
        for s in range(cap):
            tbl[g, s] = 0
        n[g] = 0
        n[2] = g
    s = _slot(key, cap)
    while tbl[g, s] != 0:
        if tbl[g, s] == key:
            return
        s = (s + 1) & (cap - 1)
    tbl[g, s] = key
    n[g] += 1


# --- strategies: dispatch on the kind (each kind is compiled in; no function pointers) ---------
@helper(_nrt=False)
def _on_book(kind, levels, bstate, i, now, pos, live, params, state, out, n):
    if kind == K_MARKET_MAKER:
        return mm_s.on_book(levels, bstate, i, now, pos, live, params, state, out, n)
    if kind == K_IMBALANCE_TAKER:
        return it_s.on_book(levels, bstate, i, now, pos, live, params, state, out, n)
    return n


@kernel(_nrt=False)
def _on_order(si, journal, start, end):
    if end <= start:
        return
    for i in range(si.mine.shape[0]):
        if si.mine[i] == 0:
            continue
        k = si.kind[i]
        if k == K_MARKET_MAKER:
            mm_s.on_order(journal, start, end, si.params[i], si.state[i])
        elif k == K_IMBALANCE_TAKER:
            it_s.on_order(journal, start, end, si.params[i], si.state[i])


@helper(_nrt=False)
def _touch(b, i, n, flag):
    """List instrument i for this call; ``flag`` 2 marks that market data touched it."""
    if b.tmark[i] == 0:
        b.touched[n] = i
        n += 1
    b.tmark[i] |= flag
    return n


@kernel(_nrt=False)
def _usable(si, bstate, i):
    return si.live[i] != 0 and si.feed_state[i].state == FEED_LIVE and bstate[i, bk.S_ERROR] == 0 \
        and si.paused[i] == 0


@kernel(_nrt=False)
def equity(st, si):
    """This shard's part of the account's equity, in risk quote units: its instruments' neutral
    holdings and positions at the mark + realised - fees (exact per instrument, then converted),
    + ``equity0``. The account's quote balances are counted once, in ``acv`` (AV_BASE)."""
    eq = si.equity0[0]
    pb = st.positions
    for i in range(si.mine.shape[0]):
        if si.mine[i] == 0:
            continue
        m = si.mids[i]
        v = pb.realised[ACCOUNT, i] - pb.fees[ACCOUNT, i]
        if m > 0:
            v += (pb.qty[ACCOUNT, i] + si.neutral[i]) * m - pb.cost[ACCOUNT, i]
        eq += v * si.conv_mul[i] // si.conv_div[i]
    return eq


@kernel(_nrt=False)
def gross_exposure(st, si):
    """Sum of |position| x mark over this shard's instruments, risk quote units."""
    g = np.int64(0)
    pb = st.positions
    for i in range(si.mine.shape[0]):
        q = pb.qty[ACCOUNT, i]
        if si.mine[i] != 0 and si.mids[i] > 0 and q != 0:
            g += (q if q > 0 else -q) * si.mids[i] * si.conv_mul[i] // si.conv_div[i]
    return g


@kernel(_nrt=False)
def valued(st, si):
    """True once every instrument that holds something has a mark. Before that, ``equity`` lacks
    those holdings: it is no valuation to take the day's start or a peak from, nor to trade on."""
    pb = st.positions
    for i in range(si.mine.shape[0]):
        if si.mine[i] != 0 and si.mids[i] <= 0 and pb.qty[ACCOUNT, i] + si.neutral[i] != 0:
            return False
    return True


@kernel(_nrt=False)
def mark_account(st, si, rs, kcfg, now):
    """Measure the account's equity (``bot4d.daemon.account``: the quote balances, this shard's
    fresh part, every other shard's published part) and, if it is a full valuation (every holding
    of every shard has a mark), record it in risk's account words: equity, peak, the trading day's
    start (the day starts ``kcfg[KC_DAY_OFFSET_NS]`` after 00:00 UTC). Returns (account equity,
    full valuation, this shard's part)."""
    part = equity(st, si)
    eq, whole = acc.account_equity(si.acv, part, valued(st, si))
    if whole:
        rk.update_equity(rs.acct, eq, now - kcfg[ksk.KC_DAY_OFFSET_NS])
    return eq, whole, part


@helper(_nrt=False)
def _to_command(c, it, shard, now, anchor):
    c.ts_ns = now
    c.tick_recv_ns = anchor
    c.order_id = it.target_order_id
    c.client_order_id = it.client_order_id
    c.price = it.price
    c.qty = it.qty
    c.command = it.command
    c.side = it.side
    c.order_type = it.order_type
    c.tif = it.tif
    c.instrument = it.instrument
    c.shard = shard
    c.stop_price = it.stop_price
    c.replace_order_id = it.replace_order_id
    # a protective stop's OCO take-profit leg, folded into its record by the OMS
    c.tp_price = it.take_profit_price if it.order_type == oms.OT_STOP_LIMIT else 0
    c.tp_order_id = it.oco_group if it.order_type == oms.OT_STOP_LIMIT else 0


@kernel(_nrt=False)
def _outbox_to_egress(b, shard, now, anchor):
    """Move the OMS outbox into the egress buffer (room permitting); returns places moved."""
    placed = 0
    k = 0
    oc = b.ocount[0]
    while k < oc and b.ecount[0] < b.egress.shape[0]:
        it = b.outbox[k]
        _to_command(b.egress[b.ecount[0]], it, shard, now, anchor)
        b.ecount[0] += 1
        if it.command == CMD_PLACE:
            placed += 1
        elif it.command == CMD_CANCEL:
            b.ctr[C_CANCELS_SENT] += 1
        k += 1
    if k < oc:  # keep what did not fit, in order
        for j in range(k, oc):
            b.outbox[j - k] = b.outbox[j]
    b.ocount[0] = oc - k
    return placed


@kernel(_nrt=False)
def _account(b, tel, idx, j0, j1):
    """Counters from the journal events ``j0..j1`` (a pass's, or an operator command's). A
    rejected order is the venue's reject only when the venue (or the gateway on its behalf)
    refused it (R_VENUE); what the OMS refused itself never left (``C_LOCAL_REJECTS``)."""
    for k in range(j0, j1):
        e = b.journal[k]
        if e.kind == EV_ORDER_STATE:
            if e.state == oms.S_FILLED:
                b.ctr[C_FILLED] += 1
                if idx[T_FILLED] >= 0:
                    counter_add(tel, idx[T_FILLED], 1)
            elif e.state == oms.S_REJECTED:
                if e.reason == oms_k.R_VENUE:
                    b.ctr[C_VENUE_REJECTS] += 1
                    if idx[T_REJECT_BASE] >= 0:
                        counter_add(tel, idx[T_REJECT_BASE], 1)
                else:
                    b.ctr[C_LOCAL_REJECTS] += 1
                    if idx[T_LOCAL_REJECT] >= 0:
                        counter_add(tel, idx[T_LOCAL_REJECT], 1)
        elif e.kind == EV_RISK_REJECT:
            b.ctr[C_RISK_REJECTS] += 1
            if idx[T_REJECT_BASE] >= 0 and 0 < e.reason <= rk.REJ_LAST:
                counter_add(tel, idx[T_REJECT_BASE] + e.reason, 1)
        elif e.kind == ksk.EV_KILL_SWITCH:
            if idx[T_TRIP_BASE] >= 0 and 0 < e.reason <= ksk.TRIP_LAST:
                counter_add(tel, idx[T_TRIP_BASE] + e.reason - 1, 1)


@helper(_nrt=False)
def _decide(now, shard, levels, bstate, st, rs, kcfg, si, b, i, anchor):
    """Mark instrument i, run its strategy, risk and the OMS on what it asks."""
    usable = _usable(si, bstate, i)
    m = bk.mid(levels, bstate, i) if usable else np.int64(0)
    if m > 0 and m != si.mids[i]:
        si.mids[i] = m
        pb = st.positions
        if pb.qty[ACCOUNT, i] != 0 and pb.cost[ACCOUNT, i] == 0:
            # a position found at start (reconciled from balances) is carried at the first mark:
            # its entry price is not known here
            pb.cost[ACCOUNT, i] = pb.qty[ACCOUNT, i] * m
            pb.avg_px[ACCOUNT, i] = m
            # and its value at that mark belongs to the starting equity: without it equity would
            # fall by the position's value at every restart (against a restored peak: a false trip)
            si.equity0[0] += pb.cost[ACCOUNT, i] * si.conv_mul[i] // si.conv_div[i]
        oms_k.mark_report(b.mark[0], now, i, m)
        j0 = b.jcount[0]
        oms_k.apply(st, b.mark, b.journal, b.jcount, b.outbox, b.ocount)
        _on_order(si, b.journal, j0, b.jcount[0])
    si.seen_live[i] = 1 if usable else 0
    kind = si.kind[i]
    if kind == K_NONE:
        return
    pos = st.positions.qty[ACCOUNT, i]
    # HALTED means cancels only: the strategy sees an unusable book, so it pulls its quotes and
    # asks for nothing the risk kernel would refuse anyway
    # nor does anything trade before every holding of the account, in every shard, has a mark
    # (its equity is not known until then); the account measured now is what risk checks against
    _, whole, _ = mark_account(st, si, rs, kcfg, now)
    quote = usable and rs.ks[ksk.K_STATE] != ksk.TS_HALTED and whole
    ni = _on_book(kind, levels, bstate, i, now, pos, quote, si.params[i], si.state[i], b.intents, 0)
    if ni == 0:
        return
    b.ctr[C_INTENTS] += ni
    done = 0
    jr0 = b.jcount[0]
    while done < ni:
        b.rjc[0] = 0
        k = rk.check_batch(b.intents[done:ni], rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work,
                           rs.ks, st.positions.qty[ACCOUNT], st.open_orders[ACCOUNT],
                           st.open_buy_qty[ACCOUNT], st.open_sell_qty[ACCOUNT], si.mids, si.corr,
                           now, b.decision[done:ni], b.approved[done:ni], b.rj, b.rjc, shard)
        if k <= 0:
            break
        for q in range(b.rjc[0]):
            b.journal[b.jcount[0]] = b.rj[q]
            b.journal[b.jcount[0]].seq = st.seq[0]
            st.seq[0] += 1
            b.jcount[0] += 1
        # a storm of rejects trips the kill switch; refusals the trading state itself causes
        # (HALTED, REDUCING) are the operator's policy at work, not a strategy gone wrong
        storm = 0
        for q in range(b.rjc[0]):
            if b.rj[q].reason != rk.REJ_HALTED and b.rj[q].reason != rk.REJ_REDUCING:
                storm += 1
        if storm > 0:
            ksk.ks_note(rs.ks, kcfg, ksk.NOTE_REJECT, storm, now)
        done += k
    oms_k.submit(st, b.intents[:done], b.decision[:done], b.approved[:done], now, b.journal, b.jcount,
                 b.outbox, b.ocount)
    _on_order(si, b.journal, jr0, b.jcount[0])
    b.ctr[C_PLACED] += _outbox_to_egress(b, shard, now, anchor)


@helper(_nrt=False)
def _protect(now, shard, st, rs, kcfg, si, b, j_start):
    """Bring each instrument's protective stop (or stop + take-profit OCO) in line with its
    position, and cancel the strategy's orders on the side of a protective exit that fired. Its
    intents bypass pre-trade risk (they only reduce, and a halted account needs them most) but
    not the OMS."""
    pr = si.prot
    if pt.note_journal(pr, st, b.journal, j_start, b.jcount[0]) > 0:
        ksk.ks_trip(rs.ks, kcfg, ksk.TRIP_STOP_REFUSED, 0, now, b.journal, b.jcount, shard)
    cap = min(b.intents.shape[0], 18)   # an OCO's two legs + up to 16 cancels per instrument and pass
    for i in range(si.mine.shape[0]):
        if si.mine[i] == 0 or pr.cfg[i, pt.PC_ENABLED] == 0:
            continue
        if b.jcount[0] + 16 * cap > b.journal.shape[0] or b.ocount[0] + 2 * cap > b.outbox.shape[0]:
            break   # buffers backed up: the next pass comes back to it
        n = pt.plan(pr, st, i, now, b.intents, 0)
        n = pt.cancel_fired(pr, st, i, now, b.intents[:cap], n)
        if n == 0:
            continue
        for q in range(n):
            b.decision[q] = 0
            b.approved[q] = 0
        oms_k.submit(st, b.intents[:n], b.decision[:n], b.approved[:n], now, b.journal, b.jcount,
                     b.outbox, b.ocount)
        for q in range(n):
            pt.adopt(pr, st, i, b.intents, q, now)
    if b.ocount[0] > 0:
        b.ctr[C_PLACED] += _outbox_to_egress(b, shard, now, 0)


@helper(_nrt=False)
def _publish_held(rec, ctrl, buf, count):
    """Publish ``buf[:count[0]]`` to a ring; what a full ring refused moves to the front of
    ``buf`` for the next call. Returns (published, refused any)."""
    n = count[0]
    if n == 0:
        return 0, False
    d = R.publish_batch(rec, ctrl, buf, n)
    if d < 0:
        d = 0
    for j in range(d, n):
        buf[j - d] = buf[j]
    count[0] = n - d
    return d, d < n


@kernel(_nrt=False)
def _flush(b, eg_rec, eg_ctrl, jr_rec, jr_ctrl):
    """Publish buffered egress and journal records; keep what a full ring refused."""
    d, refused = _publish_held(eg_rec, eg_ctrl, b.egress, b.ecount)
    if refused:
        b.ctr[C_EGRESS_BACKPRESSURE] += 1
    b.out[0] += d
    b.ctr[C_EGRESS_SENT] += d
    d, refused = _publish_held(jr_rec, jr_ctrl, b.journal, b.jcount)
    if refused:
        b.ctr[C_JOURNAL_BACKPRESSURE] += 1
    b.out[1] += d
    b.ctr[C_JOURNAL_EVENTS] += d


@helper(_nrt=False)
def _publish_snapshots(st, levels, bstate, si, b, n_t, snap_b, snap_bs, snap_p, snap_ps, feed_states):
    pb = st.positions
    for k in range(n_t):
        i = b.touched[k]
        SL.write_begin(snap_bs, i)
        r = snap_b[i]
        r.state = feed_states[i].state
        bb, bq = bk.best_bid(levels, bstate, i)
        ba, aq = bk.best_ask(levels, bstate, i)
        r.best_bid = bb
        r.bid_qty = bq
        r.best_ask = ba
        r.ask_qty = aq
        r.last_update_ns = si.last_recv[i]
        r.venue_seq = bstate[i, bk.S_SEQ]
        SL.write_end(snap_bs, i)
        SL.write_begin(snap_ps, i)
        p = snap_p[i]
        p.qty = pb.qty[ACCOUNT, i]
        p.avg_px = pb.avg_px[ACCOUNT, i]
        p.realised = pb.realised[ACCOUNT, i]
        m = si.mids[i]
        p.unrealised = pb.qty[ACCOUNT, i] * m - pb.cost[ACCOUNT, i] if m > 0 else 0
        p.fees = pb.fees[ACCOUNT, i]
        SL.write_end(snap_ps, i)


@kernel(_nrt=False)
def step(now, shard, md_rec, md_ctrl, rp_rec, rp_ctrl, eg_rec, eg_ctrl, jr_rec, jr_ctrl,
         levels, bstate, bstats, bscratch, st, rs, kcfg, si, b, tel, idx,
         snap_b, snap_bs, snap_p, snap_ps, journal_cap):
    """One pass of the shard loop at ``now`` (CLOCK_REALTIME ns). Returns the number of input
    records taken (0: idle). ``b.out[0]`` / ``b.out[1]``: egress / journal records published."""
    b.out[0] = 0
    b.out[1] = 0
    b.ctr[C_STEPS] += 1
    if idx[T_HEARTBEAT] >= 0:
        counter_set(tel, idx[T_HEARTBEAT], now)
    _flush(b, eg_rec, eg_ctrl, jr_rec, jr_ctrl)
    if b.jcount[0] > JOURNAL_HIGH or b.ecount[0] > b.egress.shape[0] // 2:
        return 0  # backed up: the rings must drain before new input is taken
    took = 0
    j_start = b.jcount[0]
    n_t = 0
    # 1. venue reports: first any an earlier pass could not apply, else new ones from the ring,
    #    never more than the journal buffer has room for (16 events per report is beyond the OMS's
    #    worst case), so a report taken from the ring is always applied, never dropped
    k = b.ctr[C_RP_PENDING]
    if k == 0:
        room = (b.journal.shape[0] - b.jcount[0]) // 16
        n = R.consume_batch(rp_rec, rp_ctrl, 0, b.rp, min(b.rp.shape[0], room))
        if n > 0:
            took += n
            b.ctr[C_REPORTS] += n
        for q in range(n):
            r = b.rp[q]
            if r.kind == oms_k.RP_FILL and r.trade_id != 0:
                key = _key(r.instrument, r.trade_id)
                dup = dedup_has(b.dedup, key)
                for p in range(k):  # the same fill twice inside this batch
                    o = b.rp_ok[p]
                    if o.kind == oms_k.RP_FILL and _key(o.instrument, o.trade_id) == key:
                        dup = True
                if dup:
                    b.ctr[C_DUP_FILLS] += 1
                    continue
            b.rp_ok[k] = r
            k += 1
    if k > 0:
        j0 = b.jcount[0]
        done = 0
        while done < k:
            c = oms_k.apply(st, b.rp_ok[done:k], b.journal, b.jcount, b.outbox, b.ocount)
            # applied: now (and only now) the fills' keys are committed
            for p in range(done, done + c):
                o = b.rp_ok[p]
                if o.kind == oms_k.RP_FILL and o.trade_id != 0:
                    dedup_add(b.dedup, b.dedup_n, _key(o.instrument, o.trade_id))
                i = o.instrument
                if 0 <= i < si.mine.shape[0] and si.mine[i] != 0:  # positions moved: re-decide
                    n_t = _touch(b, i, n_t, 1)
            done += c
            if c == 0:
                break
        # the strategies learn what happened before anything leaves the buffer
        _on_order(si, b.journal, j0, b.jcount[0])
        _outbox_to_egress(b, shard, now, 0)
        for p in range(done, k):  # (only if the buffers were short: kept, in order, for next time)
            b.rp_ok[p - done] = b.rp_ok[p]
        b.ctr[C_RP_PENDING] = k - done
    # 2. market data
    n = R.consume_batch(md_rec, md_ctrl, 0, b.md, b.md.shape[0])
    behind = n == b.md.shape[0]   # a full batch: the ring may hold more (a backlog)
    if n > 0:
        took += n
        b.ctr[C_MD] += n
        bk.apply_batch(levels, bstate, bstats, bscratch, b.md, 0, n)
        for q in range(n):
            u = b.md[q]
            i = u.instrument
            if i < 0 or i >= si.mine.shape[0] or si.mine[i] == 0:
                continue
            if u.kind == MD_CLEAR:
                si.live[i] = 0
            elif u.kind == MD_SNAPSHOT_END:
                si.live[i] = 1
            if u.recv_ts_ns > si.last_recv[i]:
                si.last_recv[i] = u.recv_ts_ns
            # a full batch may end inside a venue frame: that book is half-applied (maybe crossed
            # for a moment), so neither marks nor strategies see it before its frame ends
            if bstate[i, bk.S_DIRTY] != bk.DIRTY_OPEN:
                n_t = _touch(b, i, n_t, 2)
    # 3. usability changes without data (feed went STALE, pause) also reach the strategy
    for i in range(si.mine.shape[0]):
        if si.mine[i] != 0 and b.tmark[i] == 0 and bstate[i, bk.S_DIRTY] != bk.DIRTY_OPEN:
            u = 1 if _usable(si, bstate, i) else 0
            if u != si.seen_live[i]:
                n_t = _touch(b, i, n_t, 1)
    for k in range(n_t):
        i = b.touched[k]
        # an order caused by market data is timed from the frame that carried it
        anchor = si.last_recv[i] if (b.tmark[i] & 2) != 0 else 0
        _decide(now, shard, levels, bstate, st, rs, kcfg, si, b, i, anchor)
    # 4. protective stops follow the positions this pass left; a refused one trips the kill switch
    _protect(now, shard, st, rs, kcfg, si, b, j_start)
    # venue errors and breaker opens into the storm windows, closed trades into the Kelly
    # statistics, and when due the correlation matrix and the statistical breakers
    G.guard_step(si.guard, now, shard, st, rs, kcfg, si, b.journal, b.jcount, j_start, tel, ACCOUNT)
    # 5. the account: this shard's row, the account's equity; kill switch on it, staleness, journal
    # the age of the market data taken so far is the feed's age only once the backlog is read: a
    # shard that starts after a reconciliation that waited for the venue's weight budget finds
    # seconds of data in its ring, and its first passes must not call that stale (0: not known)
    last_md = np.int64(0)
    for i in range(si.mine.shape[0]):
        if not behind and si.mine[i] != 0 and si.last_recv[i] > last_md:
            last_md = si.last_recv[i]
    eq, whole, part = mark_account(st, si, rs, kcfg, now)
    peak = np.int64(0)   # before the first full valuation no loss is measured (see valued)
    day0 = eq
    if whole:
        peak = rs.acct[rk.A_PEAK_EQUITY]
        day0 = rs.acct[rk.A_DAY_START_EQUITY]
    pa = st.positions.qty[ACCOUNT]
    committed = rk.committed_exposure(pa, st.open_buy_qty[ACCOUNT], st.open_sell_qty[ACCOUNT], si.mids,
                                      rs.inst, rs.work)
    acc.publish(si.acv, now, part, valued(st, si), gross_exposure(st, si), committed, rs.cfg[rk.C_MAX_GROSS],
                eq if whole else 0, peak, day0 if whole else 0, rs.acct[rk.A_DAY] if whole else -1)
    used = np.int64(0)
    if journal_cap > 0:
        prod = load_acquire(jr_ctrl, R.C_PROD)
        used = prod - R._refresh_gate(jr_ctrl, prod)
    ksk.ks_evaluate(rs.ks, kcfg, eq, peak, day0, last_md, used, journal_cap, now, b.journal, b.jcount, shard)
    # 6. out: counters, snapshots, rings
    _account(b, tel, idx, j_start, b.jcount[0])
    filt.count_rejects(st.filters, b.journal, j_start, b.jcount[0])   # per-rule exchange-filter refusals
    if idx[T_STATE] >= 0:
        counter_set(tel, idx[T_STATE], rs.ks[ksk.K_STATE])
    if idx[T_SUBMITTED] >= 0:
        counter_set(tel, idx[T_SUBMITTED], b.ctr[C_PLACED])
    if idx[T_BACKPRESSURE] >= 0:
        counter_set(tel, idx[T_BACKPRESSURE], b.ctr[C_JOURNAL_BACKPRESSURE] + b.ctr[C_EGRESS_BACKPRESSURE])
    _publish_snapshots(st, levels, bstate, si, b, n_t, snap_b, snap_bs, snap_p, snap_ps, si.feed_state)
    for k in range(n_t):
        b.tmark[b.touched[k]] = 0
    _flush(b, eg_rec, eg_ctrl, jr_rec, jr_ctrl)
    return took


@kernel(_nrt=False)
def wait_input(md_ctrl, rp_ctrl, spin_ns):
    """Spin (with pause) up to ``spin_ns`` until either input ring has records; True if any."""
    t0 = monotonic_ns()
    while True:
        if R.available(md_ctrl, 0) > 0 or R.available(rp_ctrl, 0) > 0:
            return True
        if monotonic_ns() - t0 > spin_ns:
            return False
        for _ in range(32):
            cpu_pause()


# --- the loop itself, nogil: the shard thread leaves it only for operator commands and to stop --
CTL_STOP = 0     # the io thread sets it: leave and stop
CTL_CMD = 8      # the io thread sets it after queueing a command: leave, run it, come back
CTL_LOOPS = 16   # passes so far (the shard writes it)
CTL_WORDS = 24   # one cache line per word that two threads touch


@kernel(_nrt=False)
def run(ctl, efd, in_fd, spin_ns, idle_us, shard, md_rec, md_ctrl, rp_rec, rp_ctrl, eg_rec, eg_ctrl, jr_rec, jr_ctrl,
        levels, bstate, bstats, bscratch, st, rs, kcfg, si, b, tel, idx, snap_b, snap_bs, snap_p, snap_ps,
        journal_cap):
    """``step`` in a loop until ``ctl[CTL_STOP]`` or ``ctl[CTL_CMD]`` is set. Calling ``step`` from
    Python costs ~16 µs of argument unboxing with the GIL held, on every pass; here the shard
    thread holds no GIL at all while it trades. Egress is signalled on eventfd ``efd``. Idle, it
    spins ``spin_ns`` on both input rings, then blocks on eventfd ``in_fd`` (which the producers of
    its input rings and of its commands signal) for at most ``idle_us`` rounded up to a
    millisecond: woken in ~10 µs instead of a sleep's granularity, and no core burnt waiting.
    Without ``in_fd`` (< 0) it sleeps ``idle_us``."""
    while True:
        if load_acquire(ctl, CTL_STOP) != 0 or load_acquire(ctl, CTL_CMD) != 0:
            return ctl[CTL_LOOPS]
        took = step(realtime_ns(), shard, md_rec, md_ctrl, rp_rec, rp_ctrl, eg_rec, eg_ctrl, jr_rec, jr_ctrl,
                    levels, bstate, bstats, bscratch, st, rs, kcfg, si, b, tel, idx, snap_b, snap_bs, snap_p,
                    snap_ps, journal_cap)
        ctl[CTL_LOOPS] += 1
        if b.out[0] > 0 and efd >= 0:
            eventfd_signal(efd)
        if took == 0 and not wait_input(md_ctrl, rp_ctrl, spin_ns):
            if in_fd >= 0:
                eventfd_wait(in_fd, (idle_us + 999) // 1000)
            else:
                sleep_us(idle_us)
