"""Binance spot market data: frame parsing, snapshot + diff synchronisation, signing.

Frames are parsed by one numba kernel straight from their bytes (see ``bot4d.venues.scan``): a
batch of frames goes in, normalised MD_UPDATE records come out, and the per-instrument sync state
(update-id chain) is checked in the same pass, so only records that keep the book correct reach
the book kernel.

Synchronisation follows "How to manage a local order book correctly" in Binance's stream docs
(https://github.com/binance/binance-spot-api-docs/blob/master/web-socket-streams.md
#how-to-manage-a-local-order-book-correctly): buffer diffs, fetch the REST snapshot, drop events
with ``u <= lastUpdateId``, the first applied event has ``U <= lastUpdateId+1 <= u``, every later
one ``U == previous u + 1``; anything else is a gap and the instrument resyncs from a new
snapshot. USD-M futures (``binance_futures``) differ only in the chaining rule, so the kernel
takes a ``futures`` flag instead of being duplicated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

import numpy as np

from bot4d.instruments import Instrument, InstrumentTable
from bot4d.jitcache import helper, kernel
from bot4d.records import (
    MD_BBO, MD_CLEAR, MD_FLAG_FRAME_END, MD_SNAPSHOT_END, MD_TRADE, MD_UPDATE_DTYPE, SIDE_ASK,
    SIDE_BID,
)
from bot4d.venues import scan
from bot4d.venues.scan import (
    I_COLS, I_LAST_U, I_MAXPX, I_MAXQTY, I_PSCALE, I_QSCALE, I_STATE, W_FLD, W_SIZE,
    DEC_OK, after_value, emit_levels, emit_one, eq_const, only_ws_left, parse_dec, parse_int,
    read_key, skip_levels, skip_value, skip_ws, string_span, sym_lookup,
)
from bot4d.venues.sync import Reason, ReasonCounters, SyncState

import bot4d.kernels.book as _book  # noqa: E402  (its apply_batch is compiled into frame_apply)

scan.drop_stale_cache(__file__, scan._venue_deps() + [_book.__file__])

VENUE = "BINANCE"
WS_URL = "wss://stream.binance.com:9443/stream"
REST_DEPTH_URL = "https://api.binance.com/api/v3/depth"


# --- signing ------------------------------------------------------------------------------------
def sign(payload: str, secret: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` exactly as given (query string + body), keyed by ``secret``.

    Binance signs ``totalParams`` = query string concatenated with the request body, with no
    separator added (see the SIGNED endpoint examples in rest-api.md); callers pass that string.
    """
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


# --- subscriptions and REST ---------------------------------------------------------------------
def stream_names(symbols: list[str], depth_speed_ms: int = 100, trades: str = "aggTrade",
                 book_ticker: bool = True) -> list[str]:
    """Stream names for ``symbols`` (Binance wants them lowercase)."""
    if depth_speed_ms not in (100, 1000):
        raise ValueError("Binance diff depth streams update every 100 ms or 1000 ms")
    if trades not in ("aggTrade", "trade", ""):
        raise ValueError(f"unknown trade stream {trades!r}")
    out = []
    for s in symbols:
        ls = s.lower()
        out.append(f"{ls}@depth@100ms" if depth_speed_ms == 100 else f"{ls}@depth")
        if book_ticker:
            out.append(f"{ls}@bookTicker")
        if trades:
            out.append(f"{ls}@{trades}")
    return out


def subscribe_message(streams: list[str], req_id: int = 1) -> bytes:
    """The live SUBSCRIBE request for a combined-stream connection."""
    return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": req_id},
                      separators=(",", ":")).encode()


def unsubscribe_message(streams: list[str], req_id: int = 1) -> bytes:
    return json.dumps({"method": "UNSUBSCRIBE", "params": streams, "id": req_id},
                      separators=(",", ":")).encode()


def combined_stream_url(streams: list[str], base: str = WS_URL) -> str:
    return f"{base}?streams={'/'.join(streams)}"


def snapshot_url(symbol: str, limit: int = 1000, base: str = REST_DEPTH_URL) -> str:
    if limit not in (5, 10, 20, 50, 100, 500, 1000, 5000):
        raise ValueError(f"Binance depth limit {limit} is not one of the allowed values")
    return f"{base}?symbol={symbol.upper()}&limit={limit}"


