"""QUALITY R16: a payment that succeeds after the checkout expired (or was canceled) is refunded
automatically, with an audit trail; wallet hold and stock are released. Gateway replaced by fake activities
of the same names; everything else (Temporal, ledger, orders) is real."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import commerce, ledger
from payweave.contracts.activities import (
    CreateGatewayPaymentInput,
    GatewayPayment,
    GatewayPaymentRef,
    GatewayRefund,
    RefundGatewayPaymentInput,
)
from payweave.contracts.commerce import OrderItem
from payweave.contracts.ledger import Posting
from payweave.contracts.sagas import CheckoutInput
from workers.registry import WORKFLOWS, build_activities

REFUNDS: list[RefundGatewayPaymentInput] = []


pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


@activity.defn(name="create_gateway_payment")
async def create(inp: CreateGatewayPaymentInput) -> GatewayPayment:
    return GatewayPayment(
        gateway="stripe",
        id=f"pi_{inp.payment_id}",
        status="requires_action",
        amount=inp.amount,
        currency=inp.currency,
    )


@activity.defn(name="cancel_gateway_payment")
async def cancel(ref: GatewayPaymentRef) -> GatewayPayment:
    return GatewayPayment(
        gateway="stripe", id=ref.gateway_payment_id, status="succeeded", amount=1, currency="USD"
    )


@activity.defn(name="refund_gateway_payment")
async def refund(inp: RefundGatewayPaymentInput) -> GatewayRefund:
    REFUNDS.append(inp)
    return GatewayRefund(
        gateway="stripe",
        id=f"re_{inp.idempotency_key}",
        gateway_payment_id=inp.gateway_payment_id,
        amount=inp.amount,
        status="succeeded",
    )


@pytest_asyncio.fixture(scope="module")
async def late_queue(
    temporal: Client, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> AsyncIterator[str]:
    queue = f"late-{uuid.uuid4().hex[:8]}"
    fakes = {"create_gateway_payment", "cancel_gateway_payment", "refund_gateway_payment"}
    real = [
        a
        for a in build_activities(wallet_engine=wallet_engine, payments_engine=payments_engine, gateways={})
        if a.__name__ not in fakes
    ]
    async with Worker(
        temporal, task_queue=queue, workflows=list(WORKFLOWS), activities=[*real, create, cancel, refund]
    ):
        yield queue


async def test_payment_after_expiry_is_refunded_and_everything_released(
    temporal: Client, late_queue: str, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    suffix = uuid.uuid4().hex[:12]

    async def wallets(conn):  # type: ignore[no-untyped-def]
        buyer, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_b{suffix}", owner=f"b{suffix}", currency="USD"
        )
        merchant, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_m{suffix}", owner=f"m{suffix}", currency="USD"
        )
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"fund:{suffix}",
            kind="deposit",
            currency="USD",
            postings=[Posting(wallet_id=clearing, amount=-400), Posting(wallet_id=buyer.id, amount=400)],
        )
        return buyer.id, merchant.id

    buyer_wallet, merchant_wallet = await in_transaction(wallet_engine, wallets)

    async def product(conn):  # type: ignore[no-untyped-def]
        return await commerce.create_product(
            conn,
            product_id=f"prod_{suffix}",
            merchant=f"m{suffix}",
            name="p",
            price=1_000,
            currency="USD",
            stock=1,
        )

    await in_transaction(payments_engine, product)
    order_id = f"ord_{suffix}"
    result = await temporal.execute_workflow(
        "CheckoutWorkflow",
        CheckoutInput(
            order_id=order_id,
            buyer=f"b{suffix}",
            merchant=f"m{suffix}",
            currency="USD",
            items=[OrderItem(product_id=f"prod_{suffix}", quantity=1, unit_price=1_000)],
            total=1_000,
            method="split",
            wallet_amount=400,
            gateway="stripe",
            buyer_wallet_id=buyer_wallet,
            merchant_wallet_id=merchant_wallet,
            expires_in_seconds=1,
        ),
        id=f"checkout:test:{order_id}",
        task_queue=late_queue,
    )
    assert (result["status"], result["failure_code"], result["late_payment_refunded"]) == (
        "expired",
        "expired",
        True,
    )
    assert [(r.amount, r.reason) for r in REFUNDS if r.payment_id == f"pay_{order_id}"] == [
        (600, "late_payment")
    ]
    async with payments_engine.connect() as conn:
        payment = (
            await conn.execute(
                text("SELECT status, failure_code FROM payments WHERE id = :id"), {"id": f"pay_{order_id}"}
            )
        ).one()
        stock = (
            await conn.execute(
                text("SELECT stock, reserved FROM products WHERE id = :id"), {"id": f"prod_{suffix}"}
            )
        ).one()
    assert tuple(payment) == ("refunded", "late_payment") and tuple(stock) == (1, 0)
    async with wallet_engine.connect() as conn:
        buyer = (
            await conn.execute(text("SELECT balance, held FROM wallets WHERE id = :id"), {"id": buyer_wallet})
        ).one()
    assert tuple(buyer) == (400, 0)
