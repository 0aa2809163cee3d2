"""bot4d.config: every refusal names the file and the key; secrets never leak; the shipped configs load."""
from __future__ import annotations

import os
import pickle
import re
from decimal import Decimal
from pathlib import Path

import pytest

from bot4d import config, paperkeys
from bot4d.config import ConfigError, Secret, load, reloadable_changes

REPO = Path(__file__).resolve().parents[1]
KEY = "k3yV4lu3AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
SECRET = "s3cr3tV4lu3BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
CORE = max(os.sched_getaffinity(0))

BASE = f"""\
instance = "t1"
paper = true
[daemon]
shard_cores = [{CORE}]
runtime_dir = "run"
state_dir = "state"
[risk]
max_daily_loss = "5000"
[venues.binance]
kind = "binance"
rest_url = "http://127.0.0.1:18080"
ws_url = "ws://127.0.0.1:18081"
api_key_file = "keys/k"
api_secret_file = "keys/s"
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
shard = 0
max_position = "0.05"
max_notional = "5000"
[instruments.strategy]
kind = "market_maker"
quote_qty = "0.001"
max_inventory = "0.01"
half_spread_ticks = 20
skew_ticks_per_lot = 5
stop_ticks = 2000
[[instruments]]
venue = "binance"
symbol = "ETHUSDT"
shard = 0
max_position = "1"
max_notional = "5000"
"""


def _write_secret(path: Path, value: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    _write_secret(tmp_path / "keys" / "k", KEY)
    _write_secret(tmp_path / "keys" / "s", SECRET)
    return tmp_path


def write(d: Path, text: str, name: str = "bot.toml") -> Path:
    p = d / name
    p.write_text(text)
    return p


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old  # the test edits what it means to edit
    return text.replace(old, new, 1)


def refused(d: Path, text: str, *, credentials_dir: Path | None = None) -> str:
    p = write(d, text)
    with pytest.raises(ConfigError) as e:
        load(p, credentials_dir=credentials_dir)
    msg = str(e.value)
    assert msg.startswith(f"{p}: "), msg
    assert KEY not in msg and SECRET not in msg
    return msg


# --- what loads ------------------------------------------------------------------------------------
def test_base_config_loads_with_defaults(cfgdir: Path) -> None:
    p = write(cfgdir, BASE)
    c = load(p)
    assert c.path == p.resolve() and re.fullmatch(r"[0-9a-f]{16}", c.source_hash)
    assert c.instance == "t1" and c.paper is True
    assert c.runtime_dir == cfgdir / "run" and c.state_dir == cfgdir / "state"
    assert c.control.socket == cfgdir / "run" / "control.sock"
    assert c.control.operator_group == "bot4d-operator"
    assert c.shard_cores == (CORE,) and c.io_core is None and c.on_stop == "cancel"
    assert c.watchdog_interval_s is None
    assert c.persist == config.PersistConfig(enabled=True, journal_capacity=1 << 20)
    assert c.risk.max_daily_loss == Decimal("5000") and c.risk.max_drawdown_pct == 15
    assert (c.risk.max_dd_bps, c.risk.max_pos_bps, c.risk.corr_cap_bps, c.risk.kelly_cap_bps) == \
        (1500, 200, 7000, 2500)
    assert c.risk.md_stale_ns == 10_000_000_000
    v = c.venues["binance"]
    assert v.api_key.reveal() == KEY and v.api_secret.reveal() == SECRET
    assert (v.weight_budget_per_min, v.orders_per_second, v.recv_window_ms) == (3000, 10, 5000)
    btc, eth = c.instruments
    assert btc.strategy.kind == "market_maker"
    assert btc.strategy.params == {
        "quote_qty": Decimal("0.001"), "max_inventory": Decimal("0.01"), "half_spread_ticks": 20,
        "skew_ticks_per_lot": 5, "stop_ticks": 2000, "requote_ticks": 1, "min_requote_ms": 0}
    assert (btc.max_open_orders, btc.band_bps, btc.neutral_base) == (10, 500, Decimal(0))
    assert eth.strategy == config.StrategyConfig("none", {})
    assert c.source_hash != load(write(cfgdir, BASE + "# changed\n")).source_hash


def test_imbalance_taker_params(cfgdir: Path) -> None:
    text = BASE + """[instruments.strategy]
kind = "imbalance_taker"
qty = "0.01"
max_position = "0.05"
levels = 5
threshold = "0.6"
stop_ticks = 3000
"""
    p = load(write(cfgdir, text)).instruments[1].strategy.params
    assert p == {"qty": Decimal("0.01"), "max_position": Decimal("0.05"), "levels": 5,
                 "stop_ticks": 3000, "slip_ticks": 0, "threshold": Decimal("0.6"),
                 "cooldown_ms": 0, "hold_ms": 1000}
    assert "threshold" in refused(cfgdir, edit(text, '"0.6"', '"0.0000000001"'))
    assert "instruments[1].strategy.threshold: 1.5 must be <= 1" in \
        refused(cfgdir, edit(text, '"0.6"', '"1.5"'))
    assert "instruments[1].strategy.max_position: 0.005 is below qty 0.01" in \
        refused(cfgdir, edit(text, 'max_position = "0.05"\nlevels', 'max_position = "0.005"\nlevels'))


def test_shipped_paper_config_loads(tmp_path: Path) -> None:
    key, secret = paperkeys.ensure(REPO / ".run")
    c = load(REPO / "config" / "paper.toml")
    assert c.paper and c.shard_cores == (1,) and c.io_core == 0 and c.persist.enabled
    assert c.runtime_dir == REPO / ".run" and c.state_dir == REPO / ".run" / "state"
    v = c.venues["binance"]
    assert (v.rest_url, v.ws_url) == ("http://127.0.0.1:18080", "ws://127.0.0.1:18081")
    assert v.api_key.reveal() == key.read_text().strip()
    assert v.api_secret.reveal() == secret.read_text().strip()
    assert [(i.symbol, i.shard, i.strategy.kind) for i in c.instruments] == \
        [("BTCUSDT", 0, "market_maker"), ("ETHUSDT", 0, "market_maker")]


def test_shipped_example_config_loads_with_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    _write_secret(creds / "binance-api-key", KEY, 0o400)
    _write_secret(creds / "binance-api-secret", SECRET, 0o400)
    c = load(REPO / "config" / "example.toml", credentials_dir=creds)
    assert not c.paper and c.venues["binance"].rest_url.startswith("https://")
    assert c.venues["binance"].api_secret.reveal() == SECRET
    assert {i.strategy.kind for i in c.instruments} == {"market_maker", "imbalance_taker"}


def test_credentials_directory_comes_from_the_environment(cfgdir: Path, monkeypatch) -> None:
    _write_secret(cfgdir / "creds" / "bk", KEY, 0o400)
    _write_secret(cfgdir / "creds" / "bs", SECRET, 0o400)
    text = edit(BASE, 'api_key_file = "keys/k"\napi_secret_file = "keys/s"',
                'api_key_credential = "bk"\napi_secret_credential = "bs"')
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cfgdir / "creds"))
    assert load(write(cfgdir, text)).venues["binance"].api_key.reveal() == KEY
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    msg = refused(cfgdir, text)
    assert "venues.binance.api_key_credential:" in msg and "$CREDENTIALS_DIRECTORY" in msg


