"""Binance spot order gateway: shard commands out over signed REST, venue reports back.

The io thread hands ``ORDER_COMMAND_DTYPE`` records to :meth:`BinanceGateway.send`; answers go to
``on_reports`` as ``VENUE_REPORT_DTYPE`` arrays for the owning shard. Rules this module keeps:

* The user-data stream is the one source of order events (ACK, FILL, CANCELLED, EXPIRED,
  REJECTED). A successful REST answer emits nothing (the OMS would count a second ACK as an
  illegal transition); a REST error on a place is an RP_REJECT carrying Binance's code, on a
  cancel an RP_CANCEL_REJECT.
* An order whose outcome is unknown (timeout, connection lost after the request was written, HTTP
  5xx, -1006/-1007) is never sent again: it is looked up by client order id until found, or until
  its recvWindow has passed (then it cannot execute any more: RP_REJECT). Every path that learns an
  order's state (stream, query, reconciliation) goes through one per-order record of what was
  already reported (acked, filled quantity, trade ids, terminal), so nothing is reported twice.
* Request weight is charged before sending against a per-minute budget kept in step with
  ``X-MBX-USED-WEIGHT-1M``. Places that do not fit are rejected locally (-1003); cancels and
  reconciliation queries wait, cancels first.
* Order-entry circuit breaker: one row of the breaker kernel (``bot4d.kernels.breaker``,
  configured from ``[risk.order_entry_breaker]``) around every REST call. Consecutive failures
  (transport errors, 5xx, unknown outcomes), a failure rate over its window or slow answers open it
  for its cool-down; 429 / -1003 / -1015 open it for Retry-After (at least RATE_LIMIT_MIN_HOLD_S).
  While open, places are refused locally (-1003) and cancels and queries wait; then probe requests
  (half-open) close it or open it again. Its changes go to ``on_breaker`` as EV_BREAKER records
  (the daemon journals them and counts opens into the kill switch's breaker storm); every failed or
  refused venue call is reported to ``on_error`` (the kill switch's error storm). 418 (IP ban) and
  the CAT_HALT codes call ``on_halt`` and stop all sending.
* The API key and secret never appear in logs, exceptions, ``status()`` or reprs.
* Signed requests are stamped with the venue's time: the local clock plus the offset measured
  with ``GET /api/v3/time`` at start, every ``time_sync_interval_s`` and after a -1021, which is
  then sent once more (``bot4d.gateway.clock``). Every order carries its symbol's
  ``selfTradePreventionMode`` (``SymbolInfo.stp_mode``). A fill's commission paid in another
  asset than the quote is converted at that asset's mark (``mark_of``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

import numpy as np
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bot4d.errors import (CAT_HALT, CAT_OK, CAT_RATE_LIMIT, CAT_RECONCILE, CAT_REJECT, CAT_RETRY, CATEGORY_NAMES,
                          classify)
from bot4d.feed.backoff import BackoffPolicy
from bot4d.fixedpoint import decimals, from_fixed, to_fixed
from bot4d.gateway.clock import VenueClock
from bot4d.gateway.rest import RestClient, RestError
from bot4d.kernels import breaker as bkr
from bot4d.kernels.oms import (
    RP_ACK, RP_CANCEL_REJECT, RP_CANCELLED, RP_EXPIRED, RP_FILL, RP_FLAG_AFTER_BALANCES, RP_FLAG_FEE_GIVEN,
    RP_FLAG_RECOVERED, RP_REJECT, RP_REPLACE_REJECT, VENUE_REPORT_DTYPE,
)
from bot4d.kernels.oms_state import OT_LIMIT, OT_MARKET, OT_STOP_LIMIT, TIF_FOK, TIF_GTC, TIF_IOC, TIF_POST_ONLY
from bot4d.records import (CMD_CANCEL, CMD_PLACE, CMD_REPLACE, JOURNAL_EVENT_DTYPE, ORDER_COMMAND_DTYPE, SIDE_ASK,
                           SIDE_BID)
from bot4d.venues.binance import sign

log = logging.getLogger("bot4d.gateway.binance")

# Request weights, from each endpoint's "Weight" in
# https://developers.binance.com/docs/binance-spot-api-docs/rest-api (trading-endpoints,
# account-endpoints, general-endpoints, user-data-stream-endpoints).
W_ORDER = 1           # POST /api/v3/order
W_CANCEL_REPLACE = 1  # POST /api/v3/order/cancelReplace
W_CANCEL = 1          # DELETE /api/v3/order
W_ORDER_LIST = 1      # POST /api/v3/orderList/oco, DELETE /api/v3/orderList
W_QUERY_ORDER = 4     # GET /api/v3/order
W_OPEN_SYMBOL = 6     # GET /api/v3/openOrders with symbol
W_OPEN_ALL = 80       # GET /api/v3/openOrders without symbol
W_ACCOUNT = 20        # GET /api/v3/account
W_MY_TRADES = 20      # GET /api/v3/myTrades
W_EXCHANGE_INFO = 20  # GET /api/v3/exchangeInfo
W_LISTEN_KEY = 2      # POST/PUT/DELETE /api/v3/userDataStream
W_TIME = 1            # GET /api/v3/time
W_COMMISSION = 20     # GET /api/v3/account/commission

CLOSED, OPEN, HALF_OPEN = bkr.CLOSED, bkr.OPEN, bkr.HALF_OPEN
BREAKER_NAMES = bkr.BREAKER_STATE_NAMES
BREAKER_REASONS = {v: k[4:] for k, v in vars(bkr).items() if k.startswith("BRR_")}
RATE_LIMIT_MIN_HOLD_S = 0.5   # a Retry-After of 0 still keeps the breaker open this long

LOCAL_RATE_LIMIT = -1003   # reason on places refused locally (budget or breaker), Binance's code
NOT_SENT = -1001           # DISCONNECTED: the request never left (connect failed)
NO_SUCH_ORDER = -2013
UNKNOWN_ORDER_CANCEL = -2011
UNSUPPORTED = -1000        # commands this gateway cannot express on Binance spot (replace)
SWAP_NOT_ATTEMPTED = -2022 # the old order of a swap could not be cancelled: the new one was not
                           # sent (bot4d.kernels.protect retries it without an alarm)
# Binance answers -2010 for many refusals; "Stop price would trigger immediately." means the venue's
# last price is already through the stop (bot4d.kernels.protect then exits at market): reported
# under a code of its own so the shard can tell it from a refusal of the order itself
STOP_WOULD_TRIGGER = -20101


def _reject_code(code: int, body: Any) -> int:
    msg = body.get("msg") if isinstance(body, dict) else None
    if code == -2010 and isinstance(msg, str) and "would trigger immediately" in msg.lower():
        return STOP_WOULD_TRIGGER
    return code
UNKNOWN_OUTCOME_CODES = (-1006, -1007)
INVALID_TIMESTAMP = -1021  # outside recvWindow, or 1 s ahead of the venue's clock
EXIT_TYPES = ("MARKET", "STOP_LOSS_LIMIT")   # orders that take by nature (see _order_params' STP)

KEEPALIVE_S = 30 * 60      # Binance: a listenKey lives 60 min unless kept alive; PUT every 30
MAX_ORDERS = 1 << 12       # per-order records kept (bounded; oldest closed ones go first): a
                           # maker has tens live; a late report of an evicted order still maps by
                           # its client id, and the shard deduplicates fills by trade id
CID_MAX = 36               # newClientOrderId: ^[a-zA-Z0-9-_]{1,36}$
MAX_SHARD_DIGITS = 3
MAX_ORDER_ID_DIGITS = 19   # int64
_BOOT_RE = re.compile(r"^[A-Za-z0-9_]+$")
_CID_RE = re.compile(r"^b4([A-Za-z0-9_]+)-(\d{1,3})-(\d{1,19})$")

K_PLACE, K_CANCEL, K_QUERY = 0, 1, 2
MY_TRADES_PAGE = 1000      # myTrades' largest limit: a sweep pages through a gap 1000 trades a time
_DAEMON_BOOT_RE = re.compile(r"^[0-9a-z]{1,6}$")  # bot4d.daemon.app's boot ids: int(boot, 36) < 36**6


def _boot_number(boot: str) -> int | None:
    """An earlier run's boot id as the journal carries it (int(boot, 36)); None if it is not a
    daemon's boot id."""
    return int(boot, 36) if _DAEMON_BOOT_RE.match(boot) else None

_TIF = {TIF_GTC: "GTC", TIF_IOC: "IOC", TIF_FOK: "FOK"}
_SIDE = {SIDE_BID: "BUY", SIDE_ASK: "SELL"}


class GatewayError(Exception):
    """The gateway cannot do what was asked (start-up, bad configuration, venue refusal)."""


@dataclass(frozen=True)
class SymbolInfo:
    instrument: int
    shard: int
    symbol: str
    base: str
    quote: str
    price_scale: int   # int units: price = Decimal * 10**price_scale
    qty_scale: int
    stp_mode: str | None = None   # selfTradePreventionMode sent with every order (None: the venue's default)


async def fetch_exchange_info(rest: RestClient | str, symbols: list[str]) -> dict[str, dict]:
    """Trading rules of ``symbols`` from ``GET /api/v3/exchangeInfo``: per symbol ``tickSize``,
    ``stepSize``, ``minQty``, ``minNotional`` (Decimal), ``base``, ``quote`` (str), the scales
    they imply (``price_scale``, ``qty_scale``), ``filters`` (the list as sent), ``stp_allowed``
    and ``stp_default`` (the symbol's selfTradePreventionMode values). An unknown symbol is an
    error naming it."""
    if not symbols:
        raise ValueError("fetch_exchange_info needs at least one symbol")
    own = isinstance(rest, str)
    client = RestClient(rest, connections=1) if isinstance(rest, str) else rest
    try:
        q = urlencode({"symbols": json.dumps(symbols, separators=(",", ":"))})
        resp = await client.request("GET", "/api/v3/exchangeInfo", query=q)
        try:
            data = resp.json()
        except ValueError:
            raise GatewayError(f"exchangeInfo: HTTP {resp.status}, body is not JSON") from None
        if resp.status != 200:
            code = data.get("code") if isinstance(data, dict) else None
            raise GatewayError(f"exchangeInfo: HTTP {resp.status} code {code}: "
                               f"{data.get('msg') if isinstance(data, dict) else ''}")
        by_name = {s.get("symbol"): s for s in data.get("symbols", []) if isinstance(s, dict)}
        missing = [s for s in symbols if s not in by_name]
        if missing:
            raise GatewayError(f"exchangeInfo: unknown symbol(s) {', '.join(missing)}")
        out: dict[str, dict] = {}
        for sym in symbols:
            s = by_name[sym]
            flt = {f.get("filterType"): f for f in s.get("filters", [])}
            try:
                tick = Decimal(flt["PRICE_FILTER"]["tickSize"])
                step = Decimal(flt["LOT_SIZE"]["stepSize"])
                min_qty = Decimal(flt["LOT_SIZE"]["minQty"])
                notional = flt.get("NOTIONAL") or flt.get("MIN_NOTIONAL") or {}
                min_notional = Decimal(notional.get("minNotional", "0"))
            except (KeyError, InvalidOperation, TypeError) as e:
                raise GatewayError(f"exchangeInfo: {sym} filters malformed ({e!r})") from None
            out[sym] = {"tickSize": tick, "stepSize": step, "minQty": min_qty,
                        "minNotional": min_notional, "base": str(s.get("baseAsset")),
                        "quote": str(s.get("quoteAsset")), "price_scale": decimals(tick),
                        "qty_scale": decimals(step),
                        # every filter as sent (bot4d.kernels.filters loads them), and the STP
                        # modes the symbol accepts
                        "filters": [f for f in s.get("filters", []) if isinstance(f, dict)],
                        "stp_allowed": [str(m) for m in s.get("allowedSelfTradePreventionModes") or []],
                        "stp_default": str(s.get("defaultSelfTradePreventionMode") or "")}
        return out
    finally:
        if own:
            await client.close()


