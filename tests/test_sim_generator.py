"""Market generator and calibration: determinism, integer outputs, parameter recovery, KS tests."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from bot4d.kernels import matching as m
from bot4d.sim import calibrate as cal
from bot4d.sim.generator import AgentFlow, LatencyModel, MarketParams, garch_returns

TRUE = MarketParams(omega=4e-8, alpha=0.08, beta=0.88, arrival_rate=40.0, size_mu=1.2, size_sigma=0.6)


def test_garch_returns_are_deterministic_and_have_the_model_variance():
    r1, s1 = garch_returns(TRUE.omega, TRUE.alpha, TRUE.beta, 50_000, 7)
    r2, _ = garch_returns(TRUE.omega, TRUE.alpha, TRUE.beta, 50_000, 7)
    assert np.array_equal(r1, r2)
    uncond = TRUE.omega / (1 - TRUE.alpha - TRUE.beta)
    assert abs(r1.var() / uncond - 1) < 0.15
    # volatility clusters: squared returns are autocorrelated, unlike i.i.d. noise
    sq = r1**2
    ac = np.corrcoef(sq[:-1], sq[1:])[0, 1]
    assert ac > 0.05


def test_agent_flow_is_seeded_integer_and_tradeable():
    def run(seed):
        f = AgentFlow(TRUE, start_price_ticks=50_000, tick=10, lot=1000, seed=seed)
        return np.concatenate([f.steps(30), f.steps(30)])

    a, b, c = run(3), run(3), run(4)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    new = a[a["op"] == m.OP_NEW]
    assert new["qty"].dtype == np.int64 and (new["qty"] % 1000 == 0).all() and (new["qty"] > 0).all()
    lim = new[new["otype"] == m.T_LIMIT]
    assert (lim["price"] % 10 == 0).all() and (lim["price"] > 0).all()
    assert (np.diff(a["ts_ns"]) >= 0).all()
    # arrivals: about rate * seconds (Poisson: within 5 sigma)
    expect = TRUE.arrival_rate * 60
    assert abs(a.size - expect) < 5 * math.sqrt(expect)
    # the flow trades when sent through the matching engine, and the book stays uncrossed
    s = m.make_engine(1, max_levels=4096, max_orders=1 << 14, n_accounts=4)
    s.tick[0], s.step[0], s.min_qty[0] = 10, 1000, 1000
    ev = m.submit(s, a)
    assert (ev["kind"] == m.E_TRADE).sum() > 0
    assert not (ev["kind"] == m.E_REJECTED).any() or set(ev["code"][ev["kind"] == m.E_REJECTED]) <= {m.REJ_UNKNOWN_ORDER}
    bids, asks = m.book_levels(s, 0, 0), m.book_levels(s, 0, 1)
    assert bids and asks and bids[0][0] < asks[0][0]


def test_params_validation():
    with pytest.raises(ValueError, match="alpha \\+ beta < 1"):
        replace(TRUE, alpha=0.5, beta=0.6).validate()
    with pytest.raises(ValueError, match="sum to at most 1"):
        replace(TRUE, market_frac=0.7, cancel_frac=0.5).validate()
    with pytest.raises(ValueError):
        AgentFlow(TRUE, start_price_ticks=1, tick=1, lot=1, seed=1)


def test_latency_model_lognormal_median():
    lm = LatencyModel(median_ns=200_000, sigma=0.5, seed=1)
    s = lm.sample(20_000)
    assert s.dtype == np.int64 and (s > 0).all()
    assert abs(np.median(s) / 200_000 - 1) < 0.05
    assert np.array_equal(LatencyModel(200_000, 0.5, 9).sample(10), LatencyModel(200_000, 0.5, 9).sample(10))


def _synthetic_trades(p: MarketParams, n_steps: int, seed: int):
    """Trades whose timing, sizes and prices follow p exactly (the 'observed' data of the tests)."""
    r, _ = garch_returns(p.omega, p.alpha, p.beta, n_steps, seed)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / p.arrival_rate, int(p.arrival_rate * n_steps * 1.2))
    ts = np.cumsum((gaps * 1e9).astype(np.int64))
    ts = ts[ts < n_steps * p.step_ns]
    logp = math.log(100.0) + np.concatenate([[0.0], np.cumsum(r)])
    steps = np.minimum(ts // p.step_ns, n_steps - 1)
    # a trade in step k prints that step's closing price, so per-step returns are the model's
    lots = np.exp(rng.normal(p.size_mu, p.size_sigma, ts.size))
    return ts, logp[steps + 1], lots


def test_calibration_recovers_known_garch_parameters():
    ts, logp, lots = _synthetic_trades(TRUE, 20_000, 11)
    got = cal.fit(ts, logp, lots, TRUE.step_ns)
    # tolerances: ~3 standard errors of the MLE at 20k observations (alpha's is ~0.007 here)
    assert abs(got.alpha - TRUE.alpha) < 0.02
    assert abs(got.beta - TRUE.beta) < 0.03
    assert abs(got.omega / TRUE.omega - 1) < 0.5
    assert abs(got.arrival_rate / TRUE.arrival_rate - 1) < 0.02
    assert abs(got.size_mu - TRUE.size_mu) < 0.02 and abs(got.size_sigma - TRUE.size_sigma) < 0.02


def test_step_returns_align_to_clock_steps():
    ts = np.array([300_000_000, 1_200_000_000, 1_900_000_000, 3_500_000_000], np.int64)
    logp = np.array([0.0, 0.1, 0.3, 0.2])
    # steps 0, 1, 1, 3 -> closes 0.0, 0.3, (0.3 carried), 0.2
    assert np.allclose(cal.step_returns(ts, logp, 1_000_000_000), [0.3, 0.0, -0.1])


def test_ks_passes_for_same_model_and_fails_for_a_wrong_one():
    a = cal.generated_samples(TRUE, 5000, 1)
    b = cal.generated_samples(TRUE, 5000, 2)
    same = cal.ks_report(a, b)
    assert all(v["pass"] for v in same.values()), same
    wrong = replace(TRUE, arrival_rate=TRUE.arrival_rate * 1.5, size_sigma=1.2, alpha=0.01, beta=0.5)
    c = cal.generated_samples(wrong, 5000, 3)
    diff = cal.ks_report(a, c)
    assert not diff["gaps_s"]["pass"] and not diff["log_lots"]["pass"] and not diff["returns"]["pass"]


def test_calibrate_cli_roundtrip(tmp_path):
    ts, logp, lots = _synthetic_trades(TRUE, 3000, 5)
    csv = tmp_path / "trades.csv"
    with csv.open("w") as f:
        f.write("ts_ns,price,qty\n")
        for t, lp, q in zip(ts, logp, lots):
            f.write(f"{t},{math.exp(lp):.8f},{q:.6f}\n")
    out = tmp_path / "params.json"
    assert cal.main([str(csv), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["ks"]) == {"returns", "gaps_s", "log_lots"}
    p = cal.load_params(out)
    assert abs(p.arrival_rate / TRUE.arrival_rate - 1) < 0.05
    AgentFlow(p, start_price_ticks=10_000, tick=1, lot=1, seed=1).steps(5)


def test_calibrate_reads_binance_recording_and_refuses_bad_input(tmp_path, capsys):
    from tests.conftest import RECORDED

    t = cal.load_trades(RECORDED / "BINANCE_FUTURES.ws.1.0")
    assert t.ts_ns.size > 50 and all(p > 0 for p in t.price)
    bad = tmp_path / "bad.csv"
    bad.write_text("ts_ns,price,qty\n1,abc,2\n")
    assert cal.main([str(bad)]) == 2
    assert "not numbers" in capsys.readouterr().err
    few = tmp_path / "few.csv"
    few.write_text("ts_ns,price,qty\n1,1.0,1\n2,1.0,1\n")
    assert cal.main([str(few)]) == 2
    neg = tmp_path / "neg.csv"
    neg.write_text("ts_ns,price,qty\n1,-1.0,1\n")
    with pytest.raises(cal.CalibrationError, match="positive"):
        cal.load_trades(neg)
