"""CRC32 book checksums: the venues' documented vectors, and the int-book path against the text path."""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bot4d.venues import kraken, okx
from bot4d.venues.checksum import (
    CRC_TABLE,
    kraken_book_crc,
    kraken_scaling,
    kraken_text_checksum,
    okx_book_crc,
    okx_text_checksum,
)
from bot4d.venues.l2sync import units
from bot4d.venues.numbers import NumberError, parse_units

# Kraken WebSocket v1 guide, "Book Checksum Calculation" example (book state and checksum
# 974947235): https://docs.kraken.com/api/docs/guides/spot-ws-book-v1
KRAKEN_V1_ASKS = [(p, "0.00000500") for p in (
    "0.05005", "0.05010", "0.05015", "0.05020", "0.05025",
    "0.05030", "0.05035", "0.05040", "0.05045", "0.05050")]
KRAKEN_V1_BIDS = [(p, "0.00000500") for p in (
    "0.05000", "0.04995", "0.04990", "0.04980", "0.04975",
    "0.04970", "0.04965", "0.04960", "0.04955", "0.04950")]
KRAKEN_V1_CHECKSUM = 974947235

# Kraken WebSocket v2 guide, "Checksum Steps with Example" (BTC/USD snapshot, checksum
# 3310070434): https://docs.kraken.com/api/docs/guides/spot-ws-book-v2
KRAKEN_V2_BIDS = [
    ("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238")]
KRAKEN_V2_ASKS = [
    ("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827")]
KRAKEN_V2_CHECKSUM = 3310070434