@dataclass(frozen=True)
class OpenOrder:
    symbol: str
    side: str              # "BUY" / "SELL"
    price: Decimal
    qty: Decimal
    executed: Decimal
    client_order_id: str
    venue_order_id: int
    boot_id: str | None    # parsed from the client order id (None: foreign)
    shard: int | None
    order_id: int | None
    otype: str = ""        # the venue's order type (STOP_LOSS_LIMIT: a protective stop)
    list_id: int = -1      # the venue's order list (an OCO leg), -1: none
    stop_price: Decimal = Decimal(0)


@dataclass
class Reconciliation:
    """Open orders on the venue split by owner, and the account's balances."""
    ours: list[OpenOrder] = field(default_factory=list)            # this boot
    previous_boots: list[OpenOrder] = field(default_factory=list)  # ours, earlier boots
    foreign: list[OpenOrder] = field(default_factory=list)         # not placed by bot4d
    balances: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # asset -> (free, locked)

    @property
    def open_orders(self) -> list[OpenOrder]:
        return self.ours + self.previous_boots + self.foreign


class _Halted(Exception):
    pass


class _LocalReject(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class WeightBudget:
    """Request weight used in the current minute (Binance counts per calendar minute)."""

    def __init__(self, budget: int, clock_s: Callable[[], float]) -> None:
        if budget < 1:
            raise ValueError("weight budget must be >= 1")
        self.budget = budget
        self.clock_s = clock_s
        self.minute = int(clock_s() // 60)
        self.used = 0
        self.peak = 0

    def _roll(self) -> int:
        m = int(self.clock_s() // 60)
        if m != self.minute:
            self.minute, self.used = m, 0
        return m

    def try_take(self, weight: int, reserve: int = 0) -> bool:
        self._roll()
        if self.used + weight > self.budget - reserve:
            return False
        self.used += weight
        self.peak = max(self.peak, self.used)
        return True

    def observe(self, venue_used: int, minute: int) -> None:
        """The venue's own count for ``minute`` (the header); ours may be ahead by requests in
        flight, never behind."""
        if self._roll() == minute and venue_used > self.used:
            self.used = venue_used
            self.peak = max(self.peak, self.used)

    def current(self) -> int:
        self._roll()
        return self.used

    def seconds_to_reset(self) -> float:
        return 60.0 - self.clock_s() % 60.0


@dataclass
class _Order:
    cid: str
    shard: int
    order_id: int
    info: SymbolInfo
    sent_ns: int = 0            # CLOCK_REALTIME when the place was written (ack latency)
    sent_ms: int = 0            # the request's timestamp (venue clock), for its recvWindow
    venue_id: int | None = None
    acked: bool = False
    filled: int = 0             # qty units reported as filled
    trades: set[int] = field(default_factory=set)
    terminal: int = 0           # RP_* of the final report (RP_FILL: completely filled)
    qty: int = 0
    unknown: bool = False       # the place's outcome is being resolved
    placed: asyncio.Event = field(default_factory=asyncio.Event)  # the place request is over
    side: int = -1              # SIDE_BID / SIDE_ASK once a venue answer named it (-1 unknown)
    peer: "_Order | None" = None  # the other leg of our venue OCO (a protective stop's take-profit)
    list_cancelled: bool = False  # the venue took a cancel of this leg's list: the other leg needs none


class _UserListener(WSListener):
    def __init__(self, gw: "BinanceGateway") -> None:
        self.gw = gw
        self.frag: list[bytes] | None = None

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        mt = frame.msg_type
        if mt is WSMsgType.TEXT or mt is WSMsgType.BINARY:
            if frame.fin:
                self.gw._on_user_message(frame.get_payload_as_bytes())
            else:
                self.frag = [frame.get_payload_as_bytes()]
        elif mt is WSMsgType.CONTINUATION:
            if self.frag is not None:
                self.frag.append(frame.get_payload_as_bytes())
                if frame.fin:
                    msg, self.frag = b"".join(self.frag), None
                    self.gw._on_user_message(msg)
        elif mt is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif mt is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _fmt_units(units: int, scale: int) -> str:
    """Exact decimal text of int units (never through float)."""
    return format(from_fixed(units, scale), "f")


class BinanceGateway:
    """Binance spot order entry for the daemon's io thread (see the module docstring)."""

    def __init__(self, *, rest_base: str, ws_base: str, api_key: str, secret: str,
                 symbols: list[SymbolInfo], boot_id: str,
                 on_reports: Callable[[np.ndarray], None],
                 weight_budget_per_min: int = 3000, recv_window_ms: int = 5000,
                 t2o_hists: dict[int, Any] | None = None, ack_hist: Any | None = None,
                 connections: int = 4, request_timeout_s: float = 5.0,
                 on_halt: Callable[[str], None] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, time_sync_interval_s: float = 60.0,
                 mark_of: Callable[[str, str], Decimal | None] | None = None,
                 breaker: tuple[np.ndarray, np.ndarray] | None = None,
                 on_breaker: Callable[[np.ndarray], None] | None = None,
                 on_error: Callable[[], None] | None = None) -> None:
        # ``clock_ns`` is the local clock; plus the measured offset (``self.clock``, see
        # bot4d.gateway.clock) it is the venue's (request timestamps, the weight minute); latencies
        # always use CLOCK_REALTIME because tick_recv_ns does.
        if not api_key or not secret:
            raise ValueError("api_key and secret are required")
        if not _BOOT_RE.match(boot_id or ""):
            raise ValueError("boot_id must be 1+ characters of [A-Za-z0-9_] ('-' separates the "
                             "parts of a client order id)")
        longest = 2 + len(boot_id) + 1 + MAX_SHARD_DIGITS + 1 + MAX_ORDER_ID_DIGITS
        if longest > CID_MAX:
            raise ValueError(f"boot_id {boot_id!r} is too long: client order ids could reach "
                             f"{longest} characters, Binance allows {CID_MAX} (at most "
                             f"{CID_MAX - (longest - len(boot_id))} characters)")
        if not 1 <= recv_window_ms <= 60000:
            raise ValueError("recv_window_ms must be in 1..60000 (Binance's limit)")
        if not symbols:
            raise ValueError("at least one symbol is required")
        for u, name in ((rest_base, "rest_base"), (ws_base, "ws_base")):
            if urlsplit(u).scheme not in (("http", "https") if name == "rest_base" else ("ws", "wss")):
                raise ValueError(f"{name} has the wrong scheme: {u!r}")
        self.rest_base = rest_base
        self.ws_base = ws_base.rstrip("/")
        self.__key = api_key
        self.__secret = secret
        self.boot_id = boot_id
        self.symbols = list(symbols)
        self.by_instrument = {s.instrument: s for s in symbols}
        self.by_symbol = {s.symbol: s for s in symbols}
        if len(self.by_instrument) != len(symbols) or len(self.by_symbol) != len(symbols):
            raise ValueError("duplicate instrument or symbol in symbols")
        self.on_reports = on_reports
        self.on_halt = on_halt
        self.recv_window_ms = recv_window_ms
        self.t2o_hists = t2o_hists or {}
        self.ack_hist = ack_hist
        self.connections = connections
        self.request_timeout_s = request_timeout_s
        self.clock_ns = clock_ns
        self.clock = VenueClock()
        self.time_sync_interval_s = time_sync_interval_s
        # asset, quote -> the asset's price in the quote now (None: no mark): fees paid in another
        # asset than the quote are converted with it
        self.mark_of = mark_of
        self.budget = WeightBudget(weight_budget_per_min, lambda: self.venue_ns() / 1e9)
        # places may not take the last few percent: a cancel always finds room
        self.place_reserve = max(1, weight_budget_per_min // 20)
        # the order-entry breaker: (state, config) of ``bot4d.kernels.breaker.make_breakers``
        self.br, self.br_cfg = breaker if breaker is not None else bkr.make_breakers(
            1, cooldown_ns=5_000_000_000, probes=1, probe_ok_to_close=1)
        self.br_i = bkr.breaker_id(0, bkr.COMP_ORDER_ENTRY)
        self._br_ev = np.zeros(8, JOURNAL_EVENT_DTYPE)   # its EV_BREAKER records, for on_breaker
        self._br_n = np.zeros(1, np.int64)
        self.on_breaker = on_breaker
        self.on_error = on_error
        self.venue_errors = 0   # failed or refused venue calls (reported to on_error)
        self.rest: RestClient | None = None
        self.orders: OrderedDict[str, _Order] = OrderedDict()
        self.errors = {name: 0 for name in CATEGORY_NAMES.values()}
        self.counters: dict[str, int] = {k: 0 for k in (
            "places", "cancels", "replaces_refused", "reports", "local_rejects_rate_limit",
            "local_rejects_halted", "weight_waits", "unknown_outcomes", "unknown_resolved_found",
            "unknown_resolved_reject", "reconciliations", "reconcile_queries",
            "stream_messages", "stream_malformed", "stream_unknown_event", "stream_ignored_event",
            "stream_foreign_order", "stream_other_boot", "stream_connects",
            "stream_connect_failed", "stream_disconnects", "duplicate_trade_skipped",
            "duplicate_place_dropped", "cancel_for_closed", "bad_command", "fee_rounded",
            "fee_converted", "fee_no_mark", "clock_syncs_failed",
            "on_reports_failed", "orders_evicted_live", "rate_limited", "listen_key_renewals",
            "fill_sweeps", "fills_recovered", "fills_recovered_other_runs", "trades_not_ours",
            "stream_held", "stream_other_boot_fills", "cancel_replaces", "swap_cancel_failed",
            "stops_taken_over", "oco_places", "list_swaps", "cancel_list_done", "stream_list_status",
            "fills_after_balances")}
        self.halted: str | None = None
        self.halt_code = 0
        self._cancel_waiting = 0
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen_key: str | None = None
        self._listen_key_t: float | None = None
        self._ws: WSTransport | None = None
        self._stream_connected = False
        self._stream_up = asyncio.Event()
        self._stream_task: asyncio.Task | None = None
        self._keepalive_task: asyncio.Task | None = None
        self._clock_task: asyncio.Task | None = None
        self._clock_sync: asyncio.Future | None = None   # the measurement in flight, shared
        self._stopping = False
        self._reconcile_lock: asyncio.Lock | None = None
        self.last_reconciliation: Reconciliation | None = None
        # fills in trade-id order (see set_fill_marks): per symbol the trade id every fill up to
        # which was reported (None: not known yet), whether stream events flow, the ones waiting
        self._floor: dict[str, int | None] = {s.symbol: None for s in symbols}
        self._in_order: dict[str, bool] = {s.symbol: False for s in symbols}
        self._held: dict[str, list[dict]] = {}
        self._sweep_locks: dict[str, asyncio.Lock] = {}
        self._stream_epoch = 0           # user-stream connections so far
        self._recovery: asyncio.Task | None = None
        self._gap = asyncio.Event()      # set by a new gap: a recovery that backs off goes again
        # venue order id -> (boot, shard, order id) of its client order id (None: not bot4d's)
        self._owners: OrderedDict[int, tuple[str, int, int] | None] = OrderedDict()
        # symbol -> an earlier boot's protective stop still guarding the position (see
        # cancel_leftovers); the first protective stop this boot places there replaces it
        self.adoptable_stops: dict[str, OpenOrder] = {}
        # symbol -> the take-profit price of an adoptable stop's OCO (its LIMIT_MAKER leg)
        self.adoptable_tp: dict[str, Decimal] = {}
        # venue order ids of earlier boots' orders left resting at start (protective stops and
        # their OCO legs), and the venue's time of the balances read after that (updateTime, ms):
        # their fills after it are not in the balances, so they move the position
        self._kept_vids: set[int] = set()
        self.balances_ms = 0

    def __repr__(self) -> str:
        return (f"BinanceGateway(rest_base={self.rest_base!r}, boot_id={self.boot_id!r}, "
                f"symbols={[s.symbol for s in self.symbols]})")

    # ---- client order ids ----------------------------------------------------------------------
    def client_order_id(self, shard: int, order_id: int) -> str:
        """``b4<boot_id>-<shard>-<order_id>``: maps venue reports back to (shard, order id)."""
        if not 0 <= shard < 10 ** MAX_SHARD_DIGITS or not 0 <= order_id < 1 << 63:
            raise ValueError(f"shard {shard} / order id {order_id} out of range for a client order id")
        return f"b4{self.boot_id}-{int(shard)}-{int(order_id)}"

    @staticmethod
    def parse_client_order_id(s: str) -> tuple[str, int, int] | None:
        """(boot_id, shard, order_id) of an id this gateway makes, else None."""
        if not isinstance(s, str) or len(s) > CID_MAX:
            return None
        m = _CID_RE.match(s)
        if m is None:
            return None
        oid = int(m.group(3))
        if oid >= 1 << 63:
            return None
        return m.group(1), int(m.group(2)), oid

    # ---- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Pool up, listen key, user stream connected, keepalive running."""
        self._loop = asyncio.get_running_loop()
        self._reconcile_lock = asyncio.Lock()
        self._sweep_locks = {s.symbol: asyncio.Lock() for s in self.symbols}
        self._stream_up = asyncio.Event()
        self.rest = RestClient(self.rest_base, connections=self.connections,
                               timeout_s=self.request_timeout_s)
        # before the first signed request: its timestamp must be in the venue's window
        if not await self.sync_clock():
            await self.rest.close()
            raise GatewayError("cannot read the venue's time (GET /api/v3/time)")
        self._clock_task = asyncio.create_task(self._clock_loop(), name="binance-clock")
        await self._new_listen_key()
        self._stream_task = asyncio.create_task(self._stream_loop(), name="binance-user-stream")
        try:
            await asyncio.wait_for(self._stream_up.wait(), max(10.0, 2 * self.request_timeout_s))
        except TimeoutError:
            await self.stop()
            raise GatewayError("user-data stream did not connect") from None
        self._keepalive_task = asyncio.create_task(self._keepalive_loop(), name="binance-keepalive")
        try:
            await self._init_floors()
        except (GatewayError, _Halted) as e:
            if not self.halted:
                await self.stop()
                raise GatewayError(f"cannot read the account's latest trades: {e}") from None
            # halted (refused credentials, a ban): nothing is sent, so no fill can happen to follow
            log.error("binance gateway: order entry halted before the account's trades were read: %s", e)

    async def stop(self) -> None:
        self._stopping = True
        for t in (self._stream_task, self._keepalive_task, self._clock_task):
            if t is not None:
                t.cancel()
        if self._ws is not None:
            self._ws.disconnect()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            # give requests already on the wire a moment to be answered, then give up on them
            await asyncio.wait(pending, timeout=1.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for t in (self._stream_task, self._keepalive_task, self._clock_task):
            if t is not None:
                await asyncio.gather(t, return_exceptions=True)
        if self._listen_key and self.rest is not None and not self.halted:
            try:
                await self.rest.request("DELETE", "/api/v3/userDataStream",
                                        query=urlencode({"listenKey": self._listen_key}),
                                        headers=self._key_header(), timeout_s=1.0)
            except RestError:
                pass
        if self.rest is not None:
            await self.rest.close()

    # ---- the venue's clock ---------------------------------------------------------------------------
    async def sync_clock(self, newer_than_ns: int = 0) -> bool:
        """Measure the venue's clock offset (``GET /api/v3/time``); True if it was measured.
        Concurrent callers share one measurement; one that already happened after local time
        ``newer_than_ns`` (the refused request's timestamp, local time plus the old offset) is
        not repeated."""
        if newer_than_ns and self.clock.measured_ns + self.clock.offset_ns > newer_than_ns:
            return True
        if self._clock_sync is None or self._clock_sync.done():
            self._clock_sync = self._spawn(self._measure_clock())
        return await asyncio.shield(self._clock_sync)

    async def _measure_clock(self) -> bool:
        sent = [0]

        def written() -> None:   # not before: the wait for admission is no part of the round trip
            sent[0] = self.clock_ns()
        try:
            status, data, code, _ = await self._call("GET", "/api/v3/time", {}, W_TIME, K_QUERY, signed=False,
                                                     on_written=written)
        except (RestError, _Halted) as e:
            self.counters["clock_syncs_failed"] += 1
            log.warning("binance gateway: venue time not measured: %s", e)
            return False
        t1 = self.clock_ns()
        st = data.get("serverTime") if isinstance(data, dict) else None
        if status != 200 or isinstance(st, bool) or not isinstance(st, int):
            self.counters["clock_syncs_failed"] += 1
            log.warning("binance gateway: venue time not measured: HTTP %d code %s", status, code)
            return False
        before = self.clock.offset_ns
        self.clock.observe(sent[0] or t1, st, t1)
        if abs(self.clock.offset_ns - before) > self.recv_window_ms * 250_000:   # a quarter window
            log.warning("binance gateway: venue clock offset %+.3f s (was %+.3f s; recvWindow %d ms)",
                        self.clock.offset_ns / 1e9, before / 1e9, self.recv_window_ms)
        return True

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(self.time_sync_interval_s)
            await self.sync_clock()

    async def commission(self, symbol: str) -> dict:
        """The account's commission rates on ``symbol`` (``GET /api/v3/account/commission``: the
        JSON object as Binance sends it). Raises GatewayError when the venue does not answer."""
        try:
            data = await self._get_retry("/api/v3/account/commission", {"symbol": symbol}, W_COMMISSION)
        except _Halted as e:
            raise GatewayError(f"halted: {e}") from None
        if not isinstance(data, dict):
            raise GatewayError(f"GET /api/v3/account/commission {symbol}: not a JSON object")
        return data

    # ---- commands --------------------------------------------------------------------------------
    def send(self, cmds: np.ndarray) -> None:
        """Take ORDER_COMMAND_DTYPE records; never blocks. Safe from the loop's thread or another."""
        if cmds.dtype != ORDER_COMMAND_DTYPE:
            raise TypeError(f"send expects ORDER_COMMAND_DTYPE records, got {cmds.dtype}")
        if self._loop is None:
            raise GatewayError("send before start")
        batch = cmds.copy()  # the caller's ring slots are reused as soon as we return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._dispatch(batch)
        else:
            self._loop.call_soon_threadsafe(self._dispatch, batch)

    def _dispatch(self, batch: np.ndarray) -> None:
        for rec in batch:
            cmd = int(rec["command"])
            if cmd == CMD_PLACE:
                self._spawn(self._place(rec))
            elif cmd == CMD_CANCEL:
                self._spawn(self._cancel(rec))
            elif cmd == CMD_REPLACE:
                # Binance spot has no in-place replace in this gateway yet: refuse visibly
                self.counters["replaces_refused"] += 1
                self._emit([self._rep(RP_REPLACE_REJECT, rec["shard"], rec["order_id"],
                                      rec["instrument"], reason=UNSUPPORTED)], int(rec["shard"]))
            else:
                self.counters["bad_command"] += 1
                log.warning("binance gateway: unknown command %d for order %d dropped", cmd,
                            int(rec["order_id"]))

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            e = t.exception()
            log.error("binance gateway task failed: %s: %s", type(e).__name__, e)

    # ---- reports ---------------------------------------------------------------------------------
    @staticmethod
    def _rep(kind: int, shard: Any, order_id: Any, instrument: Any, *, ts_ns: int = 0,
             price: int = 0, qty: int = 0, fee: int = 0, maker: int = 0, reason: int = 0,
             flags: int = 0, trade_id: int = 0, venue_order_id: int | None = 0, side: int = 0,
             boot: int = 0) -> tuple:
        """A report; ``boot`` names another run whose order a recovered fill is (0: this run's),
        ``side`` and ``venue_order_id`` what the venue said (0: not said: ``_emit`` then takes the
        venue order id from this run's record of the order, if it knows one)."""
        return (kind, int(shard), int(order_id), int(instrument), ts_ns or time.time_ns(), price,
                qty, fee, maker, reason, flags, trade_id, int(venue_order_id or 0), side, boot)

    def _emit(self, reps: list[tuple], shard: int | None = None) -> None:
        """Deliver reports, one array per shard (each array goes to that shard's ingress)."""
        if not reps:
            return
        by_shard: dict[int, list[tuple]] = {}
        for r in reps:
            by_shard.setdefault(r[1], []).append(r)
        for sh, rows in by_shard.items():
            a = np.zeros(len(rows), VENUE_REPORT_DTYPE)
            for i, (kind, _s, oid, inst, ts, px, q, fee, mk, reason, flags, tid, vid, side,
                    boot) in enumerate(rows):
                if vid == 0 and boot == 0 and 0 <= oid < 1 << 63 and 0 <= sh < 10 ** MAX_SHARD_DIGITS:
                    o = self.orders.get(self.client_order_id(sh, oid))
                    vid = (o.venue_id or 0) if o is not None else 0
                a[i]["kind"], a[i]["order_id"], a[i]["instrument"], a[i]["ts_ns"] = kind, oid, inst, ts
                a[i]["price"], a[i]["qty"], a[i]["fee"], a[i]["maker"] = px, q, fee, mk
                a[i]["reason"], a[i]["flags"], a[i]["trade_id"] = reason, flags, tid
                a[i]["venue_order_id"], a[i]["side"], a[i]["boot"] = vid, side, boot
            self.counters["reports"] += len(rows)
            try:
                self.on_reports(a)
            except Exception as e:  # the consumer's bug must not kill order entry
                self.counters["on_reports_failed"] += 1
                log.error("binance gateway: on_reports failed for shard %d: %s: %s", sh,
                          type(e).__name__, e)

    def _track(self, o: _Order) -> None:
        self.orders[o.cid] = o
        while len(self.orders) > MAX_ORDERS:
            # evict the oldest closed record; a live one only if all are live (counted)
            victim = next((c for c, x in self.orders.items() if x.terminal), None)
            if victim is None:
                victim = next(iter(self.orders))
                self.counters["orders_evicted_live"] += 1
            del self.orders[victim]

    # ---- request plumbing ------------------------------------------------------------------------
    def _key_header(self) -> dict[str, str]:
        return {"X-MBX-APIKEY": self.__key}

    def venue_ns(self) -> int:
        """The venue's time now (local clock + measured offset)."""
        return self.clock.venue_ns(self.clock_ns())

    def _signed_query(self, params: dict[str, Any]) -> tuple[str, int]:
        ts = self.venue_ns() // 1_000_000
        p = dict(params)
        p["recvWindow"] = self.recv_window_ms
        p["timestamp"] = ts
        q = urlencode(p)
        return f"{q}&signature={sign(q, self.__secret)}", ts

    def _halt(self, reason: str, code: int) -> None:
        if self.halted:
            return
        self.halted = reason
        self.halt_code = code
        log.error("binance gateway HALTED: %s", reason)
        if self.on_halt is not None:
            try:
                self.on_halt(reason)
            except Exception as e:
                log.error("binance gateway: on_halt failed: %s: %s", type(e).__name__, e)

    def _budget_take(self, weight: int, kind: int) -> bool:
        if kind == K_PLACE:
            return self.budget.try_take(weight, self.place_reserve)
        if kind == K_QUERY and self._cancel_waiting:
            return False  # cancels go first
        return self.budget.try_take(weight)

    async def _admit(self, kind: int, weight: int) -> bool:
        """Wait (or for places: refuse) until the breaker and the weight budget allow one
        request; returns whether it is the breaker's half-open probe."""
        waited = False
        if kind == K_CANCEL:
            self._cancel_waiting += 1
        try:
            while True:
                if self.halted:
                    raise _Halted(self.halted)
                ok, probe = self._br_allow()
                if ok:
                    if self._budget_take(weight, kind):
                        return probe
                    if probe:
                        bkr.br_release(self.br, self.br_i)
                    if kind == K_PLACE:
                        raise _LocalReject(LOCAL_RATE_LIMIT)
                    if not waited:
                        waited = True
                        self.counters["weight_waits"] += 1
                    delay = min(self.budget.seconds_to_reset() + 0.005, 0.1)
                else:
                    if kind == K_PLACE:
                        raise _LocalReject(LOCAL_RATE_LIMIT)
                    delay = min(max(self._br_wait_s(), 0.005), 0.1)
                await asyncio.sleep(delay)
        finally:
            if kind == K_CANCEL:
                self._cancel_waiting -= 1

    async def _call(self, method: str, path: str, params: dict[str, Any], weight: int, kind: int,
                    *, signed: bool = True, on_written: Callable[[], None] | None = None,
                    sent_ms: list[int] | None = None, _retried: bool = False) -> tuple[int, Any, int, int]:
        """Admit, send, account. Returns (HTTP status, parsed body or None, Binance code or 0,
        category). Raises _Halted, _LocalReject (places) and RestError (transport). A signed
        request refused with -1021 (its timestamp outside the venue's window) is sent once more
        after the venue's clock is measured again; -1021 is refused before the matching engine
        (errors.md), so the second one cannot double an order."""
        assert self.rest is not None
        await self._admit(kind, weight)   # (a probe that is not sent gives its slot back there)
        ts = 0
        if signed:
            query, ts = self._signed_query(params)
            if sent_ms is not None:
                sent_ms[:] = [ts]   # the timestamp of the request that counts (after a retry)
        else:
            query = urlencode(params)
        minute = self.budget.minute
        t0 = time.monotonic_ns()
        try:
            resp = await self.rest.request(method, path, query=query, headers=self._key_header(),
                                           on_written=on_written)
        except RestError as e:
            self.errors[CATEGORY_NAMES[CAT_RECONCILE if e.written else CAT_RETRY]] += 1
            self._br_outcome(CAT_RECONCILE if e.written else CAT_RETRY, time.monotonic_ns() - t0, True)
            log.warning("binance %s %s: transport failure (%s)", method, path, e)
            raise
        used = resp.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.budget.observe(int(used), minute)
        try:
            data = resp.json() if resp.body else None
        except ValueError:
            data = None
        if 200 <= resp.status < 300:
            self._br_outcome(CAT_OK, time.monotonic_ns() - t0, False)
            return resp.status, data, 0, 0
        code = data.get("code") if isinstance(data, dict) else None
        if not isinstance(code, int):
            code = None
        # a 418 carries -1003 in its body, but a ban is not a wait: it halts
        err = classify("binance", None if resp.status == 418 else code, resp.status)
        self.errors[CATEGORY_NAMES[err.category]] += 1
        msg = data.get("msg") if isinstance(data, dict) else ""
        log.warning("binance %s %s: HTTP %d code %s (%s): %s", method, path, resp.status, code,
                    err.strategy, str(msg)[:200])
        if resp.status == 418:
            self._halt(f"IP banned by Binance (HTTP 418): {str(msg)[:200]}", code or -1003)
        elif resp.status == 429 or code in (-1003, -1015):
            self.counters["rate_limited"] += 1
            ra = resp.headers.get("retry-after", "")
            self._br_hold(float(ra) if ra.isdigit() else 1.0)
        else:
            # an order the venue does not know (filled or cancelled meanwhile) is an answer, not a
            # failure of the venue, and so is a post-only order refused because it would take (the
            # venue doing what a market maker asked, routinely near the touch); any other refusal
            # counts toward the error storm
            benign = code in (UNKNOWN_ORDER_CANCEL, NO_SUCH_ORDER) or \
                (code == -2010 and "immediately match" in str(msg).lower())
            self._br_outcome(CAT_REJECT if benign else err.category, time.monotonic_ns() - t0, not benign)
            if err.category == CAT_HALT:
                self._halt(f"Binance refused our credentials or request signing: code {code} "
                           f"({err.meaning})", code or -resp.status)
        if code == INVALID_TIMESTAMP and signed and not _retried:
            self.clock.invalid_timestamp += 1
            await self.sync_clock(newer_than_ns=ts * 1_000_000)
            return await self._call(method, path, params, weight, kind, signed=True, on_written=on_written,
                                    sent_ms=sent_ms, _retried=True)
        return resp.status, data, code or 0, err.category

    # ---- order-entry breaker (bot4d.kernels.breaker) ----------------------------------------------
    @property
    def breaker_state(self) -> int:
        """CLOSED / OPEN / HALF_OPEN; an open breaker whose cool-down is over shows HALF_OPEN (its
        next call is the probe that moves it there)."""
        st = int(self.br[self.br_i, bkr.BR_STATE])
        if st == bkr.OPEN and time.time_ns() >= int(self.br[self.br_i, bkr.BR_OPEN_UNTIL]):
            return bkr.HALF_OPEN
        return st

    def _br_allow(self) -> tuple[bool, bool]:
        """(may a request go now, is it a half-open probe)."""
        ok = bkr.br_allow(self.br, self.br_cfg, self.br_i, time.time_ns(), self._br_ev, self._br_n, 0)
        self._br_flush()
        return bool(ok), bool(ok) and int(self.br[self.br_i, bkr.BR_STATE]) == bkr.HALF_OPEN

    def _br_wait_s(self) -> float:
        return max(0.0, (int(self.br[self.br_i, bkr.BR_OPEN_UNTIL]) - time.time_ns()) / 1e9)

    def _br_outcome(self, category: int, latency_ns: int, venue_error: bool) -> None:
        bkr.br_record(self.br, self.br_cfg, self.br_i, category, latency_ns, time.time_ns(), self._br_ev,
                      self._br_n, 0)
        if venue_error:
            self._venue_error()
        self._br_flush()

    def _br_hold(self, retry_after_s: float) -> None:
        """Rate limited: stay away as long as the venue said."""
        now = time.time_ns()
        hold = int(max(retry_after_s, RATE_LIMIT_MIN_HOLD_S) * 1e9)
        bkr.br_hold(self.br, self.br_cfg, self.br_i, now + hold, now, self._br_ev, self._br_n, 0)
        self._venue_error()
        self._br_flush()

    def _venue_error(self) -> None:
        self.venue_errors += 1
        if self.on_error is not None:
            try:
                self.on_error()
            except Exception as e:  # the consumer's bug must not kill order entry
                log.error("binance gateway: on_error failed: %s: %s", type(e).__name__, e)

    def _br_flush(self) -> None:
        """The breaker's state changes: logged, and handed to ``on_breaker`` (journal, storm)."""
        n = int(self._br_n[0])
        if n == 0:
            return
        recs = self._br_ev[:n].copy()
        self._br_n[0] = 0
        for r in recs:
            (log.warning if int(r["state"]) != bkr.CLOSED else log.info)(
                "binance order-entry breaker %s -> %s (%s, %d)", BREAKER_NAMES[int(r["aux0"])],
                BREAKER_NAMES[int(r["state"])], BREAKER_REASONS.get(int(r["reason"]), "?"), int(r["aux1"]))
        if self.on_breaker is not None:
            try:
                self.on_breaker(recs)
            except Exception as e:
                log.error("binance gateway: on_breaker failed: %s: %s", type(e).__name__, e)

    # ---- place -------------------------------------------------------------------------------------
    async def _place(self, rec: np.void) -> None:
        shard, oid, inst = int(rec["shard"]), int(rec["order_id"]), int(rec["instrument"])
        self.counters["places"] += 1
        info = self.by_instrument.get(inst)
        if info is None:
            self.counters["bad_command"] += 1
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=-1121)])
            return
        try:
            cid = self.client_order_id(shard, oid)
        except ValueError:
            self.counters["bad_command"] += 1
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=-1102)])
            return
        if cid in self.orders:
            # the same order twice: never send it again (the first one owns its reports)
            self.counters["duplicate_place_dropped"] += 1
            log.warning("binance gateway: order %s placed twice; second dropped", cid)
            return
        params, bad = self._order_params(rec, info, cid)
        o = _Order(cid, shard, oid, info, qty=int(rec["qty"]))
        self._track(o)
        if bad:
            self.counters["bad_command"] += 1
            o.terminal = RP_REJECT
            o.placed.set()
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=bad)])
            return
        tick = int(rec["tick_recv_ns"])
        hist = self.t2o_hists.get(shard)

        def written() -> None:
            now = time.time_ns()
            o.sent_ns = now
            if tick > 0 and hist is not None:
                hist.record(now - tick)

        old = self._swap_target(rec, info, params)
        leg = None
        if int(rec["tp_price"]) > 0 and int(rec["order_type"]) == OT_STOP_LIMIT:
            leg = self._tp_leg(rec, info, o)
            if leg is None:
                return
        if old is not None and (leg is not None or self._in_list(old)):
            # an order list can be neither cancel-replaced nor placed in a cancel-replace: the old
            # order (with its whole list) is cancelled first, then the new one placed
            for k in ("cancelReplaceMode", "cancelOrigClientOrderId", "cancelOrderId"):
                params.pop(k, None)
            if not await self._cancel_first(o, leg, old, info):
                return
            old = None
        if leg is not None:
            await self._place_oco(o, leg, int(rec["tp_price"]), params, info, written)
            return
        path, weight = ("/api/v3/order/cancelReplace", W_CANCEL_REPLACE) if old is not None else \
            ("/api/v3/order", W_ORDER)
        if old is not None:
            self.counters["cancel_replaces"] += 1
        sent_ms: list[int] = []
        unknown = False
        status = code = cat = 0
        data: Any = None
        try:
            status, data, code, cat = await self._call("POST", path, params, weight,
                                                       K_PLACE, on_written=written, sent_ms=sent_ms)
        except _LocalReject as r:
            self.counters["local_rejects_rate_limit"] += 1
            o.terminal = RP_REJECT
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=r.code)] + self._swap_kept(old, r.code))
            return
        except _Halted:
            self.counters["local_rejects_halted"] += 1
            o.terminal = RP_REJECT
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=self.halt_code)] +
                       self._swap_kept(old, self.halt_code))
            return
        except RestError as e:
            if not e.written:
                o.terminal = RP_REJECT
                self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=NOT_SENT)] + self._swap_kept(old, NOT_SENT))
                return
            unknown = True
        finally:
            o.sent_ms = sent_ms[0] if sent_ms else 0
            o.unknown = unknown  # set before a cancel waiting on ``placed`` looks at it
            o.placed.set()
        if old is not None and not unknown and isinstance(data, dict):
            # a cancel-replace answers for both orders; the stream reports what happened to each
            # (the cancel, the new order), this answer what did not happen
            self._swap_answer(o, old, status, code, data)
            return
        if old is not None and unknown and isinstance(old, _Order):
            self._spawn(self._resolve_quiet(old))
        if not unknown and status == 200:
            if isinstance(data, dict) and isinstance(data.get("orderId"), int):
                o.venue_id = data["orderId"]
            return  # the stream reports it
        if unknown or status >= 500 or cat == CAT_RECONCILE or code in UNKNOWN_OUTCOME_CODES:
            await self._resolve_unknown(o)
            return
        if not o.acked and not o.terminal:
            o.terminal = RP_REJECT
            self._emit([self._rep(RP_REJECT, shard, oid, inst, reason=_reject_code(code or -status, data))])

    # ---- OCO: a protective stop with its take-profit as one venue order list --------------------
    @staticmethod
    def _in_list(old: "_Order | OpenOrder") -> bool:
        return old.peer is not None if isinstance(old, _Order) else old.list_id >= 0

    def _tp_leg(self, rec: np.void, info: SymbolInfo, o: _Order) -> "_Order | None":
        """The take-profit leg's record (its own client order id from ``tp_order_id``), linked to
        the stop leg ``o``; None (both legs reported refused) when it cannot be named."""
        shard, tid = int(rec["shard"]), int(rec["tp_order_id"])
        try:
            tcid = self.client_order_id(shard, tid)
        except ValueError:
            tcid = None
        if tcid is None or tcid in self.orders:
            self.counters["bad_command"] += 1
            log.warning("binance gateway: take-profit leg %d of %s cannot be placed (bad or repeated id)",
                        tid, o.cid)
            o.terminal = RP_REJECT
            o.placed.set()
            reps = [self._rep(RP_REJECT, shard, o.order_id, info.instrument, reason=-1102)]
            if tcid is None and tid > 0:
                reps.append(self._rep(RP_REJECT, shard, tid, info.instrument, reason=-1102))
            self._emit(reps)
            return None
        t = _Order(tcid, shard, tid, info, qty=int(rec["qty"]))
        o.peer, t.peer = t, o
        self._track(t)
        return t

    def _legs_rejected(self, legs: list[_Order], code: int) -> None:
        reps = []
        for x in legs:
            x.placed.set()
            if not x.acked and not x.terminal:
                x.terminal = RP_REJECT
                reps.append(self._rep(RP_REJECT, x.shard, x.order_id, x.info.instrument, reason=code))
        self._emit(reps)

    async def _cancel_first(self, o: _Order, leg: "_Order | None", old: "_Order | OpenOrder",
                            info: SymbolInfo) -> bool:
        """Cancel ``old`` (DELETE /api/v3/order on one leg cancels its whole list) before the new
        protection is placed. False (reported: the new legs refused as a swap not attempted, our old
        order's cancel refused) when the venue did not cancel it; an earlier run's order that is
        gone already is no obstacle (ALLOW_FAILURE, as for a lone stop's takeover)."""
        self.counters["list_swaps"] += 1
        legs = [o] + ([leg] if leg is not None else [])
        q = {"symbol": info.symbol, "origClientOrderId": old.cid} if isinstance(old, _Order) else \
            {"symbol": info.symbol, "orderId": old.venue_order_id}
        status = code = 0
        written = True
        try:
            status, _d, code, _c = await self._call("DELETE", "/api/v3/order", q, W_CANCEL, K_CANCEL)
        except _LocalReject as r:
            code = r.code
        except _Halted:
            code = self.halt_code
        except RestError as e:
            code, written = NOT_SENT, e.written
        if status == 200:
            if isinstance(old, OpenOrder):
                self.adoptable_tp.pop(old.symbol, None)
            if isinstance(old, _Order):
                old.list_cancelled = True
                if old.peer is not None:
                    old.peer.list_cancelled = True
            return True
        if isinstance(old, OpenOrder):
            if code == UNKNOWN_ORDER_CANCEL:
                return True   # gone (filled or cancelled): the new protection goes in anyway
            self.adoptable_stops.setdefault(old.symbol, old)   # still resting: the next try takes it over
        why = SWAP_NOT_ATTEMPTED if code == UNKNOWN_ORDER_CANCEL else (code or -status or NOT_SENT)
        self._legs_rejected(legs, why)
        if isinstance(old, _Order) and not old.terminal:
            self._emit([self._rep(RP_CANCEL_REJECT, old.shard, old.order_id, old.info.instrument, reason=why)])
            if written and status == 0:
                self._spawn(self._resolve_quiet(old))   # the cancel's outcome is unknown: look
        return False

    async def _place_oco(self, o: _Order, t: _Order, tp: int, params: dict[str, Any], info: SymbolInfo,
                         written: Callable[[], None]) -> None:
        """POST /api/v3/orderList/oco: the stop leg (STOP_LOSS_LIMIT, ``o``) and the take-profit
        leg (LIMIT_MAKER, ``t``) for the same quantity; for a SELL the take-profit is the above
        order, for a BUY the below one. The stream reports each leg by its client order id."""
        side = params["side"]
        stop = {"Type": "STOP_LOSS_LIMIT", "ClientOrderId": o.cid, "Price": params["price"],
                "StopPrice": params["stopPrice"], "TimeInForce": "GTC"}
        take = {"Type": "LIMIT_MAKER", "ClientOrderId": t.cid, "Price": _fmt_units(tp, info.price_scale)}
        above, below = (take, stop) if side == "SELL" else (stop, take)
        p: dict[str, Any] = {"symbol": info.symbol, "side": side, "quantity": params["quantity"],
                             "newOrderRespType": "ACK"}
        p.update({"above" + k: v for k, v in above.items()})
        p.update({"below" + k: v for k, v in below.items()})
        if "selfTradePreventionMode" in params:
            p["selfTradePreventionMode"] = params["selfTradePreventionMode"]
        self.counters["oco_places"] += 1
        sent_ms: list[int] = []
        unknown = False
        status = code = cat = 0
        data: Any = None
        try:
            status, data, code, cat = await self._call("POST", "/api/v3/orderList/oco", p, W_ORDER_LIST,
                                                       K_PLACE, on_written=written, sent_ms=sent_ms)
        except _LocalReject as r:
            self.counters["local_rejects_rate_limit"] += 1
            self._legs_rejected([o, t], r.code)
            return
        except _Halted:
            self.counters["local_rejects_halted"] += 1
            self._legs_rejected([o, t], self.halt_code)
            return
        except RestError as e:
            if not e.written:
                self._legs_rejected([o, t], NOT_SENT)
                return
            unknown = True
        finally:
            for x in (o, t):
                x.sent_ms = sent_ms[0] if sent_ms else 0
                x.unknown = unknown
                x.placed.set()
        if not unknown and status == 200:
            for od in (data.get("orders") or []) if isinstance(data, dict) else []:
                x = o if od.get("clientOrderId") == o.cid else t if od.get("clientOrderId") == t.cid else None
                if x is not None and isinstance(od.get("orderId"), int):
                    x.venue_id = od["orderId"]
            return   # the stream reports each leg
        if unknown or status >= 500 or cat == CAT_RECONCILE or code in UNKNOWN_OUTCOME_CODES:
            await asyncio.gather(self._resolve_unknown(o), self._resolve_unknown(t))
            return
        self._legs_rejected([o, t], _reject_code(code or -status, data))

    # ---- cancel-replace (the protective stops' resize and hand-over) ---------------------------
    def _swap_target(self, rec: np.void, info: SymbolInfo, params: dict[str, Any]) -> "_Order | OpenOrder | None":
        """The order a place must replace in one request, with the parameters that say so: our own
        order the OMS named (STOP_ON_FAILURE: if it cannot be cancelled, e.g. it just filled, the
        new one is not placed), or an earlier boot's protective stop still guarding the position
        (ALLOW_FAILURE: the new stop goes in whatever became of the old one)."""
        rid = int(rec["replace_order_id"])
        if rid != 0:
            old = self.orders.get(self.client_order_id(int(rec["shard"]), rid))
            if old is None or old.terminal:
                return None   # already gone: a plain place
            params["cancelReplaceMode"] = "STOP_ON_FAILURE"
            params["cancelOrigClientOrderId"] = old.cid
            return old
        if int(rec["order_type"]) == OT_STOP_LIMIT:
            prev = self.adoptable_stops.pop(info.symbol, None)
            if prev is not None and prev.side == params.get("side"):
                params["cancelReplaceMode"] = "ALLOW_FAILURE"
                params["cancelOrderId"] = prev.venue_order_id
                self.counters["stops_taken_over"] += 1
                return prev
        return None

    def _swap_kept(self, old: "_Order | OpenOrder | None", code: int) -> list[tuple]:
        """The request never reached the venue: our old order stays (its cancel is refused)."""
        if isinstance(old, _Order):
            return [self._rep(RP_CANCEL_REJECT, old.shard, old.order_id, old.info.instrument, reason=code)]
        if isinstance(old, OpenOrder):
            self.adoptable_stops.setdefault(old.symbol, old)   # still resting: the next stop takes it over
        return []

    def _swap_answer(self, o: _Order, old: "_Order | OpenOrder", status: int, code: int, data: dict) -> None:
        """Reports for what a cancel-replace answer says did not happen (Binance: 200 both done,
        -2022 cancel failed and the new order not attempted, -2021 one of the two failed, any
        other code: refused whole before either)."""
        d = data.get("data") if isinstance(data.get("data"), dict) else data
        cancel_ok = status == 200 or d.get("cancelResult") == "SUCCESS"
        new_ok = status == 200 or d.get("newOrderResult") == "SUCCESS"
        reps = []
        if new_ok:
            nr = d.get("newOrderResponse")
            if isinstance(nr, dict) and isinstance(nr.get("orderId"), int):
                o.venue_id = nr["orderId"]
        elif not o.acked and not o.terminal:
            nr = d.get("newOrderResponse")
            why = _reject_code(nr["code"], nr) if isinstance(nr, dict) and isinstance(nr.get("code"), int) else code
            if d.get("newOrderResult") == "NOT_ATTEMPTED":
                why = -2022   # the swap failed (STOP_ON_FAILURE): the new order was never refused
            o.terminal = RP_REJECT
            reps.append(self._rep(RP_REJECT, o.shard, o.order_id, o.info.instrument, reason=why or -status))
        if not cancel_ok:
            self.counters["swap_cancel_failed"] += 1
            cr = d.get("cancelResponse")
            why = cr.get("code") if isinstance(cr, dict) and isinstance(cr.get("code"), int) else code
            if isinstance(old, _Order) and not old.terminal:
                reps.append(self._rep(RP_CANCEL_REJECT, old.shard, old.order_id, old.info.instrument,
                                      reason=why or -status))
        self._emit(reps)

    async def _resolve_quiet(self, o: _Order) -> None:
        """After a cancel-replace whose answer was lost: bring our old order up to date."""
        js, _code = await self._query_order_safe(o)
        if js is not None:
            await self._apply_state(o, js)

    def _order_params(self, rec: np.void, info: SymbolInfo, cid: str) -> tuple[dict[str, Any], int]:
        """Binance parameters for a place, or the Binance code it would be refused with."""
        side = _SIDE.get(int(rec["side"]))
        if side is None:
            return {}, -1100
        qty, price = int(rec["qty"]), int(rec["price"])
        if qty <= 0:
            return {}, -1102
        p: dict[str, Any] = {"symbol": info.symbol, "side": side}
        ot, tif = int(rec["order_type"]), int(rec["tif"])
        if ot == OT_LIMIT:
            if price <= 0:
                return {}, -1102
            if tif == TIF_POST_ONLY:
                p["type"] = "LIMIT_MAKER"
            elif tif in _TIF:
                p["type"] = "LIMIT"
                p["timeInForce"] = _TIF[tif]
            else:
                return {}, -1115
            p["quantity"] = _fmt_units(qty, info.qty_scale)
            p["price"] = _fmt_units(price, info.price_scale)
        elif ot == OT_MARKET:
            p["type"] = "MARKET"
            p["quantity"] = _fmt_units(qty, info.qty_scale)
        elif ot == OT_STOP_LIMIT:
            stop = int(rec["stop_price"])
            if price <= 0 or stop <= 0:
                return {}, -1102
            p["type"] = "STOP_LOSS_LIMIT"
            p["timeInForce"] = "GTC"
            p["quantity"] = _fmt_units(qty, info.qty_scale)
            p["price"] = _fmt_units(price, info.price_scale)
            p["stopPrice"] = _fmt_units(stop, info.price_scale)
        else:
            return {}, -1116
        p["newClientOrderId"] = cid
        p["newOrderRespType"] = "ACK"
        if info.stp_mode is not None:
            mode = info.stp_mode
            if p["type"] in EXIT_TYPES and mode in ("EXPIRE_TAKER", "EXPIRE_BOTH"):
                # a market order or a protective stop is an exit: when it meets one of our own
                # resting orders, that order expires, never the exit
                mode = "EXPIRE_MAKER"
            p["selfTradePreventionMode"] = mode
        return p, 0

    async def _resolve_unknown(self, o: _Order) -> None:
        """The place may or may not have reached the venue: look it up, never resend."""
        o.unknown = True
        self.counters["unknown_outcomes"] += 1
        log.warning("binance gateway: order %s outcome unknown; querying", o.cid)
        delay = 0.05
        try:
            while not o.terminal:
                try:
                    js, code = await self._query_order(o)
                except _Halted:
                    return
                if js is not None:
                    self.counters["unknown_resolved_found"] += 1
                    await self._apply_state(o, js)
                    return
                if o.acked or o.terminal:
                    return  # the stream told us meanwhile
                # the venue refuses a request older than its recvWindow: past that (plus the
                # one second of clock lead Binance tolerates), a missing order never executes
                if code == NO_SUCH_ORDER and \
                        self.venue_ns() // 1_000_000 > o.sent_ms + self.recv_window_ms + 1000:
                    self.counters["unknown_resolved_reject"] += 1
                    o.terminal = RP_REJECT
                    self._emit([self._rep(RP_REJECT, o.shard, o.order_id, o.info.instrument,
                                          reason=NO_SUCH_ORDER)])
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        finally:
            o.unknown = False

    async def _query_order(self, o: _Order) -> tuple[dict | None, int]:
        """GET /api/v3/order by client order id: (order JSON, 0) or (None, Binance code or 0)."""
        self.counters["reconcile_queries"] += 1
        try:
            status, data, code, _ = await self._call(
                "GET", "/api/v3/order", {"symbol": o.info.symbol, "origClientOrderId": o.cid},
                W_QUERY_ORDER, K_QUERY)
        except RestError:
            return None, 0
        if status == 200 and isinstance(data, dict):
            return data, 0
        return None, code

    # ---- fills in trade-id order; missed fills recovered (bot4d.daemon.fillmarks) ---------------
    # Every fill of a symbol reaches its shard in increasing venue trade id: from the stream while
    # it has been up since the last sweep (Binance sends a symbol's execution reports in order),
    # else from a sweep of the venue's trades (myTrades from ``fromId``). ``_floor[symbol]``: every
    # trade of ours up to it has been reported; a trade at or below it is a duplicate. After a gap
    # (a reconnect, a start, an earlier run's order filling) the symbol's stream events wait in
    # ``_held`` until a sweep has reported the gap, then flow again. So the last fill a shard
    # journalled is a mark below which the journal misses nothing, across restarts.
    async def _init_floors(self) -> None:
        """At start: every symbol's floor is the venue's latest trade of ours (nothing of this run
        traded yet; what earlier runs left comes from ``set_fill_marks``); its events flow."""
        for info in self.symbols:
            epoch, up = self._stream_epoch, self._stream_connected
            latest = await self._get_retry("/api/v3/myTrades", {"symbol": info.symbol, "limit": 1}, W_MY_TRADES)
            if not isinstance(latest, list):
                raise GatewayError(f"myTrades {info.symbol}: not a list of trades")
            self._floor[info.symbol] = max((t["id"] for t in latest if isinstance(t, dict)
                                            and isinstance(t.get("id"), int)), default=0)
            if up and epoch == self._stream_epoch and self._stream_connected:
                self._release_held(info.symbol)
            else:
                self._catch_up(info.symbol)  # the stream dropped meanwhile: sweep the gap

    def set_fill_marks(self, marks: dict[str, int]) -> None:
        """The last venue trade id the journal holds per symbol (earlier runs): the symbol's
        events wait until the next reconciliation has reported every trade of ours after it
        (reports at or below the old floor may come again: the shard drops them by trade id). A
        symbol without a mark keeps the venue's latest trade at start: nothing before is
        recovered (said in the log)."""
        for info in self.symbols:
            tid = marks.get(info.symbol)
            if tid is None:
                log.warning("binance gateway: no journalled trade of %s is known (a first start?): its fills "
                            "before venue trade %s are not recovered", info.symbol, (self._floor.get(info.symbol) or 0) + 1)
                continue
            self._floor[info.symbol] = int(tid)
            self._in_order[info.symbol] = False

    def fill_recovery(self) -> dict[str, Any]:
        """Per symbol: the trade id up to which every fill was reported, whether its stream events
        flow (False: a gap is being recovered), and how many wait."""
        return {s.symbol: {"reported_up_to_trade": self._floor.get(s.symbol),
                           "in_order": self._in_order.get(s.symbol, False),
                           "held_events": len(self._held.get(s.symbol, ()))} for s in self.symbols}

    def _catch_up(self, symbol: str | None = None) -> None:
        """A gap on ``symbol``'s stream (None: every symbol's): its events wait until a
        reconciliation has swept the venue's trades; one recovery task runs at a time."""
        for s in ([symbol] if symbol is not None else list(self.by_symbol)):
            self._in_order[s] = False
        self._gap.set()  # a recovery backing off tries again at once
        if self._recovery is None or self._recovery.done():
            self._recovery = self._spawn(self._reconcile_quiet())

    def _release_held(self, symbol: str) -> None:
        """The symbol's trades are reported up to the stream's: its waiting events go through."""
        self._in_order[symbol] = True
        held = self._held.pop(symbol, [])
        for i, ev in enumerate(held):
            if not self._in_order.get(symbol, False):
                # another gap opened while replaying (an earlier run's fill): the rest waits again
                self._held[symbol] = held[i:] + self._held.get(symbol, [])
                return
            try:
                self._on_execution(ev)
            except (KeyError, ValueError, InvalidOperation, TypeError):
                self.counters["stream_malformed"] += 1

    async def _order_by_venue_id(self, info: SymbolInfo, venue_id: int) -> tuple[str, int, int] | None:
        """(boot, shard, order id) of the venue's order ``venue_id`` from its client order id
        (GET /api/v3/order), None when bot4d did not place it. GatewayError when not known."""
        if venue_id in self._owners:
            return self._owners[venue_id]
        js = await self._get_retry("/api/v3/order", {"symbol": info.symbol, "orderId": venue_id}, W_QUERY_ORDER)
        if not isinstance(js, dict) or not isinstance(js.get("clientOrderId"), str):
            raise GatewayError(f"order {venue_id} of {info.symbol}: no client order id in the answer")
        owner = self.parse_client_order_id(js["clientOrderId"])
        self._owners[venue_id] = owner
        while len(self._owners) > MAX_ORDERS:
            self._owners.popitem(last=False)
        return owner

    def _trade_report(self, info: SymbolInfo, t: dict, owner: tuple[str, int, int] | None) -> tuple | None:
        """The recovered-fill report of venue trade ``t`` (myTrades JSON), None when it is not for
        bot4d or already reported. An earlier run's fill names that run's boot: the shard journals
        it without moving the position (the start took positions from the venue's balances)."""
        if owner is None:
            self.counters["trades_not_ours"] += 1
            return None
        boot, shard, oid = owner
        tid, vid = int(t["id"]), int(t["orderId"])
        px = to_fixed(Decimal(str(t["price"])), info.price_scale)
        q = to_fixed(Decimal(str(t["qty"])), info.qty_scale)
        fee, flags = self._fee(info, str(t["commission"]), str(t["commissionAsset"]))
        side = SIDE_BID if t.get("isBuyer") else SIDE_ASK
        kw = dict(ts_ns=int(t.get("time", 0)) * 1_000_000, price=px, qty=q, fee=fee,
                  maker=1 if t.get("isMaker") else 0, flags=flags | RP_FLAG_RECOVERED, trade_id=tid,
                  venue_order_id=vid, side=side)
        if boot == self.boot_id:
            cid = self.client_order_id(shard, oid)
            o = self.orders.get(cid)
            if o is None:  # a record evicted meanwhile: the fill still belongs to this run's order
                o = _Order(cid, shard, oid, info, venue_id=vid, side=side)
                o.placed.set()
                self._track(o)
            if tid in o.trades:
                return None
            o.trades.add(tid)
            o.filled += q
            o.venue_id = vid
            self.counters["fills_recovered"] += 1
            return self._rep(RP_FILL, o.shard, o.order_id, info.instrument, **kw)
        n = _boot_number(boot)
        if n is None:
            self.counters["trades_not_ours"] += 1
            log.warning("binance gateway: trade %d of %s: order b4%s-%d-%d has a boot id that is no daemon's",
                        tid, info.symbol, boot, shard, oid)
            return None
        if shard != info.shard:
            # journalled on the shard that owns the instrument now: the stored client order id
            # string names that shard, not the one the earlier run used
            log.warning("binance gateway: trade %d of %s: the order of boot %s was placed by shard %d, "
                        "the instrument is on shard %d now", tid, info.symbol, boot, shard, info.shard)
        self.counters["fills_recovered_other_runs"] += 1
        if vid in self._kept_vids and int(t.get("time", 0)) > self.balances_ms > 0:
            # an earlier run's protective order left resting filled after this run read the
            # balances its positions come from: the fill moves the position
            kw["flags"] = int(kw["flags"]) | RP_FLAG_AFTER_BALANCES
            self.counters["fills_after_balances"] += 1
        return self._rep(RP_FILL, info.shard, oid, info.instrument, boot=n, **kw)

    async def _sweep(self, info: SymbolInfo) -> bool:
        """Report every trade of ours on ``info``'s symbol after the floor that was not reported,
        oldest first (myTrades from ``fromId``, pages of MY_TRADES_PAGE). Returns whether the
        stream was up from before the first page to the end (every later trade comes on it): then
        the symbol's events flow again. GatewayError / _Halted when the venue cannot tell."""
        sym = info.symbol
        if self._floor.get(sym) is None:
            raise GatewayError("sweep before start")
        async with self._sweep_locks[sym]:
            epoch, up = self._stream_epoch, self._stream_connected
            self.counters["fill_sweeps"] += 1
            while True:
                page = await self._get_retry("/api/v3/myTrades", {"symbol": sym, "fromId": self._floor[sym] + 1,
                                                                   "limit": MY_TRADES_PAGE}, W_MY_TRADES)
                if not isinstance(page, list) or not all(
                        isinstance(t, dict) and isinstance(t.get("id"), int) and isinstance(t.get("orderId"), int)
                        for t in page):
                    raise GatewayError(f"myTrades {sym}: not a list of trades")
                page.sort(key=lambda t: t["id"])
                owners = {}
                for t in page:  # who placed each order (the trade list does not say)
                    if t["id"] > self._floor[sym] and t["orderId"] not in owners:
                        o = next((x for x in self.orders.values() if x.venue_id == t["orderId"]), None)
                        owners[t["orderId"]] = self.parse_client_order_id(o.cid) if o is not None \
                            else await self._order_by_venue_id(info, t["orderId"])
                reps = []
                for t in page:  # no await from here on: the stream cannot report in between
                    if t["id"] <= self._floor[sym]:
                        continue  # reported already (the stream, while in order)
                    try:
                        r = self._trade_report(info, t, owners[t["orderId"]])
                    except (KeyError, ValueError, InvalidOperation, TypeError) as e:
                        raise GatewayError(f"myTrades {sym}: trade {t['id']} malformed ({e!r})") from None
                    if r is not None:
                        reps.append(r)
                    self._floor[sym] = t["id"]
                self._emit(reps)
                if len(page) < MY_TRADES_PAGE:
                    break
            done = up and epoch == self._stream_epoch and self._stream_connected
            if done and not self._in_order.get(sym, False):
                self._release_held(sym)
            return done

    @staticmethod
    def _order_state(o: _Order, js: dict) -> tuple[str, int] | None:
        """(status, executed quantity units) of an order query's JSON; None if malformed."""
        try:
            status = str(js["status"])
            executed = to_fixed(Decimal(str(js["executedQty"])), o.info.qty_scale)
            o.venue_id = int(js["orderId"])
        except (KeyError, ValueError, InvalidOperation, TypeError):
            log.warning("binance gateway: malformed order state for %s", o.cid)
            return None
        return status, executed

    def _acknowledge(self, o: _Order, status: str) -> None:
        """What an order query says before any fill: rejected, or acknowledged."""
        if o.terminal:
            return
        if status == "REJECTED":
            o.terminal = RP_REJECT
            self._emit([self._rep(RP_REJECT, o.shard, o.order_id, o.info.instrument)])
        elif not o.acked:
            o.acked = True
            self._emit([self._rep(RP_ACK, o.shard, o.order_id, o.info.instrument)])

    def _conclude(self, o: _Order, status: str, executed: int) -> None:
        """How an order ended per its query, once all its fills were reported."""
        if o.terminal or executed > o.filled:
            return  # the missing fills first (the stream, or a later sweep)
        if status == "FILLED" or (o.qty and o.filled >= o.qty):
            o.terminal = RP_FILL
        elif status == "CANCELED":
            o.terminal = RP_CANCELLED
            self._emit([self._rep(RP_CANCELLED, o.shard, o.order_id, o.info.instrument)])
        elif status in ("EXPIRED", "EXPIRED_IN_MATCH"):
            o.terminal = RP_EXPIRED
            self._emit([self._rep(RP_EXPIRED, o.shard, o.order_id, o.info.instrument)])

    async def _apply_state(self, o: _Order, js: dict) -> None:
        """Report what an order query (or openOrders entry) shows and the stream has not: the
        acknowledgement, fills (a sweep of the symbol's trades, so they stay in trade-id order),
        then how it ended."""
        st = self._order_state(o, js)
        if st is None:
            return
        status, executed = st
        self._acknowledge(o, status)
        if not o.terminal and executed > o.filled:
            try:
                await self._sweep(o.info)
            except (GatewayError, _Halted) as e:
                log.warning("binance gateway: fills of %s not swept: %s", o.cid, e)
                return  # without them a terminal report would lose fills: a later look finishes
        self._conclude(o, status, executed)

    def _fee(self, info: SymbolInfo, n: str, asset: str) -> tuple[int, int]:
        """Commission in notional units with RP_FLAG_FEE_GIVEN. Paid in another asset than the
        quote (BNB, the base asset), it is converted at that asset's mark in the quote (``mark_of``)
        when the fill arrives; without a mark the OMS's fee model (the venue's rates) applies."""
        scale = info.price_scale + info.qty_scale
        d = Decimal(n)
        if asset != info.quote and d != 0:
            mark = self.mark_of(asset, info.quote) if self.mark_of is not None else None
            if mark is None or mark <= 0:
                if not self.counters["fee_no_mark"]:
                    log.warning("binance gateway: a fee paid in %s has no %s mark: the fee model applies",
                                asset, info.quote)
                self.counters["fee_no_mark"] += 1
                return 0, 0
            self.counters["fee_converted"] += 1
            d = d * mark
        try:
            return to_fixed(d, scale), RP_FLAG_FEE_GIVEN
        except ValueError:
            # finer than notional units: round against us, never toward a smaller cost
            self.counters["fee_rounded"] += 1
            return to_fixed(d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_CEILING), scale), \
                RP_FLAG_FEE_GIVEN

    # ---- cancel ------------------------------------------------------------------------------------
    async def _cancel(self, rec: np.void) -> None:
        shard, oid, inst = int(rec["shard"]), int(rec["order_id"]), int(rec["instrument"])
        self.counters["cancels"] += 1
        try:
            cid = self.client_order_id(shard, oid)
        except ValueError:
            self.counters["bad_command"] += 1
            self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=-1102)])
            return
        o = self.orders.get(cid)
        info = o.info if o is not None else self.by_instrument.get(inst)
        if info is None:
            self.counters["bad_command"] += 1
            self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=-1121)])
            return
        if o is not None and o.terminal:
            self.counters["cancel_for_closed"] += 1  # its final report is already on its way
            return
        if o is not None and o.list_cancelled:
            # the venue took the cancel of this OCO leg's list (through the other leg): the stream
            # reports this leg's end too
            self.counters["cancel_list_done"] += 1
            return
        if o is not None and not o.placed.is_set():
            # a cancel that overtakes its own place would be refused as unknown
            try:
                await asyncio.wait_for(o.placed.wait(), self.request_timeout_s * 2)
            except TimeoutError:
                pass
        delay = 0.05
        for attempt in range(8):
            if o is not None and o.terminal:
                return
            try:
                status, data, code, cat = await self._call(
                    "DELETE", "/api/v3/order", {"symbol": info.symbol, "origClientOrderId": cid},
                    W_CANCEL, K_CANCEL)
            except _Halted:
                self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=self.halt_code)])
                return
            except RestError:
                status, code, cat = 0, 0, CAT_RECONCILE
            if status == 200:
                if o is not None and o.peer is not None:
                    o.peer.list_cancelled = True   # one leg's cancel ends the whole list
                return  # the stream reports CANCELED
            if cat == CAT_RATE_LIMIT:
                continue  # held: the breaker decides when it goes again
            if code == UNKNOWN_ORDER_CANCEL:
                if o is not None:
                    # filled or cancelled already? the query tells what the stream may not have
                    js, _ = await self._query_order_safe(o)
                    if js is not None:
                        await self._apply_state(o, js)
                    if o.terminal:
                        return
                self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=code)])
                return
            if status >= 500 or status == 0 or cat in (CAT_RECONCILE, CAT_RETRY):
                # outcome unknown or transient: a cancel is safe to repeat, but look first
                if o is not None:
                    js, _ = await self._query_order_safe(o)
                    if js is not None:
                        await self._apply_state(o, js)
                        if o.terminal:
                            return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=code or -status)])
            return
        self._emit([self._rep(RP_CANCEL_REJECT, shard, oid, inst, reason=code or -1001)])

    async def _query_order_safe(self, o: _Order) -> tuple[dict | None, int]:
        try:
            return await self._query_order(o)
        except _Halted:
            return None, self.halt_code

    # ---- user-data stream --------------------------------------------------------------------------
    def _on_user_message(self, raw: bytes) -> None:
        self.counters["stream_messages"] += 1
        try:
            ev = json.loads(raw)
        except ValueError:
            self.counters["stream_malformed"] += 1
            return
        if isinstance(ev, dict) and "data" in ev and "stream" in ev:
            ev = ev["data"]  # combined-stream wrapper
        if not isinstance(ev, dict):
            self.counters["stream_malformed"] += 1
            return
        e = ev.get("e")
        if e == "executionReport":
            try:
                self._on_execution(ev)
            except (KeyError, ValueError, InvalidOperation, TypeError):
                self.counters["stream_malformed"] += 1
        elif e == "listenKeyExpired":
            self.counters["stream_ignored_event"] += 1
            self._spawn(self._renew_and_reconnect())
        elif e == "listStatus":
            # an OCO's status; each leg's own executionReport carries what the OMS needs
            self.counters["stream_list_status"] += 1
        elif e in ("outboundAccountPosition", "balanceUpdate", "externalLockUpdate"):
            self.counters["stream_ignored_event"] += 1
        else:
            self.counters["stream_unknown_event"] += 1

    def _on_execution(self, ev: dict) -> None:
        x = ev["x"]
        cid = ev["C"] if x == "CANCELED" and ev.get("C") else ev["c"]
        parsed = self.parse_client_order_id(cid)
        if parsed is None:
            self.counters["stream_foreign_order"] += 1
            return
        boot, shard, oid = parsed
        sym = ev["s"]
        if not self._in_order.get(sym, True):
            # a gap on this symbol's stream is being swept: what follows it waits, so that fills
            # reach the shard in trade-id order (see set_fill_marks)
            self._held.setdefault(sym, []).append(ev)
            self.counters["stream_held"] += 1
            return
        if boot != self.boot_id:
            self.counters["stream_other_boot"] += 1
            if x == "TRADE" and sym in self.by_symbol:
                # an earlier run's order filled: a sweep reports it (recovered, in order)
                self.counters["stream_other_boot_fills"] += 1
                self._catch_up(sym)
            return
        o = self.orders.get(cid)
        if o is None:
            info = self.by_symbol.get(sym)
            if info is None:
                self.counters["stream_foreign_order"] += 1
                return
            o = _Order(cid, shard, oid, info, qty=to_fixed(Decimal(ev["q"]), info.qty_scale))
            o.placed.set()
            self._track(o)
        if x == "TRADE" and o.trades and int(ev["t"]) in o.trades:
            # a repeated fill, also after the order's last one closed it: counted, never applied
            self.counters["duplicate_trade_skipped"] += 1
            return
        if o.terminal:
            return
        info = o.info
        if o.venue_id is None:
            o.venue_id = int(ev["i"])
        o.side = SIDE_BID if ev.get("S") == "BUY" else SIDE_ASK
        ts = int(ev.get("T") or ev.get("E") or 0) * 1_000_000
        reps: list[tuple] = []
        if x == "NEW":
            if not o.acked:
                o.acked = True
                reps.append(self._rep(RP_ACK, o.shard, o.order_id, info.instrument, ts_ns=ts))
                if self.ack_hist is not None and o.sent_ns:
                    self.ack_hist.record(max(0, time.time_ns() - o.sent_ns))
        elif x == "TRADE":
            tid = int(ev["t"])
            floor = self._floor.get(sym)
            if tid in o.trades or (floor is not None and tid <= floor):
                self.counters["duplicate_trade_skipped"] += 1  # (at or below the floor: swept)
            else:
                px = to_fixed(Decimal(ev["L"]), info.price_scale)
                q = to_fixed(Decimal(ev["l"]), info.qty_scale)
                fee, flags = self._fee(info, ev["n"], ev.get("N") or "")
                o.trades.add(tid)
                o.filled += q
                self._floor[sym] = tid
                reps.append(self._rep(RP_FILL, o.shard, o.order_id, info.instrument, ts_ns=ts,
                                      price=px, qty=q, fee=fee, maker=1 if ev.get("m") else 0,
                                      flags=flags, trade_id=tid, side=o.side))
            if ev.get("X") == "FILLED":
                o.terminal = RP_FILL
        elif x == "CANCELED":
            o.terminal = RP_CANCELLED
            reps.append(self._rep(RP_CANCELLED, o.shard, o.order_id, info.instrument, ts_ns=ts))
        elif x == "EXPIRED":
            o.terminal = RP_EXPIRED
            reps.append(self._rep(RP_EXPIRED, o.shard, o.order_id, info.instrument, ts_ns=ts))
        elif x == "REJECTED":
            o.terminal = RP_REJECT
            reps.append(self._rep(RP_REJECT, o.shard, o.order_id, info.instrument, ts_ns=ts))
        else:  # TRADE_PREVENTION, REPLACED, AMENDMENT: nothing the OMS takes today
            self.counters["stream_ignored_event"] += 1
        self._emit(reps)

    async def _new_listen_key(self) -> None:
        assert self.rest is not None
        try:
            status, data, code, cat = await self._call("POST", "/api/v3/userDataStream", {},
                                                       W_LISTEN_KEY, K_QUERY, signed=False)
        except (RestError, _Halted) as e:
            raise GatewayError(f"cannot create a user-data stream listen key: {e}") from None
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("listenKey"), str):
            raise GatewayError(f"cannot create a user-data stream listen key: HTTP {status} code {code}")
        self._listen_key = data["listenKey"]
        self._listen_key_t = time.monotonic()

    async def _renew_and_reconnect(self) -> None:
        self.counters["listen_key_renewals"] += 1
        try:
            await self._new_listen_key()
        except GatewayError as e:
            log.error("binance gateway: %s", e)
            return
        if self._ws is not None:
            self._ws.disconnect()  # the stream loop reconnects with the new key

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            if not self._listen_key:
                continue
            try:
                status, _d, code, _c = await self._call(
                    "PUT", "/api/v3/userDataStream", {"listenKey": self._listen_key},
                    W_LISTEN_KEY, K_QUERY, signed=False)
            except _Halted:
                return
            except RestError:
                continue
            if status == 200:
                self._listen_key_t = time.monotonic()
            elif code == -1125:  # the key is gone: a new one, and the stream on it
                await self._renew_and_reconnect()

    async def _stream_loop(self) -> None:
        policy = BackoffPolicy(base_s=0.05, max_s=5.0, max_attempts=30, window_s=60.0,
                               healthy_after_s=5.0)
        first = True
        failures_in_row = 0
        while not self._stopping:
            delay = policy.delay_s(time.monotonic_ns())
            if delay:
                await asyncio.sleep(delay)
            policy.attempt(time.monotonic_ns())
            url = f"{self.ws_base}/ws/{self._listen_key}"
            try:
                transport, _listener = await ws_connect(
                    lambda: _UserListener(self), url, enable_auto_ping=True,
                    auto_ping_idle_timeout=20, auto_ping_reply_timeout=10,
                    websocket_handshake_timeout=5, max_frame_size=1 << 20)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # refused, reset, handshake refused (listen key gone) ...
                self.counters["stream_connect_failed"] += 1
                log.warning("binance user stream: connect failed (%s)", type(e).__name__)
                policy.failed()
                failures_in_row += 1
                if failures_in_row >= 3 and not self.halted:
                    failures_in_row = 0
                    try:
                        await self._new_listen_key()
                        self.counters["listen_key_renewals"] += 1
                    except GatewayError as ge:
                        log.warning("binance user stream: %s", ge)
                continue
            failures_in_row = 0
            t0 = time.monotonic_ns()
            self._ws = transport
            self._stream_connected = True
            self._stream_epoch += 1
            self.counters["stream_connects"] += 1
            self._stream_up.set()
            if not first:
                # events sent while we were away are lost: ask the venue about live orders, and
                # sweep every symbol's trades before its stream events flow again
                self._catch_up()
            first = False
            try:
                await transport.wait_disconnected()
            finally:
                self._stream_connected = False
                self._ws = None
                for sym in self._in_order:
                    self._in_order[sym] = False  # what comes after the gap waits for a sweep
            if self._stopping:
                return
            self.counters["stream_disconnects"] += 1
            log.warning("binance user stream: disconnected; reconnecting")
            policy.connection_ended(time.monotonic_ns() - t0)

    # ---- reconciliation ----------------------------------------------------------------------------
    async def _reconcile_quiet(self) -> None:
        """After a gap (a reconnect, an earlier run's fill on the stream): reconcile until every
        symbol's events flow again, backing off while the venue cannot answer."""
        delay = 0.2
        while not self._stopping and not self.halted:
            self._gap.clear()
            try:
                await self._reconcile(balances=False)
            except (GatewayError, _Halted) as e:
                log.warning("binance gateway: reconciliation after a gap failed: %s", e)
            waiting = [s for s, ok in self._in_order.items() if not ok]
            if not waiting:
                return
            log.info("binance gateway: %s still wait for a sweep of their trades", ", ".join(waiting))
            try:
                await asyncio.wait_for(self._gap.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, 5.0)

    async def reconcile(self) -> Reconciliation:
        """Open orders (ours this boot / earlier boots / foreign) and balances; every order this
        boot believes live is brought up to date, and every trade of ours after the floor (at
        start: the journal's marks, ``set_fill_marks``) is reported (reports emitted for what was
        missed). Raises GatewayError when the venue cannot tell."""
        return await self._reconcile(balances=True)

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """The account's balances: asset -> (free, locked). Raises GatewayError."""
        try:
            acct = await self._get_retry("/api/v3/account", {}, W_ACCOUNT)
            out = {str(b["asset"]): (Decimal(b["free"]), Decimal(b["locked"])) for b in acct.get("balances", [])}
            # the venue's time of the account's last change: a later trade is not in these balances
            self.balances_ms = int(acct.get("updateTime") or 0)
            return out
        except _Halted as e:
            raise GatewayError(f"halted: {e}") from None
        except (AttributeError, KeyError, InvalidOperation, TypeError) as e:
            raise GatewayError(f"GET /api/v3/account: malformed balances ({e!r})") from None

    async def _get_retry(self, path: str, params: dict[str, Any], weight: int) -> Any:
        delay = 0.05
        for _ in range(10):
            try:
                status, data, code, cat = await self._call("GET", path, params, weight, K_QUERY)
            except RestError:
                status, data, code, cat = 0, None, 0, CAT_RETRY
            if status == 200:
                return data
            if cat not in (CAT_RETRY, CAT_RATE_LIMIT, CAT_RECONCILE):
                raise GatewayError(f"GET {path}: HTTP {status} code {code}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise GatewayError(f"GET {path}: no answer after retries")

    async def _reconcile(self, *, balances: bool) -> Reconciliation:
        """Acknowledgements first, then every symbol's trades after its floor (in trade-id order),
        then how the orders that closed meanwhile ended: the OMS sees an order's fills before its
        end, and each symbol's stream events flow again once its sweep is complete."""
        assert self._reconcile_lock is not None
        async with self._reconcile_lock:
            self.counters["reconciliations"] += 1
            rec = Reconciliation()
            live = {c: o for c, o in self.orders.items()
                    if not o.terminal and o.placed.is_set() and not o.unknown}
            try:
                if W_OPEN_SYMBOL * len(self.symbols) <= W_OPEN_ALL:
                    lists = await asyncio.gather(*(
                        self._get_retry("/api/v3/openOrders", {"symbol": s.symbol}, W_OPEN_SYMBOL)
                        for s in self.symbols))
                    opens = [x for lst in lists for x in (lst or [])]
                else:
                    opens = await self._get_retry("/api/v3/openOrders", {}, W_OPEN_ALL) or []
            except _Halted as e:
                raise GatewayError(f"halted: {e}") from None
            if balances:
                rec.balances = await self.balances()
            seen: set[str] = set()
            later: list[tuple[_Order, tuple[str, int]]] = []

            def settle(o: _Order, js: dict) -> None:
                """Acknowledged (or rejected) now; ended now unless fills are missing: those come
                from the sweep first, so the OMS sees an order's fills before its end."""
                st = self._order_state(o, js)
                if st is None:
                    return
                self._acknowledge(o, st[0])
                if st[1] > o.filled:
                    later.append((o, st))
                else:
                    self._conclude(o, *st)

            for js in opens:
                try:
                    cid = str(js["clientOrderId"])
                    parsed = self.parse_client_order_id(cid)
                    oo = OpenOrder(str(js["symbol"]), str(js["side"]), Decimal(js["price"]),
                                   Decimal(js["origQty"]), Decimal(js["executedQty"]), cid,
                                   int(js["orderId"]), parsed[0] if parsed else None,
                                   parsed[1] if parsed else None, parsed[2] if parsed else None,
                                   str(js.get("type", "")), int(js.get("orderListId", -1)),
                                   Decimal(js.get("stopPrice") or 0))
                except (KeyError, ValueError, InvalidOperation, TypeError):
                    self.counters["stream_malformed"] += 1
                    continue
                if parsed is None:
                    rec.foreign.append(oo)
                elif parsed[0] != self.boot_id:
                    rec.previous_boots.append(oo)
                else:
                    rec.ours.append(oo)
                    seen.add(cid)
                    o = live.get(cid)
                    if o is not None:
                        settle(o, js)
            # orders we believe live that are no longer open: ask for each one
            missing = [o for c, o in live.items() if c not in seen]
            sem = asyncio.Semaphore(max(1, self.connections))

            async def one(o: _Order) -> None:
                async with sem:
                    for _ in range(10):
                        js, code = await self._query_order_safe(o)
                        if js is not None:
                            settle(o, js)
                            return
                        if code == NO_SUCH_ORDER or self.halted:
                            return
                        await asyncio.sleep(0.1)

            await asyncio.gather(*(one(o) for o in missing))
            try:
                for info in self.symbols:
                    await self._sweep(info)
            except _Halted as e:
                raise GatewayError(f"halted: {e}") from None
            for o, (status, executed) in later:
                self._conclude(o, status, executed)
            self.last_reconciliation = rec
            return rec

    async def cancel_leftovers(self, rec: Reconciliation,
                               position_sign: Callable[[str], int] | None = None) -> int:
        """Cancel the open orders of our previous boots; returns how many the venue cancelled.

        An earlier boot's protective stop that still guards a position (``position_sign(symbol)``
        says long > 0 / short < 0) is left resting, with the take-profit leg of its OCO if it has
        one: this boot's first protective order for that symbol replaces it (a lone stop in one
        cancel-replace request, so the position is never bare; an OCO is cancelled, then placed
        anew). Their fills after the balances are read move the position (``_trade_report``)."""
        n = 0
        keep_lists: set[int] = set()
        for oo in rec.previous_boots:
            sign = position_sign(oo.symbol) if position_sign is not None else 0
            if oo.otype == "STOP_LOSS_LIMIT" and sign != 0 and oo.side == ("SELL" if sign > 0 else "BUY") \
                    and oo.symbol not in self.adoptable_stops:
                self.adoptable_stops[oo.symbol] = oo
                self._kept_vids.add(oo.venue_order_id)
                if oo.list_id >= 0:
                    keep_lists.add(oo.list_id)
                log.info("binance gateway: %s protective stop %s of an earlier run left resting "
                         "until this run replaces it", oo.symbol, oo.client_order_id)
        for oo in rec.previous_boots:
            if self.adoptable_stops.get(oo.symbol) is oo:
                continue
            if oo.list_id >= 0 and oo.list_id in keep_lists:
                # the adopted stop's take-profit leg: it goes with its list
                self._kept_vids.add(oo.venue_order_id)
                if oo.otype == "LIMIT_MAKER":
                    self.adoptable_tp[oo.symbol] = oo.price
                continue
            try:
                status, _d, code, _c = await self._call(
                    "DELETE", "/api/v3/order",
                    {"symbol": oo.symbol, "origClientOrderId": oo.client_order_id},
                    W_CANCEL, K_CANCEL)
            except (RestError, _Halted) as e:
                log.warning("binance gateway: leftover %s not cancelled: %s", oo.client_order_id, e)
                continue
            if status == 200:
                n += 1
            else:
                log.warning("binance gateway: leftover %s not cancelled: code %s",
                            oo.client_order_id, code)
        return n

    def adopted_protection(self) -> dict[str, tuple[Decimal, Decimal]]:
        """symbol -> (stop price, take-profit price or 0) of the earlier runs' protection left
        resting: what this run's first protective order for the symbol should ask for again."""
        return {sym: (oo.stop_price, self.adoptable_tp.get(sym, Decimal(0)))
                for sym, oo in self.adoptable_stops.items()}

    async def cancel_unadopted_stops(self) -> int:
        """Cancel the earlier boots' protective stops no stop of this boot replaced."""
        n = 0
        while self.adoptable_stops:
            _sym, oo = self.adoptable_stops.popitem()
            try:
                status, _d, code, _c = await self._call(
                    "DELETE", "/api/v3/order", {"symbol": oo.symbol, "origClientOrderId": oo.client_order_id},
                    W_CANCEL, K_CANCEL)
            except (RestError, _Halted) as e:
                log.warning("binance gateway: stop %s not cancelled: %s", oo.client_order_id, e)
                continue
            n += status == 200
        return n

    # ---- telemetry ---------------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.breaker_state
        row = self.br[self.br_i]
        return {
            "breaker": BREAKER_NAMES[st],
            "breaker_state": st,
            "breaker_opened": int(row[bkr.BR_TRIPS]),
            "breaker_reason": BREAKER_REASONS.get(int(row[bkr.BR_REASON])),
            "breaker_calls_by_category": {CATEGORY_NAMES[c]: int(row[bkr.BR_CAT + c])
                                          for c in CATEGORY_NAMES if int(row[bkr.BR_CAT + c])},
            "venue_errors": self.venue_errors,
            "weight_used": self.budget.current(),
            "weight_peak": self.budget.peak,
            "weight_budget": self.budget.budget,
            "in_flight": len(self._tasks),
            "requests_in_flight": self.rest.in_flight if self.rest else 0,
            "errors_by_category": dict(self.errors),
            "counters": dict(self.counters),
            "orders_tracked": len(self.orders),
            "user_stream_connected": self._stream_connected,
            "listen_key_age_s": (round(time.monotonic() - self._listen_key_t, 3)
                                 if self._listen_key_t is not None else None),
            "halted": self.halted,
            "fill_recovery": self.fill_recovery(),
            "clock": self.clock.status(self.clock_ns()),
        }
