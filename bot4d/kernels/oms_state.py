"""Order-management state: the arrays the OMS kernels own and pre-trade risk reads.

Everything is preallocated by ``make_oms``; kernels mutate the arrays in place, never allocate.
One ``OmsState`` belongs to one shard. Risk (``bot4d.kernels.risk``) reads, as plain arrays:

* ``positions.qty[account, instrument]``     int64  signed position, quantity units
* ``positions.avg_px[account, instrument]``  int64  average entry price, price units
* ``positions.realised[account, instrument]`` int64 realised P&L, notional units (gross of fees)
* ``positions.fees[account, instrument]``    int64  fees paid, notional units
* ``positions.balance[account]``             int64  quote cash, notional units
* ``open_orders[account, instrument]``       int64  live (non-terminal) orders
* ``open_buy_qty / open_sell_qty[account, instrument]`` int64 remaining qty of live orders

Risk's ``check_batch`` takes per-instrument 1-D rows: pass ``positions.qty[acct]``,
``open_orders[acct]``, ``open_buy_qty[acct]``, ``open_sell_qty[acct]`` (views, no copy).
(layout of ``positions`` and its rounding rules: ``bot4d.kernels.positions``).

The OMS also owns, per shard: ``filters`` (``bot4d.kernels.filters.FilterTable``), ``fees``
(``bot4d.kernels.fees.FeeSchedule``) and ``idem`` (``bot4d.kernels.idempotency.IdemTable``).
Live orders of one (account, instrument) are chained through ``o_next``/``o_prev_link`` from
``list_head[account, instrument]`` so self-trade checks and stop triggers touch only them.
``stp_mode[account, instrument]`` is the self-trade policy of an account's orders on an instrument
(``bot4d.kernels.stp``; the daemon sets each instrument's from its ``stp`` key, the mode it also
asks of the venue),
``strat_acct[strategy]`` maps an intent's strategy to its account, ``policy[P_*]`` holds
shard policies (batch all-or-none).

Orders live in slots ``0 .. capacity-1`` (``capacity`` a power of two). The shard-local order id
is ``serial << slot_bits | slot`` with a per-shard serial that only grows, so a lookup is a mask
and a compare (``o_id[slot] == order_id``) and a stale id for a reused slot is refused. A slot
is freed when its order reaches a terminal state.

Per-slot arrays (``o_*``, shape ``[capacity]``): ``o_id`` int64 (0 = free), ``o_coid`` int64 client
order id, ``o_acct`` int32, ``o_inst`` int32, ``o_side`` int8 (SIDE_BID buy / SIDE_ASK sell),
``o_type`` int8 (OT_*), ``o_tif`` int8 (TIF_*), ``o_state`` int8 (S_*), ``o_prev`` int8 (state to
return to when a cancel is rejected), ``o_px`` int64 limit price, ``o_qty`` int64, ``o_filled``
int64, ``o_trigger`` int64 stop/take-profit trigger price, ``o_peer`` int32 OCO partner slot
(-1 none), ``o_ts`` int64 creation ns, ``o_new_px``/``o_new_qty`` int64 pending replace (0 none),
``o_stp`` int8 (STP_* policy), ``o_strategy`` int32, ``o_oco_id`` int64 the OCO partner's order id
(kept after the live link ``o_peer`` is broken, so a late fill can still take the partner out),
``o_venue_id`` int64 the venue's order id once a report named it (0 unknown), ``o_stop`` int64 the
protective stop price an opening order asked for (what ``bot4d.kernels.protect`` rests at the
venue once it fills; 0 none), ``o_prot`` int8 1 for a protective order (INTENT_FLAG_PROTECTIVE): it
is left out of ``open_orders`` / ``open_*_qty``, since it can only close the position it covers
and must not make a strategy's closing order look like an opening one or use up its order count.
``o_tp`` int64 the take-profit price an opening order asked for (``take_profit_price``, kept like
``o_stop``); ``tp_fill[account, instrument]`` int64 the take-profit of the last opening fill that
named a stop (0 none): what ``bot4d.kernels.protect`` rests beside the stop as one venue OCO.

Scalars live in 1-element arrays so kernels can update them: ``seq`` (next journal sequence,
starts at 1, gap-free per shard), ``serial``, ``nfree``; ``free`` is the free-slot stack.
``counters[C_*]`` counts refusals (illegal transitions, duplicates, overfills, ...).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot4d.kernels.fees import FeeSchedule, make_fees
from bot4d.kernels.filters import FilterTable, make_filters
from bot4d.kernels.idempotency import IdemTable, make_idem
from bot4d.kernels.positions import PositionBook, make_positions
from bot4d.kernels.stp import STP_CANCEL_NEW

# --- order states (journal ``state`` field) ----------------------------------------------------
S_NEW = 0
S_VALIDATED = 1        # accepted locally; a stop/take-profit waits here for its trigger
S_SUBMITTED = 2        # handed to the venue, no answer yet
S_ACKED = 3
S_PARTIALLY_FILLED = 4
S_FILLED = 5
S_CANCEL_PENDING = 6
S_CANCELLED = 7
S_REJECTED = 8
S_EXPIRED = 9
N_STATES = 10
STATE_NAMES = ("NEW", "VALIDATED", "SUBMITTED", "ACKED", "PARTIALLY_FILLED", "FILLED",
               "CANCEL_PENDING", "CANCELLED", "REJECTED", "EXPIRED")


def _legal() -> np.ndarray:
    t = np.zeros((N_STATES, N_STATES), np.bool_)
    allow = {
        S_NEW: (S_VALIDATED, S_REJECTED),
        S_VALIDATED: (S_SUBMITTED, S_REJECTED, S_CANCELLED, S_EXPIRED),
        # a fill may overtake the ack; a venue may cancel/expire (IOC) without a request
        S_SUBMITTED: (S_ACKED, S_REJECTED, S_PARTIALLY_FILLED, S_FILLED, S_CANCEL_PENDING,
                      S_CANCELLED, S_EXPIRED),
        S_ACKED: (S_PARTIALLY_FILLED, S_FILLED, S_CANCEL_PENDING, S_CANCELLED, S_EXPIRED),
        S_PARTIALLY_FILLED: (S_PARTIALLY_FILLED, S_FILLED, S_CANCEL_PENDING, S_CANCELLED,
                             S_EXPIRED),
        # fills race a cancel (stay pending); a rejected cancel returns to o_prev
        S_CANCEL_PENDING: (S_CANCEL_PENDING, S_FILLED, S_CANCELLED, S_EXPIRED, S_SUBMITTED,
                           S_ACKED, S_PARTIALLY_FILLED),
    }
    for a, bs in allow.items():
        for b in bs:
            t[a, b] = True
    return t


LEGAL = _legal()   # LEGAL[from, to]; terminal states (FILLED, CANCELLED, REJECTED, EXPIRED) have no exit
TERMINAL = np.zeros(N_STATES, np.bool_)
TERMINAL[[S_FILLED, S_CANCELLED, S_REJECTED, S_EXPIRED]] = True

# --- order types and time in force (ORDER_INTENT_DTYPE.order_type / .tif) ---------------------
OT_LIMIT = 1
OT_MARKET = 2
OT_STOP_LOSS = 3       # market order sent when the mark crosses o_trigger against the position
OT_TAKE_PROFIT = 4     # market order sent when the mark crosses o_trigger in favour
OT_STOP_LIMIT = 5      # venue-native stop-loss-limit (Binance STOP_LOSS_LIMIT): rests at the venue
                       # from the start with trigger o_trigger and limit o_px; the protective stops

TIF_GTC = 1
TIF_IOC = 2
TIF_FOK = 3
TIF_POST_ONLY = 4      # GTC that the venue must reject rather than let take (Binance LIMIT_MAKER)

# --- counters -----------------------------------------------------------------------------------
C_ILLEGAL_TRANSITION = 0
C_UNKNOWN_ORDER = 1
C_OVERFILL = 2
C_DUPLICATE_COID = 3
C_FILTER_REJECT = 4
C_RISK_REJECT = 5
C_OVERFLOW = 6
C_STP = 7
C_BAD_INPUT = 8
C_IDEM_EVICTED_LIVE = 9
C_NO_SLOT = 10
C_OCO_CANCELLED = 11
C_TRIGGERED = 12
C_JOURNAL_FULL = 13
N_COUNTERS = 16

P_BATCH_ALL_OR_NONE = 0
N_POLICY = 4
MAX_STRATEGIES = 256


class OmsState(NamedTuple):
    o_id: np.ndarray
    o_coid: np.ndarray
    o_acct: np.ndarray
    o_inst: np.ndarray
    o_side: np.ndarray
    o_type: np.ndarray
    o_tif: np.ndarray
    o_state: np.ndarray
    o_prev: np.ndarray
    o_px: np.ndarray
    o_qty: np.ndarray
    o_filled: np.ndarray
    o_trigger: np.ndarray
    o_peer: np.ndarray
    o_ts: np.ndarray
    o_new_px: np.ndarray
    o_new_qty: np.ndarray
    o_stp: np.ndarray
    o_strategy: np.ndarray
    free: np.ndarray
    nfree: np.ndarray
    serial: np.ndarray
    seq: np.ndarray
    slot_bits: np.ndarray
    shard: np.ndarray
    open_orders: np.ndarray
    open_buy_qty: np.ndarray
    open_sell_qty: np.ndarray
    legal: np.ndarray
    counters: np.ndarray
    positions: PositionBook
    o_next: np.ndarray
    o_prev_link: np.ndarray
    list_head: np.ndarray
    stp_mode: np.ndarray
    strat_acct: np.ndarray
    policy: np.ndarray
    filters: FilterTable
    fees: FeeSchedule
    idem: IdemTable
    o_oco_id: np.ndarray
    o_venue_id: np.ndarray
    o_stop: np.ndarray
    o_prot: np.ndarray
    o_tp: np.ndarray
    tp_fill: np.ndarray


def make_oms(n_accounts: int, n_instruments: int, capacity: int = 1 << 14, shard: int = 0,
             *, idem_capacity: int = 1 << 16, idem_window_ns: int = 60_000_000_000,
             idem_tick_ns: int = 100_000_000, idem_strict: bool = False,
             fee_tiers: list | None = None, batch_all_or_none: bool = True) -> OmsState:
    """Preallocate one shard's order table (``capacity`` rounded up to a power of two).

    Filters start disabled (load them with ``filters.set_from_binance`` or set the arrays);
    fees default to one zero-rate tier; the STP policy of every (account, instrument) is cancel-new.
    """
    if n_accounts < 1 or n_instruments < 1 or capacity < 2:
        raise ValueError("need >= 1 account, >= 1 instrument, capacity >= 2")
    bits = 1
    while (1 << bits) < capacity:
        bits += 1
    cap = 1 << bits
    if bits > 40:
        raise ValueError("capacity too large")
    a, n = n_accounts, n_instruments
    pol = np.zeros(N_POLICY, np.int64)
    pol[P_BATCH_ALL_OR_NONE] = 1 if batch_all_or_none else 0
    return OmsState(
        o_id=np.zeros(cap, np.int64), o_coid=np.zeros(cap, np.int64),
        o_acct=np.zeros(cap, np.int32), o_inst=np.zeros(cap, np.int32),
        o_side=np.zeros(cap, np.int8), o_type=np.zeros(cap, np.int8),
        o_tif=np.zeros(cap, np.int8), o_state=np.zeros(cap, np.int8),
        o_prev=np.zeros(cap, np.int8), o_px=np.zeros(cap, np.int64),
        o_qty=np.zeros(cap, np.int64), o_filled=np.zeros(cap, np.int64),
        o_trigger=np.zeros(cap, np.int64), o_peer=np.full(cap, -1, np.int32),
        o_ts=np.zeros(cap, np.int64), o_new_px=np.zeros(cap, np.int64),
        o_new_qty=np.zeros(cap, np.int64), o_stp=np.zeros(cap, np.int8),
        o_strategy=np.zeros(cap, np.int32),
        free=np.arange(cap - 1, -1, -1, dtype=np.int64), nfree=np.array([cap], np.int64),
        serial=np.array([1], np.int64), seq=np.array([1], np.int64),
        slot_bits=np.array([bits], np.int64), shard=np.array([shard], np.int64),
        open_orders=np.zeros((a, n), np.int64),
        open_buy_qty=np.zeros((a, n), np.int64), open_sell_qty=np.zeros((a, n), np.int64),
        legal=LEGAL.copy(), counters=np.zeros(N_COUNTERS, np.int64),
        positions=make_positions(a, n),
        o_next=np.full(cap, -1, np.int32), o_prev_link=np.full(cap, -1, np.int32),
        list_head=np.full((a, n), -1, np.int32),
        stp_mode=np.full((a, n), STP_CANCEL_NEW, np.int8),
        strat_acct=np.zeros(MAX_STRATEGIES, np.int32),
        policy=pol,
        filters=make_filters(n),
        fees=make_fees(a, fee_tiers if fee_tiers is not None else [(0, "0", "0")]),
        idem=make_idem(idem_capacity, idem_window_ns, idem_tick_ns, strict=idem_strict),
        o_oco_id=np.zeros(cap, np.int64), o_venue_id=np.zeros(cap, np.int64),
        o_stop=np.zeros(cap, np.int64), o_prot=np.zeros(cap, np.int8),
        o_tp=np.zeros(cap, np.int64), tp_fill=np.zeros((a, n), np.int64),
    )
