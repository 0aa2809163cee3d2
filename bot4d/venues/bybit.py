"""Bybit v5 public market data: ``orderbook.{depth}.{symbol}`` and ``publicTrade.{symbol}``.

Bybit sends the book in band: a ``snapshot`` after subscribing (and again whenever Bybit decides
to, e.g. after a service restart, when ``u`` starts over at 1), then ``delta`` messages whose
levels carry absolute sizes (size "0" deletes). Rules enforced here, from
https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook
("Process snapshot/delta" and the ``u``/``seq`` rows of the response table):

* a snapshot always replaces the book, whatever its ``u`` (``u == 1`` is the restart case; a
  level-1 book re-sends a snapshot with an unchanged ``u`` after 3 s of no change);
* a delta applies only on a LIVE book and only with ``u == previous u + 1``; ``u`` at or below
  the previous one is a duplicate/out-of-order message and is dropped; a larger jump, or a
  delta with ``u == 1`` on a book that had moved on (a restart announced without a snapshot),
  is a gap: the book goes RESYNCING until the next snapshot, which the feed client obtains by
  resubscribing (``resubscribe_messages``);
* ``seq`` (cross sequence) must increase with every applied message when present.

No REST snapshot is needed: resync = unsubscribe + subscribe, which makes Bybit send a snapshot.
"""
from __future__ import annotations

import json

import numpy as np

from bot4d.instruments import Instrument, InstrumentTable
from bot4d.jitcache import helper, kernel
from bot4d.records import (
    MD_CLEAR, MD_FLAG_FRAME_END, MD_SNAPSHOT_END, MD_TRADE, MD_UPDATE_DTYPE, SIDE_ASK, SIDE_BID,
)
from bot4d.venues import scan
from bot4d.venues.scan import (
    I_COLS, I_LAST_SEQ, I_LAST_U, I_MAXPX, I_MAXQTY, I_PSCALE, I_QSCALE, I_STATE, W_FLD, W_SIZE,
    DEC_OK, after_value, emit_levels, emit_one, eq_const, only_ws_left, parse_dec, parse_int,
    read_key, skip_levels, skip_value, skip_ws, string_span, sym_lookup,
)
from bot4d.venues.sync import Reason, ReasonCounters, SyncState

import bot4d.kernels.book as _book  # noqa: E402  (its apply_batch is compiled into frame_apply)

scan.drop_stale_cache(__file__, scan._venue_deps() + [_book.__file__])

VENUE = "BYBIT"
WS_URLS = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "inverse": "wss://stream.bybit.com/v5/public/inverse",
}
DEPTHS = {"spot": (1, 50, 200, 1000), "linear": (1, 50, 200, 500, 1000),
          "inverse": (1, 50, 200, 500, 1000)}


def topics(symbols: list[str], depth: int = 50, trades: bool = True,
           category: str = "linear") -> list[str]:
    if category not in DEPTHS:
        raise ValueError(f"unknown Bybit category {category!r}")
    if depth not in DEPTHS[category]:
        raise ValueError(f"Bybit {category} has no orderbook depth {depth}")
    out = []
    for s in symbols:
        out.append(f"orderbook.{depth}.{s}")
        if trades:
            out.append(f"publicTrade.{s}")
    return out


def subscribe_message(args: list[str], req_id: str | None = None) -> bytes:
    """``{"op":"subscribe","args":[...]}`` (req_id optional, echoed in the ack)."""
    msg: dict = {"op": "subscribe", "args": args}
    if req_id is not None:
        msg["req_id"] = req_id
    return json.dumps(msg, separators=(",", ":")).encode()


def unsubscribe_message(args: list[str], req_id: str | None = None) -> bytes:
    msg: dict = {"op": "unsubscribe", "args": args}
    if req_id is not None:
        msg["req_id"] = req_id
    return json.dumps(msg, separators=(",", ":")).encode()


def ping_message(req_id: str | None = None) -> bytes:
    msg: dict = {"op": "ping"}
    if req_id is not None:
        msg["req_id"] = req_id
    return json.dumps(msg, separators=(",", ":")).encode()


# --- kernel ---------------------------------------------------------------------------------
ST_SYNCING = int(SyncState.SYNCING)
ST_LIVE = int(SyncState.LIVE)
ST_RESYNCING = int(SyncState.RESYNCING)
FS_NOT_DONE = 101

