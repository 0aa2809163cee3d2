"""Self-trade prevention: our policies, and how they map to the venues' own STP modes.

The OMS checks a new order against the same account's live orders on the same instrument before
it leaves (``bot4d.kernels.oms``): a buy at ``px`` crosses a resting sell at ``r`` when
``px >= r`` (a market order crosses every resting order on the other side). Policies:

* ``STP_CANCEL_NEW``: the new order is rejected; resting orders stay.
* ``STP_CANCEL_RESTING``: every crossing resting order is cancelled; the new order goes out.
* ``STP_CANCEL_BOTH``: both.
* ``STP_DECREMENT_BOTH``: for each crossing resting order (in list order), both remaining
  quantities are reduced by the smaller of the two; a resting order reduced to nothing is
  cancelled, otherwise replaced with the lower quantity; the new order is rejected if nothing is
  left of it, otherwise sent with what is left.
* ``STP_NONE``: no local check (the venue's mode, if any, applies).

Where the venue has its own mode, ``venue_mode`` gives the parameter value that asks the venue
for the same behaviour (the taker's mode decides at every one of these venues). The daemon sends
it with every order of an instrument (``[[instruments]] stp``, one of ``STP_POLICIES``; the
Binance gateway's ``selfTradePreventionMode``), after checking at start that the symbol's
``allowedSelfTradePreventionModes`` lists it. The venue's mode is what protects against our
orders the OMS does not see (another shard's, an earlier run's, another program's on the account).
Exits (market orders, protective stops) ask for EXPIRE_MAKER where the policy's mode would expire
the taker, so an exit that meets one of our own resting orders goes through:

==================  ===================  ===========  ============  ==========
policy              Binance spot         Bybit v5     OKX v5        Coinbase
                    selfTradePrevention  smpType      stpMode       Exchange
                    Mode                                            stp
==================  ===================  ===========  ============  ==========
CANCEL_NEW          EXPIRE_TAKER         CancelTaker  cancel_taker  cn
CANCEL_RESTING      EXPIRE_MAKER         CancelMaker  cancel_maker  co
CANCEL_BOTH         EXPIRE_BOTH          CancelBoth   cancel_both   cb
DECREMENT_BOTH      DECREMENT            (none)       (none)        dc
==================  ===================  ===========  ============  ==========

Sources: Binance STP FAQ https://developers.binance.com/docs/binance-spot-api-docs/faqs/stp_faq
("DECREMENT - ... The smaller of the two orders will expire, or both if they have the same
quantity"); Bybit https://bybit-exchange.github.io/docs/v5/smp (Cancel maker / Cancel taker /
Cancel both, parameter ``smpType`` of Place Order); OKX https://www.okx.com/docs-v5/en/ Place
order ``stpMode`` and https://www.okx.com/help/okx-to-implement-mandatory-self-trade-prevention
(default cancels the maker); Coinbase Exchange
https://docs.cdp.coinbase.com/exchange/concepts/matching-engine (``dc`` decrement & cancel: "Cancel
smaller order and decrement larger order by the smaller size. If the same size, cancel both";
``co`` cancel oldest, ``cn`` cancel newest, ``cb`` cancel both). Where a venue has no equivalent
(``None`` below) the OMS's local check is the only protection, so keep it on for that venue.
"""
from __future__ import annotations

from bot4d.jitcache import kernel


STP_NONE = 0
STP_CANCEL_NEW = 1
STP_CANCEL_RESTING = 2
STP_CANCEL_BOTH = 3
STP_DECREMENT_BOTH = 4

# the names ``[[instruments]] stp`` takes (docs/config.md)
STP_POLICIES = {"none": STP_NONE, "cancel_new": STP_CANCEL_NEW, "cancel_resting": STP_CANCEL_RESTING,
                "cancel_both": STP_CANCEL_BOTH, "decrement": STP_DECREMENT_BOTH}

VENUE_STP_PARAM = {
    "binance": "selfTradePreventionMode",
    "bybit": "smpType",
    "okx": "stpMode",
    "coinbase": "stp",
}

_VENUE_MODES: dict[str, dict[int, str | None]] = {
    "binance": {STP_NONE: "NONE", STP_CANCEL_NEW: "EXPIRE_TAKER",
                STP_CANCEL_RESTING: "EXPIRE_MAKER", STP_CANCEL_BOTH: "EXPIRE_BOTH",
                STP_DECREMENT_BOTH: "DECREMENT"},
    "bybit": {STP_NONE: "None", STP_CANCEL_NEW: "CancelTaker", STP_CANCEL_RESTING: "CancelMaker",
              STP_CANCEL_BOTH: "CancelBoth", STP_DECREMENT_BOTH: None},
    "okx": {STP_NONE: None, STP_CANCEL_NEW: "cancel_taker", STP_CANCEL_RESTING: "cancel_maker",
            STP_CANCEL_BOTH: "cancel_both", STP_DECREMENT_BOTH: None},
    "coinbase": {STP_NONE: None, STP_CANCEL_NEW: "cn", STP_CANCEL_RESTING: "co",
                 STP_CANCEL_BOTH: "cb", STP_DECREMENT_BOTH: "dc"},
}


def venue_mode(venue: str, policy: int) -> str | None:
    """The venue's STP parameter value for ``policy``; None when the venue has no such mode.

    Raises ValueError for an unknown venue or policy, so a typo cannot silently disable STP.
    """
    try:
        modes = _VENUE_MODES[venue]
    except KeyError:
        raise ValueError(f"no STP mapping for venue {venue!r}; known: {sorted(_VENUE_MODES)}") from None
    if policy not in modes:
        raise ValueError(f"unknown STP policy {policy}")
    return modes[policy]


@kernel(_nrt=False)
def crosses(new_buy: bool, new_market: bool, new_px: int, rest_px: int) -> bool:
    """Would a new order trade against our resting order on the other side?"""
    if new_market:
        return True
    return new_px >= rest_px if new_buy else new_px <= rest_px


@kernel(_nrt=False)
def decrement(new_left: int, rest_left: int) -> tuple[int, int]:
    """DECREMENT_BOTH on one pair: both reduced by the smaller remaining quantity."""
    d = new_left if new_left < rest_left else rest_left
    return new_left - d, rest_left - d