# --- kernel constants -----------------------------------------------------------------------
# internal per-instrument states; the public SyncState values are shared, BRIDGING is ours:
# a snapshot is applied and the first diff that bridges it has not arrived yet.
ST_SYNCING = int(SyncState.SYNCING)
ST_LIVE = int(SyncState.LIVE)
ST_RESYNCING = int(SyncState.RESYNCING)
ST_BRIDGING = 4

FS_BUFFER = 100        # frame status: depth diff kept by the caller until a snapshot arrives
FS_NOT_DONE = 101      # frame not looked at (batch stopped early because the output was full)

T_NONE, T_DEPTH, T_TRADE, T_AGG, T_BOOKTICKER, T_IGNORED, T_OTHER = 0, 1, 2, 3, 4, 5, 6

# scratch field slots (presence is a bit mask in F_HAVE)
F_TYPE, F_HAVE, F_E, F_T, F_S0, F_S1, F_U, F_u, F_pu = 0, 1, 2, 3, 4, 5, 6, 7, 8
F_B0, F_B1, F_BT, F_A0, F_A1, F_AT, F_BQ0, F_BQ1, F_AQ0, F_AQ1 = 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
F_P0, F_P1, F_Q0, F_Q1, F_M, F_TID, F_AID, F_LID, F_ACK, F_BAD = 19, 20, 21, 22, 23, 24, 25, 26, 27, 28
N_FIELDS = 32
H_E, H_S, H_U, H_u, H_pu, H_B, H_A, H_BQ, H_AQ, H_P, H_Q, H_M, H_T, H_TID, H_AID, H_LID = (
    1 << k for k in range(16))
H_BIDS, H_ASKS, H_EVT = 1 << 16, 1 << 17, 1 << 18
VT_ARRAY, VT_STRING, VT_NUMBER = 1, 2, 3

_E_DEPTH = scan.const("depthUpdate")
_E_TRADE = scan.const("trade")
_E_AGG = scan.const("aggTrade")
_E_BT = scan.const("bookTicker")
_E_KLINE = scan.const("kline")
_K_STREAM = scan.const("stream")
_K_DATA = scan.const("data")
_K_RESULT = scan.const("result")
_K_ID = scan.const("id")
_K_PU = scan.const("pu")
_K_LID = scan.const("lastUpdateId")
_K_BIDS = scan.const("bids")
_K_ASKS = scan.const("asks")

R_OK = int(Reason.OK)
R_MALFORMED = int(Reason.MALFORMED_JSON)
R_UNKNOWN_SYMBOL = int(Reason.UNKNOWN_SYMBOL)
R_BAD_QTY = int(Reason.BAD_QTY)
R_BAD_PRICE = int(Reason.BAD_PRICE)
R_OUT_OF_ORDER = int(Reason.OUT_OF_ORDER)
R_GAP = int(Reason.GAP)
R_OVERSIZE = int(Reason.OVERSIZE_FRAME)
R_UNKNOWN_MESSAGE = int(Reason.UNKNOWN_MESSAGE)
R_STALE = int(Reason.STALE_EVENT)
R_BAD_SNAPSHOT = int(Reason.BAD_SNAPSHOT)
R_BATCH_FULL = int(Reason.BATCH_FULL)
R_IGNORED = int(Reason.IGNORED)


@helper
def _str_field(buf, i, n, fld, f0, f1, have, bit):
    s, e, j = string_span(buf, i, n)
    if j < 0:
        return -1
    fld[f0] = s
    fld[f1] = e
    fld[have] |= bit
    return j


@helper
def _int_field(buf, i, n, fld, f, bit):
    v, j = parse_int(buf, i, n)
    if j < 0:
        return -1
    fld[f] = v
    fld[F_HAVE] |= bit
    return j


@helper
def _side_field(buf, i, n, fld, f0, f1, ft, bit, is_a):
    """``b``/``a``: an array of levels (depth), a price string (bookTicker) or a number (the
    aggregate trade id in an aggTrade's ``a``; order ids in a trade's ``b``/``a``)."""
    c = buf[i]
    if c == 91:
        j = skip_levels(buf, i, n)
        if j < 0:
            return -1
        fld[f0] = i
        fld[f1] = j
        fld[ft] = VT_ARRAY
        fld[F_HAVE] |= bit
        return j
    if c == 34:
        j = _str_field(buf, i, n, fld, f0, f1, F_HAVE, bit)
        if j >= 0:
            fld[ft] = VT_STRING
        return j
    v, j = parse_int(buf, i, n)
    if j < 0:
        return -1
    fld[ft] = VT_NUMBER
    if is_a:
        fld[F_AID] = v
        fld[F_HAVE] |= H_AID
    return j


