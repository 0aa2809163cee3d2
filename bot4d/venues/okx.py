"""OKX v5 public market data: ``books`` (snapshot + incremental, 400 levels) and ``trades``.

Sync rules (https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel):
* the first push is ``"action":"snapshot"``, then ``"update"``s; a level with size "0" is deleted;
* each push carries ``seqId`` and ``prevSeqId``: an update's prevSeqId equals the previous push's
  seqId; a push with no change has seqId == prevSeqId; after maintenance the sequence may reset
  (seqId < prevSeqId on one update) and chaining continues from there; a snapshot has prevSeqId -1;
* ``checksum`` is a *signed* CRC32 of the top 25 levels, bid and ask interleaved as
  "bidPx:bidSz:askPx:askSz:..." (the longer side continues alone). Since June 2026 OKX publishes
  0 there on production (https://www.okx.com/help/okx-order-book-channels-checksum-field-deprecation):
  0 means "not published" and the seqId/prevSeqId chain is the check. The recordings (2022)
  predate seqId and carry real checksums; both are handled, whichever the frame has.

Failure of either check (or a crossed book, or an unparseable level) clears the book, marks it
RESYNCING and queues the instrument for re-subscription (OKX answers with a new snapshot).
OKX sends the shortest decimal text ("30316", "0.06523858": checked on every level of the
recording), so the checksum is rebuilt from the int book without storing text.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson

from bot4d.instruments import Instrument, InstrumentTable
from bot4d.records import MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues.checksum import CRC_TABLE, okx_book_crc, okx_text_checksum
from bot4d.venues.l2sync import _BOOK_ERR_REASON, BadNumber, L2Handler, frame_batch, units
from bot4d.venues import okx_scan as ks
from bot4d.venues.kraken_scan import P_LAST_SEQ, Symbols, make_params
from bot4d.venues.numbers import NumberError
from bot4d.venues.sync import Reason, SyncState

WS_PUBLIC_URL = "wss://ws.okx.com:8443/ws/v5/public"
VENUE = "OKX"
CHECKSUM_DEPTH = 25
NO_SEQ = -(1 << 62)


def book_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """OKX's book checksum (signed 32-bit, as published) of best-first levels given as the
    strings OKX sent."""
    return okx_text_checksum(bids, asks, CHECKSUM_DEPTH)


def subscribe(inst_ids: Sequence[str], channels: Sequence[str] = ("books", "trades"),
              op: str = "subscribe") -> bytes:
    return orjson.dumps({"op": op, "args": [{"channel": c, "instId": i} for c in channels
                                            for i in inst_ids]})


def unsubscribe(inst_ids: Sequence[str], channels: Sequence[str] = ("books",)) -> bytes:
    return subscribe(inst_ids, channels, op="unsubscribe")


MAX_TS_MS = ((1 << 63) - 1) // 1_000_000  # ms timestamps become int64 ns in the records


def _int_text(v: Any) -> int | None:
    """OKX sends ids as strings ("7849") and seqIds as numbers: accept both, exactly."""
    if type(v) is int:
        return v
    if type(v) is str and v.isdigit() and len(v) <= 18:
        return int(v)
    return None


def _ts_ms(v: Any) -> int | None:
    t = _int_text(v)
    return t if t is not None and 0 <= t <= MAX_TS_MS else None


class OkxV5(L2Handler):
    venue = VENUE

    def __init__(self, table: InstrumentTable, books: Any, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        insts = list(self._by_symbol.values())
        self._sym = Symbols({i.symbol: i.id for i in insts})
        self._params = make_params(list(table))
        self._params[:, P_LAST_SEQ] = NO_SEQ
        self.last_seq = self._params[:, P_LAST_SEQ]  # a view: shared with the numba hot path
        self.checked = 0       # checksums verified
        self.seq_checked = 0   # seqId links verified
        self._stats = np.zeros(4, np.int64)  # ok, checksums, seq links, instrument of a stop
        self._crc_text = np.zeros(4096, np.uint8)
        self._tops = np.zeros((4, 25), np.int64)

    def on_frames(self, frames: list[bytes], recv_ts_ns: Any = None) -> None:
        """Process a batch of frames in order: book updates in one nogil numba call
        (``okx_scan``), everything else through ``on_frame``; same results as frame by frame."""
        if not frames:
            return
        buf, ends = frame_batch(frames)
        recv = self.recv_array(recv_ts_ns, len(frames))
        sym, b, st = self._sym, self.books, self._stats
        f, nf = 0, len(frames)
        while f < nf:
            st[:] = 0
            f, code, k, val = ks.okx_run(
                buf, ends, f, recv, sym.keys, sym.meta, self._params, self.states, b.levels,
                b.state, b.stats, b.scratch, self.out, self.n_out, self._tops, self._crc_text, st)
            self.n_out = int(k)
            self.counters.counts[Reason.OK] += st[0]
            self.checked += int(st[1])
            self.seq_checked += int(st[2])
            if code == ks.STOP_DONE:
                return
            if code == ks.STOP_BATCH_FULL:
                self._grow()
                continue
            if code == ks.STOP_FALLBACK:
                self.on_frame(frames[f], int(recv[f]))
            else:
                inst = self.table.by_id(int(st[3]))
                reason = Reason.CHECKSUM_MISMATCH if code == ks.STOP_CHECKSUM else _BOOK_ERR_REASON[val]
                self.resync(inst, reason)
            f += 1

    def on_frame(self, frame: bytes, recv_ts_ns: int = 0) -> Reason:
        if len(frame) > self.max_frame_bytes:
            return self.reject(Reason.OVERSIZE_FRAME)
        if frame == b"pong":
            return self.reject(Reason.IGNORED)
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return self.reject(Reason.MALFORMED_JSON)
        if type(m) is not dict:
            return self.reject(Reason.MALFORMED_JSON)
        if "event" in m:
            if m["event"] in ("subscribe", "unsubscribe", "login", "channel-conn-count"):
                return self.reject(Reason.IGNORED)
            return self.reject(Reason.UNKNOWN_MESSAGE)  # "error" and anything new
        arg, data = m.get("arg"), m.get("data")
        if type(arg) is not dict or type(data) is not list:
            return self.reject(Reason.MALFORMED_JSON)
        ch = arg.get("channel")
        if ch == "books":
            inst = self.instrument(arg.get("instId"))
            if inst is None:
                return self.reject(Reason.UNKNOWN_SYMBOL)
            action = m.get("action")
            if action not in ("snapshot", "update") or len(data) != 1 or type(data[0]) is not dict:
                return self.reject(Reason.MALFORMED_JSON)
            return self._book(inst, action == "snapshot", data[0], recv_ts_ns)
        if ch == "trades":
            return self._trades(data, recv_ts_ns)
        if ch in ("tickers", "books5", "bbo-tbt"):
            return self.reject(Reason.IGNORED)
        return self.reject(Reason.UNKNOWN_MESSAGE)

    def _book(self, inst: Instrument, snapshot: bool, d: dict, recv: int) -> Reason:
        i = inst.id
        if not snapshot and self.states[i] != SyncState.LIVE:
            return self.reject(Reason.NOT_SYNCED)
        asks, bids = d.get("asks", []), d.get("bids", [])
        ck = d.get("checksum", 0)
        ts = _ts_ms(d.get("ts", "0"))
        if type(asks) is not list or type(bids) is not list or type(ck) is not int or ts is None:
            return self.resync(inst, Reason.MALFORMED_JSON)
        seq = d.get("seqId")
        prev = d.get("prevSeqId")
        has_seq = seq is not None
        if has_seq:
            if type(seq) is not int or type(prev) is not int or not (
                    -(1 << 62) < seq < 1 << 62 and -(1 << 62) < prev < 1 << 62):
                return self.resync(inst, Reason.MALFORMED_JSON)
            if not snapshot:
                last = self.last_seq[i]
                if seq < prev:
                    pass  # sequence reset after maintenance: documented, chain restarts here
                elif prev != last:
                    if last != NO_SEQ and prev < last:
                        # an old or repeated push: applying it again would corrupt the book
                        return self.reject(Reason.OUT_OF_ORDER)
                    return self.resync(inst, Reason.GAP)
                self.seq_checked += 1
        vseq = seq if has_seq else 0
        ts_ns = ts * 1_000_000
        if snapshot:
            self.snapshot_rows(inst, vseq, ts_ns, recv)
        try:
            for side, levels in ((SIDE_ASK, asks), (SIDE_BID, bids)):
                for e in levels:
                    if type(e) is not list or len(e) < 2:
                        raise BadNumber(Reason.MALFORMED_JSON)
                    self.level(inst, side, e[0], e[1], vseq, ts_ns, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        if snapshot:
            self.snapshot_end(inst, vseq, ts_ns, recv)
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        if snapshot:
            self.states[i] = SyncState.LIVE
        if has_seq:
            self.last_seq[i] = seq
        bpx, bq, nb, apx, aq, na = self.top(inst, CHECKSUM_DEPTH)
        if nb and na and bpx[0] >= apx[0]:
            return self.resync(inst, Reason.CROSSED_BOOK)
        if ck != 0:  # 0: not published (production since 2026-06); the seqId chain checked it
            got = okx_book_crc(bpx, bq, nb, apx, aq, na, inst.price_scale, inst.qty_scale, CRC_TABLE)
            self.checked += 1
            if got != ck:
                return self.resync(inst, Reason.CHECKSUM_MISMATCH)
        return self.reject(Reason.OK)

    def _trades(self, data: list, recv: int) -> Reason:
        rows = []
        for t in data:
            if type(t) is not dict:
                return self.reject(Reason.MALFORMED_JSON)
            inst = self.instrument(t.get("instId"))
            if inst is None:
                return self.reject(Reason.UNKNOWN_SYMBOL)
            side, tid, ts = t.get("side"), _int_text(t.get("tradeId")), _ts_ms(t.get("ts"))
            if side not in ("buy", "sell") or tid is None or ts is None:
                return self.reject(Reason.MALFORMED_JSON)
            try:
                px = units(t.get("px"), inst.price_scale)
            except NumberError:
                return self.reject(Reason.BAD_PRICE)
            try:
                q = units(t.get("sz"), inst.qty_scale)
            except NumberError:
                return self.reject(Reason.BAD_QTY)
            if px <= 0 or px > inst.max_price_units:
                return self.reject(Reason.BAD_PRICE)
            if q <= 0 or q > inst.max_qty_units:
                return self.reject(Reason.BAD_QTY)
            s = SIDE_BID if side == "buy" else SIDE_ASK  # OKX: side of the taker
            rows.append((0, MD_TRADE, s, 0, inst.id, px, q, tid, ts * 1_000_000, recv, 0, 0))
        self._rows = rows
        self._commit(apply=False)
        return self.reject(Reason.OK)
