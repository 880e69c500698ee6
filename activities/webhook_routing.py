"""Webhook routing, shared by the API (a fresh delivery) and the sweeper (a stored event never delivered).

Which workflow owns a gateway object, which signal an event means, and the delivery itself: signal the owning
workflow and record the outcome on the stored ``webhook_events`` row. Signals are idempotent (the workflows
take the first outcome and confirm it by look-up), so routing an event twice is harmless.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from db.engine import in_statement
from db.repositories import payments as payments_repo
from payweave.contracts.payments import WebhookEvent
from payweave.contracts.sagas import PaymentEvent
from payweave.metrics import WEBHOOK_EVENTS

log = logging.getLogger("payweave.webhooks")

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


@dataclass(frozen=True)
class Routing:
    """What a verified event means for our sagas: the signal (None: nothing to deliver) and its payload."""

    signal: str | None
    event: PaymentEvent


def stripe_object(event: dict[str, Any]) -> dict[str, Any]:
    obj = (event.get("data") or {}).get("object") or {}
    return obj if isinstance(obj, dict) else {}


def stripe_routing(event_id: str, event_type: str, obj: dict[str, Any]) -> Routing:
    failure = obj.get("last_payment_error") or {}
    return Routing(
        STRIPE_SIGNALS.get(event_type),
        PaymentEvent(
            gateway="stripe",
            gateway_payment_id=str(obj.get("id")),
            event_id=event_id,
            failure_code=failure.get("code") if isinstance(failure, dict) else None,
        ),
    )


def xendit_event(body: dict[str, Any], payload: bytes) -> tuple[str, str, dict[str, Any]]:
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


def xendit_routing(event_id: str, event_type: str, obj: dict[str, Any]) -> Routing:
    status = str(obj.get("status"))
    return Routing(
        XENDIT_INVOICE_SIGNALS.get(status) if event_type.startswith("invoice.") else None,
        PaymentEvent(
            gateway="xendit",
            gateway_payment_id=str(obj.get("id")),
            event_id=event_id,
            failure_code="expired" if status == "EXPIRED" else None,
        ),
    )


async def owning_workflow(
    engine: AsyncEngine, provider: str, event_type: str, obj: dict[str, Any]
) -> str | None:
    """The workflow that owns the event's object.

    Stripe: the ``workflow_id`` metadata we set on the object, else the payment row that recorded its id.
    Xendit: the payment by the invoice id we recorded, else by the ``external_id`` (our step key) — the invoice
    may be known to Xendit before the activity that created it recorded its id.
    """
    metadata = obj.get("metadata") or {}
    if provider == "stripe" and isinstance(metadata, dict) and isinstance(metadata.get("workflow_id"), str):
        return str(metadata["workflow_id"])
    if provider == "stripe":
        invoice_id: Any = str(obj.get("id"))
        external_id = None
    else:
        is_invoice = event_type.startswith("invoice.")
        invoice_id = str(obj.get("id")) if is_invoice else obj.get("invoice_id")
        external_id = str(obj["external_id"]) if is_invoice and obj.get("external_id") else None

    async def work(conn: AsyncConnection) -> str | None:
        payment = None
        if isinstance(invoice_id, str):
            payment = await payments_repo.find_payment_by_gateway_id(conn, provider, invoice_id)
        if payment is None and external_id:
            payment = await payments_repo.find_payment_by_step_key(conn, provider, external_id)
        return payment.workflow_id if payment else None

    return await in_statement(engine, work)


async def route_event(
    engine: AsyncEngine, temporal: Client, stored: WebhookEvent, routing: Routing, *, count: bool = True
) -> str:
    """Signal the workflow; on failure leave the event unrouted (the sweeper retries it). Returns the outcome
    (routed, unrouted, unknown_object, no_signal); ``count`` counts it as a webhook delivery."""
    error: str | None = None
    note: str | None = None
    signal = routing.signal
    if signal is None:
        note = "not routed: event type has no saga signal"
    elif stored.workflow_id is None:
        error = "no owning workflow"
    else:
        try:
            await temporal.get_workflow_handle(stored.workflow_id).signal(signal, routing.event)
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
    if count:
        WEBHOOK_EVENTS.labels(stored.provider, outcome).inc()
    if error:
        log.warning("webhook %s/%s not routed: %s", stored.provider, stored.event_id, error)

    async def mark(conn: AsyncConnection) -> None:
        await payments_repo.mark_webhook_routed(conn, event_row_id=stored.id, error=error, note=note)

    await in_statement(engine, mark)
    return outcome
