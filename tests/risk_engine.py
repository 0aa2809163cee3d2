"""A Python edge around the pre-trade risk kernel, for tests and benchmarks.

The daemon calls ``bot4d.kernels.risk.check_batch`` from compiled code (the shard loop) and from
``Shard.submit``; this class owns the output buffers and the correlation matrix so that a test or a
benchmark can decide intents with one call, and :meth:`RiskEngine.check_one` decides one intent
from Python as cheaply as numba allows (``bench/bench_risk.py``: ``risk.check_single``).

Why check_one goes through a jitclass: calling a compiled function from Python unboxes each array
argument (a numba MemInfo is made for each numpy array, then released): with the kernel's 19
arrays that was about 2 us of a single check. :meth:`RiskEngine.bind` puts every array in one
jitclass instance once; a check then unboxes that instance (a pointer read: a numba StructRef
measured ~0.4 us more per call), the intent and the clock. The jitclass and the function taking
it compile in each process (a few seconds, at the first bind), which tests and benchmarks can pay.
"""
from __future__ import annotations

import operator

import numba as nb
import numpy as np
from numba.experimental import jitclass

from bot4d.kernels.risk import RiskState, check_batch
from bot4d.records import JOURNAL_EVENT_DTYPE, ORDER_INTENT_DTYPE

_I1 = nb.int64[::1]
_I2 = nb.int64[:, ::1]


@jitclass([("cfg", _I1), ("inst", _I2), ("acct", _I1), ("strat", _I2), ("bucket", _I2),
           ("work", _I2), ("ks", _I1), ("pos", _I1), ("open_orders", _I1), ("open_buy", _I1),
           ("open_sell", _I1), ("mid", _I1), ("corr", nb.float64[:, ::1]),
           ("decision", nb.int32[::1]), ("out_qty", _I1),
           ("ev", nb.typeof(np.zeros(1, JOURNAL_EVENT_DTYPE))), ("ev_count", _I1), ("shard", nb.int64)])
class _Bound:
    """Every array one single check reads or writes, passed to compiled code as one object."""

    def __init__(self, cfg, inst, acct, strat, bucket, work, ks, pos, open_orders, open_buy,
                 open_sell, mid, corr, decision, out_qty, ev, ev_count, shard):
        self.cfg = cfg
        self.inst = inst
        self.acct = acct
        self.strat = strat
        self.bucket = bucket
        self.work = work
        self.ks = ks
        self.pos = pos
        self.open_orders = open_orders
        self.open_buy = open_buy
        self.open_sell = open_sell
        self.mid = mid
        self.corr = corr
        self.decision = decision
        self.out_qty = out_qty
        self.ev = ev
        self.ev_count = ev_count
        self.shard = shard


@nb.njit(nogil=True)
def _check_bound(b, intent, now_ns):
    b.ev_count[0] = 0
    check_batch(intent, b.cfg, b.inst, b.acct, b.strat, b.bucket, b.work, b.ks, b.pos,
                b.open_orders, b.open_buy, b.open_sell, b.mid, b.corr, now_ns, b.decision,
                b.out_qty, b.ev, b.ev_count, b.shard)
    return b.decision[0], b.out_qty[0]


class RiskEngine:
    """Owns the kernel's output buffers (``decision``, ``out_qty``, ``ev``) and ``corr``."""

    def __init__(self, rs: RiskState, max_batch: int = 4096, shard: int = 0) -> None:
        self.rs = rs
        self.shard = shard
        self.decision = np.zeros(max_batch, np.int32)
        self.out_qty = np.zeros(max_batch, np.int64)
        self.ev = np.zeros(max_batch, JOURNAL_EVENT_DTYPE)
        self.ev_count = np.zeros(1, np.int64)
        n = rs.inst.shape[0]
        self.corr = np.full((n, n), np.nan)
        self._bound = None
        self._entry = None

    def check(self, intents: np.ndarray, pos: np.ndarray, open_orders: np.ndarray,
              open_buy: np.ndarray, open_sell: np.ndarray, mid: np.ndarray, now_ns: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Decide intents (at most max_batch); returns views of (decision, out_qty).

        This call's reject records are in ``self.ev[:self.ev_count[0]]`` until the next call
        (copy them into the journal ring before calling again).
        """
        if intents.dtype != ORDER_INTENT_DTYPE:
            raise TypeError("intents must be ORDER_INTENT_DTYPE records")
        n = intents.shape[0]
        if n > self.decision.shape[0]:
            raise ValueError(f"{n} intents exceed max_batch {self.decision.shape[0]}")
        self.ev_count[0] = 0
        rs = self.rs
        done = check_batch(intents, rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks,
                           pos, open_orders, open_buy, open_sell, mid, self.corr, now_ns,
                           self.decision, self.out_qty, self.ev, self.ev_count, self.shard)
        if done != n:  # cannot happen with ev sized to max_batch; refuse rather than drop
            raise RuntimeError(f"risk decided only {done} of {n} intents")
        return self.decision[:n], self.out_qty[:n]

    def bind(self, pos: np.ndarray, open_orders: np.ndarray, open_buy: np.ndarray,
             open_sell: np.ndarray, mid: np.ndarray) -> None:
        """Bind the OMS/market arrays (updated in place by their owners) for :meth:`check_one`.

        Every array is validated here, once: the per-intent path calls the compiled entry point,
        which skips numba's per-call type dispatch and therefore its checks.
        """
        n = self.rs.inst.shape[0]
        for name, a in (("pos", pos), ("open_orders", open_orders), ("open_buy", open_buy),
                        ("open_sell", open_sell), ("mid", mid)):
            if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.shape != (n,) \
                    or not a.flags.c_contiguous or not a.flags.writeable:
                raise TypeError(f"{name} must be a writeable C-contiguous int64 array of {n}")
        rs = self.rs
        b = _Bound(rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks, pos, open_orders,
                   open_buy, open_sell, mid, self.corr, self.decision, self.out_qty, self.ev,
                   self.ev_count, self.shard)
        one = np.zeros(1, ORDER_INTENT_DTYPE)
        sig = (nb.typeof(b), nb.typeof(one), nb.int64)
        _check_bound.compile(sig)
        self._entry = _check_bound.overloads[sig].entry_point
        self._bound = b

    def check_one(self, intent: np.ndarray, now_ns: int) -> tuple[int, int]:
        """Decide one intent (a length-1 ORDER_INTENT_DTYPE array) against the bound arrays.

        Returns (reason, approved qty); a reject's journal record is ``self.ev[0]``.
        """
        # the entry point trusts its argument types: these checks are what keeps it safe
        if intent.dtype is not ORDER_INTENT_DTYPE and intent.dtype != ORDER_INTENT_DTYPE:
            raise TypeError("intent must be ORDER_INTENT_DTYPE records")
        # a (1,) array is C-contiguous whatever its stride (numpy ignores the stride of a
        # length-1 axis), so its shape is all there is to check
        if intent.shape != (1,):
            raise ValueError("check_one takes a contiguous array of exactly one intent")
        if type(now_ns) is not int:
            now_ns = operator.index(now_ns)  # numpy ints are fine; a float is a TypeError
        if self._entry is None:
            raise RuntimeError("RiskEngine.check_one needs bind() first")
        return self._entry(self._bound, intent, now_ns)
