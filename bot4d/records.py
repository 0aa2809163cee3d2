"""Fixed-size record layouts that cross thread and process boundaries.

These dtypes are the one definition of what travels through the ingress rings (normalised
market data), the egress rings (order commands) and the journal rings (every event that the
audit trail keeps). Kernels, venues, the sidecar and the monitors all take them from here.
Prices and quantities are int64 fixed-point in the instrument's own scales.
"""
from __future__ import annotations

import numpy as np

# --- market data: one price level change, a trade, or a book control marker -----------------
MD_LEVEL = 1      # set level (side, price) to qty; qty == 0 deletes the level
MD_TRADE = 2      # a public trade: price, qty, side of the aggressor
MD_CLEAR = 3      # clear the instrument's book (precedes a snapshot)
MD_SNAPSHOT_END = 4  # the snapshot that followed MD_CLEAR is complete: book may go LIVE
MD_BBO = 5        # best bid/ask from a ticker stream (price=bid, qty=bid qty, aux_px/aux_qty=ask)

SIDE_BID = 0
SIDE_ASK = 1

MD_UPDATE_DTYPE = np.dtype(
    [
        ("seq", np.int64),        # ring sequence (stamped by journals; 0 in queues)
        ("kind", np.int8),        # MD_*
        ("side", np.int8),        # SIDE_BID / SIDE_ASK
        ("flags", np.int16),      # bit 0: last record of a venue frame
        ("instrument", np.int32), # instrument id (see bot4d.instruments)
        ("price", np.int64),      # price units
        ("qty", np.int64),        # quantity units
        ("venue_seq", np.int64),  # the venue's own update id / sequence
        ("exch_ts_ns", np.int64), # exchange event time, ns since epoch (0 if unknown)
        ("recv_ts_ns", np.int64), # local receive time of the frame, ns (CLOCK_REALTIME)
        ("aux_px", np.int64),
        ("aux_qty", np.int64),
    ],
    align=True,
)
assert MD_UPDATE_DTYPE.itemsize == 72, MD_UPDATE_DTYPE.itemsize
MD_FLAG_FRAME_END = 1

# --- journal: every event of the trading core, in order, per shard ---------------------------
EV_ORDER_NEW = 1
EV_ORDER_STATE = 2
EV_FILL = 3
EV_RISK_REJECT = 4
EV_KILL_SWITCH = 5
EV_BREAKER = 6
EV_POSITION = 7
EV_BALANCE = 8
EV_CONTROL = 9    # a mutating bot4ctl command: uid/pid in aux fields
EV_TRADING_STATE = 10

# EV_ORDER_NEW: aux0 flags (bit 0 below; the intent's INTENT_FLAG_* from bit 8), aux1 take-profit
# price, aux2 OCO group, stop_price the protective stop-loss. EV_ORDER_STATE: state the new state
# (R_ILLEGAL: the unchanged current one), aux0 venue order id (0 unknown), aux1 the state before,
# aux2 the target asked for, aux3 detail (venue error code; trigger mark for R_TRIGGERED), aux4 the
# report kind / command a refusal answers. EV_FILL: aux0 1 maker / 2 taker, aux1 venue trade id
# (0 unknown), aux2 venue order id, aux3 bit 0 recovered by reconciliation, aux4 the boot of the
# order's run as int(boot, 36) (0: the ring's). Money fields (fee, P&L) are notional units: price
# units x qty units. bot4d.persist.decode documents every kind.
JFLAG_OPENS_POSITION = 1
JFLAG_INTENT_SHIFT = 8

JOURNAL_EVENT_DTYPE = np.dtype(
    [
        ("seq", np.int64),          # journal sequence, stamped by the ring: gap-free per shard
        ("ts_ns", np.int64),        # event time (injected clock), ns since epoch
        ("kind", np.int16),         # EV_*
        ("shard", np.int16),
        ("instrument", np.int32),
        ("order_id", np.int64),     # shard-local order id
        ("client_order_id", np.int64),
        ("side", np.int8),
        ("order_type", np.int8),
        ("tif", np.int8),
        ("state", np.int8),         # order state / breaker state / trading state
        ("reason", np.int32),       # reject reason, trip reason, breaker reason, error code
        ("price", np.int64),
        ("qty", np.int64),
        ("filled_qty", np.int64),
        ("fee", np.int64),
        ("stop_price", np.int64),
        ("aux0", np.int64),
        ("aux1", np.int64),
        ("aux2", np.int64),
        ("aux3", np.int64),
        ("aux4", np.int64),
    ],
    align=True,
)
assert JOURNAL_EVENT_DTYPE.itemsize == 128, JOURNAL_EVENT_DTYPE.itemsize

