"""The simulated Binance spot venue: exchange state and the REST/stream protocol, without sockets.

A faithful subset of Binance spot, so that a client written against Binance's documentation works
unchanged (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
* public: ``GET /api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``, ``/api/v3/depth``;
* signed (``X-MBX-APIKEY`` header, ``timestamp``, optional ``recvWindow`` (default 5000, at most
  60000), ``signature`` = hex HMAC-SHA256 of the query string followed by the body):
  ``POST/DELETE/GET /api/v3/order``, ``GET /api/v3/openOrders``, ``GET /api/v3/account``,
  ``GET /api/v3/myTrades``, ``GET /api/v3/account/commission``;
* user data stream: ``POST/PUT/DELETE /api/v3/userDataStream`` (API key only) and
  ``executionReport`` / ``outboundAccountPosition`` events for the stream's account;
* market streams: ``<symbol>@depth`` / ``@depth@100ms`` diffs with ``U``/``u`` update ids that the
  REST snapshot's ``lastUpdateId`` shares, ``<symbol>@trade``, ``<symbol>@bookTicker``;
* request weight per client per minute, ``X-MBX-USED-WEIGHT-1M``, HTTP 429 with ``Retry-After``
  and -1003 past the limit, and HTTP 418 (an IP ban that grows) for a client that keeps sending
  while limited;
* errors with Binance's codes and messages (-1021 timestamp, -1022 signature, -2014/-2015 API
  key, -1102 parameters, -1121 symbol, -2010 new order rejected, -2011 cancel rejected, -2013
  order does not exist, -1013 filter failures).

Symbol filters (filters.md) are advertised in exchangeInfo and enforced: PRICE_FILTER, LOT_SIZE,
NOTIONAL (the engine's tick, step, lot and minimum checks, plus maxPrice, maxNotional here),
PERCENT_PRICE_BY_SIDE around the last trade price, MAX_NUM_ORDERS. Every order's
``selfTradePreventionMode`` goes to the engine, which honours each mode. An account may pay
commission in another asset (``add_account(fee_asset="BNB")``: at the venue's own BNB<quote>
price). The venue's clock can run ahead of this machine's (``clock_offset_ns``), and signed
requests are judged against it, as Binance does: -1021 outside recvWindow or 1 s ahead.

Orders go through the L3 matching engine (bot4d.kernels.matching); simulated agents (account 0)
trade through the same engine, so queue position is real. Balances are Decimal and exact.
Faults can be injected on command (see ``inject``): 5xx answers, rejects, rate-limit storms,
sequence gaps in the depth stream, disconnects, and orders whose outcome is unknown (accepted by
the venue, but the response never arrives).
"""
from __future__ import annotations

import secrets
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import parse_qsl

import numpy as np

from bot4d.fixedpoint import decimals, from_fixed, to_fixed
from bot4d.kernels import matching as m
from bot4d.records import SIDE_ASK, SIDE_BID
from bot4d.sim.http import Request, Response
from bot4d.venues.binance import sign

AGENT_ACCOUNT = 0
ORDER_TYPES = {
    "LIMIT": m.T_LIMIT, "MARKET": m.T_MARKET, "LIMIT_MAKER": m.T_LIMIT_MAKER,
    "STOP_LOSS": m.T_STOP_LOSS, "STOP_LOSS_LIMIT": m.T_STOP_LOSS_LIMIT,
    "TAKE_PROFIT": m.T_TAKE_PROFIT, "TAKE_PROFIT_LIMIT": m.T_TAKE_PROFIT_LIMIT,
}
TYPE_NAMES = {v: k for k, v in ORDER_TYPES.items()}
TIFS = {"GTC": m.TIF_GTC, "IOC": m.TIF_IOC, "FOK": m.TIF_FOK}
TIF_NAMES = {v: k for k, v in TIFS.items()}
STP_MODES = {"NONE": m.STP_NONE, "EXPIRE_TAKER": m.STP_EXPIRE_TAKER,
             "EXPIRE_MAKER": m.STP_EXPIRE_MAKER, "EXPIRE_BOTH": m.STP_EXPIRE_BOTH,
             "DECREMENT": m.STP_DECREMENT}
SIDES = {"BUY": SIDE_BID, "SELL": SIDE_ASK}
SIDE_NAMES = {v: k for k, v in SIDES.items()}
PRICED = {m.T_LIMIT, m.T_LIMIT_MAKER, m.T_STOP_LOSS_LIMIT, m.T_TAKE_PROFIT_LIMIT}
STOPS = {m.T_STOP_LOSS, m.T_STOP_LOSS_LIMIT, m.T_TAKE_PROFIT, m.T_TAKE_PROFIT_LIMIT}

# request weights (Binance documents them per endpoint)
WEIGHTS = {("GET", "/api/v3/ping"): 1, ("GET", "/api/v3/time"): 1,
           ("GET", "/api/v3/exchangeInfo"): 20, ("GET", "/api/v3/depth"): 5,
           ("POST", "/api/v3/order"): 1, ("DELETE", "/api/v3/order"): 1,
           ("POST", "/api/v3/order/cancelReplace"): 1,
           ("POST", "/api/v3/orderList/oco"): 1, ("DELETE", "/api/v3/orderList"): 1,
           ("GET", "/api/v3/openOrderList"): 6,
           ("GET", "/api/v3/order"): 4, ("GET", "/api/v3/openOrders"): 6,
           ("GET", "/api/v3/account"): 20, ("GET", "/api/v3/myTrades"): 20,
           ("GET", "/api/v3/account/commission"): 20,
           ("POST", "/api/v3/userDataStream"): 2,
           ("PUT", "/api/v3/userDataStream"): 2, ("DELETE", "/api/v3/userDataStream"): 2}

_D8 = Decimal("0.00000001")


def _fmt(d: Decimal) -> str:
    """Binance formats quantities and prices with 8 decimals."""
    return format(d.quantize(_D8), "f")


class ApiError(Exception):
    def __init__(self, http: int, code: int, msg: str, data: dict | None = None):
        super().__init__(msg)
        self.http, self.code, self.msg, self.data = http, code, msg, data


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    # the rest of the symbol's filters (filters.md), advertised in exchangeInfo and enforced
    max_price: Decimal = Decimal("1000000")
    max_notional: Decimal = Decimal("9000000")
    # PERCENT_PRICE_BY_SIDE bidMultiplierUp, bidMultiplierDown, askMultiplierUp, askMultiplierDown
    # around the last trade price (avgPriceMins 0: "the last price is used"); None: no such filter
    percent_by_side: tuple[str, str, str, str] | None = ("5", "0.2", "5", "0.2")
    max_num_orders: int = 200

    @property
    def price_scale(self) -> int:
        return decimals(self.tick_size)

    @property
    def qty_scale(self) -> int:
        return decimals(self.step_size)


@dataclass
class Account:
    index: int
    api_key: str
    secret: str
    free: dict[str, Decimal]
    locked: dict[str, Decimal] = field(default_factory=dict)
    fee_asset: str = ""   # commission paid in this asset (e.g. BNB) while it lasts; "": the quote
    update_ms: int = 0    # the venue's time of the last balance change (GET /api/v3/account updateTime)


@dataclass
class OrderInfo:
    order_id: int
    symbol: str
    account: int
    client_order_id: str
    side: int
    otype: int
    tif: int
    price: Decimal
    qty: Decimal
    stop: Decimal
    stp: str
    time_ms: int
    status: str = "NEW"
    cum_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_ms: int = 0
    lock_asset: str = ""
    lock_left: Decimal = Decimal(0)
    open: bool = True        # still on the venue's books (resting or waiting for its trigger)
    triggered: bool = False  # a stop order whose condition was met
    list_id: int = -1        # the order list (OCO) this order is a leg of; -1: none
    peer: int = 0            # the OCO's other leg (order id); 0: none
    expiry_reason: str = ""  # executionReport eR (OCO_TRIGGER: the other leg started working)

    @property
    def working(self) -> bool:
        """Binance's isWorking: on the book (a stop order only once triggered)."""
        return self.open and (self.otype not in STOPS or self.triggered)

    def as_json(self, spec: SymbolSpec) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": self.list_id,
            "clientOrderId": self.client_order_id, "price": _fmt(self.price),
            "origQty": _fmt(self.qty), "executedQty": _fmt(self.cum_qty),
            "cummulativeQuoteQty": _fmt(self.cum_quote), "status": self.status,
            "timeInForce": TIF_NAMES.get(self.tif, "GTC"), "type": TYPE_NAMES[self.otype],
            "side": SIDE_NAMES[self.side], "stopPrice": _fmt(self.stop),
            "time": self.time_ms, "updateTime": self.update_ms or self.time_ms,
            "isWorking": self.working, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": self.stp,
        }


