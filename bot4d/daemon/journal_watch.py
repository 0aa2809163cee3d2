"""Where each shard's journal stands against bot4d-persist, as the daemon sees it.

A shard's journal ring (``/dev/shm/bot4d.<instance>.journal-<shard>``) is the only copy of its
events until bot4d-persist has committed them to PostgreSQL and moved the ring's gating slot
(slot 0). From the ring alone the daemon knows, per shard: events produced (the cursor),
persisted (the slot's position), whether a live consumer holds the slot (its recorded pid and
start time), and the journals of earlier runs a restart kept aside because they were not drained
(``<name>-kept-<journal id>``, see ``ipc.ring.keep_if_undrained``).

:class:`JournalWatch` turns that into what an operator sees: ``report()`` for ``bot4ctl journal
lag`` and ``status``; ``tick()`` (the io thread, twice a second) publishes the consumer state and
the kept backlog as metrics, and once a shard's journal has had no consumer for
``persist.sidecar_timeout_s`` logs it loudly and applies ``persist.on_no_sidecar`` (keep trading,
reduce-only, or halt); ``wait_persisted()`` is the bounded wait at SIGTERM, which names what is
left and where.
"""
from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any, Callable

from bot4d.config import PersistConfig
from bot4d.telemetry import JOURNAL_CONSUMER_STATES as CONSUMER_STATES
from ipc.counters import counter_set
from ipc.ring import C_PROD, Ring, keep_if_undrained, kept_rings
from ipc.segment import SegmentError

log = logging.getLogger("bot4d.journal")

# a counter starts at 0 = WAITING: before the first tick nothing is known yet
WAITING, ATTACHED, MISSING, DISABLED = (CONSUMER_STATES.index(n) for n in ("WAITING", "ATTACHED", "MISSING", "DISABLED"))


def journal_name(shard: int) -> str:
    return f"journal-{shard}"


def keep_previous_journal(instance: str, shard: int) -> str | None:
    """Before shard ``shard``'s journal is created: a dead run's journal that bot4d-persist has
    not drained is kept aside (never replaced); says so in the log and returns its new name."""
    kept = keep_if_undrained(instance, journal_name(shard))
    if kept is None:
        return None
    try:
        r = Ring.attach(instance, kept, readonly=True)
    except SegmentError:
        return kept  # drained and removed by bot4d-persist in the meantime
    try:
        log.warning("shard %d: the journal of the previous run (boot %s, pid %d) holds %d events bot4d-persist "
                    "has not taken: kept as %s until it drains them", shard, r.boot_id or "?",
                    r.segment.owner_pid, r.unconsumed(), r.segment.path)
    finally:
        r.close()
    return kept


def kept_backlog(instance: str, shard: int) -> list[dict[str, Any]]:
    """The kept journals of ``shard`` with what each still holds for bot4d-persist."""
    out = []
    for name in kept_rings(instance, journal_name(shard)):
        try:
            r = Ring.attach(instance, name, readonly=True)
        except SegmentError:
            continue  # drained and removed meanwhile
        try:
            out.append({"ring": r.segment.path, "boot": r.boot_id, "produced": int(r.ctrl[C_PROD]),
                        "unpersisted": r.unconsumed(), "consumer_pid": r.consumer_pid(0) if r.n_gating else 0})
        finally:
            r.close()
    return out