# --- secrets ---------------------------------------------------------------------------------------
def test_secret_never_prints() -> None:
    s = Secret(SECRET)
    for shown in (str(s), repr(s), f"{s}", f"{s!r}", f"{s:>80}", "%s" % s, repr([s]), repr({"k": s})):
        assert SECRET not in shown and "<secret>" in shown
    assert s.reveal() == SECRET and s == Secret(SECRET) and s != Secret(KEY)
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_loaded_config_repr_holds_no_secret(cfgdir: Path) -> None:
    c = load(write(cfgdir, BASE))
    for shown in (repr(c), str(c), repr(c.venues), f"{c.venues['binance']}"):
        assert KEY not in shown and SECRET not in shown
    assert "<secret>" in repr(c.venues["binance"])


@pytest.mark.parametrize("inline", ["api_key", "api_secret"])
def test_inline_secret_refused(cfgdir: Path, inline: str) -> None:
    msg = refused(cfgdir, edit(BASE, 'kind = "binance"\n', f'kind = "binance"\n{inline} = "{SECRET}"\n'))
    assert f"venues.binance.{inline}:" in msg and "put it in a file or a systemd credential" in msg


def test_secret_file_missing_empty_or_shared(cfgdir: Path) -> None:
    (cfgdir / "keys" / "s").unlink()
    assert "venues.binance.api_secret_file:" in (m := refused(cfgdir, BASE)) and "does not exist" in m
    _write_secret(cfgdir / "keys" / "s", "")
    assert "venues.binance.api_secret_file:" in (m := refused(cfgdir, BASE)) and "is empty" in m
    for mode in (0o640, 0o604, 0o620):
        _write_secret(cfgdir / "keys" / "s", SECRET, mode)
        m = refused(cfgdir, BASE)
        assert "venues.binance.api_secret_file:" in m and f"{mode:04o}" in m and "chmod 600" in m
    _write_secret(cfgdir / "keys" / "s", SECRET + " " + SECRET)
    assert "more than one token" in refused(cfgdir, BASE)
    _write_secret(cfgdir / "keys" / "s", SECRET)
    msg = refused(cfgdir, edit(BASE, 'api_secret_file = "keys/s"',
                               'api_secret_file = "keys/s"\napi_secret_credential = "x"'))
    assert "either api_secret_file or api_secret_credential" in msg
    msg = refused(cfgdir, edit(BASE, 'api_secret_file = "keys/s"\n', ""))
    assert "venues.binance.api_secret_file: required" in msg


