"""Benchmark harness: ``python -m bench [NAME ...] [--quick] [--out FILE]``.

Each module in ``bench/`` registers benchmarks with :func:`bench.harness.benchmark`. A benchmark
is a function ``fn(quick: bool) -> list[dict]`` returning result dicts built with
:func:`bench.harness.result`. Results go to ``bench/results/latest.json``.
"""
