"""A shard: its rings, its kernel state, and the pinned thread that runs ``shard_kernel.step``.

The thread pins itself (``os.sched_setaffinity(0, {core})`` from inside the thread: on Linux pid 0
is the calling thread), then loops: one ``step`` call drains what the rings hold; when nothing
came, ``wait_input`` spins nogil for ``spin_us`` watching both input rings, then the thread sleeps
``idle_sleep_us`` (the kill switch, staleness and the heartbeat still advance on every pass).

Everything else that touches the shard's state — operator commands (halt, cancel-all, limits),
read-outs for ``bot4ctl`` (orders, positions), the venue reconciliation at start — is a closure
put on the shard's command queue and run by this thread between two steps, so the state has one
writer and needs no lock. The io thread puts and never waits on the shard: it gets a
``concurrent.futures.Future`` it can await.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bot4d.daemon import guards as G
from bot4d.daemon import shard_kernel as K
from bot4d.feed.state import LIVE as FEED_STATE_LIVE
from bot4d.kernels import book as bk
from bot4d.kernels import filters as filt
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import oms as oms_k
from bot4d.kernels import oms_state as oms
from bot4d.kernels import protect as pt
from bot4d.kernels import risk as rk
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_CONTROL, INTENT_FLAG_REDUCE_ONLY, MD_UPDATE_DTYPE,
                           ORDER_COMMAND_DTYPE, ORDER_INTENT_DTYPE, SIDE_ASK, SIDE_BID)
from ipc.counters import counter_get
from ipc.ring import Ring

log = logging.getLogger("bot4d.shard")

assert FEED_STATE_LIVE == K.FEED_LIVE

LIVE_ORDER_STATES = (oms.S_VALIDATED, oms.S_SUBMITTED, oms.S_ACKED, oms.S_PARTIALLY_FILLED,
                     oms.S_CANCEL_PENDING)
STATE_NAMES = {v: k[2:] for k, v in vars(oms).items() if k.startswith("S_") and isinstance(v, int)}


def warm_rings() -> None:
    """The ring kernels for the record types a shard's rings carry (set-up warms them beside the
    OMS, so the shard loop's warm-up waits for less)."""
    from ipc.ring import warmup_dtype
    from bot4d.records import JOURNAL_EVENT_DTYPE

    for dt in (MD_UPDATE_DTYPE, oms_k.VENUE_REPORT_DTYPE, ORDER_COMMAND_DTYPE, JOURNAL_EVENT_DTYPE):
        warmup_dtype(dt, readonly_too=False)


@dataclass
class ShardRings:
    ingress: Ring   # MD_UPDATE_DTYPE, io thread (feeds) -> shard
    reports: Ring   # VENUE_REPORT_DTYPE, io thread (gateway) -> shard
    egress: Ring    # ORDER_COMMAND_DTYPE, shard -> io thread (gateway)
    journal: Ring   # JOURNAL_EVENT_DTYPE, shard -> bot4d-persist (and monitors)

    @classmethod
    def create(cls, instance: str, s: int, *, journal_capacity: int, persisted: bool,
               boot_id: str = "") -> "ShardRings":
        from bot4d.records import JOURNAL_EVENT_DTYPE

        # queues refuse when full (policy fail): a shard never waits, and a feed whose records
        # were refused resyncs its book; the journal keeps what it could not publish and retries
        return cls(
            ingress=Ring.create(instance, f"ingress-{s}", MD_UPDATE_DTYPE, 1 << 16, policy="fail", reclaim_dead=True),
            reports=Ring.create(instance, f"reports-{s}", oms_k.VENUE_REPORT_DTYPE, 1 << 14, policy="fail", reclaim_dead=True),
            egress=Ring.create(instance, f"egress-{s}", ORDER_COMMAND_DTYPE, 1 << 12, policy="fail", reclaim_dead=True),
            journal=Ring.create(instance, f"journal-{s}", JOURNAL_EVENT_DTYPE, journal_capacity, kind="journal",
                                n_gating=1 if persisted else 0, policy="fail", reclaim_dead=True,
                                identity={"boot": boot_id} if boot_id else None),
        )

    def all(self) -> list[Ring]:
        return [self.ingress, self.reports, self.egress, self.journal]


