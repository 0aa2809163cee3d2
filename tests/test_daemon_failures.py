"""Failure modes users reported, reproduced with real processes: the simulated Binance venue and
the daemon (tests/daemon_harness.py), faults injected at the venue (POST /sim/fault), the daemon
watched through bot4ctl's socket, its journal ring, its log, sd_notify and the exporter.

Most tests share one stack (module fixture, in this order); the reconciliation burst and the bad
configurations need their own; the hung-shard watchdog runs in-process on the daemon's pieces."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from bot4d.daemon.app import CONTROL_CODES
from bot4d.kernels import oms_state as oms
from bot4d.records import (EV_CONTROL, EV_FILL, EV_ORDER_NEW, EV_ORDER_STATE, INTENT_FLAG_PROTECTIVE,
                           JFLAG_INTENT_SHIFT)
from tests.daemon_harness import PY, Stack, wait_for

SYSTEM_PY = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
# a control client that imports nothing of ours, so `nobody` can run it (as in tests/test_control.py)
CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(json.dumps({"id": 7, "cmd": sys.argv[2], "args": {}}).encode() + b"\\n")
print(s.makefile().readline().strip())
"""
VENUE_TO_OMS = {"NEW": "ACKED", "PARTIALLY_FILLED": "PARTIALLY_FILLED", "FILLED": "FILLED",
                "CANCELED": "CANCELLED", "EXPIRED": "EXPIRED"}


