"""Stripe webhooks: authenticity (R11), duplicates and order (R10), unknown objects (R13)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.routers.webhooks import InvalidSignature, verify_stripe_signature
from payweave.settings import Settings
from tests.conftest import WEBHOOK_SECRET, Users, eventually
from tests.helpers import create_wallet, idem, until_terminal, wallet

pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def intent_event(event_type: str, intent_id: str, workflow_id: str | None, **extra: Any) -> bytes:
    obj = {
        "id": intent_id,
        "object": "payment_intent",
        "metadata": {"workflow_id": workflow_id} if workflow_id else {},
        **extra,
    }
    return json.dumps(
        {"id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": event_type, "data": {"object": obj}}
    ).encode()


async def post(http: httpx.AsyncClient, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await http.post("/v1/webhooks/stripe", content=payload, headers=headers)


async def stored_events(engine: AsyncEngine, object_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id, event_type, workflow_id, routed_at, route_error FROM webhook_events "
                "WHERE object_id = :o ORDER BY id"
            ),
            {"o": object_id},
        )
        return [dict(r._mapping) for r in rows]


async def pay(settings: Settings, intent_id: str) -> None:
    """The payer's side, as Stripe.js would do it: attach a card and confirm."""
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )
    await client.v1.payment_intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
    await client.v1.payment_intents.confirm_async(intent_id)


async def awaiting_deposit(
    http: httpx.AsyncClient, users: Users, amount: int = 4_200
) -> tuple[dict[str, str], dict[str, Any], str]:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.post(
        f"/v1/wallets/{w['id']}/deposits", json={"amount": amount}, headers={**auth, **idem()}
    )
    assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
    return auth, r.json(), w["id"]


async def deposit_workflow_id(engine: AsyncEngine, deposit_id: str) -> str:
    async with engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text("SELECT workflow_id FROM payments WHERE id = :id"), {"id": deposit_id}
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("case", ["missing", "wrong_secret", "tampered", "stale", "garbage"])
async def test_unauthentic_webhooks_are_refused_and_change_nothing(
    http: httpx.AsyncClient, payments_engine: AsyncEngine, case: str
) -> None:
    """QUALITY R11 / I7."""
    intent_id = f"pi_forged_{uuid.uuid4().hex[:10]}"
    payload = intent_event("payment_intent.succeeded", intent_id, "deposit:someone:key")
    signature = {
        "missing": None,
        "wrong_secret": sign(payload, "whsec_not_ours"),
        "tampered": sign(payload),
        "stale": sign(payload, at=int(time.time()) - 301),
        "garbage": "t=abc,v1=zzz",
    }[case]
    if case == "tampered":
        payload = payload.replace(b'"object": "event"', b'"object": "evenT"', 1)  # one byte changed
    r = await post(http, payload, signature)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "invalid_signature"
    assert WEBHOOK_SECRET not in r.text
    assert await stored_events(payments_engine, intent_id) == []


def test_secret_rotation_accepts_old_and_new_secrets_and_two_v1_signatures() -> None:
    payload = b'{"id": "evt_rot", "type": "x", "data": {"object": {}}}'
    old, new = "whsec_old", "whsec_new"
    verify_stripe_signature(payload, sign(payload, old), [new, old])
    verify_stripe_signature(payload, sign(payload, new), [new, old])
    # During a rotation Stripe sends one v1 signature per active secret in one header.
    at = int(time.time())
    both = sign(payload, old, at) + "," + sign(payload, new, at).split(",")[1]
    verify_stripe_signature(payload, both, [new])
    with pytest.raises(InvalidSignature):
        verify_stripe_signature(payload, sign(payload, "whsec_other"), [new, old])


async def test_duplicate_concurrent_success_events_credit_once(
    http: httpx.AsyncClient,
    users: Users,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
    settings: Settings,
) -> None:
    """QUALITY R10: the same event 2–10 times, concurrently → as if once."""
    auth, accepted, wallet_id = await awaiting_deposit(http, users)
    wf_id = await deposit_workflow_id(payments_engine, accepted["id"])
    intent_id = accepted["gateway_payment_id"]
    await pay(settings, intent_id)
    payload = intent_event("payment_intent.succeeded", intent_id, wf_id)
    event_id = json.loads(payload)["id"]
    responses = await asyncio.gather(*(post(http, payload, sign(payload)) for _ in range(10)))
    assert all(r.status_code == 200 for r in responses)
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert done["status"] == "succeeded"
    assert (await wallet(http, auth, wallet_id))["balance"] == 4_200
    events = [e for e in await stored_events(payments_engine, intent_id) if e["event_id"] == event_id]
    assert len(events) == 1 and events[0]["routed_at"] is not None
    async with wallet_engine.connect() as conn:
        credits = (
            await conn.execute(
                text("SELECT count(*) FROM journals WHERE saga_id = :wf AND kind = 'deposit'"), {"wf": wf_id}
            )
        ).scalar_one()
    assert credits == 1


