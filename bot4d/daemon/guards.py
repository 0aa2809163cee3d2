"""Protection a shard runs beside pre-trade risk: correlation cap, Kelly statistics, venue-error
and breaker storms, statistical breakers. One call per pass of the shard loop (``guard_step``),
nogil and without allocating:

* **Venue health.** The order gateways (io thread) count failed or refused venue calls and
  order-entry breaker opens into a small shared array (``make_health``: one cache line per
  counter, one row per shard, single writer: the io thread); each pass the shard adds what is new
  to its kill switch's error-storm and breaker-storm windows (``killswitch.ks_note``), so
  ``risk.error_storm`` / ``risk.breaker_storm`` trip it.
* **Kelly statistics.** Every EV_POSITION record the OMS journalled in this pass is one fill's
  position; a trade closes when the position returns to flat or changes sign, and its P&L
  (realised P&L minus fees since the position left flat, in risk's quote units) goes into the
  strategy's statistics (``risk.note_trade``), which risk uses to size intents that ask for it
  (INTENT_FLAG_WANTS_SIZING). Strategy ids are instrument ids (one strategy per instrument).
* **Correlation.** Every ``correlation_sample_ms`` the mids of the shard's usable books are pushed
  into a return ring (``kernels.correlation``) and the matrix risk's correlation cap reads
  (``ShardInst.corr``) is recomputed: O(window x m^2) for the shard's m instruments, at the
  sampling cadence only. Instruments of other shards are not in it (their mids and positions are
  another thread's): the cap applies between instruments of one shard.
* **Statistical breakers.** Every ``stat_breaker.sample_ms`` each usable mid and the position's
  notional go through ``breaker.stat_update`` (z-score of the return with a minimum move, and
  the position's VaR); a breaker that opens (EV_BREAKER) trips the kill switch with
  TRIP_STAT_BREAKER, whose plan is REDUCING (journalled EV_KILL_SWITCH): positions may still be
  closed, nothing new opens until an admin's ``bot4ctl resume``.

Monitors: the shard's counters segment (``bot4d.telemetry``: stat breaker state, z-score, VaR,
Kelly trades and P&L, correlations, venue errors, storm windows), written at most every
TEL_NS; ``bot4ctl risk`` reads the same arrays (``read_view``).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np

from bot4d.fixedpoint import from_fixed
from bot4d.jitcache import helper, kernel
from bot4d.kernels import breaker as bkr
from bot4d.kernels import correlation as cr
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import risk as rk
from bot4d.records import EV_POSITION
from ipc.counters import counter_get, counter_set

# --- cfg words (reloadable) ---------------------------------------------------------------------
G_CORR_SAMPLE_NS = 0
G_CORR_MIN_SAMPLES = 1
G_STAT_ENABLED = 2
G_STAT_SAMPLE_NS = 3
G_N = 4

# --- timers -------------------------------------------------------------------------------------
T_CORR = 0
T_STAT = 1
T_TEL = 2
T_N = 3
TEL_NS = 100_000_000     # monitors poll at human rates: publish at most every 100 ms

# --- venue health: counters the io thread writes, one cache line each (ipc.counters) -----------
H_ERRORS = 0             # failed or refused venue calls (error storm)
H_BREAKER_OPENS = 1      # order-entry breaker opens (breaker storm)
H_N = 2

# --- telemetry indices per instrument (-1: none) ------------------------------------------------
TI_SB_STATE = 0
TI_ZSCORE = 1
TI_VAR = 2
TI_K_WINS = 3
TI_K_LOSSES = 4
TI_K_PNL_WIN = 5
TI_K_PNL_LOSS = 6
TI_N = 7
# per shard
TS_ERRORS = 0
TS_WIN_REJECTS = 1
TS_WIN_ERRORS = 2
TS_WIN_BREAKERS = 3
TS_N = 4
STORM_KINDS = {TS_WIN_REJECTS: "risk_rejects", TS_WIN_ERRORS: "venue_errors",
               TS_WIN_BREAKERS: "breaker_opens"}


class Guards(NamedTuple):
    cfg: np.ndarray      # int64[G_N]
    t: np.ndarray        # int64[T_N] when each periodic part runs next
    cols: np.ndarray     # int64[m] the shard's instruments (global ids), in id order
    smid: np.ndarray     # int64[n] scratch: the mids sampled this time (0: none)
    cring: np.ndarray    # float64[window, m] correlation return ring
    cmeta: np.ndarray    # int64[CR_N]
    clast: np.ndarray    # int64[m]
    sb: np.ndarray       # int64[n, SB_N] statistical breakers (rows of cols used)
    sring: np.ndarray    # float64[n, window]
    scfg: np.ndarray     # int64[SBC_N]
    kq: np.ndarray       # int64[n] position after the last fill seen (Kelly)
    kbase: np.ndarray    # int64[n] realised - fees (notional units) when the position left flat
    health: np.ndarray   # int64 shared venue-health counters (make_health), io thread writes
    hrow: np.ndarray     # int64[1] this shard's row in health
    hseen: np.ndarray    # int64[H_N] the health counts already noted into the kill switch
    tidx: np.ndarray     # int64[n, TI_N] telemetry series per instrument
    tcorr: np.ndarray    # int64[m, m] telemetry series per pair (a < b), -1: none
    tsh: np.ndarray      # int64[TS_N] telemetry series of the shard


# --- the shard's part ---------------------------------------------------------------------------
@helper(_nrt=False)
def _venue_health(g, ks, kcfg, now):
    base = g.hrow[0] * H_N
    e = counter_get(g.health, base + H_ERRORS)
    if e > g.hseen[H_ERRORS]:
        ksk.ks_note(ks, kcfg, ksk.NOTE_ERROR, e - g.hseen[H_ERRORS], now)
        g.hseen[H_ERRORS] = e
    o = counter_get(g.health, base + H_BREAKER_OPENS)
    if o > g.hseen[H_BREAKER_OPENS]:
        ksk.ks_note(ks, kcfg, ksk.NOTE_BREAKER_OPEN, o - g.hseen[H_BREAKER_OPENS], now)
        g.hseen[H_BREAKER_OPENS] = o


@helper(_nrt=False)
def _kelly(g, strat, si, journal, j0, j1, acct):
    """Closed trades from this pass's EV_POSITION records (one per fill, in order)."""
    n = g.kq.shape[0]
    for k in range(j0, j1):
        e = journal[k]
        if e.kind != EV_POSITION or e.aux3 != acct:
            continue
        i = e.instrument
        if i < 0 or i >= n or si.mine[i] == 0:
            continue
        q = e.qty
        last = g.kq[i]
        g.kq[i] = q
        net = e.aux0 - e.fee   # cumulative realised P&L minus cumulative fees, notional units
        if last != 0 and (q == 0 or (q > 0) != (last > 0)):
            # flat again, or through flat: one trade closed (a flip's fee stays with it)
            rk.note_trade(strat, i, (net - g.kbase[i]) * si.conv_mul[i] // si.conv_div[i])
            g.kbase[i] = net


@helper(_nrt=False)
def _sample_mids(g, si):
    """The usable mids of the shard's instruments into ``g.smid``; how many there are."""
    have = 0
    for k in range(g.cols.shape[0]):
        i = g.cols[k]
        m = si.mids[i] if (si.mine[i] != 0 and si.seen_live[i] != 0) else 0
        g.smid[i] = m
        if m > 0:
            have += 1
    return have


@helper(_nrt=False)
def _correlation(g, si):
    if g.cols.shape[0] < 2 or _sample_mids(g, si) == 0:
        return
    cr.corr_push(g.cring, g.cmeta, g.clast, g.smid, g.cols)
    cr.corr_compute(g.cring, g.cmeta, si.corr, g.cfg[G_CORR_MIN_SAMPLES], g.cols)


@helper(_nrt=False)
def _stat(g, rs, kcfg, st, si, journal, jcount, now, shard, acct):
    _sample_mids(g, si)
    for k in range(g.cols.shape[0]):
        i = g.cols[k]
        m = g.smid[i]
        if m <= 0:
            continue
        # |position| notional in quote units: a statistic (VaR), so a float product cannot wrap
        q = st.positions.qty[acct, i]
        v = abs(float(q)) * float(m) * float(si.conv_mul[i]) / float(si.conv_div[i])
        notional = np.int64(min(v, 9.0e18))
        before = g.sb[i, bkr.SB_STATE]
        after = bkr.stat_update(g.sb, g.sring, g.scfg, i, m, notional, now, journal, jcount, shard)
        if after == bkr.OPEN and before != bkr.OPEN:
            # a violent move (or too much at risk): stop opening, keep closing
            ksk.ks_trip(rs.ks, kcfg, ksk.TRIP_STAT_BREAKER, i, now, journal, jcount, shard)


@helper(_nrt=False)
def _publish(g, rs, kcfg, si, tel, now):
    for k in range(g.cols.shape[0]):
        i = g.cols[k]
        t = g.tidx[i]
        if t[TI_SB_STATE] >= 0:
            counter_set(tel, t[TI_SB_STATE], g.sb[i, bkr.SB_STATE])
            counter_set(tel, t[TI_ZSCORE], g.sb[i, bkr.SB_LAST_Z])
            counter_set(tel, t[TI_VAR], g.sb[i, bkr.SB_LAST_VAR])
        if t[TI_K_WINS] >= 0 and i < rs.strat.shape[0]:
            counter_set(tel, t[TI_K_WINS], rs.strat[i, rk.S_WINS])
            counter_set(tel, t[TI_K_LOSSES], rs.strat[i, rk.S_LOSSES])
            counter_set(tel, t[TI_K_PNL_WIN], rs.strat[i, rk.S_SUM_WIN])
            counter_set(tel, t[TI_K_PNL_LOSS], rs.strat[i, rk.S_SUM_LOSS])
        for k2 in range(k + 1, g.cols.shape[0]):
            x = g.tcorr[k, k2]
            if x >= 0:
                c = si.corr[i, g.cols[k2]]
                # unknown (NaN) shows as 0: like a zero correlation, it caps nothing
                counter_set(tel, x, np.int64(np.floor(c * 10000.0 + 0.5)) if c == c else 0)
    s = g.tsh
    if s[TS_ERRORS] >= 0:
        counter_set(tel, s[TS_ERRORS], g.hseen[H_ERRORS])
        counter_set(tel, s[TS_WIN_REJECTS], ksk.ks_window(rs.ks, kcfg, ksk.NOTE_REJECT, now))
        counter_set(tel, s[TS_WIN_ERRORS], ksk.ks_window(rs.ks, kcfg, ksk.NOTE_ERROR, now))
        counter_set(tel, s[TS_WIN_BREAKERS], ksk.ks_window(rs.ks, kcfg, ksk.NOTE_BREAKER_OPEN, now))


@kernel(_nrt=False)
def guard_step(g, now, shard, st, rs, kcfg, si, journal, jcount, j0, tel, acct):
    """One pass (after the shard decided its instruments, before the kill switch is evaluated):
    venue health into the storm windows, this pass's closed trades into the Kelly statistics,
    and when due the correlation sample, the statistical breakers and the monitors' series.
    ``journal[j0:jcount[0]]`` holds this pass's records; breaker and kill-switch records go after."""
    _venue_health(g, rs.ks, kcfg, now)
    _kelly(g, rs.strat, si, journal, j0, jcount[0], acct)
    if now >= g.t[T_CORR]:
        g.t[T_CORR] = now + g.cfg[G_CORR_SAMPLE_NS]
        _correlation(g, si)
    if g.cfg[G_STAT_ENABLED] != 0 and now >= g.t[T_STAT]:
        g.t[T_STAT] = now + g.cfg[G_STAT_SAMPLE_NS]
        _stat(g, rs, kcfg, st, si, journal, jcount, now, shard, acct)
    if now >= g.t[T_TEL]:
        g.t[T_TEL] = now + TEL_NS
        _publish(g, rs, kcfg, si, tel, now)


# --- building (Python) --------------------------------------------------------------------------
def make_health(n_shards: int) -> np.ndarray:
    """The venue-health counters all shards read and the io thread writes (row per shard)."""
    from ipc.counters import CL

    return np.zeros(max(1, n_shards) * H_N * CL, np.int64)


def note_health(health: np.ndarray, shards: list[int], which: int, n: int = 1) -> None:
    """The io thread (its only writer) counts ``n`` events of kind H_* for each of ``shards``."""
    from ipc.counters import CL

    for s in shards:
        health[(s * H_N + which) * CL] += n


def make_guards(n: int, mine: list[int], r: Any, health: np.ndarray, shard: int,
                tel_block: Any = None, symbols: list[str] | None = None) -> Guards:
    """State for shard ``shard`` owning instruments ``mine`` of ``n``, configured from ``r``
    (``bot4d.config.RiskConfig``); ``tel_block`` / ``symbols`` (by instrument id) locate its
    monitor series (``bot4d.telemetry``)."""
    cols = np.array(sorted(mine), np.int64)
    ring, meta, last, _ = cr.make_correlation(max(1, n), r.correlation_window, cols)
    sb, sring, scfg = bkr.make_stat_breakers(max(1, n), window=r.stat_breaker.window, **_stat_kwargs(r))
    g = Guards(
        cfg=np.zeros(G_N, np.int64), t=np.zeros(T_N, np.int64), cols=cols, smid=np.zeros(n, np.int64),
        cring=ring, cmeta=meta, clast=last, sb=sb, sring=sring, scfg=scfg,
        kq=np.zeros(n, np.int64), kbase=np.zeros(n, np.int64), health=health,
        hrow=np.array([shard], np.int64), hseen=np.zeros(H_N, np.int64),
        tidx=np.full((n, TI_N), -1, np.int64), tcorr=np.full((len(cols), len(cols)), -1, np.int64),
        tsh=np.full(TS_N, -1, np.int64))
    configure(g, r)
    if tel_block is not None and symbols is not None:
        _tel_indices(g, tel_block, shard, symbols)
    return g


def configure(g: Guards, r: Any) -> None:
    """The reloadable settings (SIGHUP, on the shard's thread); window sizes need a restart."""
    sb = r.stat_breaker
    g.cfg[G_CORR_SAMPLE_NS] = r.correlation_sample_ms * 1_000_000
    g.cfg[G_CORR_MIN_SAMPLES] = r.correlation_min_samples
    g.cfg[G_STAT_ENABLED] = 1 if sb.enabled else 0
    g.cfg[G_STAT_SAMPLE_NS] = sb.sample_ms * 1_000_000
    g.scfg[:] = bkr.stat_config(g.sring.shape[1], **_stat_kwargs(r))


def _stat_kwargs(r: Any) -> dict[str, int]:
    sb = r.stat_breaker
    return dict(z_milli=sb.z_milli, min_samples=sb.min_samples, var_z_milli=sb.var_z_milli,
                var_limit=sb.var_limit_quote(r.max_daily_loss), cooldown_ns=sb.cooldown_ns,
                min_move_bps=sb.min_move_bps)


def sync_positions(g: Guards, qty: np.ndarray, realised: np.ndarray, fees: np.ndarray) -> None:
    """Before the shard runs: the positions reconciliation found are where trades begin."""
    for i in g.cols.tolist():
        g.kq[i] = qty[i]
        g.kbase[i] = realised[i] - fees[i]


def _tel_indices(g: Guards, blk: Any, shard: int, symbols: list[str]) -> None:
    sh = str(shard)
    for i in g.cols.tolist():
        sym = symbols[i]
        g.tidx[i, TI_SB_STATE] = blk.index("bot4d_stat_breaker_state", shard=sh, symbol=sym)
        g.tidx[i, TI_ZSCORE] = blk.index("bot4d_return_zscore", shard=sh, symbol=sym)
        g.tidx[i, TI_VAR] = blk.index("bot4d_position_var", shard=sh, symbol=sym)
        g.tidx[i, TI_K_WINS] = blk.index("bot4d_kelly_trades_total", shard=sh, symbol=sym, result="win")
        g.tidx[i, TI_K_LOSSES] = blk.index("bot4d_kelly_trades_total", shard=sh, symbol=sym, result="loss")
        g.tidx[i, TI_K_PNL_WIN] = blk.index("bot4d_kelly_pnl_total", shard=sh, symbol=sym, result="win")
        g.tidx[i, TI_K_PNL_LOSS] = blk.index("bot4d_kelly_pnl_total", shard=sh, symbol=sym, result="loss")
    cols = g.cols.tolist()
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            g.tcorr[a, b] = blk.index("bot4d_correlation", shard=sh, symbol=symbols[cols[a]],
                                      other=symbols[cols[b]])
    g.tsh[TS_ERRORS] = blk.index("bot4d_venue_errors_total", shard=sh)
    for k, kind in STORM_KINDS.items():
        g.tsh[k] = blk.index("bot4d_storm_window_events", shard=sh, kind=kind)


def add_series(blk: Any, shard: int, symbols: list[str]) -> None:
    """The series ``guard_step`` writes, in the shard's counters block (``bot4d.telemetry``)."""
    states = [bkr.BREAKER_STATE_NAMES[k] for k in sorted(bkr.BREAKER_STATE_NAMES)]
    sh = str(shard)
    for sym in symbols:
        blk.add("bot4d_stat_breaker_state", "enum", "Statistical breaker (z-score of mid returns, VaR) "
                "per instrument; OPEN moved the account to REDUCING.", states, shard=sh, symbol=sym)
        blk.add("bot4d_return_zscore", "gauge", "|z| of the latest sampled mid return against the window.",
                scale=3, shard=sh, symbol=sym)
        blk.add("bot4d_position_var", "gauge", "One-period parametric VaR of the position, quote currency.",
                scale=rk.QUOTE_SCALE, shard=sh, symbol=sym)
        for res in ("win", "loss"):
            blk.add("bot4d_kelly_trades_total", "counter", "Closed trades in the Kelly statistics, by result.",
                    shard=sh, symbol=sym, result=res)
            blk.add("bot4d_kelly_pnl_total", "counter", "Realised P&L (after fees) of closed trades in the "
                    "Kelly statistics, magnitude by result, quote currency.", scale=rk.QUOTE_SCALE,
                    shard=sh, symbol=sym, result=res)
    for a in range(len(symbols)):
        for b in range(a + 1, len(symbols)):
            blk.add("bot4d_correlation", "gauge", "Correlation of sampled mid returns risk's correlation cap "
                    "uses (0 while unknown).", scale=4, shard=sh, symbol=symbols[a], other=symbols[b])
    blk.add("bot4d_venue_errors_total", "counter", "Failed or refused venue calls counted into the "
            "shard's error-storm window.", shard=sh)
    for kind in STORM_KINDS.values():
        blk.add("bot4d_storm_window_events", "gauge", "Events in the kill switch's storm window "
                "(risk.storm_window_s), by kind.", shard=sh, kind=kind)


def read_view(g: Guards, si: Any, rs: Any, kcfg: np.ndarray, symbols: list[str], now_ns: int) -> dict[str, Any]:
    """What ``bot4ctl risk`` shows of this shard's guards (read on any thread: plain words)."""
    cols = g.cols.tolist()
    corr = {}
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            c = float(si.corr[cols[a], cols[b]])
            corr[f"{symbols[cols[a]]}/{symbols[cols[b]]}"] = None if c != c else round(c, 4)
    cap = int(rs.cfg[rk.C_KELLY_CAP_BPS])
    min_trades = int(rs.cfg[rk.C_KELLY_MIN_TRADES])
    kelly, stat = {}, {}
    for i in cols:
        if i >= rs.strat.shape[0]:
            continue
        w, lo, sw, sl = (int(x) for x in rs.strat[i, [rk.S_WINS, rk.S_LOSSES, rk.S_SUM_WIN, rk.S_SUM_LOSS]])
        kelly[symbols[i]] = {"trades": w + lo, "wins": w, "losses": lo,
                             "won": str(_quote(sw)), "lost": str(_quote(sl)),
                             "fraction": kelly_fraction(w, lo, sw, sl, cap, min_trades)}
        s = g.sb[i]
        stat[symbols[i]] = {"state": bkr.BREAKER_STATE_NAMES[int(s[bkr.SB_STATE])],
                            "trips": int(s[bkr.SB_TRIPS]), "returns": int(s[bkr.SB_COUNT]),
                            "last_z": round(int(s[bkr.SB_LAST_Z]) / 1000, 3),
                            "var": str(_quote(int(s[bkr.SB_LAST_VAR])))}
    ks = rs.ks
    storms = {}
    for which, name, limit in ((ksk.NOTE_REJECT, "risk_rejects", ksk.KC_MAX_REJECTS),
                               (ksk.NOTE_ERROR, "venue_errors", ksk.KC_MAX_ERRORS),
                               (ksk.NOTE_BREAKER_OPEN, "breaker_opens", ksk.KC_MAX_BREAKER_OPENS)):
        storms[name] = {"in_window": int(ksk.ks_window(ks, kcfg, which, now_ns)), "trips_above": int(kcfg[limit])}
    return {"correlation": corr, "correlation_samples": int(g.cmeta[cr.CR_COUNT]), "kelly": kelly,
            "stat_breakers": stat, "storm_window_s": int(kcfg[ksk.KC_WINDOW_NS]) / 1e9, "storms": storms,
            "venue_errors": int(g.hseen[H_ERRORS]), "breaker_opens_seen": int(g.hseen[H_BREAKER_OPENS])}


def _quote(v: int) -> Decimal:
    return from_fixed(int(v), rk.QUOTE_SCALE)


def kelly_fraction(wins: int, losses: int, sum_win: int, sum_loss: int, cap_bps: int,
                   min_trades: int) -> str | None:
    """The fraction of equity risk would size with now (as ``check_batch`` computes it), or None
    while risk refuses to size (REJ_KELLY_NO_STATS: too few trades or no win yet)."""
    n = wins + losses
    if n < min_trades or wins <= 0 or sum_win <= 0:
        return None
    f = wins * (float(sum_win) - float(sum_loss)) / (n * float(sum_win))
    bps = min(int(f * 10000.0) if f > 0 else 0, cap_bps)
    return str(Decimal(bps).scaleb(-4))


def warm_python_calls(ks: np.ndarray, kcfg: np.ndarray) -> None:
    """Load the kernels called from Python at run time (``bot4ctl risk``, the order gateway's
    breaker) now, on scratch arrays of the same types, not on the first command or order."""
    from bot4d.errors import CAT_OK
    from bot4d.records import JOURNAL_EVENT_DTYPE

    ksk.ks_window(ks, kcfg, ksk.NOTE_ERROR, 0)
    br, cfg = bkr.make_breakers(1)
    ev = np.zeros(4, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    bkr.br_allow(br, cfg, 0, 0, ev, n, 0)
    bkr.br_record(br, cfg, 0, CAT_OK, 0, 0, ev, n, 0)
    bkr.br_hold(br, cfg, 0, 1, 0, ev, n, 0)
    bkr.br_release(br, 0)
