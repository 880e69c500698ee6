"""QUALITY R4: the Temporal dev server (persistent file) restarts while a deposit waits for its payment; after
the restart a new worker picks the saga up from the stored history and it completes: credited once (I5, I1)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import ledger
from db.verify import verify_ledger
from payweave import search_attributes as sa
from payweave.contracts.sagas import DepositInput, PaymentEvent
from payweave.devstack.supervisor import Supervisor, free_port, wait_tcp
from payweave.devstack.temporal import dev_server_argv
from payweave.settings import Settings
from tests.conftest import eventually
from tests.e2e.test_sweeper import pay_at_gateway
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings
from workflows.deposit import DepositWorkflow

pytestmark = pytest.mark.reliability


def _server(tmp: Path, port: int, ui_port: int) -> Supervisor:
    sup = Supervisor()
    sup.start("temporal", dev_server_argv(tmp / "temporal.db", port, ui_port), log_path=tmp / "temporal.log")
    wait_tcp("127.0.0.1", port, 60, check=sup.check)
    return sup


async def _connect(port: int) -> Client:
    """The port opens before the frontend is healthy: connect once Temporal says it is ready."""

    async def attempt() -> Client | None:
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except RuntimeError:  # "Frontend is not healthy yet"
            return None

    client: Client = await eventually(attempt, timeout=60, interval=0.2)
    return client


def _worker(
    client: Client, queue: str, settings: Settings, wallets: AsyncEngine, payments: AsyncEngine
) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            wallet_engine=wallets,
            payments_engine=payments,
            gateways=gateways_from_settings(settings),
            settings=settings,
        ),
    )


async def test_a_deposit_survives_a_temporal_server_restart(
    tmp_path: Path,
    settings: Settings,
    xendit: str,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    port, ui_port = free_port(), free_port()
    queue = f"r4-{uuid.uuid4().hex[:8]}"
    owner = f"r4-{uuid.uuid4().hex[:8]}"
    created, _ = await in_transaction(
        wallet_engine,
        lambda c: ledger.create_wallet(c, wallet_id=f"wal_{owner}", owner=owner, currency="USD"),
    )
    deposit = DepositInput(
        deposit_id=f"dep_{owner}", owner=owner, wallet_id=created.id, amount=2_500, currency="USD"
    )
    wf_id = f"deposit:{owner}:r4"

    sup = await asyncio.to_thread(_server, tmp_path, port, ui_port)
    try:
        client = await _connect(port)
        async with _worker(client, queue, settings, wallet_engine, payments_engine):
            handle = await client.start_workflow(
                DepositWorkflow.run,
                deposit,
                id=wf_id,
                task_queue=queue,
                search_attributes=sa.initial(kind="deposit", owner=owner, amount=2_500, currency="USD"),
            )

            async def awaiting() -> object:
                view = await handle.query(DepositWorkflow.status)
                return view if view is not None and view.status == "awaiting_payment" else None

            view = await eventually(awaiting)
    finally:
        await asyncio.to_thread(sup.stop)

    # The payer pays while Temporal is down; then Temporal comes back on the same file.
    await pay_at_gateway(settings, xendit, view.next_action)
    sup = await asyncio.to_thread(_server, tmp_path, port, ui_port)
    try:
        client = await _connect(port)
        async with _worker(client, queue, settings, wallet_engine, payments_engine):
            handle = client.get_workflow_handle_for(DepositWorkflow.run, wf_id)
            await handle.signal(
                DepositWorkflow.payment_succeeded,
                PaymentEvent(gateway="stripe", gateway_payment_id=view.gateway_payment_id),
            )
            result = await handle.result()
    finally:
        await asyncio.to_thread(sup.stop)
    assert (result.status, result.credited) == ("succeeded", True)
    wallet = await in_transaction(wallet_engine, lambda c: ledger.get_wallet(c, created.id))
    assert wallet is not None and wallet.balance == 2_500
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations
