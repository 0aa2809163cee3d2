"""A loopback market-data server for tests and benchmarks: a venue on 127.0.0.1 that can misbehave.

It serves a *market* — a script of frames in a venue's own wire format (recorded traffic or
generated) plus that venue's book as the venue itself knows it — over a picows WebSocket server,
and the venue's REST depth snapshot over plain HTTP on the same port (picows answers non-upgrade
GETs with an ordinary response). The market moves forward as frames are sent and its book is the
truth a client must end up with.

Faults are injected on command (``inject``), each at the next frame or at a given script index:

* ``DROP``       abort the TCP connection (no close handshake);
* ``VANISH``     write the first bytes of a frame, then abort: the peer disappears mid-message;
* ``SKIP``       the venue applies a book update but the client never gets it (a sequence gap);
* ``CORRUPT``    send an update with a wrong checksum (venues that publish one);
* ``MALFORMED``  send the update cut in half (invalid JSON); the venue applied it;
* ``STALL``      stop sending on this connection, keep the socket open;
* ``OVERSIZE``   send a 10 MB frame;
* ``FRAGMENTED`` send an update as a fragmented message (legal WebSocket; must be reassembled);
* ``OVERSIZE_FRAGMENTS`` a 2 MB message in 64 KiB fragments: no single frame is too big, the
  message is.

One client connection is served at a time (a new one replaces the old, like a venue that sees a
reconnect): it gets the stream from the market's current position, so everything missed while
disconnected must be recovered by the client's resync.
"""
from __future__ import annotations

import asyncio
import enum
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

import orjson
from picows import (WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest,
                    WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server)

OVERSIZE_BYTES = 10 * 1024 * 1024


class Fault(enum.Enum):
    DROP = "drop"
    VANISH = "vanish"
    SKIP = "skip"
    CORRUPT = "corrupt"
    MALFORMED = "malformed"
    STALL = "stall"
    OVERSIZE = "oversize"
    FRAGMENTED = "fragmented"            # the update split over three WebSocket frames
    OVERSIZE_FRAGMENTS = "oversize_fragments"  # 2 MB in 64 KiB fragments, each one small


# --- Binance: the venue's book from its own snapshot and diff events ------------------------------
class BinanceMarket:
    """The Binance spot depth model behind the server: per symbol, levels as the venue's own
    decimal text and the last update id. Diff events older than the book are skipped exactly as
    Binance's sync rules say, so a recorded snapshot plus the recorded stream gives the venue's
    book at every point of the stream."""

    ws_path = "/stream"

    def __init__(self, frames: list[bytes], snapshots: dict[str, bytes], *,
                 futures: bool = False) -> None:
        self.frames = frames
        # USD-M futures chain events on ``pu`` (ids are not contiguous) and bridge a snapshot
        # with ``U <= lastUpdateId <= u``: see bot4d.venues.binance_futures
        self.futures = futures
        self.pos = 0  # script frames the venue has published (advance() calls)
        self._started: set[str] = set()
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.last_u: dict[str, int] = {}
        for sym, body in snapshots.items():
            m = orjson.loads(body)
            self.books[sym] = ({p: q for p, q in m["bids"]}, {p: q for p, q in m["asks"]})
            self.last_u[sym] = int(m["lastUpdateId"])
        self.applied = 0

    @staticmethod
    def _event(frame: bytes) -> dict | None:
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None
        if type(m) is dict and type(m.get("data")) is dict:
            m = m["data"]
        return m if type(m) is dict and m.get("e") == "depthUpdate" else None

    def is_book_update(self, frame: bytes) -> bool:
        return self._event(frame) is not None

    def advance(self, frame: bytes) -> None:
        """The venue published ``frame``: update its book."""
        self.pos += 1
        ev = self._event(frame)
        if ev is None:
            return
        sym = ev["s"]
        if sym not in self.books:
            return
        lu = self.last_u[sym]
        if self.futures:
            if ev["u"] < lu or (sym not in self._started and ev["U"] > lu):
                if sym not in self._started and ev["U"] > lu:
                    raise AssertionError(f"{sym}: script has a gap at U={ev['U']} after {lu}")
                return  # older than the book
            if sym in self._started and ev["pu"] != lu:
                raise AssertionError(f"{sym}: script breaks the pu chain at {ev['U']}")
            self._started.add(sym)
        else:
            if ev["u"] <= lu:
                return  # older than the book
            if ev["U"] > lu + 1:
                raise AssertionError(f"{sym}: script has a gap at U={ev['U']} after {lu}")
        for side, key in ((0, "b"), (1, "a")):
            lv = self.books[sym][side]
            for p, q in ev[key]:
                if _is_zero(q):
                    lv.pop(p, None)
                else:
                    lv[p] = q
        self.last_u[sym] = ev["u"]
        self.applied += 1

    def snapshot(self, symbol: str, limit: int = 1000) -> bytes | None:
        if symbol not in self.books:
            return None
        bids, asks = self.books[symbol]
        b = sorted(bids.items(), key=lambda kv: _dec_key(kv[0]), reverse=True)[:limit]
        a = sorted(asks.items(), key=lambda kv: _dec_key(kv[0]))[:limit]
        lid = self.last_u[symbol]
        if self.futures and symbol in self._started:
            # a futures snapshot id falls inside the next event's [U, u]: the client drops what
            # this book already holds (u < id) and applies that next event whole on top of it
            lid = self._next_event_U(symbol, lid + 1)
        return orjson.dumps({"lastUpdateId": lid, "bids": [list(x) for x in b],
                             "asks": [list(x) for x in a]})

    def _next_event_U(self, symbol: str, default: int) -> int:
        for f in self.frames[self.pos:]:
            ev = self._event(f)
            if ev is not None and ev["s"] == symbol:
                return int(ev["U"])
        return default

    def http(self, path: str) -> tuple[int, bytes]:
        u = urlsplit(path)
        if u.path not in ("/api/v3/depth", "/fapi/v1/depth"):
            return 404, b'{"code":-1,"msg":"not found"}'
        q = parse_qs(u.query)
        sym = q.get("symbol", [""])[0]
        limit = int(q.get("limit", ["1000"])[0])
        body = self.snapshot(sym, limit)
        if body is None:
            return 400, b'{"code":-1121,"msg":"Invalid symbol."}'
        return 200, body

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        """Replies to a client message, and whether the stream may start."""
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"code":2,"msg":"Invalid JSON"}'], False
        if type(m) is dict and m.get("method") == "SUBSCRIBE":
            return [orjson.dumps({"result": None, "id": m.get("id")})], True
        return [], False

    def resync_frames(self) -> list[bytes]:
        return []  # Binance resyncs over REST

    def corrupt(self, frame: bytes) -> bytes:
        return frame  # no checksum on Binance: nothing to corrupt

    def book_units(self, symbol: str, price_scale: int, qty_scale: int):
        """(bids best first, asks best first) in integer units, for comparison with a client."""
        return _units_book(self.books[symbol], price_scale, qty_scale)