# --- order intents: what a strategy (or bot4ctl) asks the trading core to do ------------------
CMD_PLACE = 1
CMD_CANCEL = 2
CMD_REPLACE = 3

ORDER_INTENT_DTYPE = np.dtype(
    [
        ("client_order_id", np.int64),
        ("ts_ns", np.int64),           # when the intent was made (injected clock)
        ("command", np.int8),          # CMD_*
        ("side", np.int8),             # SIDE_BID = buy, SIDE_ASK = sell
        ("order_type", np.int8),       # see bot4d.kernels.oms
        ("tif", np.int8),
        ("instrument", np.int32),
        ("price", np.int64),           # limit price units (0 for market)
        ("qty", np.int64),             # quantity units
        ("stop_price", np.int64),      # protective stop-loss price for opening orders (0: none)
        ("take_profit_price", np.int64),
        ("target_order_id", np.int64), # for cancel/replace
        ("batch_id", np.int64),        # intents sharing a batch_id are decided together
        ("oco_group", np.int64),       # 0: none
        ("strategy", np.int32),
        ("flags", np.int32),           # INTENT_FLAG_*
        ("replace_order_id", np.int64), # CMD_PLACE: our live order the venue cancels atomically
                                        # as it places this one (Binance cancelReplace); 0: none
    ],
    align=True,
)
INTENT_FLAG_REDUCE_ONLY = 1
INTENT_FLAG_POST_ONLY = 2
INTENT_FLAG_WANTS_SIZING = 4   # risk sizes the order (Kelly, capped) instead of taking qty as is
INTENT_FLAG_PROTECTIVE = 8     # a protective stop (bot4d.kernels.protect) or its market exit: kept
                               # out of the open-order aggregates risk limits read (it only closes)

# --- egress: what a shard sends to a venue's order gateway ------------------------------------
# One record per venue request the OMS produced (its outbox), with the latency anchor: the
# receive time of the market-data frame whose batch caused it, so the gateway records
# tick-to-order at the moment the request is written to the socket.
ORDER_COMMAND_DTYPE = np.dtype(
    [
        ("ts_ns", np.int64),           # when the shard made the command (CLOCK_REALTIME ns)
        ("tick_recv_ns", np.int64),    # recv time of the causing frame (0: not caused by a tick)
        ("order_id", np.int64),        # our shard-local order id (the venue's client order id
                                       # is derived from it); for cancels the order to cancel
        ("client_order_id", np.int64), # the strategy's id (informational)
        ("price", np.int64),           # limit price units (0 for market)
        ("qty", np.int64),             # quantity units
        ("command", np.int8),          # CMD_PLACE / CMD_CANCEL / CMD_REPLACE
        ("side", np.int8),
        ("order_type", np.int8),       # bot4d.kernels.oms_state OT_LIMIT / OT_MARKET
        ("tif", np.int8),              # TIF_GTC / IOC / FOK / POST_ONLY
        ("instrument", np.int32),
        ("shard", np.int32),
        ("stop_price", np.int64),      # venue-native stop orders (OT_STOP_LIMIT): the trigger
        ("replace_order_id", np.int64),# CMD_PLACE: our order the venue cancels in the same
                                       # request (cancel-replace); 0: a plain place
        ("tp_price", np.int64),        # CMD_PLACE of an OT_STOP_LIMIT: > 0 makes it one venue OCO
                                       # with a take-profit leg (LIMIT_MAKER at this price, same
                                       # side and qty; Binance POST /api/v3/orderList/oco); 0: none
        ("tp_order_id", np.int64),     # that take-profit leg's own shard-local order id
    ],
    align=True,
)
assert ORDER_COMMAND_DTYPE.itemsize == 96, ORDER_COMMAND_DTYPE.itemsize
