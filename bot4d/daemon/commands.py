"""The daemon's control commands (``bot4ctl``), registered on ``bot4d.control.ControlServer``.

Read commands need the monitor role, trading commands the operator role, limits and resume the
admin role (the server checks SO_PEERCRED). Whatever touches a shard's state runs on that shard's
thread (``Shard.submit``) and is awaited, so answers are consistent and the kernel never races
a command. Every mutating command is journalled as EV_CONTROL with the peer's uid and pid by the
audit hook, before it runs, in the journal of every shard it concerns.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from bot4d import __version__
from bot4d.control import CommandError, ControlServer, Peer, Role
from bot4d.daemon import account as acc
from bot4d.daemon import shard_kernel as K
from bot4d.fixedpoint import from_fixed, to_fixed
from bot4d.kernels import book as bk
from bot4d.kernels import killswitch as ksk
from bot4d.kernels import oms_state as oms
from bot4d.kernels import risk as rk

if TYPE_CHECKING:
    from bot4d.daemon.app import Daemon
    from bot4d.daemon.shard import Shard

ORDER_TYPE_NAMES = {oms.OT_LIMIT: "LIMIT", oms.OT_MARKET: "MARKET", oms.OT_STOP_LOSS: "STOP_LOSS (local)",
                    oms.OT_TAKE_PROFIT: "TAKE_PROFIT (local)", oms.OT_STOP_LIMIT: "STOP_LOSS_LIMIT"}
INSTRUMENT_LIMITS = ("max_position", "max_notional", "max_open_orders", "band_bps")
ACCOUNT_LIMITS = ("max_daily_loss", "max_drawdown_pct", "max_position_pct", "max_gross_exposure")
MONEY_LIMITS = ("max_daily_loss", "max_gross_exposure")   # quote currency; the others are percentages


def _on(sh: "Shard", fn) -> "asyncio.Future":
    return asyncio.wrap_future(sh.submit(fn))


class Commands:
    def __init__(self, d: "Daemon") -> None:
        self.d = d

    # --- helpers ---------------------------------------------------------------------------------
    def _instrument(self, args: dict[str, Any], required: bool = True) -> int | None:
        sym = args.get("symbol")
        if sym is None or sym == "":
            if required:
                raise CommandError("name an instrument: symbol=BTCUSDT (or as the first word)")
            return None
        sym = str(sym).upper()
        for i, ic in enumerate(self.d.inst_cfg):
            if ic.symbol == sym:
                return i
        known = ", ".join(ic.symbol for ic in self.d.inst_cfg)
        raise CommandError(f"unknown instrument {sym!r}; this daemon trades {known}")

    def _shards_for(self, i: int | None) -> list["Shard"]:
        return self.d.shards if i is None else [self.d._shard_of(i)]

    def _px(self, i: int, v: int) -> str:
        return str(from_fixed(int(v), self.d.table.by_id(i).price_scale)) if v else "-"

    def _qty(self, i: int, v: int) -> str:
        return str(from_fixed(int(v), self.d.table.by_id(i).qty_scale))

    def _money(self, i: int, v: int) -> str:
        ins = self.d.table.by_id(i)
        return str(from_fixed(int(v), ins.price_scale + ins.qty_scale))

    def audit(self, peer: Peer, cmd: str, args: dict[str, Any]) -> None:
        code = _code(cmd)
        try:
            i = self._instrument(args, required=False)
        except CommandError:
            i = None
        for sh in self._shards_for(i):
            sh.submit(lambda sh=sh: sh.journal_control(code, peer.uid, peer.pid, -1 if i is None else i))

    # --- read commands ---------------------------------------------------------------------------
    def version(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        import numba
        import platform

        return {"bot4d": __version__, "python": platform.python_version(), "numba": numba.__version__,
                "config_hash": self.d.cfg.source_hash}

    def status(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        d = self.d
        now = time.time_ns()
        return {
            "version": __version__, "instance": d.cfg.instance, "paper": d.cfg.paper, "boot": d.boot_id,
            "pid": os.getpid(), "uptime_s": round((now - d.started_ns) / 1e9, 1), "ready": d.ready,
            "status": d.status_text,
            "trading_state": {str(sh.index): ksk.STATE_NAMES[int(sh.rs.ks[ksk.K_STATE])] for sh in d.shards},
            "books_live": f"{int(d.feeds.live().sum()) if d.feeds else 0}/{len(d.table)}",
            # a feed LIVE does not make its book usable: the shard's copy may hold an error
            "books_in_error": {d.inst_cfg[i].symbol: bk.ERR_NAMES[int(sh.books.error[i])]
                               for sh in d.shards for i in sh.instruments if int(sh.books.error[i]) != 0},
            "orders_sent": sum(int(sh.bufs.ctr[K.C_PLACED]) for sh in d.shards),
            "orders_filled": sum(int(sh.bufs.ctr[K.C_FILLED]) for sh in d.shards),
            "venue_reports": sum(int(sh.bufs.ctr[K.C_REPORTS]) for sh in d.shards),
            "venues": {v: gw.status() for v, gw in d.gateways.items()},
            "reconciled": d.reconciled, "persistence": d.cfg.persist.enabled,
            "journal": d.journal_watch.summary() if d.journal_watch is not None else None,
            "venue_rules": d.rules_status(),
            "kernels": d.kernels,
        }

    def shards(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        now = time.time_ns()
        out = {}
        for sh in self.d.shards:
            ks = sh.rs.ks
            out[str(sh.index)] = {
                "core": sh.core, "pinned": sorted(sh.pinned) if sh.pinned else None,
                "alive": sh.alive(now, 2_000_000_000), "loops": sh.loops,
                "instruments": [self.d.inst_cfg[i].symbol for i in sh.instruments],
                "trading_state": ksk.STATE_NAMES[int(ks[ksk.K_STATE])],
                "trip": ksk.TRIP_NAMES.get(int(ks[ksk.K_REASON]), "NONE") if ks[ksk.K_TRIPPED] else None,
                "counters": sh.counters(),
            }
        return out

    async def books(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        i = self._instrument(args)
        depth = _int_arg(args, "depth", 5, 1, 100)
        sh = self.d._shard_of(i)

        def read():
            b = sh.books
            import numpy as np
            bp, bq, ap, aq = (np.zeros(depth, np.int64) for _ in range(4))
            nb_, na_ = bk.top_n(b.levels, b.state, i, depth, bp, bq, ap, aq)
            return (bp[:nb_].tolist(), bq[:nb_].tolist(), ap[:na_].tolist(), aq[:na_].tolist(),
                    int(sh.si.live[i]), int(sh.si.last_recv[i]), int(b.state[i, bk.S_SEQ]),
                    int(b.state[i, bk.S_ERROR]), bool(K._usable(sh.si, b.state, i)))
        bp, bq, ap, aq, live, last, seq, err, usable = await _on(sh, read)
        state = self.d.feeds.states.state[i] if self.d.feeds else 0
        from bot4d.telemetry import BOOK_STATES
        # "state" is the feed's; "usable" is whether the shard trades on this book (a feed LIVE
        # with a book in error, e.g. CROSSED, is not), "book_error" why not
        return {"symbol": self.d.inst_cfg[i].symbol, "state": BOOK_STATES[int(state)] if 0 <= state < len(BOOK_STATES) else str(state),
                "usable": usable, "book_error": bk.ERR_NAMES[err] if 0 < err < len(bk.ERR_NAMES) else (str(err) if err else None),
                "venue_seq": seq, "age_s": round((time.time_ns() - last) / 1e9, 3) if last else None,
                "bids": [f"{self._qty(i, q)} @ {self._px(i, p)}" for p, q in zip(bp, bq)],
                "asks": [f"{self._qty(i, q)} @ {self._px(i, p)}" for p, q in zip(ap, aq)]}

    async def orders(self, peer: Peer, args: dict[str, Any]) -> list[dict[str, Any]]:
        want = self._instrument(args, required=False)
        out = []
        for sh in self.d.shards:
            for o in await _on(sh, sh.orders):
                i = o["instrument"]
                if want is not None and i != want:
                    continue
                out.append({"order_id": o["order_id"], "symbol": self.d.inst_cfg[i].symbol, "side": o["side"],
                            "type": ORDER_TYPE_NAMES.get(o["type"], str(o["type"])),
                            "state": o["state"], "price": self._px(i, o["price"]), "qty": self._qty(i, o["qty"]),
                            "filled": self._qty(i, o["filled"]), "stop_price": self._px(i, o["stop_price"]),
                            "protective": o["protective"]})
        return out

    async def protection(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Per instrument: the position and the protective stop resting at the venue for it."""
        out: dict[str, Any] = {}
        for sh in self.d.shards:
            for p in await _on(sh, sh.protection):
                i = p.pop("instrument")
                flat = p["position"] == 0
                for k in ("position", "stop_qty"):
                    p[k] = self._qty(i, p[k])
                for k in ("stop_price", "limit_price", "take_profit_price"):
                    p[k] = self._px(i, p[k])
                p["unprotected_for_s"] = round(p.pop("unprotected_for_ns") / 1e9, 3)
                p["protected"] = flat or (bool(p["stop_order_id"]) and p["unprotected_for_s"] == 0
                                          and p["stop_state"] in ("ACKED", "PARTIALLY_FILLED"))
                out[self.d.inst_cfg[i].symbol] = p
        return out

    async def positions(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for sh in self.d.shards:
            for i, p in (await _on(sh, sh.positions)).items():
                out[self.d.inst_cfg[i].symbol] = {"qty": self._qty(i, p["qty"]), "avg_px": self._px(i, p["avg_px"]),
                                                  "mark": self._px(i, p["mark"])}
        return out

    async def pnl(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sh in self.d.shards:
            for i, p in (await _on(sh, sh.positions)).items():
                net = p["realised"] + p["unrealised"] - p["fees"]
                out[self.d.inst_cfg[i].symbol] = {"realised": self._money(i, p["realised"]),
                                                  "unrealised": self._money(i, p["unrealised"]),
                                                  "fees": self._money(i, p["fees"]), "net": self._money(i, net)}
        eq = [int(sh.rs.acct[rk.A_EQUITY]) for sh in self.d.shards]
        out["equity"] = str(from_fixed(max(eq) if eq else 0, rk.QUOTE_SCALE))
        return out

    async def balances(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for v, gw in self.d.gateways.items():
            rec = await gw.reconcile()
            out[v] = {a: {"free": str(f), "locked": str(lk)} for a, (f, lk) in sorted(rec.balances.items())}
        return out

    def risk(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Per shard its trading state and the account figures it measures against; ``account``:
        the account's figures from every shard's row of the account area (bot4d.daemon.account)."""
        out: dict[str, Any] = {}
        for sh in self.d.shards:
            ks, acct = sh.rs.ks, sh.rs.acct
            out[str(sh.index)] = {
                "trading_state": ksk.STATE_NAMES[int(ks[ksk.K_STATE])],
                "tripped": bool(ks[ksk.K_TRIPPED]),
                "trip_reason": ksk.TRIP_NAMES.get(int(ks[ksk.K_REASON]), "NONE") if ks[ksk.K_TRIPPED] else None,
                "trips": int(ks[ksk.K_TRIP_COUNT]),
                "equity": str(from_fixed(int(acct[rk.A_EQUITY]), rk.QUOTE_SCALE)),
                "peak_equity": str(from_fixed(int(acct[rk.A_PEAK_EQUITY]), rk.QUOTE_SCALE)),
                "day_start_equity": str(from_fixed(int(acct[rk.A_DAY_START_EQUITY]), rk.QUOTE_SCALE)),
                "trading_day_start": _day_start(int(acct[rk.A_DAY]), int(sh.kcfg[ksk.KC_DAY_OFFSET_NS])),
                "risk_rejects": int(sh.bufs.ctr[K.C_RISK_REJECTS]),
                "paused": [self.d.inst_cfg[i].symbol for i in sh.instruments if sh.si.paused[i]],
            }
            # correlation cap, Kelly statistics, statistical breakers, storm windows (daemon.guards)
            out[str(sh.index)].update(sh.guard_view([ic.symbol for ic in self.d.inst_cfg]))
        if self.d.shards and self.d.telemetry is not None:
            out["account"] = acc.summary(self.d.telemetry.account,
                                         int(self.d.shards[0].si.acv.words[acc.AV_BASE]))
        out["saved_state"] = dict(self.d.risk_state)
        return out

    def limits(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        r = self.d.cfg.risk
        return {"account": {"max_daily_loss": str(r.max_daily_loss), "max_drawdown_pct": str(r.max_drawdown_pct),
                            "max_position_pct": str(r.max_position_pct),
                            "max_gross_exposure": None if r.max_gross_exposure is None else str(r.max_gross_exposure),
                            "gross_exposure_split": list(r.gross_exposure_split) if r.gross_exposure_split else None},
                "instruments": {ic.symbol: {"max_position": str(ic.max_position), "max_notional": str(ic.max_notional),
                                            "max_open_orders": ic.max_open_orders, "band_bps": ic.band_bps}
                                for ic in self.d.inst_cfg}}

    def journal_lag(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Per shard: events produced and persisted, what is not persisted yet (lag: this run's
        ring; backlog: with the kept journals of earlier runs), bot4d-persist attached or not,
        the ring file and the kept journals; and what the shard still buffers (not in a ring)."""
        w = self.d.journal_watch
        out = w.report() if w is not None else {}
        for sh in self.d.shards:
            out.setdefault(str(sh.index), {})["buffered_in_shard"] = int(sh.bufs.jcount[0])
        return out

    # --- trading commands (operator) ---------------------------------------------------------------
    async def _state(self, state: int, peer: Peer) -> dict[str, str]:
        res = {}
        for sh in self.d.shards:
            res[str(sh.index)] = await _on(sh, lambda sh=sh: sh.set_trading_state(state, peer.uid))
        # saved before the answer: a halt the operator was told about survives a crash right after
        err = await self.d.save_risk_state()
        if err is not None:
            res["risk_state"] = f"NOT SAVED ({err}): a restart would not know this state"
        return res

    async def halt(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return await self._state(ksk.TS_HALTED, peer)

    async def reduce_only(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return await self._state(ksk.TS_REDUCING, peer)

    async def resume(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return await self._state(ksk.TS_ACTIVE, peer)

    async def cancel_all(self, peer: Peer, args: dict[str, Any]) -> dict[str, int]:
        i = self._instrument(args, required=False)
        n = 0
        for sh in self._shards_for(i):
            n += await _on(sh, lambda sh=sh: sh.cancel_all(i))
        return {"cancels_sent": n}

    async def flatten(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        i = self._instrument(args, required=False)
        out = {}
        targets = [i] if i is not None else list(range(len(self.d.inst_cfg)))
        for t in targets:
            sh = self.d._shard_of(t)
            out[self.d.inst_cfg[t].symbol] = await _on(sh, lambda sh=sh, t=t: sh.flatten(t))
        return out

    async def _pause(self, args: dict[str, Any], v: int) -> dict[str, str]:
        i = self._instrument(args)
        sh = self.d._shard_of(i)

        def set_():
            sh.si.paused[i] = v
            return "paused" if v else "trading"
        return {self.d.inst_cfg[i].symbol: await _on(sh, set_)}

    async def pause(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return await self._pause(args, 1)

    async def unpause(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        return await self._pause(args, 0)

    async def reload(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        return await self.d.reload(peer.uid, peer.pid)

    # --- admin --------------------------------------------------------------------------------------
    async def limits_set(self, peer: Peer, args: dict[str, Any]) -> dict[str, str]:
        key = str(args.get("key", ""))
        raw = args.get("value")
        if raw is None or raw == "":
            raise CommandError("give key=<limit> value=<number>")
        try:
            val = Decimal(str(raw))
        except InvalidOperation:
            raise CommandError(f"value {raw!r} is not a number") from None
        if not val.is_finite() or val <= 0:
            raise CommandError(f"value {raw!r} must be a positive number")
        i = self._instrument(args, required=False)
        if key in INSTRUMENT_LIMITS:
            if i is None:
                raise CommandError(f"{key} is per instrument: add symbol=...")
            ps, qs = self.d._scales(i)
            if key in ("max_open_orders", "band_bps") and val != val.to_integral_value():
                raise CommandError(f"{key} is a whole number")
            if key == "band_bps" and val > 10000:
                raise CommandError("band_bps is at most 10000")
            ic = self.d.inst_cfg[i]
            new = dict(max_position=ic.max_position, max_notional=ic.max_notional,
                       max_open_orders=ic.max_open_orders, band_bps=ic.band_bps)
            new[key] = int(val) if key in ("max_open_orders", "band_bps") else val
            try:
                mq, mn = to_fixed(new["max_position"], qs), to_fixed(new["max_notional"], rk.QUOTE_SCALE)
            except (ValueError, ArithmeticError) as e:
                raise CommandError(f"{key}={raw}: {e}") from None
            sh = self.d._shard_of(i)

            def apply():
                rk.set_instrument(sh.rs, i, venue=0, price_scale=ps, qty_scale=qs, max_qty=mq, max_notional=mn,
                                  max_open_orders=int(new["max_open_orders"]), band_bps=int(new["band_bps"]))
            await _on(sh, apply)
            import dataclasses
            self.d.inst_cfg[i] = dataclasses.replace(ic, **{key: new[key]})
            return {ic.symbol: f"{key} = {val}"}
        if key in ACCOUNT_LIMITS:
            import dataclasses
            r = self.d.cfg.risk
            if key not in MONEY_LIMITS and val > 100:
                raise CommandError(f"{key} is a percentage: at most 100")
            if key in MONEY_LIMITS and (val > Decimal(10) ** 10 or val != round(val, rk.QUOTE_SCALE)):
                raise CommandError(f"{key}={raw}: at most 10000000000 with at most {rk.QUOTE_SCALE} decimals")
            try:
                nr = dataclasses.replace(r, **{key: val})
                _ = (nr.max_dd_bps, nr.max_pos_bps)
            except (ValueError, ArithmeticError) as e:
                raise CommandError(f"{key}={raw}: {e}") from None
            new_cfg = dataclasses.replace(self.d.cfg, risk=nr)

            def apply(sh: "Shard") -> None:
                self.d._limits(sh.rs, new_cfg, sh.index)
                sh.kcfg[:] = self.d._kcfg(new_cfg)
            for sh in self.d.shards:
                await _on(sh, lambda sh=sh: apply(sh))
            self.d.cfg = new_cfg  # shown by `limits` once in force on every shard
            return {"account": f"{key} = {val}"}
        raise CommandError(f"unknown limit {key!r}; per instrument: {', '.join(INSTRUMENT_LIMITS)}; "
                           f"account: {', '.join(ACCOUNT_LIMITS)}")


def _day_start(day: int, offset_ns: int) -> str | None:
    """The trading day's first instant in UTC (ISO 8601), None before the first valuation."""
    if day < 0:
        return None
    t = dt.datetime.fromtimestamp((day * rk.DAY_NS + offset_ns) // 10**9, dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%MZ")


def _int_arg(args: dict[str, Any], k: str, default: int, lo: int, hi: int) -> int:
    v = args.get(k, default)
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise CommandError(f"{k} must be a whole number, got {v!r}") from None
    if not lo <= n <= hi:
        raise CommandError(f"{k} must be within {lo}..{hi}, got {n}")
    return n


def _code(cmd: str) -> int:
    from bot4d.daemon.app import CONTROL_CODES

    return CONTROL_CODES.get(cmd, CONTROL_CODES.get(cmd.replace("_", "-"), 99))


def make_server(d: "Daemon") -> ControlServer:
    c = Commands(d)
    cfg = d.cfg.control
    roles = {cfg.monitor_group: Role.MONITOR, cfg.operator_group: Role.OPERATOR, cfg.admin_group: Role.ADMIN}
    secrets = tuple(x for v in d.cfg.venues.values() for x in (v.api_key.reveal(), v.api_secret.reveal()))
    srv = ControlServer(str(cfg.socket), group_roles=roles, audit=c.audit, secrets=secrets)
    M, O, A = Role.MONITOR, Role.OPERATOR, Role.ADMIN
    for name, role, mut, fn, help_ in [
        ("version", M, False, c.version, "daemon, Python and numba versions"),
        ("status", M, False, c.status, "state, books, venues, reconciliation"),
        ("shards", M, False, c.shards, "shard threads: cores, liveness, counters"),
        ("books", M, False, c.books, "top of one book: books SYMBOL [depth=N]"),
        ("orders", M, False, c.orders, "live orders [SYMBOL]"),
        ("positions", M, False, c.positions, "positions per instrument"),
        ("protection", M, False, c.protection, "protective stops resting at the venue per position"),
        ("balances", M, False, c.balances, "venue balances (asks the venue)"),
        ("pnl", M, False, c.pnl, "realised, unrealised, fees, equity"),
        ("risk", M, False, c.risk, "trading state, kill switch, equity, correlations, Kelly, breakers, storms"),
        ("limits", M, False, c.limits, "risk limits in force"),
        ("journal-lag", M, False, c.journal_lag, "journal events produced, persisted, backlog, consumer, kept rings"),
        ("halt", O, True, c.halt, "stop new orders at once (cancels still go out)"),
        ("reduce-only", O, True, c.reduce_only, "only orders that reduce a position"),
        ("cancel-all", O, True, c.cancel_all, "cancel open orders [SYMBOL]"),
        ("flatten", O, True, c.flatten, "cancel and close positions [SYMBOL]"),
        ("pause", O, True, c.pause, "stop one instrument's strategy: pause SYMBOL"),
        ("unpause", O, True, c.unpause, "restart one instrument's strategy: resume SYMBOL"),
        ("reload", O, True, c.reload, "re-read the configuration (like SIGHUP)"),
        ("resume", A, True, c.resume, "back to ACTIVE after a halt or a kill-switch trip"),
        ("limits-set", A, True, c.limits_set, "limits set [SYMBOL] KEY VALUE"),
    ]:
        srv.register(name, role, mut, fn, help_)
    return srv
