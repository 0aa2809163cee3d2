"""Kill-switch properties over random event sequences (hypothesis drives the seeds)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.kernels import killswitch as K
from bot4d.records import EV_KILL_SWITCH, EV_TRADING_STATE, JOURNAL_EVENT_DTYPE

S = 1_000_000_000


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_tripped_means_halted_and_only_an_operator_reaches_active(seed):
    rng = np.random.default_rng(seed)
    ks = K.make_killswitch()
    cfg = K.make_ks_config(max_daily_loss=1000, window_ns=8 * S, max_rejects=5, max_errors=5,
                           max_breaker_opens=2, md_stale_ns=3 * S, cooloff_ns=10 * S)
    ev = np.zeros(2048, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    t = 100 * S
    md = t
    peak = 100_000
    for _ in range(200):
        t += int(rng.integers(0, 3 * S))
        if rng.random() < 0.9:
            md = t
        before = int(ks[K.K_STATE])
        r = rng.random()
        if r < 0.3:
            K.ks_note(ks, cfg, int(rng.integers(0, 3)), int(rng.integers(1, 4)), t)
        elif r < 0.35:
            K.ks_trip(ks, cfg, K.TRIP_MANUAL, 0, t, ev, n, 0)
        elif r < 0.4:
            K.ks_resume(ks, int(rng.choice([K.TS_ACTIVE, K.TS_REDUCING])), t, ev, n, 0)
        else:
            eq = int(peak * rng.choice([1.0, 0.999, 0.995, 0.8]))
            K.ks_evaluate(ks, cfg, eq, peak, eq + int(rng.choice([0, 0, 500, 2000])), md,
                          int(rng.integers(0, 1000)), 1000, t, ev, n, 0)
        if ks[K.K_TRIPPED]:
            assert ks[K.K_STATE] == K.TS_HALTED
            assert ks[K.K_REASON] != K.TRIP_NONE
        # nothing but an operator's resume moves a halted switch straight to ACTIVE
        if before != K.TS_ACTIVE and ks[K.K_STATE] == K.TS_ACTIVE:
            last = ev[n[0] - 1]
            assert last["kind"] == EV_TRADING_STATE and last["reason"] == K.RESUME_MANUAL
    prev = K.TS_ACTIVE
    for e in ev[: n[0]]:
        assert e["aux3"] == prev                      # every change is journaled, in order
        prev = e["state"]
        if e["kind"] == EV_KILL_SWITCH:
            assert e["state"] == K.TS_HALTED and e["reason"] != K.TRIP_NONE
    assert prev == ks[K.K_STATE] and ks[K.K_EVENTS_LOST] == 0
