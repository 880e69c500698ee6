"""Products, stock reservations and orders as they leave the payments database."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

OrderStatus = Literal[
    "pending", "awaiting_payment", "paid", "failed", "expired", "canceled", "partially_refunded", "refunded"
]
PaymentMethod = Literal["wallet", "gateway", "split"]


class Product(BaseModel):
    id: str
    merchant: str
    name: str
    price: int
    currency: str
    stock: int
    reserved: int
    created_at: datetime

    @property
    def available(self) -> int:
        return self.stock - self.reserved


class OrderItem(BaseModel):
    product_id: str
    quantity: int
    unit_price: int


class Reservation(BaseModel):
    id: str
    product_id: str
    order_id: str
    quantity: int
    status: Literal["reserved", "committed", "released"]


class Refund(BaseModel):
    id: str
    workflow_id: str
    order_id: str
    requester: str
    amount: int
    wallet_amount: int
    gateway_amount: int
    policy: str
    reason: str
    status: Literal["pending", "succeeded", "failed"]
    failure_code: str | None
    gateway_refund_id: str | None
    created_at: datetime


class Order(BaseModel):
    id: str
    workflow_id: str
    buyer: str
    merchant: str
    currency: str
    total: int
    wallet_amount: int
    gateway_amount: int
    method: PaymentMethod
    gateway: str | None
    buyer_wallet_id: str | None
    merchant_wallet_id: str
    items: list[OrderItem]
    status: OrderStatus
    failure_code: str | None
    refunded_amount: int
    refunded_wallet: int = 0
    refunded_gateway: int = 0
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    group_buy_id: str | None = None  # an order made by a group buy (its money moves with the session)
