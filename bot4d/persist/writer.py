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
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import psycopg

from bot4d import records as R
from bot4d.persist import copybin, schema
from bot4d.persist.decode import (JFLAG_OPENS_POSITION, RISK_KINDS, DecodeError, RefData,
                                  validate)

DAY_NS = 86_400 * 10**9


class CursorConflict(RuntimeError):
    """The shard's cursor in the database is not where this writer left it."""


def _cols(ev: np.ndarray, ref: RefData, table: str) -> list[tuple[str, str, object]]:
    """(column, pg type, values) of one table for the events routed to it (see copybin.encode)."""
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
        ]
    if table == "order_events":
        return head + [
            ("instrument", "integer", inst), ("order_id", "bigint", ev["order_id"]),
            ("client_order_id", "bigint", ev["client_order_id"]), ("state", "smallint", ev["state"]),
            ("reason", "integer", ev["reason"]), ("venue_order_id", "bigint", ev["aux0"]),
            ("price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("filled_qty", "numeric", (ev["filled_qty"], ref.qty_scale, inst)),
        ]
    if table == "fills":
        return head + [
            ("instrument", "integer", inst), ("order_id", "bigint", ev["order_id"]),
            ("client_order_id", "bigint", ev["client_order_id"]), ("side", "smallint", ev["side"]),
            ("liquidity", "smallint", ev["aux0"]), ("trade_id", "bigint", ev["aux1"]),  # 0..2: validated
            ("price", "numeric", (ev["price"], ref.price_scale, inst)),
            ("qty", "numeric", (ev["qty"], ref.qty_scale, inst)),
            ("fee", "numeric", (ev["fee"], ref.quote_scale, inst)),
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

    def write(self, shard: int, events: np.ndarray) -> int:
        """Persist ``events`` (consecutive seqs of one shard, starting at cursor + 1).

        Returns the new cursor. Records at or below the cursor (re-read after a crash between
        commit and release) are skipped. If a record cannot be stored, the ones before it are
        committed and DecodeError names it: the cursor stays just before it.
        """
        if shard not in self._cursor:
            self.cursor(shard)
        last = self._cursor[shard]
        if len(events) and events["seq"][0] <= last:
            events = events[events["seq"] > last]
        if len(events) == 0:
            return last
        good, why = validate(events, shard, last + 1, self.ref)
        if good < len(events) and ("unknown instrument" in why or "unknown asset" in why):
            # instruments may have been added since start: register and reload once before refusing
            if self.register is not None and "unknown instrument" in why:
                self.register(self.conn)
            self.ref = self.load_refs()
            good, why = validate(events, shard, last + 1, self.ref)
        if good:
            self._commit(shard, events[:good], last)
        if good < len(events):
            found = int(events["seq"][good])
            if found != last + 1 + good:
                why += f" (found seq {found})"
            raise DecodeError(shard, last + 1 + good, why)
        return self._cursor[shard]

    def _commit(self, shard: int, ev: np.ndarray, last: int) -> None:
        new_last = int(ev["seq"][-1])
        kind = ev["kind"]
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
                        sel = ev[np.isin(kind, kinds)] if len(kinds) > 1 else ev[kind == kinds[0]]
                        if len(sel):
                            self._copy_fixed(cur, table, _cols(sel, self.ref, table))
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
