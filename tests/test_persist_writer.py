"""JournalWriter against a real PostgreSQL: exactly-once by cursor, exact values, bad input."""
from __future__ import annotations


import numpy as np
import psycopg
import pytest

from bot4d import records as R
from bot4d.fixedpoint import from_fixed
from bot4d.persist import synth
from bot4d.persist.decode import DecodeError
from bot4d.persist.writer import CursorConflict, JournalWriter

pytest_plugins = ["tests.pg"]


def _rows(conn, shard=0):
    return [r[0] for r in conn.execute("SELECT seq FROM journal_rows WHERE shard = %s ORDER BY seq", (shard,))]


def _cursor(conn, shard=0):
    r = conn.execute("SELECT last_seq FROM journal_cursor WHERE shard = %s", (shard,)).fetchone()
    conn.commit()
    return None if r is None else r[0]


def test_batches_land_once_each_with_exact_values(persist_db):
    ev = synth.stamp(synth.events(5000, shard=0))
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        assert w.cursor(0) == -1
        for k in range(0, 5000, 1300):
            assert w.write(0, ev[k:k + 1300]) == min(k + 1300, 5000) - 1
        assert _rows(c) == list(range(5000))
        assert _cursor(c) == 4999
        # every kind went to its table
        counts = dict(c.execute("SELECT tbl, count(*) FROM journal_rows GROUP BY tbl").fetchall())
        kinds = np.bincount(ev["kind"], minlength=11)
        assert counts["orders"] == kinds[R.EV_ORDER_NEW] and counts["fills"] == kinds[R.EV_FILL]
        assert counts["order_events"] == kinds[R.EV_ORDER_STATE]
        assert counts["risk_events"] == kinds[R.EV_RISK_REJECT] + kinds[R.EV_BREAKER]
        assert counts["control_audit"] == kinds[R.EV_CONTROL] and counts["balances"] == kinds[R.EV_BALANCE]
        # values are the journal's units at the instrument's scales, exactly
        f = ev[ev["kind"] == R.EV_FILL][7]
        ps, qs, cs = synth.INSTRUMENTS[f["instrument"]][3:6]
        row = c.execute("SELECT price, qty, fee, liquidity, trade_id, ts FROM fills WHERE seq = %s",
                        (int(f["seq"]),)).fetchone()
        assert row[:3] == (from_fixed(f["price"], ps), from_fixed(f["qty"], qs), from_fixed(f["fee"], cs))
        assert row[3:5] == (f["aux0"], f["aux1"])
        assert int(row[5].timestamp() * 1_000_000) == int(f["ts_ns"]) // 1000
        o = ev[ev["kind"] == R.EV_ORDER_NEW][3]
        row = c.execute("SELECT stop_price, opens_position FROM orders WHERE seq = %s", (int(o["seq"]),)).fetchone()
        assert row == (from_fixed(o["stop_price"], synth.INSTRUMENTS[o["instrument"]][3]), True)
        ctl = c.execute("SELECT uid, pid, command, instrument FROM control_audit LIMIT 1").fetchone()
        assert ctl == (0, 4242, 3, None)


def test_rewriting_persisted_records_is_skipped_not_duplicated(persist_db):
    ev = synth.stamp(synth.events(300))
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        w.write(0, ev[:200])
        # a restarted sidecar re-reads from its ring slot, which may be behind the database
        w2 = JournalWriter(psycopg.connect(persist_db))
        assert w2.write(0, ev[100:300]) == 299
        assert _rows(c) == list(range(300))


def test_two_writers_on_one_shard_cannot_both_commit(persist_db):
    ev = synth.stamp(synth.events(100))
    with psycopg.connect(persist_db) as c1, psycopg.connect(persist_db) as c2:
        a, b = JournalWriter(c1), JournalWriter(c2)
        a.cursor(0), b.cursor(0)
        a.write(0, ev[:50])
        with pytest.raises(CursorConflict, match="another writer"):
            b.write(0, ev[:50])  # b still believes the cursor is -1
        assert _rows(c1) == list(range(50))


@pytest.mark.parametrize("field,value,why", [
    ("kind", 77, "unknown event kind"),
    ("instrument", 9, "unknown instrument"),
    ("shard", 3, "not from shard 0"),
    ("seq", 999, "sequence gap"),
    ("ts_ns", 5, "event time"),
    ("qty", 0, "impossible"),
])
def test_undecodable_record_stops_after_persisting_what_precedes_it(persist_db, field, value, why):
    ev = synth.stamp(synth.events(100))
    bad = 42
    while ev["kind"][bad] != R.EV_FILL:  # a record kind to which every field test applies
        bad += 1
    ev[field][bad] = value
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        with pytest.raises(DecodeError, match=why) as ei:
            w.write(0, ev)
        assert ei.value.seq == bad and f"seq {bad}" in str(ei.value)
        assert _rows(c) == list(range(bad)) and _cursor(c) == bad - 1
        # and nothing after it is ever taken: the next write starts at the bad record again
        with pytest.raises(DecodeError):
            w.write(0, ev[bad:])
        assert _cursor(c) == bad - 1