K_NONE, K_SNAPSHOT, K_DELTA = 0, 1, 2
TP_NONE, TP_BOOK, TP_TRADE, TP_OTHER = 0, 1, 2, 3

G_TOPIC, G_TYPE, G_TS, G_DT, G_D0, G_D1, G_S0, G_S1 = 0, 1, 2, 3, 4, 5, 6, 7
G_B0, G_B1, G_A0, G_A1, G_U, G_SEQ, G_HAVE, G_ACK = 8, 9, 10, 11, 12, 13, 14, 15
N_FIELDS = 16
HV_S, HV_B, HV_A, HV_U, HV_SEQ, HV_TS, HV_DATA = 1, 2, 4, 8, 16, 32, 64

_K_TOPIC = scan.const("topic")
_K_TYPE = scan.const("type")
_K_TS = scan.const("ts")
_K_DATA = scan.const("data")
_K_SEQ = scan.const("seq")
_K_OP = scan.const("op")
_K_SUCCESS = scan.const("success")
_V_SNAPSHOT = scan.const("snapshot")
_V_DELTA = scan.const("delta")
_P_BOOK = scan.const("orderbook.")
_P_TRADE = scan.const("publicTrade.")
_V_BUY = scan.const("Buy")
_V_SELL = scan.const("Sell")

R_OK = int(Reason.OK)
R_MALFORMED = int(Reason.MALFORMED_JSON)
R_UNKNOWN_SYMBOL = int(Reason.UNKNOWN_SYMBOL)
R_BAD_QTY = int(Reason.BAD_QTY)
R_BAD_PRICE = int(Reason.BAD_PRICE)
R_OUT_OF_ORDER = int(Reason.OUT_OF_ORDER)
R_GAP = int(Reason.GAP)
R_OVERSIZE = int(Reason.OVERSIZE_FRAME)
R_UNKNOWN_MESSAGE = int(Reason.UNKNOWN_MESSAGE)
R_NOT_SYNCED = int(Reason.NOT_SYNCED)
R_BATCH_FULL = int(Reason.BATCH_FULL)
R_IGNORED = int(Reason.IGNORED)


@helper
def _prefix(buf, s, e, const):
    m = const.shape[0]
    if e - s < m:
        return False
    for k in range(m):
        if buf[s + k] != const[k]:
            return False
    return True


@kernel
def parse_frame(buf, i, n, g):
    """Walk a Bybit public frame; note topic kind, type, ts and the book fields of ``data``.

    ``data`` is an object for order books (descended into, one level) and an array for trades
    (its span is kept for ``emit_trades``). Returns False for malformed JSON.
    """
    for k in range(N_FIELDS):
        g[k] = 0
    i = skip_ws(buf, i, n)
    if i >= n or buf[i] != 123:
        return False
    i = skip_ws(buf, i + 1, n)
    if i < n and buf[i] == 125:
        return only_ws_left(buf, i + 1, n)
    level = 0
    while True:
        if i >= n or buf[i] != 34:
            return False
        ks, ke, i = read_key(buf, i, n)
        if i < 0:
            return False
        kl = ke - ks
        j = -1
        if level == 1 and kl == 1:
            c = buf[ks]
            if c == 115:      # s
                s0, s1, j = string_span(buf, i, n)
                g[G_S0] = s0
                g[G_S1] = s1
                g[G_HAVE] |= HV_S
            elif c == 98 or c == 97:  # b / a
                if buf[i] == 91:
                    j = skip_levels(buf, i, n)
                    if c == 98:
                        g[G_B0] = i
                        g[G_B1] = j
                        g[G_HAVE] |= HV_B
                    else:
                        g[G_A0] = i
                        g[G_A1] = j
                        g[G_HAVE] |= HV_A
            elif c == 117:    # u
                v, j = parse_int(buf, i, n)
                g[G_U] = v
                g[G_HAVE] |= HV_U
            else:
                j = skip_value(buf, i, n)
        elif level == 1 and eq_const(buf, ks, ke, _K_SEQ):
            v, j = parse_int(buf, i, n)
            g[G_SEQ] = v
            g[G_HAVE] |= HV_SEQ
        elif level == 0 and eq_const(buf, ks, ke, _K_TOPIC):
            s0, s1, j = string_span(buf, i, n)
            if j >= 0:
                if _prefix(buf, s0, s1, _P_BOOK):
                    g[G_TOPIC] = TP_BOOK
                elif _prefix(buf, s0, s1, _P_TRADE):
                    g[G_TOPIC] = TP_TRADE
                else:
                    g[G_TOPIC] = TP_OTHER
        elif level == 0 and eq_const(buf, ks, ke, _K_TYPE):
            s0, s1, j = string_span(buf, i, n)
            if j >= 0:
                if eq_const(buf, s0, s1, _V_SNAPSHOT):
                    g[G_TYPE] = K_SNAPSHOT
                elif eq_const(buf, s0, s1, _V_DELTA):
                    g[G_TYPE] = K_DELTA
        elif level == 0 and eq_const(buf, ks, ke, _K_TS):
            v, j = parse_int(buf, i, n)
            g[G_TS] = v
            g[G_HAVE] |= HV_TS
        elif level == 0 and eq_const(buf, ks, ke, _K_DATA):
            g[G_HAVE] |= HV_DATA
            if buf[i] == 123:
                g[G_DT] = 1
                level = 1
                i = skip_ws(buf, i + 1, n)
                if i < n and buf[i] == 125:
                    i += 1
                    level = 0
                else:
                    continue
                j = i
            else:
                j = skip_value(buf, i, n)
                if buf[i] == 91:
                    g[G_DT] = 2
                    g[G_D0] = i
                    g[G_D1] = j
        else:
            if level == 0 and (eq_const(buf, ks, ke, _K_OP) or eq_const(buf, ks, ke, _K_SUCCESS)):
                g[G_ACK] = 1
            j = skip_value(buf, i, n)
        if j < 0:
            return False
        i, closed = after_value(buf, j, n)
        if i < 0:
            return False
        while closed == 1:
            if level == 0:
                return only_ws_left(buf, i, n)
            level = 0
            i, closed = after_value(buf, i, n)
            if i < 0:
                return False


