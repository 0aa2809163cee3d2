"""A Python strategy (bot4d.strategies.pyapi) trading through the real daemon: its intents go
through risk and the OMS on the shard's thread, carry its client-order-id space and protective
stops, and its orders are pulled when the daemon halts. A strategy that raises is paused and its
orders cancelled; the daemon keeps running."""
from __future__ import annotations

import numpy as np

from bot4d.kernels.oms_state import OT_STOP_LIMIT
from bot4d.records import EV_ORDER_NEW
from tests.daemon_harness import Stack, wait_for

PY = """
[instruments.strategy]
kind = "python"
class = "{cls}"
interval_ms = 50
[instruments.strategy.params]
qty = "0.02"
max_position = "0.2"
offset_ticks = 2000
stop_ticks = 500
requote_ticks = 1000
"""


class Boom:
    """Raises on its third call (tests/test_daemon_pystrategy.py)."""

    def __init__(self, params, ctx):
        from bot4d.strategies.py_quoter import Quoter

        self.inner = Quoter(params, ctx)
        self.calls = 0

    def on_tick(self, view, ctx):
        self.calls += 1
        if self.calls >= 30:
            raise RuntimeError("strategy bug")
        return self.inner.on_tick(view, ctx)


def quotes(s: Stack, symbol: str | None = None) -> list[dict]:
    """The strategy's orders at the venue (a protective stop rests for a position on its own)."""
    return [o for o in s.venue_open_orders() if o["type"] != "STOP_LOSS_LIMIT"
            and (symbol is None or o["symbol"] == symbol)]


def test_python_strategy_quotes_through_risk_and_oms(tmp_path):
    s = Stack(tmp_path, strategies={"ETHUSDT": PY.format(cls="bot4d.strategies.py_quoter:Quoter"),
                                    "BTCUSDT": '[instruments.strategy]\nkind = "none"\n'})
    try:
        s.start()
        wait_for(lambda: len(quotes(s, "ETHUSDT")) == 2, 30, "the Python quoter's two orders at the venue")
        j = s.journal()
        new = j[(j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 1) & (j["order_type"] != OT_STOP_LIMIT)]
        assert len(new) >= 2
        # ETHUSDT is instrument 1: its strategy's ids are (1 + 1) << 40 + n; every order has a stop
        assert np.all(new["client_order_id"] >> 40 == 2) and np.all(new["stop_price"] > 0)
        assert not len(j[(j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 0)])  # BTC has none
        s.ok("halt")
        wait_for(lambda: not quotes(s), 30, "the Python strategy to pull its orders on halt")
    finally:
        s.close()


def test_a_python_strategy_that_raises_is_paused_and_its_orders_cancelled(tmp_path):
    s = Stack(tmp_path, strategies={"ETHUSDT": PY.format(cls="tests.test_daemon_pystrategy:Boom"),
                                    "BTCUSDT": '[instruments.strategy]\nkind = "none"\n'})
    try:
        s.start_sim()
        s.start_daemon(env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1])})
        wait_for(lambda: "strategy of ETHUSDT failed; paused" in s.daemon_log.read_text(), 60, "the strategy to fail")
        wait_for(lambda: not quotes(s), 30, "its orders to be cancelled")
        assert s.ok("risk")["0"]["paused"] == ["ETHUSDT"]
        assert s.ok("status")["ready"] is True
    finally:
        s.close()
