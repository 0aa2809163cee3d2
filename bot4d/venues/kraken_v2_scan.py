"""The Kraken WebSocket v2 hot path: ``book`` update frames from raw bytes to a verified book.

v2 sends prices and quantities as JSON *numbers* whose text is the value at full precision;
this kernel reads that text straight from the bytes (never a float), exactly like
``KrakenV2.on_frame`` does with ``json.loads(parse_float=str)``. It takes only the dominant frame
— a book update of a LIVE symbol with the fields Kraken sends (channel, type, data[symbol, bids,
asks, checksum, timestamp], levels {price, qty}) — and stops with STOP_FALLBACK on anything else
(any other key, a snapshot, a number JSON would refuse, escapes in strings...), so the Python
reference handles and counts that frame: the two paths cannot disagree.
"""
from __future__ import annotations

import numpy as np

from bot4d.jitcache import helper, kernel
from bot4d.venues.kraken_scan import _deps, drop_stale_cache

drop_stale_cache(__file__, _deps() + [drop_stale_cache.__code__.co_filename])

from bot4d.kernels.book import (  # noqa: E402
    B_FIRST_ERROR, ERR_CAPACITY, S_ASK_LEN, S_BID_LEN, apply_batch, top_n,
)
from bot4d.records import MD_FLAG_FRAME_END, MD_LEVEL, SIDE_ASK, SIDE_BID  # noqa: E402
from bot4d.venues.checksum import CRC_TABLE8, kraken_book_crc_fast  # noqa: E402
from bot4d.venues.kraken_scan import (  # noqa: E402
    LIVE, P_MAXP, P_MAXQ, P_PSCALE, P_QSCALE, P_SCALING, STOP_BATCH_FULL, STOP_BOOK_ERR,
    STOP_CHECKSUM, STOP_DONE, STOP_FALLBACK, sym_lookup,
)
from bot4d.venues.scan import (  # noqa: E402
    DEC_OK, after_value, const, eq_const, only_ws_left, parse_dec, read_key, skip_value, skip_ws,
    string_span,
)

K_CHANNEL = const("channel")
K_TYPE = const("type")
K_DATA = const("data")
K_SYMBOL = const("symbol")
K_BIDS = const("bids")
K_ASKS = const("asks")
K_CHECKSUM = const("checksum")
K_TIMESTAMP = const("timestamp")
K_PRICE = const("price")
K_QTY = const("qty")
V_BOOK = const("book")
V_UPDATE = const("update")


@helper
def _number(buf, i, n):
    """A JSON number token at i that ``json.loads`` accepts and that is a plain non-negative
    decimal: -> (start, end) or (-1, -1). Signs, exponents, leading zeros, "1." and ".5" are
    left to the Python path (which refuses or counts them exactly)."""
    if i >= n:
        return -1, -1
    c = buf[i]
    if c < 48 or c > 57:
        return -1, -1
    j = i + 1
    if c == 48 and j < n and 48 <= buf[j] <= 57:
        return -1, -1  # leading zero: invalid JSON
    while j < n and 48 <= buf[j] <= 57:
        j += 1
    if j < n and buf[j] == 46:
        j += 1
        d0 = j
        while j < n and 48 <= buf[j] <= 57:
            j += 1
        if j == d0:
            return -1, -1
    if j < n and (buf[j] == 101 or buf[j] == 69):
        return -1, -1
    return i, j


@helper
def _two(buf, s):
    a = buf[s]
    b = buf[s + 1]
    if a < 48 or a > 57 or b < 48 or b > 57:
        return -1
    return (a - 48) * 10 + (b - 48)


