"""Real processes for end-to-end tests: the simulated venue, the daemon, optionally PostgreSQL and
the sidecar, each on loopback / its own temp dir, and helpers to drive and inspect them."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bot4d.control import call
from bot4d.paperkeys import ensure
from bot4d.records import JOURNAL_EVENT_DTYPE
from ipc.ring import Ring

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
DAEMON_START_S = 600   # a give-up bound only: a cold numba cache compiles for minutes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], timeout: float, what: str, procs: list[subprocess.Popen] = ()) -> Any:
    t_end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < t_end:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a process exited ({p.args[:4]}, status {p.returncode}) while waiting for {what}")
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # not there yet
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


# the market maker's table as text, for tests that still write their own ({qty}, {inv}, {hs}); it
# renders what market_maker(qty, inv, hs) gives config_toml
STRATEGY = """
[instruments.strategy]
kind = "market_maker"
quote_qty = "{qty}"
max_inventory = "{inv}"
half_spread_ticks = {hs}
skew_ticks_per_lot = 5
stop_ticks = 2000
requote_ticks = 5
min_requote_ms = 200
"""


class Raw(str):
    """TOML text that config_toml puts into its table as it is, after the table's own keys."""


def market_maker(qty: str, inv: str, hs: int = 2000, **params: Any) -> dict[str, Any]:
    """An [instruments.strategy] table of the market maker: Stack's defaults, ``params`` on top."""
    return {"kind": "market_maker", "quote_qty": qty, "max_inventory": inv, "half_spread_ticks": hs,
            "skew_ticks_per_lot": 5, "stop_ticks": 2000, "requote_ticks": 5, "min_requote_ms": 200, **params}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, tables key by key; a value None removes the key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return {k: v for k, v in out.items() if v is not None}