@helper
def _digits_or_zero(buf, s, e):
    """Spot trade ids are decimal strings; derivatives use UUIDs (not a sequence): 0 then."""
    v = 0
    if e <= s or e - s > 19:
        return 0
    for k in range(s, e):
        c = buf[k]
        if c < 48 or c > 57:
            return 0
        d = c - 48
        if v > (scan.INT64_MAX - d) // 10:
            return 0
        v = v * 10 + d
    return v


@kernel
def emit_trades(buf, s, e, tab, ip, rts, out, k, cap):
    """``[{"T":..,"s":..,"S":"Buy","v":"..","p":"..","i":"..",..},...]`` -> MD_TRADE records.

    Returns (new k, reason); every trade of the frame must be good or none is taken.
    """
    k0 = k
    n = e
    i = skip_ws(buf, s + 1, n)
    if i < n and buf[i] == 93:
        return k, R_OK
    while True:
        if i >= n or buf[i] != 123:
            return k0, R_MALFORMED
        i = skip_ws(buf, i + 1, n)
        T = 0
        s0 = s1 = p0 = p1 = v0 = v1 = i0 = i1 = -1
        side = -1
        if i < n and buf[i] == 125:
            return k0, R_MALFORMED
        while True:
            if i >= n or buf[i] != 34:
                return k0, R_MALFORMED
            ks, ke, i = read_key(buf, i, n)
            if i < 0:
                return k0, R_MALFORMED
            j = -1
            if ke - ks == 1:
                c = buf[ks]
                if c == 84:    # T
                    T, j = parse_int(buf, i, n)
                elif c == 115:  # s
                    s0, s1, j = string_span(buf, i, n)
                elif c == 83:  # S
                    a0, a1, j = string_span(buf, i, n)
                    if j >= 0:
                        if eq_const(buf, a0, a1, _V_BUY):
                            side = SIDE_BID
                        elif eq_const(buf, a0, a1, _V_SELL):
                            side = SIDE_ASK
                elif c == 118:  # v
                    v0, v1, j = string_span(buf, i, n)
                elif c == 112:  # p
                    p0, p1, j = string_span(buf, i, n)
                elif c == 105:  # i
                    i0, i1, j = string_span(buf, i, n)
                else:
                    j = skip_value(buf, i, n)
            else:
                j = skip_value(buf, i, n)
            if j < 0:
                return k0, R_MALFORMED
            i, closed = after_value(buf, j, n)
            if i < 0:
                return k0, R_MALFORMED
            if closed == 1:
                break
        if s0 < 0 or p0 < 0 or v0 < 0 or side < 0:
            return k0, R_MALFORMED
        inst = sym_lookup(buf, s0, s1, tab)
        if inst < 0:
            return k0, R_UNKNOWN_SYMBOL
        px, e1 = parse_dec(buf, p0, p1, ip[inst, I_PSCALE])
        if e1 != DEC_OK or px <= 0 or px > ip[inst, I_MAXPX]:
            return k0, R_BAD_PRICE
        qty, e2 = parse_dec(buf, v0, v1, ip[inst, I_QSCALE])
        if e2 != DEC_OK or qty <= 0 or qty > ip[inst, I_MAXQTY]:
            return k0, R_BAD_QTY
        if k >= cap:
            return k0, R_BATCH_FULL
        tid = _digits_or_zero(buf, i0, i1) if i0 >= 0 else 0
        emit_one(out, k, MD_TRADE, side, inst, px, qty, tid, T * 1000000, rts, 0, 0)
        k += 1
        i = skip_ws(buf, i, n)
        if i < n and buf[i] == 44:
            i = skip_ws(buf, i + 1, n)
            continue
        if i < n and buf[i] == 93:
            if k > k0 + 1:
                for q in range(k0, k - 1):
                    out[q].flags = 0
            return k, R_OK
        return k0, R_MALFORMED


