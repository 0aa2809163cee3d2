"""Coinbase market data: Advanced Trade (live use) and the legacy Exchange feed (recordings).

Advanced Trade (wss://advanced-trade-ws.coinbase.com,
https://docs.cdp.coinbase.com/advanced-trade/docs/ws-channels): subscribe to ``level2`` (messages
arrive on channel ``l2_data``: events of type ``snapshot``/``update`` with ``updates`` of
{side bid|offer, price_level, new_quantity (absolute size, "0" deletes)}) and ``market_trades``.
Every message of a connection carries ``sequence_num``, one more than the previous message's:
a jump means messages were lost, so every book of the connection is resynced; a smaller or
repeated number is an out-of-order/duplicate message and is dropped. Coinbase publishes no
checksum.

Legacy Exchange feed (wss://ws-feed.exchange.coinbase.com; the recording COINBASE.ws.28.0.head1200):
``snapshot`` (bids/asks [price, size]), ``l2update`` (changes [side buy|sell, price, size]) and
``match`` (trades; ``side`` is the maker's, so the taker is the other side; ``sequence`` per
product only grows). The legacy level2 channel has no sequence numbers at all.
"""
from __future__ import annotations

from typing import Any, Sequence

import orjson

from bot4d.instruments import Instrument, InstrumentTable
from bot4d.records import MD_TRADE, SIDE_ASK, SIDE_BID
from bot4d.venues.l2sync import BadNumber, L2Handler, rfc3339_ns, units
from bot4d.venues.numbers import NumberError
from bot4d.venues.sync import Reason, SyncState

ADVANCED_WS_URL = "wss://advanced-trade-ws.coinbase.com"
LEGACY_WS_URL = "wss://ws-feed.exchange.coinbase.com"
VENUE = "COINBASE"

_AT_SIDE = {"bid": SIDE_BID, "offer": SIDE_ASK}
_SEQ_LIMIT = 1 << 62  # sequence numbers and ids travel as int64 in the records
_LEGACY_SIDE = {"buy": SIDE_BID, "sell": SIDE_ASK}


def subscribe_advanced(product_ids: Sequence[str], channel: str = "level2",
                       jwt: str | None = None, op: str = "subscribe") -> bytes:
    msg: dict[str, Any] = {"type": op, "product_ids": list(product_ids), "channel": channel}
    if jwt is not None:
        msg["jwt"] = jwt
    return orjson.dumps(msg)


def subscribe_legacy(product_ids: Sequence[str], channels: Sequence[str] = ("level2", "matches"),
                     op: str = "subscribe") -> bytes:
    return orjson.dumps({"type": op, "product_ids": list(product_ids), "channels": list(channels)})


class _CoinbaseBase(L2Handler):
    venue = VENUE

    def _crossed(self, inst: Instrument) -> bool:
        bpx, _, nb, apx, _, na = self.top(inst, 1)
        return bool(nb and na and bpx[0] >= apx[0])

    def _trade_row(self, inst: Instrument, px_t: Any, sz_t: Any, taker: int, tid: int, ts: int,
                   recv: int) -> tuple | Reason:
        try:
            px = units(px_t, inst.price_scale)
        except NumberError:
            return Reason.BAD_PRICE
        try:
            q = units(sz_t, inst.qty_scale)
        except NumberError:
            return Reason.BAD_QTY
        if px <= 0 or px > inst.max_price_units:
            return Reason.BAD_PRICE
        if q <= 0 or q > inst.max_qty_units:
            return Reason.BAD_QTY
        return (0, MD_TRADE, taker, 0, inst.id, px, q, tid, ts, recv, 0, 0)


