"""The shard loop's kernel on a real shard (built through the daemon's own code path, real rings in
/dev/shm), driven record by record: no network, no thread, time injected."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from bot4d.config import load
from bot4d.daemon import shard_kernel as K
from bot4d.daemon.app import Daemon
from bot4d.daemon.warm import PAPER_RULES
from bot4d.feed.state import LIVE, STALE
from bot4d.kernels import oms as oms_k
from bot4d.paperkeys import ensure
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_FILL, EV_ORDER_NEW, MD_CLEAR, MD_FLAG_FRAME_END, MD_LEVEL,
                           MD_SNAPSHOT_END, MD_UPDATE_DTYPE, SIDE_ASK, SIDE_BID)
from bot4d.venues import binance as vb

CFG = """
instance = "{inst}"
paper = true
[daemon]
shard_cores = [{core}]
runtime_dir = "{d}"
state_dir = "{d}"
[persist]
enabled = true
journal_capacity = {jcap}
[risk]
max_daily_loss = "1000"
[venues.binance]
kind = "binance"
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:1"
api_key_file = "paper.key"
api_secret_file = "paper.secret"
orders_per_second = 1000
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
shard = 0
max_position = "1"
max_notional = "100000"
neutral_base = "0"
[instruments.strategy]
kind = "market_maker"
quote_qty = "0.001"
max_inventory = "0.01"
half_spread_ticks = 10
skew_ticks_per_lot = 1
stop_ticks = 1000
requote_ticks = 1
min_requote_ms = 0
"""


@pytest.fixture
def shard(tmp_path: Path):
    ensure(tmp_path)
    jcap = 1 << 12
    (tmp_path / "c.toml").write_text(CFG.format(inst=f"sk{os.getpid()}x{time.monotonic_ns() % 10**6}",
                                                core=min(os.sched_getaffinity(0)), d=tmp_path, jcap=jcap))
    d = Daemon(load(tmp_path / "c.toml"))
    d.rules[("binance", "BTCUSDT")] = PAPER_RULES
    d.table.add(vb.VENUE, "BTCUSDT", 2, 5)
    d._build()
    sh = d.shards[0]
    sh.si.equity0[0] = 10**8 * 100_000  # 100k USDT in risk quote units
    yield d, sh
    for s in d.shards:
        s.rings.journal.unlink()
    d.close()


def step(sh, now=None) -> int:
    return K.step(now or time.time_ns(), *sh._args())


def book(recv: int, bid: int = 6_000_000, ask: int = 6_000_100, clear: bool = True) -> np.ndarray:
    """A snapshot: clear, one level per side, end (prices in cents)."""
    u = np.zeros(4 if clear else 2, MD_UPDATE_DTYPE)
    k = 0
    if clear:
        u[0]["kind"] = MD_CLEAR
        k = 1
    u[k]["kind"], u[k]["side"], u[k]["price"], u[k]["qty"] = MD_LEVEL, SIDE_BID, bid, 100_000
    u[k + 1]["kind"], u[k + 1]["side"], u[k + 1]["price"], u[k + 1]["qty"] = MD_LEVEL, SIDE_ASK, ask, 100_000
    if clear:
        u[3]["kind"] = MD_SNAPSHOT_END
    u["recv_ts_ns"] = recv
    u[-1]["flags"] = MD_FLAG_FRAME_END
    return u


def egress(sh) -> np.ndarray:
    return sh.rings.egress.consume()


def journal(sh) -> np.ndarray:
    r = sh.rings.journal
    return r.records[:r.cursor].copy()  # small test journals never wrap


def report(kind, oid, *, qty=0, px=0, trade=0, inst=0) -> np.ndarray:
    r = np.zeros(1, oms_k.VENUE_REPORT_DTYPE)
    r["kind"], r["order_id"], r["qty"], r["price"], r["trade_id"], r["instrument"] = kind, oid, qty, px, trade, inst
    r["ts_ns"] = time.time_ns()
    return r


def live_quotes(d, sh, recv: int | None = None):
    d.states.state[0] = LIVE
    sh.rings.ingress.publish(book(recv=recv or time.time_ns()))
    step(sh)
    return egress(sh)


def test_a_live_book_makes_the_market_maker_quote_with_the_frame_as_latency_anchor(shard):
    d, sh = shard
    sh.rings.ingress.publish(book(recv=time.time_ns()))
    step(sh)
    assert len(egress(sh)) == 0, "the feed says the book is not LIVE yet: no quotes"
    anchor = time.time_ns()  # the receive time the feed stamped on the frame
    eg = live_quotes(d, sh, recv=anchor)
    assert sorted(eg["command"].tolist()) == [CMD_PLACE, CMD_PLACE]
    assert set(eg["side"].tolist()) == {SIDE_BID, SIDE_ASK}
    assert np.all(eg["tick_recv_ns"] == anchor) and np.all(eg["shard"] == 0)
    j = journal(sh)
    assert np.count_nonzero(j["kind"] == EV_ORDER_NEW) == 2
    assert np.all(np.diff(j["seq"]) == 1)


def test_a_fill_delivered_twice_is_applied_once_and_its_key_kept(shard):
    d, sh = shard
    eg = live_quotes(d, sh)
    bid = eg[eg["side"] == SIDE_BID][0]
    oid, px = int(bid["order_id"]), int(bid["price"])
    sh.rings.reports.publish(report(oms_k.RP_ACK, oid))
    fill = report(oms_k.RP_FILL, oid, qty=50, px=px, trade=777)
    sh.rings.reports.publish(np.concatenate([fill, fill]))  # twice in one batch
    step(sh)
    sh.rings.reports.publish(fill)                          # and again later
    step(sh)
    assert int(sh.st.positions.qty[0, 0]) == 50
    assert sh.bufs.ctr[K.C_DUP_FILLS] == 2
    j = journal(sh)
    fills = j[j["kind"] == EV_FILL]
    assert len(fills) == 1 and fills[0]["aux1"] == 777
    # another trade id is another fill
    sh.rings.reports.publish(report(oms_k.RP_FILL, oid, qty=50, px=px, trade=778))
    step(sh)
    assert int(sh.st.positions.qty[0, 0]) == 100


def test_dedup_table_forgets_only_the_older_generation():
    tbl = np.zeros((2, 64), np.int64)
    n = np.zeros(3, np.int64)
    for k in range(1, 33):          # fills generation 0 to half
        K.dedup_add(tbl, n, K._key(0, k))
    assert all(K.dedup_has(tbl, K._key(0, k)) for k in range(1, 33))
    K.dedup_add(tbl, n, K._key(0, 100))   # switches to generation 1: the first 32 are still known
    assert K.dedup_has(tbl, K._key(0, 1)) and K.dedup_has(tbl, K._key(0, 100))
    for k in range(101, 133):
        K.dedup_add(tbl, n, K._key(0, k))  # generation 1 full: generation 0 is cleared
    assert not K.dedup_has(tbl, K._key(0, 1)) and K.dedup_has(tbl, K._key(0, 100))
    assert not K.dedup_has(tbl, K._key(1, 100)), "the instrument is part of the key"


def test_a_book_withdrawn_or_gone_stale_makes_the_strategy_pull_its_quotes(shard):
    d, sh = shard
    eg = live_quotes(d, sh)
    for oid in eg["order_id"]:
        sh.rings.reports.publish(report(oms_k.RP_ACK, int(oid)))
    step(sh)
    d.states.state[0] = STALE          # the feed went quiet: no record arrives, the state changes
    step(sh)
    out = egress(sh)
    assert sorted(out["command"].tolist()) == [CMD_CANCEL, CMD_CANCEL]
    assert np.all(out["tick_recv_ns"] == 0), "a cancel not caused by a frame has no latency anchor"
    step(sh)
    assert len(egress(sh)) == 0, "nothing placed while the book is not usable"


def test_a_full_journal_ring_loses_nothing_and_stops_new_input(shard):
    d, sh = shard
    from bot4d.records import EV_CONTROL, JOURNAL_EVENT_DTYPE
    from ipc.ring import C_SLOT0, S_POS, Ring, available

    # a 16-event journal whose sidecar (gating slot 0, reserved) moves only when the test says
    ring = Ring.create(d.cfg.instance, "journal-small", JOURNAL_EVENT_DTYPE, 16, kind="journal", n_gating=1,
                       policy="fail")
    sh.rings.journal.unlink()
    sh.rings.journal = ring
    sh.journal_cap = 0  # (the kill switch's fill check is not what this test is about)
    n = K.JOURNAL_HIGH + 100
    for k in range(n):  # more events than the shard will buffer before it stops taking input
        sh.journal_control(1, 0, 1, a2=k)
    d.states.state[0] = LIVE
    sh.rings.ingress.publish(book(recv=time.time_ns()))
    assert step(sh) == 0, "backed up: no new input taken"
    assert available(sh.rings.ingress.ctrl, 0) == 4
    assert ring.cursor == 16 and sh.bufs.ctr[K.C_JOURNAL_BACKPRESSURE] > 0
    got, seen = [], 0
    while ring.cursor > seen or sh.bufs.jcount[0] > 0:
        fresh = ring.cursor - seen   # at most the ring's 16: the slot held the producer back
        got.append(np.sort(ring.records, order="seq")[16 - fresh:])
        seen = ring.cursor
        ring.ctrl[C_SLOT0 + S_POS] = ring.cursor   # the sidecar took them
        step(sh)
    ev = np.concatenate(got)
    ctl = ev[ev["kind"] == EV_CONTROL]
    assert len(ctl) == n and np.array_equal(ctl["aux2"], np.arange(n)), "every event, once, in order"
    assert np.array_equal(ev["seq"], np.arange(len(ev)))
    step(sh)
    assert available(sh.rings.ingress.ctrl, 0) == 0, "input is taken again once the journal drained"


def test_reports_are_taken_only_as_the_journal_buffer_has_room_and_none_is_lost(shard):
    d, sh = shard
    from bot4d.kernels.oms_state import C_UNKNOWN_ORDER
    from bot4d.records import JOURNAL_EVENT_DTYPE
    from ipc.ring import C_SLOT0, S_POS, Ring, available

    ring = Ring.create(d.cfg.instance, "journal-small2", JOURNAL_EVENT_DTYPE, 1 << 12, kind="journal", n_gating=1,
                       policy="fail")
    sh.rings.journal.unlink()
    sh.rings.journal = ring
    sh.journal_cap = 0
    for k in range(K.JOURNAL_HIGH - 100):   # the shard's buffer almost at its high-water mark
        sh.journal_control(1, 0, 1, a2=k)
    n = 3000
    reps = np.concatenate([report(oms_k.RP_ACK, 10**9 + k) for k in range(n)])  # orders it never had
    assert sh.rings.reports.publish(reps) == n
    step(sh)
    left = available(sh.rings.reports.ctrl, 0)
    assert 0 < left < n, "some reports taken, the rest left in the ring for later"
    for _ in range(200):
        ring.ctrl[C_SLOT0 + S_POS] = ring.cursor  # the sidecar keeps up
        step(sh)
        if available(sh.rings.reports.ctrl, 0) == 0 and sh.bufs.jcount[0] == 0 and sh.bufs.ctr[K.C_RP_PENDING] == 0:
            break
    assert sh.bufs.ctr[K.C_REPORTS] == n
    assert sh.st.counters[C_UNKNOWN_ORDER] == n, "every report reached the OMS exactly once"
