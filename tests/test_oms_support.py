"""Shared drivers for the OMS tests: real kernels, real buffers, a few conveniences."""
from __future__ import annotations

import numpy as np

from bot4d.kernels import oms
from bot4d.kernels.oms_state import OT_LIMIT, TIF_GTC, make_oms
from bot4d.records import CMD_CANCEL, CMD_PLACE, CMD_REPLACE, JOURNAL_EVENT_DTYPE, ORDER_INTENT_DTYPE


def intent(coid: int, side: int = 0, px: int = 100, qty: int = 10, *, ot: int = OT_LIMIT,
           tif: int = TIF_GTC, inst: int = 0, cmd: int = CMD_PLACE, target: int = 0,
           stop: int = 0, tp: int = 0, batch: int = 0, oco: int = 0, strategy: int = 0,
           flags: int = 0) -> np.void:
    r = np.zeros(1, ORDER_INTENT_DTYPE)[0]
    r["client_order_id"] = coid
    r["command"] = cmd
    r["side"] = side
    r["order_type"] = ot
    r["tif"] = tif
    r["instrument"] = inst
    r["price"] = px
    r["qty"] = qty
    r["stop_price"] = stop
    r["take_profit_price"] = tp
    r["target_order_id"] = target
    r["batch_id"] = batch
    r["oco_group"] = oco
    r["strategy"] = strategy
    r["flags"] = flags
    return r


def report(kind: int, order_id: int = 0, px: int = 0, qty: int = 0, *, inst: int = 0,
           maker: int = 0, fee: int = 0, flags: int = 0, reason: int = 0, ts: int = 0) -> np.void:
    r = np.zeros(1, oms.VENUE_REPORT_DTYPE)[0]
    r["kind"] = kind
    r["order_id"] = order_id
    r["price"] = px
    r["qty"] = qty
    r["instrument"] = inst
    r["maker"] = maker
    r["fee"] = fee
    r["flags"] = flags
    r["reason"] = reason
    r["ts_ns"] = ts
    return r


class Driver:
    """Holds one shard's OMS and collects every journal record and venue command it emits."""

    def __init__(self, n_accounts: int = 1, n_instruments: int = 2, capacity: int = 64,
                 jcap: int = 4096, **kw) -> None:
        self.st = make_oms(n_accounts, n_instruments, capacity, **kw)
        self.j = np.zeros(jcap, JOURNAL_EVENT_DTYPE)
        self.jc = np.zeros(1, np.int64)
        self.ob = np.zeros(jcap, ORDER_INTENT_DTYPE)
        self.oc = np.zeros(1, np.int64)
        self.events: list = []
        self.sent: list = []
        self.now = 1_000_000_000

    def _drain(self) -> tuple[np.ndarray, np.ndarray]:
        ev = self.j[: self.jc[0]].copy()
        out = self.ob[: self.oc[0]].copy()
        self.events.extend(ev)
        self.sent.extend(out)
        self.jc[0] = 0
        self.oc[0] = 0
        return ev, out

    def submit(self, *intents, decision=None, approved=None, now: int | None = None):
        it = np.array(list(intents), dtype=ORDER_INTENT_DTYPE)
        n = it.shape[0]
        dec = np.zeros(n, np.int32) if decision is None else np.asarray(decision, np.int32)
        appr = np.zeros(n, np.int64) if approved is None else np.asarray(approved, np.int64)
        t = self.now if now is None else now
        used = oms.submit(self.st, it, dec, appr, t, self.j, self.jc, self.ob, self.oc)
        assert used == n, (used, n)
        return self._drain()

    def apply(self, *reports):
        rp = np.array(list(reports), dtype=oms.VENUE_REPORT_DTYPE)
        used = oms.apply(self.st, rp, self.j, self.jc, self.ob, self.oc)
        assert used == rp.shape[0]
        return self._drain()

    def place(self, coid: int, **kw) -> int:
        """Place one order; returns its order id (0 if it got none)."""
        _, out = self.submit(intent(coid, **kw))
        places = out[out["command"] == CMD_PLACE]
        if len(places):
            return int(places[-1]["target_order_id"])
        return self.order_id_of(coid)

    def order_id_of(self, coid: int) -> int:
        live = self.st.o_id != 0
        hit = np.nonzero(live & (self.st.o_coid == coid))[0]
        return int(self.st.o_id[hit[0]]) if len(hit) else 0

    def state(self, oid: int) -> int:
        s = oid & ((1 << int(self.st.slot_bits[0])) - 1)
        if self.st.o_id[s] != oid:
            return -1
        return int(self.st.o_state[s])

    def slot(self, oid: int) -> int:
        return oid & ((1 << int(self.st.slot_bits[0])) - 1)


__all__ = ["Driver", "intent", "report", "CMD_CANCEL", "CMD_PLACE", "CMD_REPLACE"]
