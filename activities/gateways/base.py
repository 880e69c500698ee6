"""The one small interface every gateway adapter implements."""

from __future__ import annotations

from typing import Protocol

from payweave.contracts.activities import GatewayPayment, GatewayRefund


class PaymentGateway(Protocol):
    name: str

    async def create_payment(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        payment_method: str | None = None,
        description: str | None = None,
    ) -> GatewayPayment: ...

    async def get_payment(self, gateway_payment_id: str) -> GatewayPayment: ...

    async def cancel_payment(self, gateway_payment_id: str) -> GatewayPayment: ...

    async def get_refund(self, refund_id: str) -> GatewayRefund: ...

    async def refund(
        self, *, idempotency_key: str, gateway_payment_id: str, amount: int, metadata: dict[str, str]
    ) -> GatewayRefund: ...
