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


class Stack:
    """sim + daemon (+ PostgreSQL + sidecar). ``start()``; ``close()`` always."""

    def __init__(self, tmp: Path, *, name: str = "e2e", half_spread_ticks: int = 2000, orders_per_second: int = 40,
                 extra_risk: str = "", on_stop: str = "cancel", weight_budget: int = 3000,
                 sim_weight_limit: int | None = None, taker_account: bool = False,
                 strategies: dict[str, str] | None = None, sim_args: list[str] = ()) -> None:
        """``strategies``: symbol -> an [instruments.strategy] TOML table replacing the market maker;
        ``sim_args``: more `bot4d sim` options (symbols, balances, fees)."""
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
        cores = sorted(os.sched_getaffinity(0))
        shard_core = cores[-1]
        self.config = tmp / "bot4d.toml"
        inst = ""
        for sym, qty, inv, neutral in (("BTCUSDT", "0.001", "0.01", "10"), ("ETHUSDT", "0.02", "0.2", "100")):
            inst += f"""
[[instruments]]
venue = "binance"
symbol = "{sym}"
shard = 0
max_position = "{Decimal10(inv)}"
max_notional = "5000"
max_open_orders = 8
band_bps = 500
neutral_base = "{neutral}"
""" + ((strategies or {}).get(sym) or STRATEGY.format(qty=qty, inv=inv, hs=half_spread_ticks))
        self.config.write_text(f"""
instance = "{self.instance}"
paper = true
[daemon]
shard_cores = [{shard_core}]
on_stop = "{on_stop}"
runtime_dir = "{tmp}"
state_dir = "{tmp}/state"
[persist]
enabled = true
journal_capacity = 65536
[risk]
max_daily_loss = "5000"
first_start_state = "active"
{extra_risk}
[venues.binance]
kind = "binance"
rest_url = "http://127.0.0.1:{self.rest_port}"
ws_url = "ws://127.0.0.1:{self.ws_port}"
api_key_file = "{self.key_f}"
api_secret_file = "{self.sec_f}"
orders_per_second = {orders_per_second}
weight_budget_per_min = {weight_budget}
""" + inst)
        self.sock = str(tmp / "control.sock")
        self.sim: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = tmp / "bot4d.log"
        self.sim_log = tmp / "sim.log"
        self.extra: list[subprocess.Popen] = []

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
