"""The simulated Binance venue against a plain Binance-style client over real loopback sockets.

The client below is written from Binance's documentation, not from our gateway: SIGNED requests
carry ``timestamp`` and ``signature`` = HMAC-SHA256(secret, totalParams) in hex, the API key in the
``X-MBX-APIKEY`` header (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security),
and execution reports arrive on ``/ws/<listenKey>`` after ``POST /api/v3/userDataStream``.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from picows import WSListener, WSMsgType, ws_connect

from bot4d.sim.binance_server import DEFAULT_SYMBOLS, SimServer
from bot4d.sim.binance_venue import BinanceVenue

KEY, SECRET = "simkey" + "A" * 58, "simsecret" + "B" * 55


class ServerThread:
    def __init__(self, server: SimServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self):
        self.t.start()
        assert self.ready.wait(10)
        return self

    def call(self, fn, *a):
        """Run fn(*a) on the server's loop (the venue is not thread-safe) and return its result."""
        fut = asyncio.run_coroutine_threadsafe(self._call(fn, *a), self.loop)
        return fut.result(10)

    @staticmethod
    async def _call(fn, *a):
        return fn(*a)

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.t.join(10)


class Client:
    """Minimal Binance REST client per the docs."""

    def __init__(self, port, key=KEY, secret=SECRET):
        self.base = f"http://127.0.0.1:{port}"
        self.key, self.secret = key, secret

    def request(self, method, path, params=None, signed=False, ts_offset_ms=0, bad_sig=False):
        params = dict(params or {})
        if signed:
            params["timestamp"] = int(time.time() * 1000) + ts_offset_ms
            q = urlencode(params)
            sig = hmac.new(self.secret.encode(), q.encode(), hashlib.sha256).hexdigest()
            if bad_sig:
                sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
            q += "&signature=" + sig
        else:
            q = urlencode(params)
        req = urllib.request.Request(f"{self.base}{path}?{q}", method=method,
                                     headers={"X-MBX-APIKEY": self.key})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)


class Collector(WSListener):
    def __init__(self):
        self.msgs = []

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            self.msgs.append(json.loads(frame.get_payload_as_bytes()))


def make_venue():
    v = BinanceVenue(DEFAULT_SYMBOLS)
    acct = v.add_account(KEY, SECRET, {"USDT": "100000", "BTC": "2"})
    v.set_fees(acct.index, "0.001", "0.001")
    return v, acct


@pytest.fixture()
def sim():
    venue, acct = make_venue()
    with ServerThread(SimServer(venue)) as st:
        yield st, Client(st.server.rest_port), acct


