"""Breaker properties over random call sequences (hypothesis drives the seeds)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d import errors as E
from bot4d.kernels import breaker as B
from bot4d.records import JOURNAL_EVENT_DTYPE

MS = 1_000_000
LEGAL = {(B.CLOSED, B.OPEN), (B.OPEN, B.HALF_OPEN), (B.HALF_OPEN, B.OPEN), (B.HALF_OPEN, B.CLOSED)}


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_transitions_are_legal_and_probes_bounded(seed):
    rng = np.random.default_rng(seed)
    probes = int(rng.integers(1, 4))
    br, cfg = B.make_breakers(1, max_consec=int(rng.integers(1, 6)), window_ns=1000 * MS,
                              min_calls=int(rng.integers(1, 10)),
                              max_err_bps=int(rng.integers(1000, 9000)), slow_ns=50 * MS,
                              max_consec_slow=int(rng.integers(1, 4)), cooldown_ns=300 * MS,
                              probes=probes, probe_ok_to_close=int(rng.integers(1, probes + 1)))
    ev = np.zeros(1024, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    t = 1_000 * MS
    allowed_in_half_open = 0
    p_fail = rng.uniform(0, 1)
    for _ in range(300):
        t += int(rng.integers(0, 60)) * MS
        before = int(br[0, B.BR_STATE])
        if rng.random() < 0.5:
            ok = B.br_allow(br, cfg, 0, t, ev, n, 0)
            if before == B.OPEN and t - br[0, B.BR_OPENED_AT] < 300 * MS:
                assert not ok                                   # no call during the cool-down
            if br[0, B.BR_STATE] == B.HALF_OPEN:
                if before != B.HALF_OPEN:
                    allowed_in_half_open = 0
                allowed_in_half_open += int(ok)
                assert allowed_in_half_open <= probes           # bounded probes
        else:
            cat = E.CAT_RETRY if rng.random() < p_fail else rng.choice([E.CAT_OK, E.CAT_REJECT])
            B.br_record(br, cfg, 0, int(cat), int(rng.integers(0, 100)) * MS, t, ev, n, 0)
            if before == B.OPEN:
                assert br[0, B.BR_STATE] == B.OPEN              # late answers change nothing
    prev = B.CLOSED
    for e in ev[: n[0]]:
        assert (int(e["aux0"]), int(e["state"])) in LEGAL
        assert int(e["aux0"]) == prev                           # events chain without gaps
        prev = int(e["state"])
    assert prev == br[0, B.BR_STATE]
    assert br[0, B.BR_LOST] == 0
