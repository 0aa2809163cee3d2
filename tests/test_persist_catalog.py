"""bot4d-persist registers the daemon's instruments from its catalog segment.

Real parts throughout: the daemon's own ``Telemetry`` publishes the catalog in /dev/shm under a
unique instance name, PostgreSQL is a real server, the sidecar and the CLI run as processes.
"""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import psycopg
import pytest

from bot4d import records as R
from bot4d.fixedpoint import from_fixed
from bot4d.monitor.catalog import (CatalogError, CatalogInstrument, NoCatalog, catalog_instruments,
                                   read_catalog)
from bot4d.persist import schema, synth
from bot4d.persist.register import (InstrumentConflict, RegistrationError, register_from_catalog,
                                    register_instruments)
from bot4d.telemetry import Telemetry
from ipc.ring import Ring
from tests.test_persist_faults import ENV, cursor, instance, sidecar, wait_for  # noqa: F401 (fixture)

pytest_plugins = ["tests.pg"]

# (venue, symbol, price_scale, qty_scale) in instrument-id order; ids 0..2 agree with synth's
SYNTH = [(v, s, ps, qs) for _, v, s, ps, qs, _, _ in synth.INSTRUMENTS]
KRAKEN = ("kraken", "XBT/USD", 1, 8)


def telemetry(inst: str, instruments: list[tuple[str, str, int, int]]) -> Telemetry:
    return Telemetry(inst, venues=sorted({v for v, *_ in instruments}), instruments=instruments, shards=1,
                     md_reasons=["GAP"], reject_reasons=["MAX_NOTIONAL"], trip_reasons=["MANUAL"])


@pytest.fixture
def migrated(pg_db: str) -> str:
    """A database with the schema and no instruments at all."""
    schema.migrate(pg_db, log=lambda *_: None)
    return pg_db


def instruments_table(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT id, venue, symbol, price_scale, qty_scale, quote_scale FROM instruments "
                         "ORDER BY id").fetchall()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot4d.persist.main", *args], env=ENV, capture_output=True,
                          text=True, timeout=120)


# --- the catalog accessor (bot4d.monitor.catalog) --------------------------------------------------

def test_catalog_lists_the_daemons_instruments_in_id_order(instance):
    inst, _ = instance
    t = telemetry(inst, [*SYNTH, KRAKEN])
    try:
        got = catalog_instruments(read_catalog(inst))
    finally:
        t.close()
    assert got == [CatalogInstrument(i, v, s, ps, qs) for i, (v, s, ps, qs) in enumerate([*SYNTH, KRAKEN])]


def test_malformed_catalogs_are_refused_with_the_reason(instance):
    inst, _ = instance
    t = telemetry(inst, [*SYNTH])
    try:
        good = read_catalog(inst)
    finally:
        t.close()

    def books(m):
        return next(s for s in m["snapshots"] if s["segment"] == "snap-books")

    def both_rows(m, rows):
        for snap in m["snapshots"]:
            snap["rows"] = rows

    def spoil(edit):
        m = copy.deepcopy(good)
        edit(m)
        return m

    cases = [
        (spoil(lambda m: m["snapshots"].pop(0)), "no snapshot 'snap-books'"),
        (spoil(lambda m: books(m)["fields"].pop(1)), "no rows with a 'best_bid' scale list"),
        (spoil(lambda m: books(m)["fields"][1]["scale"].pop()), "3 book rows, 2 price scales"),
        (spoil(lambda m: books(m)["fields"][1]["scale"].__setitem__(1, True)), "price scale is True"),
        (spoil(lambda m: books(m)["fields"][1]["scale"].__setitem__(1, 19)), "price scale is 19"),
        (spoil(lambda m: books(m)["rows"].__setitem__(2, {"venue": "okx"})), "lacks a venue and a symbol"),
        (spoil(lambda m: books(m).__setitem__("rows", [books(m)["rows"][0]] * 3)),
         "instrument 1 is binance BTCUSDT in snap-books but .*ETHUSDT.* in snap-positions"),
        (spoil(lambda m: both_rows(m, [{"venue": "a", "symbol": "B"}] * 3)), "a B is both instrument 0 and 1"),
    ]
    for meta, msg in cases:
        with pytest.raises(CatalogError, match=msg):
            catalog_instruments(meta)