class RateLimiter:
    """Request weight per client in fixed one-minute windows, then 429, then a growing 418 ban."""

    def __init__(self, limit: int = 6000, ban_s: int = 120):
        self.limit = limit
        self.ban_s = ban_s
        self.used: dict[str, tuple[int, int]] = {}   # client -> (window minute, weight)
        self.strikes: dict[str, int] = {}            # requests made while told to back off
        self.banned_until: dict[str, float] = {}

    def charge(self, client: str, weight: int, now_s: float) -> tuple[int, Response | None]:
        until = self.banned_until.get(client, 0.0)
        if now_s < until:
            return 0, Response.json(418, {"code": -1003, "msg": f"Way too much request weight used; IP banned until {int(until * 1000)}. Please use WebSocket Streams for live updates to avoid bans."},
                                    {"Retry-After": str(int(until - now_s) + 1)})
        minute = int(now_s // 60)
        w_min, used = self.used.get(client, (minute, 0))
        if w_min != minute:
            used = 0
            self.strikes[client] = 0
        if used + weight > self.limit:
            retry = 60 - int(now_s % 60)
            strikes = self.strikes.get(client, 0) + 1
            self.strikes[client] = strikes
            if strikes > 3:  # kept hammering after 429s: ban, longer each time
                self.banned_until[client] = now_s + self.ban_s
                self.ban_s *= 2
            self.used[client] = (minute, used)
            return used, Response.json(429, {"code": -1003, "msg": f"Too much request weight used; current limit is {self.limit} request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."},
                                       {"Retry-After": str(retry)})
        self.used[client] = (minute, used + weight)
        return used + weight, None


class BinanceVenue:
    """Exchange state plus Binance's REST semantics; transports call ``handle`` and subscribe."""

    def __init__(self, symbols: list[SymbolSpec], *, clock_ns: Callable[[], int] = time.time_ns,
                 weight_limit: int = 6000, max_orders: int = 1 << 16, max_levels: int = 8192):
        self.specs = {s.symbol: s for s in symbols}
        self.spec_list = list(symbols)
        self.sym_index = {s.symbol: i for i, s in enumerate(symbols)}
        self.clock_ns = clock_ns
        self.engine = m.make_engine(len(symbols), max_levels=max_levels, max_orders=max_orders,
                                    max_stops=1024, n_accounts=64)
        for i, s in enumerate(symbols):
            ps, qs = s.price_scale, s.qty_scale
            self.engine.tick[i] = to_fixed(s.tick_size, ps)
            self.engine.step[i] = to_fixed(s.step_size, qs)
            self.engine.min_qty[i] = to_fixed(s.min_qty, qs)
            self.engine.max_qty[i] = to_fixed(s.max_qty, qs)
            self.engine.min_notional[i] = to_fixed(s.min_notional, ps + qs)
        self.accounts: dict[str, Account] = {}
        self.account_by_index: dict[int, Account] = {}
        self.orders: dict[int, OrderInfo] = {}
        self.open_by_client: dict[tuple[int, str], int] = {}
        self.next_order_id = 1
        self.update_id = {s.symbol: 1000 for s in symbols}
        self.limiter = RateLimiter(weight_limit)
        self.listen_keys: dict[str, int] = {}
        self.market_listeners: list[Callable[[str, dict], None]] = []
        self.user_listeners: list[Callable[[str, dict], None]] = []  # (listenKey, event)
        self.faults: dict[str, int] = {}
        self.disconnect_hooks: list[Callable[[], None]] = []
        self.unknown_outcome_orders: list[int] = []
        self.places_by_client: dict[tuple[int, str], int] = {}  # (account, client order id) -> requests
        self.trades_by_order: dict[int, list[dict[str, Any]]] = {}  # GET /api/v3/myTrades
        # the same trades per (account, symbol), in trade-id order (the engine numbers trades
        # increasingly): myTrades' fromId and "most recent" need no scan of every order
        self.trades_by_account: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self.cancel_replaces = 0  # POST /api/v3/order/cancelReplace requests (GET /sim/stats)
        # order lists (OCO): id -> {"symbol", "account", "orders": [order ids], "client_id", "status"}
        self.order_lists: dict[int, dict[str, Any]] = {}
        self.next_list_id = 1
        self.oco_places = 0       # POST /api/v3/orderList/oco requests accepted (GET /sim/stats)
        self._oco_due: list[int] = []   # OCO legs to take out after the engine events at hand
        # what GET /sim/stats shows of order entry: POST /api/v3/order requests per symbol, filter
        # failures by message, accepted orders per selfTradePreventionMode
        self.order_requests: dict[str, int] = {}
        self.filter_failures: dict[str, int] = {}
        self.stp_modes: dict[str, int] = {}
        self.clock_offset_ns = 0  # the venue's clock ahead of this machine's (fault "clock_offset")

    # ---- set-up ------------------------------------------------------------------------------
    def add_account(self, api_key: str, secret: str, balances: dict[str, str], fee_asset: str = "") -> Account:
        """``fee_asset``: the account pays commission in that asset (Binance's BNB discount
        option, without the discount) at its price in the trade's quote asset, which the venue
        must serve as a symbol ``<fee_asset><quote>``; while its balance lasts, else in the quote."""
        if fee_asset and not any(s.base == fee_asset for s in self.spec_list):
            raise ValueError(f"fee asset {fee_asset} has no price here: no {fee_asset}<quote> symbol")
        idx = len(self.accounts) + 1  # 0 is the agents'
        acct = Account(idx, api_key, secret, {a: Decimal(v) for a, v in balances.items()}, fee_asset=fee_asset)
        self.accounts[api_key] = acct
        self.account_by_index[idx] = acct
        return acct

    def set_fees(self, account: int, maker_rate: str, taker_rate: str) -> None:
        self.engine.fee_maker[account] = to_fixed(maker_rate, 8)
        self.engine.fee_taker[account] = to_fixed(taker_rate, 8)

    # ---- faults --------------------------------------------------------------------------------
    FAULTS = ("http_5xx", "reject_orders", "rate_limit_storm", "depth_gap", "disconnect",
              "unknown_outcome", "duplicate_fill", "reject_stops")

    def inject(self, kind: str, count: int = 1) -> None:
        """Arm a fault for the next `count` occurrences (disconnect acts at once)."""
        if kind not in self.FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(self.FAULTS)}")
        if count < 1:
            raise ValueError("fault count must be >= 1")
        if kind == "disconnect":
            for hook in list(self.disconnect_hooks):
                hook()
            return
        self.faults[kind] = self.faults.get(kind, 0) + count

    def _take_fault(self, kind: str) -> bool:
        n = self.faults.get(kind, 0)
        if n:
            self.faults[kind] = n - 1
            return True
        return False

    # ---- REST ----------------------------------------------------------------------------------
    def now_ns(self) -> int:
        """The venue's clock: this machine's plus the injected offset."""
        return self.clock_ns() + self.clock_offset_ns

    def handle(self, req: Request) -> Response:
        now_ns = self.now_ns()
        key = (req.method, req.path)
        weight = WEIGHTS.get(key)
        if weight is None:
            if any(p == req.path for _, p in WEIGHTS):
                return Response.json(405, {"code": -1000, "msg": f"Method {req.method} not allowed on {req.path}."})
            return Response.json(404, {"code": -1000, "msg": f"Unknown endpoint {req.path}."})
        client = req.peer.rsplit(":", 1)[0]
        if self._take_fault("rate_limit_storm"):
            used, limited = self.limiter.limit + 1, Response.json(429, {"code": -1003, "msg": "Too much request weight used; current limit is %d request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API." % self.limiter.limit}, {"Retry-After": "1"})
            self.limiter.strikes[client] = self.limiter.strikes.get(client, 0) + 1
        else:
            used, limited = self.limiter.charge(client, weight, now_ns / 1e9)
        if limited is not None:
            return limited
        hdr = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if self._take_fault("http_5xx"):
            return Response.json(503, {"code": -1008, "msg": "Server is currently overloaded with other requests. Please try again in a few minutes."}, hdr)
        try:
            params = self._params(req)
            body = self._route(req, params, now_ns)
        except ApiError as e:
            err: dict[str, Any] = {"code": e.code, "msg": e.msg}
            if e.data is not None:
                err["data"] = e.data
            return Response.json(e.http, err, hdr)
        if isinstance(body, Response):
            body.headers.update(hdr)
            return body
        return Response.json(200, body, hdr)

    @staticmethod
    def _params(req: Request) -> dict[str, str]:
        try:
            q = parse_qsl(req.query, keep_blank_values=True, strict_parsing=bool(req.query))
            b = parse_qsl(req.body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(req.body))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        out: dict[str, str] = {}
        for k, v in q + b:
            if k in out:
                raise ApiError(400, -1101, f"Duplicate values for parameter '{k}'.")
            out[k] = v
        return out

    def _route(self, req: Request, p: dict[str, str], now_ns: int) -> Any:
        path, meth = req.path, req.method
        if path == "/api/v3/ping":
            return {}
        if path == "/api/v3/time":
            return {"serverTime": now_ns // 1_000_000}
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(now_ns)
        if path == "/api/v3/depth":
            return self.depth_snapshot(self._symbol(p), int(self._int(p, "limit", 100)))
        if path == "/api/v3/userDataStream":
            acct = self._api_key(req)
            if meth == "POST":
                lk = secrets.token_urlsafe(45)[:60]
                self.listen_keys[lk] = acct.index
                return {"listenKey": lk}
            lk = self._req(p, "listenKey")
            if self.listen_keys.get(lk) != acct.index:
                raise ApiError(400, -1125, "This listenKey does not exist.")
            if meth == "DELETE":
                del self.listen_keys[lk]
            return {}
        acct = self._signed(req, p, now_ns)
        if path == "/api/v3/orderList/oco":
            return self._new_oco(acct, p, now_ns)
        if path == "/api/v3/orderList":
            return self._cancel_list(acct, p, now_ns)
        if path == "/api/v3/openOrderList":
            return [self._list_json(lid) for lid, lst in self.order_lists.items()
                    if lst["account"] == acct.index and lst["status"] == "EXECUTING"]
        if path == "/api/v3/order/cancelReplace":
            return self._cancel_replace(acct, p, now_ns)
        if path == "/api/v3/order":
            if meth == "POST":
                return self._new_order(acct, p, now_ns)
            if meth == "DELETE":
                return self._cancel_order(acct, p, now_ns)
            return self._find_order(acct, p).as_json(self.specs[p["symbol"]])
        if path == "/api/v3/openOrders":
            sym = p.get("symbol")
            if sym is not None:
                self._symbol(p)
            return [o.as_json(self.specs[o.symbol]) for o in self.orders.values()
                    if o.account == acct.index and o.open and (sym is None or o.symbol == sym)]
        if path == "/api/v3/account":
            assets = sorted(set(acct.free) | set(acct.locked))
            return {"makerCommission": 0, "takerCommission": 0, "canTrade": True,
                    "canWithdraw": False, "canDeposit": False, "updateTime": acct.update_ms or now_ns // 1_000_000,
                    "accountType": "SPOT", "permissions": ["SPOT"],
                    "balances": [{"asset": a, "free": _fmt(acct.free.get(a, Decimal(0))),
                                  "locked": _fmt(acct.locked.get(a, Decimal(0)))} for a in assets]}
        if path == "/api/v3/account/commission":
            return self._commission(acct, p)
        if path == "/api/v3/myTrades":
            return self._my_trades(acct, p)
        raise ApiError(404, -1000, "Unknown endpoint.")

    # myTrades' optional parameters: the combinations Binance accepts (anything else is -1128)
    MY_TRADES_COMBOS = (frozenset(), frozenset({"orderId"}), frozenset({"startTime"}),
                        frozenset({"endTime"}), frozenset({"fromId"}),
                        frozenset({"startTime", "endTime"}), frozenset({"orderId", "fromId"}))
    DAY_MS = 86_400_000

    def _my_trades(self, acct: Account, p: dict[str, str]) -> list[dict[str, Any]]:
        """Binance's account trade list (rest-api.md, "Account trade list"), oldest first:
        ``symbol`` required; ``orderId`` one order's trades; ``fromId`` trades with id >= fromId;
        ``startTime`` / ``endTime`` (ms, inclusive, at most 24 hours apart: -1127); ``limit``
        default 500, at most 1000. Without ``fromId`` or a time, the most recent ``limit`` trades.
        Only the parameter combinations Binance lists are accepted (-1128 otherwise)."""
        sym = self._symbol(p)
        limit = self._int(p, "limit", 500)
        if not 1 <= limit <= 1000:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'.")
        given = frozenset(k for k in ("orderId", "fromId", "startTime", "endTime") if k in p)
        if given not in self.MY_TRADES_COMBOS:
            raise ApiError(400, -1128, "Combination of optional parameters invalid.")
        trades = self.trades_by_account.get((acct.index, sym), [])
        if "orderId" in p:
            info = self.orders.get(self._int(p, "orderId"))
            if info is None or info.account != acct.index or info.symbol != sym:
                return []
            trades = self.trades_by_order.get(info.order_id, [])
        if "fromId" in p:
            i = bisect_left(trades, self._int(p, "fromId"), key=lambda t: t["id"])
            return trades[i:i + limit]
        if "startTime" in p or "endTime" in p:
            start = self._int(p, "startTime", 0)
            end = self._int(p, "endTime", 1 << 62)
            if "startTime" in p and "endTime" in p and end - start > self.DAY_MS:
                raise ApiError(400, -1127, "More than 24 hours between startTime and endTime.")
            window = [t for t in trades if start <= t["time"] <= end]
            return window[:limit] if "startTime" in p else window[-limit:]
        return trades[-limit:]

    # ---- parameter helpers ---------------------------------------------------------------------
    @staticmethod
    def _req(p: dict[str, str], name: str) -> str:
        v = p.get(name)
        if v is None or v == "":
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return v

    def _int(self, p: dict[str, str], name: str, default: int | None = None) -> int:
        v = p.get(name)
        if v is None:
            if default is None:
                self._req(p, name)
            return default  # type: ignore[return-value]
        if not v.isdigit():
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(v)

    def _dec(self, p: dict[str, str], name: str) -> Decimal:
        v = self._req(p, name)
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.") from None
        if not d.is_finite() or d < 0 or "e" in v.lower():
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")
        return d

    def _symbol(self, p: dict[str, str]) -> str:
        s = self._req(p, "symbol")
        if s not in self.specs:
            raise ApiError(400, -1121, "Invalid symbol.")
        return s

    def _api_key(self, req: Request) -> Account:
        key = req.headers.get("x-mbx-apikey")
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        acct = self.accounts.get(key)
        if acct is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return acct

    def _signed(self, req: Request, p: dict[str, str], now_ns: int) -> Account:
        acct = self._api_key(req)
        sig = p.get("signature")
        if not sig:
            raise ApiError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        # totalParams: the query string concatenated with the body, signature itself excluded
        q = "&".join(kv for kv in req.query.split("&") if not kv.startswith("signature="))
        b = "&".join(kv for kv in req.body.decode("ascii").split("&") if not kv.startswith("signature="))
        if not secrets.compare_digest(sign(q + b, acct.secret), sig):
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        ts = self._int(p, "timestamp")
        rw = self._int(p, "recvWindow", 5000)
        if rw > 60000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now_ms = now_ns // 1_000_000
        if ts >= now_ms + 1000 or now_ms - ts > rw:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return acct

    # ---- market data ---------------------------------------------------------------------------
    def _levels(self, i: int, side: int, limit: int) -> list[list[str]]:
        spec = self.spec_list[i]
        ps, qs = spec.price_scale, spec.qty_scale
        return [[_fmt(from_fixed(px, ps)), _fmt(from_fixed(q, qs))]
                for px, q in m.book_levels(self.engine, i, side)[:limit]]

    def depth_snapshot(self, symbol: str, limit: int = 100) -> dict[str, Any]:
        if limit < 1 or limit > 5000:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.")
        i = self.sym_index[symbol]
        return {"lastUpdateId": self.update_id[symbol], "bids": self._levels(i, SIDE_BID, limit),
                "asks": self._levels(i, SIDE_ASK, limit)}

    def _exchange_info(self, now_ns: int) -> dict[str, Any]:
        syms = []
        for s in self.specs.values():
            syms.append({
                "symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "quoteAsset": s.quote,
                "baseAssetPrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": list(ORDER_TYPES), "ocoAllowed": False,
                "isSpotTradingAllowed": True, "permissions": ["SPOT"],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": list(STP_MODES),
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": _fmt(s.tick_size), "maxPrice": _fmt(s.max_price), "tickSize": _fmt(s.tick_size)},
                    {"filterType": "LOT_SIZE", "minQty": _fmt(s.min_qty), "maxQty": _fmt(s.max_qty), "stepSize": _fmt(s.step_size)},
                    {"filterType": "NOTIONAL", "minNotional": _fmt(s.min_notional), "applyMinToMarket": False, "maxNotional": _fmt(s.max_notional), "applyMaxToMarket": False, "avgPriceMins": 5},
                    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": s.max_num_orders},
                ] + ([{"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": s.percent_by_side[0],
                       "bidMultiplierDown": s.percent_by_side[1], "askMultiplierUp": s.percent_by_side[2],
                       "askMultiplierDown": s.percent_by_side[3], "avgPriceMins": 0}]
                     if s.percent_by_side is not None else []),
            })
        return {"timezone": "UTC", "serverTime": now_ns // 1_000_000,
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limiter.limit}],
                "exchangeFilters": [], "symbols": syms}

    # ---- orders --------------------------------------------------------------------------------
    def _new_order(self, acct: Account, p: dict[str, str], now_ns: int, *, list_id: int = -1,
                   lock: bool = True) -> Any:
        """POST /api/v3/order; also one leg of an order list (``list_id``; ``lock=False``: the
        list's lock is held by its other leg)."""
        sym = self._symbol(p)
        spec = self.specs[sym]
        side = SIDES.get(self._req(p, "side"))
        if side is None:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'side'; legal range is 'BUY, SELL'.")
        otype = ORDER_TYPES.get(self._req(p, "type"))
        if otype is None:
            raise ApiError(400, -1116, "Invalid orderType.")
        tif = 0
        if otype in PRICED and otype != m.T_LIMIT_MAKER:
            tif = TIFS.get(self._req(p, "timeInForce"), -1)
            if tif < 0:
                raise ApiError(400, -1115, "Invalid timeInForce.")
        qty = self._dec(p, "quantity")
        price = self._dec(p, "price") if otype in PRICED else Decimal(0)
        stop = self._dec(p, "stopPrice") if otype in STOPS else Decimal(0)
        stp = p.get("selfTradePreventionMode", "EXPIRE_MAKER")
        if stp not in STP_MODES:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'selfTradePreventionMode'.")
        self.order_requests[sym] = self.order_requests.get(sym, 0) + 1
        try:
            self._check_filters(acct, spec, side, otype, qty, price, stop)
        except ApiError as e:
            self.filter_failures[e.msg] = self.filter_failures.get(e.msg, 0) + 1
            raise
        cid = p.get("newClientOrderId") or f"sim{secrets.token_hex(8)}"
        # a client that resends an order after an unknown outcome shows here (GET /sim/stats)
        self.places_by_client[(acct.index, cid)] = self.places_by_client.get((acct.index, cid), 0) + 1
        if (acct.index, cid) in self.open_by_client:
            raise ApiError(400, -2010, "Duplicate order sent.")
        if self._take_fault("reject_orders"):
            raise ApiError(400, -2010, "Order was rejected by the simulated venue (injected fault).")
        if otype in STOPS and self._take_fault("reject_stops"):
            raise ApiError(400, -2010, "Stop order was rejected by the simulated venue (injected fault).")
        ps, qs = spec.price_scale, spec.qty_scale
        try:
            q_units = to_fixed(qty, qs)
            px_units = to_fixed(price, ps)
            st_units = to_fixed(stop, ps)
        except ValueError:
            # finer than the instrument's step: Binance reports the filter that fails
            msg = "Filter failure: LOT_SIZE" if qty != qty.quantize(spec.step_size) else "Filter failure: PRICE_FILTER"
            self.filter_failures[msg] = self.filter_failures.get(msg, 0) + 1
            raise ApiError(400, -1013, msg) from None

        # balance check and lock (exact Decimal); market buys are checked against the book
        lock_asset, lock_amt = self._lock_needed(spec, acct, side, otype, qty, price, stop)
        if not lock:
            lock_amt = Decimal(0)
        if acct.free.get(lock_asset, Decimal(0)) < lock_amt:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")

        oid = self.next_order_id
        self.next_order_id += 1
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        o["op"], o["side"], o["otype"], o["tif"], o["stp"] = m.OP_NEW, side, otype, tif, STP_MODES[stp]
        o["instrument"], o["account"], o["ts_ns"], o["order_id"] = self.sym_index[sym], acct.index, now_ns, oid
        o["price"], o["qty"], o["stop_price"] = px_units, q_units, st_units
        info = OrderInfo(oid, sym, acct.index, cid, side, otype, tif, price, qty, stop, stp,
                         now_ns // 1_000_000, lock_asset=lock_asset, lock_left=lock_amt, list_id=list_id)
        self.orders[oid] = info
        if lock_amt:
            acct.update_ms = now_ns // 1_000_000
            acct.free[lock_asset] -= lock_amt
            acct.locked[lock_asset] = acct.locked.get(lock_asset, Decimal(0)) + lock_amt
        ev = m.submit(self.engine, o)
        rejected = ev[(ev["order_id"] == oid) & (ev["kind"] == m.E_REJECTED)]
        if rejected.size:
            self._unlock(acct, info)
            del self.orders[oid]
            code, msg = m.BINANCE_REJECTS[int(rejected[0]["code"])]
            if msg.startswith("Filter failure"):
                self.filter_failures[msg] = self.filter_failures.get(msg, 0) + 1
            raise ApiError(400, code, msg)
        self.stp_modes[stp] = self.stp_modes.get(stp, 0) + 1
        self.open_by_client[(acct.index, cid)] = oid
        fills = self.apply_events(ev, now_ns)
        if self._take_fault("unknown_outcome"):
            self.unknown_outcome_orders.append(oid)
            return Response(504, silent=True)  # accepted, but the answer never arrives
        resp = info.as_json(spec)
        resp["transactTime"] = now_ns // 1_000_000
        resp["workingTime"] = now_ns // 1_000_000 if info.working else -1
        resp["fills"] = fills.get(oid, [])
        rt = p.get("newOrderRespType", "FULL")
        if rt == "ACK":
            return {k: resp[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")}
        if rt == "RESULT":
            resp.pop("fills")
        return resp

    # ---- order lists (OCO) ----------------------------------------------------------------------
    OCO_BAD_PRICES = "The relationship of the prices for the orders is not correct."

    def _new_oco(self, acct: Account, p: dict[str, str], now_ns: int) -> Any:
        """POST /api/v3/orderList/oco as rest-api.md documents it ("New Order list - OCO"), for
        the pair bot4d sends: a STOP_LOSS_LIMIT and a LIMIT_MAKER of one quantity. SELL: the
        LIMIT_MAKER's price > last price > the stop's stopPrice; BUY the opposite. The list locks
        its balance once (held by the stop leg, moved to whichever leg trades). When one leg trades
        or triggers, the other expires (eR OCO_TRIGGER); cancelling one leg cancels the list;
        listStatus events on placement and when the list is ALL_DONE."""
        sym = self._symbol(p)
        spec = self.specs[sym]
        side_s = self._req(p, "side")
        if side_s not in SIDES:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'side'; legal range is 'BUY, SELL'.")
        qty = self._req(p, "quantity")
        legs: dict[str, dict[str, str]] = {}
        for pos in ("above", "below"):
            lp = {"symbol": sym, "side": side_s, "type": self._req(p, pos + "Type"), "quantity": qty,
                  "newOrderRespType": "ACK"}
            for k, name in (("Price", "price"), ("StopPrice", "stopPrice"), ("TimeInForce", "timeInForce"),
                            ("ClientOrderId", "newClientOrderId")):
                if pos + k in p:
                    lp[name] = p[pos + k]
            if "selfTradePreventionMode" in p:
                lp["selfTradePreventionMode"] = p["selfTradePreventionMode"]
            legs[pos] = lp
        by_type = {lp["type"]: lp for lp in legs.values()}
        if set(by_type) != {"STOP_LOSS_LIMIT", "LIMIT_MAKER"}:
            raise ApiError(400, -1116, "Invalid orderType: this simulator's OCO is one STOP_LOSS_LIMIT "
                                       "and one LIMIT_MAKER.")
        stop_p, take_p = by_type["STOP_LOSS_LIMIT"], by_type["LIMIT_MAKER"]
        sell = side_s == "SELL"
        if legs["above" if sell else "below"] is not take_p:
            raise ApiError(400, -1106, "The LIMIT_MAKER leg is the above order of a SELL OCO and the "
                                       "below order of a BUY OCO.")
        stop_px, take_px = self._dec(stop_p, "stopPrice"), self._dec(take_p, "price")
        i = self.sym_index[sym]
        last = int(self.engine.last_px[i])
        if last > 0:
            ref = from_fixed(last, spec.price_scale)
            if (sell and not take_px > ref > stop_px) or (not sell and not take_px < ref < stop_px):
                raise ApiError(400, -2010, self.OCO_BAD_PRICES)
        # the maker leg must not take (checked before either leg is placed)
        opp = m.best_level(self.engine, i, SIDE_BID if sell else SIDE_ASK)
        if opp:
            best = from_fixed(opp[0], spec.price_scale)
            if (sell and take_px <= best) or (not sell and take_px >= best):
                raise ApiError(400, -2010, "Order would immediately match and take.")
        lid = self.next_list_id
        self.next_list_id += 1
        first = self._new_order(acct, stop_p, now_ns, list_id=lid)
        unknown = isinstance(first, Response)
        oid1 = self.open_by_client.get((acct.index, stop_p.get("newClientOrderId", ""))) if unknown else first["orderId"]
        try:
            second = self._new_order(acct, take_p, now_ns, list_id=lid, lock=False)
        except ApiError:
            info = self.orders.get(oid1) if oid1 else None
            if info is not None and info.open:
                self._cancel_order(acct, {"symbol": sym, "orderId": str(info.order_id)}, now_ns)
            raise
        unknown = unknown or isinstance(second, Response)
        oid2 = self.open_by_client.get((acct.index, take_p.get("newClientOrderId", ""))) \
            if isinstance(second, Response) else second["orderId"]
        a, b = self.orders.get(oid1 or 0), self.orders.get(oid2 or 0)
        if a is not None and b is not None:
            a.peer, b.peer = b.order_id, a.order_id
        self.order_lists[lid] = {"symbol": sym, "account": acct.index, "status": "EXECUTING",
                                 "client_id": p.get("listClientOrderId") or f"simlist{secrets.token_hex(6)}",
                                 "orders": [x.order_id for x in (a, b) if x is not None],
                                 "time_ms": now_ns // 1_000_000}
        self.oco_places += 1
        self._list_status(lid, now_ns // 1_000_000, "EXEC_STARTED", "EXECUTING")
        # a leg that traded or triggered at once took the other out already
        self._run_oco_due(now_ns)
        if unknown:
            return Response(504, silent=True)
        out = self._list_json(lid)
        out["orderReports"] = [self.orders[o].as_json(spec) for o in self.order_lists[lid]["orders"]]
        return out

    def _list_json(self, lid: int) -> dict[str, Any]:
        lst = self.order_lists[lid]
        done = lst["status"] != "EXECUTING"
        return {"orderListId": lid, "contingencyType": "OCO",
                "listStatusType": "ALL_DONE" if done else "EXEC_STARTED",
                "listOrderStatus": "ALL_DONE" if done else "EXECUTING",
                "listClientOrderId": lst["client_id"], "transactionTime": lst["time_ms"],
                "symbol": lst["symbol"],
                "orders": [{"symbol": lst["symbol"], "orderId": o, "clientOrderId": self.orders[o].client_order_id}
                           for o in lst["orders"]]}

    def _list_status(self, lid: int, now_ms: int, ltype: str, lstatus: str) -> None:
        lst = self.order_lists[lid]
        ev = {"e": "listStatus", "E": now_ms, "s": lst["symbol"], "g": lid, "c": "OCO", "l": ltype,
              "L": lstatus, "r": "NONE", "C": lst["client_id"], "T": now_ms,
              "O": [{"s": lst["symbol"], "i": o, "c": self.orders[o].client_order_id} for o in lst["orders"]]}
        for lk, idx in list(self.listen_keys.items()):
            if idx == lst["account"]:
                for cb in list(self.user_listeners):
                    cb(lk, ev)

    def _cancel_list(self, acct: Account, p: dict[str, str], now_ns: int) -> Any:
        """DELETE /api/v3/orderList (rest-api.md "Cancel Order list"): by orderListId or
        listClientOrderId; every open leg is cancelled."""
        sym = self._symbol(p)
        if "orderListId" in p:
            lid = self._int(p, "orderListId")
        elif "listClientOrderId" in p:
            lid = next((k for k, v in self.order_lists.items() if v["client_id"] == p["listClientOrderId"]
                        and v["account"] == acct.index), -1)
        else:
            raise ApiError(400, -1102, "Param 'orderListId' or 'listClientOrderId' must be sent, but both were empty/null!")
        lst = self.order_lists.get(lid)
        if lst is None or lst["account"] != acct.index or lst["symbol"] != sym or lst["status"] != "EXECUTING":
            raise ApiError(400, -2011, "Unknown order list sent.")
        for oid in lst["orders"]:
            if self.orders[oid].open:
                self._cancel_order(acct, {"symbol": sym, "orderId": str(oid)}, now_ns)
        out = self._list_json(lid)
        out["orderReports"] = [self.orders[o].as_json(self.specs[sym]) for o in lst["orders"]]
        return out

    def _run_oco_due(self, now_ns: int) -> None:
        """Take out the OCO legs whose other leg traded, triggered or was cancelled."""
        while self._oco_due:
            oid, reason = self._oco_due.pop(0)
            info = self.orders.get(oid)
            if info is None or not info.open:
                continue
            info.expiry_reason = reason
            o = np.zeros(1, m.SIM_ORDER_DTYPE)
            o["op"], o["order_id"], o["instrument"], o["ts_ns"] = m.OP_CANCEL, oid, self.sym_index[info.symbol], now_ns
            self.apply_events(m.submit(self.engine, o), now_ns)

    def _cancel_replace(self, acct: Account, p: dict[str, str], now_ns: int) -> Any:
        """POST /api/v3/order/cancelReplace as Binance documents it (rest-api.md, "Cancel an
        Existing Order and Send a New Order"): cancel first; with STOP_ON_FAILURE a failed cancel
        stops there (-2022, new order NOT_ATTEMPTED); with ALLOW_FAILURE the new order is tried
        anyway. Both done: 200; one failed: 409 with -2021; both failed: 400 with -2022."""
        mode = self._req(p, "cancelReplaceMode")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'cancelReplaceMode'; "
                                       "legal range is 'STOP_ON_FAILURE, ALLOW_FAILURE'.")
        cp = {"symbol": self._symbol(p)}
        if "cancelOrderId" in p:
            cp["orderId"] = p["cancelOrderId"]
        elif "cancelOrigClientOrderId" in p:
            cp["origClientOrderId"] = p["cancelOrigClientOrderId"]
        else:
            raise ApiError(400, -1102, "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, "
                                       "but both were empty/null!")
        self.cancel_replaces += 1
        try:
            cancel: Any = self._cancel_order(acct, cp, now_ns)
            cancel_ok = True
        except ApiError as e:
            cancel, cancel_ok = {"code": e.code, "msg": e.msg}, False
        if not cancel_ok and mode == "STOP_ON_FAILURE":
            raise ApiError(400, -2022, "Order cancel-replace failed.", {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": cancel, "newOrderResponse": None})
        np_ = {k: v for k, v in p.items() if not k.startswith("cancel")}
        try:
            new: Any = self._new_order(acct, np_, now_ns)
            new_ok = True
        except ApiError as e:
            new, new_ok = {"code": e.code, "msg": e.msg}, False
        if isinstance(new, Response):
            return new   # an injected lost answer
        data = {"cancelResult": "SUCCESS" if cancel_ok else "FAILURE",
                "newOrderResult": "SUCCESS" if new_ok else "FAILURE",
                "cancelResponse": cancel, "newOrderResponse": new}
        if cancel_ok and new_ok:
            return data
        if not cancel_ok and not new_ok:
            raise ApiError(400, -2022, "Order cancel-replace failed.", data)
        raise ApiError(409, -2021, "Order cancel-replace partially failed.", data)

    def _check_filters(self, acct: Account, spec: SymbolSpec, side: int, otype: int, qty: Decimal,
                       price: Decimal, stop: Decimal) -> None:
        """The symbol filters the engine does not check (filters.md), with Binance's messages:
        PRICE_FILTER minPrice/maxPrice on price and stopPrice, NOTIONAL maxNotional,
        PERCENT_PRICE_BY_SIDE around the last trade price, MAX_NUM_ORDERS. (Tick, step, lot
        bounds and minNotional are the engine's.)"""
        for px in ([price] if otype in PRICED else []) + ([stop] if otype in STOPS else []):
            if px < spec.tick_size or px > spec.max_price:
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        if otype in PRICED and price * qty > spec.max_notional:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        if otype in PRICED and spec.percent_by_side is not None:
            last = int(self.engine.last_px[self.sym_index[spec.symbol]])
            if last > 0:
                ref = from_fixed(last, spec.price_scale)
                up, down = spec.percent_by_side[:2] if side == SIDE_BID else spec.percent_by_side[2:]
                if price > ref * Decimal(up) or price < ref * Decimal(down):
                    raise ApiError(400, -1013, "Filter failure: PERCENT_PRICE_BY_SIDE")
        n_open = sum(1 for o in self.orders.values() if o.open and o.account == acct.index and o.symbol == spec.symbol)
        if n_open >= spec.max_num_orders:
            raise ApiError(400, -1013, "Filter failure: MAX_NUM_ORDERS")

    def _price_in(self, asset: str, quote: str) -> Decimal | None:
        """``asset``'s price in ``quote``: the last trade of symbol <asset><quote>, else its mid."""
        spec = self.specs.get(asset + quote)
        if spec is None:
            return None
        i = self.sym_index[spec.symbol]
        last = int(self.engine.last_px[i])
        if last <= 0:
            bb, ba = m.best_level(self.engine, i, SIDE_BID), m.best_level(self.engine, i, SIDE_ASK)
            if not bb or not ba:
                return None
            last = (bb[0] + ba[0]) // 2
        return from_fixed(last, spec.price_scale)

    def _charge_fee(self, acct: Account, spec: SymbolSpec, commission: Decimal) -> tuple[Decimal, str, Decimal]:
        """(commission, its asset, the part taken from the quote): an account that pays in its fee
        asset pays ``commission / price`` of it (rounded up to 8 decimals) while its free balance
        covers that; otherwise the quote pays, as on Binance when BNB runs short."""
        fa = acct.fee_asset
        if not fa or fa == spec.quote or commission <= 0:
            return commission, spec.quote, commission
        px = self._price_in(fa, spec.quote)
        if px is None or px <= 0:
            return commission, spec.quote, commission
        amt = (commission / px).quantize(_D8, rounding="ROUND_CEILING")
        if acct.free.get(fa, Decimal(0)) < amt:
            return commission, spec.quote, commission
        acct.free[fa] -= amt
        return amt, fa, Decimal(0)

    def _commission(self, acct: Account, p: dict[str, str]) -> dict[str, Any]:
        """GET /api/v3/account/commission (rest-api.md "Query Commission Rates"): the account's
        maker/taker rates as standardCommission; no buyer/seller, tax or special commission here,
        and no BNB discount (``discount`` is reported as not applied)."""
        sym = self._symbol(p)
        z = "0.00000000"
        return {"symbol": sym,
                "standardCommission": {"maker": _fmt(from_fixed(int(self.engine.fee_maker[acct.index]), 8)),
                                       "taker": _fmt(from_fixed(int(self.engine.fee_taker[acct.index]), 8)),
                                       "buyer": z, "seller": z},
                "specialCommission": {"maker": z, "taker": z, "buyer": z, "seller": z},
                "taxCommission": {"maker": z, "taker": z, "buyer": z, "seller": z},
                "discount": {"enabledForAccount": bool(acct.fee_asset), "enabledForSymbol": True,
                             "discountAsset": acct.fee_asset or "BNB", "discount": z}}

    def _lock_needed(self, spec: SymbolSpec, acct: Account, side: int, otype: int, qty: Decimal,
                     price: Decimal, stop: Decimal) -> tuple[str, Decimal]:
        """What a new order locks. Fees are charged in the quote asset (the engine's fee model),
        so a buy also reserves its worst-case (taker) fee."""
        if side == SIDE_ASK:
            return spec.base, qty
        rate = max(from_fixed(int(self.engine.fee_taker[acct.index]), 8),
                   from_fixed(int(self.engine.fee_maker[acct.index]), 8), Decimal(0))
        if otype in PRICED:
            cost = price * qty
            return spec.quote, cost + (cost * rate).quantize(_D8, rounding="ROUND_CEILING")
        # market buy (or a stop that becomes one): what the book would cost now, or at the stop
        cost = Decimal(0)
        left = qty
        i = self.sym_index[spec.symbol]
        for px, q in m.book_levels(self.engine, i, SIDE_ASK):
            if left <= 0:
                break
            pxd, qd = from_fixed(px, spec.price_scale), from_fixed(q, spec.qty_scale)
            take = min(left, qd)
            cost += take * pxd
            left -= take
        if otype in STOPS:
            cost = max(cost, stop * qty)
        # (an unfillable remainder of a market order expires, so the cost of what fills is enough)
        return spec.quote, cost + (cost * rate).quantize(_D8, rounding="ROUND_CEILING")

    def _unlock(self, acct: Account, info: OrderInfo) -> None:
        if info.lock_left:
            acct.locked[info.lock_asset] -= info.lock_left
            acct.free[info.lock_asset] += info.lock_left
            info.lock_left = Decimal(0)

    def _find_order(self, acct: Account, p: dict[str, str]) -> OrderInfo:
        sym = self._symbol(p)
        if "orderId" in p:
            info = self.orders.get(self._int(p, "orderId"))
        elif "origClientOrderId" in p:
            oid = self.open_by_client.get((acct.index, p["origClientOrderId"]))
            if oid is None:  # closed orders are found by scanning (rare in the simulator)
                oid = next((o.order_id for o in self.orders.values() if o.account == acct.index
                            and o.client_order_id == p["origClientOrderId"]), None)
            info = self.orders.get(oid) if oid is not None else None
        else:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if info is None or info.account != acct.index or info.symbol != sym:
            raise ApiError(400, -2013, "Order does not exist.")
        return info

    def _cancel_order(self, acct: Account, p: dict[str, str], now_ns: int) -> Any:
        try:
            info = self._find_order(acct, p)
        except ApiError as e:
            if e.code == -2013:
                raise ApiError(400, -2011, "Unknown order sent.") from None
            raise
        if not info.open:
            raise ApiError(400, -2011, "Unknown order sent.")
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        o["op"], o["order_id"], o["instrument"], o["ts_ns"] = m.OP_CANCEL, info.order_id, self.sym_index[info.symbol], now_ns
        ev = m.submit(self.engine, o)
        if (ev["kind"] == m.E_REJECTED).any():
            raise ApiError(400, -2011, "Unknown order sent.")
        self.apply_events(ev, now_ns)
        out = info.as_json(self.specs[info.symbol])
        out["origClientOrderId"] = info.client_order_id
        return out

    # ---- engine events -> state, balances, streams -----------------------------------------------
    def submit_agent_orders(self, orders: np.ndarray, now_ns: int) -> None:
        """Simulated agents' flow (account 0, unlimited balance) through the same engine."""
        if orders.size:
            orders["account"] = AGENT_ACCOUNT
            self.apply_events(m.submit(self.engine, orders), now_ns)

    def apply_events(self, ev: np.ndarray, now_ns: int) -> dict[int, list[dict]]:
        """Apply engine events: order states, balances, user-data and market streams."""
        fills: dict[int, list[dict]] = {}
        dirty: dict[str, set[tuple[int, int]]] = {}
        trades: list[tuple[str, dict]] = []
        now_ms = now_ns // 1_000_000
        for e in ev:
            kind = int(e["kind"])
            i = int(e["instrument"])
            spec = self.spec_list[i]
            sym = spec.symbol
            if kind in (m.E_NEW, m.E_TRADE, m.E_CANCELED, m.E_EXPIRED, m.E_DECREMENTED, m.E_TRIGGERED):
                if kind != m.E_TRIGGERED or int(e["price"]):
                    dirty.setdefault(sym, set()).add((int(e["side"]), int(e["price"])))
            if kind == m.E_TRADE and not e["maker"]:
                buyer_is_maker = int(e["side"]) == SIDE_ASK  # taker sold into a resting buy
                trades.append((sym, {"e": "trade", "E": now_ms, "s": sym, "t": int(e["trade_id"]),
                                     "p": _fmt(from_fixed(int(e["price"]), spec.price_scale)),
                                     "q": _fmt(from_fixed(int(e["qty"]), spec.qty_scale)),
                                     "T": now_ms, "m": buyer_is_maker, "M": True}))
            info = self.orders.get(int(e["order_id"]))
            if info is None or int(e["account"]) == AGENT_ACCOUNT:
                continue
            self._apply_own(info, e, kind, spec, now_ms, fills)
        for sym, levels in dirty.items():
            self._publish_depth(sym, levels, now_ms)
        for sym, t in trades:
            for cb in list(self.market_listeners):
                cb(f"{sym.lower()}@trade", t)
        self._run_oco_due(now_ns)
        return fills

    def _apply_own(self, info: OrderInfo, e: np.void, kind: int, spec: SymbolSpec, now_ms: int,
                   fills: dict[int, list[dict]]) -> None:
        acct = self.account_by_index[info.account]
        exec_type = {m.E_NEW: "NEW", m.E_TRADE: "TRADE", m.E_CANCELED: "CANCELED",
                     m.E_EXPIRED: "EXPIRED", m.E_DECREMENTED: "TRADE_PREVENTION",
                     m.E_TRIGGERED: "NEW"}.get(kind)
        if exec_type is None:
            return
        last_q = last_p = commission = Decimal(0)
        fee_asset = spec.quote
        peer = self.orders.get(info.peer) if info.peer else None
        if kind == m.E_TRADE and peer is not None and peer.lock_left and peer.lock_asset == info.lock_asset:
            # the list's lock moves to the leg that trades
            info.lock_left += peer.lock_left
            peer.lock_left = Decimal(0)
        if peer is not None and peer.open and (kind in (m.E_TRADE, m.E_TRIGGERED, m.E_EXPIRED) or
                                               (kind == m.E_CANCELED and not info.expiry_reason)):
            # one-cancels-the-other: a leg that works (trades, triggers) or expires takes the other
            # out (EXPIRED, OCO_TRIGGER); a leg cancelled by its owner cancels the list
            self._oco_due.append((peer.order_id, "" if kind == m.E_CANCELED else "OCO_TRIGGER"))
        if kind == m.E_CANCELED and info.expiry_reason:
            exec_type = "EXPIRED"
        if kind == m.E_TRADE:
            last_q = from_fixed(int(e["qty"]), spec.qty_scale)
            last_p = from_fixed(int(e["price"]), spec.price_scale)
            commission = from_fixed(int(e["fee"]), spec.price_scale + spec.qty_scale)
            commission, fee_asset, quote_fee = self._charge_fee(acct, spec, commission)
            quote = last_p * last_q
            info.cum_qty += last_q
            info.cum_quote += quote
            if info.side == SIDE_BID:
                # pay price and fee out of the lock; a fill below the limit leaves the saving in
                # the lock, returned when the order closes
                pay = quote + quote_fee
                from_lock = min(info.lock_left, pay)
                info.lock_left -= from_lock
                acct.locked[spec.quote] -= from_lock
                acct.free[spec.quote] = acct.free.get(spec.quote, Decimal(0)) - (pay - from_lock)
                acct.free[spec.base] = acct.free.get(spec.base, Decimal(0)) + last_q
            else:
                take = min(info.lock_left, last_q)
                info.lock_left -= take
                acct.locked[spec.base] -= take
                acct.free[spec.quote] = acct.free.get(spec.quote, Decimal(0)) + quote - quote_fee
            info.status = "FILLED" if int(e["leaves_qty"]) == 0 else "PARTIALLY_FILLED"
            fills.setdefault(info.order_id, []).append(
                {"price": _fmt(last_p), "qty": _fmt(last_q), "commission": _fmt(commission),
                 "commissionAsset": fee_asset, "tradeId": int(e["trade_id"])})
            trade = {
                "symbol": info.symbol, "id": int(e["trade_id"]), "orderId": info.order_id,
                "orderListId": info.list_id, "price": _fmt(last_p), "qty": _fmt(last_q),
                "quoteQty": _fmt(quote), "commission": _fmt(commission),
                "commissionAsset": fee_asset, "time": now_ms,
                "isBuyer": info.side == SIDE_BID, "isMaker": bool(e["maker"]), "isBestMatch": True}
            self.trades_by_order.setdefault(info.order_id, []).append(trade)
            self.trades_by_account.setdefault((info.account, info.symbol), []).append(trade)
        elif kind == m.E_TRIGGERED:
            info.triggered = True
        elif kind == m.E_CANCELED:
            info.status = "EXPIRED" if info.expiry_reason else "CANCELED"
        elif kind == m.E_EXPIRED:
            info.status = "EXPIRED_IN_MATCH" if int(e["code"]) == m.EXP_STP else "EXPIRED"
        closed = info.status in ("FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH")
        if closed:
            info.open = False
            self._unlock(acct, info)
            self.open_by_client.pop((info.account, info.client_order_id), None)
        if kind == m.E_TRADE or closed:
            acct.update_ms = now_ms   # balances (or locks) changed
        info.update_ms = now_ms
        report = {
            "e": "executionReport", "E": now_ms, "s": info.symbol, "c": info.client_order_id,
            "S": SIDE_NAMES[info.side], "o": TYPE_NAMES[info.otype],
            "f": TIF_NAMES.get(info.tif, "GTC"), "q": _fmt(info.qty), "p": _fmt(info.price),
            "P": _fmt(info.stop), "F": "0.00000000", "g": info.list_id, "C": "", "x": exec_type,
            "X": info.status, "r": "NONE", "i": info.order_id, "l": _fmt(last_q),
            "z": _fmt(info.cum_qty), "L": _fmt(last_p), "n": _fmt(commission),
            "N": fee_asset if kind == m.E_TRADE else None, "T": now_ms,
            "t": int(e["trade_id"]) if kind == m.E_TRADE else -1, "w": info.working,
            "m": bool(e["maker"]) if kind == m.E_TRADE else False, "M": False,
            "O": info.time_ms, "Z": _fmt(info.cum_quote), "Y": _fmt(last_p * last_q),
            "Q": "0.00000000", "V": info.stp,
        }
        if info.expiry_reason and exec_type == "EXPIRED":
            report["eR"] = info.expiry_reason
        # a venue may deliver one execution report twice (at-least-once streams); the client
        # must count the fill once, by its trade id
        listening = [lk for lk, idx in self.listen_keys.items() if idx == info.account]
        copies = 2 if kind == m.E_TRADE and listening and self._take_fault("duplicate_fill") else 1
        for lk, idx in list(self.listen_keys.items()):
            if idx == info.account:
                for cb in list(self.user_listeners):
                    for _ in range(copies):
                        cb(lk, report)
                if kind == m.E_TRADE or closed:
                    bal = {"e": "outboundAccountPosition", "E": now_ms, "u": now_ms, "B": [
                        {"a": a, "f": _fmt(acct.free.get(a, Decimal(0))), "l": _fmt(acct.locked.get(a, Decimal(0)))}
                        for a in (spec.base, spec.quote)]}
                    for cb in list(self.user_listeners):
                        cb(lk, bal)
        lst = self.order_lists.get(info.list_id) if closed and info.list_id >= 0 else None
        if lst is not None and lst["status"] == "EXECUTING" and not any(self.orders[o].open for o in lst["orders"]):
            lst["status"] = "ALL_DONE"
            self._list_status(info.list_id, now_ms, "ALL_DONE", "ALL_DONE")

    def _publish_depth(self, sym: str, levels: set[tuple[int, int]], now_ms: int) -> None:
        i = self.sym_index[sym]
        spec = self.specs[sym]
        b, a = [], []
        for side, px in sorted(levels):
            if px <= 0:
                continue
            q = int(m.level_qty(self.engine, i, side, px))
            row = [_fmt(from_fixed(px, spec.price_scale)), _fmt(from_fixed(q, spec.qty_scale))]
            (b if side == SIDE_BID else a).append(row)
        if not b and not a:
            return
        first = self.update_id[sym] + 1
        if self._take_fault("depth_gap"):
            first += 1  # one update id is skipped: a client must notice and resync
        last = first + len(b) + len(a) - 1
        self.update_id[sym] = last
        diff = {"e": "depthUpdate", "E": now_ms, "s": sym, "U": first, "u": last, "b": b, "a": a}
        for cb in list(self.market_listeners):
            cb(f"{sym.lower()}@depth", diff)
        bb = m.best_level(self.engine, i, SIDE_BID) or (0, 0)
        ba = m.best_level(self.engine, i, SIDE_ASK) or (0, 0)
        ticker = {"u": last, "s": sym,
                  "b": _fmt(from_fixed(bb[0], spec.price_scale)), "B": _fmt(from_fixed(bb[1], spec.qty_scale)),
                  "a": _fmt(from_fixed(ba[0], spec.price_scale)), "A": _fmt(from_fixed(ba[1], spec.qty_scale))}
        for cb in list(self.market_listeners):
            cb(f"{sym.lower()}@bookTicker", ticker)