def test_place_query_cancel_with_execution_reports(sim):
    st, c, acct = sim

    async def flow():
        status, lk, _ = await asyncio.to_thread(c.request, "POST", "/api/v3/userDataStream")
        assert status == 200
        user_t, user = await ws_connect(Collector, f"ws://127.0.0.1:{st.server.ws_port}/ws/{lk['listenKey']}")
        mkt_t, mkt = await ws_connect(Collector, f"ws://127.0.0.1:{st.server.ws_port}/stream?streams=btcusdt@depth@100ms/btcusdt@trade")
        await asyncio.sleep(0.05)
        status, o, hdr = await asyncio.to_thread(c.request, "POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01000", "price": "50000.00", "newClientOrderId": "my-1"}, True)
        assert status == 200, o
        assert o["status"] == "NEW" and o["clientOrderId"] == "my-1" and o["origQty"] == "0.01000000"
        assert int(hdr["X-MBX-USED-WEIGHT-1M"]) >= 1
        status, q, _ = await asyncio.to_thread(c.request, "GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": o["orderId"]}, True)
        assert status == 200 and q["status"] == "NEW" and q["price"] == "50000.00000000"
        status, oo, _ = await asyncio.to_thread(c.request, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, True)
        assert [x["orderId"] for x in oo] == [o["orderId"]]
        status, acc, _ = await asyncio.to_thread(c.request, "GET", "/api/v3/account", {}, True)
        usdt = next(b for b in acc["balances"] if b["asset"] == "USDT")
        assert Decimal(usdt["locked"]) == Decimal("500.5")  # 500 + worst-case 0.1 % fee reserve
        status, cx, _ = await asyncio.to_thread(c.request, "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "my-1"}, True)
        assert status == 200 and cx["status"] == "CANCELED"
        await asyncio.sleep(0.1)
        reports = [m for m in user.msgs if m.get("e") == "executionReport"]
        assert [(r["x"], r["X"]) for r in reports] == [("NEW", "NEW"), ("CANCELED", "CANCELED")]
        assert all(r["c"] == "my-1" and r["i"] == o["orderId"] for r in reports)
        depth = [m for m in mkt.msgs if m["stream"] == "btcusdt@depth@100ms"]
        assert len(depth) == 2  # the bid appeared, then went away
        assert depth[0]["data"]["b"] == [["50000.00000000", "0.01000000"]]
        assert depth[1]["data"]["b"] == [["50000.00000000", "0.00000000"]]
        assert depth[1]["data"]["U"] == depth[0]["data"]["u"] + 1
        status, acc, _ = await asyncio.to_thread(c.request, "GET", "/api/v3/account", {}, True)
        usdt = next(b for b in acc["balances"] if b["asset"] == "USDT")
        assert (usdt["free"], usdt["locked"]) == ("100000.00000000", "0.00000000")
        user_t.disconnect()
        mkt_t.disconnect()

    asyncio.run(flow())


def test_fill_settles_balances_and_reports_trade(sim):
    st, c, acct = sim
    # a resting agent ask to trade against
    import numpy as np
    from bot4d.kernels import matching as m
    o = np.zeros(1, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"], o["order_id"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, 1, 1 << 41
    o["price"], o["qty"] = 6_000_000, 200  # 60000.00 BTCUSDT, 0.00200 BTC
    st.call(st.server.venue.submit_agent_orders, o, time.time_ns())
    status, r, _ = c.request("POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
        "quantity": "0.00300", "price": "60001.00"}, True)
    assert status == 200 and r["status"] == "EXPIRED" and r["executedQty"] == "0.00200000"
    assert r["fills"] == [{"price": "60000.00000000", "qty": "0.00200000", "commission": "0.12000000",
                           "commissionAsset": "USDT", "tradeId": r["fills"][0]["tradeId"]}]
    _, acc, _ = c.request("GET", "/api/v3/account", {}, True)
    bal = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in acc["balances"]}
    assert bal["BTC"] == (Decimal("2.002"), 0)
    assert bal["USDT"] == (Decimal("100000") - Decimal("120") - Decimal("0.12"), 0)


@pytest.mark.parametrize(
    "kw,http_status,code",
    [
        (dict(bad_sig=True), 400, -1022),
        (dict(ts_offset_ms=-10_000), 400, -1021),   # older than recvWindow 5000
        (dict(ts_offset_ms=5_000), 400, -1021),     # from the future
    ],
)
def test_signature_and_timestamp_errors(sim, kw, http_status, code):
    st, c, _ = sim
    status, body, _ = c.request("GET", "/api/v3/account", {}, True, **kw)
    assert (status, body["code"]) == (http_status, code)


