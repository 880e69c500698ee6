"""Fixtures of the reliability tests (the ledger check after each is tests/reliability/invariants.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.testing import WorkflowEnvironment

from db.engine import in_transaction
from db.repositories import ledger
from payweave.chaos import ChaosStack
from payweave.contracts.ledger import Posting
from payweave.settings import Settings


@pytest.fixture
def chaos_stack(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    api_url: str,  # the fixture API receives localstripe's webhooks and signals the sagas
    session_dir: Path,
) -> ChaosStack:
    """The session's real parts, for the chaos harness: it serves its own API on a fresh task queue that only
    its killable worker child polls."""
    return ChaosStack(
        settings=settings,
        wallet_engine=wallet_engine,
        payments_engine=payments_engine,
        log_dir=session_dir / "chaos",
        temporal_address=temporal_env.client.service_client.config.target_host,
    )


async def fund(engine: AsyncEngine, amounts: dict[str, int], currency: str = "USD") -> None:
    """Put money in customer wallets directly, in one balanced journal from ``platform_fees`` (a test's
    starting balances, without a deposit saga per wallet)."""

    async def work(conn: AsyncConnection) -> None:
        fees = await ledger.ensure_system_wallet(conn, "platform_fees", currency)
        await ledger.post_journal(
            conn,
            idempotency_key=f"test-funding:{uuid.uuid4().hex}",
            kind="test_funding",
            currency=currency,
            postings=[Posting(wallet_id=fees, amount=-sum(amounts.values()))]
            + [Posting(wallet_id=w, amount=a) for w, a in amounts.items()],
        )

    await in_transaction(engine, work)
