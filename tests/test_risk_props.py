"""Property tests for pre-trade risk (hypothesis drives the seeds of random scenarios).

* The kernel and the straightforward pure-Python implementation reach the same decisions.
* No order that risk accepted breaches a configured limit at the time of the check, verified
  here with exact Python integers independently of both implementations.
* From flat, REDUCING refuses every order; HALTED accepts only cancels.
"""
from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot4d.kernels import risk as R
from bot4d.kernels.killswitch import K_STATE, TS_ACTIVE, TS_HALTED, TS_REDUCING
from bot4d.records import (
    CMD_CANCEL,
    CMD_PLACE,
    CMD_REPLACE,
    INTENT_FLAG_WANTS_SIZING,
    ORDER_INTENT_DTYPE,
    SIDE_BID,
)
from tests.risk_engine import RiskEngine
from tests.risk_ref import RefRisk, intents_to_dicts

N = 4
USD = 10**8
T0 = 1_700_000_000_000_000_000


def scenario(seed: int, state: int | None = None, flat: bool = False):
    rng = np.random.default_rng(seed)
    rs = R.make_risk(N, n_venues=2, n_strategies=2)
    R.set_limits(rs, max_daily_loss=int(rng.choice([0, 5_000, 50_000])) * USD,
                 max_pos_bps=int(rng.choice([50, 200, 1000])),
                 max_dd_bps=int(rng.choice([500, 1500])),
                 corr_cap_bps=int(rng.choice([3000, 7000])),
                 policy=int(rng.integers(0, 2)),
                 max_gross=int(rng.choice([R.INT64_MAX, R.INT64_MAX, 10**3 * USD, 10**4 * USD, 10**5 * USD])))
    for i in range(N):
        R.set_instrument(rs, i, venue=i % 2, price_scale=2, qty_scale=int(rng.choice([3, 8])),
                         max_qty=int(rng.choice([10**5, 10**8, 10**12])),
                         max_notional=int(rng.choice([10**3, 10**5, 10**7])) * USD,
                         max_open_orders=int(rng.integers(0, 6)),
                         band_bps=int(rng.choice([10, 500, 10000])), enabled=bool(rng.random() > 0.05))
    for v in range(2):
        R.set_venue_rate(rs, v, capacity=int(rng.integers(0, 12)), per_second=int(rng.integers(0, 50)),
                         now_ns=T0)
        rs.bucket[v, R.B_TOKENS] = int(rng.integers(0, rs.bucket[v, R.B_CAPACITY] * R.TOKEN + 1))
    peak = int(rng.choice([10**5, 10**6, 10**7])) * USD
    R.update_equity(rs.acct, peak, T0)
    R.update_equity(rs.acct, int(peak * rng.choice([1.0, 0.99, 0.9, 0.8, -0.1])), T0)
    rs.strat[:] = [[60, 40, 6000 * USD, 3000 * USD], [int(rng.integers(0, 30)), 10, 100 * USD, 400 * USD]]
    rs.ks[K_STATE] = state if state is not None else int(rng.choice([TS_ACTIVE] * 4 + [TS_REDUCING, TS_HALTED]))
    mid = rng.integers(1_000_00, 100_000_00, N).astype(np.int64)
    mid[rng.random(N) < 0.1] = 0
    qscale = 10 ** np.where(rs.inst[:, R.I_NOTIONAL_MUL] > 1, 3, 8)
    pos = np.zeros(N, np.int64) if flat else (rng.integers(-3, 4, N) * qscale // 100).astype(np.int64)
    oo = rng.integers(0, 5, N).astype(np.int64)
    ob = (rng.integers(0, 3, N) * qscale // 1000).astype(np.int64)
    osl = (rng.integers(0, 3, N) * qscale // 1000).astype(np.int64)
    c = rng.uniform(-1, 1, (N, N))
    corr = (c + c.T) / 2
    corr[rng.random((N, N)) < 0.2] = np.nan
    corr = np.where(np.isnan(corr) | np.isnan(corr.T), np.nan, corr)

    n = int(rng.integers(1, 40))
    it = np.zeros(n, ORDER_INTENT_DTYPE)
    it["client_order_id"] = np.arange(1, n + 1)
    it["command"] = rng.choice([CMD_PLACE] * 6 + [CMD_CANCEL, CMD_REPLACE, 0], n)
    it["side"] = rng.choice([0, 0, 0, 1, 1, 1, 2], n)
    it["instrument"] = rng.choice([0, 1, 2, 3, 0, 1, 2, 3, -1, 4], n)
    inst = np.clip(it["instrument"], 0, N - 1)
    m = np.maximum(mid[inst], 1_000_00)
    off = rng.choice([0, 1, 2, 10, 100, 600, 20000], n) * m // 10000 * rng.choice([-1, 1], n)
    it["price"] = np.where(rng.random(n) < 0.15, 0, m + off)
    it["price"][rng.random(n) < 0.03] = -5
    qs = qscale[inst]
    it["qty"] = rng.choice([0, 1, 5, 20, 100, 300, 10**6], n) * qs // 1000
    it["qty"][rng.random(n) < 0.02] = 1 << 60
    ref = np.where(it["price"] > 0, it["price"], m)
    below = ref * rng.choice([95, 98, 99], n) // 100
    above = ref * rng.choice([101, 102, 105], n) // 100
    right = np.where(it["side"] == SIDE_BID, below, above)
    it["stop_price"] = np.where(rng.random(n) < 0.8, right, rng.choice([0, 1], n) * above)
    it["batch_id"] = np.sort(rng.choice([0, 1, 2, 3, 4, 5], n)) * (rng.random() < 0.7)
    it["flags"] = np.where(rng.random(n) < 0.1, INTENT_FLAG_WANTS_SIZING, 0)
    it["strategy"] = rng.integers(0, 3, n)
    return rs, corr, it, pos, oo, ob, osl, mid


def run_kernel(rs, corr, it, pos, oo, ob, osl, mid, now):
    eng = RiskEngine(rs, max_batch=64)
    eng.corr[:] = corr
    d, q = eng.check(it, pos, oo, ob, osl, mid, now)
    return d.tolist(), q.tolist(), eng


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 3 * 10**9))
@example(seed=67115, dt=0)   # a sell inside the long side's worst case, above the gross limit
def test_kernel_matches_pure_python(seed, dt):
    rs, corr, it, pos, oo, ob, osl, mid = scenario(seed)
    ref = RefRisk(rs, corr)
    rd, rq = ref.check(intents_to_dicts(it), pos.tolist(), oo.tolist(), ob.tolist(), osl.tolist(),
                       mid.tolist(), T0 + dt)
    d, q, eng = run_kernel(rs, corr, it, pos, oo, ob, osl, mid, T0 + dt)
    assert d == rd
    assert q == rq
    assert rs.bucket[:, R.B_TOKENS].tolist() == [b[R.B_TOKENS] for b in ref.bucket]
    # one journal record per reject, none per accept
    assert eng.ev_count[0] == sum(1 for x in d if x != R.ACCEPT)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 3 * 10**9))