def _is_zero(q: str) -> bool:
    return not q.replace(".", "").strip("0")


def _dec_key(text: str):
    from decimal import Decimal

    return Decimal(text)


def _units_book(book, ps: int, qs: int):
    from bot4d.venues.numbers import parse_units

    bids = sorted(((parse_units(p, ps), parse_units(q, qs)) for p, q in book[0].items()), reverse=True)
    asks = sorted((parse_units(p, ps), parse_units(q, qs)) for p, q in book[1].items())
    return bids, asks


def generate_binance(symbols: Iterable[str], n_frames: int, seed: int = 1, *,
                     levels_per_side: int = 50, max_changes: int = 6,
                     first_id: int = 1000) -> tuple[list[bytes], dict[str, bytes]]:
    """A synthetic Binance combined stream: (frames, REST snapshots at the start).

    Bids stay below and asks above a fixed mid so the book never crosses; each event changes a few
    levels (about a fifth of them deletions) and chains ``U == previous u + 1`` per symbol.
    """
    rng = random.Random(seed)
    syms = list(symbols)
    mid = {s: 100_000 + 1000 * k for k, s in enumerate(syms)}  # in ticks of 1e-4
    last = {s: first_id for s in syms}
    snaps: dict[str, bytes] = {}

    def px(t: int) -> str:
        return f"{t // 10000}.{t % 10000:04d}0000"

    def qty() -> str:
        return f"{rng.randint(1, 5000)}.{rng.randint(0, 99999999):08d}"

    for s in syms:
        bids = [[px(mid[s] - i), qty()] for i in range(1, levels_per_side + 1)]
        asks = [[px(mid[s] + i), qty()] for i in range(1, levels_per_side + 1)]
        snaps[s] = orjson.dumps({"lastUpdateId": last[s], "bids": bids, "asks": asks})
    frames = []
    E = 1_700_000_000_000
    for n in range(n_frames):
        s = syms[rng.randrange(len(syms))]
        k = rng.randint(1, max_changes)
        b, a = [], []
        for _ in range(k):
            side = rng.random() < 0.5
            t = mid[s] - rng.randint(1, levels_per_side) if side else mid[s] + rng.randint(1, levels_per_side)
            lv = [px(t), "0.00000000" if rng.random() < 0.2 else qty()]
            (b if side else a).append(lv)
        U = last[s] + 1
        u = U + rng.randint(0, 3)
        last[s] = u
        E += 1
        frames.append(orjson.dumps({"stream": f"{s.lower()}@depth@100ms", "data": {
            "e": "depthUpdate", "E": E, "s": s, "U": U, "u": u, "b": b, "a": a}}))
    return frames, snaps


