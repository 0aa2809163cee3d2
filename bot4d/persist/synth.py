"""Deterministic streams of journal events shaped like a trading core's, for tests and benchmarks.

A stand-in for the daemon's shard loop (which is built elsewhere): orders are placed with a
stop-loss, acknowledged, filled, and each fill moves a position. Values are int64 units of the
instruments ``setup_reference`` configures; sequences are left 0 for the ring to stamp, or set
with ``stamp``.
"""
from __future__ import annotations

import numpy as np
import psycopg

from bot4d import records as R
from bot4d.persist.decode import JFLAG_OPENS_POSITION

T0_NS = 1_795_000_000 * 10**9  # 2026-11-18, an arbitrary fixed start

# quote_scale is the scale of money in the journal: notional units = price units x qty units
# (bot4d.records), so price_scale + qty_scale for instruments the OMS trades
INSTRUMENTS = [  # id, venue, symbol, price_scale, qty_scale, quote_scale, position_cap
    (0, "binance", "BTCUSDT", 2, 5, 7, "50"),
    (1, "binance", "ETHUSDT", 2, 4, 6, None),
    (2, "okx", "SOL-USDT", 3, 2, 5, "100000"),
]
ASSETS = [(0, "USDT", 8), (1, "BTC", 8), (2, "ETH", 8)]


def setup_reference(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for row in INSTRUMENTS:
            conn.execute("INSERT INTO instruments (id, venue, symbol, price_scale, qty_scale, quote_scale, "
                         "position_cap) VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
        for row in ASSETS:
            conn.execute("INSERT INTO assets (id, code, scale) VALUES (%s, %s, %s)", row)


def events(n: int, shard: int = 0, *, seed: int = 1, t0_ns: int = T0_NS, step_ns: int = 1_000_000) -> np.ndarray:
    """``n`` events in a repeating order life-cycle: NEW, ACK, FILL, POSITION, FILLED state, ...

    Mix per 10 events: 2 new orders, 4 order states, 2 fills, 1 position, plus one of
    balance/risk/control in rotation, so every table is exercised.
    """
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=R.JOURNAL_EVENT_DTYPE)
    pattern = np.array([R.EV_ORDER_NEW, R.EV_ORDER_STATE, R.EV_FILL, R.EV_ORDER_STATE, R.EV_POSITION,
                        R.EV_ORDER_NEW, R.EV_ORDER_STATE, R.EV_FILL, R.EV_ORDER_STATE, R.EV_BALANCE],
                       dtype=np.int16)
    i = np.arange(n)
    kind = pattern[i % 10].copy()
    rot = (i // 10) % 4  # the 10th slot rotates through balance, risk reject, breaker, control
    tenth = (i % 10) == 9
    kind[tenth & (rot == 1)] = R.EV_RISK_REJECT
    kind[tenth & (rot == 2)] = R.EV_BREAKER
    kind[tenth & (rot == 3)] = R.EV_CONTROL
    ev["kind"] = kind
    ev["shard"] = shard
    ev["ts_ns"] = t0_ns + i.astype(np.int64) * step_ns
    ev["instrument"] = (i // 5) % 2  # instruments 0 and 1
    oid = (i // 5).astype(np.int64) + 1 + shard * 10**12
    ev["order_id"] = oid
    ev["client_order_id"] = oid + 7_000_000
    ev["side"] = (i // 5) % 2
    ev["order_type"] = 1
    ev["tif"] = 1
    ev["price"] = 6_000_000 + rng.integers(-50_000, 50_000, n)
    ev["qty"] = rng.integers(1, 100_000, n)
    new = kind == R.EV_ORDER_NEW
    ev["stop_price"][new] = ev["price"][new] - 100_000
    ev["aux0"][new] = JFLAG_OPENS_POSITION
    st = kind == R.EV_ORDER_STATE
    ev["state"][st] = 3
    ev["filled_qty"][st] = ev["qty"][st] // 2
    ev["aux0"][st] = oid[st] + 555
    fill = kind == R.EV_FILL
    ev["fee"][fill] = rng.integers(-1000, 100_000, int(fill.sum()))
    ev["aux0"][fill] = 1 + (i[fill] % 2)
    ev["aux1"][fill] = i[fill]
    pos = kind == R.EV_POSITION
    ev["qty"][pos] = rng.integers(-1_000_000, 1_000_000, int(pos.sum()))  # within BTC cap of 50
    ev["aux0"][pos] = rng.integers(-10**9, 10**9, int(pos.sum()))
    bal = kind == R.EV_BALANCE
    ev["instrument"][bal] = -1
    ev["aux0"][bal] = i[bal] % 3
    ev["qty"][bal] = rng.integers(0, 10**12, int(bal.sum()))
    ev["filled_qty"][bal] = 0
    rk = kind == R.EV_RISK_REJECT
    ev["reason"][rk] = 7
    br = kind == R.EV_BREAKER
    ev["instrument"][br] = -1
    ev["state"][br] = 2
    ctl = kind == R.EV_CONTROL
    ev["instrument"][ctl] = -1
    ev["reason"][ctl] = 3
    ev["aux0"][ctl] = 0
    ev["aux1"][ctl] = 4242
    return ev


def stamp(ev: np.ndarray, first_seq: int = 0) -> np.ndarray:
    ev["seq"] = first_seq + np.arange(len(ev), dtype=np.int64)
    return ev


def produce(instance: str, shard: int, n: int, *, capacity: int = 4096, chunk: int = 256,
            policy: str = "fail", rate: float = 0.0, seed: int = 1, bad_at: int = -1) -> None:
    """The daemon stand-in: create shard ``shard``'s journal ring and publish ``n`` events.

    Refused publishes (ring full because the sidecar cannot write) are retried, never dropped,
    exactly what the daemon's policy must guarantee; the ring's counters record the refusals.
    ``rate`` (events/s, 0 = as fast as possible) paces the stream so tests can kill things
    mid-way. ``bad_at`` >= 0 corrupts that event's kind (a record the sidecar cannot decode).
    """
    import time

    from ipc.ring import Ring

    ring = Ring.create(instance, f"journal-{shard}", R.JOURNAL_EVENT_DTYPE, capacity, kind="journal",
                       n_gating=1, policy=policy, timeout_ns=50_000_000, reclaim_dead=True)
    ev = events(n, shard=shard, seed=seed)
    if 0 <= bad_at < n:
        ev["kind"][bad_at] = 99
    t0 = time.monotonic()
    i = 0
    while i < n:
        part = ev[i:i + chunk]
        part["ts_ns"] = time.time_ns()
        k = ring.publish(part)
        i += k
        if k < len(part):
            time.sleep(0.001)  # full: the daemon would stop trading here, and keep every event
        if rate > 0:
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    ring.segment.heartbeat()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="journal producer stand-in for tests and benchmarks")
    ap.add_argument("--instance", required=True)
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--capacity", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--policy", default="fail")
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--bad-at", type=int, default=-1)
    a = ap.parse_args()
    produce(a.instance, a.shard, a.n, capacity=a.capacity, chunk=a.chunk, policy=a.policy, rate=a.rate,
            bad_at=a.bad_at)
    print("done", flush=True)
