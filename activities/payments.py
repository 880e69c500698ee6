"""Payments-database and gateway activities: payment records, gateway objects, transfer records."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.errors import business_errors
from activities.gateways.base import PaymentGateway
from db.engine import in_statement, in_transaction
from db.repositories import payments as repo
from payweave.contracts.activities import (
    CreateGatewayPaymentInput,
    GatewayPayment,
    GatewayPaymentRef,
    GatewayRefund,
    GatewayRefundRef,
    MarkPaymentInput,
    MarkTransferInput,
    RecordPaymentInput,
    RecordTransferInput,
    RefundGatewayPaymentInput,
)
from payweave.contracts.payments import Payment, Transfer
from payweave.metrics import saga_ended


async def record_payment_row(conn: AsyncConnection, inp: RecordPaymentInput) -> Payment:
    """The payment's row, keyed by its idempotency key (a retry gets the row it made)."""
    return await repo.create_payment(
        conn,
        payment_id=inp.payment_id,
        idempotency_key=inp.idempotency_key,
        workflow_id=inp.workflow_id,
        purpose=inp.purpose,
        owner=inp.owner,
        wallet_id=inp.wallet_id,
        gateway=inp.gateway,
        amount=inp.amount,
        currency=inp.currency,
        expires_at=inp.expires_at,
    )


async def move_payment_row(conn: AsyncConnection, inp: MarkPaymentInput) -> tuple[str, Payment]:
    """Move the payment's row (states never move backwards): (the status it had, the row now)."""
    return await repo.move_payment(
        conn,
        payment_id=inp.payment_id,
        status=inp.status,
        failure_code=inp.failure_code,
        credited=inp.credited,
    )


class PaymentActivities:
    def __init__(self, payments_engine: AsyncEngine, gateways: Mapping[str, PaymentGateway]) -> None:
        self._engine = payments_engine
        self._gateways = gateways

    def _gateway(self, name: str) -> PaymentGateway:
        return self._gateways[name]

    @activity.defn
    async def record_payment(self, inp: RecordPaymentInput) -> Payment:
        return await in_statement(self._engine, lambda conn: record_payment_row(conn, inp))

    @activity.defn
    async def create_gateway_payment(self, inp: CreateGatewayPaymentInput) -> GatewayPayment:
        """Create (and, with a payment method, confirm) the gateway object, then record its id.

        A crash between the gateway call and the record is safe: the retry sends the same idempotency key
        and the gateway answers with the object it already made.
        """
        async with business_errors():
            payment = await self._gateway(inp.gateway).create_payment(
                idempotency_key=inp.idempotency_key,
                amount=inp.amount,
                currency=inp.currency,
                metadata=inp.metadata,
                payment_method=inp.payment_method,
                description=inp.description,
            )

        async def record(conn: AsyncConnection) -> None:
            await repo.update_payment(
                conn,
                payment_id=inp.payment_id,
                gateway_payment_id=payment.id,
                next_action=payment.next_action,
                status="failed" if payment.status == "failed" else "awaiting_payment",
                failure_code=payment.failure_code,
            )

        await in_statement(self._engine, record)
        return payment

    @activity.defn
    async def get_gateway_payment(self, ref: GatewayPaymentRef) -> GatewayPayment:
        async with business_errors():
            return await self._gateway(ref.gateway).get_payment(ref.gateway_payment_id)

    @activity.defn
    async def cancel_gateway_payment(self, ref: GatewayPaymentRef) -> GatewayPayment:
        """Compensation for ``create_gateway_payment``; returns the real final state (it may have been paid)."""
        async with business_errors():
            return await self._gateway(ref.gateway).cancel_payment(ref.gateway_payment_id)

    @activity.defn
    async def refund_gateway_payment(self, inp: RefundGatewayPaymentInput) -> GatewayRefund:
        """Give a payment back at the gateway (same idempotency key on every attempt: one refund)."""
        async with business_errors():
            return await self._gateway(inp.gateway).refund(
                idempotency_key=inp.idempotency_key,
                gateway_payment_id=inp.gateway_payment_id,
                amount=inp.amount,
                metadata={"payment_id": inp.payment_id, "reason": inp.reason},
            )

    @activity.defn
    async def get_gateway_refund(self, ref: GatewayRefundRef) -> GatewayRefund:
        async with business_errors():
            return await self._gateway(ref.gateway).get_refund(ref.refund_id)

    @activity.defn
    async def mark_payment(self, inp: MarkPaymentInput) -> Payment:
        async with business_errors():
            before, payment = await in_statement(self._engine, lambda conn: move_payment_row(conn, inp))
        if payment.purpose == "deposit":  # a deposit saga ends with its payment
            saga_ended("deposit", before, payment.status)
        return payment

    @activity.defn
    async def record_transfer(self, inp: RecordTransferInput) -> Transfer:
        async def work(conn: AsyncConnection) -> Transfer:
            return await repo.create_transfer(
                conn,
                transfer_id=inp.transfer_id,
                workflow_id=inp.workflow_id,
                owner=inp.owner,
                from_wallet_id=inp.from_wallet_id,
                to_wallet_id=inp.to_wallet_id,
                amount=inp.amount,
                currency=inp.currency,
                description=inp.description,
            )

        return await in_transaction(self._engine, work)

    @activity.defn
    async def mark_transfer(self, inp: MarkTransferInput) -> Transfer:
        async def work(conn: AsyncConnection) -> tuple[str | None, Transfer]:
            before = await repo.get_transfer(conn, inp.transfer_id)
            after = await repo.update_transfer(
                conn, transfer_id=inp.transfer_id, status=inp.status, failure_code=inp.failure_code
            )
            return (before.status if before else None), after

        async with business_errors():
            before, transfer = await in_transaction(self._engine, work)
        saga_ended("transfer", before, transfer.status)
        return transfer
