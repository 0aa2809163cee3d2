"""Bounded client-order-id deduplication: fixed capacity, LRU eviction, time-window expiry.

A retried command carries the same client order id; the OMS must never send it twice, and the
table must never grow. ``IdemTable`` (``make_idem``) is a chained hash table over preallocated
slots with two intrusive doubly linked lists per slot:

* an LRU list (head = most recently used): when every slot is taken, the least recently used
  entry is evicted to make room. Evicting an entry still inside its window is counted
  (``stats[ST_EVICTED_LIVE]``) because a later retry of that id could then pass; with
  ``strict=True`` the table refuses the new id instead (``insert`` returns IDEM_FULL), which
  keeps the guarantee absolute at the price of refusing new orders under overload.
* a time wheel of ``n_buckets`` buckets of ``tick_ns``: an entry seen at ``t`` is filed under
  the tick ``ceil((t + window_ns) / tick_ns)`` and removed when the wheel passes that tick, so
  expiry costs O(expired) and an id is remembered for at least ``window_ns`` (at most one tick
  more). ``window_ns`` must be shorter than the wheel's span (``n_buckets * tick_ns``).

Time is passed in (``now_ns``) and must not go backwards; an earlier ``now_ns`` is treated as
the last one seen, so a stepped clock cannot resurrect expired ids or expire live ones early.

Arrays (all preallocated): ``key`` int64 client order id, ``val`` int64 (the order id it was
accepted as), ``seen`` int64 first-seen ns, ``chain`` int32 next slot in hash chain, ``lru_prev``,
``lru_next``, ``wh_prev``, ``wh_next`` int32, ``wh_bucket`` int64 expiry tick, ``used`` int8,
``heads`` int32 [hash buckets], ``wheel`` int32 [n_buckets] list heads, ``state`` int64 [4]
(lru head, lru tail, count, last tick), ``free`` int32 stack, ``stats`` int64 counters.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot4d.jitcache import helper, kernel

IDEM_NEW = 0        # inserted: first time this id is seen inside its window
IDEM_DUPLICATE = 1  # seen before inside the window: do not send again
IDEM_FULL = 2       # strict table full of live entries: refuse the command

ST_INSERTED = 0
ST_DUPLICATES = 1
ST_EXPIRED = 2
ST_EVICTED = 3
ST_EVICTED_LIVE = 4
ST_REFUSED_FULL = 5

_HEAD, _TAIL, _COUNT, _TICK = 0, 1, 2, 3


class IdemTable(NamedTuple):
    key: np.ndarray
    val: np.ndarray
    seen: np.ndarray
    chain: np.ndarray
    lru_prev: np.ndarray
    lru_next: np.ndarray
    wh_prev: np.ndarray
    wh_next: np.ndarray
    wh_tick: np.ndarray
    used: np.ndarray
    heads: np.ndarray
    wheel: np.ndarray
    free: np.ndarray
    state: np.ndarray
    params: np.ndarray      # window_ns, tick_ns, strict
    stats: np.ndarray


def make_idem(capacity: int, window_ns: int, tick_ns: int = 100_000_000,
              n_buckets: int = 0, strict: bool = False) -> IdemTable:
    """A table remembering up to ``capacity`` ids for ``window_ns`` each."""
    if capacity < 1 or window_ns < 1 or tick_ns < 1:
        raise ValueError("capacity, window_ns and tick_ns must be positive")
    if n_buckets == 0:
        n_buckets = window_ns // tick_ns + 2
    if n_buckets * tick_ns <= window_ns + tick_ns:
        raise ValueError("the wheel must span more than window_ns + one tick")
    hb = 1
    while hb < 2 * capacity:
        hb <<= 1
    m1 = lambda: np.full(capacity, -1, np.int32)  # noqa: E731
    st = np.array([-1, -1, 0, -1], np.int64)
    return IdemTable(
        key=np.zeros(capacity, np.int64), val=np.zeros(capacity, np.int64),
        seen=np.zeros(capacity, np.int64), chain=m1(), lru_prev=m1(), lru_next=m1(),
        wh_prev=m1(), wh_next=m1(), wh_tick=np.zeros(capacity, np.int64),
        used=np.zeros(capacity, np.int8), heads=np.full(hb, -1, np.int32),
        wheel=np.full(n_buckets, -1, np.int32),
        free=np.arange(capacity - 1, -1, -1, dtype=np.int32), state=st,
        params=np.array([window_ns, tick_ns, 1 if strict else 0, capacity], np.int64),
        stats=np.zeros(8, np.int64),
    )


@helper(_nrt=False)
def _hash(t, k: int) -> int:
    # Fibonacci hashing: client ids are often sequential, this spreads them over the buckets
    h = np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)
    return int(h >> np.uint64(32)) & (t.heads.shape[0] - 1)


@helper(_nrt=False)
def _find(t, k: int) -> int:
    s = t.heads[_hash(t, k)]
    while s >= 0:
        if t.key[s] == k:
            return s
        s = t.chain[s]
    return -1


@helper(_nrt=False)
def _lru_unlink(t, s: int) -> None:
    p = t.lru_prev[s]
    n = t.lru_next[s]
    if p >= 0:
        t.lru_next[p] = n
    else:
        t.state[_HEAD] = n
    if n >= 0:
        t.lru_prev[n] = p
    else:
        t.state[_TAIL] = p
    t.lru_prev[s] = -1
    t.lru_next[s] = -1


@helper(_nrt=False)
def _lru_push_front(t, s: int) -> None:
    h = t.state[_HEAD]
    t.lru_prev[s] = -1
    t.lru_next[s] = h
    if h >= 0:
        t.lru_prev[h] = s
    else:
        t.state[_TAIL] = s
    t.state[_HEAD] = s


@helper(_nrt=False)
def _remove(t, s: int) -> None:
    """Take slot s out of the hash chain, the LRU list and the wheel, and free it."""
    b = _hash(t, t.key[s])
    c = t.heads[b]
    if c == s:
        t.heads[b] = t.chain[s]
    else:
        while c >= 0 and t.chain[c] != s:
            c = t.chain[c]
        if c >= 0:
            t.chain[c] = t.chain[s]
    t.chain[s] = -1
    _lru_unlink(t, s)
    nb_ = t.wheel.shape[0]
    w = t.wh_tick[s] % nb_
    p = t.wh_prev[s]
    n = t.wh_next[s]
    if p >= 0:
        t.wh_next[p] = n
    else:
        t.wheel[w] = n
    if n >= 0:
        t.wh_prev[n] = p
    t.wh_prev[s] = -1
    t.wh_next[s] = -1
    t.used[s] = 0
    t.state[_COUNT] -= 1
    # free holds the cap - count free slots at free[0 : cap - count]
    t.free[t.params[3] - t.state[_COUNT] - 1] = s


@kernel(_nrt=False)
def advance(t, now_ns: int) -> int:
    """Expire every entry whose window ended at or before ``now_ns``; returns how many."""
    tick = t.params[1]
    cur = now_ns // tick
    last = t.state[_TICK]
    if last < 0:
        t.state[_TICK] = cur
        return 0
    if cur <= last:
        return 0
    nb_ = t.wheel.shape[0]
    gone = 0
    steps = cur - last
    if steps > nb_:
        steps = nb_
    for d in range(1, steps + 1):
        w = (last + d) % nb_
        s = t.wheel[w]
        while s >= 0:
            nxt = t.wh_next[s]
            if t.wh_tick[s] <= cur:
                _remove(t, s)
                gone += 1
            s = nxt
    t.state[_TICK] = cur
    t.stats[ST_EXPIRED] += gone
    return gone


@kernel(_nrt=False)
def lookup(t, coid: int, now_ns: int) -> int:
    """Expire, then return the order id recorded for ``coid`` (-1 if not live). A hit counts
    as a use for the LRU order."""
    advance(t, now_ns)
    s = _find(t, coid)
    if s < 0:
        return -1
    _lru_unlink(t, s)
    _lru_push_front(t, s)
    return t.val[s]


@kernel(_nrt=False)
def check_and_insert(t, coid: int, order_id: int, now_ns: int) -> int:
    """IDEM_NEW (recorded now), IDEM_DUPLICATE (already live: do not act) or IDEM_FULL."""
    if lookup(t, coid, now_ns) >= 0:
        t.stats[ST_DUPLICATES] += 1
        return IDEM_DUPLICATE
    cap = t.params[3]
    if t.state[_COUNT] == cap:
        victim = t.state[_TAIL]
        if t.params[2] != 0:
            t.stats[ST_REFUSED_FULL] += 1
            return IDEM_FULL
        _remove(t, victim)
        t.stats[ST_EVICTED] += 1
        t.stats[ST_EVICTED_LIVE] += 1   # expired entries were removed by advance() already
    s = t.free[cap - t.state[_COUNT] - 1]
    t.state[_COUNT] += 1
    t.used[s] = 1
    t.key[s] = coid
    t.val[s] = order_id
    last = t.state[_TICK]
    now = now_ns
    if last >= 0 and now // t.params[1] < last:
        now = last * t.params[1]   # clock stepped back: file the entry at the last seen tick
    t.seen[s] = now
    exp = (now + t.params[0] + t.params[1] - 1) // t.params[1]
    t.wh_tick[s] = exp
    w = exp % t.wheel.shape[0]
    h = t.wheel[w]
    t.wh_prev[s] = -1
    t.wh_next[s] = h
    if h >= 0:
        t.wh_prev[h] = s
    t.wheel[w] = s
    b = _hash(t, coid)
    t.chain[s] = t.heads[b]
    t.heads[b] = s
    _lru_push_front(t, s)
    t.stats[ST_INSERTED] += 1
    return IDEM_NEW


@kernel(_nrt=False)
def set_value(t, coid: int, val: int) -> bool:
    """Record what a live id was accepted as (the order id, once it has one)."""
    s = _find(t, coid)
    if s < 0:
        return False
    t.val[s] = val
    return True


@kernel(_nrt=False)
def count(t) -> int:
    return t.state[_COUNT]


def warmup() -> None:
    t = make_idem(4, 1000, 100)
    check_and_insert(t, 1, 10, 0)
    check_and_insert(t, 1, 10, 5)
    lookup(t, 2, 2000)
    count(t)
