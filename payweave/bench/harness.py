"""The embedded stack a benchmark runs on: PostgreSQL (both databases migrated), a Temporal dev server with the
payweave search attributes, localstripe, and a worker in this process — all on loopback, on free ports, in a
temporary directory, so a running ``payweave dev`` is never disturbed. Baselines run against the same servers
in the same process, so ratios compare like with like."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from db.engine import make_engine
from db.migrate import upgrade_all
from payweave import search_attributes as sa
from payweave.devstack.localstripe_server import start_localstripe_process
from payweave.devstack.postgres import PostgresServer
from payweave.devstack.supervisor import free_port, terminate
from payweave.devstack.temporal import temporal_cli_path
from payweave.settings import Settings


@dataclass
class Stack:
    settings: Settings
    client: Client
    wallet_engine: AsyncEngine
    payments_engine: AsyncEngine
    postgres: PostgresServer


@asynccontextmanager
async def embedded_stack(*, sandboxed: bool = False) -> AsyncIterator[Stack]:
    from workers.main import build_worker  # noqa: PLC0415 — the worker pulls in every workflow

    with tempfile.TemporaryDirectory(prefix="payweave-bench-") as tmp:
        root = Path(tmp)
        postgres = PostgresServer(root / "pg", free_port(), fast=True)
        postgres.start()
        stripe_port = free_port()
        localstripe = start_localstripe_process(stripe_port, log_path=root / "localstripe.log")
        env: WorkflowEnvironment | None = None
        try:
            for db in ("payweave_wallet", "payweave_payments"):
                postgres.create_database(db)
            settings = Settings(
                wallet_database_url=postgres.url("payweave_wallet"),
                payments_database_url=postgres.url("payweave_payments"),
                temporal_task_queue=f"bench-{uuid.uuid4().hex[:8]}",
                stripe_api_base=f"http://127.0.0.1:{stripe_port}",
                stripe_api_key=SecretStr("sk_test_payweave_bench"),
                schedules_enabled=False,
                # As production runs the worker (docker-compose.yml); `--sandboxed` measures the default.
                workflow_sandbox=sandboxed,
                _env_file=None,
            )
            await upgrade_all(settings.wallet_database_url, settings.payments_database_url)
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=str(temporal_cli_path()),
                search_attributes=sa.ALL,
                data_converter=pydantic_data_converter,
                dev_server_log_level="error",
            )
            wallet_engine = make_engine(settings.wallet_database_url, pool_size=30, max_overflow=30)
            payments_engine = make_engine(settings.payments_database_url, pool_size=30, max_overflow=30)
            worker = build_worker(
                env.client, settings, wallet_engine=wallet_engine, payments_engine=payments_engine
            )
            async with worker:
                yield Stack(settings, env.client, wallet_engine, payments_engine, postgres)
            await wallet_engine.dispose()
            await payments_engine.dispose()
        finally:
            if env is not None:
                await env.shutdown()
            terminate(localstripe)
            postgres.stop()
