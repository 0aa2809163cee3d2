"""A 10 MB frame must be refused from its header, counted, and never buffered.

The server runs in another process so that the memory this process allocates is the client's
alone (tracemalloc sees picows' read buffer: it is allocated with PyMem_*). Without the client's
read guard picows kept reading the refused frame for 10 ms and its buffer grew to as much as
17 MB here; with it the whole episode costs well under the 1 MB frame limit plus one read.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tracemalloc

from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.binance import BinanceAdapter
from bot4d.feed.client import FeedConnection
from bot4d.feed.counters import ConnEvent
from bot4d.feed.state import BookStateTable
from bot4d.instruments import InstrumentTable
from bot4d.venues.sync import Reason
from tests.conftest import ROOT

SERVER = """
import asyncio
from bot4d.sim.feedserver import BinanceMarket, FeedServer, Fault, generate_binance
async def main():
    frames, snaps = generate_binance(["AAAUSDT", "BBBUSDT"], 400, seed=3)
    srv = await FeedServer(BinanceMarket(frames, snaps)).start()
    srv.hold(10)
    srv.inject(Fault.OVERSIZE, at=5)
    print(srv.port, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_ten_megabyte_frame_is_refused_without_buffering_it() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, env=env)
    try:
        port = int(proc.stdout.readline())

        async def go():
            t = InstrumentTable()
            for s in ("AAAUSDT", "BBBUSDT"):
                t.add("BINANCE", s, 8, 8)
            ad = BinanceAdapter(t, ["AAAUSDT", "BBBUSDT"])
            conn = FeedConnection(ad, f"ws://127.0.0.1:{port}", states=BookStateTable(2),
                                  rest_base=f"http://127.0.0.1:{port}", max_frame_size=1 << 20,
                                  policy=BackoffPolicy(base_s=0.01, max_s=0.02, seed=1))
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                conn.start()
                loop = asyncio.get_running_loop()
                end = loop.time() + 30
                while conn.counters[ConnEvent.OVERSIZE_FRAME] < 1 and loop.time() < end:
                    await asyncio.sleep(0.005)
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
                await conn.stop()
            assert conn.counters[ConnEvent.OVERSIZE_FRAME] == 1
            assert ad.counters[Reason.OVERSIZE_FRAME] == 1
            assert conn.counters[ConnEvent.PEER_VANISHED] == 0   # we refused it; nobody vanished
            assert peak < 4 << 20, f"client buffered {peak / 1e6:.1f} MB of a refused 10 MB frame"

        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        proc.kill()
        proc.wait()
