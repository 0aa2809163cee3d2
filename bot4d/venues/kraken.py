"""Kraken spot market data: WebSocket v2 (live use) and v1 (the format of the recordings).

Book sync on Kraken has no sequence numbers: the snapshot starts the book, every update carries
a CRC32 of the top 10 levels per side, and the client truncates its book to the subscribed depth
(Kraken sends no delete for levels that fall out of scope). A checksum that disagrees means the
book is wrong: it is cleared, marked RESYNCING and the symbol is queued for re-subscription.

Checksum recipe (v1: https://docs.kraken.com/api/docs/guides/spot-ws-book-v1, v2:
https://docs.kraken.com/api/docs/guides/spot-ws-book-v2): asks best first then bids best first,
top 10 each, each price and quantity with the dot and then the leading zeros removed,
concatenated, CRC32 as unsigned. The two versions apply the same recipe to different text and at
different times:

* v1 sends prices and volumes as JSON *strings* with a fixed number of decimals per pair
  ("0.000022900" on ADA/XBT, "2213.83000" on ETH/CHF: checked on every level of KRAKEN.ws.50.0),
  and sends the checksum (a string, "c") only on updates, never on the snapshot;
* v2 sends them as JSON *numbers* ("price": 45283.5, "qty": 0.10000000) whose text is the value
  at full precision, and sends the checksum (a number) on the snapshot too. A float parser turns
  0.10000000 into 0.1 and 45281.0 into 45281, and the checksum breaks: v2 frames are parsed with
  every number kept as its text.

``book_checksum`` follows v2, ``book_checksum_v1`` v1 (the same recipe: kept apart because the
text each one is given comes from a different wire format).

The maintained book holds int units; the checksum is rebuilt from them with the pair's wire
decimals, learnt from the snapshot's text (Kraken's decimals are fixed per pair), so the top of
the book is checked after every update without storing a string per level.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import orjson

from bot4d.instruments import Instrument, InstrumentTable
from bot4d.records import MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues.checksum import (
    CRC_TABLE,
    kraken_book_crc,
    kraken_scaling,
    kraken_text_checksum,
)
from bot4d.venues import kraken_scan as ks
from bot4d.venues import kraken_v2_scan as k2
from bot4d.venues.l2sync import (
    _BOOK_ERR_REASON, BadNumber, L2Handler, decimals_of, frame_batch, rfc3339_ns, units,
)
from bot4d.venues.numbers import NumberError
from bot4d.venues.sync import Reason, SyncState

WS_V1_URL = "wss://ws.kraken.com"
WS_V2_URL = "wss://ws.kraken.com/v2"
VENUE = "KRAKEN"
V2_DEPTHS = (10, 25, 100, 500, 1000)


def book_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """Kraken WebSocket v2 book checksum (unsigned CRC32, as published) of best-first levels
    given as the decimal text of the JSON numbers Kraken sent."""
    return kraken_text_checksum(bids, asks, 10)


def book_checksum_v1(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """Kraken WebSocket v1 book checksum (unsigned CRC32) of best-first levels given as the
    string fields Kraken sent (fixed decimals per pair)."""
    return kraken_text_checksum(bids, asks, 10)


# --- subscription messages ---------------------------------------------------------------------
def subscribe_v1(pairs: Sequence[str], name: str = "book", depth: int | None = 1000) -> bytes:
    sub: dict[str, Any] = {"name": name}
    if name == "book" and depth is not None:
        sub["depth"] = depth
    return orjson.dumps({"event": "subscribe", "pair": list(pairs), "subscription": sub})


def unsubscribe_v1(pairs: Sequence[str], name: str = "book", depth: int | None = 1000) -> bytes:
    sub: dict[str, Any] = {"name": name}
    if name == "book" and depth is not None:
        sub["depth"] = depth
    return orjson.dumps({"event": "unsubscribe", "pair": list(pairs), "subscription": sub})


def subscribe_v2(symbols: Sequence[str], channel: str = "book", depth: int | None = 10,
                 snapshot: bool = True, method: str = "subscribe") -> bytes:
    params: dict[str, Any] = {"channel": channel, "symbol": list(symbols)}
    if channel == "book":
        if depth not in V2_DEPTHS:
            raise ValueError(f"Kraken v2 book depth must be one of {V2_DEPTHS}, not {depth}")
        params["depth"] = depth
    params["snapshot"] = snapshot
    return orjson.dumps({"method": method, "params": params})


def unsubscribe_v2(symbols: Sequence[str], channel: str = "book", depth: int | None = 10) -> bytes:
    params: dict[str, Any] = {"channel": channel, "symbol": list(symbols)}
    if channel == "book":
        params["depth"] = depth
    return orjson.dumps({"method": "unsubscribe", "params": params})


class _KrakenBase(L2Handler):
    venue = VENUE

    def __init__(self, table: InstrumentTable, books: Any, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        self._params = ks.make_params(list(table))
        # checksum scaling per instrument, from the snapshot's text: (px_div, px_mul, q_div, q_mul)
        # (a view of the hot path's parameter rows, so both paths use the same numbers)
        self.scaling = self._params[:, ks.P_SCALING:ks.P_SCALING + 4]
        self.checked = 0  # checksums verified (for tests and metrics)

    def _learn_decimals(self, inst: Instrument, levels: list, get) -> None:
        pdec = qdec = -1
        for lv in levels[:1]:
            p, q = get(lv)
            if type(p) is str and type(q) is str:
                pdec, qdec = decimals_of(p), decimals_of(q)
        if pdec >= 0:
            self.scaling[inst.id, 0:2] = kraken_scaling(inst.price_scale, pdec)
            self.scaling[inst.id, 2:4] = kraken_scaling(inst.qty_scale, qdec)

    def _verify(self, inst: Instrument, expected: int, depth: int) -> Reason:
        """Truncate to depth, then compare Kraken's checksum with the book's top 10."""
        self.truncate(inst, depth)
        bpx, bq, nb, apx, aq, na = self.top(inst, 10)
        if nb and na and bpx[0] >= apx[0]:
            return self.resync(inst, Reason.CROSSED_BOOK)
        if expected >= 0:
            s = self.scaling[inst.id]
            got = kraken_book_crc(bpx, bq, nb, apx, aq, na, s[0], s[1], s[2], s[3], CRC_TABLE)
            self.checked += 1
            if got != expected:
                return self.resync(inst, Reason.CHECKSUM_MISMATCH)
        return self.reject(Reason.OK)


class KrakenV1(_KrakenBase):
    """Kraken WebSocket v1 public feed: ``book`` (snapshot ``as``/``bs``, updates ``a``/``b``
    with checksum ``c``) and ``trade``.

    ``on_frames`` is the batch hot path (``kraken_scan``: one nogil numba call for a run of book
    updates); ``on_frame`` handles one frame in Python and is the reference the batch path
    falls back to for everything else."""

    def __init__(self, table: InstrumentTable, books: Any, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        self._sym = ks.Symbols({i.symbol: i.id for i in self._by_symbol.values()})
        self._stats = np.zeros(3, np.int64)  # frames ok, checksums, instrument of a stop
        self._crc_text = np.zeros(1024, np.uint8)  # checksum text scratch of the hot path
        self._tops = np.zeros((4, 10), np.int64)

    def on_frames(self, frames: list[bytes], recv_ts_ns: Any = None) -> None:
        """Process a batch of frames in order; results are in ``counters``/``out`` as with
        ``on_frame`` (per-frame statuses are not returned: the batch path is for throughput)."""
        if not frames:
            return
        buf, ends = frame_batch(frames)
        recv = self.recv_array(recv_ts_ns, len(frames))
        sym, b, st = self._sym, self.books, self._stats
        f = 0
        nf = len(frames)
        while f < nf:
            st[:] = 0
            f, code, k, val = ks.kraken_v1_run(
                buf, ends, f, recv, sym.keys, sym.meta, self._params, self.states, b.levels,
                b.state, b.stats, b.scratch, self.out, self.n_out, self._tops, self._crc_text, st)
            self.n_out = int(k)
            self.counters.counts[Reason.OK] += st[0]
            self.checked += int(st[1])
            if code == ks.STOP_DONE:
                return
            if code == ks.STOP_BATCH_FULL:
                self._grow()
                continue
            fr = frames[f]
            if code == ks.STOP_FALLBACK:
                self.on_frame(fr, int(recv[f]))
            else:
                inst = self.table.by_id(int(st[2]))
                reason = Reason.CHECKSUM_MISMATCH if code == ks.STOP_CHECKSUM else _BOOK_ERR_REASON[val]
                self.resync(inst, reason)
            f += 1

    def on_frame(self, frame: bytes, recv_ts_ns: int = 0) -> Reason:
        if len(frame) > self.max_frame_bytes:
            return self.reject(Reason.OVERSIZE_FRAME)
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return self.reject(Reason.MALFORMED_JSON)
        if type(m) is dict:
            ev = m.get("event")
            if ev in ("heartbeat", "systemStatus", "subscriptionStatus", "pong"):
                return self.reject(Reason.IGNORED)
            return self.reject(Reason.UNKNOWN_MESSAGE)
        if type(m) is not list or len(m) < 4 or type(m[-2]) is not str:
            return self.reject(Reason.MALFORMED_JSON)
        chan = m[-2]
        if chan.startswith("book"):
            return self._book(m, chan, recv_ts_ns)
        if chan == "trade":
            return self._trades(m, recv_ts_ns)
        if chan in ("ticker", "spread") or chan.startswith("ohlc"):
            return self.reject(Reason.IGNORED)
        return self.reject(Reason.UNKNOWN_MESSAGE)

    def _book(self, m: list, chan: str, recv: int) -> Reason:
        inst = self.instrument(m[-1])
        if inst is None:
            return self.reject(Reason.UNKNOWN_SYMBOL)
        depth_txt = chan[5:]
        depth = int(depth_txt) if depth_txt.isdigit() else 10
        parts = m[1:-2]
        for d in parts:
            if type(d) is not dict:
                return self.reject(Reason.MALFORMED_JSON)
        first = parts[0]
        if "as" in first or "bs" in first:
            return self._snapshot(inst, first, recv)
        if self.states[inst.id] != SyncState.LIVE:
            return self.reject(Reason.NOT_SYNCED)
        expected = -1
        try:
            for d in parts:
                for key, lv in d.items():
                    if key == "a" or key == "b":
                        if type(lv) is not list:
                            return self.resync(inst, Reason.MALFORMED_JSON)
                        self._levels(inst, SIDE_ASK if key == "a" else SIDE_BID, lv, recv)
                    elif key == "c":
                        if type(lv) is not str or not lv.isdigit() or len(lv) > 10:
                            return self.resync(inst, Reason.MALFORMED_JSON)
                        expected = int(lv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        return self._verify(inst, expected, depth)

    def _levels(self, inst: Instrument, side: int, levels: list, recv: int) -> None:
        lvl = self.level
        for e in levels:
            if type(e) is not list or len(e) < 3:
                raise BadNumber(Reason.MALFORMED_JSON)
            try:
                ts = units(e[2], 9)
            except NumberError:
                raise BadNumber(Reason.MALFORMED_JSON) from None
            lvl(inst, side, e[0], e[1], 0, ts, recv)

    def _snapshot(self, inst: Instrument, d: dict, recv: int) -> Reason:
        asks, bids = d.get("as", []), d.get("bs", [])
        if type(asks) is not list or type(bids) is not list:
            return self.resync(inst, Reason.BAD_SNAPSHOT)
        self.snapshot_rows(inst, 0, 0, recv)
        try:
            self._levels(inst, SIDE_ASK, asks, recv)
            self._levels(inst, SIDE_BID, bids, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        self.snapshot_end(inst, 0, 0, recv)
        self._learn_decimals(inst, asks or bids, lambda lv: (lv[0], lv[1]))
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        self.states[inst.id] = SyncState.LIVE
        bpx, _, nb, apx, _, na = self.top(inst, 1)
        if nb and na and bpx[0] >= apx[0]:
            return self.resync(inst, Reason.CROSSED_BOOK)
        return self.reject(Reason.OK)

    def _trades(self, m: list, recv: int) -> Reason:
        inst = self.instrument(m[-1])
        if inst is None:
            return self.reject(Reason.UNKNOWN_SYMBOL)
        trades = m[1]
        if type(trades) is not list:
            return self.reject(Reason.MALFORMED_JSON)
        rows = []
        for t in trades:
            if type(t) is not list or len(t) < 4 or t[3] not in ("b", "s"):
                return self.reject(Reason.MALFORMED_JSON)
            try:
                px = units(t[0], inst.price_scale)
            except NumberError:
                return self.reject(Reason.BAD_PRICE)
            try:
                q = units(t[1], inst.qty_scale)
                ts = units(t[2], 9)
            except NumberError:
                return self.reject(Reason.BAD_QTY)
            if px <= 0 or px > inst.max_price_units:
                return self.reject(Reason.BAD_PRICE)
            if q <= 0 or q > inst.max_qty_units:
                return self.reject(Reason.BAD_QTY)
            side = SIDE_BID if t[3] == "b" else SIDE_ASK  # side of the taker
            rows.append((0, MD_TRADE, side, 0, inst.id, px, q, 0, ts, recv, 0, 0))
        self._rows = rows
        self._commit(apply=False)
        return self.reject(Reason.OK)


def _keep_text(text: str) -> str:
    return text


class KrakenV2(_KrakenBase):
    """Kraken WebSocket v2 public feed: ``book`` (snapshot and updates, each with a checksum)
    and ``trade``. ``depth`` is the subscribed book depth (v2 frames do not repeat it)."""

    def __init__(self, table: InstrumentTable, books: Any, depth: int = 10, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        self.depth = depth
        self._sym = ks.Symbols({i.symbol: i.id for i in self._by_symbol.values()})
        self._stats = np.zeros(3, np.int64)  # frames ok, checksums, instrument of a stop
        self._crc_text = np.zeros(1024, np.uint8)
        self._tops = np.zeros((4, 10), np.int64)

    def on_frames(self, frames: list[bytes], recv_ts_ns: Any = None) -> None:
        """A batch of frames in order: book updates in one nogil numba call (``kraken_v2_scan``,
        numbers read as their text from the bytes), everything else through ``on_frame``."""
        if not frames:
            return
        buf, ends = frame_batch(frames)
        recv = self.recv_array(recv_ts_ns, len(frames))
        sym, b, st = self._sym, self.books, self._stats
        f, nf = 0, len(frames)
        while f < nf:
            st[:] = 0
            f, code, k, val = k2.kraken_v2_run(
                buf, ends, f, recv, sym.keys, sym.meta, self._params, self.states, self.depth,
                b.levels, b.state, b.stats, b.scratch, self.out, self.n_out, self._tops,
                self._crc_text, st)
            self.n_out = int(k)
            self.counters.counts[Reason.OK] += st[0]
            self.checked += int(st[1])
            if code == ks.STOP_DONE:
                return
            if code == ks.STOP_BATCH_FULL:
                self._grow()
                continue
            if code == ks.STOP_FALLBACK:
                self.on_frame(frames[f], int(recv[f]))
            else:
                inst = self.table.by_id(int(st[2]))
                reason = Reason.CHECKSUM_MISMATCH if code == ks.STOP_CHECKSUM else _BOOK_ERR_REASON[val]
                self.resync(inst, reason)
            f += 1

    def parse(self, frame: bytes) -> Any:
        # every JSON number is kept as its text: Kraken's checksum is over that text
        return json.loads(frame, parse_float=_keep_text, parse_int=_keep_text)

    def on_frame(self, frame: bytes, recv_ts_ns: int = 0) -> Reason:
        if len(frame) > self.max_frame_bytes:
            return self.reject(Reason.OVERSIZE_FRAME)
        try:
            m = self.parse(frame)
        except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
            return self.reject(Reason.MALFORMED_JSON)
        if type(m) is not dict:
            return self.reject(Reason.MALFORMED_JSON)
        ch = m.get("channel")
        if ch == "book":
            return self._book(m, recv_ts_ns)
        if ch == "trade":
            return self._trades(m, recv_ts_ns)
        if ch in ("heartbeat", "status", "ticker", "instrument") or "method" in m:
            return self.reject(Reason.IGNORED)
        return self.reject(Reason.UNKNOWN_MESSAGE)

    def _book(self, m: dict, recv: int) -> Reason:
        typ, data = m.get("type"), m.get("data")
        if typ not in ("snapshot", "update") or type(data) is not list:
            return self.reject(Reason.MALFORMED_JSON)
        status = Reason.OK
        for d in data:
            if type(d) is not dict:
                return self.reject(Reason.MALFORMED_JSON)
            r = self._book_one(d, typ == "snapshot", recv)
            if r != Reason.OK:
                status = r
        return status

    def _book_one(self, d: dict, snapshot: bool, recv: int) -> Reason:
        inst = self.instrument(d.get("symbol"))
        if inst is None:
            return self.reject(Reason.UNKNOWN_SYMBOL)
        if not snapshot and self.states[inst.id] != SyncState.LIVE:
            return self.reject(Reason.NOT_SYNCED)
        bids, asks, ck = d.get("bids", []), d.get("asks", []), d.get("checksum")
        if type(bids) is not list or type(asks) is not list:
            return self.resync(inst, Reason.MALFORMED_JSON)
        if type(ck) is not str or not ck.isdigit() or len(ck) > 10:
            return self.resync(inst, Reason.MALFORMED_JSON)
        ts = 0
        if "timestamp" in d:
            try:
                ts = rfc3339_ns(d["timestamp"])
            except NumberError:
                return self.resync(inst, Reason.MALFORMED_JSON)
        if snapshot:
            self.snapshot_rows(inst, 0, ts, recv)
        try:
            for side, levels in ((SIDE_BID, bids), (SIDE_ASK, asks)):
                for e in levels:
                    if type(e) is not dict:
                        raise BadNumber(Reason.MALFORMED_JSON)
                    self.level(inst, side, e.get("price"), e.get("qty"), 0, ts, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        if snapshot:
            self.snapshot_end(inst, 0, ts, recv)
            self._learn_decimals(inst, bids or asks, lambda lv: (lv.get("price"), lv.get("qty")))
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        if snapshot:
            self.states[inst.id] = SyncState.LIVE
        return self._verify(inst, int(ck), self.depth)

    def _trades(self, m: dict, recv: int) -> Reason:
        data = m.get("data")
        if type(data) is not list:
            return self.reject(Reason.MALFORMED_JSON)
        rows = []
        for t in data:
            if type(t) is not dict:
                return self.reject(Reason.MALFORMED_JSON)
            inst = self.instrument(t.get("symbol"))
            if inst is None:
                return self.reject(Reason.UNKNOWN_SYMBOL)
            side = t.get("side")
            tid = t.get("trade_id")
            if side not in ("buy", "sell") or type(tid) is not str or not tid.isdigit() \
                    or len(tid) > 18:
                return self.reject(Reason.MALFORMED_JSON)
            try:
                px = units(t.get("price"), inst.price_scale)
            except NumberError:
                return self.reject(Reason.BAD_PRICE)
            try:
                q = units(t.get("qty"), inst.qty_scale)
            except NumberError:
                return self.reject(Reason.BAD_QTY)
            try:
                ts = rfc3339_ns(t.get("timestamp"))
            except NumberError:
                return self.reject(Reason.MALFORMED_JSON)
            if px <= 0 or px > inst.max_price_units:
                return self.reject(Reason.BAD_PRICE)
            if q <= 0 or q > inst.max_qty_units:
                return self.reject(Reason.BAD_QTY)
            s = SIDE_BID if side == "buy" else SIDE_ASK
            rows.append((0, MD_TRADE, s, 0, inst.id, px, q, int(tid), ts, recv, 0, 0))
        self._rows = rows
        self._commit(apply=False)
        return self.reject(Reason.OK)