def test_credential_file_checked_like_a_key_file(cfgdir: Path) -> None:
    creds = cfgdir / "creds"
    _write_secret(creds / "bk", KEY, 0o444)
    text = edit(BASE, 'api_key_file = "keys/k"', 'api_key_credential = "bk"')
    msg = refused(cfgdir, text, credentials_dir=creds)
    assert "venues.binance.api_key_credential:" in msg and "0444" in msg
    msg = refused(cfgdir, edit(text, '"bk"', '"../bk"'), credentials_dir=creds)
    assert "not a valid credential name" in msg


# --- syntax, unknown keys, types -------------------------------------------------------------------
def test_toml_syntax_error_names_line_and_column(cfgdir: Path) -> None:
    msg = refused(cfgdir, edit(BASE, 'paper = true', 'paper = tru'))
    assert "TOML syntax error" in msg and "line 2" in msg and "column" in msg


def test_unknown_key_suggests_the_closest(cfgdir: Path) -> None:
    msg = refused(cfgdir, edit(BASE, 'max_daily_loss', 'max_daily_los'))
    assert "risk.max_daily_los: unknown key (did you mean 'max_daily_loss'?)" in msg
    msg = refused(cfgdir, edit(BASE, 'half_spread_ticks', 'half_spred_ticks'))
    assert "instruments[0].strategy.half_spred_ticks: unknown key (did you mean 'half_spread_ticks'?)" in msg
    msg = refused(cfgdir, edit(BASE, 'shard_cores', 'shard_core'))
    assert "daemon.shard_core: unknown key (did you mean 'shard_cores'?)" in msg
    assert "zzz: unknown key (known keys: instance, paper" in refused(cfgdir, "zzz = 1\n" + BASE)
    # a market-maker key under the taker is unknown there
    msg = refused(cfgdir, edit(BASE, 'kind = "market_maker"', 'kind = "imbalance_taker"'))
    assert "instruments[0].strategy.quote_qty: unknown key" in msg


@pytest.mark.parametrize("key", ["instance", "paper", "daemon", "risk", "venues", "instruments"])
def test_missing_required_top_level(cfgdir: Path, key: str) -> None:
    lines, out, skip = BASE.splitlines(keepends=True), [], False
    for ln in lines:  # drop the key, or the whole table(s) it names
        head = ln.strip().strip("[]")
        if ln.startswith("["):
            skip = head.split(".")[0] == key
        if not skip and not ln.startswith(f"{key} ="):
            out.append(ln)
    msg = refused(cfgdir, "".join(out))
    assert re.search(rf": {key}: (required|expected)", msg), msg


def test_missing_required_nested(cfgdir: Path) -> None:
    assert "instruments[1].max_notional: required key is missing" in \
        refused(cfgdir, BASE[:BASE.rindex('max_notional')])
    assert "instruments[0].strategy.stop_ticks: required key is missing" in \
        refused(cfgdir, edit(BASE, "stop_ticks = 2000\n", ""))
    assert "instruments[0].strategy.kind: required key is missing" in \
        refused(cfgdir, edit(BASE, 'kind = "market_maker"\n', ""))


def test_wrong_types(cfgdir: Path) -> None:
    assert "instruments[0].max_open_orders: expected an integer, got boolean" in \
        refused(cfgdir, edit(BASE, 'max_notional = "5000"\n', 'max_notional = "5000"\nmax_open_orders = true\n'))
    assert "instruments[0].strategy.stop_ticks: expected an integer, got float" in \
        refused(cfgdir, edit(BASE, "stop_ticks = 2000", "stop_ticks = 2000.0"))
    assert "paper: expected true or false, got string" in refused(cfgdir, edit(BASE, "paper = true", 'paper = "yes"'))
    assert "daemon.shard_cores[0]: expected an integer, got boolean" in \
        refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", "shard_cores = [true]"))
    assert "instruments[0].venue: expected a string, got integer" in \
        refused(cfgdir, edit(BASE, 'venue = "binance"', "venue = 1"))
    assert "persist.enabled: expected true or false, got integer" in \
        refused(cfgdir, BASE + "[persist]\nenabled = 1\n")
    assert "risk.max_daily_loss: expected a decimal string" in \
        refused(cfgdir, edit(BASE, 'max_daily_loss = "5000"', "max_daily_loss = true"))
    assert "risk.max_daily_loss: 'lots' is not a decimal number" in \
        refused(cfgdir, edit(BASE, '"5000"', '"lots"'))
    assert "risk.max_daily_loss: 'NaN' is not a finite number" in refused(cfgdir, edit(BASE, '"5000"', '"NaN"'))


