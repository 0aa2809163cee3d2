"""Registry, latency summaries and the JSON result format shared by all benchmarks."""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

BenchFn = Callable[[bool], list[dict[str, Any]]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    fn: BenchFn
    module: str


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn`` under ``name`` (dotted, e.g. ``ipc.queue``)."""

    def wrap(fn: BenchFn) -> BenchFn:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = Benchmark(name, fn, fn.__module__)
        return fn

    return wrap


def latency_summary(samples_ns: np.ndarray) -> dict[str, int]:
    """p50/p99/p99.9/max of raw nanosecond samples (exact order statistics)."""
    s = np.asarray(samples_ns, dtype=np.int64)
    if s.size == 0:
        return {"p50_ns": 0, "p99_ns": 0, "p999_ns": 0, "max_ns": 0}
    q = np.percentile(s, [50, 99, 99.9], method="higher")
    return {"p50_ns": int(q[0]), "p99_ns": int(q[1]), "p999_ns": int(q[2]), "max_ns": int(s.max())}


def result(
    name: str,
    unit: str,
    *,
    throughput_per_s: float | None = None,
    latency_ns: np.ndarray | dict[str, int] | None = None,
    baseline: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One result record. ``latency_ns`` is raw samples or an already computed summary."""
    r: dict[str, Any] = {"name": name, "unit": unit}
    if throughput_per_s is not None:
        r["throughput_per_s"] = float(throughput_per_s)
    if latency_ns is not None:
        r.update(latency_ns if isinstance(latency_ns, dict) else latency_summary(latency_ns))
    r["baseline"] = baseline
    r.update(extra)
    return r


def baseline_of(res: dict[str, Any]) -> dict[str, Any]:
    """The figures of a result, to attach as another result's ``baseline``."""
    keep = ("name", "unit", "throughput_per_s", "p50_ns", "p99_ns", "p999_ns", "max_ns")
    return {k: res[k] for k in keep if k in res}


def environment() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time_unix": time.time(),
    }
