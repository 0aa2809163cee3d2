"""Feed client policies without sockets: reconnect backoff and cap, the book-state table with
stale detection, and once-per-burst logging. Time is always injected."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.counters import BurstLog
from bot4d.feed.state import LIVE, RESYNCING, STALE, SYNCING, BookStateTable

S = 1_000_000_000


def test_backoff_full_jitter_stays_under_exponential_ceiling() -> None:
    p = BackoffPolicy(base_s=0.5, max_s=8.0, multiplier=2.0, max_attempts=1000, window_s=60, seed=7)
    now = 0
    assert p.delay_s(now) == 0.0  # the first connection is immediate
    p.attempt(now)
    delays = []
    for k in range(1, 12):
        p.failed()
        d = p.delay_s(now)
        assert 0.0 <= d <= min(8.0, 0.5 * 2 ** (k - 1)), (k, d)
        delays.append(d)
        now += int(d * S)
        p.attempt(now)
    assert p.ceiling_s(1) == 0.5 and p.ceiling_s(4) == 4.0 and p.ceiling_s(10) == 8.0
    # jitter: not all equal, and seeded so the run is reproducible
    assert len(set(delays)) == len(delays)
    q = BackoffPolicy(base_s=0.5, max_s=8.0, max_attempts=1000, seed=7)
    q.attempt(0)
    q.failed()
    assert q.delay_s(0) == delays[0]


def test_backoff_cap_limits_attempts_per_window() -> None:
    """A venue that accepts and drops at once: however short the jittered delays, never more
    than max_attempts attempts start inside any window."""
    p = BackoffPolicy(base_s=0.001, max_s=0.002, max_attempts=5, window_s=10.0, seed=1)
    now = 0
    starts = []
    for _ in range(40):
        d = p.delay_s(now)
        now += int(d * S)
        p.attempt(now)
        starts.append(now)
        p.connection_ended(lived_ns=1000)  # died young
    starts = np.array(starts)
    for t in starts:
        assert np.count_nonzero((starts >= t) & (starts < t + 10 * S)) <= 5
    assert p.capped >= 7          # 40 attempts at 5 per 10 s need the cap 7 times at least
    assert starts[-1] >= 70 * S   # ... which spreads them over 70 s or more


def test_backoff_resets_after_a_healthy_connection() -> None:
    p = BackoffPolicy(base_s=1.0, max_s=64.0, healthy_after_s=10.0, max_attempts=100, seed=3)
    for _ in range(6):
        p.failed()
    assert p.ceiling_s(p.failures) == 32.0
    p.connection_ended(lived_ns=11 * S)
    assert p.failures == 1 and p.ceiling_s(p.failures) == 1.0
    p.connection_ended(lived_ns=1 * S)  # died young: grow again
    assert p.failures == 2


def test_backoff_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(base_s=0)
    with pytest.raises(ValueError):
        BackoffPolicy(base_s=2, max_s=1)
    with pytest.raises(ValueError):
        BackoffPolicy(max_attempts=0)


def test_state_table_folds_staleness_with_an_injected_clock() -> None:
    t = BookStateTable(3)
    ids = np.array([0, 1, 2])
    t.stale_after_ns[:] = 5 * S
    t.stale_after_ns[2] = 0  # staleness disabled for this one
    assert (t.state == SYNCING).all()
    venue = np.array([LIVE, LIVE, LIVE], np.int8)
    t.touch(np.array([0, 1, 2, 2]), 100 * S)
    assert t.publish(ids, venue, 101 * S) == 3
    assert all(t.is_live(i) for i in range(3))
    t.touch(np.array([0]), 104 * S)
    t.publish(ids, venue, 106 * S)           # 1 silent for 6 s > 5 s
    assert t.get(0) == LIVE and t.get(1) == STALE and t.get(2) == LIVE
    t.touch(np.array([1]), 107 * S)          # fresh data on a chain the venue still vouches for
    t.publish(ids, venue, 107 * S)
    assert t.get(1) == LIVE
    # the venue's own view wins over freshness: a resyncing book is never LIVE
    t.publish(ids, np.array([RESYNCING, LIVE, SYNCING], np.int8), 107 * S)
    assert [int(x) for x in t.state] == [RESYNCING, LIVE, SYNCING]
    assert int(t.rows["transitions"][1]) == 3  # SYNCING->LIVE->STALE->LIVE


def test_state_table_over_an_external_buffer() -> None:
    """Later the table lives in shared memory: a view over a buffer must be the same table."""
    from bot4d.feed.state import STATE_TABLE_DTYPE

    raw = bytearray(STATE_TABLE_DTYPE.itemsize * 4)
    t = BookStateTable(4, memoryview(raw))
    t.set(2, LIVE, 1)
    other = np.frombuffer(raw, STATE_TABLE_DTYPE)
    assert int(other["state"][2]) == LIVE and int(other["changed_ns"][2]) == 1


def test_burst_log_says_each_problem_once_per_burst(caplog) -> None:
    lg = logging.getLogger("test.feed.burst")
    b = BurstLog(lg, interval_ns=10 * S)
    with caplog.at_level(logging.WARNING, logger="test.feed.burst"):
        for k in range(1000):
            b.event("BINANCE", "MALFORMED_JSON", 1, k * 1_000_000)  # 1000 in one second
        b.event("BINANCE", "GAP", 1, 0)                              # another reason: own line
        b.event("BINANCE", "MALFORMED_JSON", 1, 12 * S)              # next burst: summary
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "MALFORMED_JSON x1" in lines[0]
    assert "GAP x1" in lines[1]
    assert "x1000 (999 since last report)" in lines[2]


def test_every_adapter_implements_the_feed_interface() -> None:
    from bot4d.feed.adapter import FeedAdapter
    from bot4d.feed.binance import BinanceAdapter, BinanceFuturesAdapter
    from bot4d.feed.bybit import BybitAdapter
    from bot4d.feed.coinbase import CoinbaseLegacyAdapter
    from bot4d.feed.kraken import KrakenV1Adapter, KrakenV2Adapter
    from bot4d.feed.okx import OkxAdapter
    from bot4d.instruments import InstrumentTable

    t = InstrumentTable()
    t.add("BINANCE", "BNBBTC", 8, 8)
    t.add("BINANCE_FUTURES", "BTCUSDT", 2, 3)
    t.add("KRAKEN", "XBT/USD", 1, 8)
    t.add("OKX", "BTC-USDT", 1, 8)
    t.add("BYBIT", "ETHUSDT", 2, 3)
    t.add("COINBASE", "BTC-USD", 2, 8)
    t.add("KRAKEN", "ETH/USD", 2, 8)
    adapters = [BinanceAdapter(t, ["BNBBTC"]), BinanceFuturesAdapter(t, ["BTCUSDT"]),
                KrakenV1Adapter(t, ["XBT/USD"]), OkxAdapter(t, ["BTC-USDT"]),
                BybitAdapter(t, ["ETHUSDT"]), CoinbaseLegacyAdapter(t, ["BTC-USD"]),
                KrakenV2Adapter(t, ["ETH/USD"])]
    for a, want in zip(adapters, range(7)):
        assert isinstance(a, FeedAdapter)
        assert list(a.instrument_ids) == [want]
        assert a.subscribe_messages() and all(isinstance(m, bytes) for m in a.subscribe_messages())
        assert a.venue_states().tolist() == [0]          # SYNCING until synced
        a.on_disconnect()
        assert a.venue_states().tolist() == [2]          # RESYNCING: never LIVE after a loss
        assert len(a.drain()) == 0 or a.drain().dtype.names[0] == "seq"
    # Binance resyncs over REST, Kraken/OKX over the open connection
    assert [r.path for r in adapters[0].snapshot_requests()] == ["/api/v3/depth?symbol=BNBBTC&limit=1000"]
    assert adapters[1].snapshot_requests()[0].path.startswith("/fapi/v1/depth?symbol=BTCUSDT")
    adapters[2].force_resync()
    assert [b'"unsubscribe"' in m for m in adapters[2].take_resubscribe()] == [True, False]
    adapters[3].force_resync()
    assert len(adapters[3].take_resubscribe()) == 2
    with pytest.raises(ValueError):
        BinanceAdapter(t, ["NOPE"])
