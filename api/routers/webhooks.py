"""Gateway webhooks: verify against the raw body, store once, route to the owning workflow, answer fast.

Only a newly stored event is routed (UNIQUE(provider, event_id)), so duplicates and concurrent redeliveries
have no effect. An event for an object we never created is stored, counted and answered 200 — never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
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
from payweave.errors import PayweaveError, Unauthenticated
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

# Xendit invoice status → the signal the owning workflow understands. PAID and SETTLED are both a success
# (SETTLED only says the money reached our balance); an EXPIRED after a PAID changes nothing, because the
# workflows take the first outcome only and confirm it with a look-up before any money moves.
XENDIT_INVOICE_SIGNALS = {
    "PAID": "payment_succeeded",
    "SETTLED": "payment_succeeded",
    "EXPIRED": "payment_failed",
}


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
    payload = await read_capped(request)
    if payload is None:
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


# --- Xendit --------------------------------------------------------------------------------------------


class InvalidCallback(PayweaveError):
    code, status, title = "invalid_callback", 400, "Not a Xendit callback"


def verify_xendit_token(header: str | None, expected: str) -> None:
    """Xendit signs nothing: it sends the account's callback token, compared here in constant time."""
    if not header or not expected or not hmac.compare_digest(header.encode(), expected.encode()):
        WEBHOOK_EVENTS.labels("xendit", "invalid_signature").inc()
        raise Unauthenticated("the x-callback-token header is missing or wrong")


def _xendit_event(body: dict[str, Any], payload: bytes) -> tuple[str, str, dict[str, Any]]:
    """(event id, event type, the object) of an invoice callback, a refund callback or anything else.

    Invoice callbacks carry no event id: ``<invoice id>:<status>`` makes PAID and SETTLED two events and a
    redelivered PAID the same one. Refunds likewise, per refund and status.
    """
    data = body.get("data")
    if isinstance(body.get("event"), str) and isinstance(data, dict) and data.get("id"):
        return f"{data['id']}:{data.get('status')}", str(body["event"]), data
    if body.get("id") and body.get("external_id") and body.get("status"):
        return f"{body['id']}:{body['status']}", f"invoice.{str(body['status']).lower()}", body
    # Some other product's callback: stored once per distinct body, never routed.
    return f"sha256:{hashlib.sha256(payload).hexdigest()}", str(body.get("event") or "unknown"), body


async def _xendit_payment(engine: AsyncEngine, invoice_id: str | None, external_id: str | None) -> str | None:
    """The owning workflow: by the invoice id we recorded, else by the external_id (our step key) — the
    invoice may be known to Xendit before the activity that created it recorded its id."""

    async def work(conn: AsyncConnection) -> str | None:
        payment = None
        if invoice_id:
            payment = await payments_repo.find_payment_by_gateway_id(conn, "xendit", invoice_id)
        if payment is None and external_id:
            payment = await payments_repo.find_payment_by_step_key(conn, "xendit", external_id)
        return payment.workflow_id if payment else None

    return await in_transaction(engine, work)


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
    event_id, event_type, obj = _xendit_event(body, payload)
    is_invoice = event_type.startswith("invoice.")
    invoice_id = str(obj.get("id")) if is_invoice else obj.get("invoice_id")
    wf_id = await _xendit_payment(
        payments,
        invoice_id if isinstance(invoice_id, str) else None,
        str(obj["external_id"]) if is_invoice else None,
    )

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

    stored = await in_transaction(payments, store)
    if stored is None:
        WEBHOOK_EVENTS.labels("xendit", "duplicate").inc()
        return {"received": True, "duplicate": True}
    status = str(obj.get("status"))
    signal = XENDIT_INVOICE_SIGNALS.get(status) if is_invoice else None
    await route_event(
        payments,
        temporal,
        stored,
        signal,
        PaymentEvent(
            gateway="xendit",
            gateway_payment_id=str(obj.get("id")),
            event_id=event_id,
            failure_code="expired" if status == "EXPIRED" else None,
        ),
    )
    return {"received": True, "duplicate": False}
