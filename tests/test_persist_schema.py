"""Schema migrations, version checks, exact NUMERIC and the rules held by the database."""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings, strategies as st

from bot4d.fixedpoint import INT64_MAX, INT64_MIN, from_fixed
from bot4d.persist import copybin, schema, synth
from bot4d.persist.writer import JournalWriter

pytest_plugins = ["tests.pg"]


def test_migrate_fresh_then_idempotent_and_reports_native_mode(pg_db):
    logs = []
    assert schema.migrate(pg_db, log=logs.append) == schema.code_version()
    assert len(logs) == schema.code_version() and "001_core" in logs[0] and "native" in logs[0]
    assert schema.migrate(pg_db, log=logs.append) == schema.code_version()
    assert len(logs) == schema.code_version()  # nothing applied the second time
    with psycopg.connect(pg_db) as c:
        assert schema.check(c) == "native"
        parts = {r[0] for r in c.execute(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")}
        assert parts == {"fills", "order_events", "md_tops"}


def test_database_ahead_of_code_is_refused_by_migrate_and_writer(pg_db):
    schema.migrate(pg_db, log=lambda *_: None)
    with psycopg.connect(pg_db) as c:
        c.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')",
                  (schema.code_version() + 1,))
    with pytest.raises(schema.SchemaError, match="ahead|knows only up to"):
        schema.migrate(pg_db, log=lambda *_: None)
    with psycopg.connect(pg_db) as c, pytest.raises(schema.SchemaError, match="knows only up to"):
        JournalWriter(c)


def test_writer_refuses_unmigrated_database(pg_db):
    with psycopg.connect(pg_db) as c, pytest.raises(schema.SchemaError, match="bot4d-persist migrate"):
        JournalWriter(c)


def test_cli_migrate_and_status(pg_db, capsys):
    from bot4d.persist.main import main

    assert main(["migrate", "--dsn", pg_db]) == 0
    assert "storage mode native" in capsys.readouterr().out
    assert main(["status", "--dsn", pg_db]) == 0
    assert f"schema version {schema.code_version()}" in capsys.readouterr().out


def test_upgrade_from_version_1_keeps_old_rows_and_decodes_their_transitions(pg_db):
    """Migration 002 on a database with rows written under 001: order_events.venue_order_id held
    the kernel's aux0 (the state before, the refused target of R_ILLEGAL, the report kind of a
    refused report), never a venue id. It keeps that raw value as aux0_v1, decodes the transition
    where its old meaning is certain, and leaves the new join columns NULL for old rows."""
    assert schema.migrate(pg_db, log=lambda *_: None, upto=1) == 1
    with psycopg.connect(pg_db, autocommit=True) as c:
        synth.setup_reference(c)
        c.execute("SELECT bot4d_ensure_day('2026-11-18')")
        ins = ("INSERT INTO order_events (shard, seq, ts, instrument, order_id, client_order_id, state, reason, "
               "venue_order_id, price, qty, filled_qty) VALUES (0, %s, '2026-11-18T01:00:00Z', 0, 5, 5, %s, %s, %s, 1, 1, 0)")
        c.execute(ins, (1, 3, 0, 2))    # SUBMITTED -> ACKED
        c.execute(ins, (2, 4, 1, 3))    # R_ILLEGAL: stayed PARTIALLY_FILLED, ACKED refused
        c.execute(ins, (3, 0, 2, 3))    # R_UNKNOWN_ORDER: a fill report (kind 3) for no order
        c.execute("INSERT INTO fills (shard, seq, ts, instrument, order_id, client_order_id, side, liquidity, "
                  "trade_id, price, qty, fee) VALUES (0, 4, '2026-11-18T01:00:00Z', 0, 5, 5, 0, 1, 77, 1, 1, 0)")
    logs = []
    assert schema.migrate(pg_db, log=logs.append) == schema.code_version()
    assert logs == [f"applied migration {m.version:03d}_{m.name} (native)" for m in schema.available()[1:]]
    with psycopg.connect(pg_db) as c:
        assert c.execute("SELECT seq, aux0_v1, from_state, to_state, venue_order_id, boot, venue_client_order_id "
                         "FROM order_events ORDER BY seq").fetchall() == [
            (1, 2, 2, 3, None, None, None), (2, 3, 4, 3, None, None, None), (3, 3, None, None, None, None, None)]
        assert c.execute("SELECT recovered, boot, venue_order_id, venue_client_order_id FROM fills").fetchone() == \
            (False, None, None, None)
        # the database builds the client order id string the venue knows from the boot
        assert c.execute("SELECT bot4d_boot_text(0), bot4d_boot_text(%s), bot4d_venue_client_order_id(%s, 2::smallint, 77)",
                         (36**6 - 1, int("k3x9q1", 36))).fetchone() == ("000000", "zzzzzz", "b4k3x9q1-2-77")
    with pytest.raises(schema.SchemaError, match="no migration 9"):
        schema.migrate(pg_db, upto=9)


def test_timescale_rendering_turns_markers_into_hypertables():
    # TimescaleDB is not installed here (not in Debian's archive): check the text we would run.
    sql = schema.available()[0].path.read_text()
    ts = schema.render(sql, "timescaledb")
    code = "\n".join(line for line in ts.splitlines() if not line.lstrip().startswith("--"))
    assert "PARTITION BY" not in code and "@TIMESERIES" not in code
    for t in ("fills", "order_events", "md_tops"):
        assert f"SELECT create_hypertable('{t}', 'ts', chunk_time_interval => interval '1 day');" in ts
    nat = "\n".join(line for line in schema.render(sql, "native").splitlines()
                     if not line.lstrip().startswith("--"))
    assert nat.count("PARTITION BY RANGE (ts)") == 3 and "create_hypertable" not in nat
    for m in schema.available()[1:]:  # later migrations alter tables: the same text in both modes
        sql = m.path.read_text()
        assert "@TIMESERIES" not in sql and schema.render(sql, "timescaledb") == schema.render(sql, "native") == sql


def _roundtrip(conn, units, scales):
    """Send through the numba encoder, after checking it writes the numpy reference's bytes."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS n (i integer, v numeric, t timestamptz)")
    conn.execute("TRUNCATE n")
    idx = np.arange(len(units))
    ts = np.array([946_684_800 * 10**9 + u % (10**18) for u in units], np.int64)
    cols = [("i", "integer", idx.astype(np.int32)),
            ("v", "numeric", (np.array(units, np.int64), np.array(scales, np.int16), idx)),
            ("t", "timestamptz", ts)]
    payload = copybin.encode(cols)
    assert payload == copybin.encode(cols, kernels=False)
    with conn.cursor().copy("COPY n (i, v, t) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(copybin.HEADER + payload + copybin.TRAILER)
    rows = conn.execute("SELECT v, t FROM n ORDER BY i").fetchall()
    for (_, t), want in zip(rows, ts.tolist()):
        assert int(t.timestamp()) * 10**6 + t.microsecond == want // 1000
    return [r[0] for r in rows]


def test_numeric_encoding_edges_are_exact(pg_db):
    units = [0, 1, -1, 5, -5, INT64_MAX, INT64_MIN, 10**18, -(10**18), 123456789, 99990000, 10000]
    scales = [0, 18, 18, 3, 3, 18, 0, 18, 10, 8, 4, 0]
    with psycopg.connect(pg_db) as c:
        got = _roundtrip(c, units, scales)
    assert got == [from_fixed(u, s) for u, s in zip(units, scales)]
    assert got[5] == Decimal("9.223372036854775807") and got[6] == Decimal(INT64_MIN)
    assert str(got[3]) == "0.005"  # dscale carries the instrument's scale


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(INT64_MIN, INT64_MAX), st.integers(0, 18)), min_size=1, max_size=50))
def test_numeric_encoding_matches_decimal(pg_server, pairs):
    with psycopg.connect(pg_server.conninfo("postgres")) as c:
        got = _roundtrip(c, [p[0] for p in pairs], [p[1] for p in pairs])
    assert got == [from_fixed(u, s) for u, s in pairs]


def _order(conn, **kw):
    row = dict(shard=0, seq=1, ts="2026-11-18T00:00:00Z", instrument=0, order_id=1, client_order_id=1,
               side=0, order_type=1, tif=1, state=1, opens_position=True, flags=1, oco_group=0,
               price=Decimal("100.00"), qty=Decimal("0.5"), stop_price=Decimal("90.00"),
               take_profit_price=Decimal(0))
    row.update(kw)
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO orders ({cols}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


def test_database_holds_the_rules(persist_db):
    with psycopg.connect(persist_db, autocommit=True) as c:
        _order(c)  # a valid opening order with a stop-loss
        _order(c, seq=2, order_id=2, opens_position=False, stop_price=Decimal(0))  # reducing: no stop needed
        with pytest.raises(psycopg.errors.CheckViolation, match="opening_order_has_stop_loss"):
            _order(c, seq=3, order_id=3, stop_price=Decimal(0))
        with pytest.raises(psycopg.errors.CheckViolation):
            _order(c, seq=4, order_id=4, qty=Decimal(0))
        with pytest.raises(psycopg.errors.CheckViolation):
            _order(c, seq=5, order_id=5, qty=Decimal("-1"))
        with pytest.raises(psycopg.errors.UniqueViolation):
            _order(c, seq=1, order_id=6)  # one row per journal record
        # position caps: BTCUSDT (id 0) is capped at 50, ETHUSDT (id 1) has no cap
        ins = ("INSERT INTO positions (shard, seq, ts, instrument, qty, avg_price, realized_pnl, fees) "
               "VALUES (0, %s, now(), %s, %s, 1, 0, 0)")
        c.execute(ins, (10, 0, Decimal("-50")))
        c.execute(ins, (11, 1, Decimal("1000000")))
        with pytest.raises(psycopg.errors.CheckViolation, match="exceeds its cap 50"):
            c.execute(ins, (12, 0, Decimal("50.00001")))
        with pytest.raises(psycopg.errors.RaiseException, match="cannot be deleted"):
            c.execute("DELETE FROM instruments WHERE id = 2")
        c.execute("SELECT bot4d_ensure_day('2026-11-18')")
        fill = ("INSERT INTO fills (shard, seq, ts, instrument, order_id, client_order_id, side, liquidity, "
                "trade_id, price, qty, fee) VALUES (0, %s, '2026-11-18T12:00:00Z', 0, 1, 1, 0, 1, 1, 100, %s, 0)")
        c.execute(fill, (20, Decimal("0.1")))
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute(fill, (21, Decimal(0)))
