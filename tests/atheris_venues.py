"""Coverage-guided fuzzing of every venue parser with atheris (libFuzzer), bounded in runs and time.

    python tests/atheris_venues.py VENUE -runs=N -max_total_time=S

Seeds are real recorded frames (Bybit: frames in its documented format). The pure-Python handlers
are coverage-instrumented; the numba kernels cannot be (see the import below). Each input goes through
the handler's one-frame and batch paths; any exception is a finding (libFuzzer reports it and exits
non-zero), and libFuzzer's RSS limit turns unbounded memory into a finding too.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT.parent / "shared" / "data" / "recorded"
sys.path.insert(0, str(ROOT))

# numba compiles from bytecode, so modules with kernels are imported first, uninstrumented (their
# compiled code is invisible to atheris: they are fuzzed by mutation from the seeds); the pure-Python
# handlers get coverage feedback
from bot4d.instruments import InstrumentTable  # noqa: E402
from bot4d.kernels.book import make_books  # noqa: E402
from bot4d.venues import (binance, binance_futures, bybit, checksum, kraken_scan,  # noqa: E402,F401
                          kraken_v2_scan, okx_scan, scan)

with atheris.instrument_imports(include=["bot4d.venues.kraken", "bot4d.venues.okx", "bot4d.venues.coinbase",
                                         "bot4d.venues.l2sync", "bot4d.venues.sync", "bot4d.venues.numbers"]):
    from bot4d.venues import coinbase, kraken, okx


def _recorded(name: str, limit: int = 64) -> list[bytes]:
    out = []
    for line in (RECORDED / name).read_text().splitlines():
        _, sep, body = line.partition(": ")
        if sep and body[:1] in "{[":
            out.append(body.encode())
        if len(out) >= limit:
            break
    return out


def _bybit_seeds() -> list[bytes]:
    def msg(kind, u):
        return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1700000000000 + u,
                           "data": {"s": "BTCUSDT", "b": [["30000.10", "1.500"]], "a": [["30000.20", "0.250"]],
                                    "u": u, "seq": 100 + u}, "cts": 1700000000000}).encode()
    trade = json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1700000000000,
                        "data": [{"T": 1700000000000, "s": "BTCUSDT", "S": "Buy", "v": "0.001",
                                  "p": "30000.20", "i": "x", "BT": False}]}).encode()
    return [msg("snapshot", 1), msg("delta", 2), trade]


def build(venue: str):
    t = InstrumentTable()
    if venue == "binance":
        for s in ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"):
            t.add(binance.VENUE, s, 8, 8)
        return binance.BinanceFeed(t, make_books(len(t), 256)), _recorded("BINANCE.ws.1.0")
    if venue == "binance_futures":
        for s in ("AKROUSDT", "CTKUSDT", "KEEPUSDT"):
            t.add(binance_futures.VENUE, s, 8, 8)
        return binance_futures.BinanceFuturesFeed(t, make_books(len(t), 256)), _recorded("BINANCE_FUTURES.ws.1.0")
    if venue == "bybit":
        t.add("BYBIT", "BTCUSDT", 2, 3)
        return bybit.BybitFeed(t, make_books(1, 64)), _bybit_seeds()
    if venue == "kraken":
        for s in ("ADA/XBT", "ETH/CHF", "GRT/ETH"):
            t.add(kraken.VENUE, s, 10, 8)
        return kraken.KrakenV1(t, make_books(len(t), 1024)), _recorded("KRAKEN.ws.50.0")
    if venue == "okx":
        t.add(okx.VENUE, "BTC-USDT", 8, 8)
        t.add(okx.VENUE, "UNI-USD-SWAP", 8, 8)
        return okx.OkxV5(t, make_books(len(t), 512)), _recorded("OKX.ws.1.0")
    if venue == "coinbase":
        for s in ("BAND-BTC", "BAND-GBP", "CRV-EUR"):
            t.add(coinbase.VENUE, s, 8, 8)
        return coinbase.CoinbaseLegacy(t, make_books(len(t), 2048)), _recorded("COINBASE.ws.28.0.head1200")
    raise SystemExit(f"unknown venue {venue!r}")


def main() -> None:
    venue = sys.argv[1]
    handler, seeds = build(venue)
    for s in seeds:  # a synced state, so the fuzzer reaches the update paths, not only refusals
        handler.on_frame(s)
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{venue}-"))
    for k, s in enumerate(seeds):
        (corpus / f"seed{k}").write_bytes(s)

    def one(data: bytes) -> None:
        handler.on_frame(data)
        handler.on_frames([data])

    atheris.Setup([sys.argv[0], *sys.argv[2:], "-rss_limit_mb=2048", str(corpus)], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
