"""One venue WebSocket connection kept alive: connect, subscribe, read, resync, reconnect.

``FeedConnection.run()`` is an asyncio task on the daemon's io thread. It connects with picows,
sends the adapter's subscriptions, feeds every batch of frames read together off the socket to the
adapter in one call (``WSFrame.last_in_buffer`` marks the end of a read), forwards the produced
records to the sink (the owning shard's ingress ring), fetches REST snapshots the adapter asks
for, and publishes per-instrument states in the shared ``BookStateTable``.

Failure handling, all counted per venue (``ConnCounters``, plus the adapter's ReasonCounters) and
logged once per burst:

* frames above ``max_frame_size`` are refused by picows from the frame header, before the payload
  is buffered (it answers with close code 1009); we count OVERSIZE_FRAME and reconnect;
* a peer that vanishes (no close handshake, possibly mid-frame) ends the connection;
* no traffic at all for ``stall_after_s``: instruments go STALE first (per-instrument threshold),
  then the connection is dropped and re-established;
* every end of a connection forces all its instruments to resync (the chain is broken), and
  reconnects follow ``BackoffPolicy`` (jitter + cap per window);
* an adapter exception is a bug, but it must not kill the io thread: counted, connection reset.

Time is injected: ``clock`` (monotonic ns) drives staleness, pings and the backoff window, and
``sleep`` is awaited for backoff delays, so tests never depend on the wall clock.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import numpy as np
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bot4d.feed.adapter import FeedAdapter, SnapshotRequest
from bot4d.feed.backoff import BackoffPolicy
from bot4d.feed.counters import BurstLog, ConnCounters, ConnEvent
from bot4d.feed.http import HttpError, http_get
from bot4d.feed.state import LIVE, RESYNCING, STALE, SYNCING, BookStateTable
from bot4d.records import MD_CLEAR, MD_FLAG_FRAME_END, MD_UPDATE_DTYPE
from bot4d.venues.sync import N_REASONS, Reason

log = logging.getLogger("bot4d.feed")

# the owning shard's ingress: returns how many records it took (None: all), e.g. Ring.publish
Sink = Callable[[np.ndarray], Any]
_QUIET = (int(Reason.OK), int(Reason.IGNORED))


class _Listener(WSListener):
    """picows callbacks; kept thin: all policy lives in FeedConnection."""

    def __init__(self, conn: "FeedConnection") -> None:
        self.conn = conn
        self.frag: list[bytes] | None = None
        self.frag_len = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.conn._on_connected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        c = self.conn
        mt = frame.msg_type
        if mt is WSMsgType.TEXT or mt is WSMsgType.BINARY:
            if frame.fin:
                c._frame(frame.get_payload_as_bytes())
            else:  # first fragment of a message
                self.frag = [frame.get_payload_as_bytes()]
                self.frag_len = frame.payload_size
        elif mt is WSMsgType.CONTINUATION:
            if self.frag is not None:
                self.frag_len += frame.payload_size
                if self.frag_len > c.max_frame_size:
                    # a message split into frames is held to the same limit as one frame
                    self.frag = None
                    c._oversize(transport)
                    return
                self.frag.append(frame.get_payload_as_bytes())
                if frame.fin:
                    msg = b"".join(self.frag)
                    self.frag = None
                    c._frame(msg)
        elif mt is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
            c._activity()
        elif mt is WSMsgType.PONG:
            c._activity()
        elif mt is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.last_in_buffer:
            c._flush()


class _ReadGuard(asyncio.BufferedProtocol):
    """Sits between the socket transport and picows' protocol to stop reading the moment
    picows refuses an oversize frame.

    picows checks the announced payload length in the frame header and answers 1009, but it
    closes the socket only 10 ms later and keeps reading meanwhile, growing its read buffer
    toward the whole frame (measured here: up to 17 MB for a 10 MB frame). Aborting right after
    the read in which the refusal happened bounds what the client ever buffers to one read.
    """

    __slots__ = ("inner", "ws")

    def __init__(self, inner: Any, ws: WSTransport) -> None:
        self.inner = inner
        self.ws = ws

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)
        if self.ws.is_close_frame_sent:
            hs = self.ws.close_handshake
            if hs is not None and hs.sent is not None and hs.sent.code == WSCloseCode.MESSAGE_TOO_BIG:
                self.ws.underlying_transport.abort()

    def connection_made(self, transport: Any) -> None:  # already made before we were installed
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class FeedConnection:
    """A self-healing market-data connection for one adapter."""

    def __init__(self, adapter: FeedAdapter, ws_base: str, *, states: BookStateTable,
                 sink: Sink | None = None, rest_base: str | None = None,
                 policy: BackoffPolicy | None = None,
                 clock: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 max_frame_size: int = 1 << 20, stale_after_s: float = 5.0,
                 stall_after_s: float = 15.0, check_interval_s: float = 0.25,
                 handshake_timeout_s: float = 5.0, snapshot_timeout_s: float = 10.0,
                 snapshot_max_bytes: int = 8 << 20, burst_log_interval_s: float = 10.0,
                 latency_out: np.ndarray | None = None) -> None:
        self.adapter = adapter
        self.venue = adapter.venue
        self.url = ws_base.rstrip("/") + adapter.ws_path()
        self.rest_base = rest_base.rstrip("/") if rest_base else None
        self.states = states
        self.sink = sink
        self.policy = policy or BackoffPolicy()
        self.clock = clock
        self.sleep = sleep
        self.max_frame_size = max_frame_size
        self.stall_after_ns = int(stall_after_s * 1e9)
        self.check_interval_s = check_interval_s
        self.handshake_timeout_s = handshake_timeout_s
        self.snapshot_timeout_s = snapshot_timeout_s
        self.snapshot_max_bytes = snapshot_max_bytes
        self.counters = ConnCounters()
        self.burst = BurstLog(log, int(burst_log_interval_s * 1e9))
        ids = np.asarray(adapter.instrument_ids, np.int64)
        states.stale_after_ns[ids] = int(stale_after_s * 1e9)
        self._ids = ids
        self._seen_reasons = np.zeros(N_REASONS, np.int64)
        self._seen_rejects = 0
        self._last_vs: np.ndarray | None = None   # venue states at the last publish
        self._stale_present = False
        self._pending: list[bytes] = []
        self._batch_recv_ns = 0
        self._batch_t0 = 0
        self._transport: WSTransport | None = None
        self._last_frame_ns = 0
        self._last_sent_ns = 0
        self._snap_tasks: dict[str, asyncio.Task] = {}
        self._snap_retry: dict[str, BackoffPolicy] = {}
        self._stopping = False
        self._stall_close = False
        self._oversize_close = False
        self._local_close = False     # we ended it (stall, adapter bug, stop): not the peer
        self._connected_evt = asyncio.Event()
        self._run_task: asyncio.Task | None = None
        # benchmark hook: per-frame latency from read off the socket to applied (ns)
        self.latency_out = latency_out
        self.n_latency = 0
        self.generation = 0   # connections established so far
        self._t_conn = 0
        self.frames_on_connection = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        self._run_task = asyncio.get_running_loop().create_task(self.run(), name=f"feed-{self.venue}")
        return self._run_task

    async def stop(self) -> None:
        self._stopping = True
        t = self._transport
        if t is not None:
            t.disconnect()
        if self._run_task is not None:
            self._run_task.cancel()
            try:
                await self._run_task
            except (asyncio.CancelledError, Exception):
                pass
        self._cancel_snapshots()

    @property
    def connected(self) -> bool:
        return self._transport is not None

    async def wait_connected(self) -> None:
        await self._connected_evt.wait()

    async def run(self) -> None:
        checker = asyncio.get_running_loop().create_task(self._checker())
        try:
            while not self._stopping:
                now = self.clock()
                capped_before = self.policy.capped
                delay = self.policy.delay_s(now)
                if self.policy.capped != capped_before:
                    self.counters.bump(ConnEvent.RECONNECT_CAPPED)
                    self.burst.event(self.venue, "reconnect held back by the attempts cap", 1, now,
                                     f"waiting {delay:.1f} s")
                if delay > 0:
                    await self.sleep(delay)
                if self._stopping:
                    break
                self.policy.attempt(self.clock())
                self.counters.bump(ConnEvent.CONNECT_ATTEMPTS)
                try:
                    transport, _ = await ws_connect(
                        lambda: _Listener(self), self.url, max_frame_size=self.max_frame_size,
                        enable_auto_pong=False, enable_auto_ping=False,
                        websocket_handshake_timeout=self.handshake_timeout_s,
                        disconnect_on_exception=True)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # refused, reset, handshake rejected or timed out, ...
                    self.counters.bump(ConnEvent.CONNECT_FAILED)
                    self.burst.event(self.venue, "connect failed", 1, self.clock(),
                                     f"{type(e).__name__}: {e}")
                    self.policy.failed()
                    continue
                try:
                    await self._serve(transport)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug (ours or an adapter's) must not end the feed
                    self.counters.bump(ConnEvent.ADAPTER_ERRORS)
                    log.exception("%s feed: connection handling failed; reconnecting", self.venue)
                    self.policy.failed()
        finally:
            checker.cancel()
            self._cancel_snapshots()

    def _on_connected(self, transport: WSTransport) -> None:
        """From picows' on_ws_connected: before any frame of this connection is delivered."""
        self._transport = transport
        self._t_conn = self._last_frame_ns = self.clock()
        self._stall_close = self._oversize_close = self._local_close = False
        self.generation += 1
        self.frames_on_connection = 0
        self.counters.bump(ConnEvent.CONNECTED)

    async def _serve(self, transport: WSTransport) -> None:
        under = transport.underlying_transport
        under.set_protocol(_ReadGuard(under.get_protocol(), transport))
        t_conn = self._t_conn
        self._connected_evt.set()
        try:
            for m in self.adapter.subscribe_messages():
                self._send(m)
            try:
                await transport.wait_disconnected()
            except Exception:  # picows re-raises the reason it disconnected (e.g. 1009)
                pass
        finally:
            self._connected_evt.clear()
            self._transport = None
            self._ended(transport, self.clock() - t_conn)

    def _ended(self, transport: WSTransport, lived_ns: int) -> None:
        """Classify why the connection ended, then break every instrument's chain."""
        now = self.clock()
        self.counters.bump(ConnEvent.DISCONNECTED)
        self._pending.clear()
        hs = transport.close_handshake
        sent = hs.sent if hs is not None else None
        recv = hs.recv if hs is not None else None
        if self._oversize_close or (sent is not None and sent.code == WSCloseCode.MESSAGE_TOO_BIG):
            self.counters.bump(ConnEvent.OVERSIZE_FRAME)
            self.adapter.counters.bump(Reason.OVERSIZE_FRAME)
            self.burst.event(self.venue, "oversize frame refused", 1, now,
                             f"limit {self.max_frame_size} bytes")
        elif self._stall_close:
            pass  # counted when decided
        elif recv is None and not self._stopping and not self._local_close:
            self.counters.bump(ConnEvent.PEER_VANISHED)
            self.burst.event(self.venue, "peer vanished without a close handshake", 1, now)
        self._cancel_snapshots()
        self.adapter.on_disconnect()
        self.counters.bump(ConnEvent.RESYNCS, len(self._ids))
        self._publish(now)
        self.policy.connection_ended(lived_ns)

    # --- frames -----------------------------------------------------------------------------------
    def _frame(self, payload: bytes) -> None:
        if not self._pending:
            self._batch_recv_ns = time.time_ns()
            self._batch_t0 = time.perf_counter_ns()
        self._pending.append(payload)

    def _activity(self) -> None:
        self._last_frame_ns = self.clock()

    def _oversize(self, transport: WSTransport) -> None:
        self._oversize_close = self._local_close = True
        transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
        transport.disconnect(graceful=False)

    def _flush(self) -> None:
        frames = self._pending
        if not frames:
            self._activity()
            return
        self._pending = []
        now = self.clock()
        self._last_frame_ns = now
        self.counters.bump(ConnEvent.FRAMES, len(frames))
        self.frames_on_connection += len(frames)
        try:
            self.adapter.on_frames(frames, self._batch_recv_ns)
        except Exception as e:  # a bug in a venue module must not take the io thread down
            self._adapter_failed(e)
            return
        self._after_adapter(now)
        lo = self.latency_out
        if lo is not None:
            took = time.perf_counter_ns() - self._batch_t0
            k = min(len(frames), len(lo) - self.n_latency)
            if k > 0:
                lo[self.n_latency:self.n_latency + k] = took
                self.n_latency += k

    def _after_adapter(self, now: int, requests: bool = True) -> None:
        recs = self.adapter.drain()
        if len(recs):
            self.states.touch(recs["instrument"], now)
            if self.sink is not None:
                took = self.sink(recs)
                if took is not None and took < len(recs):
                    # the shard's book misses records: it must not be trusted until resynced
                    self.counters.bump(ConnEvent.SINK_REFUSED, len(recs) - int(took))
                    self.burst.event(self.venue, "ingress ring full; resyncing", 1, now)
                    self.adapter.force_resync()
                    self.counters.bump(ConnEvent.RESYNCS, len(self._ids))
        self._publish(now, full=self._any_stale())
        self._report_reasons(now)
        if self._transport is None or not requests:
            return
        for req in self.adapter.snapshot_requests():
            if req.symbol not in self._snap_tasks and self.rest_base is not None:
                self._snap_tasks[req.symbol] = asyncio.get_running_loop().create_task(
                    self._fetch_snapshot(req, self.generation))
        for m in self.adapter.take_resubscribe():
            self.counters.bump(ConnEvent.RESUBSCRIBES)
            self._send(m)

    def _adapter_failed(self, e: BaseException) -> None:
        self.counters.bump(ConnEvent.ADAPTER_ERRORS)
        log.exception("%s feed: adapter raised; resetting the connection", self.venue)
        t = self._transport
        if t is not None:
            self._local_close = True
            t.disconnect(graceful=False)

    def _report_reasons(self, now: int) -> None:
        counts = self.adapter.counters.counts
        # OK and IGNORED move on every frame: look closer only when a refusal was counted
        rej = int(counts.sum()) - int(counts[_QUIET[0]]) - int(counts[_QUIET[1]])
        if rej == self._seen_rejects:
            return
        self._seen_rejects = rej
        delta = counts - self._seen_reasons
        self._seen_reasons = counts.copy()
        for r in np.flatnonzero(delta).tolist():
            if r not in _QUIET:
                self.burst.event(self.venue, Reason(r).name, int(delta[r]), now)

    def _any_stale(self) -> bool:
        return self._stale_present

    def _publish(self, now: int, full: bool = True) -> None:
        vs = self.adapter.venue_states()
        if not full and self._last_vs is not None and np.array_equal(vs, self._last_vs):
            return  # nothing changed on the venue's side, and staleness is check()'s job
        self._last_vs = vs.copy()
        before = self.states.state[self._ids].copy()
        self.states.publish(self._ids, vs, now)
        after = self.states.state[self._ids]
        stale = after == STALE
        self._stale_present = bool(stale.any())
        marks = int(np.count_nonzero(stale & (before != STALE)))
        if marks:
            self.counters.bump(ConnEvent.STALE_MARKS, marks)
            self.burst.event(self.venue, "instruments went STALE", marks, now)
        # a book that lost its chain is withdrawn downstream at once, not left holding levels
        # that nobody vouches for until a snapshot arrives (some venue modules clear on resync,
        # Binance's keeps the book until the snapshot's own MD_CLEAR)
        lost = ((before == LIVE) | (before == STALE)) & ((after == RESYNCING) | (after == SYNCING))
        if self.sink is not None and lost.any():
            ids = self._ids[lost]
            clr = np.zeros(len(ids), MD_UPDATE_DTYPE)
            clr["kind"] = MD_CLEAR
            clr["flags"] = MD_FLAG_FRAME_END
            clr["instrument"] = ids
            clr["recv_ts_ns"] = time.time_ns()
            self.sink(clr)

    # --- snapshots --------------------------------------------------------------------------------
    async def _fetch_snapshot(self, req: SnapshotRequest, generation: int) -> None:
        # one policy per symbol for the connection's life: a venue that keeps serving unusable or
        # too-old snapshots is asked at most max_attempts times per window, never in a tight loop
        retry = self._snap_retry.get(req.symbol)
        if retry is None:
            retry = self._snap_retry[req.symbol] = BackoffPolicy(
                base_s=0.05, max_s=2.0, max_attempts=20, window_s=60.0)
        try:
            while self.generation == generation and self._transport is not None:
                d = retry.delay_s(self.clock())
                if d:
                    await self.sleep(d)
                retry.attempt(self.clock())
                try:
                    status, body = await http_get(self.rest_base + req.path,
                                                  timeout_s=self.snapshot_timeout_s,
                                                  max_bytes=self.snapshot_max_bytes)
                    if status != 200:
                        raise HttpError(f"HTTP {status}: {body[:120]!r}")
                except (HttpError, asyncio.TimeoutError) as e:
                    self.counters.bump(ConnEvent.SNAPSHOT_FAILED)
                    self.burst.event(self.venue, "snapshot request failed", 1, self.clock(), str(e))
                    retry.failed()
                    continue
                if self.generation != generation or self._transport is None:
                    return  # the connection this snapshot belonged to is gone
                try:
                    r = self.adapter.on_snapshot(req.symbol, body, time.time_ns())
                except Exception as e:
                    self._adapter_failed(e)
                    return
                if r != Reason.OK:
                    self.counters.bump(ConnEvent.SNAPSHOT_FAILED)
                    self.burst.event(self.venue, "snapshot refused by the venue module", 1,
                                     self.clock(), f"{req.symbol}: {Reason(r).name}")
                    retry.failed()
                    self._after_adapter(self.clock(), requests=False)
                    continue
                self.counters.bump(ConnEvent.SNAPSHOT_OK)
                # the task must leave the in-flight set before the adapter is asked again
                self._snap_tasks.pop(req.symbol, None)
                self._after_adapter(self.clock(), requests=False)
                if any(q.symbol == req.symbol for q in self.adapter.snapshot_requests()):
                    retry.failed()   # applied, but the buffered diffs do not bridge it: too old
                else:
                    retry.succeeded()
                self._after_adapter(self.clock())
                return
        finally:
            if self._snap_tasks.get(req.symbol) is asyncio.current_task():
                del self._snap_tasks[req.symbol]

    def _cancel_snapshots(self) -> None:
        for t in self._snap_tasks.values():
            t.cancel()
        self._snap_tasks.clear()

    # --- time-driven checks -------------------------------------------------------------------------
    def _send(self, msg: bytes) -> None:
        t = self._transport
        if t is not None:
            t.send(WSMsgType.TEXT, msg)
            self._last_sent_ns = self.clock()

    def check(self, now: int | None = None) -> None:
        """Staleness, stall and heartbeat decisions at time ``now`` (injected clock)."""
        now = self.clock() if now is None else now
        self._publish(now)
        t = self._transport
        if t is None:
            return
        if now - self._last_frame_ns > self.stall_after_ns:
            self.counters.bump(ConnEvent.STALLS)
            self.burst.event(self.venue, "feed stalled; reconnecting", 1, now,
                             f"nothing for {(now - self._last_frame_ns) / 1e9:.1f} s")
            self._stall_close = self._local_close = True
            t.disconnect(graceful=False)
            return
        iv = self.adapter.ping_interval_s
        if iv and now - max(self._last_sent_ns, self._last_frame_ns) > iv * 1e9:
            m = self.adapter.ping_message()
            if m is not None:
                self.counters.bump(ConnEvent.PINGS_SENT)
                self._send(m)

    async def _checker(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            try:
                self.check()
            except Exception:
                log.exception("%s feed: periodic check failed", self.venue)
