"""The OMS's real journal, from a backtest and from the kernel itself, persisted by the real writer
into a real PostgreSQL.

The trading core and bot4d-persist meet only through JOURNAL_EVENT_DTYPE (contract in
bot4d.records and bot4d.persist.decode); this holds both sides to it field by field, including the
database's own rule that every position-opening order carries a stop-loss, and the columns an
auditor joins to the venue's records on (venue order id, the client order id string, trade id, boot).
"""
from __future__ import annotations

import uuid
from decimal import Decimal

import numpy as np
import psycopg
import pytest

from bot4d import records as R
from bot4d.kernels import oms
from bot4d.kernels.oms_state import S_ACKED, S_CANCELLED, S_EXPIRED, S_NEW, S_PARTIALLY_FILLED, S_SUBMITTED
from bot4d.persist.decode import BOOT_LIMIT, FILL_FLAG_RECOVERED, RefData, boot_int, validate
from bot4d.persist.writer import JournalWriter
from bot4d.sim import backtest as bt
from tests.test_oms_support import Driver, report

pytest_plugins = ["tests.pg"]

BOOT = "k3x9q1"        # the ring's boot (the daemon run that wrote it)
OLD_BOOT = "a0b1c2"    # an earlier run


@pytest.fixture(scope="module")
def journal():
    return bt.run(bt.BacktestConfig(seed=5, steps=400)).journal


def through_ring(ev: np.ndarray) -> np.ndarray:
    """As in the daemon: the shard journal goes through an ipc journal ring, which stamps seq."""
    from ipc.ring import Ring

    ring = Ring.create(f"t{uuid.uuid4().hex[:10]}", "journal-0", R.JOURNAL_EVENT_DTYPE, 1 << 14,
                       kind="journal", n_gating=1, policy="fail")
    try:
        assert ring.publish(ev) == ev.size
        got = ring.consume(0, ev.size)
    finally:
        ring.unlink()
        ring.close()
    assert got.size == ev.size and np.array_equal(got["seq"], np.arange(ev.size))
    return got


def cid(boot: str, shard: int, order_id: int) -> str:
    """The venue's client order id of our order (bot4d.gateway.binance.client_order_id)."""
    return f"b4{boot}-{shard}-{order_id}"


def test_opening_orders_are_flagged_and_carry_their_stop(journal):
    new = journal[journal["kind"] == R.EV_ORDER_NEW]
    opens = (new["aux0"] & R.JFLAG_OPENS_POSITION) != 0
    assert opens.any()
    assert (new["stop_price"][opens] > 0).all()
    fills = journal[journal["kind"] == R.EV_FILL]
    assert set(np.unique(fills["aux0"])) <= {1, 2} and (fills["aux0"] == 1).any()


def test_order_state_fields_are_the_transition_the_decoder_stores(journal):
    st = journal[journal["kind"] == R.EV_ORDER_STATE]
    assert len(st)
    illegal = st["reason"] == oms.R_ILLEGAL
    # aux1 the state before, aux2 the state asked for: the new state except for a refusal, where
    # ``state`` is the unchanged current state
    assert np.array_equal(st["aux2"][~illegal], st["state"][~illegal])
    assert np.array_equal(st["aux1"][illegal], st["state"][illegal])
    moved = ~illegal & (st["order_id"] != 0) & (st["reason"] != oms.R_UNKNOWN_ORDER)
    assert ((st["aux1"][moved] >= S_NEW) & (st["aux1"][moved] <= S_EXPIRED)).all()
    acked = moved & (st["state"] == S_ACKED) & (st["reason"] == oms.R_NONE)
    assert acked.any() and (st["aux1"][acked] == S_SUBMITTED).all()
    assert (st["aux0"] >= 0).all() and ((st["aux4"] >= 0) & (st["aux4"] <= 127)).all()
    fills = journal[journal["kind"] == R.EV_FILL]
    assert (fills["aux1"] >= 0).all()                          # venue trade id (0: unknown)
    assert (fills["aux2"] >= 0).all()                          # venue order id (0 unknown)
    assert (fills["aux3"] == 0).all() and (fills["aux4"] == 0).all()  # from the stream, this run
    # the decoder takes every record of the backtest as it is
    sc = np.array([2], np.int16)
    assert validate(through_ring(journal), 0, 0, RefData(sc, np.array([5], np.int16), np.array([7], np.int16),
                                                          np.zeros(0, np.int16))) == (journal.size, "")