@example(seed=85328, dt=0)   # an accepted sell inside the long side's worst case, gross already over
def test_accepted_orders_breach_no_limit(seed, dt):
    rs, corr, it, pos, oo, ob, osl, mid = scenario(seed)
    now = T0 + dt
    cfg = rs.cfg.tolist()
    acct = rs.acct.tolist()
    state = int(rs.ks[K_STATE])
    tokens0 = []
    for v in range(2):  # tokens available at `now`, computed exactly
        b = rs.bucket[v].tolist()
        tokens0.append(min(b[R.B_CAPACITY] * R.TOKEN, b[R.B_TOKENS] + max(0, now - b[R.B_LAST_NS]) * b[R.B_RATE]))
    d, q, _ = run_kernel(rs, corr, it, pos, oo, ob, osl, mid, now)
    eq, peak, start = acct[R.A_EQUITY], acct[R.A_PEAK_EQUITY], acct[R.A_DAY_START_EQUITY]
    buy = [0] * N
    sell = [0] * N
    orders = [0] * N
    used = [0, 0]
    for k, r in enumerate(it):
        if d[k] != R.ACCEPT or int(r["command"]) == CMD_CANCEL:
            continue
        i, side, px, qty = int(r["instrument"]), int(r["side"]), int(r["price"]), q[k]
        row = rs.inst[i].tolist()
        m = int(mid[i])
        assert state != TS_HALTED
        assert row[R.I_ENABLED] == 1
        assert m > 0 and px >= 0
        assert 0 < qty <= row[R.I_MAX_QTY]
        if not (int(r["flags"]) & INTENT_FLAG_WANTS_SIZING):
            assert qty == int(r["qty"])
        elif int(r["qty"]) > 0:
            assert qty <= int(r["qty"])
        ref = px if px > 0 else m
        if px > 0:
            assert abs(px - m) * 10000 <= row[R.I_BAND_BPS] * m
        assert ref * qty // row[R.I_NOTIONAL_DIV] * row[R.I_NOTIONAL_MUL] <= row[R.I_MAX_NOTIONAL]
        p = int(pos[i])
        if side == SIDE_BID:
            worst = p + int(ob[i]) + buy[i] + qty
            reduces = p < 0 and worst <= 0
        else:
            worst = -(p - int(osl[i]) - sell[i] - qty)
            reduces = p > 0 and worst <= 0
        if state == TS_REDUCING:
            assert reduces
        if not reduces:
            sp = int(r["stop_price"])
            assert (0 < sp < ref) if side == SIDE_BID else (sp > ref)
            assert start - eq <= cfg[R.C_MAX_DAILY_LOSS]
            assert not (peak > 0 and eq < peak and (eq <= 0 or (peak - eq) * 10000 > cfg[R.C_MAX_DD_BPS] * peak))
            limit = eq * cfg[R.C_MAX_POS_BPS] // 10000 if eq > 0 else 0
            assert m * worst // row[R.I_NOTIONAL_DIV] * row[R.I_NOTIONAL_MUL] <= limit
            # the committed gross exposure with this order stays within the slice, or the order
            # does not grow it (one inside the other side's worst case is not refused by it)
            if cfg[R.C_MAX_GROSS] < R.INT64_MAX:
                def gross(with_order: bool) -> int:
                    add = qty if with_order else 0
                    after_buy = [buy[j] + (add if j == i and side == SIDE_BID else 0) for j in range(N)]
                    after_sell = [sell[j] + (add if j == i and side != SIDE_BID else 0) for j in range(N)]
                    total = 0
                    for j in range(N):
                        w = max(int(pos[j]) + int(ob[j]) + after_buy[j], -(int(pos[j]) - int(osl[j]) - after_sell[j]))
                        if mid[j] > 0 and w > 0:
                            rj = rs.inst[j].tolist()
                            total += int(mid[j]) * w // rj[R.I_NOTIONAL_DIV] * rj[R.I_NOTIONAL_MUL]
                    return total
                after = gross(True)
                assert after <= cfg[R.C_MAX_GROSS] or after <= gross(False)
            dsign = 1 if side == SIDE_BID else -1
            for j in range(N):
                if j != i and pos[j] != 0 and not np.isnan(corr[i, j]):
                    assert dsign * np.sign(pos[j]) * corr[i, j] <= cfg[R.C_CORR_CAP_BPS] / 10000
        if int(r["command"]) == CMD_PLACE:
            assert int(oo[i]) + orders[i] < row[R.I_MAX_OPEN_ORDERS]
            orders[i] += 1
        if side == SIDE_BID:
            buy[i] += qty
        else:
            sell[i] += qty
        used[row[R.I_VENUE]] += 1
    for v in range(2):
        assert used[v] * R.TOKEN <= tokens0[v]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_reducing_from_flat_refuses_every_order(seed):
    rs, corr, it, pos, oo, ob, osl, mid = scenario(seed, state=TS_REDUCING, flat=True)
    d, _, _ = run_kernel(rs, corr, it, pos, oo, ob, osl, mid, T0)
    for k, r in enumerate(it):
        if int(r["command"]) != CMD_CANCEL:
            assert d[k] != R.ACCEPT


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_halted_accepts_only_cancels(seed):
    rs, corr, it, pos, oo, ob, osl, mid = scenario(seed, state=TS_HALTED)
    d, _, _ = run_kernel(rs, corr, it, pos, oo, ob, osl, mid, T0)
    for k, r in enumerate(it):
        if d[k] == R.ACCEPT:
            assert int(r["command"]) == CMD_CANCEL