def test_float_money_refused_with_a_string_hint(cfgdir: Path) -> None:
    msg = refused(cfgdir, edit(BASE, 'max_position = "0.05"', "max_position = 0.05"))
    assert 'instruments[0].max_position: 0.05 is a TOML float' in msg and 'write it as a string, e.g. "0.05"' in msg
    assert "instruments[0].strategy.quote_qty: 0.001 is a TOML float" in \
        refused(cfgdir, edit(BASE, 'quote_qty = "0.001"', "quote_qty = 0.001"))
    assert "risk.max_daily_loss: 5000.0 is a TOML float" in \
        refused(cfgdir, edit(BASE, 'max_daily_loss = "5000"', "max_daily_loss = 5000.0"))
    # an integer is exact, so it is accepted for money
    c = load(write(cfgdir, edit(BASE, 'max_daily_loss = "5000"', "max_daily_loss = 5000")))
    assert c.risk.max_daily_loss == Decimal(5000)


# --- ranges ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("old,new,expect", [
    ('max_position = "0.05"', 'max_position = "0"', "instruments[0].max_position: 0 must be > 0"),
    ('max_notional = "5000"', 'max_notional = "-1"', "instruments[0].max_notional: -1 must be > 0"),
    ('max_notional = "5000"', 'max_notional = "5000"\nmax_open_orders = 1001',
     "instruments[0].max_open_orders: 1001 is outside 1..1000"),
    ('max_notional = "5000"', 'max_notional = "5000"\nband_bps = 0', "instruments[0].band_bps: 0 is outside 1..10000"),
    ('max_notional = "5000"', 'max_notional = "5000"\nneutral_base = "-1"', "instruments[0].neutral_base: -1 must be >= 0"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "0"', "risk.max_daily_loss: 0 must be > 0"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nmax_drawdown_pct = "100.5"', "risk.max_drawdown_pct: 100.5 must be <= 100"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nmax_drawdown_pct = "0"', "risk.max_drawdown_pct: 0 must be > 0"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nmax_position_pct = "2.125"',
     "risk.max_position_pct: 2.125 has more than 2 decimal places"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\ncorrelation_cap = "1.1"', "risk.correlation_cap: 1.1 must be <= 1"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nkelly_cap = "-0.1"', "risk.kelly_cap: -0.1 must be >= 0"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nreject_storm = 0', "risk.reject_storm: 0 is outside 1..1000000"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nerror_storm = -1', "risk.error_storm: -1 is outside 1..1000000"),
    ('max_daily_loss = "5000"', 'max_daily_loss = "1"\nmd_stale_s = "0"', "risk.md_stale_s: 0 must be > 0"),
    ('kind = "binance"', 'kind = "binance"\nweight_budget_per_min = 6001',
     "venues.binance.weight_budget_per_min: 6001 is outside 1..6000"),
    ('kind = "binance"', 'kind = "binance"\norders_per_second = 0', "venues.binance.orders_per_second: 0 is outside 1..1000"),
    ('kind = "binance"', 'kind = "binance"\nrecv_window_ms = 60001', "venues.binance.recv_window_ms: 60001 is outside 1..60000"),
    ('on_stop', 'on_stop', None),
])
def test_out_of_range(cfgdir: Path, old: str, new: str, expect: str | None) -> None:
    if expect is None:  # on_stop is not in BASE: its own case
        text = edit(BASE, 'state_dir = "state"', 'state_dir = "state"\non_stop = "flatten"')
        assert "daemon.on_stop: 'flatten' is not one of 'cancel', 'leave'" in refused(cfgdir, text)
        return
    assert expect in refused(cfgdir, edit(BASE, old, new))


def test_persist_and_watchdog(cfgdir: Path) -> None:
    c = load(write(cfgdir, BASE + "[persist]\nenabled = false\njournal_capacity = 4096\n"))
    assert c.persist == config.PersistConfig(False, 4096)
    assert "persist.journal_capacity: 5000 is not a power of two" in \
        refused(cfgdir, BASE + "[persist]\njournal_capacity = 5000\n")
    assert "persist.journal_capacity: 2048 is outside 4096..16777216" in \
        refused(cfgdir, BASE + "[persist]\njournal_capacity = 2048\n")
    text = edit(BASE, 'state_dir = "state"', 'state_dir = "state"\nwatchdog_interval_s = "2.5"')
    assert load(write(cfgdir, text)).watchdog_interval_s == Decimal("2.5")
    assert "daemon.watchdog_interval_s: 0 must be > 0" in refused(cfgdir, edit(text, '"2.5"', '"0"'))


