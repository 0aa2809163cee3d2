"""The OMS's real journal, from a backtest, persisted by the real writer into a real PostgreSQL.

The trading core and bot4d-persist meet only through JOURNAL_EVENT_DTYPE (contract in
bot4d.records and bot4d.persist.decode); this holds both sides to it, including the database's own
rule that every position-opening order carries a stop-loss.
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import psycopg
import pytest

from bot4d import records as R
from bot4d.persist.writer import JournalWriter
from bot4d.sim import backtest as bt

pytest_plugins = ["tests.pg"]


@pytest.fixture(scope="module")
def journal():
    return bt.run(bt.BacktestConfig(seed=5, steps=400)).journal


def test_opening_orders_are_flagged_and_carry_their_stop(journal):
    new = journal[journal["kind"] == R.EV_ORDER_NEW]
    opens = (new["aux0"] & R.JFLAG_OPENS_POSITION) != 0
    assert opens.any()
    assert (new["stop_price"][opens] > 0).all()
    fills = journal[journal["kind"] == R.EV_FILL]
    assert set(np.unique(fills["aux0"])) <= {1, 2} and (fills["aux0"] == 1).any()


def test_backtest_journal_persists_whole_and_exact(journal, persist_db):
    import uuid

    from ipc.ring import Ring

    ps, qs = 2, 5
    # as in the daemon: the shard journal goes through an ipc journal ring, which stamps seq
    ring = Ring.create(f"t{uuid.uuid4().hex[:10]}", "journal-0", R.JOURNAL_EVENT_DTYPE, 1 << 14,
                       kind="journal", n_gating=1, policy="fail")
    try:
        assert ring.publish(journal) == journal.size
        got = ring.consume(0, journal.size)
    finally:
        ring.unlink()
        ring.close()
    assert got.size == journal.size and np.array_equal(got["seq"], np.arange(journal.size))
    assert np.array_equal(got[["kind", "order_id", "price", "qty", "fee"]], journal[["kind", "order_id", "price", "qty", "fee"]])
    journal = got
    with psycopg.connect(persist_db) as c:
        # money in the OMS's journal is notional units: quote_scale = price_scale + qty_scale
        reg = c.execute("SELECT price_scale, qty_scale, quote_scale FROM instruments WHERE id = 0").fetchone()
        assert reg == (ps, qs, ps + qs)
        c.execute("UPDATE instruments SET position_cap = NULL WHERE id = 0")  # the backtest's own limits apply
        c.commit()
        w = JournalWriter(c)
        assert w.write(0, journal) == int(journal["seq"][-1])
        n = c.execute("SELECT count(*) FROM journal_rows WHERE shard = 0").fetchone()[0]
        assert n == journal.size
        f = journal[journal["kind"] == R.EV_FILL][0]
        row = c.execute("SELECT price, qty, fee, liquidity FROM fills WHERE seq = %s", (int(f["seq"]),)).fetchone()
        assert row == (Decimal(int(f["price"])).scaleb(-ps), Decimal(int(f["qty"])).scaleb(-qs),
                       Decimal(int(f["fee"])).scaleb(-(ps + qs)), int(f["aux0"]))
        bad = c.execute("SELECT count(*) FROM orders WHERE opens_position AND NOT stop_price > 0").fetchone()[0]
        assert bad == 0
