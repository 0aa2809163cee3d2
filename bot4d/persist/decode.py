"""Journal events -> table rows: what each field of ``JOURNAL_EVENT_DTYPE`` means per kind.

Every journaled event lands in exactly one table (the ``journal_rows`` view unions them by
``(shard, seq)``). Field use per kind, the contract the trading core writes against:

==================  =============  ==========================================================
kind                table          fields beyond seq/ts/shard
==================  =============  ==========================================================
EV_ORDER_NEW        orders         instrument, order_id, client_order_id, side, order_type,
                                   tif, state, price, qty, stop_price; aux0 = flags
                                   (bit 0 JFLAG_OPENS_POSITION, bits 8.. the intent's
                                   INTENT_FLAG_* shifted by 8), aux1 = take-profit price units,
                                   aux2 = OCO group. boot = the ring's; venue_order_id is set
                                   when the first order event naming it is persisted
EV_ORDER_STATE      order_events   instrument, order_id, client_order_id, state (the new state;
                                   for reason R_ILLEGAL the unchanged current one), reason,
                                   price, qty (order qty), filled_qty (cumulative), aux0 = venue
                                   order id (0 unknown), aux1 = from_state (the state before),
                                   aux2 = to_state (the target asked for: equals state except
                                   for R_ILLEGAL), aux3 = detail (the venue's error code of a
                                   reject / cancel-reject / expiry; the trigger mark price for
                                   R_TRIGGERED), aux4 = cause (the venue report kind RP_* or the
                                   command CMD_* a refusal answers; 0 none). boot = the ring's
EV_FILL             fills          instrument, order_id, client_order_id, side, price, qty,
                                   fee (quote units, negative = rebate), aux0 = liquidity
                                   (1 maker, 2 taker, 0 unknown), aux1 = venue trade id,
                                   aux2 = venue order id (0 unknown), aux3 = flags (bit 0
                                   FILL_FLAG_RECOVERED: found by reconciliation, not on the
                                   venue's stream), aux4 = boot of the order's daemon run as
                                   int(boot, 36) (0: the ring's boot; another run's order for a
                                   fill recovered after a restart)
EV_POSITION         positions      instrument, qty (signed position), price (average entry),
                                   aux0 = realised P&L (quote units), fee = cumulative fees
EV_BALANCE          balances       aux0 = asset id, qty = total, filled_qty = locked (asset scale)
EV_RISK_REJECT,     risk_events    instrument (-1: none), order_id, client_order_id, side,
EV_KILL_SWITCH,                    state, reason, price, qty, aux0, aux1
EV_BREAKER,
EV_TRADING_STATE
EV_CONTROL          control_audit  reason = command code, aux0 = uid, aux1 = pid, instrument
                                   (-1: none), order_id, aux2/aux3 = arguments
==================  =============  ==========================================================

The boot of a journal ring is the daemon run that wrote it (``ipc.ring.Ring.boot_id``, six
base-36 characters); the writer is given it per batch and stores it as ``int(boot, 36)``
(``boot_int``), so that the database builds the client order id string the venue knows,
``b4<boot>-<shard>-<order_id>`` (``bot4d.gateway.binance``), for orders, order events and fills.
A venue order id of 0 (unknown) is stored as NULL.

``validate`` finds the first record that cannot be stored as it is (unknown kind, wrong shard,
a gap in the sequence, an unknown instrument or asset, impossible values): the writer persists the
records before it and stops there, so nothing after an undecodable record is skipped over.
The business rules (stop-loss on opening orders, position caps) are held by the database's own
constraints, a second wall behind the daemon's risk checks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot4d import records as R
from bot4d.kernels.oms_state import S_EXPIRED, S_NEW

from bot4d.records import JFLAG_OPENS_POSITION  # noqa: E402  (the shared contract lives there)
JFLAG_INTENT_SHIFT = 8
FILL_FLAG_RECOVERED = 1       # EV_FILL aux3 bit 0
FILL_FLAGS_KNOWN = FILL_FLAG_RECOVERED
CAUSE_MAX = 127               # order_events.cause is a smallint of RP_* / CMD_* codes
BOOT_DIGITS = 6               # a daemon boot id: six base-36 characters (bot4d.daemon.app)
BOOT_LIMIT = 36 ** BOOT_DIGITS
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

KNOWN_KINDS = np.array(
    [R.EV_ORDER_NEW, R.EV_ORDER_STATE, R.EV_FILL, R.EV_RISK_REJECT, R.EV_KILL_SWITCH,
     R.EV_BREAKER, R.EV_POSITION, R.EV_BALANCE, R.EV_CONTROL, R.EV_TRADING_STATE],
    dtype=np.int16,
)
RISK_KINDS = (R.EV_RISK_REJECT, R.EV_KILL_SWITCH, R.EV_BREAKER, R.EV_TRADING_STATE)

# plausible event times: 2000-01-01 .. 2200-01-01 (anything else is a corrupt or unset clock)
TS_MIN_NS = 946_684_800 * 10**9
TS_MAX_NS = 7_258_118_400 * 10**9


def boot_int(boot: str) -> int:
    """A daemon boot id (six characters of [0-9a-z]) as the integer the journal and the database
    carry: ``int(boot, 36)``. Anything else is refused (ValueError): the database turns the
    integer back into six zero-padded characters (SQL ``bot4d_boot_text``) to build client order
    ids, which is exact only for such boot ids."""
    if len(boot) != BOOT_DIGITS or any(ch not in _B36 for ch in boot):
        raise ValueError(f"boot id {boot!r} is not {BOOT_DIGITS} characters of [0-9a-z]")
    return int(boot, 36)


class DecodeError(ValueError):
    """A journal record cannot be stored; ``seq`` is the first record that was not written."""

    def __init__(self, shard: int, seq: int, reason: str) -> None:
        super().__init__(f"shard {shard}: journal record seq {seq} cannot be stored: {reason}")
        self.shard, self.seq, self.reason = shard, seq, reason


@dataclass
class RefData:
    """Scales by id, loaded from the instruments and assets tables (-1: unknown id)."""

    price_scale: np.ndarray  # int16 per instrument id
    qty_scale: np.ndarray
    quote_scale: np.ndarray
    asset_scale: np.ndarray

    @staticmethod
    def empty() -> "RefData":
        z = np.full(0, -1, np.int16)
        return RefData(z, z, z, z)

    def known_instrument(self, ids: np.ndarray) -> np.ndarray:
        ok = (ids >= 0) & (ids < len(self.price_scale))
        out = np.zeros(len(ids), dtype=bool)
        out[ok] = self.price_scale[ids[ok]] >= 0
        return out

    def known_asset(self, ids: np.ndarray) -> np.ndarray:
        ok = (ids >= 0) & (ids < len(self.asset_scale))
        out = np.zeros(len(ids), dtype=bool)
        out[ok] = self.asset_scale[ids[ok]] >= 0
        return out


def validate(ev: np.ndarray, shard: int, first_seq: int, ref: RefData) -> tuple[int, str]:
    """Index of the first record that cannot be stored and why; (len(ev), "") when all can.

    Checks are vectorised: a batch of 64 k records costs a few numpy passes, not a Python loop.
    """
    n = len(ev)
    if n == 0:
        return 0, ""
    bad = np.zeros(n, dtype=bool)
    why: list[tuple[np.ndarray, str]] = []

    def rule(mask: np.ndarray, text: str) -> None:
        nonlocal bad
        why.append((mask, text))
        bad |= mask

    kind = ev["kind"]
    rule(ev["seq"] != first_seq + np.arange(n, dtype=np.int64), "sequence gap or reordering")
    rule(ev["shard"] != shard, f"record is not from shard {shard}")
    rule(~np.isin(kind, KNOWN_KINDS), "unknown event kind")
    rule((ev["ts_ns"] < TS_MIN_NS) | (ev["ts_ns"] >= TS_MAX_NS), "event time outside 2000..2200")

    inst = ev["instrument"]
    needs_inst = np.isin(kind, (R.EV_ORDER_NEW, R.EV_ORDER_STATE, R.EV_FILL, R.EV_POSITION))
    may_inst = np.isin(kind, RISK_KINDS + (R.EV_CONTROL,))
    known = ref.known_instrument(inst)
    rule(needs_inst & ~known, "unknown instrument")
    rule(may_inst & (inst != -1) & ~known, "unknown instrument")

    side_bad = (ev["side"] != R.SIDE_BID) & (ev["side"] != R.SIDE_ASK)
    is_new, is_fill = kind == R.EV_ORDER_NEW, kind == R.EV_FILL
    rule(is_new & (side_bad | (ev["qty"] <= 0) | (ev["price"] < 0) | (ev["stop_price"] < 0) | (ev["aux1"] < 0)),
         "impossible order (side, quantity <= 0 or negative price)")
    is_state = kind == R.EV_ORDER_STATE
    rule(is_state & ((ev["qty"] < 0) | (ev["filled_qty"] < 0) | (ev["price"] < 0)),
         "impossible order state (negative quantity or price)")

    def not_state(v: np.ndarray) -> np.ndarray:
        return (v < S_NEW) | (v > S_EXPIRED)

    rule(is_state & (not_state(ev["state"]) | not_state(ev["aux1"]) | not_state(ev["aux2"])),
         "impossible order state (state, from-state or target is no order state)")
    rule(is_state & ((ev["aux0"] < 0) | (ev["aux4"] < 0) | (ev["aux4"] > CAUSE_MAX)),
         "impossible order state (negative venue order id, or a cause outside 0..127)")
    rule(is_fill & (side_bad | (ev["qty"] <= 0) | (ev["price"] <= 0) | (ev["aux0"] < 0) | (ev["aux0"] > 2)),
         "impossible fill (side, liquidity, price or quantity <= 0)")
    rule(is_fill & ((ev["aux1"] < 0) | (ev["aux2"] < 0) | ((ev["aux3"] & ~FILL_FLAGS_KNOWN) != 0)
                    | (ev["aux4"] < 0) | (ev["aux4"] >= BOOT_LIMIT)),
         "impossible fill (negative trade or venue order id, unknown flags, or a boot outside "
         "0..36**6)")
    rule((kind == R.EV_POSITION) & (ev["price"] < 0), "negative average entry price")
    is_bal = kind == R.EV_BALANCE
    rule(is_bal & (~ref.known_asset(ev["aux0"]) | (ev["filled_qty"] < 0)), "balance of an unknown asset or negative locked amount")
    rule((kind == R.EV_CONTROL) & ((ev["aux0"] < 0) | (ev["aux1"] <= 0)), "control audit without a valid uid/pid")

    if not bad.any():
        return n, ""
    i = int(np.argmax(bad))
    reasons = [text for mask, text in why if mask[i]]
    return i, "; ".join(reasons)


def _inst_scales(ref: RefData, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return ref.price_scale[inst], ref.qty_scale[inst], ref.quote_scale[inst]
