"""Order and stock activities (payments database). Reservations are keyed; releasing or committing twice
changes nothing."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.errors import business_errors
from activities.payments import record_payment_row
from db.engine import in_statement, in_transaction
from db.repositories import commerce
from payweave.contracts.activities import (
    FinishRefundInput,
    MarkOrderInput,
    RecordOrderInput,
    ReservationRef,
    ReserveRefundInput,
    ReserveStockInput,
)
from payweave.contracts.commerce import Order, Refund, Reservation
from payweave.metrics import saga_ended


async def move_order(conn: AsyncConnection, mark: MarkOrderInput) -> tuple[str | None, Order]:
    """Move the order's status (one locked read); also the status it had, for ``saga_ended("checkout", ...)``
    once the transaction committed."""
    return await commerce.move_order(
        conn, order_id=mark.order_id, status=mark.status, failure_code=mark.failure_code
    )


class OrderActivities:
    def __init__(self, payments_engine: AsyncEngine) -> None:
        self._engine = payments_engine

    @activity.defn
    async def record_order(self, inp: RecordOrderInput) -> Order:
        async def work(conn: AsyncConnection) -> Order:
            return await commerce.create_order(
                conn,
                order_id=inp.order_id,
                workflow_id=inp.workflow_id,
                buyer=inp.buyer,
                merchant=inp.merchant,
                currency=inp.currency,
                total=inp.total,
                wallet_amount=inp.wallet_amount,
                gateway_amount=inp.gateway_amount,
                method=inp.method,
                gateway=inp.gateway,
                buyer_wallet_id=inp.buyer_wallet_id,
                merchant_wallet_id=inp.merchant_wallet_id,
                items=inp.items,
                expires_at=inp.expires_at,
            )

        if inp.payment is None:
            return await in_statement(self._engine, work)
        payment = inp.payment

        async def with_payment(conn: AsyncConnection) -> Order:
            order = await work(conn)
            await record_payment_row(conn, payment)
            return order

        return await in_transaction(self._engine, with_payment)

    @activity.defn
    async def reserve_stock(self, inp: ReserveStockInput) -> Reservation:
        async def work(conn: AsyncConnection) -> Reservation:
            return await commerce.reserve_stock(
                conn,
                idempotency_key=inp.idempotency_key,
                reservation_id=inp.reservation_id,
                product_id=inp.product_id,
                order_id=inp.order_id,
                quantity=inp.quantity,
            )

        async with business_errors():
            return await in_transaction(self._engine, work)

    @activity.defn
    async def release_stock(self, ref: ReservationRef) -> Reservation | None:
        """Compensation for ``reserve_stock``: harmless when nothing was reserved."""

        async def work(conn: AsyncConnection) -> Reservation | None:
            return await commerce.release_reservation(conn, ref.reservation_id)

        return await in_transaction(self._engine, work)

    @activity.defn
    async def commit_stock(self, ref: ReservationRef) -> Reservation | None:
        async def work(conn: AsyncConnection) -> Reservation | None:
            return await commerce.commit_reservation(conn, ref.reservation_id)

        return await in_transaction(self._engine, work)

    @activity.defn
    async def mark_order(self, inp: MarkOrderInput) -> Order:
        async with business_errors():
            before, order = await in_transaction(self._engine, lambda conn: move_order(conn, inp))
        saga_ended("checkout", before, order.status)  # a checkout saga ends with its order
        return order

    @activity.defn
    async def reserve_refund(self, inp: ReserveRefundInput) -> Refund:
        """Book the refund against the order (serialized per order by its row lock; never above what was paid)."""

        async def work(conn: AsyncConnection) -> Refund:
            return await commerce.reserve_refund(
                conn,
                refund_id=inp.refund_id,
                workflow_id=inp.workflow_id,
                order_id=inp.order_id,
                requester=inp.requester,
                amount=inp.amount,
                policy=inp.policy,
                reason=inp.reason,
            )

        async with business_errors():
            return await in_transaction(self._engine, work)

    @activity.defn
    async def finish_refund(self, inp: FinishRefundInput) -> Refund:
        async def work(conn: AsyncConnection) -> tuple[str | None, Refund]:
            before = await commerce.get_refund(conn, inp.refund_id)
            after = await commerce.finish_refund(
                conn,
                refund_id=inp.refund_id,
                status=inp.status,
                failure_code=inp.failure_code,
                gateway_refund_id=inp.gateway_refund_id,
            )
            return (before.status if before else None), after

        async with business_errors():
            before, refund = await in_transaction(self._engine, work)
        saga_ended("refund", before, refund.status)
        return refund
