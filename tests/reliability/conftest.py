"""Fixtures of the reliability tests (the ledger check after each is tests/reliability/invariants.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from payweave.chaos import ChaosStack
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