# OKX checksum examples (check strings "3366.1:7:3366.8:9:3366:6:3368:8" and, with fewer bids
# than asks, "3366.1:7:3366.8:9:3368:8:3372:8"), OKX v5 order book channel, checksum section:
# https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel; the published values -1881014294 and 831078360 are OKEx's own examples
# (https://www.okex.com/docs/en/#futures_ws-checksum, quoted in
# https://gist.github.com/Michael-J-Ward/fdaad16ffe56e94fcaa7e90910ddf1d2).
OKX_EVEN = ([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")], -1881014294)
OKX_ODD = ([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")], 831078360)


def test_kraken_v1_documented_vector() -> None:
    assert kraken.book_checksum_v1(KRAKEN_V1_BIDS, KRAKEN_V1_ASKS) == KRAKEN_V1_CHECKSUM


def test_kraken_v2_documented_vector() -> None:
    assert kraken.book_checksum(KRAKEN_V2_BIDS, KRAKEN_V2_ASKS) == KRAKEN_V2_CHECKSUM


def test_kraken_v2_float_text_breaks_the_checksum() -> None:
    # what a float parser would hand over: 0.1 for 0.10000000, 45281.0 kept but qty shortened
    as_float = [(repr(float(p)), repr(float(q))) for p, q in KRAKEN_V2_BIDS]
    assert kraken.book_checksum(as_float, KRAKEN_V2_ASKS) != KRAKEN_V2_CHECKSUM


def test_okx_documented_vectors() -> None:
    for bids, asks, want in (OKX_EVEN, OKX_ODD):
        assert okx.book_checksum(bids, asks) == want


def test_only_the_top_levels_count() -> None:
    deep_bids = KRAKEN_V2_BIDS + [("1.0", "1.00000000")]
    assert kraken.book_checksum(deep_bids, KRAKEN_V2_ASKS) == KRAKEN_V2_CHECKSUM
    bids, asks, want = OKX_EVEN
    assert okx.book_checksum(bids + [(str(3000 - i), "1") for i in range(30)], asks) != want
    many = [(str(3000 - i), "1") for i in range(30)]
    assert okx.book_checksum(many, asks) == okx.book_checksum(many[:25], asks)


def _arr(texts: list[str], scale: int) -> np.ndarray:
    return np.array([int(Decimal(t).scaleb(scale)) for t in texts], np.int64)


def test_int_book_path_reproduces_documented_vectors() -> None:
    for bids, asks, want, pdec in ((KRAKEN_V2_BIDS, KRAKEN_V2_ASKS, KRAKEN_V2_CHECKSUM, 1),
                                  (KRAKEN_V1_BIDS, KRAKEN_V1_ASKS, KRAKEN_V1_CHECKSUM, 5)):
        for pscale, qscale in ((pdec, 8), (pdec + 3, 10), (max(pdec - 1, 0) + 0, 8)):
            if pscale < pdec:
                continue
            bp, bq = _arr([p for p, _ in bids], pscale), _arr([q for _, q in bids], qscale)
            ap, aq = _arr([p for p, _ in asks], pscale), _arr([q for _, q in asks], qscale)
            pd, pm = kraken_scaling(pscale, pdec)
            qd, qm = kraken_scaling(qscale, 8)
            assert kraken_book_crc(bp, bq, len(bp), ap, aq, len(ap), pd, pm, qd, qm, CRC_TABLE) == want
    for bids, asks, want in (OKX_EVEN, OKX_ODD):
        for ps, qs in ((1, 0), (4, 8)):
            bp, bq = _arr([p for p, _ in bids], ps), _arr([q for _, q in bids], qs)
            ap, aq = _arr([p for p, _ in asks], ps), _arr([q for _, q in asks], qs)
            assert okx_book_crc(bp, bq, len(bp), ap, aq, len(ap), ps, qs, CRC_TABLE) == want


def test_kraken_int_path_refuses_units_finer_than_the_wire() -> None:
    a = np.array([123457], np.int64)  # 1234.57 at scale 2, but the wire has 1 decimal
    pd, pm = kraken_scaling(2, 1)
    assert kraken_book_crc(a, a, 1, a, a, 1, pd, pm, 1, 1, CRC_TABLE) == -1


def _dec_text(units_: int, scale: int, fixed: bool) -> str:
    s = str(units_).rjust(scale + 1, "0")
    whole, frac = s[: len(s) - scale] if scale else s, s[len(s) - scale:] if scale else ""
    if not fixed:
        frac = frac.rstrip("0")
    return whole + ("." + frac if frac else "")


levels = st.lists(st.tuples(st.integers(1, 10**12), st.integers(1, 10**12)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(levels, levels, st.integers(0, 8), st.integers(0, 8))
def test_int_path_equals_text_path_on_random_books(bids, asks, ps, qs) -> None:
    bids = sorted(dict(bids).items(), reverse=True)
    asks = sorted(dict(asks).items())
    bp = np.array([p for p, _ in bids], np.int64)
    bq = np.array([q for _, q in bids], np.int64)
    ap = np.array([p for p, _ in asks], np.int64)
    aq = np.array([q for _, q in asks], np.int64)
    # OKX: shortest text
    tb = [(_dec_text(p, ps, False), _dec_text(q, qs, False)) for p, q in bids]
    ta = [(_dec_text(p, ps, False), _dec_text(q, qs, False)) for p, q in asks]
    assert okx_book_crc(bp, bq, len(bp), ap, aq, len(ap), ps, qs, CRC_TABLE) == okx_text_checksum(tb, ta)
    # Kraken: fixed decimals equal to the scale
    tb = [(_dec_text(p, ps, True), _dec_text(q, qs, True)) for p, q in bids]
    ta = [(_dec_text(p, ps, True), _dec_text(q, qs, True)) for p, q in asks]
    assert kraken_book_crc(bp, bq, len(bp), ap, aq, len(ap), 1, 1, 1, 1, CRC_TABLE) == \
        kraken_text_checksum(tb, ta)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.-e+ x", max_size=24),
                 st.decimals(min_value=0, max_value=10**9, places=8).map(str)),
       st.integers(0, 12))
def test_fast_units_agrees_with_parse_units(text, scale) -> None:
    try:
        want = parse_units(text, scale)
    except NumberError:
        want = None
    try:
        got = units(text, scale)
    except NumberError:
        got = None
    assert got == want


@settings(max_examples=100, deadline=None)
@given(levels, levels)
def test_hot_path_crc_equals_reference(bids, asks) -> None:
    from bot4d.venues.checksum import CRC_TABLE8, crc32_buf, kraken_book_crc_fast
    import zlib

    bids = sorted(dict(bids).items(), reverse=True)
    asks = sorted(dict(asks).items())
    a = [np.array(x, np.int64) for x in ([p for p, _ in bids], [q for _, q in bids],
                                         [p for p, _ in asks], [q for _, q in asks])]
    text = np.zeros(1024, np.uint8)
    assert kraken_book_crc_fast(a[0], a[1], len(bids), a[2], a[3], len(asks), 1, 1, 1, 1,
                                CRC_TABLE8, text) == \
        kraken_book_crc(a[0], a[1], len(bids), a[2], a[3], len(asks), 1, 1, 1, 1, CRC_TABLE)
    raw = np.frombuffer(bytes(range(256)) * 3, np.uint8)
    for n in (0, 1, 7, 8, 9, 500, 768):
        assert crc32_buf(raw, n, CRC_TABLE8) == zlib.crc32(raw[:n].tobytes())


@settings(max_examples=100, deadline=None)
@given(levels, levels, st.integers(0, 8), st.integers(0, 8))
def test_okx_hot_path_crc_equals_reference(bids, asks, ps, qs) -> None:
    from bot4d.venues.checksum import CRC_TABLE8, okx_book_crc_fast

    bids = sorted(dict(bids).items(), reverse=True)
    asks = sorted(dict(asks).items())
    a = [np.array(x, np.int64) for x in ([p for p, _ in bids], [q for _, q in bids],
                                         [p for p, _ in asks], [q for _, q in asks])]
    text = np.zeros(4096, np.uint8)
    assert okx_book_crc_fast(a[0], a[1], len(bids), a[2], a[3], len(asks), ps, qs, CRC_TABLE8, text) == \
        okx_book_crc(a[0], a[1], len(bids), a[2], a[3], len(asks), ps, qs, CRC_TABLE)


def test_rfc3339_ns_exact_and_strict() -> None:
    import calendar

    from bot4d.venues.l2sync import rfc3339_ns

    assert rfc3339_ns("2023-10-06T17:35:55.440295Z") == 1696613755440295000
    assert rfc3339_ns("2023-02-09T20:32:50.714964855Z") == 1675974770714964855
    assert rfc3339_ns("1970-01-01T00:00:00Z") == 0
    assert rfc3339_ns("2024-02-29T23:59:59.1Z") == calendar.timegm((2024, 2, 29, 23, 59, 59)) * 10**9 + 10**8
    for bad in ("2023-13-06T17:35:55Z", "2023-10-06 17:35:55Z", "2023-10-06T17:35:55+01:00",
                "2023-1a-06T17:35:55Z", "2023-10-06T24:00:00Z", "2023-10-06T17:35:55.1234567890Z",
                " 023-10-06T17:35:55Z", "2023-10-06T17:35:55.Z", 1696613755,
                "2263-01-01T00:00:00Z"):  # beyond int64 nanoseconds
        with pytest.raises(NumberError):
            rfc3339_ns(bad)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=__import__("datetime").datetime(1678, 1, 1),
                    max_value=__import__("datetime").datetime(2262, 1, 1)))
def test_rfc3339_ns_matches_the_calendar(dt) -> None:
    import calendar

    from bot4d.venues.l2sync import rfc3339_ns

    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}Z"
    want = calendar.timegm(dt.timetuple()) * 10**9 + dt.microsecond * 1000
    assert rfc3339_ns(text) == want