@kernel
def process_batch(buf, ends, first, nframes, recv_ns, max_frame, tab, ip, out, fres, work):
    """Bybit counterpart of ``binance.process_batch``: frames -> records + sync state."""
    g = work[W_FLD:]
    cap = out.shape[0]
    k = 0
    f = first
    stop = first + nframes
    while f < stop:
        s0 = ends[f - 1] if f > 0 else 0
        e0 = ends[f]
        rts = recv_ns[f]
        fres[f, 1] = -1
        reason = R_OK
        if e0 - s0 > max_frame:
            reason = R_OVERSIZE
        elif not parse_frame(buf, s0, e0, g):
            reason = R_MALFORMED
        elif g[G_TOPIC] == TP_NONE:
            reason = R_IGNORED if g[G_ACK] == 1 else R_UNKNOWN_MESSAGE
        elif g[G_TOPIC] == TP_OTHER:
            reason = R_UNKNOWN_MESSAGE
        elif g[G_TOPIC] == TP_TRADE:
            if g[G_DT] != 2:
                reason = R_MALFORMED
            else:
                bound = (g[G_D1] - g[G_D0]) // 20 + 1
                if cap - k < bound and k > 0:
                    break
                k2, reason = emit_trades(buf, g[G_D0], g[G_D1], tab, ip, rts, out, k, cap)
                if reason == R_BATCH_FULL and k > 0:
                    break
                k = k2
        else:  # order book
            need = HV_S | HV_B | HV_A | HV_U
            have = g[G_HAVE]
            if g[G_DT] != 1 or (have & need) != need or g[G_TYPE] == K_NONE:
                reason = R_MALFORMED
            else:
                inst = sym_lookup(buf, g[G_S0], g[G_S1], tab)
                if inst < 0:
                    reason = R_UNKNOWN_SYMBOL
                else:
                    fres[f, 1] = inst
                    if k >= cap:
                        break
                    u = g[G_U]
                    seq = g[G_SEQ] if (have & HV_SEQ) else -1
                    ets = g[G_TS] * 1000000
                    ps = ip[inst, I_PSCALE]
                    qs = ip[inst, I_QSCALE]
                    mp = ip[inst, I_MAXPX]
                    mq = ip[inst, I_MAXQTY]
                    k0 = k
                    if g[G_TYPE] == K_SNAPSHOT:
                        emit_one(out, k, MD_CLEAR, 0, inst, 0, 0, u, ets, rts, 0, 0)
                        out[k].flags = 0
                        k += 1
                        k, reason = emit_levels(buf, g[G_B0], g[G_B1], SIDE_BID, inst, ps, qs,
                                                mp, mq, u, ets, rts, out, k, cap)
                        if reason == R_OK:
                            k, reason = emit_levels(buf, g[G_A0], g[G_A1], SIDE_ASK, inst, ps,
                                                    qs, mp, mq, u, ets, rts, out, k, cap)
                        if reason == R_OK:
                            for q in range(k0 + 1, k):
                                if out[q].qty == 0:
                                    reason = R_BAD_QTY  # a snapshot has no deletions
                        if reason == R_OK and k >= cap:
                            reason = R_BATCH_FULL
                        if reason == R_BATCH_FULL and k0 > 0:
                            k = k0  # retry first in the next call, after a flush
                            break
                        if reason == R_OK:
                            emit_one(out, k, MD_SNAPSHOT_END, 0, inst, 0, 0, u, ets, rts,
                                     0, 0)
                            k += 1
                            ip[inst, I_STATE] = ST_LIVE
                            ip[inst, I_LAST_U] = u
                            ip[inst, I_LAST_SEQ] = seq
                        else:
                            k = k0
                            # the book was not replaced: keep it unusable until one is
                            ip[inst, I_STATE] = ST_RESYNCING
                    else:
                        lu = ip[inst, I_LAST_U]
                        if ip[inst, I_STATE] != ST_LIVE:
                            reason = R_NOT_SYNCED
                        elif u == lu + 1 and (seq < 0 or seq > ip[inst, I_LAST_SEQ]):
                            k, reason = emit_levels(buf, g[G_B0], g[G_B1], SIDE_BID, inst, ps,
                                                    qs, mp, mq, u, ets, rts, out, k, cap)
                            if reason == R_OK:
                                k, reason = emit_levels(buf, g[G_A0], g[G_A1], SIDE_ASK, inst,
                                                        ps, qs, mp, mq, u, ets, rts, out, k,
                                                        cap)
                            if reason == R_BATCH_FULL and k0 > 0:
                                k = k0  # retry first in the next call, after a flush
                                break
                            if reason == R_OK:
                                if k > k0:
                                    out[k - 1].flags = MD_FLAG_FRAME_END
                                ip[inst, I_LAST_U] = u
                                ip[inst, I_LAST_SEQ] = seq
                            else:
                                k = k0
                                ip[inst, I_STATE] = ST_RESYNCING
                        elif u == lu + 1:
                            reason = R_OUT_OF_ORDER  # seq went backwards: not trustworthy
                            ip[inst, I_STATE] = ST_RESYNCING
                        elif u == 1 and lu > 1:
                            reason = R_GAP  # restart announced by a delta: need a snapshot
                            ip[inst, I_STATE] = ST_RESYNCING
                        elif u <= lu:
                            reason = R_OUT_OF_ORDER
                        else:
                            reason = R_GAP
                            ip[inst, I_STATE] = ST_RESYNCING
        fres[f, 0] = reason
        work[reason] += 1
        f += 1
    for q in range(f, stop):
        fres[q, 0] = FS_NOT_DONE
    return f - first, k


