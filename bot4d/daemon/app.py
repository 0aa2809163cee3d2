"""``bot4d run``: the daemon process.

Start-up, in this order (nothing trades before the end of it):

1. the configuration (``bot4d.config``) is loaded and validated; the venue's trading rules
   (``exchangeInfo``) give each instrument its fixed-point scales;
2. the shared segments are created (telemetry catalog, counters, histograms, snapshots, and per
   shard the ingress / reports / egress / journal rings) and the shard state preallocated;
3. every kernel the shards run is loaded from numba's cache and run once on throwaway state, so
   the first tick never compiles;
   then each shard's kill switch, peak and day-start equity are restored from ``state_dir``
   (``bot4d.daemon.riskstate``; missing or corrupt: REDUCING), and saved from then on;
4. the feeds connect and the order gateway starts (signed REST, user-data stream);
5. the venue is reconciled: our orders left by an earlier run are cancelled (the journal has
   their history; this run's OMS never knew them), balances become positions relative to each
   instrument's ``neutral_base``; only then do the shard threads start, and ``READY=1`` goes out.

While running, the io thread (this asyncio loop) moves records between sockets and rings; shards
run in their own pinned threads. ``WATCHDOG=1`` is sent only while every shard's heartbeat is
fresh, so a hung shard stops the pings and systemd restarts the daemon. SIGTERM: the risk state is
saved as it stands (a restart does not inherit the shutdown's own halt), strategies stop (every
shard HALTED), open orders are cancelled or left per ``on_stop``, the journal is drained to
its ring and, with persistence, bot4d-persist is given ``persist.shutdown_wait_s`` to take it all
(what is left is logged per shard with the ring file keeping it), exit 0. SIGHUP: the
configuration is re-read and what can change safely (limits, strategy parameters, rates) is
applied on each shard's own thread; anything else is refused with the reason in the log and
STATUS.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from bot4d import __version__
from bot4d.config import Config, ConfigError, InstrumentConfig, load, reloadable_changes
from bot4d.daemon import account as acc
from bot4d.daemon import fillmarks
from bot4d.daemon import guards as G
from bot4d.daemon import riskstate
from bot4d.daemon import shard_kernel as K
from bot4d.daemon import venue_rules
from bot4d.daemon.journal_watch import JournalWatch, keep_previous_journal
from bot4d.daemon.shard import Shard, ShardRings, tel_index
from bot4d.fixedpoint import from_fixed, to_fixed
from bot4d.instruments import InstrumentTable
from bot4d.kernels import filters as filt
from bot4d.kernels import breaker as bkr
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import oms_state as oms
from bot4d.kernels import protect as pt
from bot4d.kernels import risk as rk
from bot4d.kernels.stp import STP_POLICIES
from bot4d.sdnotify import Notifier
from bot4d.strategies import imbalance_taker as it_s
from bot4d.strategies import market_maker as mm_s
from bot4d.telemetry import Telemetry
from bot4d.venues import binance as vb
from bot4d.venues.sync import Reason
from ipc.counters import counter_set

log = logging.getLogger("bot4d")

# "venue": refused by the venue or the gateway; risk's reasons; "local": the OMS's own refusals
REJECT_REASONS = ["venue"] + [rk.REASON_NAMES[c] for c in range(1, rk.REJ_LAST + 1)] + ["local"]
TRIP_REASONS = [ksk.TRIP_NAMES[c] for c in range(1, ksk.TRIP_LAST + 1)]
MD_REASONS = [r.name for r in Reason if r not in (Reason.OK, Reason.IGNORED)]

# EV_CONTROL command codes (journal ``reason``); persisted as such by bot4d-persist
CONTROL_CODES = {"halt": 1, "reduce-only": 2, "resume": 3, "cancel-all": 4, "flatten": 5, "pause": 6,
                 "unpause": 7, "limits-set": 8, "reload": 9}
WATCHDOG_MAX_AGE_NS = 2_000_000_000   # a shard silent this long is hung
RISK_POLL_S = 0.2     # the io thread looks for trading-state changes to save this often
RISK_SAVE_S = 5.0     # and saves a changed peak / day-start equity at most this often


class StartupError(Exception):
    """The daemon cannot start; the message says why (exit status 1)."""


STOP_TAKEOVER_S = 10.0   # how long an earlier run's protective stop waits to be replaced


def _ms(v: int) -> int:
    return int(v) * 1_000_000


class Daemon:
    def __init__(self, cfg: Config, *, notifier: Notifier | None = None, warm: bool = True) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.warm = warm
        self.table = InstrumentTable()
        self.rules: dict[str, dict] = {}
        self.inst_cfg: list[InstrumentConfig] = list(cfg.instruments)
        self.shards: list[Shard] = []
        self.telemetry: Telemetry | None = None
        self.gateways: dict[str, Any] = {}
        self.feeds: Any = None
        self.control: Any = None
        self.boot_id = _boot_id()
        self.started_ns = time.time_ns()
        self.stopping = asyncio.Event()
        self.reload_requested = False
        self.status_text = "starting"
        self.ready = False
        self._efds: list[int] = []
        self._stops_refused: dict[int, int] = {}   # instrument -> protective stops refused, as logged
        self.reconciled: dict[str, Any] = {}
        self.states: Any = None
        self.kernels: dict[str, Any] = {}   # how the start found numba's cache (bot4ctl status)
        self.owner = np.zeros(0, np.int64)
        self._tasks: list[asyncio.Task] = []
        self.py: dict[int, tuple[Any, Any, float]] = {}
        self.account_ccy: dict[str, str] = {}        # venue -> the currency equity is measured in
        self.mark_sources: dict[str, dict] = {}      # venue -> (asset, quote) -> its mark (venue_rules)
        self.fee_rates: dict[str, dict] = {}         # venue -> the commission rates in the fee model
        self.journal_watch: JournalWatch | None = None
        # the saved risk state (riskstate): what start-up found and the last save (bot4ctl risk);
        # saves are serialised, and stop before the shutdown's own halt
        self.risk_state: dict[str, Any] = {}
        self._risk_lock = asyncio.Lock()
        self._risk_saving = False
        self._risk_saved_at = 0.0
        # the last journalled venue trade id per symbol (fillmarks): found at start, kept saved
        self.fill_marks: fillmarks.FillMarks | None = None
        self.mark_tracker: fillmarks.MarkTracker | None = None
        self._marks_lock = asyncio.Lock()

    # ================================================================ start-up ====================
    async def _fetch_rules(self) -> dict[tuple[str, str], dict]:
        """Every instrument's trading rules (``GET /api/v3/exchangeInfo``); StartupError if a venue
        does not give them."""
        from bot4d.gateway.binance import fetch_exchange_info

        rules: dict[tuple[str, str], dict] = {}
        for vname, v in self.cfg.venues.items():
            syms = [i.symbol for i in self.inst_cfg if i.venue == vname]
            if not syms:
                continue
            try:
                rules.update({(vname, s): r for s, r in (await fetch_exchange_info(v.rest_url, syms)).items()})
            except Exception as e:
                raise StartupError(f"venue {vname}: cannot read trading rules from {v.rest_url}: {e}") from None
        return rules

    async def _reload_rules(self) -> str:
        """SIGHUP / `bot4ctl reload`: the venues' exchange filters read again and loaded on every
        shard (on its own thread); on any problem the filters in force stay. Returns what happened."""
        try:
            new = await self._fetch_rules()
            venue_rules.check(self.cfg, self.inst_cfg, new)
        except (StartupError, venue_rules.RulesError) as e:
            log.error("exchange filters not reloaded (those in force stay): %s", e)
            return f"exchange filters kept: {e}"
        moved = venue_rules.same_scales(self.rules, new)
        if moved:
            msg = f"exchange filters kept: the tick or step of {', '.join(moved)} changed its decimals (restart)"
            log.error("%s", msg)
            return msg
        self.rules = new
        await asyncio.gather(*(asyncio.wrap_future(sh.submit(
            lambda sh=sh: venue_rules.load_filters(sh.st.filters, self.inst_cfg, new, self._scales)))
            for sh in self.shards))
        return "exchange filters reloaded"

    async def _load_rules(self) -> None:
        self.rules.update(await self._fetch_rules())
        for ic in self.inst_cfg:
            r = self.rules[(ic.venue, ic.symbol)]
            self.table.add(vb.VENUE, ic.symbol, r["price_scale"], r["qty_scale"])
        try:
            # filters, STP modes and quote currencies, before anything is built on them
            self.account_ccy = venue_rules.check(self.cfg, self.inst_cfg, self.rules)
        except venue_rules.RulesError as e:
            raise StartupError(str(e)) from None

    def _scales(self, i: int) -> tuple[int, int]:
        ins = self.table.by_id(i)
        return ins.price_scale, ins.qty_scale

    def _strategy_params(self, i: int, sid: int, cfg: Config | None = None) -> tuple[int, np.ndarray, np.ndarray]:
        ic = cfg.instruments[i] if cfg is not None else self.inst_cfg[i]
        ps, qs = self._scales(i)
        r = self.rules[(ic.venue, ic.symbol)]
        tick = to_fixed(r["tickSize"], ps)
        p = ic.strategy.params
        if ic.strategy.kind == "market_maker":
            qty = to_fixed(p["quote_qty"], qs)
            params, state = mm_s.make(sid, tick=tick, half_spread_ticks=int(p["half_spread_ticks"]), qty=qty,
                                      max_inventory=to_fixed(p["max_inventory"], qs),
                                      skew_ticks_per_lot=int(p["skew_ticks_per_lot"]), lot=qty,
                                      stop_ticks=int(p["stop_ticks"]), requote_ticks=int(p["requote_ticks"]),
                                      min_requote_ns=_ms(p["min_requote_ms"]))
            return K.K_MARKET_MAKER, params, state
        if ic.strategy.kind == "imbalance_taker":
            params, state = it_s.make(sid, tick=tick, levels=int(p["levels"]),
                                      threshold_e9=int(Decimal(p["threshold"]) * 10**9), qty=to_fixed(p["qty"], qs),
                                      max_pos=to_fixed(p["max_position"], qs), stop_ticks=int(p["stop_ticks"]),
                                      slip_ticks=int(p.get("slip_ticks", 0)), cooldown_ns=_ms(p.get("cooldown_ms", 0)),
                                      hold_ns=_ms(p.get("hold_ms", 1000)))
            return K.K_IMBALANCE_TAKER, params, state
        return K.K_NONE, np.zeros(0, np.int64), np.zeros(0, np.int64)

    def _py_strategies(self) -> None:
        """Build the Python strategies (kind = "python"): a class that cannot load stops the start."""
        from bot4d.strategies.pyapi import Context, load as load_py

        self.py: dict[int, tuple[Any, Any, float]] = {}
        for i, ic in enumerate(self.inst_cfg):
            if ic.strategy.kind != "python":
                continue
            p = ic.strategy.params
            ps, qs = self._scales(i)
            r = self.rules[(ic.venue, ic.symbol)]
            ctx = Context(i, ic.symbol, to_fixed(r["tickSize"], ps), ps, qs, coid_base=(i + 1) << 40)
            params = {k[len("params."):]: v for k, v in p.items() if k.startswith("params.")}
            try:
                strat = load_py(str(p["class"]))(params, ctx)
            except Exception as e:
                raise StartupError(f"instruments[{i}].strategy: {e}") from None
            self.py[i] = (strat, ctx, int(p["interval_ms"]) / 1000)

    async def _py_loop(self, i: int) -> None:
        from bot4d.strategies.pyapi import View

        strat, ctx, interval = self.py[i]
        sh = self._shard_of(i)
        lo, hi = ctx.coid_base, ctx.coid_base + (1 << 40)
        while not self.stopping.is_set():
            await asyncio.sleep(interval)
            try:
                view = View(**await asyncio.wrap_future(sh.submit(lambda: sh.py_view(i, lo, hi))))
                intents = strat.on_tick(view, ctx)
                if intents:
                    await asyncio.wrap_future(sh.submit(lambda its=np.array(intents): sh.submit_py(its)))
            except Exception:
                log.exception("Python strategy of %s failed; paused (its orders are cancelled)", ctx.symbol)
                def pause_and_cancel() -> None:
                    sh.si.paused[i] = 1
                    sh.cancel_all(i)
                await asyncio.wrap_future(sh.submit(pause_and_cancel))
                return

    def _risk_for(self, rs: rk.RiskState, i: int, now: int, cfg: Config | None = None) -> None:
        ic = cfg.instruments[i] if cfg is not None else self.inst_cfg[i]
        ps, qs = self._scales(i)
        rk.set_instrument(rs, i, venue=0, price_scale=ps, qty_scale=qs, max_qty=to_fixed(ic.max_position, qs),
                          max_notional=to_fixed(ic.max_notional, rk.QUOTE_SCALE),
                          max_open_orders=ic.max_open_orders, band_bps=ic.band_bps)

    def _limits(self, rs: rk.RiskState, cfg: Config | None = None, shard: int = 0) -> None:
        """Shard ``shard``'s risk limits: the account's, and its slice of the account's gross
        exposure limit (bot4d.daemon.account)."""
        c = cfg or self.cfg
        r = c.risk
        gross = None if r.max_gross_exposure is None else to_fixed(r.max_gross_exposure, rk.QUOTE_SCALE)
        rk.set_limits(rs, max_daily_loss=to_fixed(r.max_daily_loss, rk.QUOTE_SCALE), max_pos_bps=r.max_pos_bps,
                      max_dd_bps=r.max_dd_bps, corr_cap_bps=r.corr_cap_bps, kelly_cap_bps=r.kelly_cap_bps,
                      kelly_min_trades=r.kelly_min_trades,
                      max_gross=acc.slices(gross, r.gross_exposure_split, len(c.shard_cores))[shard])

    def _kcfg(self, cfg: Config | None = None) -> np.ndarray:
        r = (cfg or self.cfg).risk
        return ksk.make_ks_config(max_daily_loss=to_fixed(r.max_daily_loss, rk.QUOTE_SCALE), max_dd_bps=r.max_dd_bps,
                                  max_rejects=r.reject_storm, max_errors=r.error_storm, md_stale_ns=r.md_stale_ns,
                                  day_offset_ns=r.day_offset_ns, max_breaker_opens=r.breaker_storm,
                                  window_ns=r.storm_window_ns)

    def _build(self) -> None:
        cfg = self.cfg
        n = len(self.table)
        venues = sorted({vb.VENUE for _ in self.cfg.venues})
        self.telemetry = Telemetry(cfg.instance, venues=venues,
                                   instruments=[(vb.VENUE, x.symbol, x.price_scale, x.qty_scale) for x in self.table],
                                   shards=len(cfg.shard_cores), md_reasons=MD_REASONS, reject_reasons=REJECT_REASONS,
                                   trip_reasons=TRIP_REASONS, config_hash=cfg.source_hash,
                                   filter_labels=list(filt.FILTER_LABELS.values()),
                                   shard_series=lambda blk, s: G.add_series(blk, s, self._shard_symbols(s)))
        # venue errors and order-entry breaker opens, from the gateways to every shard's kill switch
        self.health = G.make_health(len(cfg.shard_cores))
        from bot4d.feed.state import BookStateTable

        # the feeds publish each book's state here; the shard kernels read it (same process)
        self.states = BookStateTable(n)
        self.owner = np.array([ic.shard for ic in self.inst_cfg], np.int64)  # instrument -> shard
        now = time.time_ns()
        for s, core in enumerate(cfg.shard_cores):
            mine = [i for i, ic in enumerate(self.inst_cfg) if ic.shard == s]
            kinds = np.zeros(n, np.int64)
            plist, slist = [], []
            for i in range(n):
                k, p, st = self._strategy_params(i, i) if i in mine else (K.K_NONE, np.zeros(0, np.int64), np.zeros(0, np.int64))
                kinds[i] = k
                plist.append(p)
                slist.append(st)
            pw = max([len(p) for p in plist] + [1])
            sw = max([len(x) for x in slist] + [1])
            P = np.zeros((n, pw), np.int64)
            S = np.zeros((n, sw), np.int64)
            for i in range(n):
                P[i, :len(plist[i])] = plist[i]
                S[i, :len(slist[i])] = slist[i]
            conv_mul = np.ones(n, np.int64)
            conv_div = np.ones(n, np.int64)
            neutral = np.zeros(n, np.int64)
            for i in range(n):
                ps, qs = self._scales(i)
                e = ps + qs - rk.QUOTE_SCALE
                conv_mul[i], conv_div[i] = (10 ** -e, 1) if e < 0 else (1, 10 ** e)
                neutral[i] = to_fixed(self.inst_cfg[i].neutral_base, qs)
            mids = np.zeros(n, np.int64)   # the shard's marks: its strategies', risk's and its dust's
            si = K.ShardInst(mine=np.isin(np.arange(n), mine).astype(np.int64), kind=kinds, params=P, state=S,
                             paused=np.zeros(n, np.int64), live=np.zeros(n, np.int64),
                             seen_live=np.zeros(n, np.int64), last_recv=np.zeros(n, np.int64),
                             mids=mids, corr=np.full((n, n), np.nan), neutral=neutral,
                             conv_mul=conv_mul, conv_div=conv_div, equity0=np.zeros(1, np.int64),
                             feed_state=self.states.rows,
                             prot=self._protection(n, mine, self.telemetry.hist_unprotected[s].hist),
                             guard=G.make_guards(n, mine, cfg.risk, self.health, s, self.telemetry.shard_blocks[s],
                                                 [ic.symbol for ic in self.inst_cfg]),
                             acv=acc.view(self.telemetry.account, s, mids, [self._scales(i)[0] for i in range(n)]))
            st = oms.make_oms(1, n, capacity=1 << 14, shard=s)
            for i in mine:   # the local self-trade check applies the instrument's own policy ([[instruments]] stp)
                st.stp_mode[K.ACCOUNT, i] = STP_POLICIES[self.inst_cfg[i].stp]
            # the venue's exchange filters, refused locally before the wire (bot4d.daemon.venue_rules)
            st = venue_rules.install_filters(st, K.ACCOUNT, self.inst_cfg, self.rules, self._scales)
            rs = rk.make_risk(n, n_strategies=n)   # strategy id = instrument id (Kelly statistics)
            self._limits(rs, shard=s)
            for i in mine:
                self._risk_for(rs, i, now)
            v = next(iter(cfg.venues.values()))
            rk.set_venue_rate(rs, 0, capacity=max(1, v.orders_per_second * 2), per_second=v.orders_per_second, now_ns=now)
            # a dead run's journal bot4d-persist has not drained is kept aside, never replaced
            keep_previous_journal(cfg.instance, s)
            rings = ShardRings.create(cfg.instance, s, journal_capacity=cfg.persist.journal_capacity,
                                      persisted=cfg.persist.enabled, boot_id=self.boot_id)
            blk = self.telemetry.shard_blocks[s]
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            in_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._efds += [efd, in_fd]
            shard = Shard(s, core, instance=cfg.instance, n_instruments=n, mine=mine, oms_state=st, risk=rs,
                          kcfg=self._kcfg(), inst=si, rings=rings,
                          tel_counters=self.telemetry.counter_array(blk.name),
                          tel_idx=tel_index(blk, s, REJECT_REASONS, TRIP_REASONS),
                          snap_books=self.telemetry.books, snap_positions=self.telemetry.positions,
                          spin_us=int(os.environ.get("BOT4D_SPIN_US", "50")),
                          egress_fd=efd, input_fd=in_fd)
            self.shards.append(shard)
        io = self.telemetry.io
        self.journal_watch = JournalWatch(
            cfg.instance, [sh.rings.journal for sh in self.shards], cfg.persist,
            counters=self.telemetry.counter_array(io.name), index=lambda m, s: io.index(m, shard=str(s)),
            stop_trading=self._stop_trading_unpersisted)

    def _protection(self, n: int, mine: list[int], hist: np.ndarray) -> pt.Protection:
        """Each instrument's protective-stop settings ([instruments.protection])."""
        pr = pt.make_protection(n, hist)
        for i in mine:
            p = self.inst_cfg[i].protection
            pt.configure(pr, i, enabled=p.enabled, default_bps=p.default_stop_bps,
                         limit_bps=p.limit_offset_bps, retry_ns=p.retry_ms * 1_000_000)
        return pr

    def _warm(self, setup: bool = False) -> None:
        """Every kernel a shard runs, called once on its real state's types before anything
        connects: numba loads them from its cache (or compiles) now, never on a tick."""
        from bot4d.jitcache import CompileCounter

        t0 = time.perf_counter()
        with CompileCounter() as compiled:
            for sh in self.shards:
                sh.warm()
        took = time.perf_counter() - t0
        self.kernels = {"ready_s": round(took, 2), "compiled_at_start": compiled.count}
        if compiled.count and setup:   # bot4d.warmup: compiling is this start's purpose
            log.info("kernels compiled in %.1f s (%d)", took, compiled.count)
        elif compiled.count:
            log.warning("kernels ready in %.1f s: %d compiled now, not loaded from the cache (run `bot4d "
                        "warmup` after installing or editing; first: %s)", took, compiled.count,
                        ", ".join(compiled.names[:3]))
        else:
            log.info("kernels ready in %.1f s (all from the cache)", took)

    def _shard_of(self, instrument: int) -> Shard:
        return self.shards[self.inst_cfg[instrument].shard]

    # --- io: feeds -> ingress rings ----------------------------------------------------------------
    def _sink_for(self, ids: list[int]):
        shards = sorted({self.inst_cfg[i].shard for i in ids})
        if len(shards) == 1:
            shard = self.shards[shards[0]]
            publish, wake = shard.rings.ingress.publish, shard.wake

            def one(recs: np.ndarray) -> int:
                n = publish(recs)
                wake()
                return n
            return one
        def sink(recs: np.ndarray) -> int:
            took = 0
            sh = self.owner[recs["instrument"]]
            for s in shards:
                part = recs[sh == s]
                if len(part):
                    took += self.shards[s].rings.ingress.publish(part)
                    self.shards[s].wake()
            return took
        return sink

    async def _start_feeds(self) -> None:
        from bot4d.feed.binance import BinanceAdapter
        from bot4d.feed.manager import FeedClient

        self.feeds = FeedClient(len(self.table), states=self.states)
        for vname, v in self.cfg.venues.items():
            syms = [ic.symbol for ic in self.inst_cfg if ic.venue == vname]
            ad = BinanceAdapter(self.table, syms)
            ids = [int(i) for i in ad.instrument_ids]
            self.feeds.add(ad, v.ws_url, rest_base=v.rest_url, sink=self._sink_for(ids),
                           stale_after_s=float(self.cfg.risk.md_stale_s) / 2)
        self.feeds.start()

    # --- io: gateway <-> rings ---------------------------------------------------------------------
    def _on_reports(self, reps: np.ndarray) -> None:
        ok = (reps["instrument"] >= 0) & (reps["instrument"] < len(self.owner))
        if not ok.all():
            log.error("order gateway produced %d reports for unknown instruments; dropped", int((~ok).sum()))
            reps = reps[ok]
        sh_of = self.owner[reps["instrument"]]
        for s in np.unique(sh_of).tolist():
            part = reps[sh_of == s]
            done = self.shards[s].rings.reports.publish(part)
            self.shards[s].wake()
            if done < len(part):
                # never expected (16k slots); the OMS would miss venue state: stop the shard trading
                log.critical("shard %d reports ring full: %d venue reports not delivered; halting", s, len(part) - done)
                self.shards[s].submit(lambda sh=self.shards[s]: sh.set_trading_state(ksk.TS_HALTED, 0))

    def _drain_egress(self, s: int) -> None:
        try:
            os.eventfd_read(self.shards[s].egress_fd)
        except BlockingIOError:
            pass
        recs = self.shards[s].rings.egress.consume()
        if len(recs):
            by_venue = self.gateways
            # one venue with order entry today; instruments name it when there are more
            gw = next(iter(by_venue.values()))
            gw.send(recs)

    async def _start_gateways(self) -> None:
        from bot4d.gateway.binance import BinanceGateway, SymbolInfo

        for vname, v in self.cfg.venues.items():
            syms = []
            for i, ic in enumerate(self.inst_cfg):
                if ic.venue != vname:
                    continue
                r = self.rules[(vname, ic.symbol)]
                ps, qs = self._scales(i)
                syms.append(SymbolInfo(i, ic.shard, ic.symbol, r["base"], r["quote"], ps, qs,
                                       stp_mode=venue_rules.stp_mode(ic)))
            marks = venue_rules.mark_sources(self.inst_cfg, self.rules, vname,
                                             lambda i: self._shard_of(i).si.mids, self._scales)
            self.mark_sources[vname] = marks
            gw = BinanceGateway(rest_base=v.rest_url, ws_base=v.ws_url, api_key=v.api_key.reveal(),
                                secret=v.api_secret.reveal(), symbols=syms, boot_id=self.boot_id,
                                on_reports=self._on_reports, weight_budget_per_min=v.weight_budget_per_min,
                                recv_window_ms=v.recv_window_ms,
                                t2o_hists={s: h for s, h in enumerate(self.telemetry.hist_tick_to_order)},
                                ack_hist=self.telemetry.hist_order_ack.get(vb.VENUE), on_halt=self._venue_halt,
                                time_sync_interval_s=v.time_sync_interval_s, mark_of=venue_rules.mark_of(marks),
                                breaker=bkr.make_breakers(1, **self.cfg.risk.order_entry_breaker.kernel_args()),
                                on_breaker=lambda recs, vname=vname: self._on_breaker(vname, recs),
                                on_error=lambda vname=vname: G.note_health(self.health, self._venue_shards(vname),
                                                                           G.H_ERRORS))
            await gw.start()
            self.gateways[vname] = gw
            await self._load_fees(vname, gw)
        loop = asyncio.get_running_loop()
        for s in range(len(self.shards)):
            loop.add_reader(self.shards[s].egress_fd, self._drain_egress, s)

    async def _load_fees(self, vname: str, gw: Any) -> None:
        """The account's commission rates on the venue's symbols into every shard's fee model (the
        shards have not started: written here, on the io thread)."""
        from bot4d.kernels import fees as feek

        syms = [ic.symbol for ic in self.inst_cfg if ic.venue == vname]
        try:
            got = {sym: await gw.commission(sym) for sym in syms}
            maker, taker, uniform = venue_rules.fee_rates(got)
            for sh in self.shards:
                feek.set_rates(sh.st.fees, maker, taker)
        except Exception as e:   # GatewayError, a malformed answer, rates out of range
            raise StartupError(f"venue {vname}: cannot read the account's commission rates: {e}") from None
        if not uniform:
            log.warning("venue %s: commission rates differ between symbols; the fee model charges the "
                        "highest (maker %s, taker %s)", vname, maker, taker)
        log.info("venue %s: commission maker %s taker %s (GET /api/v3/account/commission)", vname, maker, taker)
        self.fee_rates[vname] = {"maker": str(maker), "taker": str(taker), "uniform": uniform}

    def _check_marks(self, vname: str, balances: dict[str, tuple[Decimal, Decimal]]) -> None:
        """Equity converts every balance into the account currency at a mark: a balance without one
        stops the start, naming the asset."""
        v = self.cfg.venues[vname]
        ccy = self.account_ccy.get(vname, "")
        bad = venue_rules.unvalued_assets(balances, ccy, self.mark_sources.get(vname, {}), v.ignore_assets)
        if bad:
            raise StartupError(
                f"venue {vname}: the account holds {', '.join(bad)}, which equity cannot convert into {ccy}: "
                f"no instrument {' or '.join(a + ccy for a in bad)} gives a mark (add one, strategy kind \"none\" "
                f"will do, or list the asset in venues.{vname}.ignore_assets to leave it out of equity)")

    def _shard_symbols(self, s: int) -> list[str]:
        return [ic.symbol for ic in self.inst_cfg if ic.shard == s]

    def _venue_shards(self, vname: str) -> list[int]:
        return sorted({ic.shard for ic in self.inst_cfg if ic.venue == vname})

    def _on_breaker(self, vname: str, recs: np.ndarray) -> None:
        """The order-entry breaker of venue ``vname`` changed state: its EV_BREAKER records go to the
        journal of the first shard trading there; an open counts into every such shard's kill
        switch (breaker storm: risk.breaker_storm)."""
        shards = self._venue_shards(vname)
        opened = int((recs["state"] == bkr.OPEN).sum())
        if opened:
            G.note_health(self.health, shards, G.H_BREAKER_OPENS, opened)
        if shards and self.shards:
            sh = self.shards[shards[0]]

            def journal() -> None:
                if sh.journal_records(recs) < len(recs):
                    log.error("shard %d: journal buffer full: order-entry breaker records not journalled", sh.index)
            sh.submit(journal)

    def _venue_halt(self, why: str) -> None:
        log.critical("venue asks us to stop trading: %s; all shards HALTED", why)
        for sh in self.shards:
            sh.submit(lambda sh=sh: sh.set_trading_state(ksk.TS_HALTED, 0))

    # --- reconciliation ------------------------------------------------------------------------------
    async def _wait_books(self, timeout_s: float) -> bool:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.feeds.live().all():
                return True
            await asyncio.sleep(0.05)
        return False

    def _position_sign(self, vname: str, balances: dict[str, tuple[Decimal, Decimal]]):
        """symbol -> +1 long / -1 short / 0 flat from the venue's balances (holding - neutral), so
        reconciliation leaves an earlier run's protective stop on a position in place."""
        signs = {}
        for i, ic in enumerate(self.inst_cfg):
            if ic.venue == vname:
                r = self.rules[(vname, ic.symbol)]
                qs = self._scales(i)[1]
                held, _ = acc.split_holding(sum(balances.get(r["base"], (Decimal(0), Decimal(0)))), qs)
                neutral = to_fixed(ic.neutral_base, qs)   # (dust below a step is no position)
                signs[ic.symbol] = (held > neutral) - (held < neutral)
        return lambda symbol: signs.get(symbol, 0)

    async def _reconcile(self) -> None:
        """Before the first order: every fill the journal misses is recovered (the venue's trades
        after the journal's last one per symbol: an earlier run's are journalled without moving a
        position), our leftovers are cancelled, positions come from balances read after that,
        and equity."""
        await self._follow_fill_marks()
        base = 0   # the account's quote balances, counted once for the account (bot4d.daemon.account)
        for vname, gw in self.gateways.items():
            gw.set_fill_marks(self.fill_marks.for_venue(vname) if self.fill_marks is not None else {})
            rec = await gw.reconcile()
            log.info("venue %s: open orders: %d ours from earlier runs, %d this run, %d not ours", vname,
                     len(rec.previous_boots), len(rec.ours), len(rec.foreign))
            cancelled = await gw.cancel_leftovers(rec, self._position_sign(vname, rec.balances)) \
                if rec.previous_boots else 0
            if rec.foreign:
                log.warning("venue %s: %d open orders not placed by bot4d are left alone", vname, len(rec.foreign))
            c = gw.counters
            recovered = c["fills_recovered"] + c["fills_recovered_other_runs"]
            (log.warning if recovered else log.info)(
                "venue %s: %d fills the journal did not have were recovered from the venue's trades", vname, recovered)
            self.reconciled[vname] = {"leftover_orders_cancelled": cancelled, "foreign_orders": len(rec.foreign),
                                      "ours_open": len(rec.ours), "at_ns": time.time_ns(),
                                      "fills_recovered": recovered,
                                      "fill_marks": self.fill_marks.describe() if self.fill_marks else None}
            # the leftovers' fills until their cancel are in balances read after it
            balances = await gw.balances() if rec.previous_boots else rec.balances
            self._check_marks(vname, balances)
            quote_total: dict[str, Decimal] = {}
            for i, ic in enumerate(self.inst_cfg):
                if ic.venue != vname:
                    continue
                r = self.rules[(vname, ic.symbol)]
                free, locked = balances.get(r["base"], (Decimal(0), Decimal(0)))
                ps, qs = self._scales(i)
                # a balance finer than the instrument's step (a commission paid in the base asset):
                # the position is what can trade, the rest is valued at the mark as it is
                held, dust = acc.split_holding(free + locked, qs)
                sh = self._shard_of(i)
                acc.set_dust(sh.si.acv, i, dust)
                if dust:
                    log.info("%s %s: %s %s below the quantity step is valued at the mark, not traded", vname,
                             ic.symbol, dust, r["base"])
                pos = held - int(sh.si.neutral[i])
                sh.st.positions.qty[K.ACCOUNT, i] = pos
                sh.st.positions.fill_qty[K.ACCOUNT, i] = pos
                quote_total.setdefault(r["quote"], sum(balances.get(r["quote"], (Decimal(0), Decimal(0)))))
                log.info("%s %s: holding %s %s (neutral %s): position %s", vname, ic.symbol, free + locked, r["base"],
                         ic.neutral_base, from_fixed(pos, qs))
                # an earlier run's protection left resting: this run asks for the same stop (and
                # take-profit), so its first protective order replaces it like for like
                kept = gw.adopted_protection().get(ic.symbol) if hasattr(gw, "adopted_protection") else None
                if kept is not None and pos != 0:
                    sh.si.prot.st[i, pt.X_WANT_PX] = to_fixed(kept[0], ps)
                    sh.si.prot.st[i, pt.X_WANT_TP] = to_fixed(kept[1], ps)
            base += sum((to_fixed(v, rk.QUOTE_SCALE) for v in quote_total.values()), 0)
            for sh in self.shards:
                # the quote balances once in the account area, each shard's holdings in its part;
                # equity is recorded once every holding of every shard has a mark (K.mark_account):
                # quote balances alone are no valuation to measure the day's loss from
                acc.reset(sh.si.acv, base)
                sh.si.equity0[0] = 0

    # --- fill marks in daemon.state_dir (bot4d.daemon.fillmarks) -----------------------------------
    def _load_fill_marks(self) -> None:
        """The journal's last venue trade id per symbol, from the saved file and the old journal
        rings; saved again at once (without rings) so that a start that fails later loses none."""
        cfg = self.cfg
        fm = fillmarks.load(cfg.state_dir, cfg.instance, len(cfg.shard_cores))
        for p in fm.problems:
            log.error("fill marks: %s: fills recovered at start may be journalled twice", p)
        (log.info if fm.found_file else log.warning)(
            "fill marks: %s (%d records of the old journals read): %s", fm.path if fm.found_file else "no file yet",
            fm.tail_records, ", ".join(f"{k} {v}" for k, v in sorted(fm.marks.items())) or "none")
        self.fill_marks = fm
        self.mark_tracker = fillmarks.MarkTracker(cfg.state_dir, cfg.instance, self.boot_id, fm.marks)
        data, pos = self.mark_tracker.take()
        err = fillmarks.write(self.mark_tracker.path, data)
        if err is not None:
            raise StartupError(f"daemon.state_dir {cfg.state_dir}: cannot save the fill marks: {err}")
        self.mark_tracker.written(pos, None)

    async def _follow_fill_marks(self) -> None:
        """Follow this run's journal rings (from their record 0) and keep the marks saved."""
        t = self.mark_tracker
        if t is None:
            return
        names = {i: f"{ic.venue}:{ic.symbol}" for i, ic in enumerate(self.inst_cfg)}
        for sh in self.shards:
            t.follow(sh.index, sh.rings.journal, names)
        err = await self._save_fill_marks()
        if err is not None:
            raise StartupError(f"daemon.state_dir {self.cfg.state_dir}: cannot save the fill marks: {err}")
        self._tasks.append(asyncio.create_task(self._fill_marks_loop(), name="fill-marks"))

    async def _save_fill_marks(self) -> str | None:
        """Read what the shards journalled since the last look; write the file if it changed."""
        t = self.mark_tracker
        if t is None:
            return None
        async with self._marks_lock:
            t.poll()
            got = t.take()
            if got is None:
                return None
            err = await asyncio.get_running_loop().run_in_executor(None, fillmarks.write, t.path, got[0])
            t.written(got[1], err)
            return err

    async def _fill_marks_loop(self) -> None:
        while True:
            await asyncio.sleep(fillmarks.POLL_S)
            await self._save_fill_marks()

    # --- risk state in daemon.state_dir (bot4d.daemon.riskstate) -------------------------------------
    async def _risk_state_start(self) -> None:
        """Restore each shard's kill switch, peak and day-start equity, or start REDUCING when the
        saved state is missing or corrupt (ACTIVE only on a first start the config allows); save at
        once (the first save initialises state_dir), then keep saving from the io thread."""
        cfg = self.cfg
        got = riskstate.load(cfg.state_dir, cfg.instance)
        self.risk_state = {"file": str(riskstate.paths(cfg.state_dir, cfg.instance)[0]), "at_start": got.kind,
                           "at_start_detail": got.message, "saved_ns": None, "save_error": None}
        snap = got.snapshot
        if snap is not None:
            log.info("%s", got.message)
            saved = {r.shard: r for r in snap.shards}
            same = set(saved) == {sh.index for sh in self.shards}
            # peak and day-start equity are the account's (bot4d.daemon.account): kept whatever the shards
            keep_day = snap.day_offset_ns == cfg.risk.day_offset_ns
            if not same:
                log.warning("risk state: saved for shards %s, this configuration has %d: every shard starts as the "
                            "most severe saved one, with the account's peak and day-start equity", sorted(saved),
                            len(self.shards))
            if not keep_day:
                log.warning("risk state: risk.day_start_utc changed since it was saved: the day-start equity is "
                            "taken afresh")
            for sh in self.shards:
                rec = saved[sh.index] if same else snap.most_severe()
                riskstate.restore(rec, sh.rs.ks, sh.rs.acct, equity=False, day=False)
                riskstate.restore_account(snap, sh.rs.acct, day=keep_day)
                (log.info if rec.trading_state == ksk.TS_ACTIVE else log.warning)(
                    "shard %d starts %s as saved%s", sh.index, rec.describe(),
                    "" if rec.trading_state == ksk.TS_ACTIVE else "; an admin's `bot4ctl resume` returns it to ACTIVE")
        else:
            first_ok = got.kind == "first start" and cfg.risk.first_start_state == "active"
            state = ksk.TS_ACTIVE if first_ok else ksk.TS_REDUCING
            why = f"risk.first_start_state = \"{cfg.risk.first_start_state}\"" if got.kind == "first start" else \
                "a trip may have been lost"
            (log.warning if got.kind == "first start" else log.error)(
                "risk state: %s: starting %s (%s)%s", got.message, ksk.STATE_NAMES[state], why,
                "" if first_ok else "; an admin's `bot4ctl resume` returns to ACTIVE")
            for sh in self.shards:
                sh.rs.ks[ksk.K_STATE] = state
                sh.rs.ks[ksk.K_CHANGES] += 1
        self._risk_saving = True
        err = await self.save_risk_state()
        if err is not None:
            raise StartupError(f"daemon.state_dir {cfg.state_dir}: cannot save the risk state: {err}")
        self._tasks.append(asyncio.create_task(self._risk_state_saver(), name="risk-state"))

    def _risk_fingerprint(self) -> tuple[tuple, tuple]:
        """(trading state words, equity words) of every shard. Read from the io thread without the
        shard's cooperation: a trigger to save only; the saved values come through each shard."""
        state, equity = [], []
        for sh in self.shards:
            ks, acct = sh.rs.ks, sh.rs.acct
            state.append((int(ks[ksk.K_CHANGES]), int(ks[ksk.K_TRIP_COUNT]), int(ks[ksk.K_STATE]), int(acct[rk.A_DAY])))
            equity.append((int(acct[rk.A_PEAK_EQUITY]), int(acct[rk.A_DAY_START_EQUITY])))
        return tuple(state), tuple(equity)

    async def _risk_state_saver(self) -> None:
        """Save within RISK_POLL_S of every trading-state change, trip or new trading day, and a
        changed peak or day-start equity at most every RISK_SAVE_S."""
        last = self._risk_fingerprint()
        while self._risk_saving:
            await asyncio.sleep(RISK_POLL_S)
            fp = self._risk_fingerprint()
            if fp == last or (fp[0] == last[0] and time.monotonic() - self._risk_saved_at < RISK_SAVE_S):
                continue
            try:
                if await self.save_risk_state() is None:
                    last = fp
            except Exception:   # a shard's capture failed: say so, and keep saving
                log.exception("risk state NOT saved")

    async def save_risk_state(self) -> str | None:
        """Capture every shard's risk state on its own thread and write it (atomically, in an
        executor: never on a shard's thread). Returns None, or why the state was not saved."""
        async with self._risk_lock:
            if not self._risk_saving:
                return None
            recs = []
            for sh in self.shards:
                recs.append(await asyncio.wrap_future(
                    sh.submit(lambda sh=sh: riskstate.capture(sh.index, sh.rs.ks, sh.rs.acct))))
            snap = riskstate.RiskSnapshot(self.cfg.instance, time.time_ns(), self.boot_id,
                                          self.cfg.risk.day_offset_ns, tuple(recs))
            try:
                await asyncio.get_running_loop().run_in_executor(None, riskstate.save, self.cfg.state_dir, snap)
            except OSError as e:
                err = f"{e.filename or self.cfg.state_dir}: {e.strerror or e}"
                if self.risk_state.get("save_error") != err:
                    log.error("risk state NOT saved (%s): a restart now would not know the latest trading state", err)
                self.risk_state["save_error"] = err
                return err
            self._risk_saved_at = time.monotonic()
            self.risk_state.update(saved_ns=snap.saved_ns, save_error=None)
            return None

    async def _risk_state_stop(self) -> None:
        """The last save, before the shutdown's halt: that halt is how every stop begins, not a
        decision a restart should inherit."""
        if self._risk_saving:
            await self.save_risk_state()
            self._risk_saving = False

    # ================================================================ run ===========================
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.cfg.io_core is not None:
            try:
                os.sched_setaffinity(0, {self.cfg.io_core})
            except OSError as e:
                log.warning("cannot pin the io thread to core %d: %s", self.cfg.io_core, e)
        self._status("reading venue trading rules")
        await self._load_rules()
        self._py_strategies()
        self._status("creating shared memory")
        self._load_fill_marks()  # before the new journal rings replace the old ones
        self._build()
        if self.warm:
            self._status("loading kernels")
            await loop.run_in_executor(None, self._warm)
        await self._risk_state_start()
        from bot4d.daemon import commands

        self.control = commands.make_server(self)
        await self.control.start()
        self._status("connecting to venues")
        await self._start_feeds()
        await self._start_gateways()
        self._status("waiting for live books")
        if not await self._wait_books(30.0):
            log.warning("not every book is LIVE after 30 s; strategies wait for them")
        self._status("reconciling with the venue")
        await self._reconcile()
        for sh in self.shards:
            sh.start()
        for sig, fn in ((signal.SIGTERM, self.stopping.set), (signal.SIGINT, self.stopping.set),
                        (signal.SIGHUP, self._on_sighup)):
            loop.add_signal_handler(sig, fn)
        self.ready = True
        self._status("trading")
        self.notifier.ready(f"trading {len(self.table)} instruments on {len(self.shards)} shard(s)")
        log.info("bot4d %s ready: instance %s, boot %s", __version__, self.cfg.instance, self.boot_id)
        self._tasks.append(asyncio.create_task(self._watchdog()))
        self._tasks.append(asyncio.create_task(self._watch_journal()))
        self._tasks.append(asyncio.create_task(self._drop_unadopted_stops(STOP_TAKEOVER_S)))
        for i in self.py:
            self._tasks.append(asyncio.create_task(self._py_loop(i), name=f"py-strategy-{i}"))
        await self.stopping.wait()
        return await self._shutdown()

    async def _drop_unadopted_stops(self, after_s: float) -> None:
        """An earlier run's protective stop that this run's first stop has not replaced by now
        guards nothing this run knows of (position below a lot, protection turned off): cancel it."""
        await asyncio.sleep(after_s)
        for vname, gw in self.gateways.items():
            n = await gw.cancel_unadopted_stops()
            if n:
                log.warning("venue %s: %d protective stops of earlier runs were not taken over in %.0f s: "
                            "cancelled", vname, n, after_s)

    def _status(self, text: str) -> None:
        self.status_text = text
        self.notifier.status(text)
        log.info("%s", text)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s() or 1.0
        if self.cfg.watchdog_interval_s is not None:
            interval = float(self.cfg.watchdog_interval_s)
        last_status = ""
        while not self.stopping.is_set():
            now = time.time_ns()
            dead = [sh.index for sh in self.shards if not sh.alive(now, WATCHDOG_MAX_AGE_NS)]
            tel = self.telemetry
            if tel is not None:
                tel.heartbeat()  # CLOCK_MONOTONIC, what monitors compare it with
                self._publish_io_telemetry(now)
            if not dead:
                self.notifier.watchdog()
                text = self._status_line()
            else:
                text = f"shard(s) {dead} not running: watchdog pings stopped"
                log.critical(text)
            if text != last_status:
                self.notifier.status(text)
                last_status = text
            await asyncio.sleep(interval / 2)

    def _status_line(self) -> str:
        st = [ksk.STATE_NAMES[int(sh.rs.ks[ksk.K_STATE])] for sh in self.shards]
        live = int(self.feeds.live().sum()) if self.feeds else 0
        sent = sum(int(sh.bufs.ctr[K.C_PLACED]) for sh in self.shards)
        return f"{'/'.join(st)}; books live {live}/{len(self.table)}; orders sent {sent}"

    def _log_protection(self) -> None:
        """A protective stop the venue refused is an alarm (the shard trips to REDUCING; this says
        so in the log, once per refusal). Reads counters the shard only ever increments."""
        for sh in self.shards:
            refused = sh.si.prot.ctr[:, pt.P_REFUSED]
            for i in sh.instruments:
                n = int(refused[i])
                if n > self._stops_refused.get(i, 0):
                    log.error("%s: protective stop refused by the venue (code %d; %d so far): the position "
                              "may be unprotected; trading is REDUCING until an admin resumes",
                              self.inst_cfg[i].symbol, int(sh.si.prot.st[i, pt.X_LAST_REFUSAL]), n)
                    self._stops_refused[i] = n

    def _publish_io_telemetry(self, now: int) -> None:
        self._log_protection()
        # counters sit one per cache line (word 8*i): written through ipc.counters only
        tel = self.telemetry
        blk = tel.io
        arr = tel.counter_array(blk.name)
        if self.shards:   # the account's figures, from every shard's row of the account area
            for metric, v in acc.telemetry_values(tel.account, int(self.shards[0].si.acv.words[acc.AV_BASE])).items():
                counter_set(arr, blk.index(metric), v)
        self._publish_rules_telemetry(arr, blk)
        counters = self.feeds.counters() if self.feeds else {}
        for venue, d in counters.items():
            for metric, key in (("bot4d_md_messages_total", "FRAMES"), ("bot4d_md_gaps_total", "GAP"),
                                ("bot4d_md_resyncs_total", "RESYNCS"), ("bot4d_md_reconnects_total", "CONNECTED")):
                try:
                    counter_set(arr, blk.index(metric, venue=venue), int(d.get(key, 0)))
                except KeyError:
                    pass
            for r in MD_REASONS:
                try:
                    counter_set(arr, blk.index("bot4d_md_rejects_total", venue=venue, reason=r), int(d.get(r, 0)))
                except KeyError:
                    pass
        last = int(self.feeds.states.last_data_ns.max()) if self.feeds and len(self.table) else 0
        try:
            # the table keeps monotonic time; the series wants wall-clock ns
            counter_set(arr, blk.index("bot4d_md_last_message_age_seconds", venue=vb.VENUE),
                        now - (time.monotonic_ns() - last) if last else 0)
            for gw in self.gateways.values():
                counter_set(arr, blk.index("bot4d_breaker_state", venue=vb.VENUE, component="order_entry"),
                            int(gw.breaker_state))
            # market data's "breaker": CLOSED while every feed connection is up, OPEN while one
            # is down (its reconnects back off; its instruments are not LIVE meanwhile)
            conns = self.feeds.connections if self.feeds else []
            counter_set(arr, blk.index("bot4d_breaker_state", venue=vb.VENUE, component="market_data"),
                        0 if all(c.connected for c in conns) else 1)
        except KeyError:
            pass

    def rules_status(self) -> dict[str, Any]:
        """`bot4ctl status`: per instrument the STP mode its orders carry and the orders the
        exchange filters refused locally (by rule); per venue the account currency and the
        commission rates in the fee model."""
        return {
            "instruments": {ic.symbol: {"stp": ic.stp, "selfTradePreventionMode": venue_rules.stp_mode(ic),
                                        "filter_rejects": filt.reject_counts(self._shard_of(i).st.filters, i)}
                            for i, ic in enumerate(self.inst_cfg)} if self.shards else {},
            "account_currency": dict(self.account_ccy), "fee_rates": dict(self.fee_rates)}

    def _publish_rules_telemetry(self, arr: np.ndarray, blk: Any) -> None:
        """Local exchange-filter refusals per instrument and rule (each shard counts its own:
        ``filters.count_rejects``), and each venue's measured clock."""
        for i, ic in enumerate(self.inst_cfg):
            row = self._shard_of(i).st.filters.rejects[i]
            for code, label in filt.FILTER_LABELS.items():
                counter_set(arr, blk.index("bot4d_filter_rejects_total", venue=vb.VENUE, symbol=ic.symbol,
                                           filter=label), int(row[code - filt.F_FIRST]))
        for vname, gw in self.gateways.items():
            counter_set(arr, blk.index("bot4d_venue_clock_offset_seconds", venue=vb.VENUE), gw.clock.offset_ns)
            counter_set(arr, blk.index("bot4d_venue_clock_drift", venue=vb.VENUE), gw.clock.drift_ns_per_s)
            counter_set(arr, blk.index("bot4d_venue_recv_window_seconds", venue=vb.VENUE),
                        self.cfg.venues[vname].recv_window_ms * 1_000_000)

    # --- SIGHUP ------------------------------------------------------------------------------------
    def _on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload(uid=os.getuid(), pid=os.getpid()))

    async def reload(self, uid: int, pid: int) -> dict[str, Any]:
        self.notifier.reloading()
        try:
            new = load(self.cfg.path)
        except ConfigError as e:
            log.error("reload refused: %s", e)
            self.notifier.ready(f"reload refused: {e}")
            return {"applied": [], "refused": str(e)}
        ok, restart = reloadable_changes(self.cfg, new)
        if restart:
            msg = f"reload refused: {', '.join(restart)} need a restart"
            log.error(msg)
            self.notifier.ready(msg)
            return {"applied": [], "refused": msg}
        futs = []
        for sh in self.shards:
            futs.append(asyncio.wrap_future(sh.submit(lambda sh=sh: self._apply_reload(sh, new, uid, pid))))
        await asyncio.gather(*futs)
        for gw in self.gateways.values():   # the io thread's own: the order-entry breakers
            gw.br_cfg[:] = bkr.make_breakers(1, **new.risk.order_entry_breaker.kernel_args())[1]
        # only now does `limits` show the new values: they are in force on every shard
        self.cfg = new
        self.inst_cfg = list(new.instruments)
        rules = await self._reload_rules()
        log.info("reloaded: %s; %s", ", ".join(ok) or "nothing changed", rules)
        self.notifier.ready(self._status_line())
        return {"applied": ok, "refused": None, "exchange_filters": rules}

    def _apply_reload(self, sh: Shard, new: Config, uid: int, pid: int) -> None:
        """On the shard thread: limits and strategy parameters; strategy state (live orders) stays."""
        sh.journal_control(CONTROL_CODES["reload"], uid, pid)
        self._limits(sh.rs, new, sh.index)
        now = time.time_ns()
        for i in sh.instruments:
            self._risk_for(sh.rs, i, now, new)
            if new.instruments[i].strategy.kind != "python":
                _, p, _ = self._strategy_params(i, i, new)
                sh.si.params[i, :len(p)] = p
        sh.kcfg[:] = self._kcfg(new)
        G.configure(sh.si.guard, new.risk)
        v = next(iter(new.venues.values()))
        rk.set_venue_rate(sh.rs, 0, capacity=max(1, v.orders_per_second * 2), per_second=v.orders_per_second, now_ns=now)

    # --- SIGTERM -----------------------------------------------------------------------------------
    async def _shutdown(self) -> int:
        self._status("stopping")
        self.notifier.stopping()
        await self._risk_state_stop()
        futs = [asyncio.wrap_future(sh.submit(lambda sh=sh: sh.set_trading_state(ksk.TS_HALTED, os.getuid())))
                for sh in self.shards]
        await asyncio.gather(*futs, return_exceptions=True)
        if self.cfg.on_stop == "cancel":
            n = await asyncio.gather(*(asyncio.wrap_future(sh.submit(sh.cancel_all)) for sh in self.shards),
                                     return_exceptions=True)
            log.info("cancelling %s open orders before exit", n)
            await self._wait_no_live_orders(5.0)
        for sh in self.shards:
            sh.stop()
        for sh in self.shards:  # journal drain: what the buffers still hold goes to the ring
            for _ in range(100):
                if sh.bufs.jcount[0] == 0:
                    break
                K._flush(sh.bufs, sh.rings.egress.records, sh.rings.egress.ctrl, sh.rings.journal.records,
                         sh.rings.journal.ctrl)
                await asyncio.sleep(0.01)
            if sh.bufs.jcount[0]:
                log.error("shard %d: %d journal events could not be published (ring full)", sh.index, int(sh.bufs.jcount[0]))
        await self._save_fill_marks()  # the journal's last fills, for the next start
        await self._wait_journal_persisted()
        for t in self._tasks:
            t.cancel()
        if self.control is not None:
            await self.control.stop()
        for gw in self.gateways.values():
            await gw.stop()
        if self.feeds is not None:
            await self.feeds.stop()
        self.close()
        log.info("stopped")
        return 0

    async def _wait_no_live_orders(self, timeout_s: float) -> None:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            live = sum(len(sh.live_orders()) for sh in self.shards)
            if live == 0:
                return
            await asyncio.sleep(0.05)
        log.warning("open orders remain after %.0f s; the next start reconciles them", timeout_s)

    async def _wait_journal_persisted(self) -> None:
        """Wait (``persist.shutdown_wait_s`` at most) while an attached bot4d-persist takes every
        journal event; what is left is logged per shard with the ring files that keep it (they
        stay in /dev/shm: the next start keeps them aside, bot4d-persist drains them)."""
        if self.journal_watch is not None:
            await self.journal_watch.wait_persisted(self.cfg.persist.shutdown_wait_s)

    async def _watch_journal(self) -> None:
        """bot4d-persist on every shard's journal: metrics, and persist.on_no_sidecar when none."""
        while not self.stopping.is_set():
            if self.journal_watch is not None:
                self.journal_watch.tick()
            await asyncio.sleep(0.5)

    def _stop_trading_unpersisted(self, s: int, action: str) -> None:
        """persist.on_no_sidecar on shard ``s``: only ever a stricter trading state."""
        sh = self.shards[s]
        want = ksk.TS_HALTED if action == "halt" else ksk.TS_REDUCING

        def apply() -> None:
            if int(sh.rs.ks[ksk.K_STATE]) < want:
                sh.set_trading_state(want, 0)
        sh.submit(apply)

    def close(self) -> None:
        """Unmap; the journal rings stay (the sidecar may still drain them), the rest goes."""
        for efd in self._efds:
            try:
                asyncio.get_event_loop().remove_reader(efd)
            except Exception:
                pass
            os.close(efd)
        self._efds = []
        for sh in self.shards:
            for r in (sh.rings.ingress, sh.rings.reports, sh.rings.egress):
                r.unlink()
                r.close()
            if not self.cfg.persist.enabled:
                sh.rings.journal.unlink()
            sh.rings.journal.close()
        if self.telemetry is not None:
            self.telemetry.close(unlink=True)
            self.telemetry = None


def _boot_id() -> str:
    """Six base-36 characters from the start time: distinct across restarts, short enough for
    Binance's 36-character client order ids."""
    n = time.time_ns() // 10_000_000 % (36 ** 6)
    s = ""
    for _ in range(6):
        n, r = divmod(n, 36)
        s = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + s
    return s


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="bot4d run", description="run the trading daemon")
    ap.add_argument("--config", required=True, type=Path, help="TOML configuration (docs/config.md)")
    ap.add_argument("--check", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--log-level", default=os.environ.get("BOT4D_LOG_LEVEL", "INFO"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"bot4d: configuration refused: {e}", flush=True)
        log.error("configuration refused: %s", e)
        return 2
    if args.check:
        print(f"{args.config}: ok (instance {cfg.instance}, {len(cfg.instruments)} instruments, "
              f"{len(cfg.shard_cores)} shard(s))")
        return 0
    d = Daemon(cfg)
    try:
        return asyncio.run(d.run())
    except StartupError as e:
        log.error("cannot start: %s", e)
        d.close()
        return 1