# --- Kraken v1: the venue's book from its WebSocket snapshots and updates -----------------------
class KrakenV1Market:
    """The Kraken WebSocket v1 ``book`` model behind the server.

    Per pair: levels as the venue's own text (price -> [qty, timestamp]), truncated to the
    subscribed depth after every message exactly as Kraken's book guide tells clients to do
    (Kraken sends no delete for levels falling out of scope). Resync on Kraken is a new
    subscription: the server answers it with a snapshot of this model, in the stream, at the
    point where it was asked, so the recorded checksums of the updates that follow still hold.
    """

    ws_path = "/"

    def __init__(self, frames: list[bytes], depth: int = 1000) -> None:
        self.frames = frames
        self.depth = depth
        self.books: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {}
        self.channel: dict[str, int] = {}
        self.applied = 0
        self.pings = 0

    @staticmethod
    def _msg(frame: bytes):
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None
        if type(m) is list and len(m) >= 4 and type(m[-2]) is str and m[-2].startswith("book"):
            return m
        return None

    def is_book_update(self, frame: bytes) -> bool:
        m = self._msg(frame)
        return m is not None and "as" not in m[1] and "bs" not in m[1]

    def advance(self, frame: bytes) -> None:
        m = self._msg(frame)
        if m is None:
            return
        pair = m[-1]
        self.channel[pair] = m[0]
        if pair not in self.books:
            self.books[pair] = ({}, {})
        bids, asks = self.books[pair]
        for d in m[1:-2]:
            for key, lv in d.items():
                if key == "c":
                    continue
                side = asks if key[0] == "a" else bids
                if key in ("as", "bs"):
                    side.clear()
                for e in lv:
                    if _is_zero(e[1]):
                        side.pop(e[0], None)
                    else:
                        side[e[0]] = [e[1], e[2]]
        for side, best_high in ((bids, True), (asks, False)):
            if len(side) > self.depth:
                keep = sorted(side, key=_dec_key, reverse=best_high)[: self.depth]
                for p in set(side) - set(keep):
                    del side[p]
        self.applied += 1

    def snapshot_frame(self, pair: str) -> bytes:
        bids, asks = self.books[pair]
        a = sorted(asks.items(), key=lambda kv: _dec_key(kv[0]))
        b = sorted(bids.items(), key=lambda kv: _dec_key(kv[0]), reverse=True)
        return orjson.dumps([self.channel[pair],
                             {"as": [[p, q, t] for p, (q, t) in a],
                              "bs": [[p, q, t] for p, (q, t) in b]},
                             f"book-{self.depth}", pair])

    def http(self, path: str) -> tuple[int, bytes]:
        return 404, b'{"error":["EGeneral:Unknown method"]}'

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"event":"error","errorMessage":"Malformed request"}'], False
        if type(m) is not dict:
            return [], False
        ev = m.get("event")
        if ev == "ping":
            self.pings += 1
            return [orjson.dumps({"event": "pong", "reqid": m.get("reqid")})], False
        if ev not in ("subscribe", "unsubscribe"):
            return [], False
        out = []
        for pair in m.get("pair", []):
            out.append(orjson.dumps({"channelName": f"book-{self.depth}", "event":
                                     "subscriptionStatus", "pair": pair, "status":
                                     "subscribed" if ev == "subscribe" else "unsubscribed"}))
            if ev == "subscribe" and pair in self.books:
                out.append(self.snapshot_frame(pair))
        return out, ev == "subscribe"

    def resync_frames(self) -> list[bytes]:
        return []  # snapshots go out as replies to the subscription

    def corrupt(self, frame: bytes) -> bytes:
        m = orjson.loads(frame)
        for d in m[1:-2]:
            if "c" in d:
                d["c"] = str((int(d["c"]) + 1) & 0xFFFFFFFF)
        return orjson.dumps(m)

    def book_units(self, pair: str, price_scale: int, qty_scale: int):
        bids, asks = self.books[pair]
        return _units_book(({p: v[0] for p, v in bids.items()}, {p: v[0] for p, v in asks.items()}),
                           price_scale, qty_scale)


# --- Kraken v2: generated book traffic with the venue's checksums ---------------------------------
def _v2_text(frame: bytes):
    import json

    keep = lambda t: t  # noqa: E731  (every JSON number stays its own text: the checksum needs it)
    return json.loads(frame, parse_float=keep, parse_int=keep)