@helper
def _days_from_civil(y, m, d):
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@kernel
def rfc3339(buf, s, e):
    """buf[s:e] = "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" -> ns since epoch, or -1 (the rules of
    ``l2sync.rfc3339_ns``; anything it would refuse is -1 here and goes to Python)."""
    if e - s < 20 or buf[e - 1] != 90 or buf[s + 4] != 45 or buf[s + 7] != 45 \
            or buf[s + 10] != 84 or buf[s + 13] != 58 or buf[s + 16] != 58:
        return -1
    y1 = _two(buf, s)
    y2 = _two(buf, s + 2)
    mo = _two(buf, s + 5)
    d = _two(buf, s + 8)
    h = _two(buf, s + 11)
    mi = _two(buf, s + 14)
    sec = _two(buf, s + 17)
    if y1 < 0 or y2 < 0 or mo < 1 or mo > 12 or d < 1 or d > 31 or h < 0 or h > 23 \
            or mi < 0 or mi > 59 or sec < 0 or sec > 60:
        return -1
    y = y1 * 100 + y2
    if y < 1678 or y > 2261:
        return -1  # ns since 1970 would not fit int64: Python refuses these too
    ns = 0
    p = s + 19
    if p < e - 1:
        if buf[p] != 46 or e - 1 - (p + 1) < 1 or e - 1 - (p + 1) > 9:
            return -1
        nd = 0
        for m in range(p + 1, e - 1):
            c = buf[m]
            if c < 48 or c > 57:
                return -1
            ns = ns * 10 + (c - 48)
            nd += 1
        for _ in range(9 - nd):
            ns *= 10
    secs = ((_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec
    return secs * 1000000000 + ns


@helper
def _levels(buf, s, e, side, inst, ps, qs, mp, mq, ets, rts, out, k):
    """``[{"price":N,"qty":N},...]`` -> MD_LEVEL records. (k, status): 0 ok, 1 fallback, 2 full."""
    cap = out.shape[0]
    i = skip_ws(buf, s + 1, e)
    if i < e and buf[i] == 93:
        return k, 0
    while True:
        if i >= e or buf[i] != 123:
            return k, 1
        j = skip_ws(buf, i + 1, e)
        p0 = p1 = q0 = q1 = -1
        while True:
            ks, ke, vi = read_key(buf, j, e)
            if ks < 0:
                return k, 1
            a, b = _number(buf, vi, e)
            if a < 0:
                return k, 1
            if eq_const(buf, ks, ke, K_PRICE):
                p0, p1 = a, b
            elif eq_const(buf, ks, ke, K_QTY):
                q0, q1 = a, b
            else:
                return k, 1
            j, end = after_value(buf, b, e)
            if j < 0:
                return k, 1
            if end == 1:
                break
        if p0 < 0 or q0 < 0:
            return k, 1
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
        r.venue_seq = 0
        r.exch_ts_ns = ets
        r.recv_ts_ns = rts
        r.aux_px = 0
        r.aux_qty = 0
        k += 1
        i = skip_ws(buf, j, e)
        if i < e and buf[i] == 44:
            i = skip_ws(buf, i + 1, e)
            continue
        if i < e and buf[i] == 93:
            return k, 0
        return k, 1


@helper
def _frame(buf, s, n):
    """(ok, sym_s, sym_e, bids_s, bids_e, asks_s, asks_e, checksum, ts_s, ts_e)"""
    bad = (False, -1, -1, -1, -1, -1, -1, np.int64(-1), -1, -1)
    chan = typ = False
    d0 = d1 = -1
    i = skip_ws(buf, s, n)
    if i >= n or buf[i] != 123:
        return bad
    i = skip_ws(buf, i + 1, n)
    while True:
        ks, ke, vi = read_key(buf, i, n)
        if ks < 0:
            return bad
        if eq_const(buf, ks, ke, K_CHANNEL):
            c0, c1, ve = string_span(buf, vi, n)
            if ve < 0 or not eq_const(buf, c0, c1, V_BOOK):
                return bad
            chan = True
        elif eq_const(buf, ks, ke, K_TYPE):
            c0, c1, ve = string_span(buf, vi, n)
            if ve < 0 or not eq_const(buf, c0, c1, V_UPDATE):
                return bad
            typ = True
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
                return bad
            ve = j + 1
        else:
            return bad
        i, end = after_value(buf, ve, n)
        if i < 0:
            return bad
        if end == 1:
            break
    if not only_ws_left(buf, i, n) or not (chan and typ) or d0 < 0:
        return bad
    y0 = y1 = b0 = b1 = a0 = a1 = t0 = t1 = -1
    ck = np.int64(-1)
    j = skip_ws(buf, d0 + 1, d1)
    while True:
        ks, ke, vi = read_key(buf, j, d1)
        if ks < 0:
            return bad
        if eq_const(buf, ks, ke, K_SYMBOL):
            y0, y1, ve = string_span(buf, vi, d1)
            if ve < 0:
                return bad
        elif eq_const(buf, ks, ke, K_BIDS) or eq_const(buf, ks, ke, K_ASKS):
            if buf[vi] != 91:
                return bad
            ve = skip_value(buf, vi, d1)
            if ve < 0:
                return bad
            if buf[ks] == 98:
                b0, b1 = vi, ve
            else:
                a0, a1 = vi, ve
        elif eq_const(buf, ks, ke, K_CHECKSUM):
            c0, c1 = _number(buf, vi, d1)
            if c0 < 0 or c1 - c0 > 10:
                return bad
            ck = np.int64(0)
            for m in range(c0, c1):
                if buf[m] < 48 or buf[m] > 57:
                    return bad  # a fraction: Python refuses it as malformed
                ck = ck * 10 + (buf[m] - 48)
            ve = c1
        elif eq_const(buf, ks, ke, K_TIMESTAMP):
            t0, t1, ve = string_span(buf, vi, d1)
            if ve < 0:
                return bad
        else:
            return bad
        j, end = after_value(buf, ve, d1)
        if j < 0:
            return bad
        if end == 1:
            break
    if y0 < 0 or ck < 0:
        return bad
    return (True, y0, y1, b0, b1, a0, a1, ck, t0, t1)


@kernel
def kraken_v2_run(buf, ends, f0, recv, keys, meta, params, states, depth, levels, state, bstats,
                  scratch, out, k, tops, text, stats):
    """Process frames f0.. of the batch; same contract as ``kraken_scan.kraken_v1_run``."""
    tb = tops[0]
    tbq = tops[1]
    ta = tops[2]
    taq = tops[3]
    nf = ends.shape[0]
    for f in range(f0, nf):
        s = ends[f - 1] if f > 0 else 0
        n = ends[f]
        ok, y0, y1, b0, b1, a0, a1, ck, t0, t1 = _frame(buf, s, n)
        if not ok:
            return f, STOP_FALLBACK, k, 0
        inst = sym_lookup(buf, y0, y1, keys, meta)
        if inst < 0 or states[inst] != LIVE:
            return f, STOP_FALLBACK, k, 0
        ets = np.int64(0)
        if t0 >= 0:
            ets = rfc3339(buf, t0, t1)
            if ets < 0:
                return f, STOP_FALLBACK, k, 0
        kf = k
        rts = recv[f]
        ps = params[inst, P_PSCALE]
        qs = params[inst, P_QSCALE]
        mp = params[inst, P_MAXP]
        mq = params[inst, P_MAXQ]
        st = 0
        if b0 >= 0:
            k, st = _levels(buf, b0, b1, SIDE_BID, inst, ps, qs, mp, mq, ets, rts, out, k)
        if st == 0 and a0 >= 0:
            k, st = _levels(buf, a0, a1, SIDE_ASK, inst, ps, qs, mp, mq, ets, rts, out, k)
        if st == 2:
            return f, STOP_BATCH_FULL, kf, 0
        if st != 0:
            return f, STOP_FALLBACK, kf, 0
        if k + (k - kf) + 2 > out.shape[0]:
            return f, STOP_BATCH_FULL, kf, 0
        if k > kf:
            out[k - 1].flags = MD_FLAG_FRAME_END
            apply_batch(levels, state, bstats, scratch, out, kf, k)
            err = scratch[B_FIRST_ERROR]
            if err != 0 and err != ERR_CAPACITY:
                stats[2] = inst
                return f, STOP_BOOK_ERR, k, err
        kt = k
        for side in range(2):
            ln = state[inst, S_BID_LEN] if side == 0 else state[inst, S_ASK_LEN]
            for m in range(ln - depth):
                if k >= out.shape[0]:
                    break
                r = out[k]
                r.seq = 0
                r.kind = MD_LEVEL
                r.side = SIDE_BID if side == 0 else SIDE_ASK
                r.flags = 0
                r.instrument = inst
                r.price = levels[inst, 0, m] if side == 0 else levels[inst, 2, m]
                r.qty = 0
                r.venue_seq = 0
                r.exch_ts_ns = 0
                r.recv_ts_ns = 0  # a local consequence, not a venue message (as in L2Handler.truncate)
                r.aux_px = 0
                r.aux_qty = 0
                k += 1
        if k > kt:
            out[k - 1].flags = MD_FLAG_FRAME_END
            apply_batch(levels, state, bstats, scratch, out, kt, k)
        nb_, na_ = top_n(levels, state, inst, 10, tb, tbq, ta, taq)
        got = kraken_book_crc_fast(tb, tbq, nb_, ta, taq, na_, params[inst, P_SCALING],
                                   params[inst, P_SCALING + 1], params[inst, P_SCALING + 2],
                                   params[inst, P_SCALING + 3], CRC_TABLE8, text)
        stats[1] += 1
        if got != ck:
            stats[2] = inst
            return f, STOP_CHECKSUM, k, 0
        stats[0] += 1
    return nf, STOP_DONE, k, 0


def warmup() -> None:
    from bot4d.instruments import InstrumentTable
    from bot4d.kernels.book import make_books
    from bot4d.venues.kraken import KrakenV2, book_checksum

    t = InstrumentTable()
    t.add("KRAKEN", "BTC/USD", 1, 8)
    h = KrakenV2(t, make_books(1, 16), depth=10)
    bids, asks = [("99.0", "1.00000000")], [("101.0", "1.00000000")]
    h.on_frame(('{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":'
                '[{"price":99.0,"qty":1.00000000}],"asks":[{"price":101.0,"qty":1.00000000}],'
                f'"checksum":{book_checksum(bids, asks)}}}]}}').encode())
    h.on_frames([b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],'
                 b'"asks":[],"checksum":1,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'])
