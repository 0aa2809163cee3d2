"""The ``bot4d`` command: daemon entry point and its subcommands."""
from __future__ import annotations

import argparse
import sys

from bot4d import __version__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d", description="low-latency crypto trading engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version", help="print the version")
    sub.add_parser("warmup", help="compile the numba kernels into the cache", add_help=False)
    sub.add_parser("run", help="run the trading daemon: run --config FILE", add_help=False)
    sub.add_parser("run-paper", help="paper trading against the built-in simulated venue", add_help=False)
    sub.add_parser("calibrate", help="fit the market generator to a trade file", add_help=False)
    sub.add_parser("sim", help="run the simulated Binance venue on loopback", add_help=False)
    sub.add_parser("backtest", help="replay a market through the daemon's kernels", add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["calibrate"]:  # these subcommands own their options
        from bot4d.sim.calibrate import main as calibrate

        return calibrate(argv[1:])
    if argv[:1] == ["backtest"]:
        from bot4d.sim.backtest import main as backtest

        return backtest(argv[1:])
    if argv[:1] == ["run"]:
        from bot4d.daemon.app import main as run

        return run(argv[1:])
    if argv[:1] == ["run-paper"]:
        from bot4d.daemon.paper import main as paper

        return paper(argv[1:])
    if argv[:1] == ["warmup"]:
        from bot4d.warmup import main as warm

        return warm(argv[1:])
    if argv[:1] == ["sim"]:
        from bot4d.sim.binance_server import main as sim

        return sim(argv[1:])
    args = ap.parse_args(argv)

    if args.cmd == "version":
        print(f"bot4d {__version__}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