class CoinbaseAdvanced(_CoinbaseBase):
    """One Advanced Trade connection (sequence_num is per connection)."""

    def __init__(self, table: InstrumentTable, books: Any, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        self.last_seq = -1

    def on_frame(self, frame: bytes, recv_ts_ns: int = 0) -> Reason:
        if len(frame) > self.max_frame_bytes:
            return self.reject(Reason.OVERSIZE_FRAME)
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return self.reject(Reason.MALFORMED_JSON)
        if type(m) is not dict:
            return self.reject(Reason.MALFORMED_JSON)
        if m.get("type") == "error":
            return self.reject(Reason.UNKNOWN_MESSAGE)
        seq, ch, events = m.get("sequence_num"), m.get("channel"), m.get("events")
        if type(seq) is not int or type(ch) is not str or type(events) is not list \
                or not 0 <= seq < _SEQ_LIMIT:
            return self.reject(Reason.MALFORMED_JSON)
        if self.last_seq >= 0:
            if seq <= self.last_seq:
                return self.reject(Reason.OUT_OF_ORDER)
            if seq != self.last_seq + 1:
                # a lost message may have been any product's book update: resync them all
                self.last_seq = seq
                self.counters.bump(Reason.GAP)
                for inst in self._by_symbol.values():
                    if self.states[inst.id] != SyncState.SYNCING:
                        self.resync(inst, Reason.GAP)
                        self.counters.counts[Reason.GAP] -= 1  # counted once above
                return Reason.GAP
        self.last_seq = seq
        try:
            ts = rfc3339_ns(m.get("timestamp"))
        except NumberError:
            ts = 0
        if ch == "l2_data":
            status = Reason.OK
            for ev in events:
                r = self._l2(ev, ts, recv_ts_ns)
                if r != Reason.OK:
                    status = r
            return status
        if ch == "market_trades":
            return self._trades(events, recv_ts_ns)
        if ch in ("subscriptions", "heartbeats", "ticker", "ticker_batch", "status", "candles"):
            return self.reject(Reason.IGNORED)
        return self.reject(Reason.UNKNOWN_MESSAGE)

    def _l2(self, ev: Any, ts: int, recv: int) -> Reason:
        if type(ev) is not dict or ev.get("type") not in ("snapshot", "update"):
            return self.reject(Reason.MALFORMED_JSON)
        inst = self.instrument(ev.get("product_id"))
        if inst is None:
            return self.reject(Reason.UNKNOWN_SYMBOL)
        snapshot = ev["type"] == "snapshot"
        if not snapshot and self.states[inst.id] != SyncState.LIVE:
            return self.reject(Reason.NOT_SYNCED)
        ups = ev.get("updates")
        if type(ups) is not list:
            return self.resync(inst, Reason.MALFORMED_JSON)
        if snapshot:
            self.snapshot_rows(inst, self.last_seq, ts, recv)
        try:
            for u in ups:
                if type(u) is not dict or u.get("side") not in _AT_SIDE:
                    raise BadNumber(Reason.MALFORMED_JSON)
                self.level(inst, _AT_SIDE[u["side"]], u.get("price_level"), u.get("new_quantity"),
                           self.last_seq, ts, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        if snapshot:
            self.snapshot_end(inst, self.last_seq, ts, recv)
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        if snapshot:
            self.states[inst.id] = SyncState.LIVE
        if self._crossed(inst):
            return self.resync(inst, Reason.CROSSED_BOOK)
        return self.reject(Reason.OK)

    def _trades(self, events: list, recv: int) -> Reason:
        rows = []
        for ev in events:
            if type(ev) is not dict or type(ev.get("trades")) is not list:
                return self.reject(Reason.MALFORMED_JSON)
            for t in ev["trades"]:
                if type(t) is not dict:
                    return self.reject(Reason.MALFORMED_JSON)
                inst = self.instrument(t.get("product_id"))
                if inst is None:
                    return self.reject(Reason.UNKNOWN_SYMBOL)
                side, tid = t.get("side"), t.get("trade_id")
                if side not in ("BUY", "SELL") or type(tid) is not str or not tid.isdigit() \
                        or len(tid) > 18:
                    return self.reject(Reason.MALFORMED_JSON)
                try:
                    ts = rfc3339_ns(t.get("time"))
                except NumberError:
                    return self.reject(Reason.MALFORMED_JSON)
                # the side of a public trade is the maker's on Coinbase (as on the legacy feed):
                # the taker is the other side (also how NautilusTrader's adapter reads it)
                taker = SIDE_ASK if side == "BUY" else SIDE_BID
                row = self._trade_row(inst, t.get("price"), t.get("size"), taker, int(tid), ts, recv)
                if type(row) is not tuple:
                    return self.reject(row)
                rows.append(row)
        self._rows = rows
        self._commit(apply=False)
        return self.reject(Reason.OK)


class CoinbaseLegacy(_CoinbaseBase):
    """The legacy Exchange feed: level2 snapshot/l2update and matches."""

    def __init__(self, table: InstrumentTable, books: Any, **kw: Any) -> None:
        super().__init__(table, books, **kw)
        self.match_seq = [-1] * len(table)

    def on_frame(self, frame: bytes, recv_ts_ns: int = 0) -> Reason:
        if len(frame) > self.max_frame_bytes:
            return self.reject(Reason.OVERSIZE_FRAME)
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return self.reject(Reason.MALFORMED_JSON)
        if type(m) is not dict:
            return self.reject(Reason.MALFORMED_JSON)
        typ = m.get("type")
        if typ in ("subscriptions", "heartbeat", "ticker", "status"):
            return self.reject(Reason.IGNORED)
        if typ not in ("snapshot", "l2update", "match", "last_match"):
            return self.reject(Reason.UNKNOWN_MESSAGE)
        inst = self.instrument(m.get("product_id"))
        if inst is None:
            return self.reject(Reason.UNKNOWN_SYMBOL)
        if typ == "snapshot":
            return self._snapshot(inst, m, recv_ts_ns)
        if typ == "l2update":
            return self._update(inst, m, recv_ts_ns)
        return self._match(inst, m, recv_ts_ns)

    def _snapshot(self, inst: Instrument, m: dict, recv: int) -> Reason:
        bids, asks = m.get("bids"), m.get("asks")
        if type(bids) is not list or type(asks) is not list:
            return self.resync(inst, Reason.BAD_SNAPSHOT)
        self.snapshot_rows(inst, 0, 0, recv)
        try:
            for side, levels in ((SIDE_BID, bids), (SIDE_ASK, asks)):
                for e in levels:
                    if type(e) is not list or len(e) < 2:
                        raise BadNumber(Reason.MALFORMED_JSON)
                    self.level(inst, side, e[0], e[1], 0, 0, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        self.snapshot_end(inst, 0, 0, recv)
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        self.states[inst.id] = SyncState.LIVE
        if self._crossed(inst):
            return self.resync(inst, Reason.CROSSED_BOOK)
        return self.reject(Reason.OK)

    def _update(self, inst: Instrument, m: dict, recv: int) -> Reason:
        if self.states[inst.id] != SyncState.LIVE:
            return self.reject(Reason.NOT_SYNCED)
        changes = m.get("changes")
        if type(changes) is not list:
            return self.resync(inst, Reason.MALFORMED_JSON)
        try:
            ts = rfc3339_ns(m.get("time"))
        except NumberError:
            return self.resync(inst, Reason.MALFORMED_JSON)
        try:
            for c in changes:
                if type(c) is not list or len(c) < 3 or c[0] not in _LEGACY_SIDE:
                    raise BadNumber(Reason.MALFORMED_JSON)
                self.level(inst, _LEGACY_SIDE[c[0]], c[1], c[2], 0, ts, recv)
        except BadNumber as e:
            self._rows = []
            return self.resync(inst, e.reason)
        r = self._commit(apply=True)
        if r:
            return self.resync(inst, r)
        if self._crossed(inst):
            return self.resync(inst, Reason.CROSSED_BOOK)
        return self.reject(Reason.OK)

    def _match(self, inst: Instrument, m: dict, recv: int) -> Reason:
        seq, tid, side = m.get("sequence"), m.get("trade_id"), m.get("side")
        if type(seq) is not int or type(tid) is not int or side not in _LEGACY_SIDE \
                or not (0 <= seq < _SEQ_LIMIT and 0 <= tid < _SEQ_LIMIT):
            return self.reject(Reason.MALFORMED_JSON)
        if seq <= self.match_seq[inst.id]:
            return self.reject(Reason.OUT_OF_ORDER)
        try:
            ts = rfc3339_ns(m.get("time"))
        except NumberError:
            return self.reject(Reason.MALFORMED_JSON)
        taker = SIDE_ASK if side == "buy" else SIDE_BID  # "side" is the maker order's side
        row = self._trade_row(inst, m.get("price"), m.get("size"), taker, tid, ts, recv)
        if type(row) is not tuple:
            return self.reject(row)
        self.match_seq[inst.id] = seq
        self._rows = [row]
        self._commit(apply=False)
        return self.reject(Reason.OK)
