"""Rolling return correlations: agree with numpy, handle gaps, and feed risk's cap."""
from __future__ import annotations

import numpy as np
import pytest

from bot4d.kernels import correlation as C
from bot4d.kernels import risk as R
from tests.risk_engine import RiskEngine


def _push_all(ring, meta, last, mids):
    for row in mids:
        row = np.asarray(row, np.int64)
        C.corr_push(ring, meta, last, row, np.arange(len(row), dtype=np.int64))


def _all(n):
    return np.arange(n, dtype=np.int64)


def test_matches_numpy_corrcoef_over_the_window():
    rng = np.random.default_rng(5)
    n, steps, window = 4, 200, 64
    common = rng.normal(0, 1e-3, steps)
    rets = np.stack([common + rng.normal(0, s, steps) for s in (1e-4, 5e-4, 2e-3, 1e-3)], 1)
    rets[:, 3] = -common + rng.normal(0, 1e-4, steps)    # anti-correlated
    mids = np.empty((steps + 1, n), np.int64)
    mids[0] = 10_000_000
    for k in range(steps):
        mids[k + 1] = np.maximum(1, np.round(mids[k] * (1 + rets[k]))).astype(np.int64)
    ring, meta, last, corr = C.make_correlation(n, window)
    _push_all(ring, meta, last, mids)
    C.corr_compute(ring, meta, corr, 10, _all(n))
    # the same returns, from the integer mids, over the last `window` samples
    r = (mids[1:] - mids[:-1]) / mids[:-1]
    expect = np.corrcoef(r[-window:].T)
    np.testing.assert_allclose(corr, expect, atol=1e-9)
    assert corr[0, 1] > 0.9 and corr[0, 3] < -0.9


def test_gaps_and_short_history_give_nan():
    ring, meta, last, corr = C.make_correlation(3, 16)
    _push_all(ring, meta, last, [[100, 0, 50], [101, 0, 50], [102, 200, 50], [101, 201, 50]])
    C.corr_compute(ring, meta, corr, 3, _all(3))
    assert np.isnan(corr[0, 1])          # instrument 1 has only one return
    assert np.isnan(corr[0, 2])          # instrument 2 never moves: no correlation defined
    assert corr[1, 1] == 1.0


def test_risk_cap_uses_the_computed_matrix():
    ring, meta, last, corr = C.make_correlation(2, 32)
    rng = np.random.default_rng(1)
    m = np.array([10_000_00, 20_000_00], np.int64)
    for _ in range(32):
        step = int(rng.integers(-50, 51))
        m = m + np.array([step, 2 * step], np.int64)
        C.corr_push(ring, meta, last, m, _all(2))
    C.corr_compute(ring, meta, corr, 10, _all(2))
    assert corr[0, 1] > 0.99
    rs = R.make_risk(2)
    for i in range(2):
        R.set_instrument(rs, i, venue=0, price_scale=2, qty_scale=8, max_qty=10**8,
                         max_notional=10**15, max_open_orders=5, band_bps=500)
    R.set_venue_rate(rs, 0, capacity=5, per_second=5, now_ns=0)
    R.update_equity(rs.acct, 10**15, 0)
    eng = RiskEngine(rs, max_batch=2)
    eng.corr[:] = corr
    from bot4d.records import CMD_PLACE, ORDER_INTENT_DTYPE, SIDE_BID
    it = np.zeros(1, ORDER_INTENT_DTYPE)
    it["command"], it["side"], it["instrument"] = CMD_PLACE, SIDE_BID, 0
    it["price"], it["qty"], it["stop_price"] = m[0], 1000, m[0] - 100
    pos = np.array([0, 10**6], np.int64)
    z = np.zeros(2, np.int64)
    assert eng.check(it, pos, z, z, z, m, 1)[0].tolist() == [R.REJ_CORRELATION]
    assert eng.check(it, np.zeros(2, np.int64), z, z, z, m, 1)[0].tolist() == [R.ACCEPT]


def test_a_shard_keeps_only_its_own_columns():
    """Columns are global instrument ids: a shard owning 1 and 3 of 4 fills only that pair."""
    cols = np.array([1, 3], np.int64)
    ring, meta, last, corr = C.make_correlation(4, 16, cols)
    assert ring.shape == (16, 2)
    m = np.array([0, 10_000, 0, 20_000], np.int64)
    for k in range(10):
        m = m + np.array([0, 7, 0, 14], np.int64) * (1 if k % 3 else -1)
        C.corr_push(ring, meta, last, m, cols)
    C.corr_compute(ring, meta, corr, 5, cols)
    assert corr[1, 3] == corr[3, 1] and corr[1, 3] > 0.99
    assert corr[1, 1] == corr[3, 3] == 1.0
    assert np.isnan(corr[0]).all() and np.isnan(corr[2]).all() and np.isnan(corr[1, 2])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        C.make_correlation(0)
    with pytest.raises(ValueError):
        C.make_correlation(2, window=2)
