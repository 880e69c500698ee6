"""A Temporal cancel racing a money step never creates or loses money: the deposit still credits the card
payment it made when the cancel lands in the same workflow task as the (remote) create's completion, the
checkout finishes as paid when the cancel reaches it while its (local) settle journal is being posted.
Real Temporal, real databases, real localstripe; only the step is held at a gate so the race is deterministic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import ledger
from payweave.contracts.activities import (
    CaptureHoldInput,
    CreateGatewayPaymentInput,
    GatewayPayment,
    JournalResult,
)
from payweave.contracts.ledger import Posting
from payweave.contracts.sagas import CheckoutInput, DepositInput
from payweave.settings import Settings
from tests.conftest import eventually
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings


def gated_create(real: Any, reached: asyncio.Event, release: asyncio.Event) -> Any:
    @activity.defn(name="create_gateway_payment")
    async def step(inp: CreateGatewayPaymentInput) -> GatewayPayment:
        reached.set()
        await release.wait()
        return await real(inp)  # type: ignore[no-any-return]

    return step


def gated_capture(real: Any, reached: asyncio.Event, release: asyncio.Event) -> Any:
    @activity.defn(name="capture_hold")
    async def step(inp: CaptureHoldInput) -> JournalResult:
        reached.set()
        await release.wait()
        return await real(inp)  # type: ignore[no-any-return]

    return step


async def completed(handle: WorkflowHandle[Any, Any], activity_type: str) -> bool:
    scheduled = set()
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == activity_type:
                scheduled.add(event.event_id)
        if event.HasField("activity_task_completed_event_attributes"):
            if event.activity_task_completed_event_attributes.scheduled_event_id in scheduled:
                return True
    return False


async def cancel_seen(handle: WorkflowHandle[Any, Any]) -> bool:
    """The cancel request is recorded and a workflow task has started since: the workflow has been told."""
    requested = False
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            requested = True
        elif requested and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            return True
    return False


async def race(
    temporal: Client,
    activities: list[Any],
    start: Callable[[str], Awaitable[WorkflowHandle[Any, Any]]],
    step: str,
    reached: asyncio.Event,
    release: asyncio.Event,
) -> WorkflowHandle[Any, Any]:
    """A remote money step finishes while the workflow worker is away; the cancel arrives before the workflow
    sees the completion, so both land in one workflow task."""
    queue = f"race-{uuid.uuid4().hex[:8]}"
    # The workflow workers run the local (database) steps; the gated remote step runs on the activity worker.
    local = {"activities": activities, "no_remote_activities": True}
    async with Worker(temporal, task_queue=queue, activities=activities):
        workflows = Worker(temporal, task_queue=queue, workflows=list(WORKFLOWS), **local)
        running = asyncio.create_task(workflows.run())
        handle = await start(queue)
        await asyncio.wait_for(reached.wait(), 60)
        await workflows.shutdown()  # the workflow worker goes away (a deploy, a crash) ...
        await running
        release.set()  # ... while the money step finishes
        await eventually(lambda: completed(handle, step))
        await handle.cancel()  # and a cancel arrives before the workflow sees the completion
        async with Worker(temporal, task_queue=queue, workflows=list(WORKFLOWS), **local):
            try:
                await handle.result()
            except WorkflowFailureError:
                pass
    return handle


async def local_race(
    temporal: Client,
    activities: list[Any],
    start: Callable[[str], Awaitable[WorkflowHandle[Any, Any]]],
    reached: asyncio.Event,
    release: asyncio.Event,
) -> WorkflowHandle[Any, Any]:
    """A local money step (it runs inside the workflow task) is still running when the cancel reaches the
    workflow: the workflow task heartbeats while the step runs, and the next one carries the cancel."""
    queue = f"race-{uuid.uuid4().hex[:8]}"
    async with Worker(temporal, task_queue=queue, workflows=list(WORKFLOWS), activities=activities):
        handle = await start(queue)
        await asyncio.wait_for(reached.wait(), 60)
        await handle.cancel()
        await eventually(lambda: cancel_seen(handle), timeout=60)
        release.set()
        try:
            await handle.result()
        except WorkflowFailureError:
            pass
    return handle


async def test_deposit_cancelled_with_its_card_charge_still_credits(
    temporal: Client, settings: Settings, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()
    real = build_activities(
        wallet_engine=wallet_engine,
        payments_engine=payments_engine,
        gateways=gateways_from_settings(settings),
    )
    create = next(a for a in real if a.__name__ == "create_gateway_payment")
    activities = [a for a in real if a.__name__ != "create_gateway_payment"]
    activities.append(gated_create(create, reached, release))

    async def new_wallet(conn):  # type: ignore[no-untyped-def]
        w, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        return w.id

    wallet_id = await in_transaction(wallet_engine, new_wallet)
    deposit_id = f"dep_{uuid.uuid4().hex[:20]}"

    async def start(queue: str) -> WorkflowHandle[Any, Any]:
        return await temporal.start_workflow(
            "DepositWorkflow",
            DepositInput(
                deposit_id=deposit_id,
                owner="o",
                wallet_id=wallet_id,
                amount=1_234,
                currency="USD",
                payment_method="pm_card_visa",
            ),
            id=f"deposit:test:{deposit_id}",
            task_queue=queue,
        )

    await race(temporal, activities, start, "create_gateway_payment", reached, release)
    async with payments_engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, credited FROM payments WHERE id = :id"), {"id": deposit_id}
            )
        ).one()
    async with wallet_engine.connect() as conn:
        balance = (
            await conn.execute(text("SELECT balance FROM wallets WHERE id = :id"), {"id": wallet_id})
        ).scalar()
    assert (tuple(row), balance) == (("succeeded", True), 1_234)


async def test_checkout_cancelled_with_its_settle_finishes_paid(
    temporal: Client, settings: Settings, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()
    real = build_activities(
        wallet_engine=wallet_engine,
        payments_engine=payments_engine,
        gateways=gateways_from_settings(settings),
    )
    capture = next(a for a in real if a.__name__ == "capture_hold")
    activities = [a for a in real if a.__name__ != "capture_hold"]
    activities.append(gated_capture(capture, reached, release))

    async def wallets(conn):  # type: ignore[no-untyped-def]
        b, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        m, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"fund:{b.id}",
            kind="deposit",
            currency="USD",
            postings=[Posting(wallet_id=clearing, amount=-1_000), Posting(wallet_id=b.id, amount=1_000)],
        )
        return b.id, m.id

    buyer, merchant = await in_transaction(wallet_engine, wallets)
    order_id = f"ord_{uuid.uuid4().hex[:20]}"

    async def start(queue: str) -> WorkflowHandle[Any, Any]:
        return await temporal.start_workflow(
            "CheckoutWorkflow",
            CheckoutInput(
                order_id=order_id,
                buyer="b",
                merchant="m",
                currency="USD",
                total=1_000,
                method="split",
                wallet_amount=300,
                gateway="stripe",
                payment_method="pm_card_visa",
                buyer_wallet_id=buyer,
                merchant_wallet_id=merchant,
            ),
            id=f"checkout:test:{order_id}",
            task_queue=queue,
            task_timeout=timedelta(seconds=2),  # heartbeats every 1.6 s while the settle runs
        )

    # The gate opens only once a workflow task carrying the cancel has started: the settle was still running.
    await local_race(temporal, activities, start, reached, release)
    async with payments_engine.connect() as conn:
        order = (
            await conn.execute(text("SELECT status FROM orders WHERE id = :id"), {"id": order_id})
        ).scalar()
        payment = (
            await conn.execute(text("SELECT status FROM payments WHERE id = :id"), {"id": f"pay_{order_id}"})
        ).scalar()
    async with wallet_engine.connect() as conn:
        balances = dict(
            (
                await conn.execute(
                    text("SELECT id, balance FROM wallets WHERE id = ANY(:ids)"), {"ids": [buyer, merchant]}
                )
            ).all()
        )
    assert (order, payment) == ("paid", "succeeded")
    assert (balances[buyer], balances[merchant]) == (700, 1_000)
