"""QUALITY R15 for Stripe: the call reached Stripe and did the work, but the answer was lost (a 500 or a reset
on the way back). The retry — same idempotency key — gets the first intent back: one charge, never two.
A small loopback proxy in front of localstripe loses the first answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from activities.gateways.errors import GatewayError
from activities.gateways.stripe import StripeGateway
from payweave.devstack.supervisor import free_port
from payweave.settings import Settings

pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


@pytest_asyncio.fixture
async def lossy_stripe(settings: Settings) -> AsyncIterator[tuple[str, list[str]]]:
    upstream = settings.stripe_api_base or ""
    lost: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        async with httpx.AsyncClient(base_url=upstream) as client:
            answer = await client.request(
                request.method,
                request.rel_url.path_qs,
                content=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            )
        if request.method == "POST" and request.path == "/v1/payment_intents" and not lost:
            lost.append(answer.json()["id"])  # the work was done upstream; the caller never hears of it
            return web.json_response({"error": {"message": "internal"}}, status=500)
        return web.Response(
            body=answer.content,
            status=answer.status_code,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", lost
    await runner.cleanup()


async def test_a_lost_answer_is_resolved_by_the_retry_without_a_second_charge(
    settings: Settings, lossy_stripe: tuple[str, list[str]]
) -> None:
    base, lost = lossy_stripe
    gateway = StripeGateway(settings.stripe_api_key.get_secret_value(), base)
    key = f"deposit:r15:{uuid.uuid4().hex}:gateway_payment"
    with pytest.raises(GatewayError) as first:
        await gateway.create_payment(
            idempotency_key=key,
            amount=4_200,
            currency="USD",
            metadata={"r15": key},
            payment_method="pm_card_visa",
        )
    assert first.value.retryable  # a 500 is retried by Temporal, with the same key
    retried = await gateway.create_payment(
        idempotency_key=key,
        amount=4_200,
        currency="USD",
        metadata={"r15": key},
        payment_method="pm_card_visa",
    )
    assert lost and retried.id == lost[0]
    assert retried.status == "succeeded" and retried.amount == 4_200
