"""QUALITY R25: a group buy with 10,000 participants — joins, decision and bulk refund — without any history
limit failure, the ledger invariants holding after. Marked slow; the default run keeps a reduced version
(PAYWEAVE_R25_PARTICIPANTS, 300 by default, continuing as new every 100 joins); the full size:
``PAYWEAVE_R25_PARTICIPANTS=10000 pytest -m slow tests/e2e/test_group_buy_scale.py``."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.sagas import execute_update_across_runs
from db.engine import in_transaction
from db.repositories import ledger
from payweave import search_attributes as sa
from payweave.contracts.group_buy import CancelGroupBuy, GroupBuyInput, GroupBuyTerms, JoinRequest
from payweave.contracts.ledger import Posting
from payweave.settings import Settings
from workflows.bulk_refund import BulkRefundWorkflow
from workflows.group_buy import GroupBuyWorkflow

PARTICIPANTS = int(os.environ.get("PAYWEAVE_R25_PARTICIPANTS", "300"))
JOINS_PER_RUN = 2000 if PARTICIPANTS >= 5000 else 100
PRICE = 700
CONCURRENCY = 8  # Temporal admits 10 in-flight updates per workflow by default


pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


async def _funded_wallets(engine: AsyncEngine, tag: str, n: int) -> list[tuple[str, str]]:
    """n customer wallets holding PRICE each, funded in one journal (setup, not the thing under test)."""

    async def work(conn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
        owners = [f"r25-{tag}-{i}" for i in range(n)]
        await conn.execute(
            text(
                "INSERT INTO wallets (id, owner, currency, kind) "
                "SELECT 'wal_' || o, o, 'USD', 'customer' FROM unnest(CAST(:owners AS text[])) AS o"
            ),
            {"owners": owners},
        )
        fees = await ledger.ensure_system_wallet(conn, "platform_fees", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"r25:{tag}:funding",
            kind="test_funding",
            currency="USD",
            postings=[Posting(wallet_id=fees, amount=-PRICE * n)]
            + [Posting(wallet_id=f"wal_{o}", amount=PRICE) for o in owners],
        )
        return [(o, f"wal_{o}") for o in owners]

    return await in_transaction(engine, work)


@pytest.mark.slow
async def test_r25_many_participants_join_then_bulk_refund(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    tag = uuid.uuid4().hex[:10]
    buyers = await _funded_wallets(wallet_engine, tag, PARTICIPANTS)
    factory = f"r25-factory-{tag}"
    async with wallet_engine.begin() as conn:
        f_wallet, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{factory}", owner=factory, currency="USD"
        )
    gb_id = f"gb_r25_{tag}"
    wf_id = f"groupbuy:{factory}:{tag}"
    handle = await temporal.start_workflow(
        GroupBuyWorkflow.run,
        GroupBuyInput(
            terms=GroupBuyTerms(
                group_buy_id=gb_id,
                factory=factory,
                factory_wallet_id=f_wallet.id,
                product="r25 widget",
                unit_price=PRICE,
                currency="USD",
                moq=PARTICIPANTS + 1,  # never reached: every participant is refunded
                deadline=datetime.now(UTC) + timedelta(hours=6),
            ),
            joins_per_run=JOINS_PER_RUN,
        ),
        id=wf_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=sa.initial(
            kind="group_buy", owner=factory, amount=0, currency="USD", status="open"
        ),
    )
    first_run = handle.result_run_id
    limit = asyncio.Semaphore(CONCURRENCY)

    async def join(buyer: str, wallet_id: str) -> str:
        async with limit:
            joined = await execute_update_across_runs(
                temporal.get_workflow_handle(wf_id),
                GroupBuyWorkflow.join,
                JoinRequest(request_key="r25", buyer=buyer, quantity=1, method="wallet", wallet_id=wallet_id),
                update_id=f"join:{buyer}",
            )
            return joined.status

    statuses = await asyncio.gather(*(join(b, w) for b, w in buyers))
    assert statuses == ["held"] * PARTICIPANTS
    async with wallet_engine.connect() as conn:
        held = (
            await conn.execute(
                text("SELECT sum(held) FROM wallets WHERE owner LIKE :p"), {"p": f"r25-{tag}-%"}
            )
        ).scalar_one()
    assert held == PRICE * PARTICIPANTS

    latest = temporal.get_workflow_handle_for(GroupBuyWorkflow.run, wf_id)
    assert (await latest.describe()).run_id != first_run  # the open phase continued as new

    await latest.execute_update(GroupBuyWorkflow.cancel, CancelGroupBuy(reason="r25", by=factory))
    result = await latest.result()
    assert result.status == "refunded"
    assert result.refund is not None
    assert (result.refund.total, result.refund.released) == (PARTICIPANTS, PARTICIPANTS)
    outcomes = await temporal.get_workflow_handle_for(BulkRefundWorkflow.run, f"{wf_id}:bulk-refund").result()
    assert len(outcomes.outcomes) == PARTICIPANTS and set(outcomes.outcomes.values()) == {"released"}
    async with wallet_engine.connect() as conn:
        held, balance = (
            await conn.execute(
                text("SELECT sum(held), sum(balance) FROM wallets WHERE owner LIKE :p"), {"p": f"r25-{tag}-%"}
            )
        ).one()
    assert (held, balance) == (0, PRICE * PARTICIPANTS)
