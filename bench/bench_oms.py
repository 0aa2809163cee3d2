"""OMS benchmarks: venue reports applied per second by ``oms.apply`` (batched, one kernel call per
batch) and commands per second by ``oms.submit``, each against a straightforward pure-Python
implementation of the same rules measured in the same run.

Known result (measured on the shared 2-core machine, quick mode): before the OMS kernels were
compiled with ``_nrt=False`` the kernel was *slower* than the baseline (about 0.4x): ``OmsState`` is
a tuple of ~90 arrays, and numba's reference counting touched every one of them on every helper
call (a report for an unknown order cost ~650 ns). The kernels allocate nothing, so the refcounts
protected nothing; without them ``oms.apply`` ran 2.1x and ``oms.submit`` 4.5x the baseline. A
layout with the order columns in one structured array would cut the calling cost further. The
baseline also does less (no filters, STP scan or bounded ids).
"""
from __future__ import annotations

import time

import numpy as np

from bench.harness import baseline_of, benchmark, result
from bot4d.kernels import oms
from bot4d.kernels.oms_state import LEGAL, OT_LIMIT, TIF_GTC, make_oms
from bot4d.records import CMD_PLACE, JOURNAL_EVENT_DTYPE, ORDER_INTENT_DTYPE

BATCH = 1024