class NotifySocket:
    """The datagram socket systemd would own: collects what the daemon sends, with arrival times."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.msgs: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.done = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, OSError):
                continue
            with self.lock:
                for line in data.decode().splitlines():
                    self.msgs.append((time.monotonic(), line))

    def lines(self) -> list[str]:
        with self.lock:
            return [m for _, m in self.msgs]

    def close(self) -> None:
        self.done = True
        self.t.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def stack():
    # other users (test_unauthorised_peer) must reach the control socket: a 0755 directory
    tmp = Path(tempfile.mkdtemp(prefix="bot4d-fail-"))
    os.chmod(tmp, 0o755)
    # quotes near the touch, so a taker reaches them through a thin slice of the book
    s = Stack(tmp, name="fail", taker_account=True, half_spread_ticks=20)
    note = NotifySocket(str(tmp / "notify.sock"))
    s.notify = note
    try:
        s.start_sim()
        env = {"BOT4D_LOG_LEVEL": "DEBUG", "NOTIFY_SOCKET": note.path, "WATCHDOG_USEC": "500000"}
        os.environ.pop("WATCHDOG_PID", None)  # systemd's pid filter: unset means "this process"
        s.start_daemon(env=env)
        s.start_exporter()
        wait_for(lambda: s.ok("status")["orders_sent"] >= 4, 60, "the market maker to quote")
        yield s
    finally:
        s.close()
        note.close()
        shutil.rmtree(tmp, ignore_errors=True)


def metrics(s: Stack) -> str:
    with urllib.request.urlopen(s.metrics_url, timeout=5) as r:
        return r.read().decode()


def fixed_levels(rows: list, daemon: bool) -> list[tuple[Decimal, Decimal]]:
    if daemon:  # "qty @ px"
        return [(Decimal(p), Decimal(q)) for q, _, p in (r.split() for r in rows)]
    return [(Decimal(p), Decimal(q)) for p, q in rows]


# ---------------------------------------------------------------------------------------------------
def test_sd_notify_ready_after_status_then_watchdog_pings(stack):
    """Reported: systemd killed the daemon at start (no READY=1) / restarted a healthy daemon
    (no watchdog pings). STATUS lines come during start-up, READY=1 once trading, then WATCHDOG=1
    keeps coming (WATCHDOG_USEC=500000: every 0.25 s)."""
    note = stack.notify
    lines = wait_for(lambda: [m for m in note.lines() if m == "WATCHDOG=1"][2:] and note.lines(), 30,
                     "three watchdog pings")
    ready = lines.index("READY=1")
    assert any(m.startswith("STATUS=") for m in lines[:ready]), lines[:ready]
    assert "WATCHDOG=1" not in lines[:ready], "a watchdog ping before READY=1"
    assert any(m.startswith("STATUS=") for m in lines[ready:])
    n0 = note.lines().count("WATCHDOG=1")
    wait_for(lambda: note.lines().count("WATCHDOG=1") >= n0 + 3, 30, "the pings to keep coming")


def test_stale_book_after_reconnect_pulls_quotes_and_resyncs_to_venue_depth(stack):
    """Reported: after a feed reconnect the bot kept quoting off a stale book. The venue drops
    every stream connection and answers REST slowly (the snapshot takes >= 1 s): the book leaves
    LIVE at once, no order is placed while it is not LIVE, the market maker's quotes are pulled,
    and after resubscribe + snapshot the book is LIVE and equals the venue's REST depth."""
    wait_for(lambda: stack.ok("books", symbol="BTCUSDT")["state"] == "LIVE", 30, "a live book")
    # (the market maker's quotes: a protective stop keeps resting for its position whatever the book)
    resting = wait_for(lambda: [o["order_id"] for o in stack.ok("orders", symbol="BTCUSDT")
                                if o["state"] == "ACKED" and not o["protective"]], 30, "resting BTCUSDT quotes")
    stack.fault("delay", seconds="1.0")
    try:
        stack.fault("disconnect")
        seen_non_live: list[tuple[int, int]] = []   # (request sent, answer received) while not LIVE
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            t0 = time.time_ns()
            st = stack.ok("books", symbol="BTCUSDT")["state"]
            t1 = time.time_ns()
            if st != "LIVE":
                seen_non_live.append((t0, t1))
            elif seen_non_live:
                break
            time.sleep(0.02)
        assert seen_non_live, "the book never left LIVE after the venue dropped the streams"
        assert stack.ok("books", symbol="BTCUSDT")["state"] == "LIVE", "the book did not come back"
    finally:
        stack.fault("delay", seconds="0")
    # the book was not LIVE during [first answer, last request] (one contiguous episode)
    lo, hi = seen_non_live[0][1], seen_non_live[-1][0]
    j = stack.journal()
    # (a protective stop follows the position whatever the book: it is not a strategy's order)
    btc = j[(j["kind"] == EV_ORDER_NEW) & (j["instrument"] == 0)
            & (((j["aux0"] >> JFLAG_INTENT_SHIFT) & INTENT_FLAG_PROTECTIVE) == 0)]
    during = btc[(btc["ts_ns"] >= lo) & (btc["ts_ns"] <= hi)]
    assert len(during) == 0, f"{len(during)} BTCUSDT orders placed while its book was not LIVE"
    # the quotes resting before the reconnect were pulled, not left on a stale price
    gone = j[(j["kind"] == EV_ORDER_STATE) & (j["ts_ns"] <= hi) & np.isin(j["order_id"], resting)
             & np.isin(j["state"], [oms.S_CANCEL_PENDING, oms.S_CANCELLED, oms.S_FILLED])]
    assert set(gone["order_id"].tolist()) == set(resting), \
        f"quotes {resting} resting before the reconnect were not all pulled while the book was not LIVE"

    def same_as_venue():
        v1 = stack.rest("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 5})[1]
        d = stack.ok("books", symbol="BTCUSDT", depth=5)
        v2 = stack.rest("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 5})[1]
        if v1["lastUpdateId"] != v2["lastUpdateId"] or d["state"] != "LIVE":
            return False  # the market moved meanwhile: ask again
        return (fixed_levels(d["bids"], True) == fixed_levels(v1["bids"], False)
                and fixed_levels(d["asks"], True) == fixed_levels(v1["asks"], False))
    wait_for(same_as_venue, 30, "the daemon's book to equal the venue's depth snapshot")


def test_lost_order_answer_is_reconciled_by_client_id_never_resent(stack):
    """Reported: an order whose REST answer never came was sent twice / forgotten. The venue
    accepts the next order and drops the connection without answering: the gateway looks the
    order up by client order id, never resends it, and the OMS ends in the venue's state."""
    before = stack.ok("status")["venues"]["binance"]["counters"]
    stack.fault("unknown_outcome")
    lost = wait_for(lambda: stack.sim_stats()["unknown_outcome"], 30, "an order whose answer is lost")[0]
    cid = lost["clientOrderId"]
    boot = stack.ok("status")["boot"]
    assert cid.startswith(f"b4{boot}-0-"), cid
    oid = int(cid.rsplit("-", 1)[1])
    wait_for(lambda: stack.ok("status")["venues"]["binance"]["counters"]["unknown_resolved_found"]
             > before["unknown_resolved_found"], 30, "the gateway to find the lost order")

    def agree():
        st, q = stack.rest("GET", "/api/v3/order", {"symbol": lost["symbol"], "origClientOrderId": cid}, signed=True)
        assert st == 200, q
        live = {o["order_id"]: o["state"] for o in stack.ok("orders")}
        if oid in live:
            oms_state = live[oid]
        else:
            j = stack.journal()
            ev = j[(j["kind"] == EV_ORDER_STATE) & (j["order_id"] == oid)]
            oms_state = oms.STATE_NAMES[int(ev[-1]["state"])] if len(ev) else None
        return (q["status"], oms_state) if VENUE_TO_OMS.get(q["status"]) == oms_state else None
    venue_state, oms_state = wait_for(agree, 30, "the OMS to hold the venue's state of the lost order")
    stats = stack.sim_stats()
    assert cid not in stats["client_ids_placed_more_than_once"], "the lost order was sent again"
    assert stats["client_ids_placed_more_than_once"] == []
    j = stack.journal()
    assert np.count_nonzero((j["kind"] == EV_ORDER_NEW) & (j["order_id"] == oid)) == 1
    assert stack.counters()["oms_illegal_transitions"] == 0


def test_fill_delivered_twice_counts_once(stack):
    """Reported: a position doubled when the venue repeated a fill. The venue sends the next trade
    report twice; the daemon counts it once (by trade id): its position stays equal to the
    venue's balance, the journal has each trade id once, the duplicate is counted."""
    sym, neutral = "BTCUSDT", Decimal("10")
    before_gw = stack.ok("status")["venues"]["binance"]["counters"]["duplicate_trade_skipped"]
    before_dup = stack.counters()["dup_fills"]
    bids = wait_for(lambda: [o for o in stack.ok("orders", symbol=sym) if o["side"] == "BUY" and o["state"] == "ACKED"
                             and not o["protective"]], 30, "a resting BTCUSDT bid")
    bid = max(bids, key=lambda o: Decimal(o["price"]))
    j0 = len(stack.journal())
    # the taker (another account, no user stream) sells down to our bid: everything above it and ours
    depth = stack.rest("GET", "/api/v3/depth", {"symbol": sym, "limit": 1000})[1]
    px = Decimal(bid["price"])
    qty = sum((Decimal(q) for p, q in depth["bids"] if Decimal(p) >= px), Decimal(0))
    assert 0 < qty <= Decimal(5), (qty, px)
    stack.fault("duplicate_fill")
    st, r = stack.rest("POST", "/api/v3/order", {"symbol": sym, "side": "SELL", "type": "LIMIT", "timeInForce": "IOC",
                                                 "quantity": qty, "price": bid["price"]},
                       signed=True, account=stack.taker)
    assert st == 200 and Decimal(r["executedQty"]) > 0, r

    def dup_seen():
        gw = stack.ok("status")["venues"]["binance"]["counters"]["duplicate_trade_skipped"]
        return (gw - before_gw) + (stack.counters()["dup_fills"] - before_dup) >= 1
    wait_for(dup_seen, 30, "the repeated fill to be recognised")
    fills = stack.journal()[j0:]
    fills = fills[fills["kind"] == EV_FILL]
    assert len(fills) >= 1
    all_fills = stack.journal()
    all_fills = all_fills[all_fills["kind"] == EV_FILL]
    assert len(np.unique(all_fills["aux1"])) == len(all_fills), "a venue trade id journalled twice"

    def position_matches_venue():
        acct = stack.rest("GET", "/api/v3/account", signed=True)[1]
        btc = next(b for b in acct["balances"] if b["asset"] == "BTC")
        held = Decimal(btc["free"]) + Decimal(btc["locked"])
        return Decimal(stack.ok("positions")[sym]["qty"]) == held - neutral
    wait_for(position_matches_venue, 30, "the daemon's position to equal the venue's balance")


def test_rate_limit_storm_opens_breaker_backs_off_and_recovers(stack):
    """Reported: on 429s the bot kept hammering until Binance banned the IP (418). The venue answers
    429 to the next requests: the order-entry breaker opens (status and the exporter's
    bot4d_breaker_state), the daemon backs off, never earns a 418, and trades again by itself."""
    before = stack.ok("status")["venues"]["binance"]
    placed0 = stack.counters()["placed"]
    stack.fault("rate_limit_storm", 8)

    def breaker_series() -> str:
        """The state the exporter shows (a state set: one series per state, 1 for the current)."""
        on = [x for x in metrics(stack).splitlines() if x.startswith("bot4d_breaker_state{")
              and 'component="order_entry"' in x and float(x.rsplit(" ", 1)[1]) == 1.0]
        assert len(on) == 1, on
        return on[0].split('state="')[1].split('"')[0]
    wait_for(lambda: breaker_series() == "OPEN", 30, "the exporter to show the breaker OPEN")
    wait_for(lambda: stack.ok("status")["venues"]["binance"]["breaker_opened"] > before["breaker_opened"], 30,
             "the order-entry breaker to open")
    assert stack.sim_stats()["answers"].get("429", 0) >= 1
    wait_for(lambda: stack.ok("status")["venues"]["binance"]["breaker"] == "CLOSED"
             and stack.counters()["placed"] > placed0 + 2, 60, "trading to resume by itself")
    wait_for(lambda: breaker_series() == "CLOSED", 30, "the exporter to show the breaker CLOSED again")
    stats = stack.sim_stats()
    assert stats["answers"].get("418", 0) == 0 and stats["banned"] == [], stats
    assert stack.ok("status")["venues"]["binance"]["halted"] is None
    # the breaker opening again and again within the storm window is itself an alarm: the kill
    # switch may trip for a breaker storm (HALTED, cool-off to REDUCING); an operator resumes
    risk = stack.ok("risk")["0"]
    if risk["tripped"]:
        assert risk["trip_reason"] == "TRIP_BREAKER_STORM", risk
        stack.ok("resume")


def test_unauthorised_peer_is_refused_with_the_daemons_sentence(stack):
    """Reported: any local user could steer the daemon. bot4ctl as `nobody` is refused by the
    daemon (SO_PEERCRED), with a sentence naming the uid, not a socket error."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or SYSTEM_PY is None:
        pytest.skip("needs root, runuser and a system python3 to act as another user")
    j0 = len(stack.journal())
    state = stack.ok("status")["trading_state"]
    for cmd in ("status", "halt"):
        out = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PY, "-c", CLIENT, stack.sock, cmd],
                             capture_output=True, text=True, timeout=20, cwd="/")
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert not r["ok"] and "access denied" in r["error"], r
        assert str(pwd.getpwnam("nobody").pw_uid) in r["error"]
    assert stack.ok("status")["trading_state"] == state   # the refused halt changed nothing
    j = stack.journal()[j0:]
    assert np.count_nonzero(j["kind"] == EV_CONTROL) == 0, "a refused command was journalled as done"


def test_sighup_reload_applies_limits_and_refuses_restart_changes(stack):
    """Reported: a config edit + SIGHUP silently did nothing / took the daemon down. A strategy
    parameter and max_open_orders change apply (limits shows them, EV_CONTROL reload journalled);
    a shard_cores change is refused and logged, and the daemon keeps trading."""
    cfg = stack.config.read_text()
    j0 = len(stack.journal())
    edited = cfg.replace("max_open_orders = 8", "max_open_orders = 6").replace("requote_ticks = 5", "requote_ticks = 7")
    assert edited != cfg
    stack.config.write_text(edited)
    stack.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: stack.ok("limits")["instruments"]["BTCUSDT"]["max_open_orders"] == 6, 30, "the new limit")
    def reload_journalled():
        j = stack.journal()[j0:]
        return j[(j["kind"] == EV_CONTROL) & (j["reason"] == CONTROL_CODES["reload"])]
    rel = wait_for(reload_journalled, 30, "EV_CONTROL reload in the journal")
    assert rel[-1]["aux0"] == os.getuid() and rel[-1]["aux1"] == stack.daemon.pid  # SIGHUP: the daemon itself
    wait_for(lambda: "reloaded:" in stack.daemon_log.read_text(), 10, "the reload in the log")
    # a change that needs a restart
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores to move the shard")
    import re
    core_now = int(re.search(r"shard_cores = \[(\d+)\]", edited).group(1))
    other = next(c for c in cores if c != core_now)
    stack.config.write_text(edited.replace(f"shard_cores = [{core_now}]", f"shard_cores = [{other}]")
                            .replace("max_open_orders = 6", "max_open_orders = 5"))
    stack.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "daemon.shard_cores need a restart" in stack.daemon_log.read_text()
             or "shard_cores" in stack.daemon_log.read_text().split("reload refused")[-1], 30, "the refusal in the log")
    assert "reload refused" in stack.daemon_log.read_text()
    assert stack.daemon.poll() is None
    assert stack.ok("limits")["instruments"]["BTCUSDT"]["max_open_orders"] == 6, "a refused reload applied in part"
    stack.config.write_text(edited)
    placed = stack.counters()["placed"]
    risk = stack.ok("risk")["0"]
    assert risk["trading_state"] in ("ACTIVE", "REDUCING"), risk   # the reloads halted nothing
    wait_for(lambda: stack.counters()["placed"] > placed, 60, "trading to go on")


def test_secrets_never_leak(stack):
    """Reported: the API secret showed up in a debug log. With DEBUG logging, the daemon's log,
    the journal's bytes, the exporter's /metrics and every bot4ctl command's --json output are
    free of the API key and secret."""
    key, secret = stack.key, stack.secret
    assert len(key) >= 16 and len(secret) >= 16
    outputs = {}
    env = dict(os.environ)
    for cmd in ("status", "version", "shards", "books BTCUSDT", "orders", "positions", "balances", "pnl",
                "risk", "limits", "journal lag", "help"):
        out = subprocess.run([PY, "-m", "bot4d.ctl", f"--socket={stack.sock}", *cmd.split(), "--json"],
                             capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)
        json.loads(out.stdout)
        outputs[cmd] = out.stdout + out.stderr
    log = stack.daemon_log.read_text(errors="replace")
    assert " DEBUG " in log, "the daemon did not log at DEBUG"
    texts = {"daemon log": log, "metrics": metrics(stack), **{f"bot4ctl {c} --json": t for c, t in outputs.items()}}
    journal = stack.journal().tobytes()
    for what, text in texts.items():
        for name, s in (("API key", key), ("API secret", secret)):
            assert s not in text, f"the {name} leaks into {what}"
    for name, s in (("API key", key), ("API secret", secret)):
        assert s.encode() not in journal and s[:16].encode() not in journal, f"the {name} leaks into the journal"


def test_sigterm_sends_stopping_and_exits_0(stack):
    """Reported: systemd waited the full stop timeout. SIGTERM: STOPPING=1 goes out, orders are
    cancelled, exit status 0."""
    n_before = len(stack.notify.lines())
    assert stack.stop_daemon(signal.SIGTERM) == 0
    after = stack.notify.lines()[n_before:]
    assert "STOPPING=1" in after, after
    # the quotes are cancelled; only protective stops of open positions stay at the venue
    assert [o for o in stack.venue_open_orders() if o["type"] != "STOP_LOSS_LIMIT"] == []


# --------------------------------------------------------------------- own stacks / in-process ------
def test_reconciliation_burst_stays_within_the_weight_budget(tmp_path):
    """Reported: after a crash the restart's reconciliation burst got the IP banned. Forty of our
    orders from an earlier boot rest at a venue whose limit is just above our small budget: at
    start the daemon cancels all of them, then its market maker runs into the budget (places
    refused locally), and the venue never answers 429/418; the peak weight stays in budget.

    The start-up (rules, commission, account, the trade sweep, the leftovers' cancels) needs more
    than the minute's 160, so reconciliation waits for the next minute while the feeds queue
    market data for the shard; the shard then starts behind its data, which is no stale feed (it
    used to trip TRIP_STALE_MARKET_DATA on its first pass and never quote: the maker never reached
    the budget, tests/test_shard_gaps.py::test_a_reconciliation_that_waits_for_the_weight_budget_does_not_start_stale).
    Reading that backlog in full batches, one could end inside a venue frame that is crossed for a
    moment; the book judged it at the batch end and kept ERR_CROSSED for good (never usable, never
    valued, no quote; tests/test_book.py::test_a_batch_cut_inside_a_crossed_frame_leaves_no_error_once_the_frame_completes).

    The venue counts weight per IP, so this test's own 40 places count too (as a second process
    on the host would): the budget leaves room for them and for the feeds' depth snapshots."""
    budget, n_left = 160, 40
    # quotes near the touch requote often: the maker spends what the start-up (rules, commission,
    # account, the trade sweep, the leftovers' cancels) left of the minute, then the next one
    s = Stack(tmp_path, name="burst", weight_budget=budget, sim_weight_limit=budget + 15, half_spread_ticks=20)
    try:
        s.start_sim()
        # the agents' market orders sweep thin books, so a far limit order may fill; a buy stop
        # far above the market rests untriggered until cancelled
        for k in range(n_left):
            sym, px, qty = ("BTCUSDT", f"{120000 + k}.00", "0.001") if k % 2 else ("ETHUSDT", f"{6000 + k}.00", "0.02")
            st, body = s.rest("POST", "/api/v3/order", {"symbol": sym, "side": "BUY", "type": "STOP_LOSS_LIMIT",
                                                        "timeInForce": "GTC", "quantity": qty, "price": px,
                                                        "stopPrice": px,
                                                        "newClientOrderId": f"b4zzzzzz-0-{k + 1}"}, signed=True)
            assert st == 200, body
        s.start_daemon()
        # then the market maker spends what is left of the minute: its places are refused locally
        wait_for(lambda: s.ok("status")["venues"]["binance"]["counters"]["local_rejects_rate_limit"] > 0, 120,
                 "the budget to refuse places")
        stats = s.sim_stats()  # before this test asks anything more of the venue
        assert stats["answers"].get("429", 0) == 0 and stats["answers"].get("418", 0) == 0, stats
        assert stats["banned"] == []
        # the backlog left no book in error: both are usable, as an operator sees them
        assert s.ok("status")["books_in_error"] == {}
        for sym in ("BTCUSDT", "ETHUSDT"):
            book = s.ok("books", symbol=sym)
            assert book["usable"] is True and book["book_error"] is None, book
        gw = s.ok("status")["venues"]["binance"]
        assert gw["weight_peak"] <= budget, gw
        rec = s.ok("status")["reconciled"]["binance"]
        # none is left working (asked per symbol: 6 weight each, not 80 for all)
        left = [o for sym in ("BTCUSDT", "ETHUSDT")
                for o in s.rest("GET", "/api/v3/openOrders", {"symbol": sym}, signed=True)[1]
                if o["clientOrderId"].startswith("b4zzzzzz-")]
        assert left == []
        assert rec["leftover_orders_cancelled"] == n_left, rec
        log = s.daemon_log.read_text()
        assert "HTTP 429" not in log and "HTTP 418" not in log
        assert s.stop_daemon(signal.SIGTERM) == 0
    finally:
        s.close()


BAD_CONFIGS = [
    # (what is wrong, edit of the good config, words the error must contain)
    ("unknown key", lambda c: c.replace("[daemon]\n", "[daemon]\nshard_core = [0]\n"), ["daemon.shard_core", "unknown"]),
    ("float money", lambda c: c.replace('max_notional = "5000"', "max_notional = 5000.5", 1),
     ["instruments[0].max_notional", "float", "string"]),
    ("shard without a core", lambda c: c.replace("shard = 0", "shard = 3", 1), ["instruments[0].shard", "not a shard"]),
    ("inline secret", lambda c: c.replace("[venues.binance]\n", '[venues.binance]\napi_secret = "abc"\n'), ["venues.binance.api_secret", "inline credentials"]),
]


def test_bad_config_is_refused_with_key_path_and_reason(tmp_path):
    """Reported: a typo in the config was ignored and the daemon ran with defaults. Each bad file
    makes `bot4d run` exit 2 naming the key and the problem, before anything starts."""
    good = Stack(tmp_path, name="badcfg").config.read_text()
    procs = []
    for n, (what, edit, words) in enumerate(BAD_CONFIGS):
        bad = edit(good)
        assert bad != good, what
        f = tmp_path / f"bad{n}.toml"
        f.write_text(bad)
        procs.append((what, words, subprocess.Popen([PY, "-m", "bot4d.cli", "run", "--config", str(f)],
                                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for what, words, p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 2, (what, p.returncode, out)
        msg = out.lower()
        assert "configuration refused" in msg, (what, out)
        for w in words:
            assert w.lower() in msg, (what, w, out)


def test_hung_shard_stops_watchdog_pings(tmp_path):
    """Reported: a shard thread died and systemd never noticed. The daemon's own pieces in-process:
    while the shard runs, `_watchdog` pings; once the shard thread stops, no WATCHDOG=1 goes out
    and STATUS says which shard is not running."""
    from bot4d.config import load
    from bot4d.daemon.app import Daemon
    from bot4d.sdnotify import Notifier

    s = Stack(tmp_path, name="wdog")
    note = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        s.start_sim()
        d = Daemon(load(s.config), notifier=Notifier({"NOTIFY_SOCKET": note.path, "WATCHDOG_USEC": "200000"}),
                   warm=False)

        async def run() -> None:
            await d._load_rules()
            d._build()
            for sh in d.shards:
                sh.start()
            wd = asyncio.create_task(d._watchdog())
            t_end = time.monotonic() + 30
            while note.lines().count("WATCHDOG=1") < 3 and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            assert note.lines().count("WATCHDOG=1") >= 3, note.lines()
            d.shards[0].stop()
            assert not d.shards[0].thread.is_alive()
            n_stop = len(note.lines())
            # a ping already on its way may land; after that, none for many intervals
            while not any("not running" in m for m in note.lines()[n_stop:]) and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            n_mark = len(note.lines())
            await asyncio.sleep(1.0)  # five watchdog intervals
            d.stopping.set()
            await asyncio.wait_for(wd, 5)
            after = note.lines()[n_stop:]
            assert any(m.startswith("STATUS=shard(s) [0] not running") for m in after), after
            assert "WATCHDOG=1" not in note.lines()[n_mark:], note.lines()[n_mark:]

        try:
            asyncio.run(run())
        finally:
            for sh in d.shards:
                sh.stop()
            d.close()
    finally:
        note.close()
        s.close()
