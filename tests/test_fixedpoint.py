"""Fixed-point edges: exact in both directions, errors instead of wrapping or rounding."""
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from bot4d.fixedpoint import INT64_MAX, FixedPointError, from_fixed, to_fixed
from bot4d.venues.numbers import NumberError, parse_units


@pytest.mark.parametrize(
    "value,scale,units",
    [("41006.8", 2, 4100680), ("0.00012300", 8, 12300), ("-1.5", 1, -15), (Decimal("7"), 0, 7)],
)
def test_to_fixed_exact(value, scale, units):
    assert to_fixed(value, scale) == units
    assert from_fixed(units, scale) == Decimal(str(value))


@pytest.mark.parametrize(
    "value,scale,msg",
    [
        (0.1, 2, "floats"),
        ("1.234", 2, "more than 2 decimal places"),
        ("NaN", 2, "not a finite"),
        ("abc", 2, "not a decimal"),
        (str(INT64_MAX + 1), 0, "does not fit in int64"),
        ("1", 19, "scale"),
    ],
)
def test_to_fixed_refuses(value, scale, msg):
    with pytest.raises(FixedPointError, match=msg):
        to_fixed(value, scale)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8,
                   min_value=Decimal("-1e10"), max_value=Decimal("1e10")))
def test_roundtrip(d):
    assert from_fixed(to_fixed(d, 8), 8) == d


@given(st.integers(min_value=0, max_value=10**17), st.integers(min_value=0, max_value=8))
def test_parse_units_agrees_with_decimal(units, scale):
    text = str(from_fixed(units, scale))
    if "E" in text:  # Decimal's scientific form is not venue text
        text = format(from_fixed(units, scale), "f")
    assert parse_units(text, scale) == units
    padded = text + ("000" if "." in text else ".000")
    assert parse_units(padded, scale) == units  # zeros beyond the scale are exact


@pytest.mark.parametrize(
    "text,reason",
    [("", "not a number"), ("-1", "negative"), ("1e5", "plain decimal"), (".", "not a number"),
     ("1.234", "significant decimals"), ("99999999999999999999", "int64"), ("١٢", "plain decimal"),
     (b"\xff1", "ASCII"), ("1.2.3", "plain decimal"), (" 1", "plain decimal")],
)
def test_parse_units_refuses(text, reason):
    with pytest.raises(NumberError, match=reason):
        parse_units(text, 2)


def test_parse_units_negative_when_allowed():
    assert parse_units("-0.5", 2, allow_negative=True) == -50


@pytest.mark.parametrize("text,places", [("0.01000000", 2), ("100", 0), ("0.00000000", 0), ("0.35280000", 4),
                                         (Decimal("1E-8"), 8), ("41006.8", 1)])
def test_decimals_is_the_smallest_exact_scale(text, places):
    from bot4d.fixedpoint import decimals

    assert decimals(text) == places
    to_fixed(text, places)  # exact at that scale
    if places:
        with pytest.raises(FixedPointError):
            to_fixed(text, places - 1)