class KrakenV2Market:
    """Kraken WebSocket v2 ``book`` model: levels as the text of the JSON numbers Kraken sent,
    truncated to the subscribed depth; resubscription is answered with a snapshot (with its
    checksum, which v2 sends on snapshots too) at that point of the stream."""

    ws_path = "/v2"

    def __init__(self, frames: list[bytes], depth: int = 10) -> None:
        self.frames = frames
        self.depth = depth
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.pings = 0

    @staticmethod
    def _msg(frame: bytes):
        try:
            m = _v2_text(frame)
        except ValueError:
            return None
        if type(m) is dict and m.get("channel") == "book" and m.get("type") in ("snapshot", "update"):
            return m
        return None

    def is_book_update(self, frame: bytes) -> bool:
        m = self._msg(frame)
        return m is not None and m["type"] == "update"

    def apply_levels(self, sym: str, bids: list, asks: list, snapshot: bool) -> None:
        if snapshot or sym not in self.books:
            self.books[sym] = ({}, {})
        b, a = self.books[sym]
        for side, levels in ((b, bids), (a, asks)):
            for e in levels:
                if _is_zero(e["qty"]):
                    side.pop(e["price"], None)
                else:
                    side[e["price"]] = e["qty"]
        for side, high in ((b, True), (a, False)):
            if len(side) > self.depth:
                keep = set(sorted(side, key=_dec_key, reverse=high)[: self.depth])
                for p in [p for p in side if p not in keep]:
                    del side[p]

    def advance(self, frame: bytes) -> None:
        m = self._msg(frame)
        if m is None:
            return
        for d in m["data"]:
            self.apply_levels(d["symbol"], d.get("bids", []), d.get("asks", []), m["type"] == "snapshot")

    def best_first(self, sym: str):
        b, a = self.books[sym]
        return (sorted(b.items(), key=lambda kv: _dec_key(kv[0]), reverse=True),
                sorted(a.items(), key=lambda kv: _dec_key(kv[0])))

    def checksum(self, sym: str) -> int:
        from bot4d.venues.kraken import book_checksum

        bids, asks = self.best_first(sym)
        return book_checksum(bids, asks)

    def snapshot_frame(self, sym: str) -> bytes:
        bids, asks = self.best_first(sym)
        lv = lambda xs: ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in xs)  # noqa: E731
        return (f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{sym}","bids":[{lv(bids)}],'
                f'"asks":[{lv(asks)}],"checksum":{self.checksum(sym)}}}]}}').encode()

    def http(self, path: str) -> tuple[int, bytes]:
        return 404, b'{"error":["EGeneral:Unknown method"]}'

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"error":"invalid json","success":false}'], False
        if type(m) is not dict:
            return [], False
        method = m.get("method")
        if method == "ping":
            self.pings += 1
            return [orjson.dumps({"method": "pong", "req_id": m.get("req_id")})], False
        if method not in ("subscribe", "unsubscribe"):
            return [], False
        params = m.get("params") or {}
        out = []
        for sym in params.get("symbol", []):
            out.append(orjson.dumps({"method": method, "result": {"channel": "book", "symbol": sym},
                                     "success": True}))
            if method == "subscribe" and sym in self.books:
                out.append(self.snapshot_frame(sym))
        return out, method == "subscribe"

    def resync_frames(self) -> list[bytes]:
        return []

    def corrupt(self, frame: bytes) -> bytes:
        import re

        return re.sub(rb'"checksum":(\d+)', lambda mm: b'"checksum":%d' % ((int(mm.group(1)) + 1) & 0xFFFFFFFF),
                      frame, count=1)

    def book_units(self, sym: str, price_scale: int, qty_scale: int):
        return _units_book(self.books[sym], price_scale, qty_scale)


def generate_kraken_v2(symbols: Iterable[str], n_frames: int, seed: int = 1, *,
                       depth: int = 10) -> list[bytes]:
    """Kraken v2 book traffic: a snapshot per symbol, then updates, each with the checksum of
    the venue's book (top 10 after truncation to ``depth``), computed by Kraken's recipe.
    Prices have 1 decimal, quantities 8, as JSON numbers."""
    rng = random.Random(seed)
    syms = list(symbols)
    model = KrakenV2Market([], depth)
    mid = {s: 400_000 + 10_000 * k for k, s in enumerate(syms)}  # tenths
    px = lambda t: f"{t // 10}.{t % 10}"  # noqa: E731
    qty = lambda: f"{rng.randint(0, 50)}.{rng.randint(1, 99999999):08d}"  # noqa: E731
    frames = []
    for s in syms:
        bids = [{"price": px(mid[s] - i), "qty": qty()} for i in range(1, depth + 1)]
        asks = [{"price": px(mid[s] + i), "qty": qty()} for i in range(1, depth + 1)]
        model.apply_levels(s, bids, asks, True)
        frames.append(model.snapshot_frame(s))
    for _ in range(n_frames):
        s = syms[rng.randrange(len(syms))]
        ups: dict[str, list] = {"bids": [], "asks": []}
        for _ in range(rng.randint(1, 4)):
            is_bid = rng.random() < 0.5
            t = mid[s] - rng.randint(1, 2 * depth) if is_bid else mid[s] + rng.randint(1, 2 * depth)
            q = "0.00000000" if rng.random() < 0.25 else qty()
            ups["bids" if is_bid else "asks"].append({"price": px(t), "qty": q})
        model.apply_levels(s, ups["bids"], ups["asks"], False)
        lv = lambda xs: ",".join(f'{{"price":{e["price"]},"qty":{e["qty"]}}}' for e in xs)  # noqa: E731
        frames.append((f'{{"channel":"book","type":"update","data":[{{"symbol":"{s}",'
                       f'"bids":[{lv(ups["bids"])}],"asks":[{lv(ups["asks"])}],'
                       f'"checksum":{model.checksum(s)},'
                       f'"timestamp":"2026-11-21T20:00:00.000000Z"}}]}}').encode())
    return frames


