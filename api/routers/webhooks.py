"""Gateway webhooks: verify against the raw body, store once, route to the owning workflow, answer fast.

Only a newly stored event is routed (UNIQUE(provider, event_id)), so duplicates and concurrent redeliveries
have no effect. An event for an object we never created is stored, counted and answered 200 — never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Header, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from stripe import SignatureVerificationError, WebhookSignature
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.deps import PaymentsDB, SettingsDep, TemporalDep
from db.engine import in_transaction
from db.repositories import payments as payments_repo
from payweave.contracts.payments import WebhookEvent
from payweave.contracts.sagas import PaymentEvent
from payweave.errors import PayweaveError
from payweave.metrics import WEBHOOK_EVENTS

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger("payweave.webhooks")

STRIPE_TOLERANCE_SECONDS = 300
MAX_WEBHOOK_BYTES = 512 * 1024

# Stripe event type → the signal the owning workflow understands.
STRIPE_SIGNALS = {
    "payment_intent.succeeded": "payment_succeeded",
    "payment_intent.payment_failed": "payment_failed",
}


class InvalidSignature(PayweaveError):
    code, status, title = "invalid_signature", 400, "Webhook signature verification failed"


def verify_stripe_signature(payload: bytes, header: str | None, secrets: list[str]) -> None:
    """Accept the payload when any configured secret verifies it (several during a secret rotation)."""
    for secret in secrets:
        try:
            WebhookSignature.verify_header(payload, header, secret, STRIPE_TOLERANCE_SECONDS)
            return
        except SignatureVerificationError:
            continue
    WEBHOOK_EVENTS.labels("stripe", "invalid_signature").inc()
    raise InvalidSignature("the Stripe-Signature header does not verify")


async def route_event(
    engine: AsyncEngine, temporal: Client, stored: WebhookEvent, signal: str | None, event: PaymentEvent
) -> None:
    """Signal the workflow; on failure leave the event unrouted (the sweeper retries it)."""
    error: str | None = None
    note: str | None = None
    if signal is None:
        note = "not routed: event type has no saga signal"
    elif stored.workflow_id is None:
        error = "no owning workflow"
    else:
        try:
            await temporal.get_workflow_handle(stored.workflow_id).signal(signal, event)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # The saga already finished (it learned the outcome first, e.g. from the gateway's answer).
                # Nothing to deliver; the event stays stored for reconciliation.
                note = "workflow closed"
            else:
                error = f"signal failed: {exc.status.name if exc.status else 'rpc error'}"
    if signal is None:
        outcome = "no_signal"
    elif stored.workflow_id is None:
        outcome = "unknown_object"
    else:
        outcome = "unrouted" if error else "routed"
    WEBHOOK_EVENTS.labels(stored.provider, outcome).inc()
    if error:
        log.warning("webhook %s/%s not routed: %s", stored.provider, stored.event_id, error)

    async def mark(conn: AsyncConnection) -> None:
        await payments_repo.mark_webhook_routed(conn, event_row_id=stored.id, error=error, note=note)

    await in_transaction(engine, mark)


async def _workflow_for(engine: AsyncEngine, gateway: str, obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    if isinstance(metadata, dict) and isinstance(metadata.get("workflow_id"), str):
        return str(metadata["workflow_id"])

    async def work(conn: AsyncConnection) -> str | None:
        payment = await payments_repo.find_payment_by_gateway_id(conn, gateway, str(obj.get("id")))
        return payment.workflow_id if payment else None

    return await in_transaction(engine, work)


@router.post("/stripe", status_code=200)
async def stripe_webhook(
    request: Request,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    stripe_signature: str | None = Header(default=None, alias="Stripe-Signature"),
) -> dict[str, Any]:
    payload = await request.body()
    if len(payload) > MAX_WEBHOOK_BYTES:
        raise InvalidSignature("payload too large")
    verify_stripe_signature(payload, stripe_signature, settings.stripe_webhook_secrets())
    try:
        event = json.loads(payload)
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = event.get("data", {}).get("object", {}) or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidSignature("signed payload is not a Stripe event") from None

    wf_id = await _workflow_for(payments, "stripe", obj) if isinstance(obj, dict) else None

    async def store(conn: AsyncConnection) -> WebhookEvent | None:
        return await payments_repo.store_webhook_event(
            conn,
            provider="stripe",
            event_id=event_id,
            event_type=event_type,
            object_id=str(obj.get("id")) if isinstance(obj, dict) and obj.get("id") else None,
            workflow_id=wf_id,
            payload=event,
        )

    stored = await in_transaction(payments, store)
    if stored is None:
        WEBHOOK_EVENTS.labels("stripe", "duplicate").inc()
        return {"received": True, "duplicate": True}
    signal = STRIPE_SIGNALS.get(event_type)
    failure = (obj.get("last_payment_error") or {}) if isinstance(obj, dict) else {}
    await route_event(
        payments,
        temporal,
        stored,
        signal,
        PaymentEvent(
            gateway="stripe",
            gateway_payment_id=str(obj.get("id")),
            event_id=event_id,
            failure_code=failure.get("code") if isinstance(failure, dict) else None,
        ),
    )
    return {"received": True, "duplicate": False}
