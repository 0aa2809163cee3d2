"""PostgreSQL fixtures: one real server per test session, a fresh database per test.

Use with ``pytest_plugins = ["tests.pg"]`` in a test module (or import the fixtures). The server
is started by :class:`bot4d.pgserver.PgServer` (initdb + pg_ctl as ``postgres`` when root,
Unix socket only) in a temporary directory and destroyed at the end of the session.
"""
from __future__ import annotations

import itertools
import os
import tempfile

import psycopg
import pytest

from bot4d.pgserver import PgServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    base = tempfile.mkdtemp(prefix="bot4d-pg-")
    srv = PgServer(base)
    srv.start()
    try:
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def pg_db(pg_server: PgServer) -> str:
    """Conninfo of a fresh, empty database (dropped after the test)."""
    name = f"t{os.getpid()}_{next(_counter)}"
    conninfo = pg_server.create_database(name)
    yield conninfo
    if pg_server.running():
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def _persist_template(pg_server: PgServer) -> str:
    """A database migrated once per session, with the synthetic instruments/assets, to copy."""
    from bot4d.persist import schema, synth

    conninfo = pg_server.create_database("bot4d_template")
    schema.migrate(conninfo, log=lambda *_: None)
    with psycopg.connect(conninfo) as c:
        synth.setup_reference(c)
    return "bot4d_template"


@pytest.fixture
def persist_db(pg_server: PgServer, _persist_template: str) -> str:
    """A fresh database with the bot4d schema and the synthetic instruments/assets."""
    name = f"p{os.getpid()}_{next(_counter)}"
    conninfo = pg_server.create_database(name, template=_persist_template)
    yield conninfo
    if pg_server.running():
        pg_server.drop_database(name)
