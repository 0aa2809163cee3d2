"""The Kraken v1 hot path: book update frames from raw bytes to a checksum-verified book, in one
nogil numba call per batch of frames.

``KrakenV1.on_frame`` (orjson, Python) handles everything; this kernel handles only the frame
that dominates the feed — a book *update* for a LIVE instrument — and hands anything else back:
snapshots, trades, events, unknown symbols, or any byte it does not like stop the kernel at that
frame with STOP_FALLBACK, the Python handler processes (and counts) that one frame, and the kernel
resumes after it. Frames are processed strictly in order, so the two paths never disagree on
state. A frame whose book records the book kernel refuses, or whose checksum disagrees, stops the
kernel too (after being applied) and Python resyncs the instrument exactly as its own path would.

Per update frame: parse levels (price, volume, timestamp text -> int units, exactly), apply them
with the book kernel, truncate to the subscribed depth (deletes emitted as records), rebuild the
top 10 and compare Kraken's CRC32.
"""
from __future__ import annotations


import numpy as np

from bot4d.jitcache import drop_stale_cache, helper, kernel  # (okx_scan and kraken_v2_scan import it from here)


def _deps() -> list[str]:
    import bot4d.kernels.book as _b
    import bot4d.venues.checksum as _c
    import bot4d.venues.scan as _s

    return [_b.__file__, _c.__file__, _s.__file__]


drop_stale_cache(__file__, _deps())

from bot4d.kernels.book import B_FIRST_ERROR, ERR_CAPACITY, S_ASK_LEN, S_BID_LEN, apply_batch, top_n  # noqa: E402
from bot4d.records import MD_FLAG_FRAME_END, MD_LEVEL, SIDE_ASK, SIDE_BID
from bot4d.venues.checksum import CRC_TABLE8, kraken_book_crc_fast
from bot4d.venues.scan import (
    DEC_OK, after_value, only_ws_left, parse_dec, parse_int, read_key, skip_value, skip_ws,
    string_span,
)

STOP_DONE = 0        # every frame processed
STOP_FALLBACK = 1    # frame f needs the Python handler
STOP_BOOK_ERR = 2    # frame f applied, the book kernel reported `value` (ERR_*): resync
STOP_CHECKSUM = 3    # frame f applied, checksum mismatch: resync
STOP_BATCH_FULL = 4  # no room for frame f's records: grow/drain `out` and call again

LIVE = 1
SYM_BYTES = 32
# params[i, P_*] columns shared with okx_scan
P_PSCALE, P_QSCALE, P_MAXP, P_MAXQ, P_SCALING, P_LAST_SEQ = 0, 1, 2, 3, 4, 4
N_PARAMS = 8


def make_params(instruments: list) -> np.ndarray:
    """The per-instrument parameter rows of ``instruments`` (ids index the rows)."""
    n = max((i.id for i in instruments), default=0) + 1
    p = np.zeros((n, N_PARAMS), np.int64)
    p[:, P_SCALING:P_SCALING + 4] = 1
    for i in instruments:
        p[i.id, :4] = (i.price_scale, i.qty_scale, i.max_price_units, i.max_qty_units)
    return p


class Symbols:
    """A venue connection's symbols for ``sym_lookup``: a handful per connection, so a linear
    scan over fixed-width rows (no hashing) is as fast as anything and trivially correct."""

    def __init__(self, symbols: dict[str, int]) -> None:
        n = max(len(symbols), 1)
        self.keys = np.zeros((n, SYM_BYTES), np.uint8)
        self.meta = np.full((n, 2), -1, np.int64)  # [row] = (length, instrument id)
        for row, (sym, iid) in enumerate(symbols.items()):
            b = sym.encode("ascii")
            if not 0 < len(b) <= SYM_BYTES:
                raise ValueError(f"symbol {sym!r} is not 1..{SYM_BYTES} ASCII bytes")
            self.keys[row, : len(b)] = np.frombuffer(b, np.uint8)
            self.meta[row] = (len(b), iid)


@kernel
def sym_lookup(buf, s, e, keys, meta):
    """Instrument id of the symbol ``buf[s:e]``, or -1."""
    ln = e - s
    for row in range(meta.shape[0]):
        if meta[row, 0] != ln:
            continue
        same = True
        for m in range(ln):
            if keys[row, m] != buf[s + m]:
                same = False
                break
        if same:
            return meta[row, 1]
    return -1


