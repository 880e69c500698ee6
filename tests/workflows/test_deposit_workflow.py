"""DepositWorkflow edge cases with the gateway replaced by fake activities of the same names (ARCHITECTURE §10):
real Temporal, real databases, a gateway whose answers the test chooses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import ledger
from payweave.contracts.activities import CreateGatewayPaymentInput, GatewayPayment, GatewayPaymentRef
from payweave.contracts.sagas import DepositInput
from tests.conftest import eventually
from workers.registry import WORKFLOWS, build_activities

PAID_DURING_CANCEL: set[str] = set()


@activity.defn(name="create_gateway_payment")
async def fake_create(inp: CreateGatewayPaymentInput) -> GatewayPayment:
    return GatewayPayment(
        gateway="stripe",
        id=f"pi_fake_{inp.payment_id}",
        status="requires_action",
        amount=inp.amount,
        currency=inp.currency,
        next_action={"type": "fake"},
    )


@activity.defn(name="cancel_gateway_payment")
async def fake_cancel(ref: GatewayPaymentRef) -> GatewayPayment:
    # The race every gateway has: the payer paid just before our cancellation arrived.
    status = "succeeded" if ref.payment_id in PAID_DURING_CANCEL else "canceled"
    return GatewayPayment(
        gateway="stripe", id=ref.gateway_payment_id, status=status, amount=1, currency="USD"
    )


@pytest_asyncio.fixture(scope="module")
async def fake_gateway_queue(
    temporal: Client, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> AsyncIterator[str]:
    queue = f"fake-gateway-{uuid.uuid4().hex[:8]}"
    real = build_activities(wallet_engine=wallet_engine, payments_engine=payments_engine, gateways={})
    activities = [a for a in real if a.__name__ not in ("create_gateway_payment", "cancel_gateway_payment")]
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[*activities, fake_create, fake_cancel],
    ):
        yield queue


async def _wallet(engine: AsyncEngine) -> str:
    async def work(conn):  # type: ignore[no-untyped-def]
        w, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        return w.id

    return await in_transaction(engine, work)


async def test_payment_that_wins_the_race_against_expiry_is_still_credited(
    temporal: Client, fake_gateway_queue: str, wallet_engine: AsyncEngine
) -> None:
    wallet_id = await _wallet(wallet_engine)
    deposit_id = f"dep_{uuid.uuid4().hex[:20]}"
    PAID_DURING_CANCEL.add(deposit_id)
    result = await temporal.execute_workflow(
        "DepositWorkflow",
        DepositInput(
            deposit_id=deposit_id,
            owner="o",
            wallet_id=wallet_id,
            amount=1_500,
            currency="USD",
            expires_in_seconds=1,
        ),
        id=f"deposit:test:{deposit_id}",
        task_queue=fake_gateway_queue,
    )
    assert result["status"] == "succeeded" and result["credited"] is True
    async with wallet_engine.connect() as conn:
        balance = (
            await conn.execute(text("SELECT balance FROM wallets WHERE id = :id"), {"id": wallet_id})
        ).scalar()
    assert balance == 1_500


async def test_unpaid_deposit_expires_without_a_ledger_write(
    temporal: Client, fake_gateway_queue: str, wallet_engine: AsyncEngine
) -> None:
    wallet_id = await _wallet(wallet_engine)
    deposit_id = f"dep_{uuid.uuid4().hex[:20]}"
    result = await temporal.execute_workflow(
        "DepositWorkflow",
        DepositInput(
            deposit_id=deposit_id,
            owner="o",
            wallet_id=wallet_id,
            amount=1_500,
            currency="USD",
            expires_in_seconds=1,
        ),
        id=f"deposit:test:{deposit_id}",
        task_queue=fake_gateway_queue,
    )
    assert (result["status"], result["credited"]) == ("expired", False)
    async with wallet_engine.connect() as conn:
        n = (
            await conn.execute(text("SELECT count(*) FROM entries WHERE wallet_id = :id"), {"id": wallet_id})
        ).scalar()
    assert n == 0


async def test_cancelled_deposit_closes_the_intent_and_still_credits_a_payment_that_got_through(
    temporal: Client, fake_gateway_queue: str, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    from temporalio.client import WorkflowFailureError

    from payweave.contracts.sagas import DepositStatus

    outcomes = {}
    for paid in (False, True):
        wallet_id = await _wallet(wallet_engine)
        deposit_id = f"dep_{uuid.uuid4().hex[:20]}"
        if paid:
            PAID_DURING_CANCEL.add(deposit_id)
        handle = await temporal.start_workflow(
            "DepositWorkflow",
            DepositInput(
                deposit_id=deposit_id,
                owner="o",
                wallet_id=wallet_id,
                amount=300,
                currency="USD",
                expires_in_seconds=3600,
            ),
            id=f"deposit:test:{deposit_id}",
            task_queue=fake_gateway_queue,
        )

        async def awaiting(h: WorkflowHandle[Any, Any] = handle) -> bool:
            view = await h.query("status", result_type=DepositStatus)
            return view is not None and view.status == "awaiting_payment"

        await eventually(awaiting)
        await handle.cancel()
        try:
            await handle.result()
        except WorkflowFailureError:
            pass
        async with payments_engine.connect() as conn:
            status = (
                await conn.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": deposit_id})
            ).scalar_one()
        async with wallet_engine.connect() as conn:
            balance = (
                await conn.execute(text("SELECT balance FROM wallets WHERE id = :id"), {"id": wallet_id})
            ).scalar_one()
        outcomes[paid] = (status, balance)
    assert outcomes == {False: ("canceled", 0), True: ("succeeded", 300)}
