"""Money is integer minor units; conversions at gateway boundaries are exact (property-based)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payweave.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT,
    MoneyError,
    from_major_units,
    parse_amount,
    parse_currency,
    to_major_units,
)

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))


@given(amount=st.integers(min_value=1, max_value=MAX_AMOUNT), currency=currencies)
def test_minor_major_round_trip_is_exact(amount: int, currency: str) -> None:
    assert from_major_units(to_major_units(amount, currency), currency) == amount
    assert from_major_units(str(to_major_units(amount, currency)), currency) == amount


@given(amount=st.integers(min_value=1, max_value=MAX_AMOUNT))
def test_every_positive_bigint_is_a_valid_amount(amount: int) -> None:
    assert parse_amount(amount) == amount


@given(
    value=st.one_of(
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(),
        st.none(),
        st.integers(max_value=0),
        st.integers(min_value=MAX_AMOUNT + 1),
    )
)
def test_anything_else_is_an_invalid_amount(value: object) -> None:
    with pytest.raises(MoneyError) as err:
        parse_amount(value)
    assert err.value.code == "invalid_amount"


@pytest.mark.parametrize("value,currency", [("10.005", "USD"), (Decimal("1.5"), "JPY"), ("0.0001", "KWD")])
def test_more_decimals_than_the_currency_allows_is_refused(value: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        from_major_units(value, currency)


@pytest.mark.parametrize("value", ["XXX", "usd1", "", None, 840, "US"])
def test_unknown_currencies_are_refused(value: object) -> None:
    with pytest.raises(MoneyError):
        parse_currency(value)
