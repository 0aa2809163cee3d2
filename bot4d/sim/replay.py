"""Replay recorded Binance market data as the simulated venue's agent flow.

A recording (REST depth snapshot + ``depthUpdate`` diffs + ``trade``/``aggTrade``, the format of
``shared/data/recorded``) becomes a time-ordered stream of agent orders for the matching engine:

* the snapshot and every diff set each level's *agents'* quantity: an increase is a new agent
  limit order at the back of that level's queue, a decrease cancels agent orders newest-first
  (the remainder of a partly cancelled order is re-placed, losing its place: Binance does not tell
  us whose quantity left);
* a trade is an IOC agent order crossing into the resting side at the trade price, so it consumes
  the queue from the front — including an order of ours that sits ahead of the agents.

Diffs follow Binance's rule (drop ``u <= lastUpdateId``; the first applied one satisfies
``U <= lastUpdateId + 1 <= u``). Timestamps are the recording's receive times, optionally
accelerated. The flow does not react to our orders (the usual limit of replaying L2 data without
feedback): when an order of ours absorbs part of a recorded trade, the agents' orders that trade
would have consumed stay on the book, so that level holds our absorbed quantity more than the
recording until those agent orders are cancelled by a later decrease.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot4d.fixedpoint import decimals
from bot4d.kernels import matching as m
from bot4d.records import SIDE_ASK, SIDE_BID
from bot4d.venues.numbers import parse_units


class ReplayError(ValueError):
    """The recording cannot be replayed (no snapshot, gap in the diffs, malformed numbers...)."""


@dataclass
class Recording:
    symbol: str
    snapshot: dict
    snapshot_ts_ns: int
    events: list[tuple[int, dict]]   # (receive time ns, payload) in file order


def load_binance(ws_path: Path, http_path: Path, symbol: str) -> Recording:
    """The snapshot and the stream events of one symbol from a recorded Binance session."""
    snap, snap_ts = None, 0
    for line in Path(http_path).read_text().splitlines():
        head, sep, body = line.partition(": ")
        if sep and f"symbol={symbol}&" in head + "&":
            snap = json.loads(body)
            snap_ts = int(float(head.rsplit(" ", 1)[-1]) * 1e9)
    if snap is None:
        raise ReplayError(f"{http_path}: no depth snapshot for {symbol}")
    events = []
    for line in Path(ws_path).read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if not sep or not body.startswith("{"):
            continue
        msg = json.loads(body)
        d = msg.get("data", msg)
        if isinstance(d, dict) and d.get("s") == symbol and d.get("e") in ("depthUpdate", "trade", "aggTrade"):
            events.append((int(float(ts) * 1e9), d))
    return Recording(symbol, snap, snap_ts, events)


def scales(rec: Recording) -> tuple[int, int]:
    """The smallest (price, qty) scales that hold every number in the recording exactly: Binance
    pads to 8 decimals, and 8 for both would overflow int64 notionals of large quantities."""
    ps = qs = 0
    levels = [lv for key in ("bids", "asks") for lv in rec.snapshot[key]]
    for _, d in rec.events:
        if d["e"] == "depthUpdate":
            levels.extend(d["b"])
            levels.extend(d["a"])
        else:
            levels.append((d["p"], d["q"]))
    for px, q in levels:
        ps = max(ps, decimals(px))
        qs = max(qs, decimals(q))
    return ps, qs


class _Agents:
    """The agents' resting orders per (side, price): FIFO of [order_id, qty]."""

    def __init__(self, first_id: int):
        self.q: dict[tuple[int, int], deque] = {}
        self.next_id = first_id

    def total(self, side: int, px: int) -> int:
        return sum(o[1] for o in self.q.get((side, px), ()))

    def set_level(self, side: int, px: int, target: int, ts: int, out: list) -> None:
        have = self.total(side, px)
        if target > have:
            self._place(side, px, target - have, ts, out)
        elif target < have:
            fifo = self.q[(side, px)]
            drop = have - target
            while drop > 0:
                oid, q = fifo.pop()  # newest first
                out.append((ts, m.OP_CANCEL, oid, side, 0, px, 0))
                if q > drop:
                    self._place(side, px, q - drop, ts, out)
                    drop = 0
                else:
                    drop -= q

    def _place(self, side: int, px: int, qty: int, ts: int, out: list) -> None:
        oid = self.next_id
        self.next_id += 1
        self.q.setdefault((side, px), deque()).append([oid, qty])
        out.append((ts, m.OP_NEW, oid, side, m.T_LIMIT, px, qty))

    def trade(self, maker_side: int, px: int, qty: int, ts: int, out: list) -> None:
        """A recorded trade: an IOC taker; the agents' queue at px loses it from the front."""
        oid = self.next_id
        self.next_id += 1
        out.append((ts, m.OP_NEW, oid, 1 - maker_side, m.T_LIMIT, px, qty, m.TIF_IOC))
        fifo = self.q.get((maker_side, px))
        left = qty
        while fifo and left > 0:
            if fifo[0][1] > left:
                fifo[0][1] -= left
                left = 0
            else:
                left -= fifo.popleft()[1]


