"""Set-up warm-up of the daemon's shard kernels (``bot4d.warmup``): a one-instrument daemon is
built through the daemon's own code path (same array types, so the same numba specialisations)
in a throwaway instance, its shard warmed, and everything removed again."""
from __future__ import annotations

import os
import tempfile
from decimal import Decimal
from pathlib import Path

PAPER_RULES = {"tickSize": Decimal("0.01"), "stepSize": Decimal("0.00001"), "minQty": Decimal("0.00001"),
               "minNotional": Decimal("5"), "base": "BTC", "quote": "USDT", "price_scale": 2, "qty_scale": 5}


def warmup() -> None:
    from bot4d.config import load
    from bot4d.daemon.app import Daemon
    from bot4d.paperkeys import ensure
    from bot4d.venues import binance as vb

    core = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ensure(t)
        (t / "w.toml").write_text(f"""
instance = "warm{os.getpid()}"
paper = true
[daemon]
shard_cores = [{core}]
runtime_dir = "{t}"
state_dir = "{t}"
[persist]
enabled = true
journal_capacity = 4096
[risk]
max_daily_loss = "100"
[venues.binance]
kind = "binance"
rest_url = "http://127.0.0.1:1"
ws_url = "ws://127.0.0.1:1"
api_key_file = "paper.key"
api_secret_file = "paper.secret"
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
shard = 0
max_position = "1"
max_notional = "1000"
[instruments.strategy]
kind = "market_maker"
quote_qty = "0.001"
max_inventory = "0.01"
half_spread_ticks = 2
skew_ticks_per_lot = 1
stop_ticks = 100
requote_ticks = 1
min_requote_ms = 0
""")
        d = Daemon(load(t / "w.toml"))
        d.rules[("binance", "BTCUSDT")] = PAPER_RULES
        d.table.add(vb.VENUE, "BTCUSDT", 2, 5)
        try:
            d._build()
            d._warm(setup=True)
        finally:
            for sh in d.shards:
                sh.rings.journal.unlink()
            d.close()
