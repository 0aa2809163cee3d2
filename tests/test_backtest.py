"""Backtest: deterministic, consistent with its own fills, and its chart is a real picture."""
from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from bot4d.records import EV_FILL, EV_ORDER_NEW, EV_POSITION, EV_RISK_REJECT, SIDE_BID
from bot4d.sim import backtest as bt


@pytest.fixture(scope="module")
def result():
    return bt.run(bt.BacktestConfig(seed=3, steps=400))


def test_same_input_and_seed_give_byte_identical_event_logs(result):
    again = bt.run(bt.BacktestConfig(seed=3, steps=400))
    assert again.journal.tobytes() == result.journal.tobytes()
    assert {k: v for k, v in again.report.items() if k not in ("seconds", "events_per_s")} == \
           {k: v for k, v in result.report.items() if k not in ("seconds", "events_per_s")}
    other = bt.run(bt.BacktestConfig(seed=4, steps=400))
    assert other.journal.tobytes() != result.journal.tobytes()


def test_the_strategy_really_traded_through_risk_and_oms(result):
    j = result.journal
    assert (j["kind"] == EV_ORDER_NEW).sum() > 20
    assert (j["kind"] == EV_FILL).sum() > 10
    assert result.report["fills"] == int((j["kind"] == EV_FILL).sum())
    # the journal sequence is gap-free across OMS events and risk rejects
    assert np.array_equal(j["seq"], np.arange(1, j.size + 1))


def test_cash_and_position_rederived_from_fills(result):
    cfg = bt.BacktestConfig()
    ps, qs = 2, 5
    j = result.journal
    fills = j[j["kind"] == EV_FILL]
    cash = Decimal(cfg.cash)
    pos = Decimal(0)
    for f in fills:
        px = Decimal(int(f["price"])).scaleb(-ps)
        q = Decimal(int(f["qty"])).scaleb(-qs)
        fee = Decimal(int(f["fee"])).scaleb(-(ps + qs))
        sign = 1 if f["side"] == SIDE_BID else -1
        cash -= sign * px * q + fee
        pos += sign * q
    last = j[j["kind"] == EV_POSITION][-1]
    assert Decimal(int(last["qty"])).scaleb(-qs) == pos == Decimal(result.report["position"])
    assert Decimal(int(last["aux2"])).scaleb(-(ps + qs)) == cash  # the OMS's cash balance, exactly
    fees = sum(Decimal(int(f["fee"])).scaleb(-(ps + qs)) for f in fills)
    assert Decimal(result.report["fees"]) == fees


def test_max_drawdown_matches_the_equity_curve(result):
    ev = [Decimal(int(v)) for v in result.equity_v]
    peak, worst = ev[0], Decimal(0)
    for v in ev:
        peak = max(peak, v)
        worst = max(worst, (peak - v) / peak * 100)
    assert Decimal(result.report["max_drawdown_pct"]) == worst.quantize(Decimal("0.000001"))
    assert worst > 0  # a market maker over 40 s of GARCH flow does lose something at some point


def test_risk_limits_held(result):
    pos = result.journal[result.journal["kind"] == EV_POSITION]["qty"]
    assert np.abs(pos).max() <= 5000  # 0.05 BTC in 1e-5 units, the strategy's own cap
    rejects = result.journal[result.journal["kind"] == EV_RISK_REJECT]
    assert set(result.report["risk_rejects"]) <= {"REJ_MAX_POSITION", "REJ_RATE", "REJ_MAX_OPEN_ORDERS"}
    assert sum(result.report["risk_rejects"].values()) == rejects.size


def test_cli_writes_report_events_and_a_real_chart(tmp_path):
    assert bt.main(["--seed", "2", "--steps", "200", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    for key in ("pnl", "max_drawdown_pct", "fills", "fees", "turnover", "risk_rejects"):
        assert key in rep
    raw = (tmp_path / "events.bin").read_bytes()
    assert len(raw) == rep["journal_events"] * 128
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "chart.png")
    assert img.shape[0] >= 400 and img.shape[1] >= 800
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # lines, fills, axes and text, not a blank canvas
    blue = ((img[..., 2] > 0.6) & (img[..., 0] < 0.3)).sum()
    assert blue > 200  # the equity line is drawn


def test_cli_refuses_bad_input(tmp_path, capsys):
    assert bt.main(["--steps", "0", "--out", str(tmp_path)]) == 2
    bad = tmp_path / "p.json"
    bad.write_text('{"params": {"omega": -1}}')
    assert bt.main(["--params", str(bad), "--out", str(tmp_path)]) == 2
    assert "cannot use" in capsys.readouterr().err


def test_backtest_replays_a_recorded_session(tmp_path):
    from tests.conftest import RECORDED

    rec = (str(RECORDED / "BINANCE.ws.1.0"), str(RECORDED / "BINANCE.http.0.0"), "NKNUSDT")
    cfg = bt.BacktestConfig(replay=rec, quote_qty="100", max_inventory="1000", half_spread_ticks=2,
                            stop_ticks=200)
    a, b = bt.run(cfg), bt.run(cfg)
    assert a.events > 1000 and a.report["orders_sent"] > 10
    assert a.journal.tobytes() == b.journal.tobytes()  # replay is deterministic too
    bad = replace(cfg, replay=(rec[0], rec[1], "NOPE"))
    assert bt.main(["--replay", rec[0], rec[1], "NOPE", "--out", str(tmp_path)]) == 2
    with pytest.raises(ValueError):
        bt.run(bad)