class JournalWatch:
    """The io thread's view of the shards' journals (one per shard, index = shard)."""

    def __init__(self, instance: str, journals: list[Ring], cfg: PersistConfig, *,
                 counters: Any = None, index: Callable[[str, int], int] | None = None,
                 stop_trading: Callable[[int, str], None] | None = None) -> None:
        """``counters``/``index(metric, shard)``: the io thread's counters block and where each
        series sits; ``stop_trading(shard, action)`` applies ``persist.on_no_sidecar``."""
        self.instance = instance
        self.journals = journals
        self.cfg = cfg
        self.counters = counters
        self.index = index
        self.stop_trading = stop_trading
        # counted from the first tick (trading starts then; bot4d-persist's unit starts after READY)
        self._missing_since: list[float | None] = [None] * len(journals)
        self._ticked = False
        self._reported = [False] * len(journals)
        self.state = [DISABLED if not self._persisted(j) else WAITING for j in journals]

    def _persisted(self, j: Ring) -> bool:
        return self.cfg.enabled and j.n_gating > 0

    # --- what the operator reads --------------------------------------------------------------
    def report(self) -> dict[str, dict[str, Any]]:
        """Per shard: produced, persisted, lag (this ring), backlog (with kept journals), the
        consumer (state and pid), the ring file and the kept journals of earlier runs."""
        out = {}
        for s, j in enumerate(self.journals):
            produced = j.cursor
            row: dict[str, Any] = {"produced": produced, "ring": j.segment.path, "boot": j.boot_id}
            kept = kept_backlog(self.instance, s)
            if not self._persisted(j):
                row.update(persisted=None, lag=None, backlog=sum(k["unpersisted"] for k in kept),
                           consumer="DISABLED", consumer_pid=0, note="persistence disabled")
            else:
                persisted = j.slot_position(0)
                pid = j.consumer_pid(0) or next((k["consumer_pid"] for k in kept if k["consumer_pid"]), 0)
                row.update(persisted=persisted, lag=produced - persisted,
                           backlog=produced - persisted + sum(k["unpersisted"] for k in kept),
                           consumer=CONSUMER_STATES[self.state[s]], consumer_pid=pid)
                if self._missing_since[s] is not None and self.state[s] != ATTACHED:
                    row["no_consumer_for_s"] = round(time.monotonic() - self._missing_since[s], 1)
            row["kept_rings"] = kept
            out[str(s)] = row
        return out

    def summary(self) -> dict[str, Any]:
        """For ``status``: the configured action, and per shard the consumer and the backlog."""
        shards = {}
        for s, r in self.report().items():
            shards[s] = {k: r[k] for k in ("consumer", "consumer_pid", "backlog", "no_consumer_for_s") if k in r}
            shards[s]["kept_rings"] = len(r["kept_rings"])
        return {"on_no_sidecar": self.cfg.on_no_sidecar, "sidecar_timeout_s": str(self.cfg.sidecar_timeout_s),
                "shards": shards}

    # --- twice a second on the io thread ------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        timeout = float(self.cfg.sidecar_timeout_s)
        for s, j in enumerate(self.journals):
            kept = kept_backlog(self.instance, s)
            self._publish(s, "bot4d_journal_kept_events", sum(k["unpersisted"] for k in kept))
            if not self._persisted(j):
                self._publish(s, "bot4d_journal_consumer_state", DISABLED)
                continue
            pid = j.consumer_pid(0) or next((k["consumer_pid"] for k in kept if k["consumer_pid"]), 0)
            if pid:
                if self._reported[s]:
                    log.warning("shard %d: bot4d-persist (pid %d) is draining the journal again after %.0f s "
                                "without one%s", s, pid, now - (self._missing_since[s] or now),
                                "" if self.cfg.on_no_sidecar == "trade" else
                                "; trading stays as it is until an operator resumes it (bot4ctl resume)")
                self._missing_since[s] = None
                self._reported[s] = False
                self.state[s] = ATTACHED
            else:
                since = self._missing_since[s]
                if since is None:
                    since = self._missing_since[s] = now
                    if self._ticked:
                        log.warning("shard %d: bot4d-persist no longer drains the journal %s (stopped?)", s,
                                    j.segment.path)
                self.state[s] = MISSING if now - since >= timeout else WAITING
                if self.state[s] == MISSING and not self._reported[s]:
                    self._reported[s] = True
                    self._report_missing(s, j, now - since, kept)
            self._publish(s, "bot4d_journal_consumer_state", self.state[s])
        self._ticked = True

    def _publish(self, s: int, metric: str, v: int) -> None:
        if self.counters is not None and self.index is not None:
            counter_set(self.counters, self.index(metric, s), int(v))

    def _report_missing(self, s: int, j: Ring, for_s: float, kept: list[dict[str, Any]]) -> None:
        lag = j.cursor - j.slot_position(0)
        room = j.capacity - lag
        old = sum(k["unpersisted"] for k in kept)
        what = (f"shard {s}: no bot4d-persist has attached to the journal {j.segment.path} for {for_s:.0f} s "
                f"(persist.sidecar_timeout_s = {self.cfg.sidecar_timeout_s}): {lag} events not persisted"
                + (f", and {old} more in {len(kept)} kept journal(s) of earlier runs" if kept else ""))
        action = self.cfg.on_no_sidecar
        if action == "trade":
            log.error("%s; persist.on_no_sidecar = \"trade\": trading continues; the ring has room for %d more "
                      "events, then this shard stops taking input until the journal is drained", what, room)
            return
        log.critical("%s; persist.on_no_sidecar = \"%s\": shard %d is now %s (resume with bot4ctl resume once "
                     "bot4d-persist runs)", what, action, s, "REDUCING" if action == "reduce-only" else "HALTED")
        if self.stop_trading is not None:
            self.stop_trading(s, action)

    # --- SIGTERM -------------------------------------------------------------------------------
    async def wait_persisted(self, timeout_s: Decimal | float) -> dict[str, dict[str, Any]]:
        """Wait (at most ``timeout_s``) while bot4d-persist drains every shard's journal; returns
        what is left per shard, and logs it: how many events, and the ring files holding them.
        Without a consumer attached to a shard with events left there is nothing to wait for."""
        t_end = time.monotonic() + float(timeout_s)
        left: dict[str, dict[str, Any]] = {}
        while True:
            left = {s: r for s, r in self.report().items() if r["backlog"]}
            if not left:
                if any(self._persisted(j) for j in self.journals):
                    log.info("journal persisted: bot4d-persist has taken every event (%s)",
                             ", ".join(f"shard {s}: {r['produced']}" for s, r in self.report().items()))
                return {}
            if not any(r["consumer_pid"] for r in left.values()) or time.monotonic() >= t_end:
                break
            await asyncio.sleep(0.05)
        for s, r in left.items():
            files = [r["ring"]] if r["lag"] else []
            files += [k["ring"] for k in r["kept_rings"] if k["unpersisted"]]
            log.warning("shard %s: %d journal events not persisted at exit (produced %d, persisted %s; %s): they "
                        "stay in %s until bot4d-persist drains them", s, r["backlog"], r["produced"],
                        r["persisted"],
                        f"bot4d-persist pid {r['consumer_pid']} still draining after {timeout_s} s"
                        if r["consumer_pid"] else "no bot4d-persist attached", ", ".join(files))
        return left
