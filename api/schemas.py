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
    gateway: Literal["stripe", "xendit"] = "stripe"
    payment_method: str | None = Field(
        default=None,
        max_length=255,
        description="a Stripe PaymentMethod id (pm_…) to confirm server-side; Xendit payers pay on the invoice page",
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


class CreateProduct(StrictBody):
    name: str = Field(min_length=1, max_length=200)
    price: Amount
    currency: Currency
    stock: int = Field(ge=0, le=10_000_000)


class ProductOut(BaseModel):
    id: str
    merchant: str
    name: str
    price: int
    currency: str
    stock: int
    available: int


class CheckoutItemIn(StrictBody):
    product_id: str = Field(max_length=64)
    quantity: int = Field(ge=1, le=10_000)


class CheckoutPayment(StrictBody):
    method: Literal["wallet", "gateway", "split"]
    wallet_amount: Amount | None = Field(
        default=None, description="split only; default: as much as available"
    )
    gateway: Literal["stripe", "xendit"] | None = None
    payment_method: str | None = Field(default=None, max_length=255)


class CreateCheckout(StrictBody):
    merchant_id: str = Field(min_length=1, max_length=200)
    currency: Currency
    items: list[CheckoutItemIn] | None = Field(default=None, min_length=1, max_length=100)
    amount: Amount | None = None
    payment: CheckoutPayment
    expires_in: int | None = Field(default=None, gt=0, le=7 * 24 * 3600, description="seconds")


class CheckoutOut(BaseModel):
    id: str
    status: str
    buyer: str
    merchant: str
    currency: str
    total: int
    wallet_amount: int
    gateway_amount: int
    method: str
    gateway: str | None = None
    gateway_payment_id: str | None = None
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None
    late_payment_refunded: bool = False
    expires_at: datetime | None = None


class CancelCheckoutIn(StrictBody):
    reason: Literal["canceled_by_buyer", "requested_by_customer", "duplicate", "fraudulent"] = (
        "canceled_by_buyer"
    )


class CreateRefund(StrictBody):
    amount: Amount | None = Field(default=None, description="minor units; default: everything left to refund")
    reason: str = Field(min_length=1, max_length=200)
    policy: Literal["proportional", "wallet_first", "gateway_first"] = "proportional"


class RefundOut(BaseModel):
    id: str
    order_id: str
    status: str
    amount: int | None
    wallet_amount: int
    gateway_amount: int
    policy: str
    reason: str
    failure_code: str | None = None
    gateway_refund_id: str | None = None


class CreateGroupBuy(StrictBody):
    product: str = Field(min_length=1, max_length=200, description="what the factory makes (name or SKU)")
    unit_price: Amount
    currency: Currency
    moq: int = Field(gt=0, le=10_000_000, description="minimum order quantity, in units")
    max_units: int | None = Field(default=None, gt=0, le=10_000_000)
    deadline: datetime = Field(description="joins close and the MOQ decision is made at this instant")
    production_deadline: datetime | None = Field(
        default=None, description="production must be reported complete by then, or everyone is refunded"
    )
    close_when_moq_reached: bool = Field(default=False, description="decide as soon as the MOQ is paid")


class GroupBuyPayment(StrictBody):
    method: Literal["wallet", "gateway"]
    gateway: Literal["stripe", "xendit"] | None = None
    payment_method: str | None = Field(
        default=None, max_length=255, description="a Stripe PaymentMethod id (pm_…) to confirm server-side"
    )


class JoinGroupBuy(StrictBody):
    quantity: int = Field(gt=0, le=10_000_000)
    payment: GroupBuyPayment


class CancelGroupBuyIn(StrictBody):
    reason: str = Field(default="canceled", min_length=1, max_length=500)
