"""Sockets for the simulated Binance venue: REST over HTTP/1.1 and streams over WebSocket (picows).

* REST on ``rest_port``: the Binance endpoints of ``BinanceVenue`` plus ``POST /sim/fault``
  (``kind=...&count=N``) to inject faults on command: the venue's own (``http_5xx``,
  ``reject_orders``, ``rate_limit_storm``, ``depth_gap``, ``disconnect``, ``unknown_outcome``,
  ``duplicate_fill``: the next N trade execution reports are each sent twice)
  and the transport's: ``delay`` / ``ws_delay`` (``seconds=``: every REST answer / stream
  message late), ``reorder`` (the next N stream messages each arrive after the next one of their stream),
  ``clock_offset`` (``seconds=``: the venue's clock that far ahead of this machine's, negative behind),
  ``price_jump`` (``symbol=``, ``bps=``: the agents' resting orders vanish and the price jumps);
  ``GET /sim/stats``: answers per HTTP status, weight used per client, banned clients, order
  requests per symbol, filter failures by message, accepted orders per STP mode, the clock offset.
* WebSocket on ``ws_port``: ``/ws/<stream>`` (raw payloads), ``/stream?streams=a/b`` (combined:
  ``{"stream": name, "data": payload}``), ``/ws/<listenKey>`` (user data), and live
  ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}`` requests, as Binance's
  WebSocket Streams documentation describes.
* The agents' flow (``AgentFlow``) runs every ``step`` and trades through the engine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

from picows import WSListener, WSMsgType, WSTransport, ws_create_server

from bot4d.fixedpoint import to_fixed
from bot4d.sim import http
from bot4d.sim.binance_venue import STOPS, TYPE_NAMES, BinanceVenue, SymbolSpec
from bot4d.sim.generator import AgentFlow, MarketParams

log = logging.getLogger("bot4d.sim")


def _canonical(stream: str) -> str:
    """``btcusdt@depth@100ms`` and ``btcusdt@depth`` are one feed here."""
    return stream[: -len("@100ms")] if stream.endswith("@100ms") else stream


def _offset_ns(seconds: str) -> int:
    try:
        d = Decimal(seconds)
    except ArithmeticError:
        raise ValueError(f"seconds={seconds!r} is not a number") from None
    if not d.is_finite() or abs(d) > 86400:
        raise ValueError(f"seconds={seconds!r} must be within a day")
    return int(d * 1_000_000_000)


class _StreamConn(WSListener):
    def __init__(self, server: "SimServer", streams: list[str], combined: bool, listen_key: str | None):
        self.server = server
        self.combined = combined
        self.listen_key = listen_key
        self.subs: dict[str, str] = {_canonical(s): s for s in streams}
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.server.conns.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.server.conns.discard(self)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        try:
            req = json.loads(frame.get_payload_as_bytes())
            method, params, rid = req["method"], req.get("params", []), req.get("id")
            if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS") or not isinstance(params, list):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.send({"error": {"code": 2, "msg": "Invalid request: unknown or malformed method"}, "id": None})
            return
        if method == "SUBSCRIBE":
            for s in params:
                self.subs[_canonical(str(s))] = str(s)
            self.combined = True
            self.send({"result": None, "id": rid})
        elif method == "UNSUBSCRIBE":
            for s in params:
                self.subs.pop(_canonical(str(s)), None)
            self.send({"result": None, "id": rid})
        else:
            self.send({"result": sorted(self.subs.values()), "id": rid})

    def send(self, obj: dict) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send(WSMsgType.TEXT, json.dumps(obj, separators=(",", ":")).encode())

    def market(self, stream: str, payload: dict) -> None:
        name = self.subs.get(stream)
        if name is not None:
            self.send({"stream": name, "data": payload} if self.combined else payload)


class SimServer:
    """The simulated venue on loopback sockets, with its agents' market flow."""

    def __init__(self, venue: BinanceVenue, flows: dict[str, AgentFlow] | None = None,
                 step_s: float = 0.1):
        self.venue = venue
        self.flows = flows or {}
        self.step_s = step_s
        self.conns: set[_StreamConn] = set()
        self.rest_server: asyncio.AbstractServer | None = None
        self.ws_server: asyncio.AbstractServer | None = None
        self._flow_task: asyncio.Task | None = None
        self.delay_s = 0.0      # injected extra latency on every REST answer
        self.ws_delay_s = 0.0   # injected latency on every stream message (order kept)
        self.reorder = 0        # the next N stream messages are each held behind the next of their stream
        self._held: dict[str, dict] = {}
        self.answers: dict[int, int] = {}  # REST answers per HTTP status (GET /sim/stats)
        venue.market_listeners.append(self._on_market)
        venue.user_listeners.append(self._on_user)
        venue.disconnect_hooks.append(self.disconnect_all)

    @property
    def rest_port(self) -> int:
        assert self.rest_server is not None
        return self.rest_server.sockets[0].getsockname()[1]

    @property
    def ws_port(self) -> int:
        assert self.ws_server is not None
        return self.ws_server.sockets[0].getsockname()[1]

    async def start(self, host: str = "127.0.0.1", rest_port: int = 0, ws_port: int = 0) -> None:
        self.rest_server = await http.serve(self._rest, host, rest_port)
        self.ws_server = await ws_create_server(self._ws_factory, host, ws_port,
                                                enable_auto_ping=False)
        if self.flows:
            self._flow_task = asyncio.create_task(self._run_flows())

    async def stop(self) -> None:
        if self._flow_task:
            self._flow_task.cancel()
        self.disconnect_all()
        for srv in (self.rest_server, self.ws_server):
            if srv is not None:
                srv.close()
                await srv.wait_closed()

    def disconnect_all(self) -> None:
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.disconnect()
        self.conns.clear()

    async def _rest(self, req: http.Request) -> http.Response:
        if req.path == "/sim/fault":
            return self._fault(req)
        if req.path == "/sim/stats":
            return self._stats()
        resp = self.venue.handle(req)
        # tests ask whether a client was ever told to back off (429) or banned (418)
        self.answers[resp.status] = self.answers.get(resp.status, 0) + 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return resp

    def _stats(self) -> http.Response:
        """What the venue answered (count per HTTP status) and each client's weight this minute."""
        v = self.venue
        lim = v.limiter
        return http.Response.json(200, {
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
            "weight_limit": lim.limit,
            "weight_used": {c: {"minute": m, "used": u} for c, (m, u) in lim.used.items()},
            "banned": sorted(c for c, t in lim.banned_until.items() if t > time.time()),
            "unknown_outcome": [{"orderId": o, "clientOrderId": v.orders[o].client_order_id,
                                 "symbol": v.orders[o].symbol, "status": v.orders[o].status}
                                for o in v.unknown_outcome_orders if o in v.orders],
            "client_ids_placed_more_than_once": sorted(c for (_a, c), n in v.places_by_client.items() if n > 1),
            "order_requests": dict(v.order_requests), "filter_failures": dict(v.filter_failures),
            "stp_modes": dict(v.stp_modes), "clock_offset_ms": v.clock_offset_ns // 1_000_000,
            "cancel_replaces": v.cancel_replaces,
            # order lists (OCO): how many were placed, and those still executing with their legs
            "oco_places": v.oco_places,
            "open_order_lists": [{"account": lst["account"], "symbol": lst["symbol"], "orderListId": lid,
                                  "legs": [{"type": TYPE_NAMES[v.orders[o].otype], "clientOrderId": v.orders[o].client_order_id,
                                            "qty": str(v.orders[o].qty), "price": str(v.orders[o].price),
                                            "stopPrice": str(v.orders[o].stop), "status": v.orders[o].status}
                                           for o in lst["orders"]]}
                                 for lid, lst in v.order_lists.items() if lst["status"] == "EXECUTING"],
            # stop orders resting at the venue, by account: what protects a client's positions
            "open_stops": [{"account": o.account, "symbol": o.symbol, "side": "BUY" if o.side == 0 else "SELL",
                            "qty": str(o.qty), "stopPrice": str(o.stop), "price": str(o.price),
                            "clientOrderId": o.client_order_id, "status": o.status}
                           for o in v.orders.values() if o.open and o.otype in STOPS],
            # every API account's open orders and balances (by account index: the first --account
            # is 1), for tests that watch the venue without spending the daemon's request weight
            "accounts": {str(a.index): {
                "open_orders": [{"symbol": o.symbol, "side": "BUY" if o.side == 0 else "SELL",
                                 "type": TYPE_NAMES[o.otype], "qty": str(o.qty), "price": str(o.price),
                                 "stopPrice": str(o.stop), "clientOrderId": o.client_order_id,
                                 "status": o.status}
                                for o in v.orders.values() if o.open and o.account == a.index],
                "balances": {k: str(a.free.get(k, 0) + a.locked.get(k, 0)) for k in sorted(set(a.free) | set(a.locked))}}
                for a in v.accounts.values()}})

    def _fault(self, req: http.Request) -> http.Response:
        if req.method != "POST":
            return http.Response.json(405, {"code": -1000, "msg": "POST /sim/fault?kind=...&count=N"})
        p = dict(parse_qsl(req.query + ("&" if req.query and req.body else "") + req.body.decode("ascii", "replace")))
        kind = p.get("kind", "")
        try:
            count = int(p.get("count", "1"))
            if kind == "delay":
                self.delay_s = max(0.0, float(p.get("seconds", "0")))
            elif kind == "ws_delay":
                self.ws_delay_s = max(0.0, float(p.get("seconds", "0")))
            elif kind == "clock_offset":
                # the venue's clock this many seconds ahead of the machine's (negative: behind)
                self.venue.clock_offset_ns = _offset_ns(p.get("seconds", "0"))
            elif kind == "reorder":
                if count < 1:
                    raise ValueError("fault count must be >= 1")
                self.reorder += count
            elif kind == "price_jump":
                self.price_jump(p.get("symbol", ""), int(p.get("bps", "0")))
            else:
                self.venue.inject(kind, count)
        except ValueError as e:
            return http.Response.json(400, {"code": -1100, "msg": str(e)})
        return http.Response.json(200, {"armed": kind, "count": count})

    def price_jump(self, symbol: str, bps: int) -> None:
        """A violent move: the agents' resting orders in ``symbol`` vanish and its fundamental
        jumps ``bps`` basis points; the agents then quote and trade around the new price (our
        orders stay: crossed ones fill at their own prices)."""
        import numpy as np

        from bot4d.kernels import matching as m
        from bot4d.sim.binance_venue import AGENT_ACCOUNT

        flow = self.flows.get(symbol)
        if flow is None:
            raise ValueError(f"price_jump: unknown symbol {symbol!r}; known: {', '.join(self.flows)}")
        if not -9000 <= bps <= 100000 or bps == 0:
            raise ValueError(f"price_jump: bps={bps} must be non-zero within -9000..100000")
        e = self.venue.engine
        i = self.venue.sym_index[symbol]
        ids = e.o_id[(e.o_state == 1) & (e.o_acct == AGENT_ACCOUNT) & (e.o_inst == i) & (e.o_id != 0)]
        now = self.venue.now_ns()
        if len(ids):
            o = np.zeros(len(ids), m.SIM_ORDER_DTYPE)
            o["op"], o["order_id"], o["instrument"], o["ts_ns"] = m.OP_CANCEL, ids, i, now
            self.venue.submit_agent_orders(o, now)
        flow.fund = max(2, flow.fund * (10000 + bps) // 10000)
        log.info("price jump: %s %+d bps (%d agent orders pulled)", symbol, bps, len(ids))

    def _ws_factory(self, request):
        parts = urlsplit(request.path.decode() if isinstance(request.path, bytes) else request.path)
        path = parts.path
        if path == "/stream":
            streams = dict(parse_qsl(parts.query)).get("streams", "")
            return _StreamConn(self, [s for s in streams.split("/") if s], True, None)
        if path.startswith("/ws/"):
            name = path[4:]
            if name in self.venue.listen_keys:
                return _StreamConn(self, [], False, name)
            return _StreamConn(self, [name] if name else [], False, None)
        if path == "/ws":
            return _StreamConn(self, [], False, None)
        return None  # 404

    def _on_market(self, stream: str, payload: dict) -> None:
        if self.reorder and stream not in self._held:
            self._held[stream] = payload  # sent after the stream's next message: the two swap
            self.reorder -= 1
            return
        self._deliver(stream, payload)
        held = self._held.pop(stream, None)
        if held is not None:
            self._deliver(stream, held)

    def _deliver(self, stream: str, payload: dict) -> None:
        if self.ws_delay_s:
            asyncio.get_running_loop().call_later(self.ws_delay_s, self._send_market, stream, payload)
        else:
            self._send_market(stream, payload)

    def _send_market(self, stream: str, payload: dict) -> None:
        for c in list(self.conns):
            c.market(stream, payload)

    def _on_user(self, listen_key: str, payload: dict) -> None:
        for c in list(self.conns):
            if c.listen_key == listen_key:
                c.send(payload)

    async def _run_flows(self) -> None:
        steps_per_tick = 1
        while True:
            now = self.venue.now_ns()
            for sym, flow in self.flows.items():
                orders = flow.steps(steps_per_tick)
                orders["instrument"] = self.venue.sym_index[sym]
                self.venue.submit_agent_orders(orders, now)
            await asyncio.sleep(self.step_s)


DEFAULT_SYMBOLS = [
    SymbolSpec("BTCUSDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"),
               Decimal("9000"), Decimal("5")),
    SymbolSpec("ETHUSDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"),
               Decimal("9000"), Decimal("5")),
]
# symbols `bot4d sim --symbols` can serve besides the default ones (BNBUSDT: the price of an
# account's BNB commission)
KNOWN_SYMBOLS = {s.symbol: s for s in DEFAULT_SYMBOLS + [
    SymbolSpec("BNBUSDT", "BNB", "USDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"),
               Decimal("9000"), Decimal("5")),
]}
DEFAULT_START = {"BTCUSDT": Decimal("60000.00"), "ETHUSDT": Decimal("3000.00"), "BNBUSDT": Decimal("600.00")}


