"""The OKX v5 hot path: ``books`` update frames from raw bytes to a verified book, one nogil
numba call per batch of frames.

Same contract as ``kraken_scan``: the kernel takes only book *updates* of LIVE instruments whose
seqId chains on (or which carry no seqId); everything else — snapshots, trades, events, a broken
chain, any byte it does not like — stops it at that frame with STOP_FALLBACK so that
``OkxV5.on_frame`` (the Python reference) handles and counts it; a frame the book kernel refuses
or whose published checksum disagrees stops it after being applied, and Python resyncs. The
checksum is verified when published (non-zero); 0 means not published and the seqId chain is the
check, exactly as in ``bot4d.venues.okx``.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.kernels.book import B_FIRST_ERROR, ERR_CAPACITY, ERR_CROSSED, apply_batch, top_n
from bot4d.records import MD_FLAG_FRAME_END, SIDE_ASK, SIDE_BID
from bot4d.venues.checksum import CRC_TABLE8, okx_book_crc_fast
from bot4d.venues.kraken_scan import _deps, drop_stale_cache

drop_stale_cache(__file__, _deps() + [drop_stale_cache.__code__.co_filename])

from bot4d.venues.kraken_scan import (  # noqa: E402
    LIVE, P_LAST_SEQ, P_MAXP, P_MAXQ, P_PSCALE, P_QSCALE, STOP_BATCH_FULL, STOP_BOOK_ERR,
    STOP_CHECKSUM, STOP_DONE, STOP_FALLBACK, ascii_only, json_int_ok, sym_lookup,
)
from bot4d.records import MD_LEVEL  # noqa: E402
from bot4d.venues.scan import (  # noqa: E402
    DEC_OK, after_value, const, eq_const, only_ws_left, parse_dec, parse_int, read_key,
    skip_value, skip_ws, string_span,
)

NO_SEQ = -(1 << 62)
K_ARG = const("arg")
K_ACTION = const("action")
K_DATA = const("data")
K_CHANNEL = const("channel")
K_INSTID = const("instId")
K_ASKS = const("asks")
K_BIDS = const("bids")
K_TS = const("ts")
K_CHECKSUM = const("checksum")
K_SEQ = const("seqId")
K_PREV = const("prevSeqId")
V_BOOKS = const("books")
V_UPDATE = const("update")


@helper
def _digits(buf, s, e):
    """Unsigned decimal digits buf[s:e] -> value, or -1."""
    if e <= s or e - s > 18:
        return -1
    v = np.int64(0)
    for m in range(s, e):
        d = buf[m]
        if d < 48 or d > 57:
            return -1
        v = v * 10 + (d - 48)
    return v


@helper
def _levels(buf, s, e, side, inst, ps, qs, mp, mq, seq, ets, rts, out, k):
    """``[["px","sz","0","n"],...]`` -> MD_LEVEL records; every member must be a plain string
    (strict: anything JSON might refuse goes to Python). (k, status): 0 ok, 1 fallback, 2 full."""
    cap = out.shape[0]
    i = skip_ws(buf, s + 1, e)
    if i < e and buf[i] == 93:
        return k, 0
    while True:
        if i >= e or buf[i] != 91:
            return k, 1
        i = skip_ws(buf, i + 1, e)
        p0, p1, i = string_span(buf, i, e)
        if i < 0:
            return k, 1
        i = skip_ws(buf, i, e)
        if i >= e or buf[i] != 44:
            return k, 1
        i = skip_ws(buf, i + 1, e)
        q0, q1, i = string_span(buf, i, e)
        if i < 0:
            return k, 1
        i = skip_ws(buf, i, e)
        while i < e and buf[i] == 44:
            i = skip_ws(buf, i + 1, e)
            x0, x1, i = string_span(buf, i, e)
            if i < 0 or not ascii_only(buf, x0, x1):
                return k, 1
            i = skip_ws(buf, i, e)
        if i >= e or buf[i] != 93:
            return k, 1
        i = skip_ws(buf, i + 1, e)
        px, err = parse_dec(buf, p0, p1, ps)
        if err != DEC_OK or px <= 0 or px > mp:
            return k, 1
        q, err = parse_dec(buf, q0, q1, qs)
        if err != DEC_OK or q > mq:
            return k, 1
        if k >= cap:
            return k, 2
        r = out[k]
        r.seq = 0
        r.kind = MD_LEVEL
        r.side = side
        r.flags = 0
        r.instrument = inst
        r.price = px
        r.qty = q
        r.venue_seq = seq
        r.exch_ts_ns = ets
        r.recv_ts_ns = rts
        r.aux_px = 0
        r.aux_qty = 0
        k += 1
        if i < e and buf[i] == 44:
            i = skip_ws(buf, i + 1, e)
            continue
        if i < e and buf[i] == 93:
            return k, 0
        return k, 1


@helper
def _frame(buf, s, n):
    """Walk one frame's structure. Returns (ok, inst_s, inst_e, asks_s, asks_e, bids_s, bids_e,
    ts_ms, checksum, has_seq, seq, prev)."""
    bad = (False, -1, -1, -1, -1, -1, -1, np.int64(0), np.int64(0), False, np.int64(0), np.int64(0))
    i0 = i1 = a0 = a1 = b0 = b1 = -1
    ts = np.int64(-1)
    ck = np.int64(0)
    seq = np.int64(0)
    prev = np.int64(0)
    has_seq = False
    has_prev = False
    upd = False
    books = False
    d0 = d1 = -1
    i = skip_ws(buf, s, n)
    if i >= n or buf[i] != 123:
        return bad
    i = skip_ws(buf, i + 1, n)
    while True:
        ks, ke, vi = read_key(buf, i, n)
        if ks < 0:
            return bad
        if eq_const(buf, ks, ke, K_ARG):
            if buf[vi] != 123:
                return bad
            j = skip_ws(buf, vi + 1, n)
            while True:
                aks, ake, avi = read_key(buf, j, n)
                if aks < 0:
                    return bad
                if eq_const(buf, aks, ake, K_CHANNEL):
                    c0, c1, ve = string_span(buf, avi, n)
                    if ve < 0 or not eq_const(buf, c0, c1, V_BOOKS):
                        return bad
                    books = True
                elif eq_const(buf, aks, ake, K_INSTID):
                    i0, i1, ve = string_span(buf, avi, n)
                    if ve < 0:
                        return bad
                else:
                    return bad  # anything else: the Python path (strict JSON) decides
                j, end = after_value(buf, ve, n)
                if j < 0:
                    return bad
                if end == 1:
                    break
            ve = j
        elif eq_const(buf, ks, ke, K_ACTION):
            c0, c1, ve = string_span(buf, vi, n)
            if ve < 0 or not eq_const(buf, c0, c1, V_UPDATE):
                return bad  # a snapshot (or anything else): the Python path
            upd = True
        elif eq_const(buf, ks, ke, K_DATA):
            if buf[vi] != 91:
                return bad
            j = skip_ws(buf, vi + 1, n)
            if j >= n or buf[j] != 123:
                return bad
            d0 = j
            d1 = skip_value(buf, j, n)
            if d1 < 0:
                return bad
            j = skip_ws(buf, d1, n)
            if j >= n or buf[j] != 93:
                return bad  # more than one book in a push: never seen, let Python refuse it
            ve = j + 1
        else:
            return bad
        i, end = after_value(buf, ve, n)
        if i < 0:
            return bad
        if end == 1:
            break
    if not only_ws_left(buf, i, n) or not (upd and books) or d0 < 0 or i0 < 0:
        return bad
    # the book object
    j = skip_ws(buf, d0 + 1, d1)
    if j < d1 and buf[j] == 125:
        return bad
    while True:
        ks, ke, vi = read_key(buf, j, d1)
        if ks < 0:
            return bad
        if eq_const(buf, ks, ke, K_ASKS) or eq_const(buf, ks, ke, K_BIDS):
            if buf[vi] != 91:
                return bad
            ve = skip_value(buf, vi, d1)
            if ve < 0:
                return bad
            if buf[ks] == 97:
                a0, a1 = vi, ve
            else:
                b0, b1 = vi, ve
        elif eq_const(buf, ks, ke, K_TS):
            c0, c1, ve = string_span(buf, vi, d1)
            if ve < 0:
                return bad
            ts = _digits(buf, c0, c1)
            if ts < 0 or ts > 9223372036854:  # ms whose ns do not fit int64: Python refuses
                return bad
        elif eq_const(buf, ks, ke, K_CHECKSUM):
            if not json_int_ok(buf, vi, d1):
                return bad
            ck, ve = parse_int(buf, vi, d1)
            if ve < 0 or ck < -2147483648 or ck > 2147483647:
                return bad
        elif eq_const(buf, ks, ke, K_SEQ):
            if not json_int_ok(buf, vi, d1):
                return bad
            seq, ve = parse_int(buf, vi, d1)
            if ve < 0 or seq <= -(1 << 62) or seq >= 1 << 62:
                return bad
            has_seq = True
        elif eq_const(buf, ks, ke, K_PREV):
            if not json_int_ok(buf, vi, d1):
                return bad
            prev, ve = parse_int(buf, vi, d1)
            if ve < 0 or prev <= -(1 << 62) or prev >= 1 << 62:
                return bad
            has_prev = True
        else:
            return bad
        j, end = after_value(buf, ve, d1)
        if j < 0:
            return bad
        if end == 1:
            break
    if ts < 0 or has_seq != has_prev:
        return bad
    return (True, i0, i1, a0, a1, b0, b1, ts, ck, has_seq, seq, prev)


@kernel
def okx_run(buf, ends, f0, recv, keys, meta, params, states, levels, state, bstats, scratch, out,
            k, tops, text, stats):
    """Process frames f0.. (frame f = buf[ends[f-1]:ends[f]]). Returns (frame, STOP_*, k, value);
    ``stats`` += (frames ok, checksums verified, seqId links verified). ``params`` as in
    kraken_scan, with the last applied seqId in column P_LAST_SEQ."""
    pscale = params[:, P_PSCALE]
    qscale = params[:, P_QSCALE]
    maxp = params[:, P_MAXP]
    maxq = params[:, P_MAXQ]
    last_seq = params[:, P_LAST_SEQ]
    tb = tops[0]
    tbq = tops[1]
    ta = tops[2]
    taq = tops[3]
    nf = ends.shape[0]
    for f in range(f0, nf):
        s = ends[f - 1] if f > 0 else 0
        n = ends[f]
        ok, i0, i1, a0, a1, b0, b1, ts, ck, has_seq, seq, prev = _frame(buf, s, n)
        if not ok:
            return f, STOP_FALLBACK, k, 0
        inst = sym_lookup(buf, i0, i1, keys, meta)
        if inst < 0 or states[inst] != LIVE:
            return f, STOP_FALLBACK, k, 0
        if has_seq and seq >= prev and prev != last_seq[inst]:
            return f, STOP_FALLBACK, k, 0  # duplicate or gap: Python counts and resyncs
        kf = k
        vseq = seq if has_seq else 0
        ets = ts * 1000000
        rts = recv[f]
        ps = pscale[inst]
        qs = qscale[inst]
        if a0 >= 0:
            k, r = _levels(buf, a0, a1, SIDE_ASK, inst, ps, qs, maxp[inst], maxq[inst], vseq,
                           ets, rts, out, k)
            if r != 0:
                return f, (STOP_BATCH_FULL if r == 2 else STOP_FALLBACK), kf, 0
        if b0 >= 0:
            k, r = _levels(buf, b0, b1, SIDE_BID, inst, ps, qs, maxp[inst], maxq[inst], vseq,
                           ets, rts, out, k)
            if r != 0:
                return f, (STOP_BATCH_FULL if r == 2 else STOP_FALLBACK), kf, 0
        if k > kf:
            out[k - 1].flags = MD_FLAG_FRAME_END
            apply_batch(levels, state, bstats, scratch, out, kf, k)
            err = scratch[B_FIRST_ERROR]
            if err != 0 and err != ERR_CAPACITY:
                if has_seq:
                    stats[2] += 1  # the Python path counts the link before it applies
                stats[3] = inst
                return f, STOP_BOOK_ERR, k, err
        if has_seq:
            last_seq[inst] = seq
            stats[2] += 1
        nb_, na_ = top_n(levels, state, inst, 25, tb, tbq, ta, taq)
        if nb_ > 0 and na_ > 0 and tb[0] >= ta[0]:
            stats[3] = inst
            return f, STOP_BOOK_ERR, k, ERR_CROSSED
        if ck != 0:
            got = okx_book_crc_fast(tb, tbq, nb_, ta, taq, na_, ps, qs, CRC_TABLE8, text)
            stats[1] += 1
            if got != ck:
                stats[3] = inst
                return f, STOP_CHECKSUM, k, 0
        stats[0] += 1
    return nf, STOP_DONE, k, 0


def warmup() -> None:
    from bot4d.instruments import InstrumentTable
    from bot4d.kernels.book import make_books
    from bot4d.venues.okx import OkxV5

    t = InstrumentTable()
    t.add("OKX", "BTC-USDT", 1, 8)
    h = OkxV5(t, make_books(1, 16))
    h.on_frame(b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{'
               b'"asks":[["101","1","0","1"]],"bids":[["99","1","0","1"]],"ts":"1","checksum":0,'
               b'"seqId":1,"prevSeqId":-1}]}')
    h.on_frames([b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{'
                 b'"asks":[["102","1","0","1"]],"bids":[],"ts":"2","checksum":0,"seqId":2,'
                 b'"prevSeqId":1}]}'])