def test_instance_name(cfgdir: Path) -> None:
    for bad in ("a b", "", "x" * 33, "../x", "é"):
        msg = refused(cfgdir, edit(BASE, 'instance = "t1"', f'instance = "{bad}"'))
        assert "instance:" in msg and "not a valid instance name" in msg


# --- cross-references ------------------------------------------------------------------------------
def test_duplicate_instrument(cfgdir: Path) -> None:
    msg = refused(cfgdir, edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "BTCUSDT"'))
    assert "instruments[1].symbol: binance/BTCUSDT is already instruments[0]" in msg


def test_instrument_on_unknown_venue(cfgdir: Path) -> None:
    msg = refused(cfgdir, BASE.replace('venue = "binance"\nsymbol = "ETHUSDT"', 'venue = "kraken"\nsymbol = "ETHUSDT"'))
    assert "instruments[1].venue: 'kraken' is not a configured venue (venues: binance)" in msg


def test_shard_without_core(cfgdir: Path) -> None:
    msg = refused(cfgdir, BASE.replace('symbol = "ETHUSDT"\nshard = 0', 'symbol = "ETHUSDT"\nshard = 3'))
    name = cfgdir / "bot.toml"
    assert msg == f"{name}: instruments[1].shard: 3 is not a shard (daemon.shard_cores lists 1 core)"
    assert "instruments[0].shard: -1 is not a shard" in refused(cfgdir, edit(BASE, "shard = 0", "shard = -1"))


def test_cores_the_process_may_not_use_or_twice(cfgdir: Path) -> None:
    bad = max(os.sched_getaffinity(0)) + 1000
    msg = refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", f"shard_cores = [{CORE}, {bad}]"))
    assert f"daemon.shard_cores[1]: core {bad} is not in this process's CPU affinity" in msg
    msg = refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", f"shard_cores = [{CORE}, {CORE}]"))
    assert f"daemon.shard_cores[1]: core {CORE} is listed twice" in msg
    assert "daemon.shard_cores: expected a non-empty array" in \
        refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", "shard_cores = []"))
    msg = refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", f"shard_cores = [{CORE}]\nio_core = {bad}"))
    assert f"daemon.io_core: core {bad} is not in this process's CPU affinity" in msg
    msg = refused(cfgdir, edit(BASE, f"shard_cores = [{CORE}]", f"shard_cores = [{CORE}]\nio_core = {CORE}"))
    assert f"daemon.io_core: core {CORE} is also a shard core" in msg


def test_strategy_kind_and_params(cfgdir: Path) -> None:
    msg = refused(cfgdir, edit(BASE, 'kind = "market_maker"', 'kind = "grid"'))
    assert "instruments[0].strategy.kind: 'grid' is not one of 'market_maker', 'imbalance_taker', 'python', 'none'" in msg
    msg = refused(cfgdir, edit(BASE, 'max_inventory = "0.01"', 'max_inventory = "0.0005"'))
    assert "instruments[0].strategy.max_inventory: 0.0005 is below quote_qty 0.001" in msg
    msg = refused(cfgdir, edit(BASE, 'max_inventory = "0.01"', 'max_inventory = "0.1"'))
    assert "instruments[0].strategy.max_inventory: 0.1 exceeds the instrument's max_position 0.05" in msg
    assert "instruments[0].strategy.half_spread_ticks: 0 is outside 1..1000000" in \
        refused(cfgdir, edit(BASE, "half_spread_ticks = 20", "half_spread_ticks = 0"))
    assert "instruments[0].strategy.min_requote_ms: -5 is outside 0..86400000" in \
        refused(cfgdir, edit(BASE, "stop_ticks = 2000", "stop_ticks = 2000\nmin_requote_ms = -5"))
    assert "instruments[1].strategy.qty: unknown key" in \
        refused(cfgdir, BASE + '[instruments.strategy]\nkind = "none"\nqty = "1"\n')


def test_venue_kind_and_urls(cfgdir: Path) -> None:
    assert "venues.binance.kind: 'okx' is not one of 'binance'" in \
        refused(cfgdir, edit(BASE, 'kind = "binance"', 'kind = "okx"'))
    for old, new, expect in [
        ("http://127.0.0.1:18080", "ws://127.0.0.1:18080", "venues.binance.rest_url: 'ws://127.0.0.1:18080': scheme must be http or https"),
        ("ws://127.0.0.1:18081", "http://127.0.0.1:18081", "venues.binance.ws_url: 'http://127.0.0.1:18081': scheme must be ws or wss"),
        ("http://127.0.0.1:18080", "http://", "venues.binance.rest_url: 'http://' has no host"),
        ("http://127.0.0.1:18080", "http://127.0.0.1:99999", "venues.binance.rest_url: 'http://127.0.0.1:99999' is not a valid URL"),
        ("http://127.0.0.1:18080", "http://u:p@127.0.0.1:1", "venues.binance.rest_url: credentials do not belong in a URL"),
        ("http://127.0.0.1:18080", "http://127.0.0.1:1/?a=1", "takes no query"),
    ]:
        assert expect in refused(cfgdir, edit(BASE, old, new))
    live = edit(BASE, "paper = true", "paper = false")
    assert load(write(cfgdir, live)).paper is False  # plain text to loopback is fine
    msg = refused(cfgdir, edit(live, "http://127.0.0.1:18080", "http://api.binance.com"))
    assert "venues.binance.rest_url:" in msg and "needs TLS" in msg
    assert "venues.Bin: 'Bin' is not a valid venue name" in refused(cfgdir, edit(BASE, "[venues.binance]", "[venues.Bin]"))


def test_control_section(cfgdir: Path) -> None:
    c = load(write(cfgdir, BASE + '[control]\nsocket = "/tmp/x.sock"\nadmin_group = "wheel"\n'))
    assert c.control == config.ControlConfig(Path("/tmp/x.sock"), admin_group="wheel")
    assert "control.socket:" in refused(cfgdir, BASE + f'[control]\nsocket = "/{"x" * 120}"\n')
    assert "control.admin_group: 'Bad Group' is not a valid group name" in \
        refused(cfgdir, BASE + '[control]\nadmin_group = "Bad Group"\n')


def test_unreadable_or_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load(tmp_path / "nope.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"instance = \"\xff\"\n")
    with pytest.raises(ConfigError, match="bin.toml: not UTF-8"):
        load(p)


# --- SIGHUP ----------------------------------------------------------------------------------------
def test_reloadable_changes(cfgdir: Path) -> None:
    old = load(write(cfgdir, BASE))
    assert reloadable_changes(old, load(write(cfgdir, BASE))) == ([], [])
    text = edit(BASE, 'max_daily_loss = "5000"', 'max_daily_loss = "100"')
    text = edit(text, "half_spread_ticks = 20", "half_spread_ticks = 30")
    text = edit(text, 'max_notional = "5000"', 'max_notional = "10"')
    text = edit(text, 'kind = "binance"', 'kind = "binance"\norders_per_second = 5')
    text = edit(text, 'state_dir = "state"', 'state_dir = "state2"')
    text = edit(text, 'max_notional = "5000"\n', 'max_notional = "5000"\nneutral_base = "3"\n')
    reload, restart = reloadable_changes(old, load(write(cfgdir, text)))
    assert reload == ["instruments[0].max_notional", "instruments[0].strategy.params.half_spread_ticks",
                      "risk.max_daily_loss", "venues.binance.orders_per_second"]
    assert restart == ["daemon.state_dir", "instruments[1].neutral_base"]


def test_reload_structural_and_secret_changes(cfgdir: Path) -> None:
    old = load(write(cfgdir, BASE))
    _write_secret(cfgdir / "keys" / "s", SECRET[::-1])
    reload, restart = reloadable_changes(old, load(write(cfgdir, BASE)))
    assert (reload, restart) == ([], ["venues.binance.api_secret"])
    assert all(SECRET not in k and SECRET[::-1] not in k for k in restart)
    _write_secret(cfgdir / "keys" / "s", SECRET)
    swapped = edit(BASE, 'symbol = "BTCUSDT"', 'symbol = "XRPUSDT"')
    assert reloadable_changes(old, load(write(cfgdir, swapped))) == ([], ["instruments"])
    none = edit(BASE, 'kind = "market_maker"\nquote_qty = "0.001"\nmax_inventory = "0.01"\n'
                'half_spread_ticks = 20\nskew_ticks_per_lot = 5\nstop_ticks = 2000\n', 'kind = "none"\n')
    assert reloadable_changes(old, load(write(cfgdir, none))) == ([], ["instruments[0].strategy.kind"])


def test_a_second_venue_is_refused_until_orders_are_routed_by_venue(cfgdir: Path) -> None:
    second = BASE.replace("[venues.binance]", "[venues.other]\nkind = \"binance\"\nrest_url = \"http://127.0.0.1:1\"\n"
                          "ws_url = \"ws://127.0.0.1:1\"\napi_key_file = \"keys/k\"\napi_secret_file = \"keys/s\"\n\n"
                          "[venues.binance]", 1)
    assert "one [venues.<name>] table per daemon for now, got 2" in refused(cfgdir, second)


def test_a_python_strategys_keys_need_a_restart(cfgdir: Path) -> None:
    """A Python strategy is built once at start: SIGHUP must not say it applied a change to it."""
    mm = ('kind = "market_maker"\nquote_qty = "0.001"\nmax_inventory = "0.01"\n'
          'half_spread_ticks = 20\nskew_ticks_per_lot = 5\nstop_ticks = 2000\n')
    py = 'kind = "python"\nclass = "bot4d.strategies.py_quoter:Quoter"\ninterval_ms = 100\n'
    old = load(write(cfgdir, edit(BASE, mm, py)))
    new = load(write(cfgdir, edit(BASE, mm, py.replace("interval_ms = 100", "interval_ms = 200"))))
    reload, restart = reloadable_changes(old, new)
    assert reload == [] and restart == ["instruments[0].strategy.params.interval_ms"]


# --- paper keys ------------------------------------------------------------------------------------
def test_paperkeys_ensure(tmp_path: Path) -> None:
    d = tmp_path / "a" / "run"
    key, secret = paperkeys.ensure(d)
    assert (key, secret) == (d / "paper.key", d / "paper.secret")
    k1, s1 = key.read_text(), secret.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", k1) and re.fullmatch(r"[0-9a-f]{64}\n", s1) and k1 != s1
    assert key.stat().st_mode & 0o777 == 0o600 and secret.stat().st_mode & 0o777 == 0o600
    assert paperkeys.ensure(d) == (key, secret) and key.read_text() == k1  # existing pair kept
    secret.write_text("")  # an interrupted creation is repaired
    paperkeys.ensure(d)
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret.read_text()) and key.read_text() == k1
    assert sorted(p.name for p in d.iterdir()) == ["paper.key", "paper.secret"]  # no temp left


