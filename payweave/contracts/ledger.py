"""Ledger records as they leave the wallet database."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, computed_field

WalletStatus = Literal["active", "frozen", "closed"]
HoldStatus = Literal["open", "captured", "released", "expired"]


class Wallet(BaseModel):
    id: str
    owner: str
    currency: str
    kind: Literal["customer", "system"]
    status: WalletStatus
    balance: int
    held: int
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def available(self) -> int:
        return self.balance - self.held


class Entry(BaseModel):
    id: int
    journal_id: int
    wallet_id: str
    amount: int
    currency: str
    balance_after: int
    created_at: datetime
    journal_kind: str | None = None
    description: str | None = None


class Posting(BaseModel):
    """One leg of a journal: a signed amount (minor units) on one wallet."""

    wallet_id: str
    amount: int


class Journal(BaseModel):
    id: int
    idempotency_key: str
    kind: str
    currency: str
    entries: list[Entry]
    created: bool  # False when this call found the journal an earlier attempt posted
    external_ref: str | None = None  # the payments-DB payment id a gateway-related journal is about


class Hold(BaseModel):
    id: str
    idempotency_key: str
    wallet_id: str
    amount: int
    captured_amount: int
    currency: str
    status: HoldStatus
    saga_id: str | None
    expires_at: datetime
