"""Write validated journal batches to PostgreSQL with binary COPY, cursor in the same transaction.

``JournalWriter.write(shard, events)`` runs ONE transaction that creates any missing day
partitions, COPYs every event into its table (fixed-width rows built by ``copybin``, NUMERIC
encoded exactly from int64 units; a NULL is a column left out of that COPY's column list)
and moves ``journal_cursor.last_seq`` for the shard from its expected old value to the last
sequence written. Either all of it commits or none: after a crash anywhere the cursor names
exactly the last row that exists, and the sidecar resumes at cursor + 1.

The transaction first locks the shard's cursor row and checks it still holds the value this
writer last saw, so two sidecars draining one shard cannot both commit: the second gets
``CursorConflict`` instead of duplicating rows.

Columns that may be NULL per row (a venue order id of 0 = unknown, a boot that is not known) are
left out of the COPY column list for those rows: a table's rows go out in one COPY per pattern
of present columns, so every COPY stays fixed-width. The venue order id of an order arrives after
its EV_ORDER_NEW (with the venue's acknowledgement): the same transaction sets
``orders.venue_order_id`` from the first order event that names it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import psycopg

from bot4d import records as R
from bot4d.persist import copybin, schema
from bot4d.persist.decode import (FILL_FLAG_RECOVERED, JFLAG_OPENS_POSITION, RISK_KINDS, DecodeError,
                                  RefData, boot_int, validate)

DAY_NS = 86_400 * 10**9
VENUE_IDS_KEPT = 1 << 16  # orders whose venue order id this writer already stored (LRU)


class CursorConflict(RuntimeError):
    """The shard's cursor in the database is not where this writer left it."""


Column = tuple  # (name, pg type, values) or (name, pg type, values, present-mask)


