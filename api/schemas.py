"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from payweave.money import Amount, Currency


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateWallet(StrictBody):
    currency: Currency


class WalletOut(BaseModel):
    id: str
    owner: str
    currency: str
    status: str
    balance: int
    held: int
    available: int
    created_at: datetime


class EntryOut(BaseModel):
    id: int
    journal_id: int
    amount: int
    currency: str
    balance_after: int
    kind: str | None
    description: str | None
    created_at: datetime


class EntryPage(BaseModel):
    data: list[EntryOut]
    has_more: bool
    next_cursor: int | None = Field(description="pass as starting_after to get the next page")


class CreateDeposit(StrictBody):
    amount: Amount
    currency: Currency | None = None
    gateway: Literal["stripe"] = "stripe"
    payment_method: str | None = Field(
        default=None, max_length=255, description="a Stripe PaymentMethod id (pm_…) to confirm server-side"
    )
    expires_in: int | None = Field(default=None, gt=0, le=7 * 24 * 3600, description="seconds")


class DepositOut(BaseModel):
    id: str
    status: str
    wallet_id: str
    amount: int
    currency: str
    gateway: str
    gateway_payment_id: str | None = None
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None
    credited: bool = False
    expires_at: datetime | None = None


class CreateTransfer(StrictBody):
    from_wallet_id: str = Field(max_length=64)
    to_wallet_id: str = Field(max_length=64)
    amount: Amount
    currency: Currency
    description: str | None = Field(default=None, max_length=500)


class TransferOut(BaseModel):
    id: str
    status: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str
    description: str | None = None
    failure_code: str | None = None
