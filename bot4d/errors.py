"""Error taxonomy: every venue error maps to a category with one recovery strategy.

Used at the edges (venue modules, order gateway); the numeric CAT_* codes are what kernels see
(breakers count failures by category, the kill switch counts errors). Categories:

=================  ==========================================================================
CAT_OK             success
CAT_RETRY          transient: retry with exponential backoff (server busy, disconnected, a
                   rejected timestamp after re-syncing the clock)
CAT_RATE_LIMIT     wait until the venue's rate-limit window allows again (honour Retry-After)
CAT_REJECT         the request itself is wrong for the venue (filters, balance, bad params):
                   reject to the strategy, do not retry unchanged
CAT_RECONCILE      the outcome is unknown or our view of the order is stale: query the venue
                   for the order's state before doing anything else with it
CAT_HALT           we cannot trade safely (auth failure, IP ban, account locked): halt
=================  ==========================================================================

Sources (each table below cites its page):
* Binance spot: https://developers.binance.com/docs/binance-spot-api-docs/errors and
  https://developers.binance.com/docs/binance-spot-api-docs/rest-api/http-return-codes
  (429 rate limit, 418 IP auto-ban, 5XX "execution status is UNKNOWN").
* Kraken spot REST: https://docs.kraken.com/api/docs/guides/spot-errors (string codes
  "Category:Message").
* OKX v5: https://www.okx.com/docs-v5/en/#error-code (50011 "Requests too frequent" 429, 50013
  "System is busy", 50004 "Endpoint request timeout (does not mean that the request was
  successful or failed, please check the request result)", 51008 insufficient balance, 51603
  order does not exist, 50102 timestamp expired, 50111/50113 auth).
* Bybit v5: https://bybit-exchange.github.io/docs/v5/error (10006 too many visits, 10002
  timestamp outside recv_window, 10003/10004 key/signature, 10016 server error, 110007/170131
  insufficient balance, 110001/170213 order does not exist).
* Coinbase: https://docs.cdp.coinbase.com/coinbase-app/api-architecture/status-codes (401, 403,
  429 "being rate limited", 5xx), https://docs.cdp.coinbase.com/api-reference/v2/errors ("5xx
  errors are not a guarantee of failure ... treat the operation's status as unknown"), and the
  Advanced Trade create-order ``failure_reason`` values
  (https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/rest-api: INSUFFICIENT_FUND,
  INVALID_LIMIT_PRICE_POST_ONLY, UNKNOWN_FAILURE_REASON, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

CAT_OK = 0
CAT_RETRY = 1
CAT_RATE_LIMIT = 2
CAT_REJECT = 3
CAT_RECONCILE = 4
CAT_HALT = 5
N_CATEGORIES = 6

CATEGORY_NAMES = {
    CAT_OK: "ok", CAT_RETRY: "retry_backoff", CAT_RATE_LIMIT: "wait_rate_limit",
    CAT_REJECT: "reject_to_strategy", CAT_RECONCILE: "reconcile", CAT_HALT: "halt",
}

VENUES = ("binance", "kraken", "okx", "bybit", "coinbase")


@dataclass(frozen=True)
class VenueError:
    venue: str
    code: str            # the venue's code as text ("-2010", "EOrder:Insufficient funds", "429")
    category: int        # CAT_*
    meaning: str

    @property
    def strategy(self) -> str:
        return CATEGORY_NAMES[self.category]


class UnknownVenueError(ValueError):
    """A venue name this taxonomy does not know."""


# --- Binance spot: numeric codes ---------------------------------------------------------------
BINANCE: dict[int, tuple[int, str]] = {
    -1000: (CAT_RECONCILE, "UNKNOWN: unknown error while processing the request"),
    -1001: (CAT_RETRY, "DISCONNECTED: internal error; try again"),
    -1002: (CAT_HALT, "UNAUTHORIZED"),
    -1003: (CAT_RATE_LIMIT, "TOO_MANY_REQUESTS: request weight exceeded / IP banned until"),
    -1004: (CAT_RETRY, "SERVER_BUSY"),
    -1006: (CAT_RECONCILE, "UNEXPECTED_RESP: execution status unknown"),
    -1007: (CAT_RECONCILE, "TIMEOUT: send status unknown; execution status unknown"),
    -1008: (CAT_RETRY, "SERVER_BUSY: overloaded, try again in a few minutes"),
    -1013: (CAT_REJECT, "INVALID_MESSAGE: filter failure"),
    -1015: (CAT_RATE_LIMIT, "TOO_MANY_ORDERS: order rate limit"),
    -1016: (CAT_HALT, "SERVICE_SHUTTING_DOWN"),
    -1021: (CAT_RETRY, "INVALID_TIMESTAMP: outside recvWindow; re-sync the clock and retry"),
    -1022: (CAT_HALT, "INVALID_SIGNATURE"),
    -1100: (CAT_REJECT, "ILLEGAL_CHARS"),
    -1102: (CAT_REJECT, "MANDATORY_PARAM_EMPTY_OR_MALFORMED"),
    -1111: (CAT_REJECT, "BAD_PRECISION"),
    -1121: (CAT_REJECT, "BAD_SYMBOL"),
    -2010: (CAT_REJECT, "NEW_ORDER_REJECTED (e.g. insufficient balance)"),
    -2011: (CAT_RECONCILE, "CANCEL_REJECTED: unknown order sent (our view is stale)"),
    -2013: (CAT_RECONCILE, "NO_SUCH_ORDER: order does not exist"),
    -2014: (CAT_HALT, "BAD_API_KEY_FMT"),
    -2015: (CAT_HALT, "REJECTED_MBX_KEY: invalid API key, IP, or permissions"),
}

# --- Kraken spot: string codes (prefix match on "Category:Message") ---------------------------
KRAKEN: dict[str, tuple[int, str]] = {
    "EAPI:Rate limit exceeded": (CAT_RATE_LIMIT, "REST call counter exceeded"),
    "EOrder:Rate limit exceeded": (CAT_RATE_LIMIT, "order rate counter exceeded"),
    "EGeneral:Too many requests": (CAT_RATE_LIMIT, "too many requests"),
    "EAPI:Invalid nonce": (CAT_RETRY, "nonce not increasing; re-seed the nonce and retry"),
    "EAPI:Invalid key": (CAT_HALT, "invalid API-Key"),
    "EAPI:Invalid signature": (CAT_HALT, "invalid API-Sign"),
    "EGeneral:Permission denied": (CAT_HALT, "key lacks permission"),
    "EGeneral:Temporary lockout": (CAT_HALT, "locked after repeated invalid keys"),
    "EGeneral:Invalid arguments": (CAT_REJECT, "malformed request"),
    "EOrder:Insufficient funds": (CAT_REJECT, "insufficient funds"),
    "EOrder:Order minimum not met": (CAT_REJECT, "volume below the pair's minimum"),
    "EOrder:Cost minimum not met": (CAT_REJECT, "cost below the pair's minimum"),
    "EOrder:Orders limit exceeded": (CAT_REJECT, "too many open orders"),
    "EOrder:Unknown order": (CAT_RECONCILE, "unknown order"),
    "EService:Unavailable": (CAT_RETRY, "matching engine or API offline"),
    "EService:Busy": (CAT_RETRY, "service busy"),
    "EService:Market in cancel_only mode": (CAT_REJECT, "market accepts cancels only"),
    "EService:Market in post_only mode": (CAT_REJECT, "market accepts post-only only"),
    "EService:Deadline elapsed": (CAT_RECONCILE, "request timed out by deadline"),
    "EGeneral:Internal error": (CAT_RECONCILE, "internal error: outcome unknown"),
}

# --- OKX v5: numeric sCode/code ----------------------------------------------------------------
OKX: dict[int, tuple[int, str]] = {
    50001: (CAT_RETRY, "service temporarily unavailable"),
    50004: (CAT_RECONCILE, "endpoint request timeout: outcome unknown, check the result"),
    50011: (CAT_RATE_LIMIT, "requests too frequent (HTTP 429)"),
    50013: (CAT_RETRY, "system is busy"),
    50026: (CAT_RETRY, "system error, try again later"),
    50102: (CAT_RETRY, "timestamp request expired; re-sync the clock"),
    50111: (CAT_HALT, "invalid OK-ACCESS-KEY"),
    50113: (CAT_HALT, "invalid signature"),
    51000: (CAT_REJECT, "parameter error"),
    51008: (CAT_REJECT, "insufficient balance"),
    51603: (CAT_RECONCILE, "order does not exist"),
}

# --- Bybit v5: numeric retCode -----------------------------------------------------------------
BYBIT: dict[int, tuple[int, str]] = {
    10001: (CAT_REJECT, "request parameter error"),
    10002: (CAT_RETRY, "timestamp outside recv_window; re-sync the clock"),
    10003: (CAT_HALT, "invalid API key"),
    10004: (CAT_HALT, "invalid signature"),
    10005: (CAT_HALT, "permission denied"),
    10006: (CAT_RATE_LIMIT, "too many visits (per-UID rate limit)"),
    10016: (CAT_RECONCILE, "server error / service restarting: outcome unknown"),
    10018: (CAT_RATE_LIMIT, "per-IP rate limit exceeded"),
    110001: (CAT_RECONCILE, "order does not exist"),
    110007: (CAT_REJECT, "insufficient available balance"),
    170131: (CAT_REJECT, "insufficient balance (spot)"),
    170213: (CAT_RECONCILE, "order does not exist (spot)"),
}

# --- Coinbase Advanced Trade: order failure reasons --------------------------------------------
COINBASE: dict[str, tuple[int, str]] = {
    "INSUFFICIENT_FUND": (CAT_REJECT, "insufficient funds"),
    "INVALID_LIMIT_PRICE_POST_ONLY": (CAT_REJECT, "post-only order would take"),
    "INVALID_SIZE_PRECISION": (CAT_REJECT, "size precision"),
    "INVALID_PRICE_PRECISION": (CAT_REJECT, "price precision"),
    "INVALID_PRODUCT_ID": (CAT_REJECT, "unknown product"),
    "ORDER_ENTRY_DISABLED": (CAT_REJECT, "order entry disabled for the product"),
    "UNKNOWN_FAILURE_REASON": (CAT_RECONCILE, "unknown failure: check the order's state"),
    "UNAUTHENTICATED": (CAT_HALT, "bad or expired credentials (HTTP 401)"),
    "PERMISSION_DENIED": (CAT_HALT, "key lacks permission (HTTP 403)"),
    "NOT_FOUND": (CAT_RECONCILE, "order not found"),
}


def _http(venue: str, status: int) -> VenueError | None:
    """Transport-level statuses common to the REST venues."""
    if status == 429:
        return VenueError(venue, "429", CAT_RATE_LIMIT, "rate limit (HTTP 429)")
    if status == 418:
        # Binance: IP auto-banned for continuing after 429s (2 min .. 3 days): stop trading
        return VenueError(venue, "418", CAT_HALT, "IP auto-banned after ignoring 429 (HTTP 418)")
    if status in (401, 403):
        return VenueError(venue, str(status), CAT_HALT, f"not authorised (HTTP {status})")
    if 500 <= status <= 599:
        # Binance: "do NOT treat this as a failure operation; the execution status is UNKNOWN"
        return VenueError(venue, str(status), CAT_RECONCILE, f"server error (HTTP {status}): outcome unknown")
    return None


def classify(venue: str, code: int | str | None = None, http_status: int | None = None) -> VenueError:
    """Map a venue's error (code and/or HTTP status) to a category.

    The venue's own code wins over the HTTP status. An error this table does not know maps to
    CAT_RECONCILE: when we do not understand the answer, we do not know the order's outcome.
    """
    v = venue.lower()
    if v not in VENUES:
        raise UnknownVenueError(f"unknown venue {venue!r}; known: {', '.join(VENUES)}")
    if code is not None and code != "":
        table: dict
        if v in ("binance", "okx", "bybit"):
            try:
                key = int(code)
            except (TypeError, ValueError):
                raise ValueError(f"{venue} error codes are integers, got {code!r}") from None
            table = {"binance": BINANCE, "okx": OKX, "bybit": BYBIT}[v]
            if key in table:
                cat, meaning = table[key]
                return VenueError(v, str(key), cat, meaning)
        elif v == "kraken":
            s = str(code)
            for prefix, (cat, meaning) in KRAKEN.items():
                if s.startswith(prefix):
                    return VenueError(v, s, cat, meaning)
        else:
            s = str(code)
            if s in COINBASE:
                cat, meaning = COINBASE[s]
                return VenueError(v, s, cat, meaning)
    if http_status is not None:
        if not isinstance(http_status, int) or not 100 <= http_status <= 599:
            raise ValueError(f"not an HTTP status: {http_status!r}")
        e = _http(v, http_status)
        if e is not None:
            return e
        if 200 <= http_status < 300 and (code is None or code == ""):
            return VenueError(v, str(http_status), CAT_OK, "ok")
    if code is None and http_status is None:
        raise ValueError("classify needs a code or an HTTP status")
    return VenueError(v, str(code if code is not None else http_status), CAT_RECONCILE,
                      "unknown error: outcome unknown, reconcile")