def test_backtest_journal_persists_whole_and_exact(journal, persist_db):
    ps, qs = 2, 5
    got = through_ring(journal)
    assert np.array_equal(got[["kind", "order_id", "price", "qty", "fee"]], journal[["kind", "order_id", "price", "qty", "fee"]])
    journal = got
    with psycopg.connect(persist_db) as c:
        # money in the OMS's journal is notional units: quote_scale = price_scale + qty_scale
        reg = c.execute("SELECT price_scale, qty_scale, quote_scale FROM instruments WHERE id = 0").fetchone()
        assert reg == (ps, qs, ps + qs)
        c.execute("UPDATE instruments SET position_cap = NULL WHERE id = 0")  # the backtest's own limits apply
        c.commit()
        w = JournalWriter(c)
        assert w.write(0, journal, ring_boot=BOOT) == int(journal["seq"][-1])
        n = c.execute("SELECT count(*) FROM journal_rows WHERE shard = 0").fetchone()[0]
        assert n == journal.size
        f = journal[journal["kind"] == R.EV_FILL][0]
        row = c.execute("SELECT price, qty, fee, liquidity, trade_id, venue_order_id, recovered, boot, "
                        "venue_client_order_id FROM fills WHERE seq = %s", (int(f["seq"]),)).fetchone()
        assert row == (Decimal(int(f["price"])).scaleb(-ps), Decimal(int(f["qty"])).scaleb(-qs),
                       Decimal(int(f["fee"])).scaleb(-(ps + qs)), int(f["aux0"]), int(f["aux1"]),
                       int(f["aux2"]) or None, False, boot_int(BOOT), cid(BOOT, 0, int(f["order_id"])))
        bad = c.execute("SELECT count(*) FROM orders WHERE opens_position AND NOT stop_price > 0").fetchone()[0]
        assert bad == 0
        # every order event, field by field
        st = journal[journal["kind"] == R.EV_ORDER_STATE]
        rows = c.execute("SELECT seq, state, reason, venue_order_id, from_state, to_state, detail, cause, boot, "
                         "venue_client_order_id FROM order_events WHERE shard = 0 ORDER BY seq").fetchall()
        assert rows == [(int(e["seq"]), int(e["state"]), int(e["reason"]), int(e["aux0"]) or None,
                         int(e["aux1"]), int(e["aux2"]), int(e["aux3"]), int(e["aux4"]), boot_int(BOOT),
                         cid(BOOT, 0, int(e["order_id"])) if e["order_id"] > 0 else None) for e in st]
        # an order's venue id is the one its events named (none: never acknowledged by a venue)
        named = {int(e["order_id"]): int(e["aux0"]) for e in st[::-1] if e["aux0"] > 0}
        orders = dict(c.execute("SELECT order_id, venue_order_id FROM orders").fetchall())
        assert orders == {int(o): named.get(int(o)) for o in journal[journal["kind"] == R.EV_ORDER_NEW]["order_id"]}