@kernel
def parse_frame(buf, i, n, fld):
    """Walk one Binance frame (combined-stream wrapper or raw event) and note its fields in fld.

    The combined wrapper ``{"stream":..,"data":{..}}`` is handled by descending into ``data``
    (level 1) and coming back, so one pass reads both shapes. Returns False if the bytes are
    not a well-formed JSON object (or a known field has the wrong JSON type).
    """
    for k in range(N_FIELDS):
        fld[k] = 0
    i = skip_ws(buf, i, n)
    if i >= n or buf[i] != 123:
        return False
    i = skip_ws(buf, i + 1, n)
    if i < n and buf[i] == 125:  # {}
        return only_ws_left(buf, i + 1, n)
    level = 0
    while True:
        if i >= n or buf[i] != 34:
            return False
        ks, ke, i = read_key(buf, i, n)
        if i < 0:
            return False
        kl = ke - ks
        k0 = buf[ks] if kl > 0 else 0
        j = -1
        if kl == 1:
            if k0 == 101:    # e
                s, e, j = string_span(buf, i, n)
                if j >= 0:
                    fld[F_HAVE] |= H_EVT
                    if eq_const(buf, s, e, _E_DEPTH):
                        fld[F_TYPE] = T_DEPTH
                    elif eq_const(buf, s, e, _E_AGG):
                        fld[F_TYPE] = T_AGG
                    elif eq_const(buf, s, e, _E_TRADE):
                        fld[F_TYPE] = T_TRADE
                    elif eq_const(buf, s, e, _E_BT):
                        fld[F_TYPE] = T_BOOKTICKER
                    elif eq_const(buf, s, e, _E_KLINE):
                        fld[F_TYPE] = T_IGNORED
                    else:
                        fld[F_TYPE] = T_OTHER
            elif k0 == 69:   # E
                j = _int_field(buf, i, n, fld, F_E, H_E)
            elif k0 == 84:   # T
                j = _int_field(buf, i, n, fld, F_T, H_T)
            elif k0 == 115:  # s
                j = _str_field(buf, i, n, fld, F_S0, F_S1, F_HAVE, H_S)
            elif k0 == 85:   # U
                j = _int_field(buf, i, n, fld, F_U, H_U)
            elif k0 == 117:  # u
                j = _int_field(buf, i, n, fld, F_u, H_u)
            elif k0 == 98:   # b
                j = _side_field(buf, i, n, fld, F_B0, F_B1, F_BT, H_B, False)
            elif k0 == 97:   # a
                j = _side_field(buf, i, n, fld, F_A0, F_A1, F_AT, H_A, True)
            elif k0 == 66:   # B
                j = _str_field(buf, i, n, fld, F_BQ0, F_BQ1, F_HAVE, H_BQ)
            elif k0 == 65:   # A
                j = _str_field(buf, i, n, fld, F_AQ0, F_AQ1, F_HAVE, H_AQ)
            elif k0 == 112:  # p
                j = _str_field(buf, i, n, fld, F_P0, F_P1, F_HAVE, H_P)
            elif k0 == 113:  # q
                j = _str_field(buf, i, n, fld, F_Q0, F_Q1, F_HAVE, H_Q)
            elif k0 == 116:  # t
                j = _int_field(buf, i, n, fld, F_TID, H_TID)
            elif k0 == 109:  # m
                if i + 4 <= n and buf[i] == 116 and buf[i + 1] == 114 and buf[i + 2] == 117 \
                        and buf[i + 3] == 101:
                    fld[F_M] = 1
                    fld[F_HAVE] |= H_M
                    j = i + 4
                elif i + 5 <= n and buf[i] == 102 and buf[i + 1] == 97 and buf[i + 2] == 108 \
                        and buf[i + 3] == 115 and buf[i + 4] == 101:
                    fld[F_M] = 0
                    fld[F_HAVE] |= H_M
                    j = i + 5
            else:
                j = skip_value(buf, i, n)
        elif eq_const(buf, ks, ke, _K_PU):
            j = _int_field(buf, i, n, fld, F_pu, H_pu)
        elif level == 0 and eq_const(buf, ks, ke, _K_DATA) and buf[i] == 123:
            level = 1
            i = skip_ws(buf, i + 1, n)
            if i < n and buf[i] == 125:  # "data":{}
                i += 1
                level = 0
            else:
                continue
            j = i
        elif eq_const(buf, ks, ke, _K_LID):
            j = _int_field(buf, i, n, fld, F_LID, H_LID)
        elif eq_const(buf, ks, ke, _K_BIDS):
            if buf[i] == 91:
                j = skip_value(buf, i, n)
                fld[F_B0] = i
                fld[F_B1] = j
                fld[F_HAVE] |= H_BIDS
        elif eq_const(buf, ks, ke, _K_ASKS):
            if buf[i] == 91:
                j = skip_value(buf, i, n)
                fld[F_A0] = i
                fld[F_A1] = j
                fld[F_HAVE] |= H_ASKS
        else:
            if level == 0 and (eq_const(buf, ks, ke, _K_RESULT) or eq_const(buf, ks, ke, _K_ID)):
                fld[F_ACK] = 1
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


