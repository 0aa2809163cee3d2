"""``bot4d run-paper`` (``make run``): everything paper trading needs, on this machine.

Starts, in order: a local PostgreSQL (``bot4d.pgserver``: initdb on first use, Unix socket only,
data under ``.run/pg``) with the schema migrated; the simulated Binance venue (``bot4d sim``) with
a paper account whose key pair lives in ``.run`` (``bot4d.paperkeys``); the daemon with
``config/paper.toml`` (market maker on BTCUSDT and ETHUSDT); and, once the daemon is ready, the
persistence sidecar. Then it prints how to watch, and waits. Ctrl-C (or ``--duration``) stops
everything in reverse order: the daemon first (it cancels its orders and drains its journal), then
the sidecar once it has persisted the journal, the venue, PostgreSQL.

The children die with run-paper, however it dies: each is started with ``PR_SET_PDEATHSIG`` =
SIGKILL (``prctl`` in the child before it runs anything), so a killed run-paper leaves no venue on
its ports and no sidecar holding the journal's gating slot. (The daemon is built to survive SIGKILL:
its risk state is saved in ``state_dir`` and the next start reconciles its orders; PostgreSQL is a
server ``pg_ctl`` detaches, not a child: it keeps running and the next run-paper uses it.) A child
that exits early stops the run loudly: run-paper names it, its exit status and its log, stops the
others and exits 1.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _die_with_parent() -> Any:
    """A ``preexec_fn``: the child gets SIGKILL when this process dies (PR_SET_PDEATHSIG).

    prctl is looked up here, in the parent: the child between fork and exec should only call it."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def pre() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:   # the parent died before prctl: no signal would come
            os._exit(126)
    return pre


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self.fh = open(log, "ab")
        # own session: a terminal's Ctrl-C reaches only run-paper, which stops the children in order
        self.p = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                                  start_new_session=True, preexec_fn=_die_with_parent())

    def alive(self) -> bool:
        return self.p.poll() is None

    def exit_text(self) -> str:
        """'<name> (pid N) exited with status S' / 'was killed by SIGKILL', and where its log is."""
        rc = self.p.returncode
        if rc is not None and rc < 0:
            try:
                how = f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"was killed by signal {-rc}"
        else:
            how = f"exited with status {rc}"
        return f"{self.name} (pid {self.p.pid}) {how}; see {self.log}"

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} did not stop in {timeout:.0f} s; killing it", flush=True)
                self.p.kill()
                self.p.wait(5)
        self.fh.close()
        return self.p.returncode


def _wait(pred, timeout: float, what: str, procs: list[Proc]) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.exit_text()} while waiting for {what}")
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d run-paper", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.toml")
    ap.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    ap.add_argument("--no-persist", action="store_true", help="run without PostgreSQL and the sidecar")
    args = ap.parse_args(argv)

    from bot4d.config import ConfigError, load
    from bot4d.control import call
    from bot4d.paperkeys import ensure

    run = args.run_dir
    run.mkdir(parents=True, exist_ok=True)
    key_f, sec_f = ensure(run)
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"bot4d run-paper: {e}", file=sys.stderr)
        return 2
    if not cfg.paper:
        print("bot4d run-paper: the configuration is not a paper one (paper = false)", file=sys.stderr)
        return 2
    v = next(iter(cfg.venues.values()))
    acct = run / "sim-account"
    acct.write_text(f"{key_f.read_text().strip()} {sec_f.read_text().strip()}\n")
    os.chmod(acct, 0o600)
    py = sys.executable
    procs: list[Proc] = []
    pg: Any = None
    dsn = None
    stop = {"now": False}

    def on_sig(signum, frame):  # noqa: ARG001
        stop["now"] = True
    signal.signal(signal.SIGINT, on_sig)
    signal.signal(signal.SIGTERM, on_sig)
    try:
        persist = cfg.persist.enabled and not args.no_persist
        if persist:
            from bot4d.pgserver import PgServer

            print("starting PostgreSQL (first start runs initdb) ...", flush=True)
            if os.geteuid() == 0:
                # PostgreSQL runs as its own user (initdb refuses root): it must be able to pass
                # through the run directory (not list it; the key files stay 0600)
                os.chmod(run, 0o711)
            pg = PgServer(run / "pg")
            pg.start()
            try:
                dsn = pg.create_database("bot4d")
            except Exception:
                dsn = pg.conninfo("bot4d")
            r = subprocess.run([py, "-m", "bot4d.persist.main", "migrate", "--dsn", dsn], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"schema migration failed: {r.stderr.strip() or r.stdout.strip()}")
        rest_port = int(v.rest_url.rsplit(":", 1)[1].split("/")[0])
        ws_port = int(v.ws_url.rsplit(":", 1)[1].split("/")[0])
        print(f"starting the simulated Binance venue on ports {rest_port}/{ws_port} ...", flush=True)
        sim = Proc("sim", [py, "-m", "bot4d.cli", "sim", "--rest-port", str(rest_port), "--ws-port", str(ws_port),
                           "--account", str(acct)], run / "sim.log")
        procs.append(sim)
        from bot4d.feed.http import http_get
        import asyncio

        _wait(lambda: asyncio.run(http_get(f"{v.rest_url}/api/v3/ping", timeout_s=1))[0] == 200, 30, "the venue", procs)
        print("starting the daemon (loads its kernels, connects, reconciles) ...", flush=True)
        daemon = Proc("bot4d", [py, "-m", "bot4d.cli", "run", "--config", str(args.config)], run / "bot4d.log")
        procs.append(daemon)
        sock = str(cfg.control.socket)
        _wait(lambda: call(sock, "status", timeout=2)["result"]["ready"], 600, "the daemon to be ready", procs)
        if persist:
            shards = ",".join(str(s) for s in range(len(cfg.shard_cores)))
            procs.append(Proc("bot4d-persist", [py, "-m", "bot4d.persist.main", "run", "--dsn", dsn, "--instance",
                                                cfg.instance, "--shards", shards], run / "persist.log"))
        ctl = f"{Path(py).parent / 'bot4ctl'} --socket={sock}"
        print(f"""
bot4d is paper trading {', '.join(i.symbol for i in cfg.instruments)} against the simulated venue.
  {ctl} status
  {ctl} books BTCUSDT
  {ctl} orders
  {ctl} pnl
  {Path(py).parent / 'bot4ctl'} top --instance {cfg.instance}
logs: {run}/bot4d.log, {run}/sim.log{', ' + str(run / 'persist.log') if persist else ''}
{'PostgreSQL: psql "' + dsn + '"' if dsn else ''}
Ctrl-C stops everything.""", flush=True)
        t_end = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop["now"] and (t_end is None or time.monotonic() < t_end):
            dead = [p for p in procs if not p.alive()]
            if dead:
                print(f"bot4d run-paper: {dead[0].exit_text()}: stopping everything", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
        return 0
    except RuntimeError as e:
        print(f"bot4d run-paper: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping ...", flush=True)
        # the daemon first: on SIGTERM it waits (persist.shutdown_wait_s) until the sidecar has
        # persisted its journal, so the sidecar stops after it, the venue last
        order = {"bot4d": 0, "bot4d-persist": 1}
        for p in sorted(procs, key=lambda p: order.get(p.name, 2)):
            rc = p.stop()
            print(f"  {p.name} stopped (status {rc})", flush=True)
        if pg is not None:
            pg.stop()
            print("  PostgreSQL stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
