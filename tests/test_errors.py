"""Error taxonomy: the documented venue codes map to the recovery the venue's docs imply.

Sources: https://developers.binance.com/docs/binance-spot-api-docs/errors,
https://developers.binance.com/docs/binance-spot-api-docs/rest-api/http-return-codes,
https://docs.kraken.com/api/docs/guides/spot-errors, https://www.okx.com/docs-v5/en/#error-code,
https://bybit-exchange.github.io/docs/v5/error,
https://docs.cdp.coinbase.com/coinbase-app/api-architecture/status-codes,
https://docs.cdp.coinbase.com/api-reference/v2/errors
"""
from __future__ import annotations

import numpy as np
import pytest

from bot4d import errors as E
from bot4d.kernels import breaker as B
from bot4d.records import JOURNAL_EVENT_DTYPE


@pytest.mark.parametrize(
    "venue, code, cat",
    [
        # Binance: the codes the issue names
        ("binance", -1003, E.CAT_RATE_LIMIT),
        ("binance", -1021, E.CAT_RETRY),
        ("binance", -2010, E.CAT_REJECT),
        ("binance", -2011, E.CAT_RECONCILE),
        ("binance", -2013, E.CAT_RECONCILE),
        ("binance", -1013, E.CAT_REJECT),
        ("binance", -2014, E.CAT_HALT),
        ("binance", -2015, E.CAT_HALT),
        ("binance", -1006, E.CAT_RECONCILE),   # "Execution status unknown"
        ("binance", -1007, E.CAT_RECONCILE),   # "Send status unknown; execution status unknown"
        ("binance", "-1008", E.CAT_RETRY),     # codes may arrive as text
        # Kraken
        ("kraken", "EAPI:Rate limit exceeded", E.CAT_RATE_LIMIT),
        ("kraken", "EOrder:Insufficient funds", E.CAT_REJECT),
        ("kraken", "EOrder:Unknown order", E.CAT_RECONCILE),
        ("kraken", "EAPI:Invalid key", E.CAT_HALT),
        ("kraken", "EAPI:Invalid nonce", E.CAT_RETRY),
        ("kraken", "EService:Unavailable", E.CAT_RETRY),
        ("kraken", "EGeneral:Internal error:123", E.CAT_RECONCILE),
        # OKX
        ("okx", 50011, E.CAT_RATE_LIMIT),
        ("okx", "51008", E.CAT_REJECT),
        ("okx", 50004, E.CAT_RECONCILE),
        ("okx", 50013, E.CAT_RETRY),
        ("okx", 50113, E.CAT_HALT),
        # Bybit
        ("bybit", 10006, E.CAT_RATE_LIMIT),
        ("bybit", 10002, E.CAT_RETRY),
        ("bybit", 110007, E.CAT_REJECT),
        ("bybit", 170213, E.CAT_RECONCILE),
        ("bybit", 10003, E.CAT_HALT),
        # Coinbase Advanced Trade
        ("coinbase", "INSUFFICIENT_FUND", E.CAT_REJECT),
        ("coinbase", "UNKNOWN_FAILURE_REASON", E.CAT_RECONCILE),
        ("coinbase", "UNAUTHENTICATED", E.CAT_HALT),
    ],
)
def test_documented_codes(venue, code, cat):
    e = E.classify(venue, code)
    assert e.category == cat, (e, E.CATEGORY_NAMES[cat])
    assert e.strategy == E.CATEGORY_NAMES[cat]
    assert e.meaning


@pytest.mark.parametrize(
    "status, cat",
    [(429, E.CAT_RATE_LIMIT), (418, E.CAT_HALT), (401, E.CAT_HALT), (500, E.CAT_RECONCILE),
     (503, E.CAT_RECONCILE), (200, E.CAT_OK)],
)
def test_http_statuses(status, cat):
    for venue in E.VENUES:
        assert E.classify(venue, http_status=status).category == cat


def test_venue_code_wins_over_http_status_and_unknowns_reconcile():
    # Binance answers a rate limit as HTTP 429 with code -1003; a filter failure as 400 + -1013
    assert E.classify("binance", -1013, http_status=400).category == E.CAT_REJECT
    assert E.classify("Binance", -1003, http_status=429).category == E.CAT_RATE_LIMIT
    # an unknown code on a 4xx: we do not know what happened to the order
    e = E.classify("binance", -9999, http_status=400)
    assert e.category == E.CAT_RECONCILE and e.code == "-9999"
    assert E.classify("kraken", "EFoo:Bar").category == E.CAT_RECONCILE


def test_bad_input_is_refused():
    with pytest.raises(E.UnknownVenueError, match="ftx"):
        E.classify("ftx", 1)
    with pytest.raises(ValueError, match="integers"):
        E.classify("binance", "oops")
    with pytest.raises(ValueError, match="needs a code"):
        E.classify("okx")
    with pytest.raises(ValueError, match="HTTP status"):
        E.classify("okx", http_status=999)


def test_categories_are_small_distinct_ints_for_kernels():
    cats = [E.CAT_OK, E.CAT_RETRY, E.CAT_RATE_LIMIT, E.CAT_REJECT, E.CAT_RECONCILE, E.CAT_HALT]
    assert sorted(cats) == list(range(E.N_CATEGORIES))
    assert set(E.CATEGORY_NAMES) == set(cats)
    # every table entry uses a known category
    for table in (E.BINANCE, E.KRAKEN, E.OKX, E.BYBIT, E.COINBASE):
        assert all(c in E.CATEGORY_NAMES for c, _ in table.values())


def test_breakers_count_classified_errors_by_category():
    br, cfg = B.make_breakers(1, max_consec=3)
    ev = np.zeros(8, JOURNAL_EVENT_DTYPE)
    n = np.zeros(1, np.int64)
    for code in (-2010, -1013, -2010):          # the strategy's fault: venue is healthy
        B.br_record(br, cfg, 0, E.classify("binance", code).category, 1000, 1, ev, n, 0)
    assert br[0, B.BR_STATE] == B.CLOSED
    for code in (-1007, -1008, -1003):          # the venue is struggling
        B.br_record(br, cfg, 0, E.classify("binance", code).category, 1000, 2, ev, n, 0)
    assert br[0, B.BR_STATE] == B.OPEN
    assert br[0, B.BR_CAT + E.CAT_REJECT] == 3 and br[0, B.BR_CAT + E.CAT_RECONCILE] == 1