def _cols(ev: np.ndarray, ref: RefData, table: str, boot: np.ndarray) -> list[Column]:
    """(column, pg type, values[, mask]) of one table for the events routed to it (see
    copybin.encode). A column with a mask is present only in the rows the mask selects (NULL in
    the others). ``boot`` is the ring's boot per record as an integer, -1 where unknown."""
    head = [("shard", "smallint", ev["shard"]), ("seq", "bigint", ev["seq"]), ("ts", "timestamptz", ev["ts_ns"])]
    inst = ev["instrument"]
    if table == "orders":
        return head + [
            ("instrument", "integer", inst), ("order_id", "bigint", ev["order_id"]),
            ("client_order_id", "bigint", ev["client_order_id"]), ("side", "smallint", ev["side"]),
            ("order_type", "smallint", ev["order_type"]), ("tif", "smallint", ev["tif"]),
            ("state", "smallint", ev["state"]),
            ("opens_position", "boolean", (ev["aux0"] & JFLAG_OPENS_POSITION) != 0),
            ("flags", "bigint", ev["aux0"]), ("oco_group", "bigint", ev["aux2"]),
            ("price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("stop_price", "numeric", (ev["stop_price"], ref.price_scale, inst)),
            ("take_profit_price", "numeric", (ev["aux1"], ref.price_scale, inst)),
            ("boot", "bigint", boot, boot >= 0),
        ]
    if table == "order_events":
        # states, causes: validated to fit a smallint
        return head + [
            ("instrument", "integer", inst), ("order_id", "bigint", ev["order_id"]),
            ("client_order_id", "bigint", ev["client_order_id"]), ("state", "smallint", ev["state"]),
            ("reason", "integer", ev["reason"]),
            ("price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("filled_qty", "numeric", (ev["filled_qty"], ref.qty_scale, inst)),
            ("from_state", "smallint", ev["aux1"]), ("to_state", "smallint", ev["aux2"]),
            ("detail", "bigint", ev["aux3"]), ("cause", "smallint", ev["aux4"]),
            ("venue_order_id", "bigint", ev["aux0"], ev["aux0"] > 0),
            ("boot", "bigint", boot, boot >= 0),
        ]
    if table == "fills":
        # a fill of another run's order (recovered after a restart) names that run's boot
        fboot = np.where(ev["aux4"] != 0, ev["aux4"], boot)
        return head + [
            ("instrument", "integer", inst), ("order_id", "bigint", ev["order_id"]),
            ("client_order_id", "bigint", ev["client_order_id"]), ("side", "smallint", ev["side"]),
            ("liquidity", "smallint", ev["aux0"]), ("trade_id", "bigint", ev["aux1"]),  # 0..2: validated
            ("price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("fee", "numeric", (ev["fee"], ref.quote_scale, inst)),
            ("recovered", "boolean", (ev["aux3"] & FILL_FLAG_RECOVERED) != 0),
            ("venue_order_id", "bigint", ev["aux2"], ev["aux2"] > 0),
            ("boot", "bigint", fboot, fboot >= 0),
        ]
    if table == "positions":
        return head + [
            ("instrument", "integer", inst),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("avg_price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("realized_pnl", "numeric", (ev["aux0"], ref.quote_scale, inst)),
            ("fees", "numeric", (ev["fee"], ref.quote_scale, inst)),
        ]
    if table == "balances":
        asset = ev["aux0"]  # a known asset id: validated
        return head + [
            ("asset", "integer", asset),
            ("total", "numeric", (ev["qty"], ref.asset_scale, asset)),
            ("locked", "numeric", (ev["filled_qty"], ref.asset_scale, asset)),
        ]
    raise KeyError(table)


def _rows(vals: object, sel: np.ndarray) -> object:
    """The values of the rows ``sel`` selects (a NUMERIC column is (units, scales, index))."""
    if isinstance(vals, tuple):
        units, table, idx = vals
        return units[sel], table, idx[sel]
    return vals[sel]  # type: ignore[index]


def by_presence(cols: list[Column]) -> list[list[tuple[str, str, object]]]:
    """Split a table's columns into fixed-width COPY column sets, one per pattern of the masked
    columns' presence; a masked column is left out of the set where its mask is False."""
    masked = [i for i, c in enumerate(cols) if len(c) > 3]
    if not masked:
        return [[c[:3] for c in cols]]
    n = len(cols[0][2])
    pattern = np.zeros(n, np.int64)
    for bit, i in enumerate(masked):
        pattern |= cols[i][3].astype(np.int64) << bit
    out = []
    for p in np.unique(pattern).tolist():
        sel = pattern == p
        out.append([(c[0], c[1], _rows(c[2], sel)) for i, c in enumerate(cols)
                    if len(c) == 3 or (p >> masked.index(i)) & 1])
    return out


ROUTES: list[tuple[str, tuple[int, ...]]] = [
    ("orders", (R.EV_ORDER_NEW,)),
    ("order_events", (R.EV_ORDER_STATE,)),
    ("fills", (R.EV_FILL,)),
    ("positions", (R.EV_POSITION,)),
    ("balances", (R.EV_BALANCE,)),
]

class JournalWriter:
    """Owns one connection; ``write`` persists a batch of one shard's events atomically."""

    def __init__(self, conn: psycopg.Connection,
                 register: Callable[[psycopg.Connection], object] | None = None) -> None:
        """``register(conn)`` adds instruments the database lacks (the sidecar reads them from the
        daemon's catalog): called before the first reference load and again before an event of
        an unknown instrument is refused."""
        self.conn = conn
        self.mode = schema.check(conn)
        self.register = register
        if register is not None:
            register(conn)
        self.ref = self.load_refs()
        self._days: set[int] = set()
        self._cursor: dict[int, int] = {}
        # (shard, boot, order_id) whose orders.venue_order_id this writer stored already
        self._venue_ids: OrderedDict[tuple[int, int, int], None] = OrderedDict()

    def load_refs(self) -> RefData:
        """Scales of every configured instrument and asset; reload when the tables change."""
        rows = self.conn.execute("SELECT id, price_scale, qty_scale, quote_scale FROM instruments").fetchall()
        size = max((r[0] for r in rows), default=-1) + 1
        ps, qs, cs = (np.full(size, -1, np.int16) for _ in range(3))
        for i, p, q, c in rows:
            ps[i], qs[i], cs[i] = p, q, c
        arows = self.conn.execute("SELECT id, scale FROM assets").fetchall()
        asz = np.full(max((r[0] for r in arows), default=-1) + 1, -1, np.int16)
        for i, s in arows:
            asz[i] = s
        self.conn.commit()
        return RefData(ps, qs, cs, asz)

    def cursor(self, shard: int) -> int:
        """Last persisted sequence of ``shard`` (-1: nothing yet), read from the database."""
        row = self.conn.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s", (shard,)).fetchone()
        self.conn.commit()
        self._cursor[shard] = int(row[0]) if row else -1
        return self._cursor[shard]

    def journal(self, shard: int) -> tuple[int, int, int]:
        """(last_seq, journal_id, seq_base) of ``shard``; (-1, 0, 0) before its first row."""
        row = self.conn.execute("SELECT last_seq, journal_id, seq_base FROM journal_cursor WHERE shard = %s",
                                (shard,)).fetchone()
        self.conn.commit()
        self._cursor[shard] = int(row[0]) if row else -1
        return (int(row[0]), int(row[1]), int(row[2])) if row else (-1, 0, 0)

    def start_journal(self, shard: int, journal_id: int, expect_last: int) -> int:
        """Make ``journal_id`` the shard's journal; its record 0 becomes sequence last_seq + 1.

        Refuses (CursorConflict) if the cursor moved since the caller read ``expect_last``.
        Returns the new seq_base.
        """
        base = expect_last + 1
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("INSERT INTO journal_cursor (shard, last_seq, journal_id, seq_base) VALUES (%s, -1, 0, 0) "
                        "ON CONFLICT (shard) DO NOTHING", (shard,))
            cur.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s FOR UPDATE", (shard,))
            got = cur.fetchone()[0]
            if got != expect_last:
                raise CursorConflict(f"shard {shard}: journal_cursor is {got}, expected {expect_last}")
            cur.execute("UPDATE journal_cursor SET journal_id = %s, seq_base = %s, updated_at = now() "
                        "WHERE shard = %s", (journal_id, base, shard))
        self._cursor[shard] = expect_last
        return base

    def write(self, shard: int, events: np.ndarray, ring_boot: str = "") -> int:
        """Persist ``events`` (consecutive seqs of one shard, starting at cursor + 1).

        ``ring_boot`` is the boot id of the daemon run whose journal ring the events come from
        (``ipc.ring.Ring.boot_id``; "" when the ring names none: then the rows' boot and the
        client order id strings are NULL). Returns the new cursor. Records at or below the cursor
        (re-read after a crash between commit and release) are skipped. If a record cannot be
        stored, the ones before it are committed and DecodeError names it: the cursor stays just
        before it.
        """
        if shard not in self._cursor:
            self.cursor(shard)
        last = self._cursor[shard]
        if len(events) and events["seq"][0] <= last:
            events = events[events["seq"] > last]
        if len(events) == 0:
            return last
        try:
            boot = boot_int(ring_boot) if ring_boot else -1
        except ValueError as e:
            raise DecodeError(shard, last + 1, f"the journal ring's {e}") from None
        good, why = validate(events, shard, last + 1, self.ref)
        if good < len(events) and ("unknown instrument" in why or "unknown asset" in why):
            # instruments may have been added since start: register and reload once before refusing
            if self.register is not None and "unknown instrument" in why:
                self.register(self.conn)
            self.ref = self.load_refs()
            good, why = validate(events, shard, last + 1, self.ref)
        if good:
            self._commit(shard, events[:good], last, boot)
        if good < len(events):
            found = int(events["seq"][good])
            if found != last + 1 + good:
                why += f" (found seq {found})"
            raise DecodeError(shard, last + 1 + good, why)
        return self._cursor[shard]

    def _commit(self, shard: int, ev: np.ndarray, last: int, boot: int) -> None:
        new_last = int(ev["seq"][-1])
        kind = ev["kind"]
        boots = np.full(len(ev), boot, np.int64)
        venue_ids: list[tuple[int, int, int]] = []
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    # lock the shard's cursor row first: a second writer waits here, then sees
                    # the cursor moved and stops before writing a single row
                    if last == -1:
                        cur.execute("INSERT INTO journal_cursor (shard, last_seq, journal_id, seq_base) "
                                    "VALUES (%s, -1, 0, 0) ON CONFLICT (shard) DO NOTHING", (shard,))
                    cur.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s FOR UPDATE", (shard,))
                    row = cur.fetchone()
                    if row is None or row[0] != last:
                        raise CursorConflict(
                            f"shard {shard}: journal_cursor is {row and row[0]}, this writer expected "
                            f"{last} (another writer on this shard?)")
                    self._ensure_days(ev["ts_ns"])
                    for table, kinds in ROUTES:
                        m = np.isin(kind, kinds) if len(kinds) > 1 else kind == kinds[0]
                        if m.any():
                            for cols in by_presence(_cols(ev[m], self.ref, table, boots[m])):
                                self._copy_fixed(cur, table, cols)
                    if boot >= 0:
                        venue_ids = self._set_venue_ids(cur, shard, boot, ev[kind == R.EV_ORDER_STATE])
                    risk = ev[np.isin(kind, RISK_KINDS)]
                    if len(risk):
                        self._copy_risk(cur, risk)
                    ctl = ev[kind == R.EV_CONTROL]
                    if len(ctl):
                        self._copy_control(cur, ctl)
                    cur.execute("UPDATE journal_cursor SET last_seq = %s, updated_at = now() "
                                "WHERE shard = %s", (new_last, shard))
        except BaseException:
            self._days.clear()  # partitions created in the rolled-back transaction are gone too
            self._cursor.pop(shard, None)
            raise
        self._cursor[shard] = new_last
        for k in venue_ids:
            self._venue_ids[k] = None
        while len(self._venue_ids) > VENUE_IDS_KEPT:
            self._venue_ids.popitem(last=False)

    def _set_venue_ids(self, cur: psycopg.Cursor, shard: int, boot: int,
                       states: np.ndarray) -> list[tuple[int, int, int]]:
        """orders.venue_order_id of the orders these order events name a venue id for, unless this
        writer already stored it; returns the (shard, boot, order_id) keys it stored."""
        named = states[states["aux0"] > 0]
        if not len(named):
            return []
        oids, first = np.unique(named["order_id"], return_index=True)
        vids = named["aux0"][first]
        keep = [(int(o), int(v)) for o, v in zip(oids.tolist(), vids.tolist())
                if (shard, boot, o) not in self._venue_ids]
        if not keep:
            return []
        cur.execute("UPDATE orders o SET venue_order_id = v.vid "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS v(oid, vid) "
                    "WHERE o.shard = %s AND o.boot = %s AND o.order_id = v.oid AND o.venue_order_id IS NULL",
                    ([o for o, _ in keep], [v for _, v in keep], shard, boot))
        return [(shard, boot, o) for o, _ in keep]

    def _ensure_days(self, ts_ns: np.ndarray) -> None:
        if self.mode != "native":
            return
        days = np.unique(ts_ns // DAY_NS)
        for d in days.tolist():
            if d not in self._days:
                self.conn.execute("SELECT bot4d_ensure_day(DATE '1970-01-01' + %s::int)", (d,))
                self._days.add(d)

    @staticmethod
    def _copy_fixed(cur: psycopg.Cursor, table: str, cols: list[tuple[str, str, object]]) -> None:
        names = ", ".join(c[0] for c in cols)
        payload = copybin.encode(cols)
        with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copybin.HEADER)
            cp.write(payload)
            cp.write(copybin.TRAILER)

    def _copy_risk(self, cur: psycopg.Cursor, ev: np.ndarray) -> None:
        """Risk events; those about no instrument omit instrument/price/qty, which COPY makes NULL."""
        inst = ev["instrument"]
        with_inst = inst >= 0
        for sel, full in ((ev[with_inst], True), (ev[~with_inst], False)):
            if not len(sel):
                continue
            i = sel["instrument"]
            cols = [("shard", "smallint", sel["shard"]), ("seq", "bigint", sel["seq"]),
                    ("ts", "timestamptz", sel["ts_ns"]), ("kind", "smallint", sel["kind"]),
                    ("order_id", "bigint", sel["order_id"]), ("client_order_id", "bigint", sel["client_order_id"]),
                    ("side", "smallint", sel["side"]), ("state", "smallint", sel["state"]),
                    ("reason", "integer", sel["reason"]), ("aux0", "bigint", sel["aux0"]),
                    ("aux1", "bigint", sel["aux1"])]
            if full:
                cols += [("instrument", "integer", i),
                         ("price", "numeric", (sel["price"], self.ref.price_scale, i)),
                         ("qty", "numeric", (sel["qty"], self.ref.qty_scale, i))]
            self._copy_fixed(cur, "risk_events", cols)

    def _copy_control(self, cur: psycopg.Cursor, ev: np.ndarray) -> None:
        inst = ev["instrument"]
        with_inst = inst >= 0
        for sel, full in ((ev[with_inst], True), (ev[~with_inst], False)):
            if not len(sel):
                continue
            cols = [("shard", "smallint", sel["shard"]), ("seq", "bigint", sel["seq"]),
                    ("ts", "timestamptz", sel["ts_ns"]), ("command", "integer", sel["reason"]),
                    ("uid", "bigint", sel["aux0"]), ("pid", "bigint", sel["aux1"]),
                    ("order_id", "bigint", sel["order_id"]), ("arg0", "bigint", sel["aux2"]),
                    ("arg1", "bigint", sel["aux3"])]
            if full:
                cols.append(("instrument", "integer", sel["instrument"]))
            self._copy_fixed(cur, "control_audit", cols)
