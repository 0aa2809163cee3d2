"""The venue's trading rules as the daemon applies them: exchange filters into each shard's OMS, the
STP mode every order carries, the account's commission rates in the fee model, and the marks that
value balances and convert fees paid in another asset.

Everything here runs on the io thread at start (and at reload for the filters); a rule that cannot
be applied is a ``RulesError`` naming the instrument, the symbol and the rule, which the daemon
turns into a refused start (or a refused reload: the rules in force stay).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

import numpy as np

from bot4d.config import Config, InstrumentConfig
from bot4d.fixedpoint import from_fixed
from bot4d.kernels import fees as feek
from bot4d.kernels import filters as filt
from bot4d.kernels import stp as stpk
from bot4d.kernels.oms_state import OmsState

VENUE = "binance"   # the STP vocabulary of every configured venue kind (config.VENUE_KINDS)


class RulesError(Exception):
    """A venue rule the daemon cannot apply; the message names what and where."""


def stp_mode(ic: InstrumentConfig) -> str | None:
    """The ``selfTradePreventionMode`` an instrument's orders carry (None: the venue's default)."""
    return stpk.venue_mode(VENUE, stpk.STP_POLICIES[ic.stp])


def check(cfg: Config, inst_cfg: list[InstrumentConfig], rules: dict[tuple[str, str], dict]) -> dict[str, str]:
    """Check every instrument against its venue's rules; returns each venue's account currency.

    * its STP mode must be one the symbol allows (``allowedSelfTradePreventionModes``);
    * its filters must load at its scales (``bot4d.kernels.filters.parse_binance``);
    * its quote asset must be the venue's account currency (``account_currency``, or the quote
      the venue's instruments share): equity adds quote balances and positions valued in the quote,
      so a second quote currency would be added at face value.
    """
    ccy: dict[str, str] = {}
    for vname, v in cfg.venues.items():
        quotes = sorted({rules[(vname, ic.symbol)]["quote"] for ic in inst_cfg if ic.venue == vname})
        if v.account_currency is not None:
            ccy[vname] = v.account_currency
        elif len(quotes) == 1:
            ccy[vname] = quotes[0]
        elif quotes:
            raise RulesError(f"venues.{vname}: instruments quoted in {', '.join(quotes)}: set "
                             f"venues.{vname}.account_currency to one of them (and trade only that quote)")
    for i, ic in enumerate(inst_cfg):
        r = rules[(ic.venue, ic.symbol)]
        where = f"instruments[{i}] ({ic.venue} {ic.symbol})"
        mode = stp_mode(ic)
        if mode is not None and r.get("stp_allowed") and mode not in r["stp_allowed"]:
            raise RulesError(f"{where}: stp = \"{ic.stp}\" asks for selfTradePreventionMode {mode}, which "
                             f"{ic.symbol} does not allow (allowed: {', '.join(r['stp_allowed'])})")
        try:
            filt.parse_binance(r.get("filters", []), r["price_scale"], r["qty_scale"])
        except (KeyError, ValueError, TypeError) as e:
            raise RulesError(f"{where}: exchange filters cannot be applied: {e}") from None
        if ic.venue in ccy and r["quote"] != ccy[ic.venue]:
            raise RulesError(f"{where}: quoted in {r['quote']}, but equity on venue {ic.venue} is in "
                             f"{ccy[ic.venue]}: a position in {r['quote']} would be counted at face value")
    return ccy


def load_filters(ft: filt.FilterTable, inst_cfg: list[InstrumentConfig], rules: dict[tuple[str, str], dict],
                 scales: Callable[[int], tuple[int, int]]) -> None:
    """Every instrument's filter row from its venue's rules (``check`` has validated them)."""
    for i, ic in enumerate(inst_cfg):
        ps, qs = scales(i)
        filt.set_from_binance(ft, i, rules[(ic.venue, ic.symbol)].get("filters", []), ps, qs)


def install_filters(st: OmsState, account: int, inst_cfg: list[InstrumentConfig],
                    rules: dict[tuple[str, str], dict], scales: Callable[[int], tuple[int, int]]) -> OmsState:
    """The shard's OMS state with its filter table loaded and bound to its own live-order count of
    ``account`` (MAX_NUM_ORDERS) and to its marks (the PERCENT_PRICE reference price)."""
    ft = filt.bind(st.filters, st.open_orders[account], st.positions.mark_px)
    load_filters(ft, inst_cfg, rules, scales)
    return st._replace(filters=ft)


def same_scales(old: dict[tuple[str, str], dict], new: dict[tuple[str, str], dict]) -> list[str]:
    """Symbols whose tick or step changed its number of decimals: their fixed-point scales are
    fixed at start, so new filters for them wait for a restart."""
    return sorted(k[1] for k in old if k in new and (old[k]["price_scale"], old[k]["qty_scale"]) !=
                  (new[k]["price_scale"], new[k]["qty_scale"]))


def fee_rates(commissions: dict[str, dict]) -> tuple[Decimal, Decimal, bool]:
    """(maker, taker, uniform) for one fee schedule from each symbol's commission answer: the
    highest rates (the OMS keeps one schedule per account, and a model that charges less than the
    venue would flatter P&L); ``uniform`` False when the symbols' rates differ."""
    rates = [feek.rates_from_binance(c) for c in commissions.values()]
    if not rates:
        return Decimal(0), Decimal(0), True
    return max(m for m, _ in rates), max(t for _, t in rates), len(set(rates)) == 1


@dataclass(frozen=True)
class MarkSource:
    """Where an asset's price in a quote comes from: a shard's mids array, row ``i``."""
    mids: np.ndarray
    i: int
    price_scale: int

    def price(self) -> Decimal | None:
        m = int(self.mids[self.i])   # written by the shard thread; an aligned int64 read
        return from_fixed(m, self.price_scale) if m > 0 else None


def mark_sources(inst_cfg: list[InstrumentConfig], rules: dict[tuple[str, str], dict], vname: str,
                 mids_of: Callable[[int], np.ndarray],
                 scales: Callable[[int], tuple[int, int]]) -> dict[tuple[str, str], MarkSource]:
    """(base, quote) -> its instrument's mark on venue ``vname``."""
    out: dict[tuple[str, str], MarkSource] = {}
    for i, ic in enumerate(inst_cfg):
        if ic.venue == vname:
            r = rules[(vname, ic.symbol)]
            out[(r["base"], r["quote"])] = MarkSource(mids_of(i), i, scales(i)[0])
    return out


def mark_of(sources: dict[tuple[str, str], MarkSource]) -> Callable[[str, str], Decimal | None]:
    """The gateway's fee conversion: ``asset``'s price in ``quote`` now, or None."""
    def get(asset: str, quote: str) -> Decimal | None:
        src = sources.get((asset, quote))
        return src.price() if src is not None else None
    return get


def unvalued_assets(balances: dict[str, tuple[Decimal, Decimal]], currency: str,
                    sources: dict[tuple[str, str], MarkSource], ignore: tuple[str, ...]) -> list[str]:
    """Assets held (free + locked > 0) that equity cannot convert into ``currency``: neither the
    currency itself, nor the base of an instrument quoted in it (whose mark values the holding),
    nor listed in ``ignore_assets``."""
    return sorted(a for a, (free, locked) in balances.items()
                  if free + locked > 0 and a != currency and a not in ignore and (a, currency) not in sources)