@kernel
def process_batch(buf, ends, first, nframes, recv_ns, futures, max_frame, tab, ip, out, fres,
                  work):
    """Parse frames ``first..first+nframes`` of a batch into ``out`` and advance sync state.

    ``ends[f]`` is the end offset of frame f in ``buf`` (frame f starts at ``ends[f-1]``).
    Per frame, ``fres[f, 0]`` gets a Reason code, FS_BUFFER (a diff to keep until a snapshot)
    or FS_NOT_DONE, and ``fres[f, 1]`` the instrument (or -1). ``ip`` holds the per-instrument
    scales, limits and sync state (scan.I_* columns), ``work`` the reason counters and scratch.
    Returns (frames done, records written); the batch stops early only when ``out`` cannot hold
    the next frame's records.
    """
    fld = work[W_FLD:]
    cap = out.shape[0]
    k = 0
    f = first
    stop = first + nframes
    while f < stop:
        s0 = ends[f - 1] if f > 0 else 0
        e0 = ends[f]
        rts = recv_ns[f]
        fres[f, 1] = -1
        if e0 - s0 > max_frame:
            fres[f, 0] = R_OVERSIZE
            work[R_OVERSIZE] += 1
            f += 1
            continue
        if not parse_frame(buf, s0, e0, fld):
            fres[f, 0] = R_MALFORMED
            work[R_MALFORMED] += 1
            f += 1
            continue
        have = fld[F_HAVE]
        typ = fld[F_TYPE]
        if typ == T_NONE and (have & H_EVT) == 0 and (have & H_u) and (have & H_S) \
                and fld[F_BT] == VT_STRING and fld[F_AT] == VT_STRING:
            typ = T_BOOKTICKER  # spot bookTicker carries no "e"
        if typ == T_NONE:
            if fld[F_ACK] == 1 and (have & H_S) == 0:
                reason = R_IGNORED   # {"result":null,"id":1}
            else:
                reason = R_UNKNOWN_MESSAGE
            fres[f, 0] = reason
            work[reason] += 1
            f += 1
            continue
        if typ == T_IGNORED or typ == T_OTHER:
            reason = R_IGNORED if typ == T_IGNORED else R_UNKNOWN_MESSAGE
            fres[f, 0] = reason
            work[reason] += 1
            f += 1
            continue
        if (have & H_S) == 0:
            fres[f, 0] = R_MALFORMED
            work[R_MALFORMED] += 1
            f += 1
            continue
        inst = sym_lookup(buf, fld[F_S0], fld[F_S1], tab)
        if inst < 0:
            fres[f, 0] = R_UNKNOWN_SYMBOL
            work[R_UNKNOWN_SYMBOL] += 1
            f += 1
            continue
        fres[f, 1] = inst
        ps = ip[inst, I_PSCALE]
        qs = ip[inst, I_QSCALE]
        mp = ip[inst, I_MAXPX]
        mq = ip[inst, I_MAXQTY]
        ets = fld[F_E] * 1000000 if (have & H_E) else 0
        reason = R_OK
        if typ == T_DEPTH:
            need = H_U | H_u | H_B | H_A
            if futures:
                need |= H_pu
            if (have & need) != need or fld[F_BT] != VT_ARRAY or fld[F_AT] != VT_ARRAY \
                    or fld[F_U] > fld[F_u]:
                reason = R_MALFORMED
            else:
                U = fld[F_U]
                u = fld[F_u]
                state = ip[inst, I_STATE]
                lu = ip[inst, I_LAST_U]
                apply = False
                if state == ST_LIVE:
                    if futures:
                        if fld[F_pu] == lu:
                            apply = True
                        elif u <= lu:
                            reason = R_OUT_OF_ORDER
                        else:
                            reason = R_GAP
                    else:
                        if U == lu + 1:
                            apply = True
                        elif u <= lu:
                            reason = R_OUT_OF_ORDER
                        elif U <= lu:
                            reason = R_OUT_OF_ORDER  # overlaps what we applied: broken
                            ip[inst, I_STATE] = ST_RESYNCING
                        else:
                            reason = R_GAP
                elif state == ST_BRIDGING:
                    # lu holds the snapshot's lastUpdateId
                    if futures:
                        if u < lu:
                            reason = R_STALE
                        elif U <= lu or fld[F_pu] == lu:
                            # documented: U <= lastUpdateId <= u. A snapshot taken exactly at
                            # an event boundary is continued by the event whose pu equals it
                            # (its U is above lastUpdateId): that event chains just as well
                            apply = True
                        else:
                            reason = R_GAP
                    else:
                        if u <= lu:
                            reason = R_STALE
                        elif U <= lu + 1:
                            apply = True
                        else:
                            reason = R_GAP
                else:
                    fres[f, 0] = FS_BUFFER
                    f += 1
                    continue
                if reason == R_GAP:
                    ip[inst, I_STATE] = ST_RESYNCING
                if apply:
                    k0 = k
                    if fld[F_B1] > fld[F_B0]:
                        k, reason = emit_levels(buf, fld[F_B0], fld[F_B1], SIDE_BID, inst,
                                                 ps, qs, mp, mq, u, ets, rts, out, k, cap)
                    if reason == R_OK:
                        k, reason = emit_levels(buf, fld[F_A0], fld[F_A1], SIDE_ASK, inst,
                                                 ps, qs, mp, mq, u, ets, rts, out, k, cap)
                    if reason == R_BATCH_FULL and k0 > 0:
                        # no room left in this call: undo, let the caller apply what we
                        # have, and take this frame first in the next call
                        k = k0
                        break
                    if reason == R_OK:
                        if k > k0:
                            out[k - 1].flags = MD_FLAG_FRAME_END
                        ip[inst, I_LAST_U] = u
                        ip[inst, I_STATE] = ST_LIVE
                    else:
                        # a diff we cannot apply leaves the book wrong: resync
                        k = k0
                        ip[inst, I_STATE] = ST_RESYNCING
        elif typ == T_BOOKTICKER:
            need = H_u | H_B | H_A | H_BQ | H_AQ
            if (have & need) != need or fld[F_BT] != VT_STRING or fld[F_AT] != VT_STRING:
                reason = R_MALFORMED
            elif k >= cap:
                break
            else:
                bp, e1 = parse_dec(buf, fld[F_B0], fld[F_B1], ps)
                ap, e2 = parse_dec(buf, fld[F_A0], fld[F_A1], ps)
                bq, e3 = parse_dec(buf, fld[F_BQ0], fld[F_BQ1], qs)
                aq, e4 = parse_dec(buf, fld[F_AQ0], fld[F_AQ1], qs)
                if e1 != DEC_OK or e2 != DEC_OK or bp < 0 or ap < 0 or bp > mp or ap > mp:
                    reason = R_BAD_PRICE
                elif e3 != DEC_OK or e4 != DEC_OK or bq > mq or aq > mq:
                    reason = R_BAD_QTY
                else:
                    emit_one(out, k, MD_BBO, 0, inst, bp, bq, fld[F_u], ets, rts, ap, aq)
                    k += 1
        else:  # trade / aggTrade
            need = H_P | H_Q | H_M
            need |= H_TID if typ == T_TRADE else H_AID
            if (have & need) != need:
                reason = R_MALFORMED
            elif k >= cap:
                break
            else:
                px, e1 = parse_dec(buf, fld[F_P0], fld[F_P1], ps)
                qty, e2 = parse_dec(buf, fld[F_Q0], fld[F_Q1], qs)
                if e1 != DEC_OK or px <= 0 or px > mp:
                    reason = R_BAD_PRICE
                elif e2 != DEC_OK or qty <= 0 or qty > mq:
                    reason = R_BAD_QTY
                else:
                    # "m": the buyer is the maker, so the aggressor sold
                    side = SIDE_ASK if fld[F_M] == 1 else SIDE_BID
                    tid = fld[F_TID] if typ == T_TRADE else fld[F_AID]
                    tts = fld[F_T] * 1000000 if (have & H_T) else ets
                    emit_one(out, k, MD_TRADE, side, inst, px, qty, tid, tts, rts, 0, 0)
                    k += 1
        fres[f, 0] = reason
        work[reason] += 1
        f += 1
    for g in range(f, stop):
        fres[g, 0] = FS_NOT_DONE
    return f - first, k


