"""Run registered benchmarks and write machine-readable results."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from bench.harness import REGISTRY, environment

HERE = Path(__file__).resolve().parent


def discover() -> None:
    for mod in pkgutil.iter_modules([str(HERE)]):
        if mod.name.startswith("bench_"):
            importlib.import_module(f"bench.{mod.name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("names", nargs="*", help="benchmark names or prefixes (default: all)")
    ap.add_argument("--quick", action="store_true", help="a few seconds per benchmark")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    ap.add_argument("--list", action="store_true", help="list benchmarks and exit")
    args = ap.parse_args(argv)

    discover()
    if args.list:
        for name in sorted(REGISTRY):
            print(name)
        return 0
    selected = [
        b for n, b in sorted(REGISTRY.items())
        if not args.names or any(n == p or n.startswith(p + ".") for p in args.names)
    ]
    if not selected:
        print(f"no benchmark matches {args.names}; known: {sorted(REGISTRY)}", file=sys.stderr)
        return 2

    results, failures = [], []
    for b in selected:
        t0 = time.perf_counter()
        print(f"== {b.name}", flush=True)
        try:
            for r in b.fn(args.quick):
                results.append(r)
                figs = {k: r[k] for k in r if k.endswith("_ns") or k == "throughput_per_s"}
                print(f"   {r['name']}: {figs}", flush=True)
        except Exception:  # one broken benchmark must not hide the others' numbers
            failures.append(b.name)
            traceback.print_exc()
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"environment": environment(), "quick": args.quick, "results": results, "failed": failures}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
