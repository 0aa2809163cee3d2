"""``bot4d calibrate``: fit the market generator's parameters to a trade file.

Fits GARCH(1,1) to per-step log returns with the ``arch`` package (maximum likelihood, zero mean,
normal innovations), the Poisson arrival rate (maximum likelihood: 1 / mean gap), and log-normal
sizes (mean and standard deviation of log lots); writes the parameters the generator uses; and
reports two-sample Kolmogorov–Smirnov tests (scipy) of generated against observed gaps, sizes and
returns. ``arch`` and ``scipy`` are the optional extra ``sim``.

Trade files: Binance recordings (``TS: {"stream":..,"data":{"e":"aggTrade"|"trade",..}}`` lines,
as in ``shared/data/recorded``) or CSV with a header ``ts_ns,price,qty``. Prices and sizes are
parsed exactly; they become floats only as statistics (returns, log sizes), never as prices.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import numpy as np

from bot4d.sim.generator import AgentFlow, MarketParams, garch_returns


class CalibrationError(ValueError):
    """The input cannot support a fit (too few trades, malformed lines...)."""


@dataclass(frozen=True)
class Trades:
    ts_ns: np.ndarray   # int64, ascending
    price: list[Decimal]
    qty: list[Decimal]


def load_trades(path: Path, symbol: str | None = None) -> Trades:
    """Read trades from a Binance recording or a ts_ns,price,qty CSV, in time order."""
    rows: list[tuple[int, Decimal, Decimal]] = []
    text = Path(path).read_text()
    lines = text.splitlines()
    if lines and lines[0].strip().lower().replace(" ", "") == "ts_ns,price,qty":
        for i, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            parts = line.split(",")
            if len(parts) != 3:
                raise CalibrationError(f"{path}:{i}: expected ts_ns,price,qty, got {line!r}")
            try:
                rows.append((int(parts[0]), Decimal(parts[1]), Decimal(parts[2])))
            except (ValueError, ArithmeticError):
                raise CalibrationError(f"{path}:{i}: not numbers: {line!r}") from None
    else:
        for line in lines:
            _, sep, payload = line.partition(": ")
            if not sep or not payload.startswith("{"):
                continue
            try:
                msg = json.loads(payload)
            except json.JSONDecodeError:
                continue
            d = msg.get("data", msg)
            if not isinstance(d, dict) or d.get("e") not in ("aggTrade", "trade"):
                continue
            if symbol and d.get("s") != symbol:
                continue
            rows.append((int(d["T"]) * 1_000_000, Decimal(d["p"]), Decimal(d["q"])))
    rows.sort(key=lambda r: r[0])
    if any(p <= 0 or q <= 0 for _, p, q in rows):
        raise CalibrationError(f"{path}: prices and quantities must be positive")
    return Trades(np.array([r[0] for r in rows], np.int64), [r[1] for r in rows], [r[2] for r in rows])


def step_returns(ts_ns: np.ndarray, log_price: np.ndarray, step_ns: int) -> np.ndarray:
    """Log returns of the last price in each step (steps without trades carry the last price)."""
    # steps align to clock multiples of step_ns, not to the first trade: a step anchored at the
    # first trade straddles two intervals and smears the volatility clustering being fitted
    steps = ts_ns // step_ns - ts_ns[0] // step_ns
    last = np.full(int(steps[-1]) + 1, np.nan)
    last[steps] = log_price  # later trades in a step overwrite earlier ones
    for i in range(1, last.size):
        if np.isnan(last[i]):
            last[i] = last[i - 1]
    return np.diff(last)


def fit_garch(returns: np.ndarray) -> tuple[float, float, float]:
    from arch import arch_model

    if returns.size < 100:
        raise CalibrationError(f"GARCH needs at least 100 returns, got {returns.size}")
    sd = float(np.std(returns))
    if not sd > 0:
        raise CalibrationError("returns have no variance: the price never moved")
    # the optimiser stalls at its starting point on tiny numbers: fit unit-variance returns
    scale = 1.0 / sd
    res = arch_model(returns * scale, mean="Zero", vol="GARCH", p=1, q=1,
                     dist="normal", rescale=False).fit(disp="off")
    if res.convergence_flag != 0:
        raise CalibrationError(f"GARCH fit did not converge (optimizer flag {res.convergence_flag})")
    omega = float(res.params["omega"]) / scale**2
    return omega, float(res.params["alpha[1]"]), float(res.params["beta[1]"])


def fit_sizes(lots: np.ndarray) -> tuple[float, float]:
    logs = np.log(lots)
    return float(logs.mean()), float(logs.std(ddof=1))


def fit(ts_ns: np.ndarray, log_price: np.ndarray, lots: np.ndarray, step_ns: int,
        base: MarketParams = MarketParams()) -> MarketParams:
    if ts_ns.size < 3:
        raise CalibrationError(f"need at least 3 trades, got {ts_ns.size}")
    gaps = np.diff(ts_ns)
    if gaps.mean() <= 0:
        raise CalibrationError("all trades share one timestamp: no arrival rate to fit")
    omega, alpha, beta = fit_garch(step_returns(ts_ns, log_price, step_ns))
    mu, sig = fit_sizes(lots)
    return replace(base, omega=omega, alpha=alpha, beta=beta, arrival_rate=1e9 / gaps.mean(),
                   size_mu=mu, size_sigma=sig, step_ns=step_ns)


def ks_report(observed: dict[str, np.ndarray], generated: dict[str, np.ndarray], alpha: float = 0.01) -> dict:
    """Two-sample KS per named distribution; 'pass' when the p-value is above alpha."""
    from scipy.stats import ks_2samp

    out = {}
    for name, obs in observed.items():
        r = ks_2samp(obs, generated[name])
        out[name] = {"statistic": float(r.statistic), "pvalue": float(r.pvalue),
                     "pass": bool(r.pvalue > alpha), "n_observed": int(obs.size),
                     "n_generated": int(generated[name].size)}
    return out


def generated_samples(p: MarketParams, n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """Samples of the three modelled distributions drawn from the generator itself."""
    r, _ = garch_returns(p.omega, p.alpha, p.beta, n_steps, seed)
    rng = np.random.default_rng(seed)
    n = max(1000, n_steps)
    return {
        "returns": r,
        "gaps_s": rng.exponential(1.0 / p.arrival_rate, n),
        "log_lots": rng.normal(p.size_mu, p.size_sigma, n),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("trades", type=Path, help="trade file (Binance recording or ts_ns,price,qty CSV)")
    ap.add_argument("--symbol", help="only this symbol (recordings hold several)")
    ap.add_argument("--lot", default="1", help="lot size in quantity units of the file (decimal)")
    ap.add_argument("--step-ms", type=int, default=1000, help="return interval for GARCH")
    ap.add_argument("--out", type=Path, default=Path("market_params.json"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        t = load_trades(args.trades, args.symbol)
        lot = Decimal(args.lot)
        if lot <= 0:
            raise CalibrationError("--lot must be positive")
        lots = np.array([float(q / lot) for q in t.qty])
        logp = np.array([math.log(float(p)) for p in t.price])
        p = fit(t.ts_ns, logp, lots, args.step_ms * 1_000_000)
        obs = {"returns": step_returns(t.ts_ns, logp, p.step_ns),
               "gaps_s": np.diff(t.ts_ns) / 1e9, "log_lots": np.log(lots)}
        report = ks_report(obs, generated_samples(p, max(obs["returns"].size, 1000), args.seed))
    except (CalibrationError, OSError) as e:
        print(f"bot4d calibrate: {e}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps({"params": p.as_dict(), "ks": report}, indent=2) + "\n")
    print(json.dumps({"params": p.as_dict(), "ks": report}, indent=2))
    print(f"wrote {args.out}")
    return 0


def load_params(path: Path) -> MarketParams:
    """Read parameters written by ``bot4d calibrate`` back for the generator."""
    d = json.loads(Path(path).read_text())["params"]
    p = MarketParams(**d)
    p.validate()
    return p


__all__ = ["AgentFlow", "MarketParams", "fit", "fit_garch", "ks_report", "load_params", "load_trades"]
