"""Compile every numba kernel ahead of time so that no tick pays JIT cost.

Each kernel module listed in KERNEL_MODULES exposes ``warmup() -> None`` which calls its
kernels once on small inputs; with ``cache=True`` this fills numba's on-disk cache at set-up,
and at daemon start it loads them before READY=1.

Modules are compiled by one worker process per core. A module waits for the modules whose kernels
it compiles in (``after``), so it loads them from the cache instead of compiling them a second time
on the other core. ``--only daemon`` skips what ``bot4d run``, its sidecar and the simulator never
call (the backtest): ``make run`` does not wait for it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context


@dataclass(frozen=True)
class KernelModule:
    name: str                       # a module (its warmup()) or module:function
    after: tuple[str, ...] = ()     # modules whose kernels this one compiles in
    groups: frozenset[str] = field(default_factory=lambda: frozenset({"daemon", "backtest"}))


_BACKTEST = frozenset({"backtest"})
_OMS = "bot4d.kernels.oms"   # also warms positions, fees, filters, idempotency
_BOOK = "bot4d.kernels.book"

KERNEL_MODULES: list[KernelModule] = [
    KernelModule(_OMS),
    KernelModule("bot4d.kernels.matching"),
    KernelModule(_BOOK),
    KernelModule("bot4d.kernels.risk"),
    KernelModule("bot4d.kernels.killswitch"),
    KernelModule("bot4d.kernels.breaker"),
    KernelModule("bot4d.kernels.correlation"),
    KernelModule("ipc"),
    KernelModule("bot4d.persist.copykern"),
    KernelModule("bot4d.venues.checksum"),
    KernelModule("bot4d.kernels.book_publish", (_BOOK,)),
    KernelModule("bot4d.venues.binance", (_BOOK,)),
    KernelModule("bot4d.venues.bybit", (_BOOK,)),
    KernelModule("bot4d.venues.kraken_scan", (_BOOK, "bot4d.venues.checksum")),
    KernelModule("bot4d.venues.kraken_v2_scan", (_BOOK, "bot4d.venues.kraken_scan")),
    KernelModule("bot4d.venues.okx_scan", (_BOOK, "bot4d.venues.kraken_scan")),
    KernelModule("bot4d.daemon.account", ("ipc",)),
    KernelModule("bot4d.daemon.shard:warm_rings", ("ipc",)),
    KernelModule("bot4d.strategies.market_maker", (_OMS, _BOOK)),
    KernelModule("bot4d.strategies.imbalance_taker", (_OMS, _BOOK)),
    KernelModule("bot4d.sim.generator", groups=_BACKTEST),
    KernelModule("bot4d.sim.backtest", ("bot4d.kernels.matching", _OMS, "bot4d.kernels.risk",
                                        "bot4d.kernels.killswitch", "bot4d.strategies.market_maker",
                                        "bot4d.sim.generator"), groups=_BACKTEST),
    # the shard loop, with the daemon's own array types: everything the daemon runs is compiled in
    KernelModule("bot4d.daemon.warm", (_OMS, _BOOK, "bot4d.kernels.risk", "bot4d.kernels.killswitch",
                                       "bot4d.kernels.breaker", "bot4d.kernels.correlation", "ipc",
                                       "bot4d.daemon.shard:warm_rings",
                                       "bot4d.venues.binance", "bot4d.daemon.account",
                                       "bot4d.strategies.market_maker", "bot4d.strategies.imbalance_taker")),
]


def _warm_one(name: str) -> tuple[str, float]:
    """``module`` (its ``warmup()``) or ``module:function``."""
    t = time.perf_counter()
    mod, _, fn = name.partition(":")
    getattr(importlib.import_module(mod), fn or "warmup")()
    return name, time.perf_counter() - t


def warm_all(verbose: bool = False, only: str | None = None, jobs: int | None = None) -> dict[str, float]:
    """Compile (or load from the cache) every kernel module of group ``only`` (all if None) on
    ``jobs`` processes (one per usable core by default). Returns the seconds each module took."""
    todo = [m for m in KERNEL_MODULES if only is None or only in m.groups]
    names = {m.name for m in todo}
    jobs = jobs or max(1, len(os.sched_getaffinity(0)))
    took: dict[str, float] = {}
    if jobs == 1:
        for m in todo:
            took.update([_warm_one(m.name)])
            if verbose:
                print(f"warmed {m.name} in {took[m.name]:.2f} s", flush=True)
        return took
    # spawn: a worker must not inherit a half-initialised LLVM from a parent that compiled
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        running: dict[Future, str] = {}
        pending = list(todo)
        while pending or running:
            for m in list(pending):
                if len(running) >= jobs:
                    break
                if all(d in took or d not in names for d in m.after):
                    pending.remove(m)
                    running[pool.submit(_warm_one, m.name)] = m.name
            if not running:
                raise RuntimeError(f"warm-up order cannot be met: {[m.name for m in pending]}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                del running[f]
                name, s = f.result()
                took[name] = s
                if verbose:
                    print(f"warmed {name} in {s:.2f} s", flush=True)
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d warmup", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["daemon", "backtest"], help="only the kernels this group runs")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    ap.add_argument("--json", metavar="FILE", help="write the seconds per module to FILE")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    took = warm_all(verbose=True, only=args.only, jobs=args.jobs)
    wall = time.perf_counter() - t0
    print(f"kernels warm ({len(took)} modules, {wall:.1f} s wall, {sum(took.values()):.1f} s compiling)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"wall_s": wall, "modules": took}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
