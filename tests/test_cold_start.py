"""Cold start (issue 17): after set-up, a daemon start loads every kernel it runs from numba's cache
and compiles nothing, whatever the configuration's shape; `bot4ctl status` says so."""
from __future__ import annotations

import pytest

from tests.daemon_harness import Stack


@pytest.mark.parametrize("symbols", [("BTCUSDT",), ("BTCUSDT", "ETHUSDT")], ids=["one", "two"])
def test_a_daemon_start_after_setup_compiles_nothing(tmp_path, symbols):
    """A one-instrument daemon and a two-instrument one: a column view of a structured array is
    contiguous for one row and strided for two, and numba compiles a kernel again for each layout
    (this once cost a real two-instrument start 75 s of compiling after set-up had warmed one)."""
    # the simulated account holds ETH too: without ETHUSDT it is left out of equity
    one = {"instruments": {"ETHUSDT": None}, "venues": {"binance": {"ignore_assets": ["ETH"]}}}
    s = Stack(tmp_path, name="cold", config=one if len(symbols) == 1 else None)
    try:
        s.start()
        st = s.ok("status")
        assert st["books_live"].endswith(f"/{len(symbols)}"), st
        assert st["kernels"]["compiled_at_start"] == 0, (st["kernels"], s.log_text()[-3000:])
        assert "all from the cache" in s.log_text()
    finally:
        s.close()
