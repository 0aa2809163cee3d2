"""The daemon's configuration: one TOML file, validated completely before anything starts.

Every error names the file, the key path (``instruments[1].shard``) and the problem, so an operator
can fix a refused file without reading code. Rules that hold everywhere (docs/config.md has every key):

* Decimal keys (money, quantities, percentages, seconds) take a TOML string (``"0.05"``) or an
  integer. A TOML float is refused: it is binary floating point, and ``0.1`` would already be
  inexact before it reached a kernel.
* Integer keys refuse booleans and floats (``true`` is not 1, ``8.0`` is not 8).
* Unknown keys are refused with the closest known key suggested: a typo in a limit must not fall
  back silently to a default.
* Credentials are never inline: they come from a file readable by the owner only, or from a
  systemd credential (``LoadCredential=``, read from ``$CREDENTIALS_DIRECTORY``). They are held in
  :class:`Secret`, which never prints its value; no error message ever contains one.
* Relative paths are relative to the directory of the config file, not to the working directory,
  so the file means the same thing whoever starts the daemon from wherever.
"""
from __future__ import annotations

import difflib
import hashlib
import hmac
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from bot4d.fixedpoint import FixedPointError, to_fixed
from bot4d.kernels.stp import STP_POLICIES

__all__ = [
    "ConfigError", "Secret", "StrategyConfig", "InstrumentConfig", "VenueConfig", "RiskConfig",
    "StatBreakerConfig", "CallBreakerConfig",
    "PersistConfig", "ControlConfig", "Config", "load", "reloadable_changes",
    "STRATEGY_KINDS", "VENUE_KINDS",
]

STRATEGY_KINDS = ("market_maker", "imbalance_taker", "python", "none")
# only venues with an order gateway can be configured; the feed adapters of the others are not
# enough for a trading instrument
VENUE_KINDS = ("binance",)

_INSTANCE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_VENUE_NAME_RE = re.compile(r"[a-z0-9_-]{1,32}")
_SYMBOL_RE = re.compile(r"[A-Z0-9_.-]{1,20}")  # Binance's symbol rule
_ASSET_RE = re.compile(r"[A-Z0-9]{1,20}")       # an asset as Binance names it ("USDT", "1INCH")
_DAY_START_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_GROUP_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_CREDENTIAL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
_MISSING: Any = object()


class ConfigError(Exception):
    """The configuration file is refused; ``str(e)`` names the file, the key path and the problem."""


