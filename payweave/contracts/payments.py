"""Payments-database records: deposits (gateway payments), transfers, webhook events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

Gateway = Literal["stripe", "xendit"]
PaymentStatus = Literal[
    "pending", "awaiting_payment", "succeeded", "failed", "expired", "canceled", "refunded"
]
TransferStatus = Literal["pending", "debited", "completed", "failed"]


class Payment(BaseModel):
    id: str
    idempotency_key: str
    workflow_id: str
    purpose: str
    owner: str
    wallet_id: str | None
    gateway: Gateway
    gateway_payment_id: str | None
    amount: int
    currency: str
    status: PaymentStatus
    failure_code: str | None
    credited: bool
    next_action: dict[str, Any] | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Transfer(BaseModel):
    id: str
    workflow_id: str
    owner: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str
    description: str | None
    status: TransferStatus
    failure_code: str | None
    created_at: datetime
    updated_at: datetime


class WebhookEvent(BaseModel):
    id: int
    provider: str
    event_id: str
    event_type: str
    object_id: str | None
    workflow_id: str | None
    routed_at: datetime | None