class Shard:
    """One shard's state. Built by the daemon; ``start()`` runs its thread."""

    def __init__(self, index: int, core: int | None, *, instance: str, n_instruments: int,
                 mine: list[int], oms_state: oms.OmsState, risk: rk.RiskState, kcfg: np.ndarray,
                 inst: K.ShardInst, rings: ShardRings, tel_counters: np.ndarray, tel_idx: np.ndarray,
                 snap_books: Any, snap_positions: Any, spin_us: int = 50, idle_sleep_us: int = 500,
                 egress_fd: int = -1, input_fd: int = -1) -> None:
        """``egress_fd``: an eventfd the kernel signals when it published orders (-1: none);
        ``input_fd``: one the producers of its input signal (``wake()``), -1: it polls."""
        self.index = index
        self.core = core
        self.instance = instance
        self.instruments = list(mine)
        self.st = oms_state
        self.rs = risk
        self.kcfg = kcfg
        self.si = inst
        self.rings = rings
        self.bufs = K.make_bufs(n_instruments)
        self.books = bk.make_books(n_instruments, 4096)
        self.tel = tel_counters
        self.tel_idx = tel_idx
        self.snap_b = snap_books
        self.snap_p = snap_positions
        self.spin_ns = int(spin_us) * 1000
        self.idle_us = int(idle_sleep_us)
        self.egress_fd = egress_fd
        self.input_fd = input_fd
        self.ctl = np.zeros(K.CTL_WORDS, np.int64)
        self.commands: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.pinned: set[int] | None = None
        self.journal_cap = rings.journal.capacity if rings.journal.n_gating > 0 else 0

    # --- the loop ---------------------------------------------------------------------------------
    def start(self) -> None:
        # the positions reconciliation found are where the Kelly statistics' trades begin
        pb = self.st.positions
        G.sync_positions(self.si.guard, pb.qty[K.ACCOUNT], pb.realised[K.ACCOUNT], pb.fees[K.ACCOUNT])
        self.thread = threading.Thread(target=self._run, name=f"shard-{self.index}", daemon=True)
        self.thread.start()

    def _args(self) -> tuple:
        r, b = self.rings, self.books
        return (self.index, r.ingress.records, r.ingress.ctrl, r.reports.records, r.reports.ctrl,
                r.egress.records, r.egress.ctrl, r.journal.records, r.journal.ctrl,
                b.levels, b.state, b.stats, b.scratch, self.st, self.rs, self.kcfg, self.si, self.bufs,
                self.tel, self.tel_idx, self.snap_b.records, self.snap_b.seqs, self.snap_p.records,
                self.snap_p.seqs, self.journal_cap)

    def _run(self) -> None:
        try:
            if self.core is not None:
                os.sched_setaffinity(0, {self.core})
            self.pinned = os.sched_getaffinity(0)
            a = self._args()
            ctl = self.ctl
            while not self.stop_event.is_set():
                # the loop is a nogil kernel; it returns only for a command or to stop
                K.run(ctl, self.egress_fd, self.input_fd, self.spin_ns, self.idle_us, *a)
                if ctl[K.CTL_CMD]:
                    ctl[K.CTL_CMD] = 0
                    self._run_commands()
            # a last pass publishes what the final commands produced
            self._run_commands()
            K.step(time.time_ns(), *a)
            if self.bufs.out[0] and self.egress_fd >= 0:
                os.eventfd_write(self.egress_fd, 1)
        except BaseException as e:  # the watchdog sees a dead shard; the log says why
            self.error = e
            log.exception("shard %d stopped by an error", self.index)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self.commands.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the shard thread between two steps (never concurrently with the kernel)."""
        fut: Future = Future()
        if self.thread is None or not self.thread.is_alive():
            # before start (reconciliation) or after a stop: nothing else touches the state
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)
            return fut
        self.commands.put((fn, fut))
        self.ctl[K.CTL_CMD] = 1  # the kernel loop returns at its next pass and runs it
        self.wake()
        return fut

    def wake(self) -> None:
        """Wake the shard if it waits for input (after publishing to its rings, or a command)."""
        if self.input_fd >= 0:
            os.eventfd_write(self.input_fd, 1)

    @property
    def loops(self) -> int:
        return int(self.ctl[K.CTL_LOOPS])

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.ctl[K.CTL_STOP] = 1
        self.wake()
        if self.thread is not None:
            self.thread.join(timeout)

    def alive(self, now_ns: int, max_age_ns: int) -> bool:
        """The loop ran within ``max_age_ns`` (its heartbeat is the kernel's own ``now``)."""
        if self.thread is None or not self.thread.is_alive() or self.error is not None:
            return False
        hb = int(counter_get(self.tel, self.tel_idx[K.T_HEARTBEAT])) if self.tel_idx[K.T_HEARTBEAT] >= 0 else 0
        return now_ns - hb <= max_age_ns

    def warm(self) -> None:
        """Call every kernel this shard will run, with the real state's types and no effect on it,
        so numba loads (or compiles) them now and not on a tick or an operator's command."""
        warm_rings()
        # risk's arrays are copies of the same types: the pass below would otherwise record the
        # equity of an account not yet reconciled (0) as the day's start, and daily loss would be
        # measured against 0 all day
        scratch = rk.RiskState(*(x.copy() for x in self.rs))
        a = [scratch if x is self.rs else x for x in self._args()]
        # the kernel on the real arrays, with the input rings empty (they are: nothing is
        # connected yet) and no instrument of its own, so nothing is decided
        mine = self.si.mine.copy()
        self.si.mine[:] = 0
        try:
            K.step(time.time_ns(), *a)
            K.wait_input(self.rings.ingress.ctrl, self.rings.reports.ctrl, 0)
            stopped = np.zeros(K.CTL_WORDS, np.int64)
            stopped[K.CTL_STOP] = 1
            K.run(stopped, -1, -1, 0, 0, *a)   # returns at once: compiled, nothing run
        finally:
            self.si.mine[:] = mine
        # what operator commands call from Python, on scratch copies of the same types
        b = self.bufs
        jr = np.zeros_like(b.journal[:8])
        jc = np.zeros(1, np.int64)
        ks = self.rs.ks.copy()
        ksk.ks_trip(ks, self.kcfg, ksk.TRIP_MANUAL, 0, 0, jr, jc, self.index)
        ksk.ks_resume(ks, ksk.TS_ACTIVE, 0, jr, jc, self.index)
        none = np.zeros(0, ORDER_INTENT_DTYPE)
        z = np.zeros(0, np.int64)
        j0 = int(b.jcount[0])
        oms_k.submit(self.st, none, z, z, 0, b.journal, b.jcount, b.outbox, b.ocount)
        rk.check_batch(none, self.rs.cfg, self.rs.inst, self.rs.acct, self.rs.strat, self.rs.bucket,
                       self.rs.work, ks, self.st.positions.qty[K.ACCOUNT], self.st.open_orders[K.ACCOUNT],
                       self.st.open_buy_qty[K.ACCOUNT], self.st.open_sell_qty[K.ACCOUNT], self.si.mids,
                       self.si.corr, 0, z, z, b.rj, b.rjc, self.index)
        K.mark_account(self.st, self.si, scratch, self.kcfg, 0)
        K._on_order(self.si, b.journal, j0, j0)
        K._account(b, self.tel, self.tel_idx, j0, j0)
        filt.count_rejects(self.st.filters, b.journal, j0, j0)
        oc = int(b.ocount[0])
        b.ocount[0] = 0
        K._outbox_to_egress(b, self.index, 0, 0)
        b.ocount[0] = oc
        K._flush(b, a[5], a[6], a[7], a[8])
        K._usable(self.si, self.books.state, 0)
        bk.best_bid(self.books.levels, self.books.state, 0)
        bk.best_ask(self.books.levels, self.books.state, 0)
        v = np.zeros(1, np.int64)
        bk.top_n(self.books.levels, self.books.state, 0, 1, v, v.copy(), v.copy(), v.copy())
        G.warm_python_calls(ks, self.kcfg)

    # --- operations run on the shard thread (through submit) --------------------------------------
    def _journal_room(self) -> bool:
        return self.bufs.jcount[0] < K.JOURNAL_HIGH

    def journal_records(self, recs: np.ndarray) -> int:
        """Records made on the io thread (the order-entry breaker's EV_BREAKER) into this shard's
        journal, stamped as its own; returns how many fitted (the rest is logged by the caller)."""
        b = self.bufs
        n = min(len(recs), len(b.journal) - int(b.jcount[0]))
        for r in recs[:n]:
            k = int(b.jcount[0])
            b.journal[k] = r
            b.journal["seq"][k] = self.st.seq[0]
            b.journal["shard"][k] = self.index
            self.st.seq[0] += 1
            b.jcount[0] += 1
        return n

    def guard_view(self, symbols: list[str]) -> dict[str, Any]:
        """``bot4ctl risk``: correlations, Kelly statistics, statistical breakers, storm windows."""
        return G.read_view(self.si.guard, self.si, self.rs, self.kcfg, symbols, time.time_ns())

    def journal_control(self, code: int, uid: int, pid: int, instrument: int = -1, a2: int = 0, a3: int = 0) -> None:
        """EV_CONTROL: who asked for what (uid, pid), in this shard's journal."""
        b = self.bufs
        if b.jcount[0] >= len(b.journal):
            raise RuntimeError(f"shard {self.index}: journal buffer full; command not journalled")
        e = b.journal[b.jcount[0]]
        e.fill(0)
        e["seq"] = self.st.seq[0]
        self.st.seq[0] += 1
        e["ts_ns"] = time.time_ns()
        e["kind"] = EV_CONTROL
        e["shard"] = self.index
        e["instrument"] = instrument
        e["reason"] = code
        e["aux0"], e["aux1"], e["aux2"], e["aux3"] = uid, pid, a2, a3
        b.jcount[0] += 1

    def set_trading_state(self, state: int, uid: int) -> str:
        ks = self.rs.ks
        b = self.bufs
        old = int(ks[ksk.K_STATE])
        if state == ksk.TS_HALTED:
            ksk.ks_trip(ks, self.kcfg, ksk.TRIP_MANUAL, uid, time.time_ns(), b.journal, b.jcount, self.index)
        else:
            ksk.ks_resume(ks, state, time.time_ns(), b.journal, b.jcount, self.index)
        return f"{ksk.STATE_NAMES[old]} -> {ksk.STATE_NAMES[int(ks[ksk.K_STATE])]}"

    def live_orders(self, instrument: int | None = None, *, protective: bool = False) -> list[int]:
        """Our live orders; the protective stops (which follow the positions by themselves and
        stay at the venue when the daemon stops) only with ``protective``."""
        st = self.st
        live = np.isin(st.o_state, LIVE_ORDER_STATES) & (st.o_id != 0)
        if instrument is not None:
            live &= st.o_inst == instrument
        if not protective:
            live &= ~np.isin(st.o_id, self.protective_ids())
        return [int(x) for x in st.o_id[live]]

    def protective_ids(self) -> np.ndarray:
        """Order ids of the protective stops (and market exits) the shard keeps for its positions."""
        x = self.si.prot.st
        ids = np.concatenate([x[:, pt.X_OID], x[:, pt.X_EXIT_OID], x[:, pt.X_TP_OID]])
        return ids[ids != 0]

    def protection(self) -> list[dict[str, Any]]:
        """``bot4ctl protection``: per instrument, the position and the stop resting for it."""
        pr, st = self.si.prot, self.st
        out = []
        for i in self.instruments:
            oid = int(pr.st[i, pt.X_OID])
            s = oid & ((1 << int(st.slot_bits[0])) - 1) if oid else -1
            live = s >= 0 and int(st.o_id[s]) == oid
            tp_oid = int(pr.st[i, pt.X_TP_OID])
            ts = tp_oid & ((1 << int(st.slot_bits[0])) - 1) if tp_oid else -1
            tp_live = ts >= 0 and int(st.o_id[ts]) == tp_oid
            since = int(pr.st[i, pt.X_SINCE])
            pos = int(st.positions.qty[K.ACCOUNT, i])
            out.append({
                "instrument": i, "enabled": bool(pr.cfg[i, pt.PC_ENABLED]), "position": pos,
                "stop_order_id": oid if live else 0,
                "stop_state": STATE_NAMES.get(int(st.o_state[s]), "?") if live else None,
                "stop_side": ("SELL" if int(st.o_side[s]) == SIDE_ASK else "BUY") if live else None,
                "stop_qty": int(st.o_qty[s] - st.o_filled[s]) if live else 0,
                "stop_price": int(st.o_trigger[s]) if live else 0,
                "limit_price": int(st.o_px[s]) if live else 0,
                "venue_order_id": int(st.o_venue_id[s]) if live else 0,
                # the take-profit leg resting with the stop as one venue OCO (0: a lone stop)
                "take_profit_order_id": tp_oid if tp_live else 0,
                "take_profit_price": int(st.o_px[ts]) if tp_live else 0,
                "take_profit_state": STATE_NAMES.get(int(st.o_state[ts]), "?") if tp_live else None,
                "oco_placed": int(pr.ctr[i, pt.P_OCO]),
                "strategy_orders_cancelled_on_exit": int(pr.ctr[i, pt.P_CLOSING_CANCELLED]),
                "unprotected_for_ns": time.time_ns() - since if since else 0,
                "placed": int(pr.ctr[i, pt.P_PLACED]), "cancelled": int(pr.ctr[i, pt.P_CANCELLED]),
                "refused": int(pr.ctr[i, pt.P_REFUSED]), "last_refusal_code": int(pr.st[i, pt.X_LAST_REFUSAL]),
                "refused_locally": int(pr.ctr[i, pt.P_OMS_REFUSED]), "market_exits": int(pr.ctr[i, pt.P_EXITS]),
                "dust_passes": int(pr.ctr[i, pt.P_DUST])})
        return out

    def _submit_intents(self, intents: np.ndarray, decision: np.ndarray | None = None) -> np.ndarray:
        """Operator intents straight into the OMS (cancels need no risk verdict) or through risk."""
        b = self.bufs
        n = len(intents)
        now = time.time_ns()
        j_in = int(b.jcount[0])
        if decision is None:
            decision = np.zeros(n, np.int64)
            approved = np.zeros(n, np.int64)
            b.rjc[0] = 0
            K.mark_account(self.st, self.si, self.rs, self.kcfg, now)   # the account's equity, all shards
            rk.check_batch(intents, self.rs.cfg, self.rs.inst, self.rs.acct, self.rs.strat, self.rs.bucket,
                           self.rs.work, self.rs.ks, self.st.positions.qty[K.ACCOUNT],
                           self.st.open_orders[K.ACCOUNT], self.st.open_buy_qty[K.ACCOUNT],
                           self.st.open_sell_qty[K.ACCOUNT], self.si.mids, self.si.corr, now, decision,
                           approved, b.rj, b.rjc, self.index)
            for q in range(int(b.rjc[0])):
                k = int(b.jcount[0])
                b.journal[k] = b.rj[q]
                b.journal["seq"][k] = self.st.seq[0]   # the shard's journal is gap-free (as in the kernel)
                self.st.seq[0] += 1
                b.jcount[0] += 1
        else:
            approved = np.zeros(n, np.int64)
        j0 = int(b.jcount[0])
        oms_k.submit(self.st, intents, decision, approved, now, b.journal, b.jcount, b.outbox, b.ocount)
        K._on_order(self.si, b.journal, j0, int(b.jcount[0]))
        K._outbox_to_egress(b, self.index, now, 0)
        # counted as the kernel counts what its own passes journal (the next pass starts after
        # these records): rejects by reason, fills, and the exchange filters' per-rule refusals
        j1 = int(b.jcount[0])
        K._account(b, self.tel, self.tel_idx, j_in, j1)
        filt.count_rejects(self.st.filters, b.journal, j_in, j1)
        return decision

    def cancel_all(self, instrument: int | None = None) -> int:
        ids = self.live_orders(instrument)
        if not ids:
            return 0
        it = np.zeros(len(ids), ORDER_INTENT_DTYPE)
        it["command"] = CMD_CANCEL
        it["target_order_id"] = ids
        it["ts_ns"] = time.time_ns()
        # operator commands have their own client-id space (strategies use (id + 1) << 40)
        base = (1 << 62) + (self.index << 48) + int(self.st.seq[0]) * 4096
        it["client_order_id"] = base + np.arange(len(ids))
        st = self.st
        for k, oid in enumerate(ids):
            s = int(oid) & ((1 << int(st.slot_bits[0])) - 1)
            it[k]["instrument"] = st.o_inst[s]
            it[k]["side"] = st.o_side[s]
        self._submit_intents(it, np.zeros(len(ids), np.int64))
        return len(ids)

    def flatten(self, instrument: int) -> dict[str, Any]:
        """Cancel the instrument's orders, then close its position with a reduce-only market order
        that goes through risk like any other (a HALTED shard refuses it: halted means cancels only)."""
        cancelled = self.cancel_all(instrument)
        pos = int(self.st.positions.qty[K.ACCOUNT, instrument])
        if pos == 0:
            return {"cancelled": cancelled, "order": None}
        it = np.zeros(1, ORDER_INTENT_DTYPE)
        it["command"] = CMD_PLACE
        it["instrument"] = instrument
        it["side"] = SIDE_ASK if pos > 0 else SIDE_BID
        it["order_type"] = oms.OT_MARKET
        it["tif"] = oms.TIF_IOC
        it["qty"] = abs(pos)
        it["flags"] = INTENT_FLAG_REDUCE_ONLY
        it["ts_ns"] = time.time_ns()
        it["client_order_id"] = (1 << 62) + (self.index << 48) + (1 << 47) + int(self.st.seq[0])
        # the protective stop holds the position (a spot venue locks it): the exit replaces it
        it["replace_order_id"] = int(self.si.prot.st[instrument, pt.X_OID])
        d = self._submit_intents(it)
        verdict = int(d[0])
        return {"cancelled": cancelled, "order": "sent" if verdict == 0 else
                f"refused by risk: {rk.REASON_NAMES.get(verdict, verdict)}"}

    def py_view(self, i: int, coid_lo: int, coid_hi: int) -> dict[str, Any]:
        """What a Python strategy sees of instrument i (bot4d.strategies.pyapi.View fields)."""
        from bot4d.kernels import book as bk

        bb, bq = bk.best_bid(self.books.levels, self.books.state, i)
        ba, aq = bk.best_ask(self.books.levels, self.books.state, i)
        usable = bool(K._usable(self.si, self.books.state, i)) and int(self.rs.ks[ksk.K_STATE]) != ksk.TS_HALTED
        mine = [o for o in self.orders() if o["instrument"] == i and coid_lo <= o["client_order_id"] < coid_hi]
        for o in mine:
            o["side"] = SIDE_BID if o["side"] == "BUY" else SIDE_ASK
        return {"now_ns": time.time_ns(), "usable": usable, "bid": int(bb), "bid_qty": int(bq), "ask": int(ba),
                "ask_qty": int(aq), "position": int(self.st.positions.qty[K.ACCOUNT, i]), "orders": mine}

    def submit_py(self, intents: np.ndarray) -> list[int]:
        """A Python strategy's intents, through risk and the OMS; returns risk's verdicts."""
        if not len(intents):
            return []
        return [int(x) for x in self._submit_intents(np.ascontiguousarray(intents, ORDER_INTENT_DTYPE))]

    def orders(self) -> list[dict[str, Any]]:
        st = self.st
        prot = set(self.protective_ids().tolist())
        live = np.flatnonzero(np.isin(st.o_state, LIVE_ORDER_STATES) & (st.o_id != 0))
        return [{"order_id": int(st.o_id[s]), "client_order_id": int(st.o_coid[s]), "instrument": int(st.o_inst[s]),
                 "side": "BUY" if st.o_side[s] == SIDE_BID else "SELL", "state": STATE_NAMES.get(int(st.o_state[s]), "?"),
                 "type": int(st.o_type[s]), "price": int(st.o_px[s]), "qty": int(st.o_qty[s]),
                 "filled": int(st.o_filled[s]), "stop_price": int(st.o_trigger[s]),
                 "protective": int(st.o_id[s]) in prot} for s in live.tolist()]

    def positions(self) -> dict[int, dict[str, int]]:
        pb = self.st.positions
        a = K.ACCOUNT
        out = {}
        for i in self.instruments:
            m = int(self.si.mids[i])
            out[i] = {"qty": int(pb.qty[a, i]), "avg_px": int(pb.avg_px[a, i]), "realised": int(pb.realised[a, i]),
                      "fees": int(pb.fees[a, i]), "cost": int(pb.cost[a, i]), "mark": m,
                      "unrealised": int(pb.qty[a, i]) * m - int(pb.cost[a, i]) if m > 0 else 0}
        return out

    def counters(self) -> dict[str, int]:
        c = self.bufs.ctr
        out = {k[2:].lower(): int(c[v]) for k, v in vars(K).items() if k.startswith("C_") and isinstance(v, int)}
        out["oms_illegal_transitions"] = int(self.st.counters[oms.C_ILLEGAL_TRANSITION])
        out["journal_buffered"] = int(self.bufs.jcount[0])
        out["egress_buffered"] = int(self.bufs.ecount[0])
        return out


def tel_index(block: Any, shard: int, reject_reasons: list[str], trip_reasons: list[str]) -> np.ndarray:
    """Where the kernel writes each telemetry series in the shard's counters segment."""
    sh = str(shard)
    idx = np.full(K.N_T, -1, np.int64)
    idx[K.T_HEARTBEAT] = block.index("bot4d_shard_heartbeat_age_seconds", shard=sh)
    idx[K.T_SUBMITTED] = block.index("bot4d_orders_submitted_total", shard=sh)
    idx[K.T_FILLED] = block.index("bot4d_orders_filled_total", shard=sh)
    idx[K.T_STATE] = block.index("bot4d_trading_state", shard=sh)
    idx[K.T_BACKPRESSURE] = block.index("bot4d_journal_backpressure_total", shard=sh)
    # reasons are listed in code order: index 0 is the venue's, then risk's REJ_1.. in order
    idx[K.T_REJECT_BASE] = block.index("bot4d_orders_rejected_total", shard=sh, reason=reject_reasons[0])
    idx[K.T_TRIP_BASE] = block.index("bot4d_killswitch_trips_total", shard=sh, reason=trip_reasons[0])
    if "local" in reject_reasons:
        idx[K.T_LOCAL_REJECT] = block.index("bot4d_orders_rejected_total", shard=sh, reason="local")
    return idx