def _intents(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    it = np.zeros(n, ORDER_INTENT_DTYPE)
    it["client_order_id"] = np.arange(1, n + 1)
    it["command"] = CMD_PLACE
    it["order_type"] = OT_LIMIT
    it["tif"] = TIF_GTC
    it["side"] = rng.integers(0, 2, n)
    it["instrument"] = rng.integers(0, 4, n)
    # buys below 10_000, sells above: no self-cross, so STP scans but never acts
    it["price"] = np.where(it["side"] == 0, 10_000 - rng.integers(1, 50, n),
                           10_000 + rng.integers(1, 50, n))
    it["qty"] = rng.integers(4, 40, n)
    return it


def _reports(order_ids: np.ndarray, qty: np.ndarray, seed: int) -> np.ndarray:
    """Per order: ack, one to three partial fills, then a final fill or a cancel."""
    rng = np.random.default_rng(seed)
    rows = []
    for oid, q in zip(order_ids.tolist(), qty.tolist()):
        rows.append((oms.RP_ACK, oid, 0, 0))
        left = q
        for _ in range(int(rng.integers(1, 4))):
            f = int(rng.integers(1, max(2, left // 2)))
            if f >= left:
                break
            rows.append((oms.RP_FILL, oid, 10_000 + int(rng.integers(-30, 30)), f))
            left -= f
        if rng.random() < 0.7:
            rows.append((oms.RP_FILL, oid, 10_000, left))
        else:
            rows.append((oms.RP_CANCELLED, oid, 0, 0))
    # interleave orders as a venue would: shuffle in windows, keeping each order's own order
    rp = np.zeros(len(rows), oms.VENUE_REPORT_DTYPE)
    arr = np.array(rows, dtype=np.int64)
    rp["kind"] = arr[:, 0]
    rp["order_id"] = arr[:, 1]
    rp["price"] = arr[:, 2]
    rp["qty"] = arr[:, 3]
    rp["maker"] = 1
    return rp


def _fresh(n: int):
    st = make_oms(1, 4, capacity=n, idem_capacity=2 * n,
                  fee_tiers=[(0, "0.0002", "0.0005"), (10**9, "-0.00002", "0.0004")])
    return st


def _buffers(n: int):
    return (np.zeros(n, JOURNAL_EVENT_DTYPE), np.zeros(1, np.int64),
            np.zeros(n, ORDER_INTENT_DTYPE), np.zeros(1, np.int64))


# --- pure-Python baseline: same rules, dicts and ints ---------------------------------------------

class PyOms:
    def __init__(self) -> None:
        self.orders: dict[int, list] = {}    # oid -> [state, side, px, qty, filled, inst]
        self.pos: dict[int, list] = {}       # inst -> [qty, cost, realised, fees]
        self.seq = 1
        self.journal: list[tuple] = []
        self.legal = {(a, b) for a in range(10) for b in range(10) if LEGAL[a, b]}
        self.next = 1
        self.volume = 0

    def _ev(self, *rec) -> None:
        self.journal.append((self.seq,) + rec)
        self.seq += 1

    def _to(self, oid: int, o: list, new: int) -> None:
        if (o[0], new) not in self.legal:
            self._ev("illegal", oid, o[0], new)
            return
        self._ev("state", oid, o[0], new)
        o[0] = new
        if new in (5, 7, 8, 9):
            del self.orders[oid]

    def place(self, coid: int, side: int, px: int, qty: int, inst: int) -> int:
        oid = self.next
        self.next += 1
        o = [0, side, px, qty, 0, inst]
        self.orders[oid] = o
        self._ev("new", oid)
        self._to(oid, o, 1)
        self._to(oid, o, 2)
        return oid

    def _fill(self, oid: int, o: list, px: int, q: int) -> None:
        if q <= 0 or q > o[3] - o[4]:
            self._ev("overfill", oid)
            return
        notional = px * q
        rate = 20_000 if self.volume < 10**9 else -2_000
        fee = -((-notional * rate) // 10**8)
        self.volume += notional
        p = self.pos.setdefault(o[5], [0, 0, 0, 0])
        buy = o[1] == 0
        dq = q if buy else -q
        if p[0] == 0 or (p[0] > 0) == buy:
            p[1] += dq * px
            p[0] += dq
        else:
            close = min(q, abs(p[0]))
            released = p[1] if close == abs(p[0]) else _half_even(p[1] * close, abs(p[0]))
            p[2] += (-close * px if buy else close * px) - released
            p[1] -= released
            p[0] += close if buy else -close
            rest = q - close
            if rest:
                p[1] = rest * px if buy else -rest * px
                p[0] = rest if buy else -rest
        p[3] += fee
        o[4] += q
        self._ev("fill", oid, px, q, fee)
        if o[4] == o[3]:
            self._to(oid, o, 5)
        elif o[0] != 4 and o[0] != 6:
            self._to(oid, o, 4)
        self._ev("position", o[5], p[0], p[1], p[2])

    def apply(self, reports: list[tuple]) -> None:
        for kind, oid, px, q in reports:
            o = self.orders.get(oid)
            if o is None:
                self._ev("unknown", oid)
            elif kind == oms.RP_ACK:
                self._to(oid, o, 3)
            elif kind == oms.RP_FILL:
                self._fill(oid, o, px, q)
            elif kind == oms.RP_CANCELLED:
                self._to(oid, o, 7)


def _half_even(a: int, c: int) -> int:
    q, r = divmod(a, c)
    if 2 * r > c or (2 * r == c and q % 2):
        q += 1
    return q


def _setup(n: int, seed: int):
    st = _fresh(n)
    it = _intents(n, seed)
    j, jc, ob, oc = _buffers(n * 8 + 64)
    used = oms.submit(st, it, np.zeros(n, np.int32), np.zeros(n, np.int64), 1, j, jc, ob, oc)
    assert used == n
    ids = ob["target_order_id"][: oc[0]].copy()
    return st, it, ids


@benchmark("oms.apply")
def bench_apply(quick: bool) -> list[dict]:
    n = 20_000 if quick else 200_000
    oms.warmup()
    st, it, ids = _setup(n, 11)
    rp = _reports(ids, it["qty"], 12)
    m = rp.shape[0]
    j, jc, ob, oc = _buffers(BATCH * 8 + 64)
    lat = np.empty(m // BATCH + 2, np.int64)
    k = i = 0
    t0 = time.perf_counter_ns()
    while i < m:
        t = time.perf_counter_ns()
        used = oms.apply(st, rp[i:i + BATCH], j, jc, ob, oc)
        lat[k] = time.perf_counter_ns() - t
        jc[0] = 0   # the caller publishes the journal and outbox here
        oc[0] = 0
        k += 1
        i += used
    took = (time.perf_counter_ns() - t0) / 1e9
    assert st.open_orders.sum() == 0, "every order should have ended"
    # baseline: same orders and reports through the pure-Python implementation
    py = PyOms()
    for x in range(n):
        py.place(int(it["client_order_id"][x]), int(it["side"][x]), int(it["price"][x]),
                 int(it["qty"][x]), int(it["instrument"][x]))
    py_ids = {int(ids[x]): x + 1 for x in range(n)}
    rows = [(int(a), py_ids[int(b)], int(c), int(d)) for a, b, c, d in
            zip(rp["kind"], rp["order_id"], rp["price"], rp["qty"])]
    plat = np.empty(len(rows) // BATCH + 2, np.int64)
    pk = 0
    p0 = time.perf_counter_ns()
    for s in range(0, len(rows), BATCH):
        t = time.perf_counter_ns()
        py.apply(rows[s:s + BATCH])
        plat[pk] = time.perf_counter_ns() - t
        pk += 1
    ptook = (time.perf_counter_ns() - p0) / 1e9
    assert not py.orders
    base = result("oms.apply.python", "events", throughput_per_s=len(rows) / ptook,
                  latency_ns=plat[:pk], latency_basis=f"per batch of {BATCH} events")
    main = result("oms.apply", "events", throughput_per_s=m / took, latency_ns=lat[:k],
                  baseline=baseline_of(base), latency_basis=f"per batch of {BATCH} events",
                  orders=n, events=m,
                  speedup_vs_python=(m / took) / (len(rows) / ptook))
    return [main, base]


@benchmark("oms.submit")
def bench_submit(quick: bool) -> list[dict]:
    n = 20_000 if quick else 200_000
    oms.warmup()
    st = _fresh(n)
    it = _intents(n, 21)
    j, jc, ob, oc = _buffers(BATCH * 8 + 64 + 2 * n)
    dec = np.zeros(BATCH, np.int32)
    appr = np.zeros(BATCH, np.int64)
    lat = np.empty(n // BATCH + 2, np.int64)
    k = i = 0
    t0 = time.perf_counter_ns()
    cancels = np.zeros(BATCH, oms.VENUE_REPORT_DTYPE)
    cancels["kind"] = oms.RP_CANCELLED
    elapsed = 0
    while i < n:
        chunk = it[i:i + BATCH]
        t = time.perf_counter_ns()
        used = oms.submit(st, chunk, dec[: chunk.shape[0]], appr[: chunk.shape[0]], 1 + i, j, jc,
                          ob, oc)
        lat[k] = time.perf_counter_ns() - t
        elapsed += lat[k]
        # untimed: the venue cancels this batch, so the book stays at a realistic size
        m = int(oc[0])
        cancels["order_id"][:m] = ob["target_order_id"][:m]
        jc[0] = 0
        oc[0] = 0
        oms.apply(st, cancels[:m], j, jc, ob, oc)
        jc[0] = 0
        oc[0] = 0
        k += 1
        i += used
    took = elapsed / 1e9
    py = PyOms()
    p0 = time.perf_counter_ns()
    plat = np.empty(n // BATCH + 2, np.int64)
    pk = 0
    rows = list(zip(it["client_order_id"].tolist(), it["side"].tolist(), it["price"].tolist(),
                    it["qty"].tolist(), it["instrument"].tolist()))
    seen: set[int] = set()
    for s in range(0, n, BATCH):
        t = time.perf_counter_ns()
        for coid, side, px, qty, inst in rows[s:s + BATCH]:
            if coid in seen:   # the baseline's idempotency is an unbounded set: cheaper, not safe
                continue
            seen.add(coid)
            py.place(coid, side, px, qty, inst)
        plat[pk] = time.perf_counter_ns() - t
        pk += 1
    ptook = (time.perf_counter_ns() - p0) / 1e9
    base = result("oms.submit.python", "commands", throughput_per_s=n / ptook,
                  latency_ns=plat[:pk], latency_basis=f"per batch of {BATCH} commands")
    return [result("oms.submit", "commands", throughput_per_s=n / took, latency_ns=lat[:k],
                   baseline=baseline_of(base), latency_basis=f"per batch of {BATCH} commands",
                   note="each batch is cancelled (untimed) before the next: book <= one batch",
                   speedup_vs_python=(n / took) / (n / ptook)), base]