def test_rows_refused_by_a_database_rule_roll_back_the_whole_batch(persist_db):
    ev = synth.stamp(synth.events(100))
    i = int(np.flatnonzero(ev["kind"] == R.EV_ORDER_NEW)[3])
    ev["stop_price"][i] = 0  # an opening order without a stop-loss
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        w.write(0, ev[:i])
        with pytest.raises(psycopg.errors.CheckViolation, match="opening_order_has_stop_loss"):
            w.write(0, ev[i:])
        assert _cursor(c) == i - 1 and _rows(c) == list(range(i))


def test_position_over_cap_is_refused_and_nothing_of_the_batch_is_kept(persist_db):
    ev = synth.stamp(synth.events(60))
    i = int(np.flatnonzero((ev["kind"] == R.EV_POSITION) & (ev["instrument"] == 0))[0])
    ev["qty"][i] = 5_000_001  # 50.00001 BTC at qty scale 5, cap 50
    with psycopg.connect(persist_db) as c:
        with pytest.raises(psycopg.errors.CheckViolation, match=f"journal seq {i}"):
            JournalWriter(c).write(0, ev)
        c.rollback()
        assert _cursor(c) is None and _rows(c) == []


def test_new_instrument_is_picked_up_without_restart(persist_db):
    ev = synth.stamp(synth.events(20))
    ev["instrument"][ev["instrument"] == 1] = 3
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        c.execute("INSERT INTO instruments VALUES (3, 'kraken', 'XBT/USD', 1, 8, 8, NULL)")
        c.commit()
        assert w.write(0, ev) == 19
        assert c.execute("SELECT count(*) FROM fills WHERE instrument = 3").fetchone()[0] > 0
        assert c.execute("SELECT price_scale FROM instruments WHERE id = 3").fetchone()[0] == 1