@pytest.mark.parametrize("order", [("succeeded", "failed"), ("failed", "succeeded")])
async def test_out_of_order_events_never_move_a_deposit_backwards(
    http: httpx.AsyncClient,
    users: Users,
    payments_engine: AsyncEngine,
    order: tuple[str, str],
    settings: Settings,
) -> None:
    """QUALITY R10: the first outcome is checked against the gateway; a later contrary event changes nothing."""
    auth, accepted, wallet_id = await awaiting_deposit(http, users, amount=900)
    wf_id = await deposit_workflow_id(payments_engine, accepted["id"])
    intent_id = accepted["gateway_payment_id"]
    if order[0] == "succeeded":
        await pay(settings, intent_id)
    first = intent_event(
        f"payment_intent.{'succeeded' if order[0] == 'succeeded' else 'payment_failed'}",
        intent_id,
        wf_id,
        last_payment_error={"code": "card_declined"},
    )
    assert (await post(http, first, sign(first))).status_code == 200
    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    second = intent_event(
        f"payment_intent.{'succeeded' if order[1] == 'succeeded' else 'payment_failed'}", intent_id, wf_id
    )
    assert (await post(http, second, sign(second))).status_code == 200
    again = (await http.get(f"/v1/deposits/{accepted['id']}", headers=auth)).json()
    assert again["status"] == done["status"]
    balance = (await wallet(http, auth, wallet_id))["balance"]
    if order[0] == "succeeded":
        assert (done["status"], balance) == ("succeeded", 900)
    else:
        # The failure made the saga cancel the (unpaid) intent: the later "success" cannot be real.
        assert (done["status"], done["failure_code"], balance) == ("failed", "card_declined", 0)


async def test_event_for_an_object_we_never_created_is_stored_and_answered_200(
    http: httpx.AsyncClient, payments_engine: AsyncEngine, wallet_engine: AsyncEngine
) -> None:
    """QUALITY R13."""
    intent_id = f"pi_unknown_{uuid.uuid4().hex[:10]}"
    payload = intent_event("payment_intent.succeeded", intent_id, None)
    async with wallet_engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM journals"))).scalar_one()
    r = await post(http, payload, sign(payload))
    assert r.status_code == 200
    events = await stored_events(payments_engine, intent_id)
    assert len(events) == 1 and events[0]["workflow_id"] is None and events[0]["route_error"]
    async with wallet_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM journals"))).scalar_one() >= before
        assert (
            await conn.execute(
                text("SELECT count(*) FROM journals WHERE description LIKE :d"), {"d": f"%{intent_id}%"}
            )
        ).scalar_one() == 0


async def test_webhook_outcomes_are_counted_in_metrics(http: httpx.AsyncClient) -> None:
    payload = intent_event("payment_intent.succeeded", f"pi_metrics_{uuid.uuid4().hex[:8]}", None)
    await post(http, payload, sign(payload))
    await post(http, payload, sign(payload))
    await post(http, payload, "t=1,v1=bad")
    text_metrics = (await http.get("/metrics")).text
    for outcome in ("unknown_object", "duplicate", "invalid_signature"):
        assert f'payweave_webhook_events_total{{outcome="{outcome}",provider="stripe"}}' in text_metrics


async def test_a_success_claim_the_gateway_does_not_confirm_moves_no_money(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine, temporal: Client
) -> None:
    """A signed "succeeded" for an intent that is not paid is looked up and ignored; the deposit waits on."""
    auth, accepted, wallet_id = await awaiting_deposit(http, users, amount=650)
    wf_id = await deposit_workflow_id(payments_engine, accepted["id"])
    payload = intent_event("payment_intent.succeeded", accepted["gateway_payment_id"], wf_id)
    assert (await post(http, payload, sign(payload))).status_code == 200

    async def looked_up() -> bool:
        async for event in temporal.get_workflow_handle(wf_id).fetch_history_events():
            if event.HasField("activity_task_completed_event_attributes"):
                scheduled = event.activity_task_completed_event_attributes.scheduled_event_id
                async for e in temporal.get_workflow_handle(wf_id).fetch_history_events():
                    if (
                        e.event_id == scheduled
                        and e.activity_task_scheduled_event_attributes.activity_type.name
                        == "get_gateway_payment"
                    ):
                        return True
        return False

    await eventually(looked_up)
    now = (await http.get(f"/v1/deposits/{accepted['id']}", headers=auth)).json()
    assert (now["status"], now["credited"]) == ("awaiting_payment", False)
    assert (await wallet(http, auth, wallet_id))["balance"] == 0


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b"x" * (600 * 1024)], ids=["not-utf8", "oversized"])
async def test_undecodable_or_oversized_bodies_are_refused_not_500(
    http: httpx.AsyncClient, body: bytes
) -> None:
    r = await post(http, body, sign(body[:10]))
    assert r.status_code == 400 and r.json()["code"] == "invalid_signature"
