"""Maker/taker fees by volume tier, with rebates, exact in fixed point.

Rates are in 1e-8 units (``RATE_SCALE``): 0.1 % = 100_000; a negative maker rate is a rebate.
A fill's fee is ``ceil(notional * rate / 1e8)`` in notional units: a positive fee is rounded up
and a rebate rounded toward zero, so rounding never favours us against the venue's statement
(the same convention as the simulator's matching kernel). The product is computed with a 128-bit
intermediate, so no notional that fits int64 overflows in the fee computation.

Tiers (``FeeSchedule``): ``tier_volume[k]`` is the trailing notional volume an account needs for
tier k (ascending, ``tier_volume[0] == 0``); ``maker[k]``/``taker[k]`` are its rates. The account's
tier is the highest k with ``volume[acct] >= tier_volume[k]``. ``volume[acct]`` is kept by
``charge`` (it adds each fill's notional); a rolling 30-day window is the caller's job: it resets
or sets ``volume`` from the venue's statement at the window boundary, since the kernel has no
calendar.
"""
from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import numpy as np

from bot4d.fixedpoint import to_fixed
from bot4d.jitcache import kernel
from bot4d.kernels.oms_arith import add_ok, mul_div_ceil_nonneg_div, mul_ok

RATE_SCALE = 100_000_000
RATE_DECIMALS = 8


class FeeSchedule(NamedTuple):
    tier_volume: np.ndarray   # int64 [tiers]
    maker: np.ndarray         # int64 [tiers], 1e-8 units
    taker: np.ndarray         # int64 [tiers], 1e-8 units
    volume: np.ndarray        # int64 [accounts], trailing notional volume


def make_fees(n_accounts: int, tiers: list[tuple[int, str | Decimal, str | Decimal]]) -> FeeSchedule:
    """``tiers`` = [(min_volume_notional_units, maker_rate, taker_rate), ...], rates as decimal
    fractions ("0.001" = 0.1 %). Raises ValueError if the tiers are not usable."""
    if not tiers:
        raise ValueError("at least one fee tier is required")
    vols = [int(v) for v, _, _ in tiers]
    if vols[0] != 0:
        raise ValueError("the first tier must start at volume 0")
    if any(b <= a for a, b in zip(vols, vols[1:])):
        raise ValueError("tier volumes must be strictly ascending")
    maker = [to_fixed(m, RATE_DECIMALS) for _, m, _ in tiers]
    taker = [to_fixed(t, RATE_DECIMALS) for _, _, t in tiers]
    for m, t in zip(maker, taker):
        if not -RATE_SCALE < m < RATE_SCALE or not 0 <= t < RATE_SCALE:
            raise ValueError("rates must be within (-100 %, 100 %) and taker >= 0")
    return FeeSchedule(np.array(vols, np.int64), np.array(maker, np.int64),
                       np.array(taker, np.int64), np.zeros(n_accounts, np.int64))


def set_rates(fs: FeeSchedule, maker: str | Decimal, taker: str | Decimal) -> None:
    """One tier at ``maker``/``taker`` (decimal fractions) for every account: the venue's own
    current rates, which already reflect the account's volume tier. Raises ValueError (nothing
    changed) for rates outside (-100 %, 100 %) or a negative taker rate."""
    m, t = to_fixed(maker, RATE_DECIMALS), to_fixed(taker, RATE_DECIMALS)
    if not -RATE_SCALE < m < RATE_SCALE or not 0 <= t < RATE_SCALE:
        raise ValueError(f"fee rates maker {maker} / taker {taker} out of range")
    fs.tier_volume[:] = 0
    fs.maker[:] = m
    fs.taker[:] = t


def rates_from_binance(c: dict) -> tuple[Decimal, Decimal]:
    """(maker, taker) rate of one fill from Binance's ``GET /api/v3/account/commission`` answer.

    Per Binance's commission FAQ (faqs/commission_faq.md) a trade pays, on the amount received,
    ``maker or taker + buyer or seller`` of each of ``standardCommission``, ``taxCommission`` and
    ``specialCommission``; since the side is not known here, the larger of buyer/seller is taken,
    so the model never charges less than the venue. The BNB ``discount`` is left out for the same
    reason (it applies only while BNB pays). Raises ValueError for a malformed answer.
    """
    maker = taker = Decimal(0)
    for part in ("standardCommission", "taxCommission", "specialCommission"):
        r = c.get(part)
        if r is None:
            continue
        try:
            side = max(Decimal(r.get("buyer", "0")), Decimal(r.get("seller", "0")))
            maker += Decimal(r["maker"]) + side
            taker += Decimal(r["taker"]) + side
        except (KeyError, TypeError, AttributeError, ArithmeticError) as e:
            raise ValueError(f"commission {part} malformed ({e!r})") from None
    if "standardCommission" not in c:
        raise ValueError("commission answer has no standardCommission")
    return maker, taker


@kernel(_nrt=False)
def tier_of(fs, acct: int) -> int:
    v = fs.volume[acct]
    k = 0
    for i in range(fs.tier_volume.shape[0]):
        if v >= fs.tier_volume[i]:
            k = i
    return k


@kernel(_nrt=False)
def fee_for(notional: int, rate: int) -> tuple[int, bool]:
    """ceil(notional * rate / 1e8) for notional >= 0."""
    if notional < 0:
        return 0, False
    return mul_div_ceil_nonneg_div(notional, rate, RATE_SCALE)


@kernel(_nrt=False)
def quote(fs, acct: int, px: int, qty: int, maker: bool) -> tuple[int, bool]:
    """Fee of one fill at the account's current tier, without recording its volume."""
    notional, ok = mul_ok(px, qty)
    if not ok or notional < 0:
        return 0, False
    k = tier_of(fs, acct)
    return fee_for(notional, fs.maker[k] if maker else fs.taker[k])


@kernel(_nrt=False)
def add_volume(fs, acct: int, px: int, qty: int) -> None:
    """Record a fill's notional in the account's trailing volume (saturating at int64 max: the
    top tier is reached long before)."""
    notional, ok = mul_ok(px, qty)
    vol = 0
    if ok:
        vol, ok = add_ok(fs.volume[acct], notional)
    fs.volume[acct] = vol if ok else 9223372036854775807


@kernel(_nrt=False)
def charge(fs, acct: int, px: int, qty: int, maker: bool) -> tuple[int, bool]:
    """``quote`` then ``add_volume``: the tier is the one before this fill. On overflow nothing
    changes and ok is False."""
    fee, ok = quote(fs, acct, px, qty, maker)
    if not ok:
        return 0, False
    add_volume(fs, acct, px, qty)
    return fee, True


def warmup() -> None:
    fs = make_fees(1, [(0, "0.001", "0.001")])
    charge(fs, 0, 100, 3, True)
    fee_for(100, 5)