def test_shards_have_independent_cursors_and_days_get_partitions(persist_db):
    day = 86_400 * 10**9
    a = synth.stamp(synth.events(50, shard=0, step_ns=day // 10))  # spans 5 days
    b = synth.stamp(synth.events(30, shard=1))
    with psycopg.connect(persist_db) as c:
        w = JournalWriter(c)
        w.write(1, b)
        w.write(0, a)
        assert _rows(c, 0) == list(range(50)) and _rows(c, 1) == list(range(30))
        parts = c.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                          "WHERE p.relname = 'fills'").fetchone()[0]
        assert parts >= 5


def test_two_shard_writers_meeting_new_days_together(persist_db):
    """Both writers create the same day partitions at once (a race the 2-shard bench found)."""
    import threading

    day = 86_400 * 10**9
    evs = [synth.stamp(synth.events(40, shard=s, step_ns=day, seed=s + 1)) for s in (0, 1)]
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def run(s: int) -> None:
        try:
            with psycopg.connect(persist_db) as c:
                w = JournalWriter(c)
                go.wait()
                for k in range(0, 40, 4):
                    w.write(s, evs[s][k:k + 4])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    th = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    assert errors == []
    with psycopg.connect(persist_db) as c:
        assert _rows(c, 0) == list(range(40)) and _rows(c, 1) == list(range(40))


def _audit_events() -> np.ndarray:
    """An order's life with the venue's ids: placed, acknowledged (the venue names its order id),
    a refused transition, a fill from the stream, a recovered fill of this run and one of an
    earlier run's order."""
    rows = np.zeros(7, R.JOURNAL_EVENT_DTYPE)
    rows["ts_ns"] = synth.T0_NS + np.arange(7) * 1000
    rows["instrument"], rows["side"], rows["order_type"], rows["tif"] = 0, R.SIDE_BID, 1, 1
    rows["order_id"], rows["client_order_id"], rows["price"], rows["qty"] = 17, 900, 6_000_000, 300
    rows["kind"] = [R.EV_ORDER_NEW, R.EV_ORDER_STATE, R.EV_ORDER_STATE, R.EV_FILL, R.EV_FILL, R.EV_FILL,
                    R.EV_ORDER_STATE]
    rows["stop_price"][0], rows["aux0"][0] = 5_900_000, 1
    # SUBMITTED (2) -> ACKED (3); then a refused ACK while PARTIALLY_FILLED (4), reason R_ILLEGAL
    rows["state"][1], rows["aux0"][1], rows["aux1"][1], rows["aux2"][1] = 3, 8_800_123, 2, 3
    rows["state"][2], rows["reason"][2], rows["aux0"][2], rows["aux1"][2], rows["aux2"][2], rows["aux4"][2] = \
        4, 1, 8_800_123, 4, 3, 1
    rows["qty"][3:6], rows["aux0"][3:6], rows["aux1"][3:6] = 100, [1, 2, 1], [501, 502, 503]
    rows["aux2"][3:5] = 8_800_123                       # this run's order; the earlier run's: unknown
    rows["aux3"][4:6] = 1                               # recovered by reconciliation
    rows["aux4"][5], rows["order_id"][5] = int("a0b1c2", 36), 4   # an earlier run's order 4
    rows["state"][6], rows["reason"][6], rows["aux0"][6], rows["aux1"][6], rows["aux2"][6], rows["aux3"][6] = \
        8, 11, 8_800_123, 4, 8, -2010                   # a venue reject with its error code as detail
    return synth.stamp(rows)


@pytest.mark.parametrize("ring_boot,boot", [("k3x9q1", int("k3x9q1", 36)), ("", None)])
def test_auditor_join_columns(persist_db, ring_boot, boot):
    """Venue order id, the client order id string the venue knows, trade id and boot land in their
    columns; the order's venue id comes from its first event that names it. A ring that names no
    boot leaves boots and client order id strings NULL (never a made-up one)."""
    ev = _audit_events()
    with psycopg.connect(persist_db) as c:
        JournalWriter(c).write(0, ev, ring_boot=ring_boot)
        cid = (lambda b, o: f"b4{b}-0-{o}") if boot is not None else (lambda b, o: None)
        assert c.execute("SELECT boot, venue_order_id, venue_client_order_id FROM orders").fetchall() == \
            [(boot, 8_800_123 if boot is not None else None, cid(ring_boot, 17))]
        assert c.execute("SELECT seq, state, reason, venue_order_id, from_state, to_state, detail, cause, boot, "
                         "venue_client_order_id FROM order_events ORDER BY seq").fetchall() == [
            (1, 3, 0, 8_800_123, 2, 3, 0, 0, boot, cid(ring_boot, 17)),
            (2, 4, 1, 8_800_123, 4, 3, 0, 1, boot, cid(ring_boot, 17)),
            (6, 8, 11, 8_800_123, 4, 8, -2010, 0, boot, cid(ring_boot, 17))]
        assert c.execute("SELECT trade_id, liquidity, venue_order_id, recovered, boot, venue_client_order_id "
                         "FROM fills ORDER BY seq").fetchall() == [
            (501, 1, 8_800_123, False, boot, cid(ring_boot, 17)),
            (502, 2, 8_800_123, True, boot, cid(ring_boot, 17)),
            (503, 1, None, True, int("a0b1c2", 36), "b4a0b1c2-0-4")]   # the earlier run's own boot
        assert c.execute("SELECT venue_order_id, venue_client_order_id FROM orders_latest").fetchone() == \
            (8_800_123 if boot is not None else None, cid(ring_boot, 17))


@pytest.mark.parametrize("kind,field,value,why", [
    (R.EV_FILL, "aux3", 2, "unknown flags"),
    (R.EV_FILL, "aux4", 36**6, "boot outside"),
    (R.EV_FILL, "aux2", -1, "negative trade or venue order id"),
    (R.EV_ORDER_STATE, "aux1", 10, "from-state"),
    (R.EV_ORDER_STATE, "aux2", -1, "from-state or target"),
    (R.EV_ORDER_STATE, "aux0", -5, "negative venue order id"),
    (R.EV_ORDER_STATE, "aux4", 300, "cause outside"),
])
def test_impossible_audit_fields_stop_the_writer_before_them(persist_db, kind, field, value, why):
    ev = _audit_events()
    bad = int(np.flatnonzero(ev["kind"] == kind)[-1])
    ev[field][bad] = value
    with psycopg.connect(persist_db) as c:
        with pytest.raises(DecodeError, match=why) as ei:
            JournalWriter(c).write(0, ev, ring_boot="k3x9q1")
        assert ei.value.seq == bad and _rows(c) == list(range(bad))


@pytest.mark.parametrize("ring_boot", ["K3X9Q1", "k3x9q", "k3x9q1_", "k3-9q1"])
def test_a_ring_boot_that_is_no_daemon_boot_is_refused_whole(persist_db, ring_boot):
    ev = _audit_events()
    with psycopg.connect(persist_db) as c:
        with pytest.raises(DecodeError, match="boot id .* is not 6 characters of \\[0-9a-z\\]") as ei:
            JournalWriter(c).write(0, ev, ring_boot=ring_boot)
        assert ei.value.seq == 0 and _rows(c) == [] and _cursor(c) is None
