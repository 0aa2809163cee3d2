"""Persistence benchmarks: journal events per second into a real local PostgreSQL.

``persist.copy``      JournalWriter: validation, numpy-built binary COPY (exact NUMERIC), cursor
                      in the same transaction, one transaction per batch of 32 k events.
                      Baseline in the same run: ``executemany`` INSERTs of the same rows (values
                      converted to Decimal in Python), one transaction per batch, cursor included.
``persist.copy_2shards``  two shards written concurrently, one connection each (the sidecar runs
                      one pump thread per shard).
``persist.sidecar``   end to end: events published into a journal ring, drained by a ShardPump
                      thread until the database cursor reaches the last one.

The server runs with fsync=off (a test server; see bot4d/pgserver.py): the figures measure the
client and server CPU path, not the disk.
"""
from __future__ import annotations

import tempfile
import threading
import time

import numpy as np
import psycopg

from bench.harness import baseline_of, benchmark, result
from bot4d import records as R
from bot4d.fixedpoint import from_fixed
from bot4d.pgserver import PgServer
from bot4d.persist import schema, synth
from bot4d.persist.decode import JFLAG_OPENS_POSITION
from bot4d.persist.writer import JournalWriter

BATCH = 32768
_server: PgServer | None = None


def _db(name: str) -> str:
    global _server
    from bot4d.persist import copykern

    copykern.warmup()  # JIT/cache load is paid before timing, as the sidecar does at start
    if _server is None:
        _server = PgServer(tempfile.mkdtemp(prefix="bot4d-bench-pg-"))
        _server.start()
    dsn = _server.create_database(name)
    schema.migrate(dsn, log=lambda *_: None)
    with psycopg.connect(dsn) as c:
        synth.setup_reference(c)
    return dsn


def _done() -> None:
    global _server
    if _server is not None:
        _server.destroy()
        _server = None


def _backend_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a PostgreSQL backend (utime + stime from /proc)."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU = {}  # figures of the last _copy_run: server and client CPU µs per event


def _copy_run(dsn: str, ev: np.ndarray, shard: int = 0) -> tuple[float, np.ndarray]:
    lat = []
    with psycopg.connect(dsn) as c:
        w = JournalWriter(c)
        w.cursor(shard)
        backend = c.info.backend_pid
        s0, c0 = _backend_cpu_s(backend), time.thread_time()
        t0 = time.perf_counter_ns()
        for k in range(0, len(ev), BATCH):
            t = time.perf_counter_ns()
            w.write(shard, ev[k:k + BATCH])
            lat.append(time.perf_counter_ns() - t)
        took = (time.perf_counter_ns() - t0) / 1e9
        # CPU per event does not depend on what else the shared machine is running: it says what
        # one free core per side would sustain (1e6 / max(server, client) events/s, pipelined)
        CPU[shard] = {"server_cpu_us_per_event": 1e6 * (_backend_cpu_s(backend) - s0) / len(ev),
                      "client_cpu_us_per_event": 1e6 * (time.thread_time() - c0) / len(ev)}
    return took, np.array(lat, np.int64)


def _ts(ns: int):
    import datetime as dt

    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns // 1000)


