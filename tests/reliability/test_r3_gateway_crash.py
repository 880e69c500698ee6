"""QUALITY R3: the activity crashes after the gateway call succeeded but before its answer is recorded; the
retry must find the object made before the crash, never make a second one.

The fault hook (``payweave.faults.fail_transiently``) fails ``create_gateway_payment`` at its first database
transaction — the one that records the gateway's answer, which comes *after* the gateway call. The test keeps
it failing until it has seen, on the real localstripe / the Xendit emulator, that the crashed attempt did make
the object; then it lets the retry through. Deposits and split checkouts, on both gateways, through the API.

How the retry finds the object: Stripe by its ``Idempotency-Key`` (``stripe_key(step key)``: the same on every
attempt). localstripe itself ignores that header; payweave's devstack wraps it with Stripe's documented
semantics (``payweave/devstack/localstripe_server.py``: the first answer is replayed for a repeated key), so
what is tested here is our use of the key against Stripe's contract. Xendit invoices take no idempotency key:
``XenditGateway`` looks the invoice up by ``external_id`` (= the step key) before creating one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payweave import faults
from payweave.chaos.gateways import stripe_intents, xendit_invoices
from payweave.ids import step_key
from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import until_done
from tests.e2e.test_sweeper import pay_at_gateway
from tests.helpers import create_wallet, deposit, idem, until_terminal, wallet

pytestmark = pytest.mark.reliability


async def gateway_objects(settings: Settings, gateway: str, wf_id: str) -> list[str]:
    """The ids of the gateway objects made for the saga ``wf_id``."""
    if gateway == "stripe":
        return (await stripe_intents(settings, "workflow_id")).get(wf_id, [])
    return [str(i["id"]) for i in await xendit_invoices(settings, step_key(wf_id, "gateway_payment"))]


async def recorded_gateway_id(payments_engine: AsyncEngine, wf_id: str) -> str | None:
    async with payments_engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT gateway_payment_id FROM payments WHERE workflow_id = :wf"), {"wf": wf_id}
            )
        ).scalar_one_or_none()


@pytest.mark.parametrize("flow", ["deposit", "split_checkout"])
@pytest.mark.parametrize("gateway", ["stripe", "xendit"])
async def test_a_gateway_object_made_before_a_crash_is_found_not_made_again(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    xendit: str,
    payments_engine: AsyncEngine,
    gateway: str,
    flow: str,
) -> None:
    sub, auth = users.new()
    w = await create_wallet(http, auth)
    key = idem()
    # A Stripe payer already holds a PaymentMethod (confirmed server-side); a Xendit payer pays the invoice.
    pm = {"payment_method": "pm_card_visa"} if gateway == "stripe" else {}
    body: dict[str, Any]
    if flow == "deposit":
        path, body = f"/v1/wallets/{w['id']}/deposits", {"amount": 3_100, "gateway": gateway, **pm}
        wf_id = f"deposit:{sub}:{key['Idempotency-Key']}"
    else:
        merchant, m_auth = users.new("merchant")
        await create_wallet(http, m_auth)
        await deposit(http, auth, w["id"], 1_000)
        path = "/v1/checkouts"
        body = {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 4_000,
            "payment": {"method": "split", "wallet_amount": 1_000, "gateway": gateway, **pm},
        }
        wf_id = f"checkout:{sub}:{key['Idempotency-Key']}"

    with faults.fail_transiently({"create_gateway_payment"}, 10_000):
        post = asyncio.create_task(http.post(path, json=body, headers={**auth, **key}))

        async def crashed() -> bool:
            return any(
                e.activity_type == "create_gateway_payment" and e.workflow_id == wf_id for e in faults.events
            )

        await eventually(crashed, timeout=60)
        made_before_the_retry = await gateway_objects(settings, gateway, wf_id)
        # The crashed attempt did the work at the gateway, and nothing was recorded.
        assert len(made_before_the_retry) == 1, made_before_the_retry
        assert await recorded_gateway_id(payments_engine, wf_id) is None
    # Disarmed: the next attempt (same step key) goes through.
    r = await post
    assert r.status_code == 202, r.text
    accepted: dict[str, Any] = r.json()
    if gateway == "xendit":
        await pay_at_gateway(settings, xendit, accepted["next_action"])
    if flow == "deposit":
        final = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
        assert final["status"] == "succeeded", final
        assert (await wallet(http, auth, w["id"]))["balance"] == 3_100
    else:
        final = await until_done(http, auth, accepted["id"])
        assert final["status"] == "paid", final
        assert (await wallet(http, auth, w["id"]))["balance"] == 0
    # One object, the one made before the crash, and it is the one recorded.
    assert await gateway_objects(settings, gateway, wf_id) == made_before_the_retry
    assert await recorded_gateway_id(payments_engine, wf_id) == made_before_the_retry[0]
    assert [e.attempt for e in faults.events if e.workflow_id == wf_id][0] == 1