def test_python_strategy_params_are_validated(cfgdir: Path) -> None:
    mm = ('kind = "market_maker"\nquote_qty = "0.001"\nmax_inventory = "0.01"\nhalf_spread_ticks = 20\n'
          'skew_ticks_per_lot = 5\nstop_ticks = 2000\n')
    assert mm in BASE

    def py(body: str) -> str:
        return BASE.replace(mm, body)
    cfg = load(write(cfgdir, py('kind = "python"\nclass = "bot4d.strategies.py_quoter:Quoter"\ninterval_ms = 50\n'
                                '[instruments.strategy.params]\nqty = "0.001"\noffset_ticks = 3\n')))
    st = cfg.instruments[0].strategy
    assert st.kind == "python" and st.params["class"] == "bot4d.strategies.py_quoter:Quoter"
    assert st.params["interval_ms"] == 50 and st.params["params.qty"] == "0.001" and st.params["params.offset_ticks"] == 3
    assert "instruments[0].strategy.class: 'no colon' is not 'package.module:ClassName'" in \
        refused(cfgdir, py('kind = "python"\nclass = "no colon"\n'))
    assert "instruments[0].strategy.params.qty: a TOML float is not exact" in \
        refused(cfgdir, py('kind = "python"\nclass = "a:B"\n[instruments.strategy.params]\nqty = 0.1\n'))
    assert "instruments[0].strategy.interval_ms: 1 is outside 10..86400000" in \
        refused(cfgdir, py('kind = "python"\nclass = "a:B"\ninterval_ms = 1\n'))