def _executemany_run(dsn: str, ev: np.ndarray, shard: int = 0) -> tuple[float, np.ndarray]:
    """The baseline: the same rows into the same tables with executemany."""
    scales = {i[0]: i[3:6] for i in synth.INSTRUMENTS}
    ascale = {a[0]: a[2] for a in synth.ASSETS}
    lat = []
    with psycopg.connect(dsn) as c:
        c.execute("INSERT INTO journal_cursor (shard, last_seq, journal_id, seq_base) VALUES (%s, -1, 0, 0)", (shard,))
        c.commit()
        c.execute("SELECT bot4d_ensure_day(%s::date)", (_ts(int(ev["ts_ns"][0])).date(),))
        c.execute("SELECT bot4d_ensure_day(%s::date)", (_ts(int(ev["ts_ns"][-1])).date(),))
        c.commit()
        t0 = time.perf_counter_ns()
        for k in range(0, len(ev), BATCH):
            t = time.perf_counter_ns()
            rows: dict[str, list[tuple]] = {}
            for r in ev[k:k + BATCH].tolist():
                (seq, ts, kind, sh, inst, oid, coid, side, otype, tif, state, reason, px, qty, filled, fee,
                 stop, a0, a1, a2, a3, a4) = r
                when = _ts(ts)
                if inst >= 0:
                    ps, qs, cs = scales[inst]
                if kind == R.EV_ORDER_NEW:
                    rows.setdefault("orders", []).append(
                        (sh, seq, when, inst, oid, coid, side, otype, tif, state, bool(a0 & JFLAG_OPENS_POSITION),
                         a0, a2, from_fixed(px, ps), from_fixed(qty, qs), from_fixed(stop, ps), from_fixed(a1, ps)))
                elif kind == R.EV_ORDER_STATE:
                    rows.setdefault("order_events", []).append(
                        (sh, seq, when, inst, oid, coid, state, reason, a0, from_fixed(px, ps),
                         from_fixed(qty, qs), from_fixed(filled, qs)))
                elif kind == R.EV_FILL:
                    rows.setdefault("fills", []).append(
                        (sh, seq, when, inst, oid, coid, side, a0, a1, from_fixed(px, ps), from_fixed(qty, qs),
                         from_fixed(fee, cs)))
                elif kind == R.EV_POSITION:
                    rows.setdefault("positions", []).append(
                        (sh, seq, when, inst, from_fixed(qty, qs), from_fixed(px, ps), from_fixed(a0, cs),
                         from_fixed(fee, cs)))
                elif kind == R.EV_BALANCE:
                    rows.setdefault("balances", []).append(
                        (sh, seq, when, a0, from_fixed(qty, ascale[a0]), from_fixed(filled, ascale[a0])))
                elif kind == R.EV_CONTROL:
                    rows.setdefault("control_audit", []).append(
                        (sh, seq, when, reason, a0, a1, inst if inst >= 0 else None, oid, a2, a3))
                else:
                    rows.setdefault("risk_events", []).append(
                        (sh, seq, when, kind, inst if inst >= 0 else None, oid, coid, side, state, reason,
                         from_fixed(px, ps) if inst >= 0 else None, from_fixed(qty, qs) if inst >= 0 else None,
                         a0, a1))
            cols = {
                "orders": "shard, seq, ts, instrument, order_id, client_order_id, side, order_type, tif, state, "
                          "opens_position, flags, oco_group, price, qty, stop_price, take_profit_price",
                "order_events": "shard, seq, ts, instrument, order_id, client_order_id, state, reason, "
                                "venue_order_id, price, qty, filled_qty",
                "fills": "shard, seq, ts, instrument, order_id, client_order_id, side, liquidity, trade_id, "
                         "price, qty, fee",
                "positions": "shard, seq, ts, instrument, qty, avg_price, realized_pnl, fees",
                "balances": "shard, seq, ts, asset, total, locked",
                "control_audit": "shard, seq, ts, command, uid, pid, instrument, order_id, arg0, arg1",
                "risk_events": "shard, seq, ts, kind, instrument, order_id, client_order_id, side, state, "
                               "reason, price, qty, aux0, aux1",
            }
            with c.transaction(), c.cursor() as cur:
                for table, vals in rows.items():
                    n = len(vals[0])
                    cur.executemany(f"INSERT INTO {table} ({cols[table]}) VALUES ({', '.join(['%s'] * n)})", vals)
                cur.execute("UPDATE journal_cursor SET last_seq = %s WHERE shard = %s",
                            (int(ev["seq"][min(k + BATCH, len(ev)) - 1]), shard))
            lat.append(time.perf_counter_ns() - t)
        took = (time.perf_counter_ns() - t0) / 1e9
    return took, np.array(lat, np.int64)


def _check(dsn: str, n: int, shards=(0,)) -> None:
    with psycopg.connect(dsn) as c:
        for s in shards:
            got = c.execute("SELECT count(*), count(DISTINCT seq) FROM journal_rows WHERE shard = %s",
                            (s,)).fetchone()
            if got != (n, n):
                raise AssertionError(f"shard {s}: {got} rows persisted, expected {n}")