@kernel
def frame_apply(buf, ends, recv_ns, futures, max_frame, tab, ip, out, fres, work,
                levels, bstate, bstats, bscratch):
    """One frame parsed, sync-checked and applied to the book in a single call: the
    one-frame path pays one dispatch instead of two (see NOTES: ~250 ns per call + per array)."""
    _, k = process_batch(buf, ends, 0, 1, recv_ns, futures, max_frame, tab, ip, out, fres, work)
    if k > 0:
        _book.apply_batch(levels, bstate, bstats, bscratch, out, 0, k)
    return k


@kernel
def parse_snapshot(buf, n, inst, ps, qs, mp, mq, rts, out, fld):
    """A REST depth snapshot body -> MD_CLEAR, levels, MD_SNAPSHOT_END in ``out``.

    Returns (records, reason, lastUpdateId); reason != OK leaves ``out`` meaningless.
    """
    if not parse_frame(buf, 0, n, fld):
        return 0, R_MALFORMED, 0
    need = H_LID | H_BIDS | H_ASKS
    if (fld[F_HAVE] & need) != need or fld[F_B1] < 0 or fld[F_A1] < 0:
        return 0, R_BAD_SNAPSHOT, 0
    lid = fld[F_LID]
    ets = fld[F_E] * 1000000 if (fld[F_HAVE] & H_E) else 0
    cap = out.shape[0]
    if cap < 2:
        return 0, R_BATCH_FULL, lid
    emit_one(out, 0, MD_CLEAR, 0, inst, 0, 0, lid, ets, rts, 0, 0)
    out[0].flags = 0
    k, reason = emit_levels(buf, fld[F_B0], fld[F_B1], SIDE_BID, inst, ps, qs, mp, mq, lid,
                             ets, rts, out, 1, cap - 1)
    if reason == R_OK:
        k, reason = emit_levels(buf, fld[F_A0], fld[F_A1], SIDE_ASK, inst, ps, qs, mp, mq, lid,
                                 ets, rts, out, k, cap - 1)
    if reason != R_OK:
        return 0, reason, lid
    for j in range(1, k):  # a snapshot lists each level once with a positive quantity
        if out[j].qty <= 0:
            return 0, R_BAD_QTY, lid
    emit_one(out, k, MD_SNAPSHOT_END, 0, inst, 0, 0, lid, ets, rts, 0, 0)
    return k + 1, R_OK, lid