# --- paper stays paper; the risk state's keys ------------------------------------------------------
def test_paper_refuses_every_non_loopback_url(cfgdir: Path) -> None:
    """paper = true never reaches a real venue: only 127.0.0.0/8, ::1 and localhost, by address."""
    for key, old, bad in [
        ("rest_url", "http://127.0.0.1:18080", "https://api.binance.com"),
        ("rest_url", "http://127.0.0.1:18080", "http://10.0.0.5:18080"),
        ("rest_url", "http://127.0.0.1:18080", "http://127.evil.example:18080"),
        ("ws_url", "ws://127.0.0.1:18081", "wss://stream.binance.com:9443"),
        ("ws_url", "ws://127.0.0.1:18081", "ws://[::2]:18081"),
    ]:
        msg = refused(cfgdir, edit(BASE, old, bad))
        assert f"venues.binance.{key}: {bad!r}: paper = true" in msg and "loopback only" in msg, msg
    for old, good in [("http://127.0.0.1:18080", "http://localhost:18080"),
                      ("http://127.0.0.1:18080", "http://127.1.2.3:18080"),
                      ("ws://127.0.0.1:18081", "ws://[::1]:18081")]:
        assert load(write(cfgdir, edit(BASE, old, good))).paper is True
    # live trading may go anywhere over TLS (and plain text to loopback only, as before)
    live = edit(edit(BASE, "paper = true", "paper = false"), "http://127.0.0.1:18080", "https://api.binance.com")
    assert load(write(cfgdir, live)).venues["binance"].rest_url == "https://api.binance.com"


