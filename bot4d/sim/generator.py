"""Synthetic market flow: GARCH(1,1) volatility, Poisson arrivals, log-normal sizes.

A latent fundamental price follows log-returns r_t = sigma_t * z_t with
sigma_t^2 = omega + alpha * r_{t-1}^2 + beta * sigma_{t-1}^2 (one step = ``step_ns``). Simulated
agents arrive as a Poisson process (exponential gaps, rate ``arrival_rate`` per second) and send
orders to the matching engine: passive limits at a geometric number of ticks around the
fundamental, marketable orders, and cancels of their own live orders. Sizes are log-normal in lots.
Because the agents' orders go through the same matching engine as ours, our orders cross with
them with queue position respected.

The random draws are statistics and are floats; every price and size leaves this module as an
integer number of units: the fundamental is accumulated in integer ticks (each step's move is
rounded to whole ticks, with the rounding remainder carried so no drift is lost) and sizes are
rounded up to whole lots. Everything is seeded: same parameters and seed, same orders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from bot4d.kernels import matching as m
from bot4d.records import SIDE_ASK, SIDE_BID


@dataclass(frozen=True)
class MarketParams:
    omega: float = 2e-10       # GARCH constant (per-step variance units)
    alpha: float = 0.05
    beta: float = 0.90
    arrival_rate: float = 50.0  # agent orders per second
    size_mu: float = 1.0        # log-normal sizes, in lots: exp(N(mu, sigma))
    size_sigma: float = 0.8
    market_frac: float = 0.15   # share of arrivals that are market orders
    cancel_frac: float = 0.30   # share of arrivals that cancel one of the agents' live orders
    offset_p: float = 0.25      # passive offset from the fundamental: Geometric(p) >= 1 ticks
    step_ns: int = 1_000_000_000

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if not (self.omega > 0 and self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta < 1):
            raise ValueError("GARCH(1,1) needs omega > 0, alpha, beta >= 0 and alpha + beta < 1")
        if self.arrival_rate <= 0 or self.size_sigma < 0 or not 0 < self.offset_p <= 1:
            raise ValueError("arrival_rate must be > 0, size_sigma >= 0, offset_p in (0, 1]")
        if self.market_frac < 0 or self.cancel_frac < 0 or self.market_frac + self.cancel_frac > 1:
            raise ValueError("market_frac and cancel_frac must be >= 0 and sum to at most 1")


@nb.njit(cache=True)
def garch_returns(omega, alpha, beta, n, seed):
    """n GARCH(1,1) log-returns and their conditional variances (seeded, deterministic)."""
    np.random.seed(seed)
    r = np.empty(n)
    s2 = np.empty(n)
    var = omega / (1.0 - alpha - beta)  # start at the unconditional variance
    prev = 0.0
    for i in range(n):
        var = omega + alpha * prev * prev + beta * var
        prev = np.sqrt(var) * np.random.standard_normal()
        r[i] = prev
        s2[i] = var
    return r, s2


@nb.njit(cache=True)
def _fill_orders(out, returns, fund0, tick, lot, t0, step_ns, rate, mu, sig, p_mkt, p_cxl, p_off,
                 first_id, account, live, seed):
    """Generate agent orders for every step of `returns` into `out`; returns (count, fund_ticks).

    `live` is a ring of the agents' recent order ids, cancelled at random."""
    np.random.seed(seed)
    n = 0
    fund = fund0  # fundamental price in ticks (integer)
    carry = 0.0
    oid = first_id
    nlive = 0
    cap_live = live.shape[0]
    t = t0
    for k in range(returns.shape[0]):
        move = fund * returns[k] + carry
        whole = np.int64(np.floor(move + 0.5))
        carry = move - whole
        fund += whole
        if fund < 2:
            fund = 2
        step_end = t0 + (k + 1) * step_ns
        while True:
            gap = np.random.exponential(1e9 / rate)
            t += np.int64(gap)
            if t >= step_end:
                t = step_end
                break
            if n >= out.shape[0]:
                return n, fund
            o = out[n]
            o.ts_ns = t
            o.account = account
            o.instrument = 0
            o.stp = m.STP_NONE
            u = np.random.random()
            if u < p_cxl and nlive > 0:
                j = np.random.randint(0, nlive)
                o.op = m.OP_CANCEL
                o.order_id = live[j]
                live[j] = live[nlive - 1]
                nlive -= 1
                n += 1
                continue
            size = np.exp(mu + sig * np.random.standard_normal())
            lots = np.int64(np.ceil(size))
            if lots < 1:
                lots = 1
            o.op = m.OP_NEW
            o.order_id = oid
            oid += 1
            o.qty = lots * lot
            o.side = SIDE_BID if np.random.random() < 0.5 else SIDE_ASK
            if u < p_cxl + p_mkt:
                o.otype = m.T_MARKET
                o.tif = 0
                o.price = 0
            else:
                off = np.random.geometric(p_off)  # >= 1 tick away
                o.otype = m.T_LIMIT
                o.tif = m.TIF_GTC
                px = fund - off if o.side == SIDE_BID else fund + off
                if px < 1:
                    px = 1
                o.price = px * tick
                if nlive < cap_live:
                    live[nlive] = o.order_id
                    nlive += 1
                else:  # oldest ids drop out of the cancel pool; their orders simply rest
                    live[np.random.randint(0, cap_live)] = o.order_id
            n += 1
    return n, fund


