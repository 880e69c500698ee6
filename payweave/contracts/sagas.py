"""Workflow inputs, results and ``status`` query snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from payweave.contracts.commerce import OrderItem, PaymentMethod
from payweave.contracts.payments import Gateway


class PaymentEvent(BaseModel):
    """Signal payload: a gateway told us (webhook, look-up or sweeper) what happened to a payment."""

    gateway: Gateway
    gateway_payment_id: str
    event_id: str | None = None
    failure_code: str | None = None


class DepositInput(BaseModel):
    deposit_id: str
    owner: str
    wallet_id: str
    amount: int
    currency: str
    gateway: Gateway = "stripe"
    payment_method: str | None = None
    expires_in_seconds: int = 1800


class DepositStatus(BaseModel):
    id: str
    status: str
    owner: str
    wallet_id: str
    amount: int
    currency: str
    gateway: Gateway
    gateway_payment_id: str | None = None
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None
    credited: bool = False
    expires_at: datetime | None = None


class TransferInput(BaseModel):
    transfer_id: str
    owner: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str
    description: str | None = None


class TransferStatusView(BaseModel):
    id: str
    status: str
    owner: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str
    description: str | None = None
    failure_code: str | None = None


class CheckoutInput(BaseModel):
    order_id: str
    buyer: str
    merchant: str
    currency: str
    items: list[OrderItem] = []
    total: int
    method: PaymentMethod
    wallet_amount: int = 0
    gateway: Gateway | None = None
    payment_method: str | None = None
    buyer_wallet_id: str | None = None
    merchant_wallet_id: str
    expires_in_seconds: int = 1800
    expires_at: datetime | None = None  # set by the API, which records the order before the saga starts


class CheckoutStatus(BaseModel):
    id: str
    status: str
    buyer: str
    merchant: str
    currency: str
    total: int
    wallet_amount: int
    gateway_amount: int
    method: PaymentMethod
    gateway: Gateway | None = None
    items: list[OrderItem] = []
    gateway_payment_id: str | None = None
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None
    late_payment_refunded: bool = False
    expires_at: datetime | None = None


class CancelCheckout(BaseModel):
    reason: str = "canceled_by_buyer"


class RefundInput(BaseModel):
    refund_id: str
    order_id: str
    requester: str
    amount: int | None = None
    policy: Literal["proportional", "wallet_first", "gateway_first"] = "proportional"
    reason: str
    currency: str
    buyer_wallet_id: str | None
    merchant_wallet_id: str
    gateway: Gateway | None = None
    gateway_payment_id: str | None = None
    notify: list[str] = []  # who else hears of the refund (the buyer)


class RefundStatus(BaseModel):
    id: str
    order_id: str
    status: str
    amount: int | None
    wallet_amount: int = 0
    gateway_amount: int = 0
    policy: str
    reason: str
    failure_code: str | None = None
    gateway_refund_id: str | None = None