def test_risk_day_start_and_first_start_state(cfgdir: Path) -> None:
    old = load(write(cfgdir, BASE))
    assert (old.risk.day_start_utc, old.risk.day_offset_ns, old.risk.first_start_state) == ("00:00", 0, "reducing")
    text = edit(BASE, 'max_daily_loss = "5000"',
                'max_daily_loss = "5000"\nday_start_utc = "22:30"\nfirst_start_state = "active"')
    new = load(write(cfgdir, text))
    assert new.risk.day_offset_ns == (22 * 60 + 30) * 60 * 10**9 and new.risk.first_start_state == "active"
    for bad in ('"24:00"', '"7:00"', '"07:60"', '"07:00:00"'):
        msg = refused(cfgdir, edit(BASE, 'max_daily_loss = "5000"', f'max_daily_loss = "5000"\nday_start_utc = {bad}'))
        assert "risk.day_start_utc:" in msg and 'UTC time of day "HH:MM"' in msg, msg
    assert "risk.day_start_utc: expected a string, got integer" in \
        refused(cfgdir, edit(BASE, 'max_daily_loss = "5000"', 'max_daily_loss = "5000"\nday_start_utc = 7'))
    assert "risk.first_start_state: 'halted' is not one of 'reducing', 'active'" in \
        refused(cfgdir, edit(BASE, 'max_daily_loss = "5000"', 'max_daily_loss = "5000"\nfirst_start_state = "halted"'))
    # both are read at start (the saved day-start equity belongs to its day boundary): not by SIGHUP
    assert reloadable_changes(old, new) == ([], ["risk.day_start_utc", "risk.first_start_state"])


# --- the venue's rules: STP mode, clock, account currency ------------------------------------------
def test_instrument_stp_policy(cfgdir: Path) -> None:
    """[[instruments]] stp names a bot4d.kernels.stp policy; the default asks the venue for what
    the OMS does itself (cancel the new order); a change needs a restart."""
    old = load(write(cfgdir, BASE))
    assert [i.stp for i in old.instruments] == ["cancel_new", "cancel_new"]
    text = edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "ETHUSDT"\nstp = "cancel_both"')
    new = load(write(cfgdir, text))
    assert new.instruments[1].stp == "cancel_both"
    assert reloadable_changes(old, new) == ([], ["instruments[1].stp"])
    msg = refused(cfgdir, edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "ETHUSDT"\nstp = "EXPIRE_TAKER"'))
    assert "instruments[1].stp: 'EXPIRE_TAKER' is not one of 'none', 'cancel_new', 'cancel_resting', " \
           "'cancel_both', 'decrement'" in msg, msg
    assert "instruments[1].stp: expected a string, got boolean" in \
        refused(cfgdir, edit(BASE, 'symbol = "ETHUSDT"', 'symbol = "ETHUSDT"\nstp = false'))


def test_venue_clock_currency_and_ignored_assets(cfgdir: Path) -> None:
    v = load(write(cfgdir, BASE)).venues["binance"]
    assert (v.time_sync_interval_s, v.account_currency, v.ignore_assets) == (60, None, ())
    text = edit(BASE, 'api_secret_file = "keys/s"', 'api_secret_file = "keys/s"\ntime_sync_interval_s = 5\n'
                'account_currency = "USDT"\nignore_assets = ["DOGE", "1INCH"]')
    v = load(write(cfgdir, text)).venues["binance"]
    assert (v.time_sync_interval_s, v.account_currency, v.ignore_assets) == (5, "USDT", ("DOGE", "1INCH"))
    for extra, expect in [
        ("time_sync_interval_s = 0", "venues.binance.time_sync_interval_s: 0 is outside 1..3600"),
        ("time_sync_interval_s = 1.5", "venues.binance.time_sync_interval_s: expected an integer, got float"),
        ('account_currency = "usdt"', "venues.binance.account_currency: 'usdt' is not a valid asset name"),
        ('ignore_assets = "DOGE"', "venues.binance.ignore_assets: expected an array of asset names, got string"),
        ('ignore_assets = ["DOGE", "DOGE"]', "venues.binance.ignore_assets[1]: DOGE is listed twice"),
        ('ignore_assets = ["doge"]', "venues.binance.ignore_assets[0]: 'doge' is not an asset name"),
    ]:
        msg = refused(cfgdir, edit(BASE, 'api_secret_file = "keys/s"', f'api_secret_file = "keys/s"\n{extra}'))
        assert expect in msg, (extra, msg)