def test_no_catalog_is_its_own_error(migrated, instance):
    inst, _ = instance
    with pytest.raises(NoCatalog, match="no such segment"):
        read_catalog(inst)
    with psycopg.connect(migrated) as c, pytest.raises(NoCatalog):
        register_from_catalog(c, inst)
    out = cli("register", "--dsn", migrated, "--instance", inst)
    assert out.returncode == 1 and f"no catalog for instance {inst!r}" in out.stderr


# --- registration ---------------------------------------------------------------------------------

def test_registration_stores_scales_and_notional_quote_scale(migrated, instance):
    inst, _ = instance
    t = telemetry(inst, [*SYNTH, KRAKEN])
    try:
        with psycopg.connect(migrated) as c:
            got = register_from_catalog(c, inst)
    finally:
        t.close()
    assert [i.id for i in got.added] == [0, 1, 2, 3] and got.present == 0
    assert instruments_table(migrated) == [(i, v, s, ps, qs, ps + qs)
                                           for i, (v, s, ps, qs) in enumerate([*SYNTH, KRAKEN])]


def test_registration_is_idempotent_and_adds_only_new_instruments(migrated, instance):
    inst, _ = instance
    t = telemetry(inst, SYNTH)
    try:
        out = cli("register", "--dsn", migrated, "--instance", inst)
        assert out.returncode == 0, out.stderr
        assert "3 instrument(s) added, 0 already registered" in out.stdout
        out = cli("register", "--dsn", migrated, "--instance", inst)
        assert out.returncode == 0 and "0 instrument(s) added, 3 already registered" in out.stdout
    finally:
        t.close()
    before = instruments_table(migrated)
    # the daemon restarts with one more instrument: only that one is added
    t = telemetry(inst, [*SYNTH, KRAKEN])
    try:
        with psycopg.connect(migrated) as c:
            got = register_from_catalog(c, inst)
    finally:
        t.close()
    assert [i.id for i in got.added] == [3] and got.present == 3
    assert instruments_table(migrated) == before + [(3, "kraken", "XBT/USD", 1, 8, 9)]


def test_conflicting_catalog_is_refused_naming_both_and_nothing_is_written(persist_db, instance):
    inst, _ = instance
    before = instruments_table(persist_db)  # synth's instruments 0..2
    # id 0 with another price scale, and (binance, ETHUSDT) under another id: both named at once
    t = telemetry(inst, [("binance", "BTCUSDT", 3, 5), ("okx", "ETH-USDT", 2, 4), ("okx", "SOL-USDT", 3, 2),
                         ("binance", "ETHUSDT", 2, 4), KRAKEN])
    try:
        with psycopg.connect(persist_db) as c, pytest.raises(InstrumentConflict) as e:
            register_from_catalog(c, inst)
        msg = str(e.value)
        assert ("instrument 0 is binance BTCUSDT (price_scale 2, qty_scale 5, quote_scale 7) in the database "
                f"but binance BTCUSDT (price_scale 3, qty_scale 5, quote_scale 8) in the catalog of instance {inst!r}"
                in msg)
        assert "instrument 1 is binance ETHUSDT (price_scale 2, qty_scale 4, quote_scale 6) in the database" in msg
        assert "binance ETHUSDT is instrument 1 in the database but instrument 3 in the catalog" in msg
        out = cli("register", "--dsn", persist_db, "--instance", inst)
        assert out.returncode == 2 and "instrument configuration conflict" in out.stderr
    finally:
        t.close()
    assert instruments_table(persist_db) == before  # not even the unconflicted kraken row


def test_database_row_with_another_quote_scale_is_a_conflict(migrated):
    with psycopg.connect(migrated) as c:
        c.execute("INSERT INTO instruments (id, venue, symbol, price_scale, qty_scale, quote_scale) "
                  "VALUES (0, 'binance', 'BTCUSDT', 2, 5, 8)")
        c.commit()
        with pytest.raises(InstrumentConflict, match="quote_scale 8\\) in the database"):
            register_instruments(c, [CatalogInstrument(0, "binance", "BTCUSDT", 2, 5)])


