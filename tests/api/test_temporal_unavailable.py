"""Temporal unreachable when a saga is to start: 503 problem+json (never a 500), nothing started, and the same
request with the same Idempotency-Key, once Temporal answers, starts the saga exactly once."""

from __future__ import annotations

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from payweave.devstack.temporal import temporal_cli_path
from payweave.settings import Settings
from tests.api.support import assert_problem
from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem


async def unreachable_temporal() -> Client:
    """A client connected to a Temporal that then went away (a restart, an outage), failing at once instead
    of retrying for a while."""
    gone = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli_path()), dev_server_log_level="error"
    )
    dead = await Client.connect(
        gone.client.service_client.config.target_host,
        data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=0),
    )
    await gone.shutdown()
    return dead


async def test_a_saga_start_with_temporal_down_is_503_and_the_retry_starts_it_once(
    http: httpx.AsyncClient, users: Users, settings: Settings, migrated: None
) -> None:
    _, buyer = users.new()
    merchant, m_auth = users.new("merchant")
    b = await create_wallet(http, buyer)
    await create_wallet(http, m_auth)
    await deposit(http, buyer, b["id"], 700)
    app = create_app(settings, temporal=await unreachable_temporal())
    body = {"merchant_id": merchant, "currency": "USD", "amount": 700, "payment": {"method": "wallet"}}
    key = idem()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payweave.test") as down:
            assert_problem(
                await down.post("/v1/checkouts", json=body, headers={**buyer, **key}),
                503,
                "service_unavailable",
            )
    r = await http.post("/v1/checkouts", json=body, headers={**buyer, **key})
    assert r.status_code == 202, r.text
    path = f"/v1/checkouts/{r.json()['id']}"

    async def paid() -> bool:
        return bool((await http.get(path, headers=buyer)).json()["status"] == "paid")

    await eventually(paid)
    assert (await http.get(f"/v1/wallets/{b['id']}", headers=buyer)).json()["balance"] == 0