def warmup() -> None:
    """Compile the kernels on a tiny batch (see bot4d.warmup)."""
    t = InstrumentTable()
    t.add(VENUE, "BNBBTC", 8, 8)
    for books in (None, _book.make_books(1, 8)):
        feed = BinanceFeed(t, books)
        feed.on_snapshot("BNBBTC", b'{"lastUpdateId":1,"bids":[["0.1","1"]],"asks":[["0.2","1"]]}')
        feed.on_frames([b'{"stream":"x","data":{"e":"depthUpdate","E":1,"s":"BNBBTC","U":2,'
                        b'"u":2,"b":[["0.1","0"]],"a":[]}}'])
        feed.on_frame(b'{"stream":"x","data":{"e":"depthUpdate","E":1,"s":"BNBBTC","U":3,"u":3,'
                      b'"b":[["0.1","2"]],"a":[]}}')


# --- the per-connection object the feed client drives -----------------------------------------
@dataclass
class FrameResult:
    """What one ``on_frames`` call did; records are in ``records`` (a view, valid until next call)."""

    records: np.ndarray
    status: np.ndarray
    instruments: np.ndarray


class BinanceFeed:
    """Binance spot (or, with ``futures=True``, USD-M futures) market data for one connection.

    The feed client hands raw frames to ``on_frame`` / ``on_frames``; records that passed the
    sync rules are applied to ``books`` (a ``bot4d.kernels.book.Books``, or None to only produce
    records), and ``needs_snapshot()`` lists symbols whose REST snapshot the client must fetch
    and pass to ``on_snapshot``. Nothing here raises for bad venue input: it is counted in
    ``counters``.
    """

    futures = False
    venue = VENUE

    def __init__(self, instruments: InstrumentTable, books, *, batch_records: int = 1 << 16,
                 max_frame: int = 1 << 20, max_buffered: int = 10_000) -> None:
        self.instruments = instruments
        self.books = books
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
        self.state = self.ip[:, I_STATE]            # views, for Python readers
        self.last_u = self.ip[:, I_LAST_U]
        self.state[:] = ST_SYNCING
        self.work = np.zeros(W_SIZE, np.int64)
        self.counters = ReasonCounters()
        self.counters.counts = self.work[:len(Reason)]  # the kernel counts straight into it
        self.fld = self.work[W_FLD:]
        self.max_frame = max_frame
        self.max_buffered = max_buffered
        self.out = np.zeros(batch_records, MD_UPDATE_DTYPE)
        self._fres = np.zeros((1024, 2), np.int32)
        self._ends1 = np.zeros(1, np.int64)
        self._recv1 = np.zeros(1, np.int64)
        self._buffer: dict[int, list[bytes]] = {i.id: [] for i in mine}
        self._snap_out = np.zeros(1 << 14, MD_UPDATE_DTYPE)
        self.resyncs = 0
        if books is not None:
            from bot4d.kernels import book as _book  # codes owned by the book kernel
            self._B_ERRORS, self._ERR_CROSSED = _book.B_ERRORS, _book.ERR_CROSSED

    # -- state ---------------------------------------------------------------------------------
    def sync_state(self, symbol: str) -> SyncState:
        s = int(self.state[self.symbols[symbol].id])
        return SyncState.SYNCING if s == ST_BRIDGING else SyncState(s)

    def needs_snapshot(self) -> list[str]:
        """Symbols waiting for a REST snapshot (first sync, or resync after a gap)."""
        return [s for s, i in self.symbols.items()
                if self.state[i.id] in (ST_SYNCING, ST_RESYNCING)]

    def snapshot_url(self, symbol: str, limit: int = 1000) -> str:
        return snapshot_url(symbol, limit)

    # -- frames --------------------------------------------------------------------------------
    def on_frame(self, frame: bytes, recv_ns: int = 0) -> int:
        """One frame, the lowest-latency path: returns its status (a Reason, or FS_BUFFER)."""
        buf = np.frombuffer(frame, np.uint8)
        self._ends1[0] = len(frame)
        self._recv1[0] = recv_ns
        b = self.books
        if b is not None:
            k = frame_apply(buf, self._ends1, self._recv1, self.futures, self.max_frame,
                            self.table.tab, self.ip, self.out, self._fres, self.work,
                            b.levels, b.state, b.stats, b.scratch)
            if k and b.batch[self._B_ERRORS]:
                self._check_books()
        else:
            process_batch(buf, self._ends1, 0, 1, self._recv1, self.futures, self.max_frame,
                          self.table.tab, self.ip, self.out, self._fres, self.work)
        st = int(self._fres[0, 0])
        if st == FS_BUFFER or st == R_GAP:
            self._keep(int(self._fres[0, 1]), frame)
        return st

    def on_frames(self, frames: list[bytes], recv_ns: np.ndarray | None = None) -> FrameResult:
        """Parse, sync-check and apply a batch of raw frames. Never raises for venue input."""
        nf = len(frames)
        if nf == 0:
            return FrameResult(self.out[:0], self._fres[:0, 0], self._fres[:0, 1])
        buf, ends = scan.frames_to_batch(frames)
        if recv_ns is None:
            recv_ns = np.zeros(nf, np.int64)
        return self.on_batch(buf, ends, recv_ns, frames)

    def on_batch(self, buf: np.ndarray, ends: np.ndarray, recv_ns: np.ndarray,
                 frames: list[bytes] | None = None) -> FrameResult:
        """Like on_frames for frames already laid out in one buffer (``ends`` = end offsets).

        ``FrameResult.records`` holds the records of the last kernel call only (the output is
        reused when a batch needs several calls); statuses cover every frame.
        """
        nf = len(ends)
        if self._fres.shape[0] < nf:
            self._fres = np.zeros((nf, 2), np.int32)
        fres = self._fres[:nf]
        first = 0
        total = 0
        while first < nf:
            done, k = process_batch(buf, ends, first, nf - first, recv_ns, self.futures,
                                    self.max_frame, self.table.tab, self.ip, self.out, fres,
                                    self.work)
            if k and self.books is not None:
                self.books.apply(self.out[:k])
                if self.books.batch[self._B_ERRORS]:
                    self._check_books()
            total = k
            first += done
            if done == 0:  # cannot happen (an empty output always takes a frame), but never spin
                break
        # the diff that revealed a gap is newer than the book: it may bridge the next snapshot
        status = fres[:, 0]
        keep = np.flatnonzero((status == FS_BUFFER) | (status == R_GAP))
        for f in keep:
            self._keep(int(fres[f, 1]), self._frame_bytes(buf, ends, int(f), frames))
        return FrameResult(self.out[:total], status, fres[:, 1])

    def _check_books(self) -> None:
        """A book the kernel reports crossed cannot be right: count it and resync."""
        for inst in self.symbols.values():
            i = inst.id
            if self.books.error[i] == self._ERR_CROSSED and self.state[i] in (ST_LIVE, ST_BRIDGING):
                self.counters.bump(Reason.CROSSED_BOOK)
                self.state[i] = ST_RESYNCING
                self.resyncs += 1

    @staticmethod
    def _frame_bytes(buf, ends, f, frames):
        if frames is not None:
            return frames[f]
        s = int(ends[f - 1]) if f else 0
        return buf[s:int(ends[f])].tobytes()

    def _keep(self, inst: int, frame: bytes) -> None:
        b = self._buffer[inst]
        if len(b) >= self.max_buffered:
            # the snapshot is taking too long: older diffs are useless without it anyway
            self.counters.bump(Reason.BUFFER_OVERFLOW, len(b))
            b.clear()
        b.append(frame)

    # -- snapshots -----------------------------------------------------------------------------
    def on_snapshot(self, symbol: str, body: bytes, recv_ns: int = 0) -> Reason:
        """Apply a REST depth snapshot, then the buffered diffs that follow it."""
        inst = self.symbols.get(symbol)
        if inst is None:
            self.counters.bump(Reason.UNKNOWN_SYMBOL)
            return Reason.UNKNOWN_SYMBOL
        arr = np.frombuffer(body, np.uint8)
        while True:
            p = self.ip[inst.id]
            k, reason, lid = parse_snapshot(arr, len(arr), inst.id, p[I_PSCALE], p[I_QSCALE],
                                            p[I_MAXPX], p[I_MAXQTY], recv_ns, self._snap_out,
                                            self.fld)
            if reason != R_BATCH_FULL:
                break
            self._snap_out = np.zeros(self._snap_out.shape[0] * 4, MD_UPDATE_DTYPE)
        if reason != R_OK:
            self.counters.bump(reason)
            return Reason(reason)
        self.counters.bump(Reason.OK)
        self.state[inst.id] = ST_BRIDGING
        if self.books is not None:
            self.books.apply(self._snap_out[:k])
            if self.books.batch[self._B_ERRORS]:
                self._check_books()
            if self.state[inst.id] != ST_BRIDGING:
                return Reason.CROSSED_BOOK
        self.last_u[inst.id] = lid
        pending = self._buffer[inst.id]
        self._buffer[inst.id] = []
        if pending:
            # a snapshot older than these diffs makes the first of them a GAP: on_batch keeps
            # it and the rest buffered, in order, for the next (newer) snapshot
            self.on_frames(pending)
        return Reason.OK

    def force_resync(self, symbol: str) -> None:
        """Drop the chain (e.g. the connection was lost): the next snapshot starts over."""
        i = self.symbols[symbol].id
        self.state[i] = ST_RESYNCING
        self._buffer[i].clear()
        self.resyncs += 1