@kernel
def frame_apply(buf, ends, recv_ns, max_frame, tab, ip, out, fres, work,
                levels, bstate, bstats, bscratch):
    """One frame parsed, sync-checked and applied to the book in a single call."""
    _, k = process_batch(buf, ends, 0, 1, recv_ns, max_frame, tab, ip, out, fres, work)
    if k > 0:
        _book.apply_batch(levels, bstate, bstats, bscratch, out, 0, k)
    return k


class BybitFeed:
    """Bybit v5 public feed for one connection (one category: spot, linear or inverse).

    ``on_frames`` applies records to ``books`` (or only returns them when books is None);
    ``needs_resubscribe()`` lists symbols whose book broke and ``resubscribe_messages`` gives
    the unsubscribe + subscribe pair that makes Bybit send a fresh snapshot.
    """

    venue = VENUE

    def __init__(self, instruments: InstrumentTable, books, *, depth: int = 50,
                 batch_records: int = 1 << 16, max_frame: int = 1 << 20) -> None:
        self.books = books
        self.depth = depth
        mine = [i for i in instruments if i.venue == self.venue]
        self.symbols: dict[str, Instrument] = {i.symbol: i for i in mine}
        self.table = scan.SymbolTable({i.symbol: i.id for i in mine})
        n = len(instruments)
        self.ip = np.zeros((n, I_COLS), np.int64)   # scales, limits, sync state (scan.I_*)
        for i in mine:
            lim = (i.max_price_units, i.max_qty_units)
            if books is not None:
                # the book clamps limits to what its sums can hold; refuse (and count) here
                # whatever it would refuse, so a level is never dropped silently downstream
                books.set_limits(i.id, *lim)
                lim = (int(books.max_px[i.id]), int(books.max_qty[i.id]))
            self.ip[i.id, :4] = (i.price_scale, i.qty_scale, *lim)
        self.state = self.ip[:, I_STATE]
        self.last_u = self.ip[:, I_LAST_U]
        self.last_seq = self.ip[:, I_LAST_SEQ]
        self.state[:] = ST_SYNCING
        self.last_seq[:] = -1
        self.work = np.zeros(W_SIZE, np.int64)
        self.counters = ReasonCounters()
        self.counters.counts = self.work[:len(Reason)]
        self.max_frame = max_frame
        self.out = np.zeros(batch_records, MD_UPDATE_DTYPE)
        self._fres = np.zeros((1024, 2), np.int32)
        self._ends1 = np.zeros(1, np.int64)
        self._recv1 = np.zeros(1, np.int64)
        if books is not None:
            from bot4d.kernels import book as _book  # codes owned by the book kernel
            self._B_ERRORS, self._ERR_CROSSED = _book.B_ERRORS, _book.ERR_CROSSED

    def sync_state(self, symbol: str) -> SyncState:
        return SyncState(int(self.state[self.symbols[symbol].id]))

    def _check_books(self) -> None:
        """A book the kernel reports crossed cannot be right: count it and resync."""
        for inst in self.symbols.values():
            i = inst.id
            if self.books.error[i] == self._ERR_CROSSED and self.state[i] == ST_LIVE:
                self.counters.bump(Reason.CROSSED_BOOK)
                self.state[i] = ST_RESYNCING

    def needs_resubscribe(self) -> list[str]:
        return [s for s, i in self.symbols.items() if self.state[i.id] == ST_RESYNCING]

    def resubscribe_messages(self, symbol: str) -> list[bytes]:
        t = [f"orderbook.{self.depth}.{symbol}"]
        return [unsubscribe_message(t), subscribe_message(t)]

    def on_frame(self, frame: bytes, recv_ns: int = 0) -> int:
        """One frame, the lowest-latency path: returns its status (a Reason)."""
        buf = np.frombuffer(frame, np.uint8)
        self._ends1[0] = len(frame)
        self._recv1[0] = recv_ns
        b = self.books
        if b is not None:
            k = frame_apply(buf, self._ends1, self._recv1, self.max_frame, self.table.tab,
                            self.ip, self.out, self._fres, self.work,
                            b.levels, b.state, b.stats, b.scratch)
            if k and b.batch[self._B_ERRORS]:
                self._check_books()
        else:
            process_batch(buf, self._ends1, 0, 1, self._recv1, self.max_frame, self.table.tab,
                          self.ip, self.out, self._fres, self.work)
        return int(self._fres[0, 0])

    def on_frames(self, frames: list[bytes], recv_ns: np.ndarray | None = None):
        nf = len(frames)
        if nf == 0:
            return self.out[:0], self._fres[:0, 0]
        buf, ends = scan.frames_to_batch(frames)
        if recv_ns is None:
            recv_ns = np.zeros(nf, np.int64)
        return self.on_batch(buf, ends, recv_ns)

    def on_batch(self, buf: np.ndarray, ends: np.ndarray, recv_ns: np.ndarray):
        """Parse, check and apply frames laid out in one buffer; returns (last records, status)."""
        nf = len(ends)
        if self._fres.shape[0] < nf:
            self._fres = np.zeros((nf, 2), np.int32)
        fres = self._fres[:nf]
        first = 0
        k = 0
        while first < nf:
            done, k = process_batch(buf, ends, first, nf - first, recv_ns, self.max_frame,
                                    self.table.tab, self.ip, self.out, fres, self.work)
            if k and self.books is not None:
                self.books.apply(self.out[:k])
                if self.books.batch[self._B_ERRORS]:
                    self._check_books()
            first += done
            if done == 0:
                break
        return self.out[:k], fres[:, 0]


def warmup() -> None:
    t = InstrumentTable()
    t.add(VENUE, "BTCUSDT", 2, 3)
    feed = BybitFeed(t, _book.make_books(1, 8))
    feed.on_frame(b'{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT",'
                  b'"b":[["1.00","1"]],"a":[["2.00","1"]],"u":1,"seq":1}}')
    feed = BybitFeed(t, None)
    feed.on_frames([
        b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT",'
        b'"b":[["1.00","1"]],"a":[["2.00","1"]],"u":1,"seq":1}}',
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT",'
        b'"S":"Buy","v":"0.001","p":"1.50","i":"1"}]}',
    ])
