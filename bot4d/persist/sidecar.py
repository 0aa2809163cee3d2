"""The sidecar loop: one pump per shard drains that shard's journal ring into PostgreSQL.

Exactly-once, without a distributed transaction:

1. The pump reads records from its gating slot *without consuming them* (``read_batch``).
2. ``JournalWriter.write`` commits the rows and the shard's ``journal_cursor.last_seq`` in one
   PostgreSQL transaction.
3. Only then does the pump ``commit`` the gating slot to ``last_seq + 1``, letting the producer
   reuse that space.

A crash between 2 and 3 leaves the slot behind the database; on restart the pump starts at the
database cursor + 1 (``open_slot(slot, start_seq)`` moves the slot forward) and the writer skips
anything at or below the cursor. A crash before 2 leaves both where they were. While PostgreSQL
is away the pump reconnects with capped exponential backoff; the slot does not move, the ring
fills, and the producer applies its own policy (block or fail-and-count): no record is dropped.

A restarted daemon creates a new ring that counts from 0 again. The database remembers which
ring it follows (``journal_cursor.journal_id`` = the ring's ``journal_id``, its creation time) and
the shard sequence of that ring's record 0 (``seq_base``); a new ring whose records are all still
unreleased is adopted with ``seq_base`` = last persisted + 1, so a shard's sequence never repeats.

Following the daemon across restarts: the pump maps one ring at a time. While idle it checks
whether that ring is finished — its name leads to another file (the daemon restarted and created a
new ring, or kept the old one aside), its producer is dead, and every record up to its final
cursor is persisted — and only then moves on, to the oldest of the shard's journals still holding
records: kept journals of earlier runs (``<name>-kept-<journal_id>``, which a restarting daemon
leaves instead of replacing a journal that is not drained: ``ipc.ring.keep_if_undrained``) before
the current one. A kept journal it drained is removed. So the old ring's tail always precedes
the new ring's record 0 in the shard's sequence, whether the sidecar ran through the restart or
was started afterwards.

Ring naming: shard ``i`` of instance ``X`` journals into ``/dev/shm/bot4d.X.journal-i`` (format
``--ring-name``), gating slot 0 is the sidecar's. The pump's lag (events not yet persisted and
age of the oldest of them, µs), rows persisted, reconnects, rings finished and its state are
published in the counters segment ``bot4d.X.persist`` for monitors. Its first counters (fixed
positions, listed in the daemon's catalog, so the exporter shows them) are instance-wide: the
events and rings of the instance's journals that no live consumer holds, and the kept journals
present. A journal whose backlog has had no consumer for ``alarm_after_s`` is also logged, with
its growth, while it lasts (e.g. a shard missing from ``--shards``).

Instruments: at every connect, and again before an event of an unknown instrument is refused,
the pump registers the instruments of instance X's catalog (``bot4d.persist.register``); a
catalog that contradicts the database stops the sidecar.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass

import numpy as np
import psycopg

from bot4d.records import JOURNAL_EVENT_DTYPE
from bot4d.monitor.catalog import NoCatalog
from bot4d.persist.decode import DecodeError
from bot4d.persist.register import RegistrationError, register_from_catalog
from bot4d.persist.writer import CursorConflict, JournalWriter
from ipc import ring as R
from ipc.counters import Counters
from ipc.segment import PREFIX, SHM_DIR, SegmentError

log = logging.getLogger("bot4d.persist")

# pump states published in the counters area
ST_STARTING, ST_RUNNING, ST_DB_DOWN, ST_WAITING_RING, ST_STOPPED, ST_FAILED = 0, 1, 2, 3, 4, 5
PER_SHARD = ("state", "lag_events", "lag_us", "persisted", "batches", "reconnects", "last_seq", "rings_done")
# instance-wide, always first: the daemon's catalog names them by index (bot4d.telemetry)
GLOBAL = ("unconsumed_events", "unconsumed_rings", "kept_rings")


class FatalError(RuntimeError):
    """Stop the sidecar: continuing could lose or misfile events (the message says why)."""


def counter_names(shards: list[int]) -> list[str]:
    return [*GLOBAL, *(f"shard{s}_{n}" for s in shards for n in PER_SHARD)]


def ring_pattern(ring_name: str) -> re.Pattern[str]:
    """Names of an instance's journals for a ``--ring-name`` format (``fullmatch``): group
    ``shard``, and ``kept`` (a journal id) for a kept journal of an earlier daemon run."""
    pre, _, post = ring_name.partition("{shard}")
    return re.compile(re.escape(pre) + r"(?P<shard>\d+)" + re.escape(post)
                      + "(?:" + re.escape(R.KEPT_INFIX) + r"(?P<kept>\d+))?")


@dataclass
class PumpConfig:
    conninfo: str
    instance: str
    shard: int
    ring_name: str = "journal-{shard}"
    slot: int = 0
    batch: int = 32768
    idle_sleep_s: float = 0.002
    # a short batch waits up to this long for more records: every transaction costs a few ms of
    # fixed work (seven COPYs, cursor, commit), so tiny batches under load would cap throughput
    linger_s: float = 0.005
    backoff_min_s: float = 0.05
    backoff_max_s: float = 2.0
    ring_wait_s: float | None = None  # None: wait for the ring forever


class ShardPump:
    """Drains one shard's journal rings; ``run`` returns on ``stop`` or raises FatalError."""

    def __init__(self, cfg: PumpConfig, counters: Counters | None, stop: threading.Event) -> None:
        self.cfg = cfg
        self.counters = counters
        self.stop = stop
        self.name = cfg.ring_name.format(shard=cfg.shard)
        self.ring: R.Ring | None = None
        self.writer: JournalWriter | None = None
        self.next_seq = 0      # next ring sequence to persist
        self.base = 0          # the shard's sequence of this ring's record 0
        self.persisted = 0
        self.reconnects = 0
        self.rings_done = 0
        self._buf = np.empty(cfg.batch, JOURNAL_EVENT_DTYPE)
        self._one = np.empty(1, JOURNAL_EVENT_DTYPE)
        self._pfx = f"shard{cfg.shard}_"
        self._connecting = False

    # --- monitoring ----------------------------------------------------------------------------
    def _set(self, name: str, v: int) -> None:
        if self.counters is not None:
            self.counters.set(self._pfx + name, int(v))

    def _publish_lag(self) -> None:
        ring = self.ring
        if ring is None:
            return
        head = ring.cursor
        lag = max(0, head - self.next_seq)
        age_us = 0
        if lag:
            n = R.read_batch(ring.records, ring.ctrl, self.cfg.slot, self.next_seq, self._one, 1)
            if n == 1:
                age_us = max(0, (time.time_ns() - int(self._one["ts_ns"][0])) // 1000)
        self._set("lag_events", lag)
        self._set("lag_us", age_us)

    # --- set-up --------------------------------------------------------------------------------
    def _register(self, conn: psycopg.Connection) -> None:
        """Add the instruments of the daemon's catalog the database lacks (JournalWriter hook)."""
        try:
            got = register_from_catalog(conn, self.cfg.instance)
        except NoCatalog as e:
            # before the daemon starts there is none; when an event needs one, say why it failed
            log.log(logging.INFO if self._connecting else logging.WARNING,
                    "shard %d: cannot register instruments from the catalog: %s", self.cfg.shard, e)
            return
        if got.added:
            log.info("shard %d: registered instruments %s from the catalog of %s", self.cfg.shard,
                     ", ".join(f"{i.id}={i.venue}:{i.symbol}" for i in got.added), self.cfg.instance)

    def _attach(self, name: str) -> R.Ring | None:
        """The journal ``name``, or None while there is none (or its creator is still building it)."""
        try:
            ring = R.Ring.attach(self.cfg.instance, name, readonly=False, dtype=JOURNAL_EVENT_DTYPE)
        except SegmentError as e:
            if "no such segment" in str(e) or "never completely initialised" in str(e):
                return None
            # wrong layout, wrong kind, corrupt header: never guess at records
            raise FatalError(f"shard {self.cfg.shard}: cannot use journal ring: {e}") from None
        if ring.ring_kind != "journal":
            ring.close()
            raise FatalError(f"shard {self.cfg.shard}: ring {name} is a {ring.ring_kind}, not a journal")
        return ring

    def _candidates(self) -> list[R.Ring]:
        """The shard's journals, kept ones of earlier runs (oldest first), then the current one.

        The current name is looked at first: a daemon keeps its old journal aside *before* it
        creates the new one, so a kept journal renamed meanwhile is in the list read after. A
        journal seen under both names (same id) is taken once.
        """
        cur = self._attach(self.name)
        kept = [r for r in (self._attach(k) for k in R.kept_rings(self.cfg.instance, self.name)) if r is not None]
        out: list[R.Ring] = []
        for r in kept + ([cur] if cur is not None else []):
            if any(o.journal_id == r.journal_id for o in out):
                r.close()
            else:
                out.append(r)
        return out

    def _next_ring(self) -> R.Ring:
        """The oldest journal of the shard still to follow; waits for one to appear.

        A kept journal whose producer is dead and whose records were all taken holds nothing to
        persist (a sidecar stopped after draining it, before removing it): it is removed here.
        """
        t0 = time.monotonic()
        while not self.stop.is_set():
            pick = None
            for r in self._candidates():
                if self._spent(r):
                    self._remove_if_kept(r)
                    r.close()
                elif pick is None:
                    pick = r
                else:
                    r.close()
            if pick is not None:
                return pick
            if self.cfg.ring_wait_s is not None and time.monotonic() - t0 > self.cfg.ring_wait_s:
                raise FatalError(f"shard {self.cfg.shard}: no journal ring {self.name} of instance "
                                 f"{self.cfg.instance} appeared within {self.cfg.ring_wait_s} s")
            self._set("state", ST_WAITING_RING)
            time.sleep(0.05)
        raise _Stopped

    def _spent(self, ring: R.Ring) -> bool:
        """A kept journal with nothing left to persist (producer dead, every record taken)."""
        return (not ring.is_named(self.cfg.instance, self.name) and not ring.segment.owner_alive()
                and ring.unconsumed() == 0)

    def _remove_if_kept(self, ring: R.Ring) -> None:
        gone = R.remove_kept(ring, self.cfg.instance, self.name)
        if gone:
            log.info("shard %d: kept journal %s (boot %s) is drained: removed", self.cfg.shard, gone,
                     ring.boot_id or "?")

    def _finished(self) -> bool:
        """The followed ring will never hold more to persist and another journal took its name:
        its producer is dead (checked first: a cursor read after that is final) and every record
        up to that cursor is persisted."""
        ring = self.ring
        assert ring is not None
        if ring.is_named(self.cfg.instance, self.name) or ring.segment.owner_alive():
            return False
        return ring.cursor <= self.next_seq

    def _connect(self) -> JournalWriter:
        """Connect (with backoff while PostgreSQL is away) and position at the database cursor."""
        delay = self.cfg.backoff_min_s
        first = True
        while not self.stop.is_set():
            try:
                conn = psycopg.connect(self.cfg.conninfo, connect_timeout=5)
            except psycopg.OperationalError as e:
                if first:
                    log.warning("shard %d: PostgreSQL unavailable (%s); retrying with backoff",
                                self.cfg.shard, str(e).strip().splitlines()[0])
                    first = False
                self._set("state", ST_DB_DOWN)
                self._publish_lag()  # monitors see the journal filling while we wait
                self.stop.wait(delay)
                delay = min(delay * 2, self.cfg.backoff_max_s)
                continue
            try:
                self._connecting = True
                # refuses a schema behind or ahead of this code, registers the catalog's instruments
                w = JournalWriter(conn, register=self._register)
                self._position(w)
            except psycopg.OperationalError:
                conn.close()
                continue
            except FatalError:
                conn.close()
                raise
            except Exception as e:
                conn.close()
                raise FatalError(f"shard {self.cfg.shard}: {e}") from None
            finally:
                self._connecting = False
            return w
        raise _Stopped

    def _position(self, w: JournalWriter) -> None:
        """Continue the followed ring where the database's cursor says (adopting a new ring)."""
        last, jid, base = w.journal(self.cfg.shard)
        ring_id = self.ring.journal_id  # type: ignore[union-attr]
        if jid != ring_id:
            base = self._adopt_journal(w, ring_id, last, jid)
        self.base = base
        self._resume_at(last + 1 - base)

    def _adopt_journal(self, w: JournalWriter, ring_id: int, last: int, old_id: int) -> int:
        """A ring the database has not seen (the daemon restarted): continue the shard's
        sequence with it. Only a ring none of whose records were released yet qualifies."""
        ring = self.ring
        assert ring is not None
        if ring.slot_position(self.cfg.slot) != 0:
            raise FatalError(
                f"shard {self.cfg.shard}: journal ring (id {ring_id}) is not the one the database "
                f"follows (id {old_id}) and {ring.slot_position(self.cfg.slot)} of its records were "
                "already released by someone else: refusing to guess where it continues")
        if ring_id < old_id:
            # not expected (the pump drains a shard's journals oldest first): persisted all the
            # same, after the newer one, rather than left behind
            log.warning("shard %d: journal %d (boot %s) is older than the database's journal %d: its "
                        "events follow the newer ones in the shard's sequence", self.cfg.shard, ring_id,
                        ring.boot_id or "?", old_id)
        base = w.start_journal(self.cfg.shard, ring_id, last)
        log.log(logging.INFO if old_id == 0 else logging.WARNING,
                "shard %d: new journal ring (id %d, boot %s, was %d): its record 0 is sequence %d",
                self.cfg.shard, ring_id, ring.boot_id or "?", old_id, base)
        return base

    def _resume_at(self, seq: int) -> None:
        """Position at ring sequence ``seq`` (the database's cursor + 1, in this ring's numbers)."""
        ring = self.ring
        assert ring is not None
        pos = ring.slot_position(self.cfg.slot)
        if pos > seq:
            raise FatalError(
                f"shard {self.cfg.shard}: the journal slot is at {pos} but the database holds up to "
                f"{seq - 1}: records {seq}..{pos - 1} were released without being persisted "
                "(another consumer on this slot, or a database restored from an older backup)")
        if seq > ring.cursor:
            raise FatalError(
                f"shard {self.cfg.shard}: the database holds up to {seq - 1} but the journal has only "
                f"{ring.cursor} records: this ring is not the journal the database was filled from")
        ring.open_slot(self.cfg.slot, start_seq=seq)
        self.next_seq = seq
        self._set("last_seq", self.base + seq - 1)

    def _switch(self) -> None:
        """The followed ring is finished: remove it if it is a kept journal, follow the next."""
        old = self.ring
        assert old is not None
        log.info("shard %d: journal %d (boot %s) finished at ring sequence %d (shard sequence %d)",
                 self.cfg.shard, old.journal_id, old.boot_id or "?", self.next_seq, self.base + self.next_seq - 1)
        self._remove_if_kept(old)
        old.close()
        self.ring = None
        self.rings_done += 1
        self._set("rings_done", self.rings_done)
        self.ring = self._next_ring()
        try:
            self._position(self.writer)  # type: ignore[arg-type]
        except psycopg.OperationalError:
            self._reconnect(None)
        self._set("state", ST_RUNNING)

    def _reconnect(self, e: Exception | None) -> None:
        if e is not None:
            log.warning("shard %d: lost PostgreSQL (%s); reconnecting", self.cfg.shard,
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        self._set("state", ST_DB_DOWN)
        try:
            self.writer.conn.close()  # type: ignore[union-attr]
        except Exception:
            pass
        self.reconnects += 1
        self._set("reconnects", self.reconnects)
        # the commit may or may not have happened: the database cursor decides
        self.writer = self._connect()
        self._set("state", ST_RUNNING)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except _Stopped:
            pass
        finally:
            self._set("state", ST_STOPPED if not getattr(self, "_failed", False) else ST_FAILED)
            if self.writer is not None:
                self.writer.conn.close()

    def _run(self) -> None:
        cfg = self.cfg
        self._set("state", ST_STARTING)
        self.ring = self._next_ring()
        self.writer = self._connect()
        self._set("state", ST_RUNNING)
        last_lag = 0.0
        last_check = 0.0
        short_since = 0.0
        while not self.stop.is_set():
            ring = self.ring
            n = R.read_batch(ring.records, ring.ctrl, cfg.slot, self.next_seq, self._buf, cfg.batch)
            if n < 0:
                raise FatalError(f"shard {cfg.shard}: journal slot moved past {self.next_seq} under us")
            if n == 0:
                now = time.monotonic()
                if now - last_check > 0.05:
                    last_check = now
                    if self._finished():
                        self._switch()
                        continue
                self._publish_lag()
                self.stop.wait(cfg.idle_sleep_s)
                continue
            if n < cfg.batch // 4:
                now = time.monotonic()
                if short_since == 0.0:
                    short_since = now
                if now - short_since < cfg.linger_s:
                    time.sleep(0.0005)
                    continue
            short_since = 0.0
            batch = self._buf[:n]
            if self.base:
                batch["seq"] += self.base  # ring numbers -> the shard's sequence
            try:
                last = self.writer.write(cfg.shard, batch, ring.boot_id) - self.base
            except DecodeError as e:
                # the records before the bad one are committed: release exactly those
                self._advance(e.seq - self.base)
                self._failed = True
                raise FatalError(str(e)) from None
            except CursorConflict as e:
                self._failed = True
                raise FatalError(str(e)) from None
            except (RegistrationError, SegmentError) as e:
                # the catalog contradicts the database, or cannot be read: nothing is persisted
                self._failed = True
                raise FatalError(f"shard {cfg.shard}: {e}") from None
            except psycopg.OperationalError as e:
                self._reconnect(e)
                continue
            except psycopg.Error as e:
                # a constraint of the database refused the rows: a rule the daemon should have held
                self._failed = True
                first = self.base + self.next_seq
                raise FatalError(f"shard {cfg.shard}: PostgreSQL refused journal records "
                                 f"{first}..{first + n - 1}: {e}") from None
            self._advance(last + 1)
            now = time.monotonic()
            if now - last_lag > 0.05:
                self._publish_lag()
                last_lag = now

    def _advance(self, seq: int) -> None:
        """Release ring records below ``seq`` (already committed in PostgreSQL)."""
        ring = self.ring
        assert ring is not None
        if seq > self.next_seq:
            if not R.commit(ring.ctrl, self.cfg.slot, seq):
                raise FatalError(f"shard {self.cfg.shard}: cannot move the journal slot to {seq}")
            self.persisted += seq - self.next_seq
            self.next_seq = seq
            self._set("persisted", self.persisted)
            self._set("last_seq", self.base + seq - 1)
            if self.counters is not None:
                self.counters.add(self._pfx + "batches", 1)


class BacklogWatch:
    """The instance's journals that hold records no live consumer takes: counted in the
    instance-wide counters, and logged once such a backlog has lasted ``alarm_after_s`` (then
    every ``repeat_s`` while it lasts), with its growth.

    Rings are mapped read-only and read with plain loads: the watch never moves a slot.
    """

    def __init__(self, instance: str, ring_name: str, shards: list[int], counters: Counters | None, *,
                 alarm_after_s: float = 5.0, repeat_s: float = 60.0) -> None:
        self.instance = instance
        self.pattern = ring_pattern(ring_name)
        self.shards = set(shards)
        self.counters = counters
        self.alarm_after_s = alarm_after_s
        self.repeat_s = repeat_s
        self._seen: dict[tuple[str, int], list[float]] = {}  # (name, journal id) -> [since, backlog then, logged at]

    def scan(self, now: float | None = None) -> tuple[int, int, int]:
        """(unconsumed events, rings holding them, kept journals present); publishes them."""
        now = time.monotonic() if now is None else now
        pre = f"{PREFIX}.{self.instance}."
        events = rings = kept = 0
        seen: dict[tuple[str, int], list[float]] = {}
        for f in sorted(os.listdir(SHM_DIR)):
            m = self.pattern.fullmatch(f[len(pre):]) if f.startswith(pre) else None
            if m is None:
                continue
            name = f[len(pre):]
            try:
                ring = R.Ring.attach(self.instance, name, readonly=True)
            except SegmentError:
                continue  # removed meanwhile, or not built yet
            try:
                if ring.ring_kind != "journal":
                    continue
                kept += m.group("kept") is not None
                backlog = ring.unconsumed()
                if backlog == 0 or any(ring.consumer_pid(i) for i in range(ring.n_gating)):
                    continue
                events += backlog
                rings += 1
                key = (name, ring.journal_id)
                st = seen[key] = self._seen.get(key) or [now, float(backlog), 0.0]
                if now - st[0] >= self.alarm_after_s and now - st[2] >= self.repeat_s:
                    st[2] = now
                    shard = int(m.group("shard"))
                    why = ("" if shard in self.shards else
                           f"; this sidecar drains shard(s) {sorted(self.shards)}: add {shard} to --shards")
                    log.warning("journal %s (shard %d, boot %s, producer %s) holds %d events no consumer "
                                "takes (%+d in %.0f s)%s", ring.segment.path, shard, ring.boot_id or "?",
                                "alive" if ring.segment.owner_alive() else "dead", backlog,
                                backlog - int(st[1]), now - st[0], why)
            finally:
                ring.close()
        self._seen = seen
        if self.counters is not None:
            self.counters.set("unconsumed_events", events)
            self.counters.set("unconsumed_rings", rings)
            self.counters.set("kept_rings", kept)
        return events, rings, kept


class _Stopped(Exception):
    pass


def run_pumps(cfgs: list[PumpConfig], *, counters: Counters | None = None,
              stop: threading.Event | None = None, watch: BacklogWatch | None = None,
              watch_every_s: float = 1.0) -> int:
    """Run one pump thread per shard until ``stop`` or a fatal error; return an exit code.
    ``watch`` is scanned every ``watch_every_s`` meanwhile."""
    stop = stop or threading.Event()
    errors: list[BaseException] = []
    pumps = [ShardPump(c, counters, stop) for c in cfgs]

    def body(p: ShardPump) -> None:
        try:
            p.run()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=body, args=(p,), name=f"persist-shard{p.cfg.shard}", daemon=True)
               for p in pumps]
    for t in threads:
        t.start()
    scanned = 0.0
    try:
        while any(t.is_alive() for t in threads):
            if watch is not None and time.monotonic() - scanned >= watch_every_s:
                scanned = time.monotonic()
                watch.scan()
            for t in threads:
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    for e in errors:
        log.error("%s", e)
    return 2 if errors else 0