# --- OKX v5: the venue's book from its ``books`` snapshots and updates --------------------------
class OkxMarket:
    """The OKX v5 ``books`` model behind the server: levels as OKX's own text (price -> the
    rest of the level entry), no truncation (OKX sends deletes). Resync on OKX is a new
    ``books`` subscription, answered here with a snapshot of this model carrying its real
    (signed CRC32) checksum, computed by the venue module's text recipe."""

    ws_path = "/ws/v5/public"

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.books: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {}
        self.pings = 0

    @staticmethod
    def _msg(frame: bytes):
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None
        if type(m) is dict and type(m.get("arg")) is dict and m["arg"].get("channel") == "books" \
                and m.get("action") in ("snapshot", "update"):
            return m
        return None

    def is_book_update(self, frame: bytes) -> bool:
        m = self._msg(frame)
        return m is not None and m["action"] == "update"

    def advance(self, frame: bytes) -> None:
        m = self._msg(frame)
        if m is None:
            return
        inst = m["arg"]["instId"]
        if m["action"] == "snapshot" or inst not in self.books:
            self.books[inst] = ({}, {})
        bids, asks = self.books[inst]
        d = m["data"][0]
        for side, key in ((bids, "bids"), (asks, "asks")):
            for e in d.get(key, []):
                if _is_zero(e[1]):
                    side.pop(e[0], None)
                else:
                    side[e[0]] = list(e[1:])

    def snapshot_frame(self, inst: str) -> bytes:
        from bot4d.venues.okx import book_checksum

        bids, asks = self.books[inst]
        b = sorted(bids.items(), key=lambda kv: _dec_key(kv[0]), reverse=True)
        a = sorted(asks.items(), key=lambda kv: _dec_key(kv[0]))
        ck = book_checksum([(p, v[0]) for p, v in b], [(p, v[0]) for p, v in a])
        return orjson.dumps({"arg": {"channel": "books", "instId": inst}, "action": "snapshot",
                             "data": [{"asks": [[p, *v] for p, v in a],
                                       "bids": [[p, *v] for p, v in b],
                                       "ts": "0", "checksum": ck}]})

    def http(self, path: str) -> tuple[int, bytes]:
        return 404, b'{"code":"50000","msg":"not found"}'

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        if msg == b"ping":
            self.pings += 1
            return [b"pong"], False
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"event":"error","code":"60012","msg":"Invalid request"}'], False
        if type(m) is not dict or m.get("op") not in ("subscribe", "unsubscribe"):
            return [], False
        out = []
        for a in m.get("args", []):
            out.append(orjson.dumps({"event": m["op"], "arg": a}))
            if m["op"] == "subscribe" and a.get("channel") == "books" and a.get("instId") in self.books:
                out.append(self.snapshot_frame(a["instId"]))
        return out, m["op"] == "subscribe"

    def resync_frames(self) -> list[bytes]:
        return []

    def corrupt(self, frame: bytes) -> bytes:
        m = orjson.loads(frame)
        d = m["data"][0]
        d["checksum"] = d.get("checksum", 0) ^ 0x5A5A or 1
        return orjson.dumps(m)

    def book_units(self, inst: str, price_scale: int, qty_scale: int):
        bids, asks = self.books[inst]
        return _units_book(({p: v[0] for p, v in bids.items()}, {p: v[0] for p, v in asks.items()}),
                           price_scale, qty_scale)


# --- Coinbase Exchange (legacy) level2 -----------------------------------------------------------
class CoinbaseLegacyMarket:
    """The legacy Coinbase level2 model: ``snapshot`` then ``l2update`` changes of absolute
    sizes. There is no sequence number and no checksum on this channel, so a client can detect
    only what breaks a frame or the connection; resync is a new subscription, answered with a
    snapshot of this model."""

    ws_path = "/"

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    @staticmethod
    def _msg(frame: bytes):
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None
        return m if type(m) is dict and m.get("type") in ("snapshot", "l2update") else None

    def is_book_update(self, frame: bytes) -> bool:
        m = self._msg(frame)
        return m is not None and m["type"] == "l2update"

    def advance(self, frame: bytes) -> None:
        m = self._msg(frame)
        if m is None:
            return
        pid = m["product_id"]
        if m["type"] == "snapshot":
            self.books[pid] = ({p: q for p, q in m["bids"]}, {p: q for p, q in m["asks"]})
            return
        if pid not in self.books:
            return
        b, a = self.books[pid]
        for side, p, q in m["changes"]:
            book = b if side == "buy" else a
            if _is_zero(q):
                book.pop(p, None)
            else:
                book[p] = q

    def snapshot_frame(self, pid: str) -> bytes:
        b, a = self.books[pid]
        return orjson.dumps({"type": "snapshot", "product_id": pid,
                             "bids": sorted(([p, q] for p, q in b.items()), key=lambda x: _dec_key(x[0]), reverse=True),
                             "asks": sorted(([p, q] for p, q in a.items()), key=lambda x: _dec_key(x[0]))})

    def http(self, path: str) -> tuple[int, bytes]:
        return 404, b'{"message":"NotFound"}'

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"type":"error","message":"Failed to subscribe"}'], False
        if type(m) is not dict or m.get("type") not in ("subscribe", "unsubscribe"):
            return [], False
        out = [orjson.dumps({"type": "subscriptions", "channels": [
            {"name": c, "product_ids": m.get("product_ids", [])} for c in m.get("channels", [])]})]
        if m["type"] == "subscribe" and "level2" in m.get("channels", []):
            out += [self.snapshot_frame(p) for p in m.get("product_ids", []) if p in self.books]
        return out, m["type"] == "subscribe"

    def resync_frames(self) -> list[bytes]:
        return []

    def corrupt(self, frame: bytes) -> bytes:
        return frame  # nothing to corrupt: no checksum on this channel

    def book_units(self, pid: str, price_scale: int, qty_scale: int):
        return _units_book(self.books[pid], price_scale, qty_scale)


