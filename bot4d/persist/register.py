"""Register the daemon's instruments in PostgreSQL from its catalog segment.

The journal carries instrument ids and int64 units; the ``instruments`` table says what an id
means (venue, symbol) and its scales, so the writer can turn units into NUMERIC. The daemon
already publishes exactly that in its ``catalog`` segment (``bot4d.telemetry``), read here through
``bot4d.monitor.catalog`` like any monitor: read-only, nothing of the daemon imported.

Registration only ever adds rows. An id the database already knows must mean the same
instrument with the same scales: the rows persisted under it were decoded with them, so a
different meaning is a configuration conflict to refuse, never a row to rewrite. The money scale
is ``price_scale + qty_scale``: the OMS keeps fees, P&L and cash in notional units
(docs/architecture.md, "Records and units").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import psycopg

from bot4d.monitor.catalog import CatalogInstrument, catalog_instruments, read_catalog

MAX_SCALE = 18  # the instruments table's CHECK on every scale column


class RegistrationError(RuntimeError):
    """The catalog's instruments cannot be stored as they are (the message says why)."""


class InstrumentConflict(RegistrationError):
    """The catalog gives an id or a (venue, symbol) another meaning than the database has."""


@dataclass(frozen=True)
class Registered:
    added: list[CatalogInstrument]   # rows inserted by this call
    present: int                     # catalog instruments the database already had, identical


def quote_scale(inst: CatalogInstrument) -> int:
    return inst.price_scale + inst.qty_scale


def _describe(venue: str, symbol: str, ps: int, qs: int, cs: int) -> str:
    return f"{venue} {symbol} (price_scale {ps}, qty_scale {qs}, quote_scale {cs})"


def register_instruments(conn: psycopg.Connection, instruments: Sequence[CatalogInstrument], *,
                         source: str = "the catalog") -> Registered:
    """Insert the instruments the database lacks, in one transaction; refuse any conflict.

    Nothing is inserted when any instrument conflicts (InstrumentConflict names the database's
    row and ``source``'s for each) or cannot be stored (RegistrationError). Concurrent callers
    (one pump per shard) are serialised by a table lock, so they cannot race to insert one id.
    """
    for inst in instruments:
        if quote_scale(inst) > MAX_SCALE:
            raise RegistrationError(
                f"instrument {inst.id} {inst.venue} {inst.symbol} in {source}: quote scale "
                f"{inst.price_scale} + {inst.qty_scale} = {quote_scale(inst)} exceeds {MAX_SCALE}: "
                "its money cannot be stored")
    with conn.transaction():
        # SHARE ROW EXCLUSIVE conflicts with itself and with writes, not with readers
        conn.execute("LOCK TABLE instruments IN SHARE ROW EXCLUSIVE MODE")
        rows = conn.execute("SELECT id, venue, symbol, price_scale, qty_scale, quote_scale "
                            "FROM instruments").fetchall()
        by_id = {r[0]: r for r in rows}
        by_key = {(r[1], r[2]): r for r in rows}
        conflicts: list[str] = []
        new: list[CatalogInstrument] = []
        for inst in instruments:
            want = (inst.id, inst.venue, inst.symbol, inst.price_scale, inst.qty_scale, quote_scale(inst))
            have = by_id.get(inst.id)
            if have is not None:
                if tuple(have) != want:
                    conflicts.append(f"instrument {inst.id} is {_describe(*have[1:])} in the database "
                                     f"but {_describe(*want[1:])} in {source}")
                continue
            other = by_key.get((inst.venue, inst.symbol))
            if other is not None:
                conflicts.append(f"{inst.venue} {inst.symbol} is instrument {other[0]} in the database "
                                 f"but instrument {inst.id} in {source}")
                continue
            new.append(inst)
        if conflicts:
            raise InstrumentConflict(
                "instrument configuration conflict (persisted rows keep their meaning; fix the "
                "daemon's configuration or the database by hand): " + "; ".join(conflicts))
        if new:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO instruments (id, venue, symbol, price_scale, qty_scale, quote_scale) "
                                "VALUES (%s, %s, %s, %s, %s, %s)",
                                [(i.id, i.venue, i.symbol, i.price_scale, i.qty_scale, quote_scale(i))
                                 for i in new])
    return Registered(new, len(instruments) - len(new))


def register_from_catalog(conn: psycopg.Connection, instance: str) -> Registered:
    """Read ``instance``'s catalog (read-only) and register its instruments.

    Raises ``bot4d.monitor.catalog.NoCatalog`` when the instance has published none,
    ``CatalogError``/``SegmentError`` for a catalog that cannot be read, and the errors of
    ``register_instruments``.
    """
    return register_instruments(conn, catalog_instruments(read_catalog(instance)),
                                source=f"the catalog of instance {instance!r}")
