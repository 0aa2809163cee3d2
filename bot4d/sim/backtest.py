"""``bot4d backtest``: market data through the daemon's own kernels, the venue in-process.

Each market event is one simulated agent order (``bot4d.sim.generator``) sent to the L3 matching
engine. Our side is the shard pipeline the daemon runs: the L2 book the strategy reads is kept from
the engine's level changes (``bot4d.kernels.book``), the strategy kernel decides intents, pre-trade
risk (``bot4d.kernels.risk``) and the OMS (``bot4d.kernels.oms``) turn them into orders, and those
reach the engine after a seeded log-normal venue latency, in order. Fills, acks, cancels and
expiries come back to the OMS as venue reports, with a mark at the mid after every event, so
stops trigger and P&L is marked as live. All of it runs in one nogil kernel call.

The event log is the shard journal (OMS events and risk rejects, gap-free sequence): same input
and seed give byte-identical logs. The report (JSON) holds P&L, drawdown, fills, fees, turnover
and risk rejects by reason; the chart (PNG) shows equity and drawdown.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from bot4d.fixedpoint import decimals, from_fixed, to_fixed
from bot4d.jitcache import drop_stale_cache, helper, kernel  # noqa: E402
from bot4d.kernels import book as bk
from bot4d.kernels import matching as m
from bot4d.kernels import oms as oms_k
from bot4d.kernels import oms_state as oms
from bot4d.kernels import risk as rk
from bot4d.records import (CMD_CANCEL, CMD_PLACE, EV_FILL, EV_RISK_REJECT, JOURNAL_EVENT_DTYPE,
                           MD_FLAG_FRAME_END, MD_LEVEL, MD_UPDATE_DTYPE, ORDER_INTENT_DTYPE)
from bot4d.sim.generator import AgentFlow, MarketParams
from bot4d.strategies import market_maker as mm


def _compiled_in() -> list[str]:
    """Every module whose kernels run_kernel compiles in (see bot4d.jitcache)."""
    from bot4d import records
    from bot4d.jitcache import files
    from bot4d.kernels import (book_math, fees, filters, idempotency, killswitch, oms_arith,
                               positions, stp)
    from bot4d.strategies import api

    return files(m, bk, book_math, oms_k, oms, positions, fees, filters, idempotency, stp,
                 oms_arith, rk, killswitch, mm, api, records)



drop_stale_cache(__file__, _compiled_in())

OUR_ACCOUNT = 1       # matching-engine account of the strategy (0 is the agents')
OMS_ACCOUNT = 0       # the OMS's account index for the strategy
INST = 0
_MAX_INTENTS = 16
_STEPS = 4096         # equity samples kept per run

# counters of the run (out[...])
O_EVENTS, O_OUR_ORDERS, O_FILLS, O_RISK_REJECTS, O_TURNOVER, O_FEES, O_JOURNAL = range(7)


@dataclass
class BacktestConfig:
    seed: int = 1
    steps: int = 600                       # market steps (of MarketParams.step_ns)
    start_ns: int = 1_767_225_600 * 10**9  # 2026-01-01 00:00 UTC: a real calendar (risk's days)
    market: MarketParams = field(default_factory=lambda: MarketParams(
        step_ns=100_000_000, arrival_rate=400.0, size_mu=0.0, size_sigma=0.7, omega=2e-9))
    start_price: str = "60000.00"
    tick_size: str = "0.01"
    step_size: str = "0.00001"
    agent_lot: int = 100                    # agent order size unit, in qty units
    cash: str = "100000"                    # quote currency
    maker_fee: str = "-0.0001"
    taker_fee: str = "0.0004"
    latency_median_us: int = 200
    latency_sigma: float = 0.5
    quote_qty: str = "0.01"
    half_spread_ticks: int = 50
    max_inventory: str = "0.05"
    stop_ticks: int = 5000
    # replay a recorded Binance session instead of the generator: (ws file, http file, symbol)
    replay: tuple[str, str, str] | None = None
    replay_speed: float = 1.0


@helper
def _mid(books):
    bb, _ = bk.best_bid(books.levels, books.state, INST)
    ba, _ = bk.best_ask(books.levels, books.state, INST)
    if bb == 0 or ba == 0:
        return np.int64(0)
    return (bb + ba) // 2


@helper
def _to_engine(o, it, now_ns):
    """An OMS outbox order as the venue receives it."""
    o.ts_ns = now_ns
    o.instrument = it.instrument
    o.account = OUR_ACCOUNT
    o.order_id = it.target_order_id
    o.stp = m.STP_EXPIRE_TAKER
    o.oco_peer = 0
    o.stop_price = 0
    if it.command == CMD_CANCEL:
        o.op = m.OP_CANCEL
        return
    o.op = m.OP_NEW
    o.side = it.side
    o.price = it.price
    o.qty = it.qty
    if it.order_type == oms.OT_MARKET:
        o.otype = m.T_MARKET
        o.tif = 0
    elif it.tif == oms.TIF_POST_ONLY:
        o.otype = m.T_LIMIT_MAKER
        o.tif = 0
    else:
        o.otype = m.T_LIMIT
        o.tif = it.tif


@helper
def _events(s, ev, n, was_cancel, md, reports, nrep, ts):
    """Engine events -> L2 level updates for our book and venue reports for the OMS."""
    nmd = 0
    for k in range(n):
        e = ev[k]
        if e.kind == m.E_NEW or e.kind == m.E_TRADE or e.kind == m.E_CANCELED or e.kind == m.E_EXPIRED \
                or e.kind == m.E_DECREMENTED:
            if e.price > 0 and e.otype != m.T_MARKET:
                u = md[nmd]
                u.kind = MD_LEVEL
                u.side = e.side
                u.instrument = e.instrument
                u.price = e.price
                u.qty = m.level_qty(s, e.instrument, e.side, e.price)
                u.flags = 0
                nmd += 1
        if e.account != OUR_ACCOUNT:
            continue
        r = reports[nrep]
        r.ts_ns = ts
        r.order_id = e.order_id
        r.instrument = e.instrument
        r.price = e.price
        r.qty = e.qty
        r.fee = 0
        r.maker = 0
        r.flags = 0
        r.reason = e.code
        if e.kind == m.E_NEW:
            r.kind = oms_k.RP_ACK
        elif e.kind == m.E_TRADE:
            r.kind = oms_k.RP_FILL
            r.fee = e.fee
            r.maker = e.maker
            r.flags = oms_k.RP_FLAG_FEE_GIVEN
        elif e.kind == m.E_CANCELED:
            r.kind = oms_k.RP_CANCELLED
        elif e.kind == m.E_EXPIRED:
            r.kind = oms_k.RP_EXPIRED
        elif e.kind == m.E_REJECTED:
            r.kind = oms_k.RP_CANCEL_REJECT if was_cancel else oms_k.RP_REJECT
        else:
            continue
        nrep += 1
    if nmd > 0:
        md[nmd - 1].flags = MD_FLAG_FRAME_END
    return nmd, nrep


@kernel
def run_kernel(agents, s, books, st, rs, params, sstate, latency, notional_mul, notional_div,
               journal, equity_t, equity_v, sample_ns, out):
    """The whole backtest in one call. Returns the journal count (or -1 when it filled up)."""
    # sized for the engine's worst case (every live order traded or expired by one order), so
    # match_batch always takes the order it is given
    worst = 5 * s.o_id.shape[0] + 6 * (s.st_slot.shape[1] + 1) + 16
    ev = np.zeros(worst, m.SIM_EVENT_DTYPE)
    md = np.zeros(worst, MD_UPDATE_DTYPE)
    reports = np.zeros(worst + 1, oms_k.VENUE_REPORT_DTYPE)
    intents = np.zeros(_MAX_INTENTS, ORDER_INTENT_DTYPE)
    decision = np.zeros(_MAX_INTENTS, np.int64)
    approved = np.zeros(_MAX_INTENTS, np.int64)
    rj = np.zeros(_MAX_INTENTS, JOURNAL_EVENT_DTYPE)
    rjc = np.zeros(1, np.int64)
    outbox = np.zeros(4096, ORDER_INTENT_DTYPE)
    ocount = np.zeros(1, np.int64)
    jcount = np.zeros(1, np.int64)
    pend = np.zeros(1 << 14, m.SIM_ORDER_DTYPE)   # our orders travelling to the venue, FIFO
    pend_at = np.zeros(1 << 14, np.int64)
    ph = 0
    pt = 0
    mids = np.zeros(books.state.shape[0], np.int64)
    corr = np.full((books.state.shape[0], books.state.shape[0]), np.nan)
    one = np.zeros(1, m.SIM_ORDER_DTYPE)
    lat_i = 0
    last_arrival = np.int64(0)
    n_samples = 0
    next_sample = agents[0].ts_ns if agents.shape[0] else 0
    cap = journal.shape[0]
    for i in range(agents.shape[0]):
        now = agents[i].ts_ns
        if jcount[0] + 4096 > cap:
            return -1
        nrep = 0
        # 1. our orders that have reached the venue by now, in the order they were sent
        while ph != pt and pend_at[ph & (pend.shape[0] - 1)] <= now:
            one[0] = pend[ph & (pend.shape[0] - 1)]
            ph += 1
            used, n = m.match_batch(s, one, ev)
            if used != 1:
                return -2
            nmd, nrep = _events(s, ev, n, one[0].op == m.OP_CANCEL, md, reports, nrep, now)
            if nmd:
                bk.apply_batch(books.levels, books.state, books.stats, books.scratch, md, 0, nmd)
        # 2. the market event itself
        used, n = m.match_batch(s, agents[i:i + 1], ev)
        if used != 1:
            return -2
        nmd, nrep = _events(s, ev, n, False, md, reports, nrep, now)
        if nmd:
            bk.apply_batch(books.levels, books.state, books.stats, books.scratch, md, 0, nmd)
        out[O_EVENTS] += 1
        mid = _mid(books)
        if mid == 0:
            mid = mids[INST]  # a side is empty for a moment: keep marking at the last mid
        moved = mid != mids[INST]
        mids[INST] = mid
        if mid > 0 and moved:  # stops and P&L only change when the mark does
            oms_k.mark_report(reports[nrep], now, INST, mid)
            nrep += 1
        j0 = jcount[0]
        if nrep:
            oms_k.apply(st, reports[:nrep], journal, jcount, outbox, ocount)
        # 3. the strategy sees its order updates, then the book
        mm.on_order(journal, j0, jcount[0], params, sstate)
        pos = st.positions.qty[OMS_ACCOUNT, INST]
        # equity in quote units, marked at the mid
        eq_units = st.positions.balance[OMS_ACCOUNT] + pos * mid
        equity = eq_units * notional_mul // notional_div
        rk.update_equity(rs.acct, equity, now)
        if now >= next_sample and n_samples < equity_t.shape[0]:
            equity_t[n_samples] = now
            equity_v[n_samples] = equity
            n_samples += 1
            next_sample = now + sample_ns
        ni = mm.on_book(books.levels, books.state, INST, now, pos, mid > 0, params, sstate, intents, 0)
        if ni:
            rjc[0] = 0
            rk.check_batch(intents[:ni], rs.cfg, rs.inst, rs.acct, rs.strat, rs.bucket, rs.work, rs.ks,
                           st.positions.qty[OMS_ACCOUNT], st.open_orders[OMS_ACCOUNT],
                           st.open_buy_qty[OMS_ACCOUNT], st.open_sell_qty[OMS_ACCOUNT], mids, corr,
                           now, decision, approved, rj, rjc, 0)
            j1 = jcount[0]
            # risk's rejects join the shard journal with its gap-free sequence
            for k in range(rjc[0]):
                journal[jcount[0]] = rj[k]
                journal[jcount[0]].seq = st.seq[0]
                st.seq[0] += 1
                jcount[0] += 1
            out[O_RISK_REJECTS] += rjc[0]
            oms_k.submit(st, intents[:ni], decision[:ni], approved[:ni], now, journal, jcount, outbox, ocount)
            mm.on_order(journal, j1, jcount[0], params, sstate)
        # 4. what the OMS sent goes on the wire
        for k in range(ocount[0]):
            it = outbox[k]
            if it.command != CMD_PLACE and it.command != CMD_CANCEL:
                continue
            slot = pt & (pend.shape[0] - 1)
            if pt - ph >= pend.shape[0]:
                break  # (cannot happen with the OMS's own limits; never overwrite in flight)
            _to_engine(pend[slot], it, now)
            arrival = now + latency[lat_i % latency.shape[0]]
            lat_i += 1
            if arrival < last_arrival:
                arrival = last_arrival  # one connection: orders arrive in the order sent
            last_arrival = arrival
            pend_at[slot] = arrival
            pt += 1
            out[O_OUR_ORDERS] += 1
        ocount[0] = 0
        for k in range(j0, jcount[0]):
            if journal[k].kind == EV_FILL:
                out[O_FILLS] += 1
                out[O_TURNOVER] += journal[k].price * journal[k].qty
                out[O_FEES] += journal[k].fee
    out[O_JOURNAL] = jcount[0]
    return n_samples


@dataclass
class BacktestResult:
    journal: np.ndarray
    equity_t: np.ndarray
    equity_v: np.ndarray   # quote units (10**-8)
    report: dict
    events: int
    seconds: float


def run(cfg: BacktestConfig) -> BacktestResult:
    if cfg.replay is not None:
        from bot4d.sim import replay

        rec = replay.load_binance(Path(cfg.replay[0]), Path(cfg.replay[1]), cfg.replay[2])
        ps, qs = replay.scales(rec)
        tick = step = 1  # the recording's own precision
        agents = replay.to_orders(rec, ps, qs, speed=cfg.replay_speed)
    else:
        ps, qs = decimals(cfg.tick_size), decimals(cfg.step_size)
        tick = to_fixed(cfg.tick_size, ps)
        step = to_fixed(cfg.step_size, qs)
        flow = AgentFlow(cfg.market, start_price_ticks=to_fixed(cfg.start_price, ps) // tick, tick=tick,
                         lot=cfg.agent_lot * step, seed=cfg.seed, account=0, t0_ns=cfg.start_ns)
        agents = flow.steps(cfg.steps)
    agents["instrument"] = INST

    s = m.make_engine(1, max_levels=8192, max_orders=1 << 16, max_stops=16, n_accounts=4)
    s.tick[0], s.step[0], s.min_qty[0] = tick, step, step
    s.fee_maker[OUR_ACCOUNT] = to_fixed(cfg.maker_fee, 8)
    s.fee_taker[OUR_ACCOUNT] = to_fixed(cfg.taker_fee, 8)
    books = bk.make_books(1, 8192)
    st = oms.make_oms(1, 1, capacity=1 << 12)
    st.positions.balance[OMS_ACCOUNT] = to_fixed(cfg.cash, ps + qs)
    rs = rk.make_risk(1)
    cash_q = to_fixed(cfg.cash, rk.QUOTE_SCALE)
    rk.set_limits(rs, max_daily_loss=cash_q // 20)
    rk.set_instrument(rs, INST, venue=0, price_scale=ps, qty_scale=qs,
                      max_qty=to_fixed(cfg.max_inventory, qs), max_notional=cash_q,
                      max_open_orders=8, band_bps=500)
    rk.set_venue_rate(rs, 0, capacity=100, per_second=50, now_ns=int(agents["ts_ns"][0]) if agents.size else 0)
    rk.update_equity(rs.acct, cash_q, int(agents["ts_ns"][0]) if agents.size else 0)
    params, sstate = mm.make(0, tick=tick, half_spread_ticks=cfg.half_spread_ticks,
                             qty=to_fixed(cfg.quote_qty, qs), max_inventory=to_fixed(cfg.max_inventory, qs),
                             skew_ticks_per_lot=5, lot=to_fixed(cfg.quote_qty, qs), stop_ticks=cfg.stop_ticks,
                             requote_ticks=min(10, cfg.half_spread_ticks), min_requote_ns=50_000_000)
    rng = np.random.default_rng(cfg.seed + 7)
    latency = np.ceil(rng.lognormal(np.log(cfg.latency_median_us * 1000), cfg.latency_sigma, 1 << 16)).astype(np.int64)
    journal = np.zeros(max(1 << 16, agents.size * 2 + 8192), JOURNAL_EVENT_DTYPE)
    et = np.zeros(_STEPS, np.int64)
    evv = np.zeros(_STEPS, np.int64)
    out = np.zeros(8, np.int64)
    e = ps + qs - rk.QUOTE_SCALE
    mul, div = (10 ** -e, 1) if e < 0 else (1, 10 ** e)
    span = int(agents["ts_ns"][-1] - agents["ts_ns"][0]) if agents.size else 1
    t0 = time.perf_counter()
    ns = run_kernel(agents, s, books, st, rs, params, sstate, latency, mul, div, journal, et, evv,
                    max(1, span // (_STEPS - 1)), out)
    took = time.perf_counter() - t0
    if ns == -1:
        raise RuntimeError("journal buffer filled up; raise its size")
    if ns == -2:
        raise RuntimeError("the matching engine refused an order for lack of room (pool or levels)")
    j = journal[: out[O_JOURNAL]].copy()
    report = _report(cfg, st, rs, j, et[:ns], evv[:ns], out, ps, qs, int(agents.size), took)
    return BacktestResult(j, et[:ns].copy(), evv[:ns].copy(), report, int(agents.size), took)


def _report(cfg, st, rs, j, et, ev, out, ps, qs, n_events, took) -> dict:
    q = rk.QUOTE_SCALE
    start = Decimal(cfg.cash)
    final = from_fixed(int(ev[-1]), q) if ev.size else start
    # the largest fall from a running peak, exactly (a bps integer would floor small ones to 0)
    max_dd = Decimal(0)
    peak = None
    for v in ev.tolist():  # at most _STEPS samples
        peak = v if peak is None or v > peak else peak
        if peak > 0:
            max_dd = max(max_dd, Decimal(peak - v) / Decimal(peak) * 100)
    rejects: dict[str, int] = {}
    for r in j[j["kind"] == EV_RISK_REJECT]["reason"]:
        name = rk.REASON_NAMES.get(int(r), str(int(r)))
        rejects[name] = rejects.get(name, 0) + 1
    return {
        "config": {k: (v if not isinstance(v, MarketParams) else v.as_dict()) for k, v in asdict(cfg).items()},
        "events": n_events,
        "seconds": round(took, 4),
        "events_per_s": round(n_events / took, 1) if took > 0 else None,
        "pnl": str(final - start),
        "final_equity": str(final),
        "max_drawdown_pct": str(max_dd.quantize(Decimal("0.000001"))),
        "position": str(from_fixed(int(st.positions.qty[OMS_ACCOUNT, INST]), qs)),
        "realised": str(from_fixed(int(st.positions.realised[OMS_ACCOUNT, INST]), ps + qs)),
        "fills": int(out[O_FILLS]),
        "orders_sent": int(out[O_OUR_ORDERS]),
        "fees": str(from_fixed(int(out[O_FEES]), ps + qs)),
        "turnover": str(from_fixed(int(out[O_TURNOVER]), ps + qs)),
        "risk_rejects": dict(sorted(rejects.items())),
        "journal_events": int(out[O_JOURNAL]),
    }


def chart(res: BacktestResult, path: Path) -> None:
    """PNG of equity and drawdown over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (res.equity_t - res.equity_t[0]) / 1e9
    eq = res.equity_v / 1e8  # a picture, not money: float is fine for pixels
    peak = np.maximum.accumulate(eq)
    dd = (eq - peak) / peak * 100
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a1.plot(t, eq, color="tab:blue", lw=1)
    a1.set_ylabel("equity (quote)")
    a1.ticklabel_format(axis="y", useOffset=False, style="plain")
    a1.set_title(f"bot4d backtest — seed {res.report['config']['seed']}, P&L {res.report['pnl']}")
    a1.grid(alpha=0.3)
    a2.fill_between(t, dd, 0, color="tab:red", alpha=0.4)
    a2.set_ylabel("drawdown %")
    a2.set_xlabel("seconds")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d backtest", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=600, help="market steps of 100 ms")
    ap.add_argument("--params", type=Path, help="market parameters from `bot4d calibrate`")
    ap.add_argument("--replay", nargs=3, metavar=("WS_FILE", "HTTP_FILE", "SYMBOL"),
                    help="replay a recorded Binance session (depth snapshot + diffs + trades)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor")
    ap.add_argument("--quote-qty", help="quote size in the instrument's quantity (decimal)")
    ap.add_argument("--half-spread-ticks", type=int)
    ap.add_argument("--stop-ticks", type=int)
    ap.add_argument("--max-inventory", help="largest position the market maker builds (decimal)")
    ap.add_argument("--out", type=Path, default=Path("backtest"), help="directory for report.json, chart.png, events.bin")
    args = ap.parse_args(argv)
    if args.steps < 1:
        print("bot4d backtest: --steps must be >= 1", file=sys.stderr)
        return 2
    cfg = BacktestConfig(seed=args.seed, steps=args.steps, replay_speed=args.speed,
                         replay=tuple(args.replay) if args.replay else None)
    for name in ("quote_qty", "half_spread_ticks", "stop_ticks", "max_inventory"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.params:
        from bot4d.sim.calibrate import load_params

        try:
            cfg.market = load_params(args.params)
        except (OSError, ValueError, KeyError) as e:
            print(f"bot4d backtest: cannot use {args.params}: {e}", file=sys.stderr)
            return 2
    try:
        res = run(cfg)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"bot4d backtest: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(res.report, indent=2) + "\n")
    (args.out / "events.bin").write_bytes(res.journal.tobytes())
    chart(res, args.out / "chart.png")
    print(json.dumps(res.report, indent=2))
    print(f"wrote {args.out}/report.json, chart.png, events.bin")
    return 0


def warmup() -> None:
    run(BacktestConfig(steps=3))


if __name__ == "__main__":
    sys.exit(main())
