"""The soak's verdict and argument checks, and the tick-to-order bench's frame/order matching
(the parts that decide what those runs report; the runs themselves are `make soak` and
`python -m bench daemon.tick_to_order`)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.bench_daemon import match
from bench.soak import parse, verdict, window_p99
from ipc import histogram as H


def sample(t: float, rss_mb: float, p99: int, orders: int) -> dict:
    return {"t_s": t, "rss_bytes": int(rss_mb * 2**20), "t2o_p99_window_ns": p99, "orders_submitted": orders}


def test_verdict_measures_growth_from_the_first_sample_after_warmup():
    s = [sample(0, 100, 9_000_000, 1), sample(60, 200, 1000, 10), sample(90, 201, 1500, 20), sample(120, 203, 2500, 30)]
    v = verdict(s, warmup_s=60, max_rss_growth_mb=16, max_p99_ratio=2)
    assert v["ok"] and v["rss_growth_mb"] == 3.0 and v["rss_slope_mb_per_min"] == pytest.approx(3.0, rel=0.2) and v["t2o_p99_ratio"] == 2.5 and v["orders_after_warmup"] == 20
    assert v["warnings"] and "x2.50" in v["warnings"][0]   # flagged, not failed: tails are noisy here


def test_verdict_fails_on_rss_growth_and_on_a_daemon_that_stopped_trading():
    s = [sample(60, 200, 1000, 10), sample(600, 260, 1000, 10)]
    v = verdict(s, warmup_s=60, max_rss_growth_mb=16, max_p99_ratio=2)
    assert not v["ok"] and len(v["problems"]) == 2
    assert "RSS grew 60.0 MB" in v["problems"][0] and "stopped trading" in v["problems"][1]


def test_verdict_needs_two_samples_after_warmup():
    with pytest.raises(ValueError, match="two samples after the 60 s warm-up"):
        verdict([sample(0, 1, 1, 1), sample(60, 1, 1, 2)], warmup_s=60, max_rss_growth_mb=1, max_p99_ratio=2)


def test_bad_soak_arguments_are_refused(capsys):
    for argv in (["--minutes", "0"], ["--interval-s", "-1"], ["--minutes", "1", "--warmup-s", "60"],
                 ["--minutes", "x"]):
        with pytest.raises(SystemExit) as e:
            parse(argv)
        assert e.value.code == 2
    assert "leave no interval" in capsys.readouterr().err
    a = parse(["--minutes", "2", "--warmup-s", "30", "--interval-s", "30"])
    assert a.minutes == 2


def test_soak_minutes_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOAK_MINUTES", "3")
    assert parse([]).minutes == 3


def test_window_p99_is_of_the_interval_only():
    h0 = H.new_histogram()
    H.record_many(h0, np.full(1000, 5_000_000, np.int64), 1000)   # a slow start...
    before = h0.copy()
    H.record_many(h0, np.full(1000, 1000, np.int64), 1000)        # ...then a fast interval
    p99, n = window_p99(before, h0.copy())
    assert n == 1000 and 1000 <= p99 <= 1000 * 1.02
    assert window_p99(h0.copy(), h0.copy()) == (0, 0)


def test_match_takes_the_first_order_after_each_moving_frame_from_its_scheduled_time():
    sched = np.array([100, 200, 300, 400, 500], np.int64)
    sent = sched + np.array([5, 5, 50, 5, 5])
    moving = np.array([True, False, True, False, True])
    # frame 0: orders at 130 and 140 -> 30 from schedule; frame 2 (sent late at 350): order at 360 ->
    # 60 from schedule, 10 from the send; frame 4: no order before the end
    arrivals = np.array([140, 130, 360, 370], np.int64)
    s_sched, s_sent, missing = match(sched, sent, moving, arrivals)
    assert s_sched.tolist() == [30, 60] and s_sent.tolist() == [25, 10] and missing == 1