def test_recovered_fill_of_an_earlier_run_is_journalled_apart_and_persisted_with_its_boot(persist_db):
    """A fill reconciliation found for an order of an earlier run: the OMS journals it (aux3 bit 0
    recovered, aux4 that run's boot) without touching a position or an order of this run, even
    one with the same order id (order ids restart with every run)."""
    d = Driver()
    live = d.place(1, side=R.SIDE_BID, px=100, qty=10, stop=90)  # opening: with its stop-loss
    d.apply(report(oms.RP_ACK, live))
    pos_before = int(d.st.positions.qty[0, 0])
    n0 = len(d.events)
    r = report(oms.RP_FILL, live, 99, 3, maker=1, flags=oms.RP_FLAG_RECOVERED)
    r["side"], r["trade_id"], r["venue_order_id"], r["boot"] = R.SIDE_ASK, 777, 4242, boot_int(OLD_BOOT)
    mine = report(oms.RP_FILL, live, 100, 4, flags=oms.RP_FLAG_RECOVERED)
    mine["trade_id"], mine["venue_order_id"] = 778, 9001
    d.apply(r, mine)
    ev = np.array(d.events[n0:], dtype=R.JOURNAL_EVENT_DTYPE)
    fills = ev[ev["kind"] == R.EV_FILL]
    assert len(fills) == 2
    old, new = fills
    assert (old["order_id"], old["side"], old["aux1"], old["aux2"], old["aux3"], old["aux4"]) == \
        (live, R.SIDE_ASK, 777, 4242, FILL_FLAG_RECOVERED, boot_int(OLD_BOOT))
    assert (new["order_id"], new["aux1"], new["aux2"], new["aux3"], new["aux4"]) == \
        (live, 778, 9001, FILL_FLAG_RECOVERED, 0)
    # only this run's fill moved the order and the position
    assert d.state(live) == S_PARTIALLY_FILLED and int(d.st.positions.qty[0, 0]) == pos_before + 4
    assert int(ev[ev["kind"] == R.EV_ORDER_STATE][-1]["filled_qty"]) == 4
    j = np.array(d.events, dtype=R.JOURNAL_EVENT_DTYPE)
    j["seq"] = np.arange(len(j))
    j["ts_ns"] = 1_795_000_000 * 10**9
    with psycopg.connect(persist_db) as c:
        JournalWriter(c).write(0, j, ring_boot=BOOT)
        rows = c.execute("SELECT trade_id, order_id, side, recovered, boot, venue_order_id, venue_client_order_id "
                         "FROM fills ORDER BY trade_id").fetchall()
    assert rows == [(777, live, R.SIDE_ASK, True, boot_int(OLD_BOOT), 4242, cid(OLD_BOOT, 0, live)),
                    (778, live, R.SIDE_BID, True, boot_int(BOOT), 9001, cid(BOOT, 0, live))]
    assert boot_int(OLD_BOOT) < BOOT_LIMIT


def test_venue_order_id_reaches_every_later_event_of_the_order():
    """The venue names its order id once (the acknowledgement); the OMS keeps it on the order and
    every later event carries it, also a refused transition."""
    d = Driver()
    oid = d.place(1, side=R.SIDE_BID, px=100, qty=10)
    ack = report(oms.RP_ACK, oid)
    ack["venue_order_id"] = 5150
    n0 = len(d.events)
    d.apply(ack, report(oms.RP_FILL, oid, 100, 2), report(oms.RP_ACK, oid))
    d.apply(report(oms.RP_CANCELLED, oid, reason=0))
    ev = np.array(d.events[n0:], dtype=R.JOURNAL_EVENT_DTYPE)
    st = ev[ev["kind"] == R.EV_ORDER_STATE]
    assert (st["aux0"] == 5150).all()
    assert [(int(e["aux1"]), int(e["aux2"]), int(e["state"]), int(e["reason"])) for e in st] == [
        (S_SUBMITTED, S_ACKED, S_ACKED, 0), (S_ACKED, S_PARTIALLY_FILLED, S_PARTIALLY_FILLED, 0),
        (S_PARTIALLY_FILLED, S_ACKED, S_PARTIALLY_FILLED, oms.R_ILLEGAL),
        (S_PARTIALLY_FILLED, S_CANCELLED, S_CANCELLED, 0)]
    assert ev[ev["kind"] == R.EV_FILL][0]["aux2"] == 5150
