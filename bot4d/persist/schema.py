"""Numbered SQL migrations (``migrations/NNN_name.sql``) and the schema-version checks.

``migrate()`` applies the pending files in order, each in its own transaction, under an advisory
lock so two migrators cannot interleave. A database whose version is ahead of the files this code
ships is refused (``SchemaError``): running old code against a newer schema is how rows get
written with the wrong meaning.

Time-series tables carry the marker ``/*@TIMESERIES col*/`` after their column list. In native mode
it becomes ``PARTITION BY RANGE (col)`` and the writer creates one partition per day (through
``bot4d_ensure_day``); when the TimescaleDB extension is installed it becomes a hypertable with
one-day chunks. ``bot4d_meta.storage_mode`` records which mode is active.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_MARK = re.compile(r"/\*@TIMESERIES\s+(\w+)\s*\*/")
_CREATE = re.compile(r"CREATE TABLE\s+(\w+)\s*\(", re.I)
_LOCK_KEY = 0x626F7434  # "bot4": advisory lock held while migrating


class SchemaError(RuntimeError):
    """The database schema is not the one this code can write to."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    out = []
    for p in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise SchemaError(f"migration file {p.name} is not named NNN_name.sql")
        out.append(Migration(int(m.group(1)), m.group(2), p))
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise SchemaError(f"migrations must be numbered 001.. without gaps, found {versions}")
    return out


def code_version() -> int:
    return len(available())


def timescale_available(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone() is not None


def render(sql: str, mode: str) -> str:
    """Turn the time-series markers into native partitioning or TimescaleDB hypertables."""
    if mode == "native":
        return _MARK.sub(lambda m: f"PARTITION BY RANGE ({m.group(1)})", sql)
    # timescaledb: plain table, then create_hypertable right after its statement
    out, pos = [], 0
    for m in _MARK.finditer(sql):
        table = _CREATE.findall(sql, 0, m.start())[-1]
        end = sql.index(";", m.end()) + 1
        out.append(sql[pos:m.start()])
        out.append(sql[m.end():end])
        out.append(f"\nSELECT create_hypertable('{table}', '{m.group(1)}', chunk_time_interval => interval '1 day');")
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def current_version(conn: psycopg.Connection) -> int:
    """Applied schema version (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    v = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
    return int(v)


def storage_mode(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT value FROM bot4d_meta WHERE key = 'storage_mode'").fetchone()
    return row[0] if row else "unknown"


def migrate(conninfo: str, *, mode: str | None = None, log=print, upto: int | None = None) -> int:
    """Apply pending migrations; return the resulting version. ``mode``: native|timescaledb|None(auto);
    ``upto``: stop after that version (None: all; an older schema for an upgrade path)."""
    migs = available()
    if upto is None:
        upto = len(migs)
    elif not 1 <= upto <= len(migs):
        raise SchemaError(f"there is no migration {upto} (this code has 1..{len(migs)})")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            have = current_version(conn)
            if have > len(migs):
                raise SchemaError(
                    f"database schema is at version {have} but this code knows only up to "
                    f"{len(migs)}: upgrade bot4d before using this database"
                )
            if have == 0:
                if mode is None:
                    mode = "timescaledb" if timescale_available(conn) else "native"
            else:
                existing = storage_mode(conn)
                if mode is not None and mode != existing:
                    raise SchemaError(f"database uses storage mode {existing}, not {mode}")
                mode = existing
            if mode not in ("native", "timescaledb"):
                raise SchemaError(f"unknown storage mode {mode!r}")
            for m in migs[have:upto]:
                sql = render(m.path.read_text(), mode)
                with conn.transaction():
                    if mode == "timescaledb" and m.version == 1:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                    conn.execute(sql)
                    if m.version == 1:
                        conn.execute(
                            "INSERT INTO bot4d_meta (key, value) VALUES ('storage_mode', %s)", (mode,)
                        )
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
                    )
                log(f"applied migration {m.version:03d}_{m.name} ({mode})")
            return max(have, upto)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def check(conn: psycopg.Connection) -> str:
    """Refuse a database that is behind or ahead of this code; return its storage mode."""
    have, want = current_version(conn), code_version()
    if have > want:
        raise SchemaError(
            f"database schema is at version {have} but this code knows only up to {want}: "
            "refusing to write (upgrade bot4d-persist)"
        )
    if have < want:
        raise SchemaError(f"database schema is at version {have}, code needs {want}: run `bot4d-persist migrate`")
    return storage_mode(conn)