def test_money_scale_beyond_the_table_is_refused(migrated):
    with psycopg.connect(migrated) as c, pytest.raises(RegistrationError, match="10 \\+ 9 = 19 exceeds 18"):
        register_instruments(c, [CatalogInstrument(0, "x", "Y", 10, 9)])
    assert instruments_table(migrated) == []


# --- the sidecar ----------------------------------------------------------------------------------

def journal(inst: str) -> Ring:
    return Ring.create(inst, "journal-0", R.JOURNAL_EVENT_DTYPE, 4096, kind="journal", n_gating=1, policy="fail")


def test_sidecar_registers_at_start_and_refuses_a_conflict(persist_db, instance):
    inst, procs = instance
    ring = journal(inst)
    t = telemetry(inst, [*SYNTH, KRAKEN])
    try:
        side = sidecar(persist_db, inst, procs)
        # no event asked for it: registration happens when the sidecar starts
        wait_for(lambda: len(instruments_table(persist_db)) == 4, timeout=60, what="kraken registered")
        assert instruments_table(persist_db)[3] == (3, "kraken", "XBT/USD", 1, 8, 9)
        side.terminate()
        assert side.wait(60) == 0
    finally:
        t.close()
    t = telemetry(inst, [("binance", "BTCUSDT", 2, 6)])
    try:
        side = sidecar(persist_db, inst, procs)
        assert side.wait(60) == 2
        err = side.stderr.read()
        assert "instrument 0 is binance BTCUSDT (price_scale 2, qty_scale 5, quote_scale 7) in the database" in err
        assert "(price_scale 2, qty_scale 6, quote_scale 8) in the catalog" in err
    finally:
        t.close()
        ring.close()


def test_sidecar_picks_up_instruments_of_a_catalog_that_appeared_after_it_started(persist_db, instance):
    inst, procs = instance
    ring = journal(inst)
    side = sidecar(persist_db, inst, procs)  # no catalog yet: nothing to register
    ev = synth.events(400)
    ev["instrument"][ev["instrument"] == 1] = 3  # the kraken instrument the database does not know
    ev[:200]["instrument"][ev[:200]["instrument"] == 3] = 0
    ev["ts_ns"] = synth.T0_NS + np.arange(len(ev))
    t = None
    try:
        assert ring.publish(ev[:200]) == 200  # instruments the database already has
        wait_for(lambda: cursor(persist_db) == 199, timeout=60, what="the known instruments' events")
        assert len(instruments_table(persist_db)) == 3
        t = telemetry(inst, [*SYNTH, KRAKEN])  # the daemon (re)starts with a new instrument
        assert ring.publish(ev[200:]) == 200
        wait_for(lambda: cursor(persist_db) == 399 or side.poll() is not None, timeout=60, what="kraken's events")
        assert side.poll() is None, side.stderr.read()
        assert instruments_table(persist_db)[3] == (3, "kraken", "XBT/USD", 1, 8, 9)
        k = int(np.flatnonzero((ev["kind"] == R.EV_FILL) & (ev["instrument"] == 3))[0])
        f = ev[k]
        with psycopg.connect(persist_db) as c:  # the ring numbered the events from 0
            row = c.execute("SELECT instrument, price, qty, fee FROM fills WHERE seq = %s", (k,)).fetchone()
        assert row == (3, from_fixed(f["price"], 1), from_fixed(f["qty"], 8), from_fixed(f["fee"], 9))
        # an instrument the catalog does not list either is still refused, not guessed at
        bad = synth.events(1)
        bad["kind"], bad["instrument"], bad["ts_ns"] = R.EV_ORDER_STATE, 9, synth.T0_NS
        assert ring.publish(bad) == 1
        assert side.wait(60) == 2
        assert "seq 400" in (err := side.stderr.read()) and "unknown instrument" in err
        assert cursor(persist_db) == 399
    finally:
        if t is not None:
            t.close()
        ring.close()
