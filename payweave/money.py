"""Money: integer minor units plus an ISO-4217 currency. Floats never touch an amount.

The exponent table converts at gateway boundaries only (Xendit takes major units, Stripe minor units).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

# ISO-4217 minor-unit exponents for the currencies payweave accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "SGD": 2,
    "AUD": 2,
    "CAD": 2,
    "CHF": 2,
    "HKD": 2,
    "MYR": 2,
    "PHP": 2,
    "THB": 2,
    "INR": 2,
    "CNY": 2,
    "NZD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "MXN": 2,
    "BRL": 2,
    "IDR": 2,
    "VND": 0,
    "JPY": 0,
    "KRW": 0,
    "CLP": 0,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
}

# Largest amount a PostgreSQL BIGINT (and so a wallet balance) can hold.
MAX_AMOUNT = 2**63 - 1


class MoneyError(ValueError):
    """Raised for a malformed amount or currency; carries the stable problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_currency(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in CURRENCY_EXPONENTS or len(value) != 3:
        raise MoneyError("validation_error", f"unsupported currency {value!r}")
    return value.upper()


def parse_amount(value: Any) -> int:
    """Accept only a JSON integer in minor units: 1 ≤ amount ≤ 2^63-1 (no floats, strings or booleans)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError("invalid_amount", "amount must be an integer number of minor units")
    if value <= 0:
        raise MoneyError("invalid_amount", "amount must be greater than zero")
    if value > MAX_AMOUNT:
        raise MoneyError("invalid_amount", "amount is too large")
    return value


def _amount_validator(value: Any) -> int:
    try:
        return parse_amount(value)
    except MoneyError as exc:
        raise ValueError(f"{exc.code}: {exc}") from exc


def _currency_validator(value: Any) -> str:
    try:
        return parse_currency(value)
    except MoneyError as exc:
        raise ValueError(f"{exc.code}: {exc}") from exc


Amount = Annotated[int, BeforeValidator(_amount_validator)]
Currency = Annotated[str, BeforeValidator(_currency_validator)]


class Money(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: Amount
    currency: Currency


def to_major_units(amount: int, currency: str) -> Decimal:
    """Minor → major units as an exact Decimal (for gateways that want major units)."""
    return Decimal(amount).scaleb(-CURRENCY_EXPONENTS[currency])


def from_major_units(value: Decimal | int | str, currency: str) -> int:
    """Major → minor units; refuses anything that is not a whole number of minor units."""
    minor = Decimal(str(value)).scaleb(CURRENCY_EXPONENTS[currency])
    if minor != minor.to_integral_value():
        raise MoneyError("invalid_amount", f"{value} has more decimals than {currency} allows")
    return int(minor)


def format_amount(amount: int, currency: str) -> str:
    return f"{to_major_units(amount, currency):f} {currency}"
