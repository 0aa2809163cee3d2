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
ring it follows (``journal_cursor.journal_id`` = the segment's creation time) and the shard
sequence of that ring's record 0 (``seq_base``); a new ring whose records are all still unreleased
is adopted with ``seq_base`` = last persisted + 1, so a shard's sequence never repeats. (The
daemon must not replace a journal the sidecar has not drained: ``ring.slot_position`` tells.)

Ring naming: shard ``i`` of instance ``X`` journals into ``/dev/shm/bot4d.X.journal-i`` (format
``--ring-name``), gating slot 0 is the sidecar's. The pump's lag (events not yet persisted and
age of the oldest of them, µs), rows persisted, reconnects and its state are published in the
counters segment ``bot4d.X.persist`` for monitors.

Instruments: at every connect, and again before an event of an unknown instrument is refused,
the pump registers the instruments of instance X's catalog (``bot4d.persist.register``); a
catalog that contradicts the database stops the sidecar.
"""
from __future__ import annotations

import logging
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
from ipc.segment import SegmentError

log = logging.getLogger("bot4d.persist")

# pump states published in the counters area
ST_STARTING, ST_RUNNING, ST_DB_DOWN, ST_WAITING_RING, ST_STOPPED, ST_FAILED = 0, 1, 2, 3, 4, 5
PER_SHARD = ("state", "lag_events", "lag_us", "persisted", "batches", "reconnects", "last_seq")


class FatalError(RuntimeError):
    """Stop the sidecar: continuing could lose or misfile events (the message says why)."""


def counter_names(shards: list[int]) -> list[str]:
    return [f"shard{s}_{n}" for s in shards for n in PER_SHARD]


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
    """Drains one shard's journal ring; ``run`` returns on ``stop`` or raises FatalError."""

    def __init__(self, cfg: PumpConfig, counters: Counters | None, stop: threading.Event) -> None:
        self.cfg = cfg
        self.counters = counters
        self.stop = stop
        self.ring: R.Ring | None = None
        self.writer: JournalWriter | None = None
        self.next_seq = 0      # next ring sequence to persist
        self.base = 0          # the shard's sequence of this ring's record 0
        self.persisted = 0
        self.reconnects = 0
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

    def _attach_ring(self) -> R.Ring:
        name = self.cfg.ring_name.format(shard=self.cfg.shard)
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                ring = R.Ring.attach(self.cfg.instance, name, readonly=False, dtype=JOURNAL_EVENT_DTYPE)
            except SegmentError as e:
                if "no such segment" not in str(e) and "never completely initialised" not in str(e):
                    # wrong layout, wrong kind, corrupt header: never guess at records
                    raise FatalError(f"shard {self.cfg.shard}: cannot use journal ring: {e}") from None
                if self.cfg.ring_wait_s is not None and time.monotonic() - t0 > self.cfg.ring_wait_s:
                    raise FatalError(f"shard {self.cfg.shard}: {e}") from None
                self._set("state", ST_WAITING_RING)
                time.sleep(0.05)
                continue
            if ring.ring_kind != "journal":
                raise FatalError(f"shard {self.cfg.shard}: ring {name} is a {ring.ring_kind}, not a journal")
            return ring
        raise _Stopped

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
                last, jid, base = w.journal(self.cfg.shard)
                ring_id = self.ring.segment.created_ns  # type: ignore[union-attr]
                if jid != ring_id:
                    base = self._adopt_journal(w, ring_id, last, jid)
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
            self.base = base
            self._resume_at(last + 1 - base)
            return w
        raise _Stopped

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
        base = w.start_journal(self.cfg.shard, ring_id, last)
        log.log(logging.INFO if old_id == 0 else logging.WARNING,
                "shard %d: new journal ring (id %d, was %d): its record 0 is sequence %d",
                self.cfg.shard, ring_id, old_id, base)
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
        self.ring = self._attach_ring()
        self.writer = self._connect()
        self._set("state", ST_RUNNING)
        ring = self.ring
        last_lag = 0.0
        short_since = 0.0
        while not self.stop.is_set():
            n = R.read_batch(ring.records, ring.ctrl, cfg.slot, self.next_seq, self._buf, cfg.batch)
            if n < 0:
                raise FatalError(f"shard {cfg.shard}: journal slot moved past {self.next_seq} under us")
            if n == 0:
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
                last = self.writer.write(cfg.shard, batch) - self.base
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
                log.warning("shard %d: lost PostgreSQL (%s); reconnecting", cfg.shard,
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                self._set("state", ST_DB_DOWN)
                try:
                    self.writer.conn.close()
                except Exception:
                    pass
                self.reconnects += 1
                self._set("reconnects", self.reconnects)
                # the commit may or may not have happened: the database cursor decides
                self.writer = self._connect()
                self._set("state", ST_RUNNING)
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


class _Stopped(Exception):
    pass


def run_pumps(cfgs: list[PumpConfig], *, counters: Counters | None = None,
              stop: threading.Event | None = None) -> int:
    """Run one pump thread per shard until ``stop`` or a fatal error; return an exit code."""
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
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    for e in errors:
        log.error("%s", e)
    return 2 if errors else 0