class AgentFlow:
    """Stateful generator of agent orders, step by step, for one instrument."""

    def __init__(self, params: MarketParams, *, start_price_ticks: int, tick: int, lot: int,
                 seed: int, account: int = 1, first_order_id: int = 1 << 40, t0_ns: int = 0):
        params.validate()
        if start_price_ticks < 2 or tick < 1 or lot < 1:
            raise ValueError("start price must be >= 2 ticks, tick and lot >= 1 unit")
        self.p = params
        self.tick, self.lot, self.account = tick, lot, account
        self.fund = int(start_price_ticks)
        self.next_id = first_order_id
        self.t_ns = t0_ns
        self.seed = seed
        self._chunk = 0
        self._live = np.zeros(4096, np.int64)

    def steps(self, n_steps: int) -> np.ndarray:
        """Orders for the next n_steps steps (deterministic in the seed and the call sequence)."""
        p = self.p
        chunk_seed = (self.seed * 1_000_003 + self._chunk) % (2**31 - 1)
        self._chunk += 1
        r, _ = garch_returns(p.omega, p.alpha, p.beta, n_steps, chunk_seed)
        expect = p.arrival_rate * n_steps * p.step_ns / 1e9
        out = np.zeros(int(expect + 10 * np.sqrt(expect) + 64), m.SIM_ORDER_DTYPE)
        n, fund = _fill_orders(out, r, self.fund, self.tick, self.lot, self.t_ns, p.step_ns,
                               p.arrival_rate, p.size_mu, p.size_sigma, p.market_frac,
                               p.cancel_frac, p.offset_p, self.next_id, self.account,
                               self._live, chunk_seed + 1)
        self.fund = int(fund)
        self.t_ns += n_steps * p.step_ns
        got = out[:n]
        new = got["op"] == m.OP_NEW
        if new.any():
            self.next_id = int(got["order_id"][new].max()) + 1
        return got


class LatencyModel:
    """Venue latency: log-normal with a given median and shape, seeded."""

    def __init__(self, median_ns: int, sigma: float, seed: int):
        if median_ns <= 0 or sigma < 0:
            raise ValueError("latency median must be > 0 ns and sigma >= 0")
        self.mu = float(np.log(median_ns))
        self.sigma = sigma
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int = 1) -> np.ndarray:
        return np.ceil(self.rng.lognormal(self.mu, self.sigma, n)).astype(np.int64)


def warmup() -> None:
    garch_returns(1e-6, 0.1, 0.8, 4, 1)
    AgentFlow(MarketParams(), start_price_ticks=1000, tick=1, lot=1, seed=1).steps(2)
