"""Compile every numba kernel ahead of time so that no tick pays JIT cost.

Each kernel module listed in KERNEL_MODULES exposes ``warmup() -> None`` which calls its
kernels once on small inputs; with ``cache=True`` this fills numba's on-disk cache at set-up,
and at daemon start it loads them before READY=1.
"""
from __future__ import annotations

import importlib
import sys
import time

KERNEL_MODULES: list[str] = [
    "bot4d.kernels.matching",
    "bot4d.kernels.oms",   # also warms positions, fees, filters, idempotency
    "bot4d.sim.generator",
    "bot4d.sim.backtest",
    "bot4d.strategies.market_maker",
    "bot4d.strategies.imbalance_taker",
    "bot4d.kernels.book",
    "bot4d.kernels.book_publish",
    "bot4d.venues.checksum",
    "bot4d.venues.kraken_scan",
    "bot4d.venues.kraken_v2_scan",
    "bot4d.venues.okx_scan",
    "bot4d.venues.binance",
    "bot4d.venues.bybit",
    "bot4d.kernels.killswitch",
    "bot4d.kernels.breaker",
    "bot4d.kernels.correlation",
    "bot4d.kernels.risk",
    "bot4d.daemon.account",
    "ipc",
    "bot4d.persist.copykern",
    "bot4d.daemon.warm",   # the shard loop, with the daemon's own array types
]


def warm_all(verbose: bool = False) -> float:
    t0 = time.perf_counter()
    for name in KERNEL_MODULES:
        t = time.perf_counter()
        importlib.import_module(name).warmup()
        if verbose:
            print(f"warmed {name} in {time.perf_counter() - t:.2f} s", flush=True)
    return time.perf_counter() - t0


def main() -> int:
    took = warm_all(verbose=True)
    print(f"kernels warm ({len(KERNEL_MODULES)} modules, {took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