def config_doc(tmp: Path, instance: str, rest_port: int, ws_port: int, key_file: Path | str,
               secret_file: Path | str, over: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one builder of the daemon configurations tests start: a paper daemon on one shard (the
    last core), trading BTCUSDT and ETHUSDT on the simulated venue at 127.0.0.1, each with the
    market maker; ``over`` merged in (:func:`merge`). ``instruments`` is keyed by symbol, so an
    override names the instrument it changes (``{"instruments": {"ETHUSDT": {"shard": 1}}}``);
    :func:`config_toml` renders it."""
    inst = {}
    for sym, qty, inv, neutral in (("BTCUSDT", "0.001", "0.01", "10"), ("ETHUSDT", "0.02", "0.2", "100")):
        inst[sym] = {"venue": "binance", "symbol": sym, "shard": 0, "max_position": Decimal10(inv),
                     "max_notional": "5000", "max_open_orders": 8, "band_bps": 500, "neutral_base": neutral,
                     "strategy": market_maker(qty, inv)}
    doc = {
        "instance": instance, "paper": True,
        "daemon": {"shard_cores": [max(os.sched_getaffinity(0))], "on_stop": "cancel", "runtime_dir": str(tmp),
                   "state_dir": f"{tmp}/state"},
        "persist": {"enabled": True, "journal_capacity": 65536},
        "risk": {"max_daily_loss": "5000", "first_start_state": "active"},
        "venues": {"binance": {"kind": "binance", "rest_url": f"http://127.0.0.1:{rest_port}",
                               "ws_url": f"ws://127.0.0.1:{ws_port}", "api_key_file": str(key_file),
                               "api_secret_file": str(secret_file), "orders_per_second": 40,
                               "weight_budget_per_min": 3000}},
        "instruments": inst,
    }
    return merge(doc, over or {})


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        raise TypeError(f"{v!r}: the daemon refuses TOML floats; give a string")
    return json.dumps(str(v))   # strings, Decimals, paths: a TOML basic string


def _toml_table(path: str, d: dict[str, Any], array: bool = False) -> list[str]:
    keys = [f"{k} = {_toml_value(v)}" for k, v in d.items()
            if not isinstance(v, (dict, Raw)) and not (isinstance(v, list) and v and isinstance(v[0], dict))]
    raw = [v.strip("\n") for v in d.values() if isinstance(v, Raw)]
    out = ([f"[[{path}]]" if array else f"[{path}]"] if path and (keys or raw or array) else []) + keys + raw
    for k, v in d.items():
        sub = f"{path}.{k}" if path else k
        if isinstance(v, dict):
            out += _toml_table(sub, v)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out += _toml_table(sub, item, array=True)
    return out


def config_toml(doc: dict[str, Any]) -> str:
    """:func:`config_doc`'s dict as the TOML file the daemon reads (instruments in their order)."""
    if isinstance(doc.get("instruments"), dict):
        doc = {**doc, "instruments": list(doc["instruments"].values())}
    return "\n".join(_toml_table("", doc)) + "\n"


class Stack:
    """sim + daemon (+ PostgreSQL + sidecar). ``start()``; ``close()`` always."""

    def __init__(self, tmp: Path, *, name: str = "e2e", half_spread_ticks: int = 2000, orders_per_second: int = 40,
                 extra_risk: str = "", on_stop: str = "cancel", weight_budget: int = 3000,
                 sim_weight_limit: int | None = None, taker_account: bool = False,
                 strategies: dict[str, str | dict] | None = None, sim_args: list[str] = (),
                 config: dict[str, Any] | None = None) -> None:
        """``strategies``: symbol -> an [instruments.strategy] table replacing the market maker (TOML
        text, or a dict as :func:`market_maker` gives); ``sim_args``: more `bot4d sim` options
        (symbols, balances, fees); ``config``: merged last into :func:`config_doc`'s configuration."""
        self.tmp = tmp
        self.instance = f"{name}{os.getpid()}x{int(time.time() * 1000) % 100000}"
        self.rest_port, self.ws_port = free_port(), free_port()
        self.key_f, self.sec_f = ensure(tmp)
        self.key = self.key_f.read_text().strip()
        self.secret = self.sec_f.read_text().strip()
        acct = tmp / "sim-account"
        acct.write_text(f"{self.key} {self.secret}\n")
        self.acct_file = acct
        self.sim_weight_limit = sim_weight_limit
        self.sim_args = list(sim_args)
        # a second venue account (not the daemon's) to trade against the daemon's quotes
        self.taker: tuple[str, str] | None = None
        self.taker2: tuple[str, str] | None = None   # a third party (two takers can trade together)
        if taker_account:
            self.taker = (secrets.token_hex(32), secrets.token_hex(32))
            (tmp / "sim-taker").write_text(" ".join(self.taker) + "\n")
            self.taker2 = (secrets.token_hex(32), secrets.token_hex(32))
            (tmp / "sim-taker2").write_text(" ".join(self.taker2) + "\n")
        over: dict[str, Any] = {
            "daemon": {"on_stop": on_stop}, "risk": {"extra": Raw(extra_risk)},
            "venues": {"binance": {"orders_per_second": orders_per_second, "weight_budget_per_min": weight_budget}},
            "instruments": {sym: {"strategy": {"half_spread_ticks": half_spread_ticks}} for sym in ("BTCUSDT", "ETHUSDT")}}
        self.config = tmp / "bot4d.toml"
        self.doc = config_doc(tmp, self.instance, self.rest_port, self.ws_port, self.key_f, self.sec_f, over)
        for sym, st in (strategies or {}).items():   # a strategy replaces the market maker's table
            self.doc["instruments"][sym]["strategy"] = Raw(st) if isinstance(st, str) else st
        self.write_config(config)
        self.sock = str(tmp / "control.sock")
        self.sim: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = tmp / "bot4d.log"
        self.sim_log = tmp / "sim.log"
        self.extra: list[subprocess.Popen] = []

    def write_config(self, over: dict[str, Any] | None = None) -> None:
        """Merge ``over`` into the configuration and write it (a restart or SIGHUP reads it)."""
        self.doc = merge(self.doc, over or {})
        self.config.write_text(config_toml(self.doc))

    # --- processes ----------------------------------------------------------------------------------
    def start_sim(self) -> None:
        self.sim = subprocess.Popen([PY, "-m", "bot4d.cli", "sim", "--rest-port", str(self.rest_port), "--ws-port",
                                     str(self.ws_port), "--account", str(self.acct_file),
                                     *(["--account", str(self.tmp / "sim-taker"), "--account",
                                        str(self.tmp / "sim-taker2")] if self.taker else []),
                                     *(["--weight-limit", str(self.sim_weight_limit)]
                                       if self.sim_weight_limit is not None else []), *self.sim_args],
                                    stdout=open(self.sim_log, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self.rest("GET", "/api/v3/ping")[0] == 200, 30, "the simulated venue", [self.sim])

    def start_daemon(self, env: dict[str, str] | None = None, wait_ready: bool = True) -> subprocess.Popen:
        e = os.environ.copy()
        e.update(env or {})
        self.daemon = subprocess.Popen([PY, "-m", "bot4d.cli", "run", "--config", str(self.config)],
                                       stdout=open(self.daemon_log, "ab"), stderr=subprocess.STDOUT, env=e)
        if wait_ready:
            self.wait_ready()
        return self.daemon

    def wait_ready(self) -> None:
        wait_for(lambda: call(self.sock, "status", timeout=2)["result"]["ready"], DAEMON_START_S,
                 "the daemon to be ready", [self.daemon])

    def start_exporter(self) -> str:
        """bot4d-exporter attached to this instance on a free loopback port (stopped by close());
        returns and keeps its metrics URL."""
        port = free_port()
        self.extra.append(subprocess.Popen([str(Path(PY).parent / "bot4d-exporter"), "--instance", self.instance,
                                            "--listen", f"127.0.0.1:{port}"],
                                           stdout=open(self.tmp / "exporter.log", "ab"), stderr=subprocess.STDOUT))
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return self.metrics_url

    def start(self) -> "Stack":
        self.start_sim()
        self.start_daemon()
        return self

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        p = self.daemon
        assert p is not None
        if p.poll() is None:
            p.send_signal(sig)
        return p.wait(timeout)

    def close(self) -> None:
        for p in [self.daemon, *self.extra, self.sim]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        for f in Path("/dev/shm").glob(f"bot4d.{self.instance}.*"):
            f.unlink(missing_ok=True)

    # --- talking to them ----------------------------------------------------------------------------
    def ctl(self, cmd: str, **args: Any) -> dict[str, Any]:
        return call(self.sock, cmd, {k: str(v) for k, v in args.items()}, timeout=10)

    def ok(self, cmd: str, **args: Any) -> Any:
        r = self.ctl(cmd, **args)
        assert r["ok"], r
        return r["result"]

    def rest(self, method: str, path: str, params: dict[str, Any] | None = None, signed: bool = False,
             account: tuple[str, str] | None = None) -> tuple[int, Any]:
        """Venue REST; signed with the daemon's key, or with ``account`` = (key, secret)."""
        q = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        headers = {}
        key, secret = account or (self.key, self.secret)
        if signed:
            q = (q + "&" if q else "") + f"timestamp={int(time.time() * 1000)}"
            sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
            q += f"&signature={sig}"
            headers["X-MBX-APIKEY"] = key
        url = f"http://127.0.0.1:{self.rest_port}{path}" + (f"?{q}" if q else "")
        req = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def fault(self, kind: str, count: int = 1, **kw: Any) -> None:
        params = {"kind": kind, "count": count, **kw}
        st, body = self.rest("POST", "/sim/fault", params)
        assert st == 200, (st, body)

    def sim_stats(self) -> dict[str, Any]:
        """The simulator's answers per HTTP status, weight per client, bans (GET /sim/stats)."""
        st, body = self.rest("GET", "/sim/stats")
        assert st == 200, body
        return body

    def venue_open_orders(self) -> list[dict]:
        st, body = self.rest("GET", "/api/v3/openOrders", signed=True)
        assert st == 200, body
        return body

    def journal(self, shard: int = 0) -> np.ndarray:
        r = Ring.attach(self.instance, f"journal-{shard}", readonly=True)
        try:
            out = []
            rd = r.reader(0)
            while True:
                ev = rd.read(1 << 15)
                if len(ev) == 0:
                    break
                out.append(ev)
            return np.concatenate(out) if out else np.zeros(0, JOURNAL_EVENT_DTYPE)
        finally:
            r.close()

    def counters(self) -> dict[str, int]:
        return self.ok("shards")["0"]["counters"]

    def log_text(self) -> str:
        return self.daemon_log.read_text(errors="replace") + self.sim_log.read_text(errors="replace")


def Decimal10(inv: str) -> str:
    """Instrument position limit: ten times the strategy's inventory cap."""
    from decimal import Decimal

    return str(Decimal(inv) * 10)


def run_async(coro):
    return asyncio.new_event_loop().run_until_complete(coro)