@kernel
def ascii_only(buf, s, e):
    """A skipped string must still be one strict JSON accepts: non-ASCII bytes could be invalid
    UTF-8, which the Python path refuses, so they go there."""
    for m in range(s, e):
        if buf[m] >= 128:
            return False
    return True


@kernel
def json_int_ok(buf, i, n):
    """False for an integer JSON would refuse although parse_int reads it: a leading zero
    ("0123", "-01"). The hot paths must never accept a frame the Python path calls malformed."""
    if i < n and buf[i] == 45:
        i += 1
    return not (i + 1 < n and buf[i] == 48 and 48 <= buf[i + 1] <= 57)


@helper
def _levels(buf, s, e, side, inst, ps, qs, mp, mq, rts, out, k):
    """``buf[s:e]`` is ``[["p","v","ts"(,...)],...]`` -> MD_LEVEL records from out[k].
    Returns (k, status): 0 ok, 1 malformed/bad number, 2 out is full."""
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
        if i >= e or buf[i] != 44:
            return k, 1
        i = skip_ws(buf, i + 1, e)
        t0, t1, i = string_span(buf, i, e)
        if i < 0:
            return k, 1
        i = skip_ws(buf, i, e)
        while i < e and buf[i] == 44:  # the "r" (republish) flag: a plain string, or Python decides
            i = skip_ws(buf, i + 1, e)
            r0, r1, i = string_span(buf, i, e)
            if i < 0 or not ascii_only(buf, r0, r1):
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
        ts, err = parse_dec(buf, t0, t1, 9)
        if err != DEC_OK:
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
        r.exch_ts_ns = ts
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
def _object(buf, s, e, inst, ps, qs, mp, mq, rts, out, k):
    """One ``{"a":[...],"b":[...],"c":"..."}`` payload. Returns (k, checksum or -1, status)
    with status 0 ok, 1 fallback, 2 out full."""
    ck = np.int64(-1)
    j = skip_ws(buf, s + 1, e)
    if j < e and buf[j] == 125:
        return k, ck, 0
    while True:
        ks, ke, vi = read_key(buf, j, e)
        if ks < 0 or ke - ks != 1:
            return k, ck, 1  # "as"/"bs" (a snapshot) and any unknown key: Python decides
        c = buf[ks]
        if c == 97 or c == 98:  # 'a' / 'b'
            if buf[vi] != 91:
                return k, ck, 1
            ve = skip_value(buf, vi, e)
            if ve < 0:
                return k, ck, 1
            k, st = _levels(buf, vi, ve, SIDE_ASK if c == 97 else SIDE_BID, inst, ps, qs, mp, mq,
                            rts, out, k)
            if st != 0:
                return k, ck, st
        elif c == 99:  # 'c'
            c0, c1, ve = string_span(buf, vi, e)
            if ve < 0 or c1 - c0 < 1 or c1 - c0 > 10:
                return k, ck, 1
            v = np.int64(0)
            for m in range(c0, c1):
                d = buf[m]
                if d < 48 or d > 57:
                    return k, ck, 1
                v = v * 10 + (d - 48)
            if v > 4294967295:
                return k, ck, 1
            ck = v
        else:
            return k, ck, 1
        j, end = after_value(buf, ve, e)
        if j < 0:
            return k, ck, 1
        if end == 1:
            return k, ck, 0