@benchmark("persist.copy")
def bench_copy(quick: bool) -> list[dict]:
    n = 200_000 if quick else 2_000_000
    nb = 30_000 if quick else 200_000
    try:
        ev = synth.stamp(synth.events(n, seed=3))
        dsn_b = _db("bench_baseline")
        tb, lb = _executemany_run(dsn_b, ev[:nb])
        _check(dsn_b, nb)
        base = result("persist.executemany", "events", throughput_per_s=nb / tb, latency_ns=lb,
                      latency_basis=f"per transaction of {BATCH} events", events=nb)
        dsn = _db("bench_copy")
        tc, lc = _copy_run(dsn, ev)
        _check(dsn, n)
        res = result("persist.copy", "events", throughput_per_s=n / tc, latency_ns=lc,
                     latency_basis=f"per transaction of {BATCH} events (validate + COPY + cursor + commit)",
                     baseline=baseline_of(base), events=n, speedup_vs_baseline=(n / tc) / (nb / tb),
                     **CPU[0],
                     storage_mode="native", note="shared 2-core machine; PostgreSQL fsync=off")
        return [res, base]
    finally:
        _done()


@benchmark("persist.copy_2shards")
def bench_copy_2shards(quick: bool) -> list[dict]:
    n = 150_000 if quick else 1_000_000
    try:
        dsn = _db("bench_copy2")
        evs = [synth.stamp(synth.events(n, shard=s, seed=4 + s)) for s in (0, 1)]
        out: list = [None, None]

        def run(s: int) -> None:
            out[s] = _copy_run(dsn, evs[s], shard=s)

        t0 = time.perf_counter()
        th = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        took = time.perf_counter() - t0
        _check(dsn, n, shards=(0, 1))
        return [result("persist.copy_2shards", "events", throughput_per_s=2 * n / took,
                       latency_ns=np.concatenate([out[0][1], out[1][1]]),
                       latency_basis=f"per transaction of {BATCH} events, two connections", events=2 * n,
                       server_cpu_us_per_event=(CPU[0]["server_cpu_us_per_event"] + CPU[1]["server_cpu_us_per_event"]) / 2,
                       client_cpu_us_per_event=(CPU[0]["client_cpu_us_per_event"] + CPU[1]["client_cpu_us_per_event"]) / 2)]
    finally:
        _done()


@benchmark("persist.sidecar")
def bench_sidecar(quick: bool) -> list[dict]:
    """Producer process -> journal ring -> ShardPump thread -> PostgreSQL, end to end.

    The producer is the daemon stand-in in its own process (as the daemon is); the clock starts
    at its first published record and stops when the database cursor holds the last one.
    """
    import os
    import subprocess
    import sys

    from bot4d.persist.sidecar import PumpConfig, ShardPump
    from ipc.ring import Ring

    n = 300_000 if quick else 3_000_000
    inst = f"bench{os.getpid()}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prod = None
    try:
        dsn = _db("bench_sidecar")
        prod = subprocess.Popen([sys.executable, "-m", "bot4d.persist.synth", "--instance", inst, "-n", str(n),
                                 "--capacity", str(1 << 17), "--chunk", "4096"],
                                env={**os.environ, "PYTHONPATH": root}, stdout=subprocess.DEVNULL)
        ring = None
        deadline = time.monotonic() + 60
        while ring is None:
            try:
                ring = Ring.attach(inst, "journal-0", readonly=True)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        stop = threading.Event()
        pump = ShardPump(PumpConfig(dsn, inst, 0, batch=BATCH, ring_wait_s=5), None, stop)
        while ring.cursor == 0:
            time.sleep(0.0005)
        t0 = time.perf_counter()
        th = threading.Thread(target=pump.run)
        th.start()
        while pump.next_seq < n:
            if not th.is_alive():
                raise RuntimeError("the pump stopped early")
            time.sleep(0.001)
        took = time.perf_counter() - t0
        stop.set()
        th.join()
        prod.wait(30)
        _check(dsn, n)
        stats = ring.stats()
        ring.close()
        return [result("persist.sidecar", "events", throughput_per_s=n / took, events=n,
                       producer_refused_publishes=stats["failed"],
                       note="producer in its own process, ring of 131072 records, one pump thread")]
    finally:
        if prod is not None and prod.poll() is None:
            prod.kill()
        try:
            os.unlink(f"/dev/shm/bot4d.{inst}.journal-0")
        except FileNotFoundError:
            pass
        _done()
