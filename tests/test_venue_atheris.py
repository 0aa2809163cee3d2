"""Every venue parser under atheris (coverage-guided libFuzzer), bounded: no crash, no runaway memory.

Each venue runs in its own process (libFuzzer exits the process when done); hypothesis fuzzing of
the same parsers lives in each venue's own test module.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("atheris_venues.py")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris does not install on this platform")


@pytest.mark.parametrize("venue", ["binance", "binance_futures", "bybit", "kraken", "okx", "coinbase"])
def test_venue_parser_survives_coverage_guided_fuzzing(venue):
    r = subprocess.run([sys.executable, str(HARNESS), venue, "-runs=2000", "-max_total_time=30", "-seed=1"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Done 2000 runs" in out or "DONE" in out, out[-2000:]