@kernel
def kraken_v1_run(buf, ends, f0, recv, keys, meta, params, states, levels, state, bstats, scratch,
                  out, k, tops, text, stats):
    """Process frames f0.. of the batch (frame f is buf[ends[f-1]:ends[f]]). Returns
    (frame index, STOP_*, k = records in out, value). ``stats`` += (frames ok, checksums).
    ``params[i]`` = (price scale, qty scale, max price, max qty, px div, px mul, qty div, qty mul);
    ``tops`` = 4 rows of top-of-book scratch. Few array arguments: each costs dispatch time."""
    pscale = params[:, P_PSCALE]
    qscale = params[:, P_QSCALE]
    maxp = params[:, P_MAXP]
    maxq = params[:, P_MAXQ]
    tb = tops[0]
    tbq = tops[1]
    ta = tops[2]
    taq = tops[3]
    nf = ends.shape[0]
    for f in range(f0, nf):
        s = ends[f - 1] if f > 0 else 0
        n = ends[f]
        kf = k
        i = skip_ws(buf, s, n)
        if i >= n or buf[i] != 91:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i + 1, n)
        if not json_int_ok(buf, i, n):
            return f, STOP_FALLBACK, k, 0
        _cid, i = parse_int(buf, i, n)
        if i < 0:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i, n)
        if i >= n or buf[i] != 44:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i + 1, n)
        o0s = o0e = o1s = o1e = -1
        nobj = 0
        while i < n and buf[i] == 123:
            e = skip_value(buf, i, n)
            if e < 0 or nobj == 2:
                return f, STOP_FALLBACK, k, 0
            if nobj == 0:
                o0s, o0e = i, e
            else:
                o1s, o1e = i, e
            nobj += 1
            i = skip_ws(buf, e, n)
            if i >= n or buf[i] != 44:
                return f, STOP_FALLBACK, k, 0
            i = skip_ws(buf, i + 1, n)
        cs, ce, i = string_span(buf, i, n)
        if i < 0 or nobj == 0:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i, n)
        if i >= n or buf[i] != 44:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i + 1, n)
        ps_, pe_, i = string_span(buf, i, n)
        if i < 0:
            return f, STOP_FALLBACK, k, 0
        i = skip_ws(buf, i, n)
        if i >= n or buf[i] != 93 or not only_ws_left(buf, i + 1, n):
            return f, STOP_FALLBACK, k, 0
        # channel "book-<depth>"
        if ce - cs < 6 or buf[cs] != 98 or buf[cs + 1] != 111 or buf[cs + 2] != 111 \
                or buf[cs + 3] != 107 or buf[cs + 4] != 45:
            return f, STOP_FALLBACK, k, 0
        depth = 0
        for m in range(cs + 5, ce):
            d = buf[m]
            if d < 48 or d > 57 or depth > 100000:
                return f, STOP_FALLBACK, k, 0
            depth = depth * 10 + (d - 48)
        inst = sym_lookup(buf, ps_, pe_, keys, meta)
        if inst < 0 or states[inst] != LIVE:
            return f, STOP_FALLBACK, k, 0
        ps = pscale[inst]
        qs = qscale[inst]
        mp = maxp[inst]
        mq = maxq[inst]
        rts = recv[f]
        k, ck, st = _object(buf, o0s, o0e, inst, ps, qs, mp, mq, rts, out, k)
        if st == 0 and nobj == 2:
            k, ck2, st = _object(buf, o1s, o1e, inst, ps, qs, mp, mq, rts, out, k)
            if ck2 >= 0:
                ck = ck2
        if st == 2:
            return f, STOP_BATCH_FULL, kf, 0
        if st != 0:
            return f, STOP_FALLBACK, kf, 0
        # room for the truncation deletes (at most one per level of the frame per side)
        if k + (k - kf) + 2 > out.shape[0]:
            return f, STOP_BATCH_FULL, kf, 0
        if k > kf:
            out[k - 1].flags = MD_FLAG_FRAME_END
            apply_batch(levels, state, bstats, scratch, out, kf, k)
            err = scratch[B_FIRST_ERROR]
            if err != 0 and err != ERR_CAPACITY:
                stats[2] = inst
                return f, STOP_BOOK_ERR, k, err
        # truncate to the subscribed depth: Kraken sends no delete for levels pushed out
        kt = k
        for side in range(2):
            ln = state[inst, S_BID_LEN] if side == 0 else state[inst, S_ASK_LEN]
            for m in range(ln - depth):
                if k >= out.shape[0]:
                    break  # cannot happen with the room reserved above; never write past out
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
        if ck >= 0:
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
    from bot4d.venues.kraken import KrakenV1

    t = InstrumentTable()
    t.add("KRAKEN", "XBT/USD", 1, 8)
    h = KrakenV1(t, make_books(1, 16))
    h.on_frame(b'[1,{"as":[["101.0","1.00000000","1.0"]],"bs":[["99.0","1.00000000","1.0"]]},'
               b'"book-10","XBT/USD"]')
    h.on_frames([b'[1,{"a":[["102.0","1.00000000","1.0"]],"c":"1"},"book-10","XBT/USD"]'])
