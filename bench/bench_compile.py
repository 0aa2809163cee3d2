"""Kernel compile time from an empty cache: what a fresh machine's `make setup` waits for.

`python -m bot4d.warmup` runs into a throwaway NUMBA_CACHE_DIR, once on one core (the seconds each
module costs on its own, the figure a regression in one module shows in) and once on every core
(what set-up actually waits). Then a warm start: the same warm-up loading everything from that
cache, the floor every `bot4d run` pays before READY. The sequential run is the baseline of the
parallel one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import benchmark, result

ROOT = Path(__file__).resolve().parent.parent


def _warm(cache: Path, jobs: int, only: str | None) -> dict:
    out = cache.parent / f"warm-{jobs}-{time.monotonic_ns()}.json"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bot4d.warmup", "--jobs", str(jobs), "--json", str(out)]
    if only:
        cmd += ["--only", only]
    subprocess.run(cmd, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


@benchmark("setup.compile")
def bench_compile(quick: bool) -> list[dict]:
    jobs = len(os.sched_getaffinity(0))
    # --quick: only what `make run` waits for, and no sequential baseline
    only = "daemon" if quick else None
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        base = None
        if not quick:
            seq = _warm(Path(tmp) / "seq", 1, only)
            base = {"name": "setup.compile.sequential", "unit": "s", "wall_s": round(seq["wall_s"], 1)}
        par = _warm(Path(tmp) / "par", jobs, only)
        warm = _warm(Path(tmp) / "par", jobs, only)
    per_module = {k: round(v, 2) for k, v in sorted((seq if base else par)["modules"].items(),
                                                    key=lambda kv: -kv[1])}
    return [
        result("setup.compile", "s", baseline=base, wall_s=round(par["wall_s"], 1), jobs=jobs,
               group=only or "all", modules_s=per_module,
               note="empty cache; modules_s from the one-core run (the parallel run's when --quick)"),
        result("setup.compile.warm_cache", "s", wall_s=round(warm["wall_s"], 1), jobs=jobs,
               group=only or "all", note="everything loaded from the cache the run above filled"),
    ]