def to_orders(rec: Recording, price_scale: int, qty_scale: int, *, speed: float = 1.0,
              t0_ns: int | None = None, first_id: int = 1 << 44, trades: bool = True) -> np.ndarray:
    """The recording as SIM_ORDER_DTYPE agent orders (account 0), in time order.

    ``speed`` > 1 compresses time (2.0 = twice as fast); ``t0_ns`` moves the start."""
    if speed <= 0:
        raise ReplayError("speed must be > 0")
    base = rec.snapshot_ts_ns
    shift = (t0_ns - base) if t0_ns is not None else 0

    def t(ts: int) -> int:
        return base + shift + int((ts - base) / speed) if ts > base else base + shift

    def units(text: str, scale: int) -> int:
        try:
            return parse_units(text, scale)
        except ValueError as e:
            raise ReplayError(f"{rec.symbol}: {e}") from None

    ag = _Agents(first_id)
    out: list = []
    ts0 = t(rec.snapshot_ts_ns)
    last_id = int(rec.snapshot["lastUpdateId"])
    for side, key in ((SIDE_BID, "bids"), (SIDE_ASK, "asks")):
        for px, q in rec.snapshot[key]:
            ag.set_level(side, units(px, price_scale), units(q, qty_scale), ts0, out)
    synced = False
    for ts, d in rec.events:
        when = t(ts)
        if d["e"] == "depthUpdate":
            first, final = int(d["U"]), int(d["u"])
            if final <= last_id:
                continue
            if not synced:
                if not first <= last_id + 1 <= final:
                    raise ReplayError(f"{rec.symbol}: first diff [{first}, {final}] does not bridge snapshot {last_id}")
                synced = True
            elif first != last_id + 1:
                raise ReplayError(f"{rec.symbol}: gap in the recording between {last_id} and {first}")
            last_id = final
            for side, key in ((SIDE_BID, "b"), (SIDE_ASK, "a")):
                for px, q in d[key]:
                    ag.set_level(side, units(px, price_scale), units(q, qty_scale), when, out)
        elif trades and ts >= rec.snapshot_ts_ns:
            px, q = units(d["p"], price_scale), units(d["q"], qty_scale)
            maker = SIDE_BID if d["m"] else SIDE_ASK  # m: the buyer was the maker
            ag.trade(maker, px, q, when, out)
    o = np.zeros(len(out), m.SIM_ORDER_DTYPE)
    for k, row in enumerate(out):
        o[k]["ts_ns"], o[k]["op"], o[k]["order_id"], o[k]["side"] = row[0], row[1], row[2], row[3]
        if row[1] == m.OP_NEW:
            o[k]["otype"], o[k]["price"], o[k]["qty"] = row[4], row[5], row[6]
            o[k]["tif"] = row[7] if len(row) > 7 else m.TIF_GTC
    o["account"] = 0
    o["stp"] = m.STP_NONE
    order = np.argsort(o["ts_ns"], kind="stable")
    return o[order]