# --- Bybit v5: generated orderbook traffic -------------------------------------------------------
class BybitMarket:
    """Bybit v5 ``orderbook.{depth}.{symbol}`` model: snapshot then deltas of absolute sizes,
    ``u`` +1 per message per symbol, ``seq`` increasing. Resync is a new subscription, answered
    with a snapshot of this model carrying the current ``u`` (the next delta is ``u + 1``)."""

    ws_path = "/v5/public/linear"

    def __init__(self, frames: list[bytes], depth: int = 50) -> None:
        self.frames = frames
        self.depth = depth
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.u: dict[str, int] = {}
        self.seq: dict[str, int] = {}
        self.pings = 0

    @staticmethod
    def _msg(frame: bytes):
        try:
            m = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None
        if type(m) is dict and str(m.get("topic", "")).startswith("orderbook.") \
                and m.get("type") in ("snapshot", "delta"):
            return m
        return None

    def is_book_update(self, frame: bytes) -> bool:
        m = self._msg(frame)
        return m is not None and m["type"] == "delta"

    def apply(self, sym: str, bids, asks, snapshot: bool, u: int, seq: int) -> None:
        if snapshot or sym not in self.books:
            self.books[sym] = ({}, {})
        b, a = self.books[sym]
        for side, levels in ((b, bids), (a, asks)):
            for p, q in levels:
                if _is_zero(q):
                    side.pop(p, None)
                else:
                    side[p] = q
        self.u[sym] = u
        self.seq[sym] = seq

    def advance(self, frame: bytes) -> None:
        m = self._msg(frame)
        if m is None:
            return
        d = m["data"]
        self.apply(d["s"], d["b"], d["a"], m["type"] == "snapshot", d["u"], d["seq"])

    def snapshot_frame(self, sym: str) -> bytes:
        b, a = self.books[sym]
        bids = sorted(([p, q] for p, q in b.items()), key=lambda x: _dec_key(x[0]), reverse=True)
        asks = sorted(([p, q] for p, q in a.items()), key=lambda x: _dec_key(x[0]))
        return orjson.dumps({"topic": f"orderbook.{self.depth}.{sym}", "type": "snapshot",
                             "ts": 1_700_000_000_000, "data": {"s": sym, "b": bids, "a": asks,
                                                               "u": self.u[sym], "seq": self.seq[sym]}})

    def http(self, path: str) -> tuple[int, bytes]:
        return 404, b'{"retCode":10001,"retMsg":"not found"}'

    def on_client_message(self, msg: bytes) -> tuple[list[bytes], bool]:
        try:
            m = orjson.loads(msg)
        except orjson.JSONDecodeError:
            return [b'{"success":false,"ret_msg":"Invalid request","op":""}'], False
        if type(m) is not dict:
            return [], False
        op = m.get("op")
        if op == "ping":
            self.pings += 1
            return [orjson.dumps({"success": True, "ret_msg": "pong", "op": "ping"})], False
        if op not in ("subscribe", "unsubscribe"):
            return [], False
        out = [orjson.dumps({"success": True, "ret_msg": "", "op": op, "req_id": m.get("req_id", "")})]
        if op == "subscribe":
            for topic in m.get("args", []):
                if topic.startswith("orderbook."):
                    sym = topic.split(".", 2)[2]
                    if sym in self.books:
                        out.append(self.snapshot_frame(sym))
        return out, op == "subscribe"

    def resync_frames(self) -> list[bytes]:
        return []

    def corrupt(self, frame: bytes) -> bytes:
        return frame  # Bybit publishes no checksum

    def book_units(self, sym: str, price_scale: int, qty_scale: int):
        return _units_book(self.books[sym], price_scale, qty_scale)


def generate_bybit(symbols: Iterable[str], n_frames: int, seed: int = 1, *,
                   depth: int = 50) -> list[bytes]:
    """Bybit v5 linear orderbook traffic: a snapshot per symbol (u=1), then deltas chaining
    ``u`` per symbol; bids and asks stay inside 40 ticks of a fixed mid (never crossed, never
    beyond the subscribed depth). Prices 2 decimals, sizes 3."""
    rng = random.Random(seed)
    syms = list(symbols)
    mid = {s: 3_000_000 + 100_000 * k for k, s in enumerate(syms)}  # cents
    px = lambda t: f"{t // 100}.{t % 100:02d}"  # noqa: E731
    qty = lambda: f"{rng.randint(0, 900)}.{rng.randint(1, 999):03d}"  # noqa: E731
    frames = []
    u = {s: 1 for s in syms}
    seq = 1000
    for s in syms:
        seq += 1
        bids = [[px(mid[s] - i), qty()] for i in range(1, 31)]
        asks = [[px(mid[s] + i), qty()] for i in range(1, 31)]
        frames.append(orjson.dumps({"topic": f"orderbook.{depth}.{s}", "type": "snapshot",
                                    "ts": 1_700_000_000_000, "data": {"s": s, "b": bids, "a": asks,
                                                                      "u": 1, "seq": seq}}))
    for n in range(n_frames):
        s = syms[rng.randrange(len(syms))]
        b, a = [], []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                b.append([px(mid[s] - rng.randint(1, 40)), "0" if rng.random() < 0.25 else qty()])
            else:
                a.append([px(mid[s] + rng.randint(1, 40)), "0" if rng.random() < 0.25 else qty()])
        u[s] += 1
        seq += rng.randint(1, 5)
        frames.append(orjson.dumps({"topic": f"orderbook.{depth}.{s}", "type": "delta",
                                    "ts": 1_700_000_000_000 + n, "data": {"s": s, "b": b, "a": a,
                                                                          "u": u[s], "seq": seq},
                                    "cts": 1_700_000_000_000 + n}))
    return frames


