"""A worker of the test's own on its own task queue, with the API served for that queue: for tests that wrap the
worker's activities in an interceptor (a fault, a recording), against the session's real Temporal dev server,
databases and gateways."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from payweave.chaos import start_api
from payweave.settings import Settings
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings


@asynccontextmanager
async def own_queue(
    settings: Settings,
    temporal: Client,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    *,
    prefix: str,
    interceptors: Sequence[Interceptor],
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """Yields an HTTP client of the API that starts sagas on the new queue, and the settings naming that queue."""
    ours = settings.model_copy(update={"temporal_task_queue": f"{prefix}-{uuid.uuid4().hex[:8]}"})
    worker = Worker(
        temporal,
        task_queue=ours.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            wallet_engine=wallet_engine,
            payments_engine=payments_engine,
            gateways=gateways_from_settings(ours),
            settings=ours,
            client=temporal,
        ),
        interceptors=interceptors,
    )
    async with worker:
        url, stop = await start_api(ours, temporal.service_client.config.target_host)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                yield http, ours
        finally:
            await stop()
