"""Inputs and results of activities (one model each, so fields can be added without breaking histories)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from payweave.contracts.commerce import OrderItem
from payweave.contracts.payments import Gateway


class PostingSpec(BaseModel):
    """A journal leg on a customer wallet (``wallet_id``) or a per-currency system account (``system``)."""

    amount: int
    wallet_id: str | None = None
    system: Literal["gateway_clearing", "escrow", "transit", "platform_fees"] | None = None


class PostJournalInput(BaseModel):
    idempotency_key: str
    kind: str
    currency: str
    postings: list[PostingSpec]
    description: str | None = None
    saga_id: str | None = None
    # Applied like a compensation: credits reach a frozen or closed wallet (money going back to its owner).
    compensation: bool = False
    # The payments-DB payment id, when the journal touches gateway_clearing for a payment (reconciliation, I5).
    external_ref: str | None = None


class ReverseJournalInput(BaseModel):
    """Compensation: post the opposite of the journal ``original_key`` posted, if it posted anything."""

    original_key: str
    idempotency_key: str
    kind: str
    # Skip the reversal when this later step already posted: the saga completed its forward path.
    unless_posted: str | None = None
    description: str | None = None
    saga_id: str | None = None
    external_ref: str | None = None  # None: the original journal's


class JournalResult(BaseModel):
    journal_id: int | None  # None: a reversal found nothing to undo
    created: bool
    skipped: bool = False  # a reversal not applied because the forward path had completed


class PlaceHoldInput(BaseModel):
    idempotency_key: str
    hold_id: str
    wallet_id: str
    amount: int
    currency: str
    expires_at: datetime
    saga_id: str | None = None


class HoldResult(BaseModel):
    hold_id: str
    status: str
    amount: int


class ReleaseHoldInput(BaseModel):
    hold_id: str


class CaptureHoldInput(BaseModel):
    idempotency_key: str
    hold_id: str
    amount: int
    credits: list[PostingSpec]
    kind: str
    description: str | None = None
    external_ref: str | None = None  # the payment id, when the credits touch gateway_clearing


class RecordPaymentInput(BaseModel):
    payment_id: str
    idempotency_key: str
    workflow_id: str
    purpose: Literal["deposit", "checkout", "group_buy"]
    owner: str
    wallet_id: str | None
    gateway: Gateway
    amount: int
    currency: str
    expires_at: datetime | None


class GatewayPayment(BaseModel):
    """A gateway's payment object, normalised."""

    gateway: Gateway
    id: str
    status: Literal["requires_action", "processing", "succeeded", "failed", "canceled", "expired"]
    amount: int
    currency: str
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None


class GatewayRefund(BaseModel):
    gateway: Gateway
    id: str
    gateway_payment_id: str
    amount: int
    status: Literal["pending", "succeeded", "failed"]


class RefundGatewayPaymentInput(BaseModel):
    payment_id: str
    idempotency_key: str
    gateway: Gateway
    gateway_payment_id: str
    amount: int
    reason: str


class CreateGatewayPaymentInput(BaseModel):
    payment_id: str
    idempotency_key: str
    gateway: Gateway
    amount: int
    currency: str
    metadata: dict[str, str]
    payment_method: str | None = None
    description: str | None = None


class GatewayPaymentRef(BaseModel):
    payment_id: str
    gateway: Gateway
    gateway_payment_id: str


class MarkPaymentInput(BaseModel):
    payment_id: str
    status: str | None = None
    failure_code: str | None = None
    credited: bool | None = None


class RecordTransferInput(BaseModel):
    transfer_id: str
    workflow_id: str
    owner: str
    from_wallet_id: str
    to_wallet_id: str
    amount: int
    currency: str
    description: str | None


class MarkTransferInput(BaseModel):
    transfer_id: str
    status: str
    failure_code: str | None = None


class RecordOrderInput(BaseModel):
    order_id: str
    workflow_id: str
    buyer: str
    merchant: str
    currency: str
    total: int
    wallet_amount: int
    gateway_amount: int
    method: Literal["wallet", "gateway", "split"]
    gateway: Gateway | None
    buyer_wallet_id: str | None
    merchant_wallet_id: str
    items: list[OrderItem]
    expires_at: datetime | None
    # The gateway part's payment row, recorded in the same transaction (checkouts since the
    # checkout-payment-with-order patch).
    payment: RecordPaymentInput | None = None


class ReserveStockInput(BaseModel):
    idempotency_key: str
    reservation_id: str
    product_id: str
    order_id: str
    quantity: int


class ReservationRef(BaseModel):
    reservation_id: str


class MarkOrderInput(BaseModel):
    order_id: str
    status: str
    failure_code: str | None = None


class ReserveRefundInput(BaseModel):
    refund_id: str
    workflow_id: str
    order_id: str
    requester: str
    amount: int | None
    policy: Literal["proportional", "wallet_first", "gateway_first"]
    reason: str


class FinishRefundInput(BaseModel):
    refund_id: str
    status: Literal["succeeded", "failed"]
    failure_code: str | None = None
    gateway_refund_id: str | None = None


class GatewayRefundRef(BaseModel):
    gateway: Gateway
    refund_id: str


class NotifyInput(BaseModel):
    """A domain event for some users (each gets a row; merchants may also get a signed webhook)."""

    idempotency_key: str
    kind: str
    recipients: list[str]
    data: dict[str, Any]


class FinishOrderInput(BaseModel):
    """The order's final status and the notification that tells its users, written in one transaction."""

    order: MarkOrderInput
    notification: NotifyInput
    # The gateway part's payment row, moved in the same transaction (checkouts since the
    # checkout-payment-with-order patch).
    payment: MarkPaymentInput | None = None
