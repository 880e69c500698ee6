"""Gateway webhooks: verify against the raw body, store once, route to the owning workflow, answer fast.

Only a newly stored event is routed (UNIQUE(provider, event_id)), so duplicates and concurrent redeliveries
have no effect. An event for an object we never created is stored, counted and answered 200 — never a 500.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Header, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from stripe import SignatureVerificationError, WebhookSignature

from activities.webhook_routing import (
    owning_workflow,
    route_event,
    stripe_object,
    stripe_routing,
    xendit_event,
    xendit_routing,
)
from api.deps import PaymentsDB, SettingsDep, TemporalDep
from db.engine import in_statement
from db.repositories import payments as payments_repo
from payweave.contracts.payments import WebhookEvent
from payweave.errors import PayweaveError, Unauthenticated
from payweave.metrics import WEBHOOK_EVENTS

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

STRIPE_TOLERANCE_SECONDS = 300
MAX_WEBHOOK_BYTES = 512 * 1024


class InvalidSignature(PayweaveError):
    code, status, title = "invalid_signature", 400, "Webhook signature verification failed"


async def read_capped(request: Request) -> bytes | None:
    """The raw body, or None past MAX_WEBHOOK_BYTES — read in chunks, so a huge body is never buffered."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            return None
    return bytes(body)


def verify_stripe_signature(payload: bytes, header: str | None, secrets: list[str]) -> None:
    """Accept the payload when any configured secret verifies it (several during a secret rotation)."""
    for secret in secrets:
        try:
            WebhookSignature.verify_header(payload, header, secret, STRIPE_TOLERANCE_SECONDS)
            return
        except (SignatureVerificationError, UnicodeDecodeError):  # a body that is not UTF-8 is not Stripe's
            continue
    WEBHOOK_EVENTS.labels("stripe", "invalid_signature").inc()
    raise InvalidSignature("the Stripe-Signature header does not verify")


@router.post("/stripe", status_code=200)
async def stripe_webhook(
    request: Request,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    stripe_signature: str | None = Header(default=None, alias="Stripe-Signature"),
) -> dict[str, Any]:
    payload = await read_capped(request)
    if payload is None:
        raise InvalidSignature("payload too large")
    verify_stripe_signature(payload, stripe_signature, settings.stripe_webhook_secrets())
    try:
        event = json.loads(payload)
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = stripe_object(event)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidSignature("signed payload is not a Stripe event") from None

    wf_id = await owning_workflow(payments, "stripe", event_type, obj)

    async def store(conn: AsyncConnection) -> WebhookEvent | None:
        return await payments_repo.store_webhook_event(
            conn,
            provider="stripe",
            event_id=event_id,
            event_type=event_type,
            object_id=str(obj["id"]) if obj.get("id") else None,
            workflow_id=wf_id,
            payload=event,
        )

    stored = await in_statement(payments, store)
    if stored is None:
        WEBHOOK_EVENTS.labels("stripe", "duplicate").inc()
        return {"received": True, "duplicate": True}
    await route_event(payments, temporal, stored, stripe_routing(event_id, event_type, obj))
    return {"received": True, "duplicate": False}


# --- Xendit --------------------------------------------------------------------------------------------


class InvalidCallback(PayweaveError):
    code, status, title = "invalid_callback", 400, "Not a Xendit callback"


def verify_xendit_token(header: str | None, expected: str) -> None:
    """Xendit signs nothing: it sends the account's callback token, compared here in constant time."""
    if not header or not expected or not hmac.compare_digest(header.encode(), expected.encode()):
        WEBHOOK_EVENTS.labels("xendit", "invalid_signature").inc()
        raise Unauthenticated("the x-callback-token header is missing or wrong")


@router.post("/xendit", status_code=200)
async def xendit_webhook(
    request: Request,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    x_callback_token: str | None = Header(default=None, alias="x-callback-token"),
) -> dict[str, Any]:
    verify_xendit_token(x_callback_token, settings.xendit_callback_token.get_secret_value())
    payload = await read_capped(request)
    if payload is None:
        raise InvalidCallback("payload too large")
    try:
        body = json.loads(payload)
    except ValueError:
        raise InvalidCallback("the callback is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidCallback("the callback is not a JSON object")
    event_id, event_type, obj = xendit_event(body, payload)
    wf_id = await owning_workflow(payments, "xendit", event_type, obj)

    async def store(conn: AsyncConnection) -> WebhookEvent | None:
        return await payments_repo.store_webhook_event(
            conn,
            provider="xendit",
            event_id=event_id,
            event_type=event_type,
            object_id=str(obj["id"]) if obj.get("id") else None,
            workflow_id=wf_id,
            payload=body,
        )

    stored = await in_statement(payments, store)
    if stored is None:
        WEBHOOK_EVENTS.labels("xendit", "duplicate").inc()
        return {"received": True, "duplicate": True}
    await route_event(payments, temporal, stored, xendit_routing(event_id, event_type, obj))
    return {"received": True, "duplicate": False}