def build(seed: int = 1, step_s: float = 0.1, symbols: list[SymbolSpec] = DEFAULT_SYMBOLS,
          params: MarketParams | None = None, follow: dict[str, str] | None = None) -> SimServer:
    """A venue with the default symbols and agents whose steps are `step_s` long. ``follow``
    (follower -> leader symbol): the follower's agents draw the leader's random numbers, so its
    price makes the same relative moves (a correlated pair)."""
    index = {s.symbol: k for k, s in enumerate(symbols)}
    for f, lead in (follow or {}).items():
        if f not in index or lead not in index or f == lead:
            raise ValueError(f"--follow {f}={lead}: both must be served symbols, and different")
    venue = BinanceVenue(symbols)
    p = params or MarketParams(step_ns=int(step_s * 1e9), arrival_rate=200.0, size_mu=0.0, size_sigma=0.7)
    flows = {}
    for k, s in enumerate(symbols):
        start = DEFAULT_START.get(s.symbol, Decimal(100))
        tick = to_fixed(s.tick_size, s.price_scale)
        lot = max(1, to_fixed(s.min_qty, s.qty_scale)) * 100
        flows[s.symbol] = AgentFlow(p, start_price_ticks=to_fixed(start, s.price_scale) // tick,
                                    tick=tick, lot=lot, seed=seed + index[(follow or {}).get(s.symbol, s.symbol)],
                                    account=0,
                                    first_order_id=(1 << 40) + (k << 32))
    return SimServer(venue, flows, step_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bot4d sim", description="simulated Binance spot venue on loopback")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--rest-port", type=int, default=18080)
    ap.add_argument("--ws-port", type=int, default=18081)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--weight-limit", type=int, default=6000,
                    help="request weight per client per minute before 429 (Binance: 6000)")
    ap.add_argument("--account", action="append", default=[], metavar="KEYFILE",
                    help="file with 'api_key secret' on one line; the account starts with 100000 USDT, 10 BTC, 100 ETH")
    ap.add_argument("--symbols", default=",".join(s.symbol for s in DEFAULT_SYMBOLS),
                    help=f"comma-separated symbols to serve, of {', '.join(KNOWN_SYMBOLS)}")
    ap.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT",
                    help="every account's starting balance of ASSET (added to or replacing the defaults)")
    ap.add_argument("--maker-fee", default="0", help="every account's maker commission rate (e.g. 0.001)")
    ap.add_argument("--taker-fee", default="0", help="every account's taker commission rate")
    ap.add_argument("--follow", action="append", default=[], metavar="SYMBOL=LEADER",
                    help="SYMBOL's price makes the same relative moves as LEADER's (a correlated pair)")
    ap.add_argument("--fee-asset", default="",
                    help="accounts pay commission in this asset (e.g. BNB, served as BNBUSDT) while it lasts")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print("bot4d sim: serves loopback only", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.weight_limit < 1:
        print("bot4d sim: --weight-limit must be >= 1", file=sys.stderr)
        return 2
    try:
        symbols = [KNOWN_SYMBOLS[s] for s in args.symbols.split(",")]
        balances = {"USDT": "100000", "BTC": "10", "ETH": "100"}
        for b in args.balance:
            asset, _, amount = b.partition("=")
            if not asset or not asset.isalnum() or Decimal(amount) < 0:
                raise ValueError(f"--balance {b!r}: want ASSET=AMOUNT")
            balances[asset] = amount
    except (KeyError, ValueError, ArithmeticError) as e:
        print(f"bot4d sim: {e}", file=sys.stderr)
        return 2
    try:
        follow = dict(f.split("=", 1) for f in args.follow)
        srv = build(args.seed, symbols=symbols, follow=follow)
    except ValueError as e:
        print(f"bot4d sim: {e}", file=sys.stderr)
        return 2
    srv.venue.limiter.limit = args.weight_limit
    for path in args.account:
        try:
            key, secret = open(path).read().split()
            acct = srv.venue.add_account(key, secret, balances, fee_asset=args.fee_asset)
            srv.venue.set_fees(acct.index, args.maker_fee, args.taker_fee)
        except (OSError, ValueError, ArithmeticError) as e:
            print(f"bot4d sim: account {path}: {e}", file=sys.stderr)
            return 2

    async def run() -> None:
        await srv.start(args.host, args.rest_port, args.ws_port)
        log.info("simulated Binance on http://%s:%d and ws://%s:%d", args.host, srv.rest_port, args.host, srv.ws_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await srv.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
