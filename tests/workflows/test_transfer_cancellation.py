"""Cancelling a transfer while its credit is in flight (an operator's Cancel in the Web UI) never creates or
loses money: the saga waits for the in-flight attempt, then reverses the debit only if the credit did not
post. The real ledger activities run; only the credit step is held at a gate the test controls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import ledger
from payweave.contracts.activities import JournalResult, PostJournalInput
from payweave.contracts.ledger import Posting
from payweave.contracts.sagas import TransferInput
from workers.registry import WORKFLOWS, build_activities
from workflows.transfer import TransferWorkflow


class CreditGate:
    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.honour_cancel = True


GATE = CreditGate()


def gated(real: Callable[[PostJournalInput], Awaitable[JournalResult]]) -> Callable[..., object]:
    @activity.defn(name="post_journal")
    async def post_journal(inp: PostJournalInput) -> JournalResult:
        if inp.idempotency_key.endswith(":credit"):
            GATE.reached.set()
            while not GATE.release.is_set():
                activity.heartbeat()
                try:
                    await asyncio.wait_for(GATE.release.wait(), 0.05)
                except TimeoutError:
                    continue
                except asyncio.CancelledError:
                    if GATE.honour_cancel:
                        raise
                    GATE.release.set()  # the attempt was already committing: it finishes anyway
        return await real(inp)

    return post_journal


@pytest_asyncio.fixture(scope="module")
async def gated_queue(
    temporal: Client, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> AsyncIterator[str]:
    queue = f"gated-{uuid.uuid4().hex[:8]}"
    real = build_activities(wallet_engine=wallet_engine, payments_engine=payments_engine, gateways={})
    post = next(a for a in real if a.__name__ == "post_journal")
    activities = [a for a in real if a.__name__ != "post_journal"] + [gated(post)]  # type: ignore[arg-type]
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=activities,
        default_heartbeat_throttle_interval=timedelta(milliseconds=50),
        max_heartbeat_throttle_interval=timedelta(milliseconds=50),
    ):
        yield queue


async def funded_wallets(engine: AsyncEngine, amount: int) -> tuple[str, str]:
    async def work(conn):  # type: ignore[no-untyped-def]
        a, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        b, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=uuid.uuid4().hex, currency="USD"
        )
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"fund:{a.id}",
            kind="deposit",
            currency="USD",
            postings=[Posting(wallet_id=clearing, amount=-amount), Posting(wallet_id=a.id, amount=amount)],
        )
        return a.id, b.id

    return await in_transaction(engine, work)  # type: ignore[no-any-return]


async def balances(engine: AsyncEngine, *ids: str) -> list[int]:
    async with engine.connect() as conn:
        rows = dict(
            (
                await conn.execute(
                    text("SELECT id, balance FROM wallets WHERE id = ANY(:ids)"), {"ids": list(ids)}
                )
            ).all()
        )
    return [rows[i] for i in ids]


@pytest.mark.parametrize("credit_commits", [False, True], ids=["credit-cancelled", "credit-commits-anyway"])
async def test_cancel_during_the_credit_never_creates_or_loses_money(
    temporal: Client,
    gated_queue: str,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    credit_commits: bool,
) -> None:
    GATE.reached.clear()
    GATE.release.clear()
    GATE.honour_cancel = not credit_commits
    src, dst = await funded_wallets(wallet_engine, 1_000)
    transfer_id = f"tr_{uuid.uuid4().hex[:20]}"
    handle = await temporal.start_workflow(
        TransferWorkflow.run,
        TransferInput(
            transfer_id=transfer_id,
            owner="o",
            from_wallet_id=src,
            to_wallet_id=dst,
            amount=400,
            currency="USD",
        ),
        id=f"transfer:test:{transfer_id}",
        task_queue=gated_queue,
    )
    await asyncio.wait_for(GATE.reached.wait(), 30)
    await handle.cancel()
    if credit_commits:  # the in-flight credit finished: the saga completes, the cancel came too late
        assert (await handle.result()).status == "completed"
    else:
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    async with payments_engine.connect() as conn:
        status = (
            await conn.execute(
                text("SELECT status, failure_code FROM transfers WHERE id = :id"), {"id": transfer_id}
            )
        ).one()
    src_balance, dst_balance = await balances(wallet_engine, src, dst)
    if credit_commits:
        assert tuple(status) == ("completed", None)
        assert (src_balance, dst_balance) == (600, 400)
    else:
        assert tuple(status) == ("failed", "canceled")
        assert (src_balance, dst_balance) == (1_000, 0)
    async with wallet_engine.connect() as conn:
        transit = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN journals j ON j.id = e.journal_id "
                    "WHERE j.saga_id = :wf AND e.wallet_id = 'sys_transit_usd'"
                ),
                {"wf": handle.id},
            )
        ).scalar_one()
    assert transit == 0  # nothing stranded in (or conjured out of) transit
