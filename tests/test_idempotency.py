"""Bounded idempotency table: window expiry on injected time, LRU eviction, strict mode."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot4d.kernels import idempotency as I

SEC = 1_000_000_000


def test_duplicate_inside_window_then_free_after():
    t = I.make_idem(8, 10 * SEC, SEC)
    assert I.check_and_insert(t, 42, 7, 0) == I.IDEM_NEW
    assert I.check_and_insert(t, 42, 7, 9 * SEC) == I.IDEM_DUPLICATE
    assert I.lookup(t, 42, 9 * SEC + SEC // 2) == 7
    assert I.check_and_insert(t, 42, 8, 10 * SEC) == I.IDEM_NEW     # window over
    assert I.lookup(t, 42, 10 * SEC) == 8
    assert t.stats[I.ST_EXPIRED] == 1 and t.stats[I.ST_DUPLICATES] == 1


def test_expiry_rounds_up_to_the_tick_never_early():
    t = I.make_idem(8, 10 * SEC, SEC)
    I.check_and_insert(t, 1, 1, SEC // 2)                  # window ends at 10.5 s
    assert I.lookup(t, 1, 10 * SEC + SEC // 2 - 1) == 1    # still inside
    assert I.lookup(t, 1, 11 * SEC - 1) == 1               # at most one tick late
    assert I.lookup(t, 1, 11 * SEC) == -1


def test_lru_eviction_keeps_recently_used():
    t = I.make_idem(3, 100 * SEC, SEC)
    for k in (1, 2, 3):
        I.check_and_insert(t, k, k, 0)
    I.lookup(t, 1, 0)                                      # 1 becomes most recent
    assert I.check_and_insert(t, 4, 4, 0) == I.IDEM_NEW    # evicts 2, the least recent
    assert I.lookup(t, 2, 0) == -1 and I.lookup(t, 1, 0) == 1 and I.lookup(t, 3, 0) == 3
    assert t.stats[I.ST_EVICTED] == 1 and t.stats[I.ST_EVICTED_LIVE] == 1
    assert I.count(t) == 3


def test_strict_mode_refuses_instead_of_evicting_live_ids():
    t = I.make_idem(2, 100 * SEC, SEC, strict=True)
    I.check_and_insert(t, 1, 1, 0)
    I.check_and_insert(t, 2, 2, 0)
    assert I.check_and_insert(t, 3, 3, 0) == I.IDEM_FULL
    assert I.lookup(t, 1, 0) == 1 and I.lookup(t, 2, 0) == 2
    # once the window passes, room comes back
    assert I.check_and_insert(t, 3, 3, 101 * SEC) == I.IDEM_NEW


def test_clock_stepping_back_neither_resurrects_nor_expires_early():
    t = I.make_idem(8, 10 * SEC, SEC)
    I.check_and_insert(t, 1, 1, 100 * SEC)
    assert I.check_and_insert(t, 2, 2, 50 * SEC) == I.IDEM_NEW   # clock went back 50 s
    assert I.lookup(t, 2, 105 * SEC) == 2                         # filed at the last tick seen
    assert I.lookup(t, 1, 109 * SEC) == 1
    assert I.lookup(t, 1, 110 * SEC) == -1


def test_long_jump_expires_everything():
    t = I.make_idem(16, 2 * SEC, SEC // 10)
    for k in range(16):
        I.check_and_insert(t, k, k, k * 1000)
    I.advance(t, 10**6 * SEC)
    assert I.count(t) == 0
    assert t.stats[I.ST_EXPIRED] == 16


def test_bad_parameters_refused():
    with pytest.raises(ValueError):
        I.make_idem(0, SEC)
    with pytest.raises(ValueError):
        I.make_idem(4, 0)
    with pytest.raises(ValueError):
        I.make_idem(4, 10 * SEC, SEC, n_buckets=5)   # wheel shorter than the window


ops = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3 * SEC)), min_size=1, max_size=300)


@settings(max_examples=120, deadline=None)
@given(ops, st.integers(1, 32), st.booleans())
def test_never_accepted_twice_inside_window_and_bounded(seq, cap, strict):
    """Reference model: a dict of live ids. In strict mode no duplicate is ever accepted inside
    its window; in LRU mode one can only slip through after a counted live eviction."""
    window = 2 * SEC
    t = I.make_idem(cap, window, SEC // 10, strict=strict)
    now = 0
    accepted_at: dict[int, int] = {}
    for key, dt in seq:
        now += dt // 4
        r = I.check_and_insert(t, key, key + 1, now)
        assert I.count(t) <= cap                           # memory never grows
        if r == I.IDEM_NEW:
            last = accepted_at.get(key)
            if last is not None and now - last < window:
                assert not strict
                assert t.stats[I.ST_EVICTED_LIVE] > 0
            accepted_at[key] = now
        elif r == I.IDEM_DUPLICATE:
            assert key in accepted_at                      # only ids really seen
        else:
            assert strict and I.count(t) == cap
    # every slot is either on the free stack or in use, never both, none lost
    n = I.count(t)
    free = set(int(x) for x in t.free[: cap - n])
    used = set(int(x) for x in (t.used != 0).nonzero()[0])
    assert len(free) == cap - n and len(used) == n and not (free & used)
    assert free | used == set(range(cap))
