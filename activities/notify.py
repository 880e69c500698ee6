"""Notifications: store the domain event for each recipient, then (optionally) POST it to the merchant
webhook signed with HMAC-SHA256. Delivery problems are recorded, never raised: a failing notification must
never fail a saga (the workflow also calls this step with few retries and ignores its failure)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.errors import business_errors
from activities.orders import move_order
from activities.payments import move_payment_row
from db.engine import in_statement, in_transaction
from db.repositories import notifications as repo
from payweave.contracts.activities import FinishOrderInput, NotifyInput
from payweave.contracts.commerce import Order
from payweave.metrics import saga_ended


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``Payweave-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (Stripe's scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def _store(conn: AsyncConnection, inp: NotifyInput) -> list[repo.Notification]:
    """One row per recipient, keyed: the rows this call stored (none on a retry that finds them stored)."""
    keys = {recipient: f"{inp.idempotency_key}:{recipient}" for recipient in inp.recipients}
    return await repo.store(conn, kind=inp.kind, data=inp.data, keys=keys)


class NotifyActivities:
    def __init__(
        self, payments_engine: AsyncEngine, webhook_url: str | None, webhook_secret: str | None
    ) -> None:
        self._engine = payments_engine
        self._url = webhook_url
        self._secret = webhook_secret

    @activity.defn
    async def notify(self, inp: NotifyInput) -> int:
        """Returns how many notifications this call stored (0 on a retry that finds them stored)."""
        stored = await in_statement(self._engine, lambda conn: _store(conn, inp))
        await self._deliver_all(stored)
        return len(stored)

    @activity.defn
    async def finish_order(self, inp: FinishOrderInput) -> Order:
        """A checkout's last step in one transaction: the order's final status, its notifications and (when
        given) its gateway payment's final status."""

        async def work(conn: AsyncConnection) -> tuple[str | None, Order, list[repo.Notification]]:
            if inp.payment is not None:
                await move_payment_row(conn, inp.payment)
            before, order = await move_order(conn, inp.order)
            return before, order, await _store(conn, inp.notification)

        async with business_errors():
            before, order, stored = await in_transaction(self._engine, work)
        saga_ended("checkout", before, order.status)  # a checkout saga ends with its order
        await self._deliver_all(stored)
        return order

    async def _deliver_all(self, stored: list[repo.Notification]) -> None:
        if self._url and self._secret:
            for row in stored:
                await self._deliver(row)

    async def _deliver(self, row: repo.Notification) -> None:
        assert self._url is not None and self._secret is not None
        body = json.dumps(
            {
                "id": row.id,
                "kind": row.kind,
                "recipient": row.recipient,
                "data": row.data,
                "created_at": row.created_at.isoformat(),
            }
        ).encode()
        error = None
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(
                    self._url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "Payweave-Signature": sign(self._secret, int(time.time()), body),
                    },
                )
            if response.status_code >= 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__

        async def mark(conn: AsyncConnection) -> None:
            await repo.mark_delivered(conn, notification_id=row.id, error=error)

        await in_statement(self._engine, mark)