# --- the server ----------------------------------------------------------------------------------
@dataclass
class _Pending:
    fault: Fault
    at: int | None           # script index, or None: the next book update


@dataclass
class ServerStats:
    connections: int = 0
    http_requests: int = 0
    frames_sent: int = 0
    faults_fired: dict[str, int] = field(default_factory=dict)


class _Conn(WSListener):
    def __init__(self, server: "FeedServer") -> None:
        self.server = server
        self.transport: WSTransport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.subscribed = asyncio.Event()
        self.closed = False
        self.sent = 0   # frames sent on this connection (script frames and replies)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.server._attach(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
            return
        if frame.msg_type is WSMsgType.PONG:
            self.server.pongs.append(frame.get_payload_as_bytes())
            return
        if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        replies, start = self.server.market.on_client_message(frame.get_payload_as_bytes())
        for r in replies:
            transport.send(WSMsgType.TEXT, r)
            self.sent += 1
        if start:
            self.subscribed.set()
        self.server.client_messages.append(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.writable.set()
        self.subscribed.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class FeedServer:
    """Serve ``market`` on 127.0.0.1 (ephemeral port). ``pace_s`` sleeps between frames (0: as
    fast as the socket takes them); ``yield_every`` frames the sender yields to the loop."""

    def __init__(self, market: Any, *, pace_s: float = 0.0, yield_every: int = 64,
                 stamp: bool = False) -> None:
        self.market = market
        self.pace_s = pace_s
        self.yield_every = yield_every
        self.cursor = 0                      # next script index to publish
        self.stats = ServerStats()
        self.client_messages: list[bytes] = []
        self.pongs: list[bytes] = []            # WebSocket pongs the client answered with
        self._faults: deque[_Pending] = deque()
        self._server: asyncio.Server | None = None
        self._conn: _Conn | None = None
        self._sender: asyncio.Task | None = None
        self.done = asyncio.Event()          # the whole script has been published
        self.port = 0
        self.http_failures = 0               # answer this many snapshot requests with 503
        self.http_bad_bodies = 0             # ... then this many with a truncated body
        self._hold_at: int | None = None
        self._released = asyncio.Event()
        self._released.set()
        self.held = asyncio.Event()          # the pump is waiting at the hold point

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FeedServer":
        self._server = await ws_create_server(self._route, "127.0.0.1", 0,
                                              max_frame_size=1 << 20, enable_auto_pong=False)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except (asyncio.CancelledError, Exception):
                pass
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.disconnect(graceful=False)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def inject(self, fault: Fault, at: int | None = None) -> None:
        """Fire ``fault`` at script index ``at`` (None: now). SKIP, MALFORMED and CORRUPT fire
        on the first book update at or after that point."""
        self._faults.append(_Pending(fault, at))

    def hold(self, at: int) -> None:
        """Stop publishing when the script reaches index ``at`` until ``release()``: a test
        uses it to let a client finish a resync before the market moves on."""
        self._hold_at = at
        self._released.clear()
        self.held.clear()

    def release(self) -> None:
        self._hold_at = None
        self._released.set()

    @property
    def sent_on_connection(self) -> int:
        """Frames sent on the current connection (what a caught-up client has read)."""
        return self._conn.sent if self._conn is not None else 0

    def ping(self, payload: bytes = b"bot4d") -> None:
        """A WebSocket-level ping, as Binance sends every few minutes (it drops clients that do
        not answer)."""
        c = self._conn
        if c is not None and c.transport is not None:
            c.transport.send_ping(payload)

    def drop_now(self) -> None:
        c = self._conn
        if c is not None and c.transport is not None:
            c.transport.underlying_transport.abort()

    # --- routing ---------------------------------------------------------------------------------
    def _route(self, req: WSUpgradeRequest):
        path = req.path.decode("latin-1")
        if req.headers.get("Upgrade", "").lower() != "websocket":
            self.stats.http_requests += 1
            if self.http_failures > 0:
                self.http_failures -= 1
                resp = WSUpgradeResponse.create_error_response(503, b"busy")
                return WSUpgradeResponseWithListener(resp, None)
            status, body = self.market.http(path)
            if status == 200 and self.http_bad_bodies > 0:
                self.http_bad_bodies -= 1
                body = body[: len(body) // 2]   # a 200 with a truncated JSON body
            hdr = {"Content-Type": "application/json"}
            if status == 200:
                resp = WSUpgradeResponse.create_ok_response(body, hdr)
            else:
                resp = WSUpgradeResponse.create_error_response(status, body, hdr)
            return WSUpgradeResponseWithListener(resp, None)
        if urlsplit(path).path != self.market.ws_path:
            return None  # 404
        return _Conn(self)

    def _attach(self, conn: _Conn) -> None:
        old = self._conn
        self._conn = conn
        self.stats.connections += 1
        if self._sender is not None:
            self._sender.cancel()
        if old is not None and old.transport is not None and not old.closed:
            old.transport.disconnect(graceful=False)
        self._sender = asyncio.get_running_loop().create_task(self._pump(conn))

    # --- the stream ---------------------------------------------------------------------------------
    def _due(self, frame: bytes) -> Fault | None:
        f = self._faults[0]
        if f.at is not None and self.cursor < f.at:
            return None
        is_book = self.market.is_book_update(frame)  # parses the frame: only when a fault waits
        # faults that tamper with an update wait for a book update (at or after ``at``)
        needs_book = f.fault in (Fault.SKIP, Fault.MALFORMED, Fault.CORRUPT, Fault.FRAGMENTED)
        if (f.at is None or self.cursor >= f.at) and (is_book or not needs_book):
            self._faults.popleft()
            self.stats.faults_fired[f.fault.value] = self.stats.faults_fired.get(f.fault.value, 0) + 1
            return f.fault
        return None

    async def _pump(self, conn: _Conn) -> None:
        await conn.subscribed.wait()
        t = conn.transport
        frames = self.market.frames
        for r in self.market.resync_frames():
            t.send(WSMsgType.TEXT, r)
        sent = 0
        while self.cursor < len(frames) and not conn.closed:
            if not conn.writable.is_set():
                await conn.writable.wait()
                continue
            if self._hold_at is not None and self.cursor >= self._hold_at:
                self.held.set()
                await self._released.wait()
                continue
            frame = frames[self.cursor]
            fault = self._due(frame) if self._faults else None
            if fault is Fault.DROP:
                t.underlying_transport.abort()
                return
            if fault is Fault.VANISH:
                # a frame header announcing 4 KiB, 10 bytes of it, then the peer is gone
                t.underlying_transport.write(b"\x81\x7e\x10\x00" + frame[:10])
                t.underlying_transport.abort()
                return
            if fault is Fault.STALL:
                return  # keep the socket open, send nothing more on it
            if fault is Fault.OVERSIZE:
                t.send(WSMsgType.TEXT, b'{"pad":"' + b"x" * (OVERSIZE_BYTES - 10) + b'"}')
                # the frame is not from the script: the market does not move
                await asyncio.sleep(0)
                continue
            if fault is Fault.OVERSIZE_FRAGMENTS:
                chunk = b"y" * 65536
                t.send(WSMsgType.TEXT, b'{"pad":"' + chunk, fin=False)
                for _ in range(31):
                    t.send(WSMsgType.CONTINUATION, chunk, fin=False)
                t.send(WSMsgType.CONTINUATION, b'"}', fin=True)
                await asyncio.sleep(0)
                continue
            self.market.advance(frame)
            self.cursor += 1
            if fault is Fault.SKIP:
                continue
            if fault is Fault.FRAGMENTED:
                k1, k2 = len(frame) // 3, 2 * len(frame) // 3
                t.send(WSMsgType.TEXT, frame[:k1], fin=False)
                t.send(WSMsgType.CONTINUATION, frame[k1:k2], fin=False)
                t.send(WSMsgType.CONTINUATION, frame[k2:], fin=True)
                self.stats.frames_sent += 1
                conn.sent += 1
                continue
            if fault is Fault.MALFORMED:
                frame = frame[: len(frame) // 2]
            elif fault is Fault.CORRUPT:
                frame = self.market.corrupt(frame)
            t.send(WSMsgType.TEXT, frame)
            self.stats.frames_sent += 1
            conn.sent += 1
            sent += 1
            if self.pace_s:
                await asyncio.sleep(self.pace_s)
            elif sent % self.yield_every == 0:
                await asyncio.sleep(0)
        if self.cursor >= len(frames):
            self.done.set()


def recorded_binance(recorded_dir: Any, prefix: str = "BINANCE") -> tuple[list[bytes], dict[str, bytes]]:
    """(frames, REST snapshots by symbol) from a cryptofeed recording pair
    (``<prefix>.ws.1.0`` and ``<prefix>.http.0.0``; see data/recorded/README.md)."""
    from pathlib import Path

    from bot4d.venues.l2sync import read_recording

    d = Path(recorded_dir)
    frames = [b for _, b in read_recording(d / f"{prefix}.ws.1.0")]
    snaps: dict[str, bytes] = {}
    with open(d / f"{prefix}.http.0.0", "rb") as f:
        for line in f:
            url, sep, rest = line.partition(b" -> ")
            if not sep:
                continue
            _, _, body = rest.partition(b": ")
            q = parse_qs(urlsplit(url.decode()).query)
            snaps[q["symbol"][0]] = body.strip()
    return frames, snaps