class Secret:
    """A credential. Every way of printing it gives ``<secret>``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> Any:
        # pickling would write the credential wherever the pickle goes (a crash dump, a queue)
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class StrategyConfig:
    kind: str                               # "market_maker" | "imbalance_taker" | "none"
    params: dict[str, Decimal | int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtectionConfig:
    """The protective stop kept at the venue for a position (``[instruments.protection]``)."""
    enabled: bool = True
    default_stop_bps: int = 200    # trigger distance from the average entry when no order named one
    limit_offset_bps: int = 50     # the stop-limit's limit beyond its trigger
    retry_ms: int = 500            # wait after the venue refused one


@dataclass(frozen=True)
class InstrumentConfig:
    venue: str
    symbol: str
    shard: int
    strategy: StrategyConfig
    max_position: Decimal      # base units, > 0
    max_notional: Decimal      # quote units, > 0
    max_open_orders: int       # 1..1000
    band_bps: int              # fat-finger band 1..10000
    neutral_base: Decimal      # base-asset holding treated as flat, >= 0
    protection: ProtectionConfig = ProtectionConfig()
    # self-trade prevention asked of the venue with every order (bot4d.kernels.stp policy name)
    stp: str = "cancel_new"


@dataclass(frozen=True)
class VenueConfig:
    name: str
    kind: str
    rest_url: str
    ws_url: str
    api_key: Secret
    api_secret: Secret
    weight_budget_per_min: int = 3000
    orders_per_second: int = 10
    recv_window_ms: int = 5000
    time_sync_interval_s: int = 60          # the venue's clock offset is measured this often
    account_currency: str | None = None     # equity is measured in it (None: the instruments' quote)
    ignore_assets: tuple[str, ...] = ()     # balances left out of equity (they need no mark)


@dataclass(frozen=True)
class StatBreakerConfig:
    """``[risk.stat_breaker]``: z-score of sampled mid returns and the position's VaR, per
    instrument; an open breaker moves the account to REDUCING (bot4d.daemon.guards)."""
    enabled: bool = True
    sample_ms: int = 1000
    window: int = 100                       # returns kept per instrument
    min_samples: int = 30
    z: Decimal = Decimal(6)
    min_move_pct: Decimal = Decimal(1)      # and at least this far from the mean return
    var_z: Decimal = Decimal("2.326")       # 99 % one-sided
    var_limit: Decimal | None = None        # quote currency; None: the daily-loss limit
    cooldown_s: Decimal = Decimal(60)

    @property
    def z_milli(self) -> int:
        return to_fixed(self.z, 3)

    @property
    def var_z_milli(self) -> int:
        return to_fixed(self.var_z, 3)

    @property
    def min_move_bps(self) -> int:
        return to_fixed(self.min_move_pct, 2)

    @property
    def cooldown_ns(self) -> int:
        return to_fixed(self.cooldown_s, 9)

    def var_limit_quote(self, max_daily_loss: Decimal) -> int:
        return to_fixed(self.var_limit if self.var_limit is not None else max_daily_loss, 8)


@dataclass(frozen=True)
class CallBreakerConfig:
    """``[risk.order_entry_breaker]``: the circuit breaker around each venue's order entry
    (bot4d.kernels.breaker, in the order gateway)."""
    max_consecutive: int = 5
    error_rate_pct: Decimal = Decimal(50)
    min_calls: int = 20
    window_s: Decimal = Decimal(10)
    slow_ms: int = 2000
    max_consecutive_slow: int = 3
    cooldown_s: Decimal = Decimal(5)
    probes: int = 1
    probes_to_close: int = 1

    def kernel_args(self) -> dict[str, int]:
        """``bot4d.kernels.breaker.make_breakers`` keywords."""
        return dict(max_consec=self.max_consecutive, window_ns=to_fixed(self.window_s, 9),
                    min_calls=self.min_calls, max_err_bps=to_fixed(self.error_rate_pct, 2),
                    slow_ns=self.slow_ms * 1_000_000, max_consec_slow=self.max_consecutive_slow,
                    cooldown_ns=to_fixed(self.cooldown_s, 9), probes=self.probes,
                    probe_ok_to_close=self.probes_to_close)


@dataclass(frozen=True)
class RiskConfig:
    max_daily_loss: Decimal                 # quote units, > 0
    max_drawdown_pct: Decimal = Decimal(15)
    max_position_pct: Decimal = Decimal(2)
    correlation_cap: Decimal = Decimal("0.7")
    kelly_cap: Decimal = Decimal("0.25")
    reject_storm: int = 50                  # rejects per 10 s window that trip the kill switch
    error_storm: int = 20                   # errors per 10 s window that trip the kill switch
    md_stale_s: Decimal = Decimal(10)
    # the trading day (daily loss) starts at this UTC time of day, "HH:MM"
    day_start_utc: str = "00:00"
    # trading state of a first start (state_dir never initialised, no saved risk state):
    # "reducing" (the default) or "active"; every later start restores the saved state
    first_start_state: str = "reducing"
    # the account's committed gross exposure limit, quote units (None: none), split into per-shard
    # slices (bot4d.daemon.account): percentages per shard adding up to 100 (None: equal slices)
    max_gross_exposure: Decimal | None = None
    gross_exposure_split: tuple[int, ...] | None = None
    # correlation cap, Kelly sizing, storms, breakers (bot4d.daemon.guards, docs/config.md)
    correlation_window: int = 300           # sampled returns per instrument
    correlation_sample_ms: int = 1000
    correlation_min_samples: int = 30       # fewer common returns: the pair is not capped
    kelly_min_trades: int = 20
    breaker_storm: int = 10                 # order-entry breaker opens per window that trip it
    storm_window_s: Decimal = Decimal(10)   # the window of reject_storm, error_storm, breaker_storm
    stat_breaker: StatBreakerConfig = StatBreakerConfig()
    order_entry_breaker: CallBreakerConfig = CallBreakerConfig()

    @property
    def storm_window_ns(self) -> int:
        return to_fixed(self.storm_window_s, 9)

    # the kernels take basis points and nanoseconds; validation guaranteed these are exact
    @property
    def max_dd_bps(self) -> int:
        return to_fixed(self.max_drawdown_pct, 2)

    @property
    def max_pos_bps(self) -> int:
        return to_fixed(self.max_position_pct, 2)

    @property
    def corr_cap_bps(self) -> int:
        return to_fixed(self.correlation_cap, 4)

    @property
    def kelly_cap_bps(self) -> int:
        return to_fixed(self.kelly_cap, 4)

    @property
    def md_stale_ns(self) -> int:
        return to_fixed(self.md_stale_s, 9)

    @property
    def day_offset_ns(self) -> int:
        """Nanoseconds from 00:00 UTC to the start of the trading day."""
        h, m = self.day_start_utc.split(":")
        return (int(h) * 60 + int(m)) * 60 * 1_000_000_000


NO_SIDECAR_ACTIONS = ("trade", "reduce-only", "halt")


@dataclass(frozen=True)
class PersistConfig:
    enabled: bool = True
    journal_capacity: int = 1 << 20
    # a shard's journal with no bot4d-persist attached for this long is reported (status, metric, log)
    sidecar_timeout_s: Decimal = Decimal(30)
    # what the daemon does then: keep trading, or stop opening positions / stop trading
    on_no_sidecar: str = "trade"
    # at SIGTERM: how long to wait for an attached bot4d-persist to take every journal event
    shutdown_wait_s: Decimal = Decimal(10)


@dataclass(frozen=True)
class ControlConfig:
    socket: Path
    monitor_group: str = "bot4d-monitor"
    operator_group: str = "bot4d-operator"
    admin_group: str = "bot4d-admin"


@dataclass(frozen=True)
class Config:
    path: Path
    source_hash: str
    instance: str
    runtime_dir: Path
    state_dir: Path
    shard_cores: tuple[int, ...]
    io_core: int | None
    on_stop: str
    watchdog_interval_s: Decimal | None
    paper: bool
    control: ControlConfig
    persist: PersistConfig
    risk: RiskConfig
    venues: dict[str, VenueConfig]
    instruments: tuple[InstrumentConfig, ...]


# --- reading typed values out of TOML tables -------------------------------------------------------
def _type_name(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    return {int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(v), type(v).__name__)


class _Ctx:
    def __init__(self, label: str, base: Path, credentials_dir: Path | None) -> None:
        self.label = label
        self.base = base
        self.credentials_dir = credentials_dir

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.label}: {key}: {problem}")


class _Table:
    """One TOML table: typed getters that name the key path in every error."""

    def __init__(self, ctx: _Ctx, data: object, path: str, known: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise ctx.error(path, f"expected a table, got {_type_name(data)}")
        self.ctx, self.d, self.path, self.known = ctx, data, path, tuple(known)
        # unknown keys first: a typo must be reported as a typo, not as the missing key it hides
        for k in data:
            if k not in self.known:
                near = difflib.get_close_matches(k, self.known, n=1, cutoff=0.6)
                hint = f" (did you mean {near[0]!r}?)" if near else \
                    f" (known keys: {', '.join(self.known)})"
                raise ctx.error(self.key(k), f"unknown key{hint}")

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def err(self, k: str, problem: str) -> ConfigError:
        return self.ctx.error(self.key(k), problem)

    def has(self, k: str) -> bool:
        return k in self.d

    def get_raw(self, k: str, default: Any = _MISSING) -> Any:
        assert k in self.known, k
        if k not in self.d:
            if default is _MISSING:
                raise self.err(k, "required key is missing")
            return default
        return self.d[k]

    def get_int(self, k: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        return _check_int(self, k, self.get_raw(k, default), lo, hi)

    def get_dec(self, k: str, *, lo: Decimal | int | None = None, lo_open: bool = False,
                hi: Decimal | int | None = None, places: int | None = None,
                default: Any = _MISSING) -> Decimal:
        v = self.get_raw(k, default)
        if isinstance(v, Decimal) or (v is None and default is None):
            return v  # the default, already valid
        return _check_dec(self.ctx, self.key(k), v, lo=lo, lo_open=lo_open, hi=hi, places=places)

    def get_str(self, k: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None,
                pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        v = self.get_raw(k, default)
        if not isinstance(v, str):
            raise self.err(k, f"expected a string, got {_type_name(v)}")
        if choices is not None and v not in choices:
            raise self.err(k, f"{v!r} is not one of {', '.join(map(repr, choices))}")
        if pattern is not None and not pattern.fullmatch(v):
            raise self.err(k, f"{v!r} is not a valid {what} (must match {pattern.pattern})")
        return v

    def get_bool(self, k: str, default: Any = _MISSING) -> bool:
        v = self.get_raw(k, default)
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {_type_name(v)}")
        return v

    def get_path(self, k: str, default: Any = _MISSING) -> Path:
        v = self.get_raw(k, default)
        if isinstance(v, Path):
            return v
        if not isinstance(v, str) or not v:
            raise self.err(k, f"expected a non-empty path string, got {_type_name(v)}")
        if "\0" in v:
            raise self.err(k, "a path cannot contain a NUL character")
        return (self.ctx.base / v).resolve()

    def table(self, k: str, known: Iterable[str], required: bool = True) -> _Table:
        v = self.get_raw(k, _MISSING if required else {})
        return _Table(self.ctx, v, self.key(k), known)


def _check_int(t: _Table, k: str, v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise t.err(k, f"expected an integer, got {_type_name(v)} {v!r}")
    if not lo <= v <= hi:
        raise t.err(k, f"{v} is outside {lo}..{hi}")
    return v


def _check_dec(ctx: _Ctx, key: str, v: object, *, lo: Decimal | int | None, lo_open: bool,
               hi: Decimal | int | None, places: int | None) -> Decimal:
    if isinstance(v, float):
        raise ctx.error(key, f"{v!r} is a TOML float; decimal values are exact: write it as a "
                             f"string, e.g. \"{v!r}\"")
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ctx.error(key, f"expected a decimal string like \"0.05\", got {_type_name(v)}")
    try:
        d = Decimal(v.strip() if isinstance(v, str) else v)
    except InvalidOperation:
        raise ctx.error(key, f"{v!r} is not a decimal number") from None
    if not d.is_finite():
        raise ctx.error(key, f"{v!r} is not a finite number")
    if lo is not None and (d <= lo if lo_open else d < lo):
        raise ctx.error(key, f"{v} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and d > hi:
        raise ctx.error(key, f"{v} must be <= {hi}")
    if places is not None:
        try:
            to_fixed(d, places)
        except FixedPointError:
            raise ctx.error(key, f"{v} has more than {places} decimal places") from None
    return d


# --- sections --------------------------------------------------------------------------------------
_MM_KNOWN = ("kind", "quote_qty", "max_inventory", "half_spread_ticks", "skew_ticks_per_lot",
             "stop_ticks", "requote_ticks", "min_requote_ms")
_IT_KNOWN = ("kind", "qty", "max_position", "levels", "stop_ticks", "slip_ticks", "threshold",
             "cooldown_ms", "hold_ms")
_PY_KNOWN = ("kind", "class", "interval_ms", "params")
_PY_CLASS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*")
_TICKS_MAX = 1_000_000
_MS_MAX = 86_400_000
_QTY_MAX = Decimal(10) ** 12


def _strategy(ctx: _Ctx, raw: object, path: str, inst_max_position: Decimal) -> StrategyConfig:
    if raw is _MISSING:
        return StrategyConfig("none", {})
    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a table, got {_type_name(raw)}")
    kind_t = _Table(ctx, {"kind": raw["kind"]} if "kind" in raw else {}, path, ("kind",))
    kind = kind_t.get_str("kind", choices=STRATEGY_KINDS)
    known = {"market_maker": _MM_KNOWN, "imbalance_taker": _IT_KNOWN, "python": _PY_KNOWN,
             "none": ("kind",)}[kind]
    t = _Table(ctx, raw, path, known)
    p: dict[str, Decimal | int] = {}
    if kind == "market_maker":
        p["quote_qty"] = t.get_dec("quote_qty", lo=0, lo_open=True, hi=_QTY_MAX)
        p["max_inventory"] = t.get_dec("max_inventory", lo=0, lo_open=True, hi=_QTY_MAX)
        for k in ("half_spread_ticks", "skew_ticks_per_lot", "stop_ticks"):
            p[k] = t.get_int(k, 1, _TICKS_MAX)
        p["requote_ticks"] = t.get_int("requote_ticks", 1, _TICKS_MAX, default=1)
        p["min_requote_ms"] = t.get_int("min_requote_ms", 0, _MS_MAX, default=0)
        if p["max_inventory"] < p["quote_qty"]:
            raise t.err("max_inventory", f"{p['max_inventory']} is below quote_qty {p['quote_qty']}: "
                                         "the maker could never quote")
        inv_key = "max_inventory"
    elif kind == "imbalance_taker":
        p["qty"] = t.get_dec("qty", lo=0, lo_open=True, hi=_QTY_MAX)
        p["max_position"] = t.get_dec("max_position", lo=0, lo_open=True, hi=_QTY_MAX)
        p["levels"] = t.get_int("levels", 1, 1000)
        p["stop_ticks"] = t.get_int("stop_ticks", 1, _TICKS_MAX)
        p["slip_ticks"] = t.get_int("slip_ticks", 0, _TICKS_MAX, default=0)
        p["threshold"] = t.get_dec("threshold", lo=0, lo_open=True, hi=1, places=9)
        p["cooldown_ms"] = t.get_int("cooldown_ms", 0, _MS_MAX, default=0)
        p["hold_ms"] = t.get_int("hold_ms", 0, _MS_MAX, default=1000)
        if p["max_position"] < p["qty"]:
            raise t.err("max_position", f"{p['max_position']} is below qty {p['qty']}: "
                                        "the taker could never enter")
        inv_key = "max_position"
    elif kind == "python":
        # a Python strategy's own parameters pass through as strings/ints/bools; money stays
        # exact: a TOML float is refused like everywhere else
        cls = t.get_str("class")
        if not _PY_CLASS_RE.fullmatch(cls):
            raise t.err("class", f"{cls!r} is not 'package.module:ClassName'")
        p["class"] = cls  # type: ignore[assignment]
        p["interval_ms"] = t.get_int("interval_ms", 10, _MS_MAX, default=100)
        raw_p = t.get_raw("params", {})
        if not isinstance(raw_p, dict):
            raise t.err("params", f"expected a table, got {_type_name(raw_p)}")
        for k, v in raw_p.items():
            if isinstance(v, float):
                raise ctx.error(f"{path}.params.{k}", "a TOML float is not exact: write the number as a string")
            if not isinstance(v, (str, int, bool)):
                raise ctx.error(f"{path}.params.{k}", f"expected a string, integer or boolean, got {_type_name(v)}")
            p[f"params.{k}"] = v  # type: ignore[assignment]
        return StrategyConfig(kind, p)
    else:
        return StrategyConfig("none", {})
    # a strategy allowed more inventory than risk allows would only collect rejects
    if p[inv_key] > inst_max_position:
        raise t.err(inv_key, f"{p[inv_key]} exceeds the instrument's max_position {inst_max_position}")
    return StrategyConfig(kind, p)


def _read_secret_file(ctx: _Ctx, key: str, path: Path) -> Secret:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ctx.error(key, f"{path} does not exist") from None
    except OSError as e:
        raise ctx.error(key, f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ctx.error(key, f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise ctx.error(key, f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: a credential must "
                             f"be readable by its owner only (chmod 600)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ctx.error(key, f"{path}: {e.strerror}") from None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ctx.error(key, f"{path} holds non-ASCII bytes; API credentials are ASCII") from None
    if not text:
        raise ctx.error(key, f"{path} is empty")
    if any(c.isspace() or not c.isprintable() for c in text):
        # the value itself is never quoted: only where the problem is
        raise ctx.error(key, f"{path} holds more than one token (whitespace or control characters "
                             "inside the credential)")
    return Secret(text)


def _credential(ctx: _Ctx, t: _Table, what: str) -> Secret:
    inline, fkey, ckey = what, f"{what}_file", f"{what}_credential"
    if t.has(fkey) and t.has(ckey):
        raise t.err(fkey, f"give either {fkey} or {ckey}, not both")
    if t.has(fkey):
        return _read_secret_file(ctx, t.key(fkey), t.get_path(fkey))
    if t.has(ckey):
        name = t.get_str(ckey, pattern=_CREDENTIAL_RE, what="credential name")
        if ctx.credentials_dir is None:
            raise t.err(ckey, "a systemd credential needs $CREDENTIALS_DIRECTORY (LoadCredential= in "
                              "the unit), which is not set; or use " + fkey)
        return _read_secret_file(ctx, t.key(ckey), ctx.credentials_dir / name)
    raise t.err(fkey, f"required: the {inline.replace('_', ' ')} comes from {fkey} or {ckey}")


def _url(t: _Table, k: str, schemes: tuple[str, ...], paper: bool) -> str:
    v = t.get_str(k)
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError as e:
        raise t.err(k, f"{v!r} is not a valid URL ({e})") from None
    if u.scheme not in schemes:
        raise t.err(k, f"{v!r}: scheme must be {' or '.join(schemes)}")
    if not u.hostname:
        raise t.err(k, f"{v!r} has no host")
    if u.username or u.password:
        raise t.err(k, "credentials do not belong in a URL")
    if u.query or u.fragment:
        raise t.err(k, f"{v!r}: a base URL takes no query or fragment")
    if port == 0:
        raise t.err(k, f"{v!r}: port 0")
    loopback = _is_loopback(u.hostname)
    if paper and not loopback:
        # paper money must never reach a real venue: the simulator serves loopback only
        raise t.err(k, f"{v!r}: paper = true trades against the simulated venue on loopback only "
                       "(127.0.0.0/8, ::1, localhost); set paper = false to trade on a real venue")
    if not paper and not loopback and u.scheme in ("http", "ws"):
        raise t.err(k, f"{v!r}: live trading to a remote host needs TLS ({schemes[1]}://)")
    return v


def _is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, by address (a name like "127.evil.example" is not one)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _venue(ctx: _Ctx, name: str, raw: object, paper: bool) -> VenueConfig:
    path = f"venues.{name}"
    if not _VENUE_NAME_RE.fullmatch(name):
        raise ctx.error(path, f"{name!r} is not a valid venue name (must match {_VENUE_NAME_RE.pattern})")
    if isinstance(raw, dict):
        for inline in ("api_key", "api_secret"):
            if inline in raw:
                raise ctx.error(f"{path}.{inline}", "inline credentials are refused: put it in a file or a "
                                f"systemd credential ({inline}_file or {inline}_credential)")
    t = _Table(ctx, raw, path, ("kind", "rest_url", "ws_url", "api_key_file", "api_key_credential",
                                "api_secret_file", "api_secret_credential", "weight_budget_per_min",
                                "orders_per_second", "recv_window_ms", "time_sync_interval_s",
                                "account_currency", "ignore_assets"))
    kind = t.get_str("kind", choices=VENUE_KINDS)
    rest = _url(t, "rest_url", ("http", "https"), paper)
    ws = _url(t, "ws_url", ("ws", "wss"), paper)
    key = _credential(ctx, t, "api_key")
    secret = _credential(ctx, t, "api_secret")
    return VenueConfig(
        name=name, kind=kind, rest_url=rest, ws_url=ws, api_key=key, api_secret=secret,
        weight_budget_per_min=t.get_int("weight_budget_per_min", 1, 6000, default=3000),
        orders_per_second=t.get_int("orders_per_second", 1, 1000, default=10),
        recv_window_ms=t.get_int("recv_window_ms", 1, 60000, default=5000),
        time_sync_interval_s=t.get_int("time_sync_interval_s", 1, 3600, default=60),
        account_currency=(t.get_str("account_currency", pattern=_ASSET_RE, what="asset name")
                          if t.has("account_currency") else None),
        ignore_assets=_assets(t, "ignore_assets"),
    )


def _assets(t: _Table, k: str) -> tuple[str, ...]:
    raw = t.get_raw(k, [])
    if not isinstance(raw, list):
        raise t.err(k, f"expected an array of asset names, got {_type_name(raw)}")
    out: list[str] = []
    for i, a in enumerate(raw):
        if not isinstance(a, str) or not _ASSET_RE.fullmatch(a):
            raise t.err(f"{k}[{i}]", f"{a!r} is not an asset name (must match {_ASSET_RE.pattern})")
        if a in out:
            raise t.err(f"{k}[{i}]", f"{a} is listed twice")
        out.append(a)
    return tuple(out)


def _gross_split(t: _Table, n_shards: int) -> tuple[int, ...] | None:
    """[risk] gross_exposure_split: one whole percentage per shard, adding up to 100."""
    raw = t.get_raw("gross_exposure_split", None)
    if raw is None:
        return None
    if not t.has("max_gross_exposure"):
        raise t.err("gross_exposure_split", "splits risk.max_gross_exposure, which is not set")
    if not isinstance(raw, list) or len(raw) != n_shards:
        raise t.err("gross_exposure_split", f"expected an array of {n_shards} percentages, one per entry of "
                                            f"daemon.shard_cores, got {raw!r}")
    out = tuple(_check_int(t, f"gross_exposure_split[{k}]", v, 0, 100) for k, v in enumerate(raw))
    if sum(out) != 100:
        raise t.err("gross_exposure_split", f"{list(out)} adds up to {sum(out)}, not 100")
    return out


def _risk(t: _Table, n_shards: int) -> RiskConfig:
    return RiskConfig(
        # quote units: the kernels hold 10**-8 of them in int64
        max_daily_loss=t.get_dec("max_daily_loss", lo=0, lo_open=True, hi=Decimal(10) ** 10, places=8),
        max_gross_exposure=t.get_dec("max_gross_exposure", lo=0, lo_open=True, hi=Decimal(10) ** 10, places=8,
                                     default=None),
        gross_exposure_split=_gross_split(t, n_shards),
        max_drawdown_pct=t.get_dec("max_drawdown_pct", lo=0, lo_open=True, hi=100, places=2,
                               default=Decimal(15)),
        max_position_pct=t.get_dec("max_position_pct", lo=0, lo_open=True, hi=100, places=2,
                               default=Decimal(2)),
        correlation_cap=t.get_dec("correlation_cap", lo=0, hi=1, places=4, default=Decimal("0.7")),
        kelly_cap=t.get_dec("kelly_cap", lo=0, hi=1, places=4, default=Decimal("0.25")),
        reject_storm=t.get_int("reject_storm", 1, 1_000_000, default=50),
        error_storm=t.get_int("error_storm", 1, 1_000_000, default=20),
        md_stale_s=t.get_dec("md_stale_s", lo=0, lo_open=True, hi=86400, places=9, default=Decimal(10)),
        day_start_utc=t.get_str("day_start_utc", default="00:00", pattern=_DAY_START_RE,
                                what="UTC time of day \"HH:MM\""),
        first_start_state=t.get_str("first_start_state", default="reducing", choices=("reducing", "active")),
        **_risk_guards(t),
    )


_STAT_KEYS = ("enabled", "sample_ms", "window", "min_samples", "z", "min_move_pct", "var_z",
              "var_limit", "cooldown_s")
_CALL_BREAKER_KEYS = ("max_consecutive", "error_rate_pct", "min_calls", "window_s", "slow_ms",
                      "max_consecutive_slow", "cooldown_s", "probes", "probes_to_close")
_RISK_GUARD_KEYS = ("correlation_window", "correlation_sample_ms", "correlation_min_samples",
                    "kelly_min_trades", "breaker_storm", "storm_window_s", "stat_breaker",
                    "order_entry_breaker")


def _risk_guards(t: _Table) -> dict[str, Any]:
    """[risk] keys of the correlation cap, Kelly sizing, storms and breakers."""
    window = t.get_int("correlation_window", 3, 10_000, default=300)
    min_samples = t.get_int("correlation_min_samples", 2, 10_000, default=30)
    if min_samples > window:
        raise t.err("correlation_min_samples", f"{min_samples} is above correlation_window {window}: "
                                               "no pair could ever be capped")
    sb = t.table("stat_breaker", _STAT_KEYS, required=False)
    d = StatBreakerConfig()
    sw = sb.get_int("window", 3, 10_000, default=d.window)
    smin = sb.get_int("min_samples", 2, 10_000, default=d.min_samples)
    if smin > sw:
        raise sb.err("min_samples", f"{smin} is above window {sw}: the breaker could never judge a return")
    stat = StatBreakerConfig(
        enabled=sb.get_bool("enabled", default=d.enabled),
        sample_ms=sb.get_int("sample_ms", 10, 3_600_000, default=d.sample_ms), window=sw, min_samples=smin,
        z=sb.get_dec("z", lo=0, lo_open=True, hi=1000, places=3, default=d.z),
        min_move_pct=sb.get_dec("min_move_pct", lo=0, hi=100, places=2, default=d.min_move_pct),
        var_z=sb.get_dec("var_z", lo=0, lo_open=True, hi=100, places=3, default=d.var_z),
        var_limit=sb.get_dec("var_limit", lo=0, lo_open=True, hi=Decimal(10) ** 10, places=8, default=None),
        cooldown_s=sb.get_dec("cooldown_s", lo=0, lo_open=True, hi=86400, places=3, default=d.cooldown_s))
    cb = t.table("order_entry_breaker", _CALL_BREAKER_KEYS, required=False)
    c = CallBreakerConfig()
    probes = cb.get_int("probes", 1, 100, default=c.probes)
    call = CallBreakerConfig(
        max_consecutive=cb.get_int("max_consecutive", 1, 1000, default=c.max_consecutive),
        error_rate_pct=cb.get_dec("error_rate_pct", lo=0, lo_open=True, hi=100, places=2, default=c.error_rate_pct),
        min_calls=cb.get_int("min_calls", 1, 1_000_000, default=c.min_calls),
        window_s=cb.get_dec("window_s", lo=0, lo_open=True, hi=3600, places=3, default=c.window_s),
        slow_ms=cb.get_int("slow_ms", 1, 600_000, default=c.slow_ms),
        max_consecutive_slow=cb.get_int("max_consecutive_slow", 1, 1000, default=c.max_consecutive_slow),
        cooldown_s=cb.get_dec("cooldown_s", lo=0, lo_open=True, hi=3600, places=3, default=c.cooldown_s),
        probes=probes, probes_to_close=cb.get_int("probes_to_close", 1, probes, default=min(c.probes_to_close, probes)))
    return dict(
        correlation_window=window, correlation_min_samples=min_samples,
        correlation_sample_ms=t.get_int("correlation_sample_ms", 10, 3_600_000, default=1000),
        kelly_min_trades=t.get_int("kelly_min_trades", 1, 1_000_000, default=20),
        breaker_storm=t.get_int("breaker_storm", 1, 1_000_000, default=10),
        storm_window_s=t.get_dec("storm_window_s", lo=0, lo_open=True, hi=86400, places=3, default=Decimal(10)),
        stat_breaker=stat, order_entry_breaker=call)


def _cores(t: _Table, allowed: set[int]) -> tuple[tuple[int, ...], int | None]:
    raw = t.get_raw("shard_cores")
    if not isinstance(raw, list) or not raw:
        raise t.err("shard_cores", f"expected a non-empty array of core numbers, got "
                                   f"{_type_name(raw) if raw != [] else 'an empty array'}")
    cores: list[int] = []
    for i, c in enumerate(raw):
        k = f"shard_cores[{i}]"
        if isinstance(c, bool) or not isinstance(c, int):
            raise t.err(k, f"expected an integer, got {_type_name(c)} {c!r}")
        if c in cores:
            raise t.err(k, f"core {c} is listed twice (one shard per core)")
        if c not in allowed:
            raise t.err(k, f"core {c} is not in this process's CPU affinity {sorted(allowed)}")
        cores.append(c)
    io = t.get_raw("io_core", None)
    if io is not None:
        if isinstance(io, bool) or not isinstance(io, int):
            raise t.err("io_core", f"expected an integer, got {_type_name(io)} {io!r}")
        if io not in allowed:
            raise t.err("io_core", f"core {io} is not in this process's CPU affinity {sorted(allowed)}")
        if io in cores:
            raise t.err("io_core", f"core {io} is also a shard core: a shard spins on its core and "
                                   "would starve the io thread")
    return tuple(cores), io


def _protection(t: _Table) -> ProtectionConfig:
    d = ProtectionConfig()
    return ProtectionConfig(
        enabled=t.get_bool("enabled", default=d.enabled),
        default_stop_bps=t.get_int("default_stop_bps", 1, 5000, default=d.default_stop_bps),
        limit_offset_bps=t.get_int("limit_offset_bps", 0, 5000, default=d.limit_offset_bps),
        retry_ms=t.get_int("retry_ms", 10, 600_000, default=d.retry_ms))


def _instruments(ctx: _Ctx, raw: object, venues: dict[str, VenueConfig],
                 n_shards: int) -> tuple[InstrumentConfig, ...]:
    if raw is _MISSING:
        raise ctx.error("instruments", "required: at least one [[instruments]] table")
    if not isinstance(raw, list) or not raw:
        raise ctx.error("instruments", "expected a non-empty array of tables ([[instruments]])")
    out: list[InstrumentConfig] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(raw):
        path = f"instruments[{i}]"
        t = _Table(ctx, item, path, ("venue", "symbol", "shard", "max_position", "max_notional",
                                     "max_open_orders", "band_bps", "neutral_base", "strategy",
                                     "protection", "stp"))
        venue = t.get_str("venue")
        if venue not in venues:
            raise t.err("venue", f"{venue!r} is not a configured venue "
                                 f"(venues: {', '.join(sorted(venues)) or 'none'})")
        symbol = t.get_str("symbol", pattern=_SYMBOL_RE, what="symbol")
        if (venue, symbol) in seen:
            raise t.err("symbol", f"{venue}/{symbol} is already instruments[{seen[(venue, symbol)]}]")
        seen[(venue, symbol)] = i
        shard = t.get_raw("shard")
        if isinstance(shard, bool) or not isinstance(shard, int):
            raise t.err("shard", f"expected an integer, got {_type_name(shard)} {shard!r}")
        if not 0 <= shard < n_shards:
            raise t.err("shard", f"{shard} is not a shard (daemon.shard_cores lists {n_shards} "
                                 f"core{'s' if n_shards != 1 else ''})")
        max_pos = t.get_dec("max_position", lo=0, lo_open=True, hi=_QTY_MAX)
        out.append(InstrumentConfig(
            venue=venue, symbol=symbol, shard=shard,
            strategy=_strategy(ctx, item.get("strategy", _MISSING), t.key("strategy"), max_pos),
            max_position=max_pos,
            # risk holds it in 10^-8 quote units: an int64 holds up to 9.2e10
            max_notional=t.get_dec("max_notional", lo=0, lo_open=True, hi=Decimal(10) ** 10, places=8),
            max_open_orders=t.get_int("max_open_orders", 1, 1000, default=10),
            band_bps=t.get_int("band_bps", 1, 10000, default=500),
            neutral_base=t.get_dec("neutral_base", lo=0, hi=_QTY_MAX, default=Decimal(0)),
            protection=_protection(t.table("protection", ("enabled", "default_stop_bps",
                                                          "limit_offset_bps", "retry_ms"), required=False)),
            stp=t.get_str("stp", default="cancel_new", choices=tuple(STP_POLICIES)),
        ))
    return tuple(out)


# --- entry points ----------------------------------------------------------------------------------
def load(path: Path | str, *, credentials_dir: Path | None = None) -> Config:
    """Read and validate the configuration file; raise :class:`ConfigError` on any problem.

    ``credentials_dir`` defaults to ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``).
    """
    label = str(path)
    p = Path(path)
    try:
        data_bytes = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{label}: cannot read: {e.strerror}") from None
    try:
        doc = tomllib.loads(data_bytes.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{label}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{label}: TOML syntax error: {e}") from None
    if credentials_dir is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        credentials_dir = Path(os.environ["CREDENTIALS_DIRECTORY"])
    abspath = p.resolve()
    ctx = _Ctx(label, abspath.parent, credentials_dir)

    top = _Table(ctx, doc, "", ("instance", "paper", "daemon", "control", "persist", "risk",
                                "venues", "instruments"))
    instance = top.get_str("instance", pattern=_INSTANCE_RE, what="instance name")
    paper = top.get_bool("paper")

    d = top.table("daemon", ("shard_cores", "io_core", "on_stop", "watchdog_interval_s",
                             "runtime_dir", "state_dir"))
    shard_cores, io_core = _cores(d, os.sched_getaffinity(0))
    on_stop = d.get_str("on_stop", default="cancel", choices=("cancel", "leave"))
    watchdog = d.get_dec("watchdog_interval_s", lo=0, lo_open=True, hi=3600, places=6, default=None)
    runtime_dir = d.get_path("runtime_dir", default="/run/bot4d")
    state_dir = d.get_path("state_dir", default="/var/lib/bot4d")

    c = top.table("control", ("socket", "monitor_group", "operator_group", "admin_group"),
                  required=False)
    sock = c.get_path("socket", default=runtime_dir / "control.sock")
    if len(os.fsencode(str(sock))) > _SUN_PATH_MAX:
        raise c.err("socket", f"{sock} is longer than the {_SUN_PATH_MAX} bytes a Unix socket "
                              "path may have")
    groups = {k: c.get_str(k, default=f"bot4d-{k.split('_')[0]}", pattern=_GROUP_RE, what="group name")
              for k in ("monitor_group", "operator_group", "admin_group")}
    control = ControlConfig(socket=sock, **groups)

    pt = top.table("persist", ("enabled", "journal_capacity", "sidecar_timeout_s", "on_no_sidecar",
                               "shutdown_wait_s"), required=False)
    cap = pt.get_int("journal_capacity", 1 << 12, 1 << 24, default=1 << 20)
    if cap & (cap - 1):
        raise pt.err("journal_capacity", f"{cap} is not a power of two")
    persist = PersistConfig(
        enabled=pt.get_bool("enabled", default=True), journal_capacity=cap,
        sidecar_timeout_s=pt.get_dec("sidecar_timeout_s", lo=0, lo_open=True, hi=86400, places=3,
                                     default=Decimal(30)),
        on_no_sidecar=pt.get_str("on_no_sidecar", default="trade", choices=NO_SIDECAR_ACTIONS),
        shutdown_wait_s=pt.get_dec("shutdown_wait_s", lo=0, hi=3600, places=3, default=Decimal(10)))

    risk = _risk(top.table("risk", ("max_daily_loss", "max_drawdown_pct", "max_position_pct",
                                    "correlation_cap", "kelly_cap", "reject_storm", "error_storm",
                                    "md_stale_s", "day_start_utc", "first_start_state", "max_gross_exposure",
                                    "gross_exposure_split", *_RISK_GUARD_KEYS)), len(shard_cores))

    vraw = top.get_raw("venues")
    if not isinstance(vraw, dict) or not vraw:
        raise ctx.error("venues", "expected at least one [venues.<name>] table")
    if len(vraw) > 1:
        # the daemon sends every order to one gateway and has one order-rate bucket: a second
        # venue would be traded through the first one's account
        raise ctx.error("venues", f"one [venues.<name>] table per daemon for now, got {len(vraw)} "
                                  f"({', '.join(sorted(vraw))}): run one daemon per venue account")
    venues = {name: _venue(ctx, name, v, paper) for name, v in vraw.items()}

    instruments = _instruments(ctx, top.get_raw("instruments", _MISSING), venues, len(shard_cores))

    return Config(
        path=abspath, source_hash=hashlib.sha256(data_bytes).hexdigest()[:16], instance=instance,
        runtime_dir=runtime_dir, state_dir=state_dir, shard_cores=shard_cores, io_core=io_core,
        on_stop=on_stop, watchdog_interval_s=watchdog, paper=paper, control=control,
        persist=persist, risk=risk, venues=venues, instruments=instruments,
    )


_RELOADABLE = re.compile(
    # the trading day's start is read at start (the saved day-start equity belongs to it);
    # the return windows are preallocated at start
    r"risk\.(?!day_start_utc$|first_start_state$|correlation_window$|stat_breaker\.window$)[a-z_]+(\.[a-z_]+)?"
    r"|instruments\[\d+\]\.strategy\.params\.[a-z_]+"
    r"|instruments\[\d+\]\.(max_position|max_notional|max_open_orders|band_bps)"
    r"|venues\.[^.]+\.orders_per_second"
)


def _flatten(c: Config) -> dict[str, object]:
    # keys are the TOML key paths, so the lists read like the file the operator edited
    f: dict[str, object] = {"instance": c.instance, "paper": c.paper}
    for k in ("shard_cores", "io_core", "on_stop", "watchdog_interval_s", "runtime_dir", "state_dir"):
        f[f"daemon.{k}"] = getattr(c, k)
    for sect, obj in (("control", c.control), ("persist", c.persist), ("risk", c.risk)):
        for k, v in vars(obj).items():
            if sect == "risk" and isinstance(v, (StatBreakerConfig, CallBreakerConfig)):
                f.update({f"risk.{k}.{kk}": vv for kk, vv in vars(v).items()})  # [risk.<table>]
            else:
                f[f"{sect}.{k}"] = v
    for name, v in c.venues.items():
        for k, val in vars(v).items():
            if k != "name":
                f[f"venues.{name}.{k}"] = val
    for i, inst in enumerate(c.instruments):
        for k, val in vars(inst).items():
            if k == "strategy":
                f[f"instruments[{i}].strategy.kind"] = val.kind
                for pk, pv in val.params.items():
                    f[f"instruments[{i}].strategy.params.{pk}"] = pv
            else:
                f[f"instruments[{i}].{k}"] = val
    return f


def reloadable_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Key paths that differ: (those SIGHUP can apply, those that need a restart)."""
    a, b = _flatten(old), _flatten(new)
    restart: set[str] = set()
    reload: set[str] = set()
    if [(i.venue, i.symbol) for i in old.instruments] != [(i.venue, i.symbol) for i in new.instruments]:
        # instruments added, removed or reordered: index paths no longer name the same instrument
        restart.add("instruments")
    if set(old.venues) != set(new.venues):
        restart.add("venues")
    kinds_changed = {i for i, (x, y) in enumerate(zip(old.instruments, new.instruments))
                     if x.strategy.kind != y.strategy.kind}
    # a Python strategy is built once at start from its class and parameters: SIGHUP cannot apply them
    python = {i for i, (x, y) in enumerate(zip(old.instruments, new.instruments))
              if "python" in (x.strategy.kind, y.strategy.kind)}
    for k in a.keys() | b.keys():
        if a.get(k, _MISSING) == b.get(k, _MISSING):
            continue
        if k.startswith("instruments") and "instruments" in restart:
            continue
        if k.startswith("venues.") and "venues" in restart:
            continue
        m = re.match(r"instruments\[(\d+)\]\.strategy\.", k)
        if m and int(m.group(1)) in python and int(m.group(1)) not in kinds_changed:
            restart.add(k)
            continue
        if m and int(m.group(1)) in kinds_changed:
            restart.add(f"instruments[{m.group(1)}].strategy.kind")
            continue
        (reload if _RELOADABLE.fullmatch(k) else restart).add(k)
    return sorted(reload), sorted(restart)