def test_api_key_and_parameter_errors(sim):
    st, c, _ = sim
    status, body, _ = Client(st.server.rest_port, key="nope").request("GET", "/api/v3/account", {}, True)
    assert (status, body["code"]) == (401, -2015)
    cases = [
        ({"symbol": "NOPE", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1"}, -1121),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "1"}, -1102),
        ({"symbol": "BTCUSDT", "side": "UP", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1"}, -1100),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1e3", "price": "1"}, -1100),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.000001", "price": "100"}, -1013),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01", "price": "100.001"}, -1013),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.00001", "price": "100"}, -1013),  # notional 0.001 < 5
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "10", "price": "60000"}, -2010),  # balance
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "SIDEWAYS", "quantity": "1"}, -1116),
    ]
    for params, code in cases:
        status, body, _ = c.request("POST", "/api/v3/order", params, True)
        assert status == 400 and body["code"] == code, (params, body)
        assert body["msg"]
    status, body, _ = c.request("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 999}, True)
    assert (status, body["code"], body["msg"]) == (400, -2011, "Unknown order sent.")
    status, body, _ = c.request("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 999}, True)
    assert (status, body["code"], body["msg"]) == (400, -2013, "Order does not exist.")
    status, body, _ = c.request("GET", "/api/v3/nothing")
    assert status == 404
    # nothing was locked by any refused order
    _, acc, _ = c.request("GET", "/api/v3/account", {}, True)
    assert all(b["locked"] == "0.00000000" for b in acc["balances"])


def test_rate_limit_429_then_418_ban():
    venue, _ = make_venue()
    venue.limiter.limit = 50
    with ServerThread(SimServer(venue)) as st:
        c = Client(st.server.rest_port)
        seen = []
        for _ in range(40):
            status, body, hdr = c.request("GET", "/api/v3/depth", {"symbol": "BTCUSDT"})  # weight 5
            seen.append(status)
            if status in (429, 418):
                assert body["code"] == -1003 and int(hdr["Retry-After"]) >= 1
            if status == 418:
                break
        assert seen[:10] == [200] * 10
        assert seen[10] == 429
        assert seen[-1] == 418  # kept going after 429s: banned
        status, _, _ = c.request("GET", "/api/v3/ping")
        assert status == 418  # the ban covers every endpoint


def test_injected_faults(sim):
    st, c, _ = sim
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01", "price": "1000"}
    for kind, count in (("http_5xx", 1), ("reject_orders", 1)):
        status, body, _ = Client(st.server.rest_port).request("POST", "/sim/fault", {"kind": kind, "count": count})
        assert status == 200
    status, body, _ = c.request("POST", "/api/v3/order", order, True)
    assert status == 503
    status, body, _ = c.request("POST", "/api/v3/order", order, True)
    assert (status, body["code"]) == (400, -2010)
    status, body, _ = Client(st.server.rest_port).request("POST", "/sim/fault", {"kind": "volcano"})
    assert status == 400 and "unknown fault" in body["msg"]
    # unknown outcome: the venue accepts the order but the answer never comes
    Client(st.server.rest_port).request("POST", "/sim/fault", {"kind": "unknown_outcome"})
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        c.request("POST", "/api/v3/order", dict(order, newClientOrderId="lost-1"), True)
    status, q, _ = c.request("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "lost-1"}, True)
    assert status == 200 and q["status"] == "NEW"  # reconciling by client order id finds it


def http_client_errors():
    import http.client
    return http.client.RemoteDisconnected


def test_depth_snapshot_and_gap_fault_are_consistent(sim):
    st, c, _ = sim
    v = st.server.venue
    got = []
    v.market_listeners.append(lambda s, p: got.append((s, p)))
    import numpy as np
    from bot4d.kernels import matching as m
    o = np.zeros(3, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, [0, 1, 0]
    o["order_id"] = [(1 << 41) + k for k in range(3)]
    o["price"], o["qty"] = [5_990_000, 6_010_000, 5_980_000], 100
    st.call(v.submit_agent_orders, o[:2], time.time_ns())
    status, snap, _ = c.request("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 10})
    assert snap["bids"] == [["59900.00000000", "0.00100000"]] and snap["asks"] == [["60100.00000000", "0.00100000"]]
    st.call(v.inject, "depth_gap", 1)
    st.call(v.submit_agent_orders, o[2:], time.time_ns())
    diffs = [p for s, p in got if s == "btcusdt@depth"]
    assert diffs[-1]["U"] == snap["lastUpdateId"] + 2  # one id skipped: a client must resync
    status, body, _ = c.request("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 0})
    assert status == 400 and body["code"] == -1100


def test_stream_reorder_and_delay_faults(sim):
    st, c, _ = sim
    import numpy as np
    from bot4d.kernels import matching as m

    def agent(k, px):
        o = np.zeros(1, m.SIM_ORDER_DTYPE)
        o["op"], o["otype"], o["tif"], o["side"], o["order_id"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, 0, (1 << 42) + k
        o["price"], o["qty"] = px, 100
        st.call(st.server.venue.submit_agent_orders, o, time.time_ns())

    async def flow():
        t, col = await ws_connect(Collector, f"ws://127.0.0.1:{st.server.ws_port}/ws/btcusdt@depth")
        await asyncio.sleep(0.05)
        status, _, _ = await asyncio.to_thread(Client(st.server.rest_port).request, "POST", "/sim/fault", {"kind": "reorder", "count": 1})
        assert status == 200
        for k in range(3):
            agent(k, 5_000_000 + k)
        await asyncio.sleep(0.2)
        ids = [msg["U"] for msg in col.msgs]
        assert len(ids) == 3 and ids[0] > ids[1] and ids[1] < ids[2]  # first two swapped, then in order
        status, _, _ = await asyncio.to_thread(Client(st.server.rest_port).request, "POST", "/sim/fault", {"kind": "ws_delay", "seconds": "0.3"})
        t0 = time.monotonic()
        agent(9, 5_100_000)
        while len(col.msgs) < 4:
            await asyncio.sleep(0.01)
        assert time.monotonic() - t0 >= 0.25  # a lower bound: a slow machine only makes it later
        t.disconnect()

    asyncio.run(flow())


def test_duplicate_fill_fault_sends_one_trade_report_twice_and_stats_count_answers(sim):
    """duplicate_fill: the next TRADE execution report goes out twice on the user stream (same
    trade id); other reports and later trades go out once. /sim/stats counts answers by status."""
    st, c, acct = sim
    import numpy as np
    from bot4d.kernels import matching as m

    async def flow():
        status, lk, _ = await asyncio.to_thread(c.request, "POST", "/api/v3/userDataStream")
        user_t, user = await ws_connect(Collector, f"ws://127.0.0.1:{st.server.ws_port}/ws/{lk['listenKey']}")
        await asyncio.sleep(0.05)
        o = np.zeros(2, m.SIM_ORDER_DTYPE)
        o["op"], o["otype"], o["tif"], o["side"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, 1
        o["order_id"] = [1 << 41, (1 << 41) + 1]
        o["price"], o["qty"] = 6_000_000, 100
        await asyncio.to_thread(st.call, st.server.venue.submit_agent_orders, o, time.time_ns())
        status, body, _ = await asyncio.to_thread(Client(st.server.rest_port).request, "POST", "/sim/fault",
                                                  {"kind": "duplicate_fill", "count": 1})
        assert status == 200 and body == {"armed": "duplicate_fill", "count": 1}
        for n in (1, 2):  # each takes one agent ask: two trades, only the first doubled
            status, r, _ = await asyncio.to_thread(c.request, "POST", "/api/v3/order", {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                "quantity": "0.00100", "price": "60000.00", "newClientOrderId": f"dup-{n}"}, True)
            assert status == 200 and r["status"] == "FILLED", r
        await asyncio.sleep(0.2)
        trades = [(x["c"], x["t"]) for x in user.msgs if x.get("e") == "executionReport" and x["x"] == "TRADE"]
        assert len(trades) == 3 and trades[0] == trades[1] and trades[2][0] == "dup-2", trades
        user_t.disconnect()

    asyncio.run(flow())
    c.request("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "nope"}, True)  # 400
    with urllib.request.urlopen(f"http://127.0.0.1:{st.server.rest_port}/sim/stats", timeout=5) as r:
        stats = json.loads(r.read())
    assert stats["answers"]["200"] >= 3 and stats["answers"]["400"] == 1
    assert stats["weight_limit"] == 6000 and stats["banned"] == []
    assert sum(v["used"] for v in stats["weight_used"].values()) >= 3
    assert stats["unknown_outcome"] == [] and stats["client_ids_placed_more_than_once"] == []
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
             "price": "50000", "newClientOrderId": "twice"}  # within PERCENT_PRICE_BY_SIDE of the last trade
    Client(st.server.rest_port).request("POST", "/sim/fault", {"kind": "unknown_outcome"})
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        c.request("POST", "/api/v3/order", order, True)
    status, body, _ = c.request("POST", "/api/v3/order", order, True)
    assert (status, body["code"]) == (400, -2010)  # still open: a resend is a duplicate
    with urllib.request.urlopen(f"http://127.0.0.1:{st.server.rest_port}/sim/stats", timeout=5) as r:
        stats = json.loads(r.read())
    assert [(o["clientOrderId"], o["status"]) for o in stats["unknown_outcome"]] == [("twice", "NEW")]
    assert stats["client_ids_placed_more_than_once"] == ["twice"]


def test_my_trades_honours_from_id_limit_and_order_id_as_binance_documents(sim):
    """GET /api/v3/myTrades (rest-api.md, "Account trade list"): ``fromId`` returns trades with
    id >= fromId oldest first, ``limit`` defaults to 500 and is 1..1000, without ``fromId`` the most
    recent trades come back; ``orderId`` + ``fromId`` is one order's trades from an id; other
    parameter combinations are refused with -1128, a time window over 24 hours with -1127."""
    st, c, acct = sim
    import numpy as np
    from bot4d.kernels import matching as m

    n_agents = 7
    o = np.zeros(n_agents, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, 1
    o["order_id"] = [(1 << 41) + k for k in range(n_agents)]
    o["price"], o["qty"] = 6_000_000, 100  # 60000.00, 0.001 BTC each
    st.call(st.server.venue.submit_agent_orders, o, time.time_ns())
    ids = {}
    for cid, qty in (("a", "0.00300"), ("b", "0.00400")):  # 3 trades, then 4 trades
        status, r, _ = c.request("POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
            "quantity": qty, "price": "60000.00", "newClientOrderId": cid}, True)
        assert status == 200 and r["status"] == "FILLED", r
        ids[cid] = r["orderId"]

    def trades(**params):
        status, body, _ = c.request("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", **params}, True)
        assert status == 200, body
        return body

    every = trades()
    tid = [t["id"] for t in every]
    assert len(tid) == 7 and tid == sorted(tid) and len(set(tid)) == 7
    assert [t["orderId"] for t in every] == [ids["a"]] * 3 + [ids["b"]] * 4
    assert all(t["isBuyer"] and not t["isMaker"] and t["qty"] == "0.00100000" for t in every)
    assert [t["id"] for t in trades(fromId=tid[2])] == tid[2:]          # >= fromId
    assert [t["id"] for t in trades(fromId=tid[2], limit=3)] == tid[2:5]  # oldest first, limit
    assert trades(fromId=tid[-1] + 1) == []
    assert [t["id"] for t in trades(limit=2)] == tid[-2:]               # no fromId: most recent
    assert [t["id"] for t in trades(orderId=ids["b"], fromId=tid[4])] == tid[4:]
    assert [t["id"] for t in trades(orderId=ids["a"])] == tid[:3]
    now_ms = int(time.time() * 1000)
    assert [t["id"] for t in trades(startTime=now_ms - 60_000, endTime=now_ms + 60_000)] == tid
    for params, code in (({"limit": 0}, -1100), ({"limit": 1001}, -1100),
                         ({"fromId": tid[0], "startTime": now_ms}, -1128),
                         ({"orderId": ids["a"], "startTime": now_ms}, -1128),
                         ({"startTime": now_ms - 2 * 86_400_000, "endTime": now_ms}, -1127),
                         ({"fromId": "x"}, -1100)):
        status, body, _ = c.request("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", **params}, True)
        assert (status, body["code"]) == (400, code), (params, body)
    # the default limit is 500: 510 trades of one order come back as the most recent 500
    many = np.zeros(510, m.SIM_ORDER_DTYPE)
    many["op"], many["otype"], many["tif"], many["side"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, 1
    many["order_id"] = [(1 << 43) + k for k in range(510)]
    many["price"], many["qty"] = 6_000_000, 100
    st.call(st.server.venue.submit_agent_orders, many, time.time_ns())
    status, r, _ = c.request("POST", "/api/v3/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
        "quantity": "0.51000", "price": "60000.00"}, True)
    assert status == 200 and r["status"] == "FILLED", r
    latest = trades()
    assert len(latest) == 500 and latest[-1]["id"] == max(t["id"] for t in trades(fromId=tid[-1] + 1, limit=1000))
    assert [t["id"] for t in trades(fromId=tid[0], limit=1000)][:7] == tid
    assert len(trades(fromId=tid[0], limit=1000)) == 517


# --- the venue rules a client must follow (issue 12): clock, commission, filters, STP ----------------
def _agent(st, symbol_index, side, price, qty, oid):
    import numpy as np
    from bot4d.kernels import matching as m
    o = np.zeros(1, m.SIM_ORDER_DTYPE)
    o["op"], o["otype"], o["tif"], o["side"], o["order_id"] = m.OP_NEW, m.T_LIMIT, m.TIF_GTC, side, oid
    o["instrument"], o["price"], o["qty"] = symbol_index, price, qty
    st.call(st.server.venue.submit_agent_orders, o, time.time_ns())


def test_clock_offset_fault_judges_timestamps_by_the_venue_clock(sim):
    """rest-api.md "Timing security": a request is processed only if timestamp < serverTime + 1 s
    and serverTime - timestamp <= recvWindow; otherwise -1021 (errors.md). The fault puts the
    venue's clock 3 s ahead: GET /api/v3/time says so, a local timestamp passes a 5 s recvWindow
    but not a 2 s one, one stamped with the venue's time passes both."""
    st, c, _ = sim
    status, body, _ = c.request("POST", "/sim/fault", {"kind": "clock_offset", "seconds": "3"})
    assert status == 200, body
    _, t, _ = c.request("GET", "/api/v3/time")
    assert 2800 <= t["serverTime"] - int(time.time() * 1000) <= 3200, t
    assert c.request("GET", "/api/v3/account", {"recvWindow": 5000}, True)[0] == 200
    status, body, _ = c.request("GET", "/api/v3/account", {"recvWindow": 2000}, True)
    assert (status, body["code"]) == (400, -1021), body
    assert c.request("GET", "/api/v3/account", {"recvWindow": 2000}, True, ts_offset_ms=3000)[0] == 200
    status, body, _ = c.request("GET", "/api/v3/account", {}, True, ts_offset_ms=4500)  # 1.5 s ahead of it
    assert (status, body["code"]) == (400, -1021), body
    status, body, _ = c.request("POST", "/sim/fault", {"kind": "clock_offset", "seconds": "soon"})
    assert status == 400 and "not a number" in body["msg"]
    assert c.request("GET", "/sim/stats")[1]["clock_offset_ms"] == 3000


def test_commission_rates_and_fees_paid_in_bnb():
    """GET /api/v3/account/commission (rest-api.md "Query Commission Rates") gives the account's
    rates; an account paying in BNB pays commission / BNB price in BNB (faqs/commission_faq.md,
    here without a discount) while its BNB lasts, then in the quote asset as before."""
    from bot4d.sim.binance_server import KNOWN_SYMBOLS
    v = BinanceVenue([KNOWN_SYMBOLS["BTCUSDT"], KNOWN_SYMBOLS["BNBUSDT"]])
    with pytest.raises(ValueError, match="no DOGE<quote> symbol"):
        v.add_account("x" * 64, "y" * 64, {}, fee_asset="DOGE")
    a = v.add_account(KEY, SECRET, {"USDT": "100000", "BNB": "0.00015"}, fee_asset="BNB")
    v.set_fees(a.index, "0.001", "0.001")
    with ServerThread(SimServer(v)) as st:
        c = Client(st.server.rest_port)
        status, r, _ = c.request("GET", "/api/v3/account/commission", {"symbol": "BTCUSDT"}, True)
        assert status == 200 and r["symbol"] == "BTCUSDT", r
        assert r["standardCommission"] == {"maker": "0.00100000", "taker": "0.00100000",
                                           "buyer": "0.00000000", "seller": "0.00000000"}
        assert r["discount"]["enabledForAccount"] is True and r["discount"]["discountAsset"] == "BNB"
        _agent(st, 1, 0, 59_900, 1000, 1 << 41)   # BNBUSDT bid 599.00, ask 601.00: mid 600.00
        _agent(st, 1, 1, 60_100, 1000, (1 << 41) + 1)
        _agent(st, 0, 1, 6_000_000, 400, (1 << 41) + 2)   # BTCUSDT ask 60000.00, 0.004
        buy = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.00100",
               "price": "60000.00"}
        status, r, _ = c.request("POST", "/api/v3/order", buy, True)
        # 60 USDT * 0.001 = 0.06 USDT = 0.0001 BNB at 600
        assert status == 200 and r["fills"][0]["commission"] == "0.00010000" and r["fills"][0]["commissionAsset"] == "BNB", r
        _, acc, _ = c.request("GET", "/api/v3/account", {}, True)
        bal = {b["asset"]: Decimal(b["free"]) for b in acc["balances"]}
        assert bal["USDT"] == Decimal("100000") - Decimal("60") and bal["BNB"] == Decimal("0.00005")
        _, trades, _ = c.request("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}, True)
        assert [(t["commission"], t["commissionAsset"]) for t in trades] == [("0.00010000", "BNB")]
        status, r, _ = c.request("POST", "/api/v3/order", buy, True)   # 0.00005 BNB left: the quote pays
        assert r["fills"][0]["commission"] == "0.06000000" and r["fills"][0]["commissionAsset"] == "USDT", r


def test_filters_are_advertised_and_enforced_with_binances_messages():
    """filters.md: PRICE_FILTER maxPrice, NOTIONAL maxNotional, PERCENT_PRICE_BY_SIDE around the
    last price (avgPriceMins 0), MAX_NUM_ORDERS; errors.md "Filter failures" messages with -1013.
    /sim/stats counts requests per symbol and failures per message."""
    from dataclasses import replace
    from bot4d.sim.binance_server import KNOWN_SYMBOLS
    spec = replace(KNOWN_SYMBOLS["BTCUSDT"], max_num_orders=2, max_notional=Decimal("1000"))
    v = BinanceVenue([spec])
    v.add_account(KEY, SECRET, {"USDT": "100000", "BTC": "2"})
    with ServerThread(SimServer(v)) as st:
        c = Client(st.server.rest_port)
        _, info, _ = c.request("GET", "/api/v3/exchangeInfo")
        flt = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
        assert flt["MAX_NUM_ORDERS"] == {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 2}
        assert flt["NOTIONAL"]["maxNotional"] == "1000.00000000" and flt["PRICE_FILTER"]["maxPrice"] == "1000000.00000000"
        assert flt["PERCENT_PRICE_BY_SIDE"]["bidMultiplierDown"] == "0.2" and flt["PERCENT_PRICE_BY_SIDE"]["avgPriceMins"] == 0

        def place(side, price, qty="0.00100"):
            return c.request("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": side, "type": "LIMIT",
                                                       "timeInForce": "GTC", "quantity": qty, "price": price}, True)[:2]
        assert place("SELL", "1000000.01") == (400, {"code": -1013, "msg": "Filter failure: PRICE_FILTER"})
        assert place("BUY", "60000.00", "0.02000") == (400, {"code": -1013, "msg": "Filter failure: NOTIONAL"})
        assert place("BUY", "10.00", "0.00100")[1]["msg"] == "Filter failure: NOTIONAL"   # 0.01 < minNotional 5
        _agent(st, 0, 1, 6_000_000, 100, 1 << 41)   # a trade at 60000.00 sets the last price
        assert place("BUY", "60000.00")[0] == 200
        assert place("BUY", "11999.99") == (400, {"code": -1013, "msg": "Filter failure: PERCENT_PRICE_BY_SIDE"})
        assert place("BUY", "12000.00")[0] == 200
        assert place("SELL", "300000.00")[0] == 200   # 5x the last price: the ask's limit, inclusive
        assert place("SELL", "299000.00") == (400, {"code": -1013, "msg": "Filter failure: MAX_NUM_ORDERS"})
        stats = c.request("GET", "/sim/stats")[1]
        assert stats["order_requests"] == {"BTCUSDT": 8}
        assert stats["filter_failures"] == {"Filter failure: PRICE_FILTER": 1, "Filter failure: NOTIONAL": 2,
                                            "Filter failure: PERCENT_PRICE_BY_SIDE": 1,
                                            "Filter failure: MAX_NUM_ORDERS": 1}


@pytest.mark.parametrize("mode,taker_status,maker_status", [
    ("EXPIRE_TAKER", "EXPIRED_IN_MATCH", "NEW"),
    ("EXPIRE_MAKER", "NEW", "EXPIRED_IN_MATCH"),
    ("EXPIRE_BOTH", "EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH"),
])
def test_stp_mode_is_honoured_and_recorded(sim, mode, taker_status, maker_status):
    """enums.md STP Modes / faqs/stp_faq.md: an order that would trade with the same account's
    resting order expires the taker, the maker or both (EXPIRED_IN_MATCH); each order shows the
    mode it was placed with, and /sim/stats counts accepted orders per mode."""
    st, c, _ = sim
    base = {"symbol": "BTCUSDT", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.00100", "price": "60000.00"}
    status, maker, _ = c.request("POST", "/api/v3/order", {**base, "side": "SELL", "selfTradePreventionMode": mode}, True)
    assert status == 200, maker
    status, taker, _ = c.request("POST", "/api/v3/order", {**base, "side": "BUY", "selfTradePreventionMode": mode,
                                                         "newOrderRespType": "RESULT"}, True)
    assert status == 200 and taker["status"] == taker_status and taker["executedQty"] == "0.00000000", taker
    assert taker["selfTradePreventionMode"] == mode
    _, q, _ = c.request("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": maker["orderId"]}, True)
    assert q["status"] == maker_status and q["selfTradePreventionMode"] == mode, q
    assert c.request("GET", "/sim/stats")[1]["stp_modes"] == {mode: 2}
