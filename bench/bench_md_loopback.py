"""md.loopback: market data through a real loopback WebSocket into the books.

The loopback feed server sends generated Binance depth diffs as fast as the socket takes them;
the real feed client (picows) reads them, the Binance venue module parses and sync-checks them,
the book kernel applies them, and the records are forwarded to a sink (the ingress ring's place).
The server runs in its own process (a venue is another machine; here it gets the other core).
Throughput is frames per second from the first frame read to the last frame applied; latency is
per frame, from the moment its read batch came off the socket (the first frame of the batch) to
the end of the batch's apply. The baseline is the same frames handed to the same adapter with no
socket in between (batches of 64), measured in the same run: the difference is what the
WebSocket path costs. The sender is Python as well and is usually the limit here: the result also
reports the client's CPU per frame and its share of the wall time.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np

from bench.harness import baseline_of, benchmark, result
from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.binance import BinanceAdapter
from bot4d.feed.client import FeedConnection
from bot4d.feed.state import BookStateTable
from bot4d.instruments import InstrumentTable
from bot4d.sim.feedserver import BinanceMarket, FeedServer, generate_binance

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]


def _table() -> InstrumentTable:
    t = InstrumentTable()
    for s in SYMBOLS:
        t.add("BINANCE", s, 8, 8)
    return t


def _server_process(n: int, conn, pace_s: float = 0.0) -> None:
    """The venue, in its own process (its own core and GIL): serve, hold at 8, stream on cue."""
    async def main():
        frames, snaps = generate_binance(SYMBOLS, n, seed=21, levels_per_side=200)
        server = await FeedServer(BinanceMarket(frames, snaps), yield_every=256,
                                  pace_s=pace_s).start()
        server.hold(8)
        conn.send(server.port)
        loop = asyncio.get_running_loop()
        go = asyncio.Event()
        loop.add_reader(conn.fileno(), go.set)
        await go.wait()
        loop.remove_reader(conn.fileno())
        conn.recv()
        # the venue's own book is only needed to serve snapshots, and they have been served:
        # stop maintaining it so the sender measures the socket, not the server's model
        server.market.advance = lambda frame: None
        server.release()
        await server.done.wait()
        await asyncio.sleep(0.5)
        await server.close()
    asyncio.run(main())


async def _loopback(frames, snaps, pace_s: float = 0.0) -> tuple[float, np.ndarray, dict]:
    import multiprocessing as mp

    t = _table()
    adapter = BinanceAdapter(t, SYMBOLS)
    states = BookStateTable(len(t))
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_server_process, args=(len(frames), child, pace_s),
                                          daemon=True)
    proc.start()
    port = parent.recv()
    base = f"127.0.0.1:{port}"
    lat = np.zeros(len(frames) + 64, np.int64)
    n_recs = [0]

    def sink(recs):
        n_recs[0] += len(recs)
        return len(recs)

    conn = FeedConnection(adapter, f"ws://{base}", states=states, sink=sink,
                          rest_base=f"http://{base}", policy=BackoffPolicy(seed=1),
                          latency_out=lat)
    conn.start()
    try:
        # the server holds after 8 frames: sync all books first, then measure the stream
        while not (conn.frames_on_connection >= 9 and not adapter.snapshot_requests()
                   and not conn._snap_tasks and conn.counters.as_dict().get("SNAPSHOT_OK", 0) >= len(SYMBOLS)):
            await asyncio.sleep(0.001)
        conn.n_latency = 0
        start_frames = conn.frames_on_connection
        cpu0 = time.process_time()
        t0 = time.perf_counter_ns()
        parent.send("go")
        total = len(frames) + 1  # the script and the SUBSCRIBE reply
        while conn.frames_on_connection < total:
            await asyncio.sleep(0.0005)
        took = (time.perf_counter_ns() - t0) / 1e9
        cpu = time.process_time() - cpu0
        n = conn.frames_on_connection - start_frames
        live = all(states.is_live(i) for i in range(len(t)))
        # the sender is Python too: when the client's CPU is well under the wall time, the
        # throughput above is the server's, and this is what the client needs per frame
        info = {"frames": n, "records": n_recs[0], "all_live": live,
                "client_cpu_ns_per_frame": int(cpu * 1e9 / max(n, 1)),
                "client_cpu_share": round(cpu / took, 3),
                "reasons": adapter.counters.as_dict(), "connections": conn.counters.as_dict()}
        return n / took, lat[: conn.n_latency].copy(), info
    finally:
        await conn.stop()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def _direct(frames, snaps, batch: int = 64) -> tuple[float, np.ndarray]:
    t = _table()
    adapter = BinanceAdapter(t, SYMBOLS)
    for s in SYMBOLS:
        adapter.on_snapshot(s, snaps[s], 0)
    adapter.drain()
    lat = np.zeros(len(frames) // batch + 1, np.int64)
    k = 0
    t0 = time.perf_counter_ns()
    for i in range(0, len(frames), batch):
        a = time.perf_counter_ns()
        adapter.on_frames(frames[i:i + batch], 0)
        adapter.drain()
        lat[k] = time.perf_counter_ns() - a
        k += 1
    took = (time.perf_counter_ns() - t0) / 1e9
    assert all(adapter.venue_states() == 1)
    return len(frames) / took, lat[:k]


@benchmark("md.loopback")
def bench_loopback(quick: bool) -> list[dict]:
    n = 20_000 if quick else 300_000
    frames, snaps = generate_binance(SYMBOLS, n, seed=21, levels_per_side=200)
    # warm the numba kernels (cache) outside the measurement
    _direct(frames[:200], snaps)
    d_fps, d_lat = _direct(frames, snaps)
    base = result("md.loopback.direct", "frames", throughput_per_s=d_fps, latency_ns=d_lat,
                  latency_basis="per batch of 64 frames, no socket")
    fps, lat, info = asyncio.run(_loopback(frames, snaps))
    if not info["all_live"]:
        raise RuntimeError(f"books not LIVE at the end of the run: {info}")
    # paced: one frame per ~200 us, so reads mostly carry one frame: latency without queueing
    npaced = 500 if quick else 20_000
    pframes, psnaps = generate_binance(SYMBOLS, npaced, seed=21, levels_per_side=200)
    pfps, plat, pinfo = asyncio.run(_loopback(pframes, psnaps, pace_s=0.0002))
    paced = result("md.loopback.paced", "frames", throughput_per_s=pfps, latency_ns=plat,
                   latency_basis="per frame at ~5k frames/s, read off the socket -> applied",
                   all_live=pinfo["all_live"], frames=pinfo["frames"])
    return [
        result("md.loopback", "frames", throughput_per_s=fps, latency_ns=lat,
               latency_basis="per frame, read off the socket -> applied to the book",
               baseline=baseline_of(base), frame_bytes_avg=int(sum(map(len, frames)) / len(frames)),
               **info),
        base,
        paced,
    ]
