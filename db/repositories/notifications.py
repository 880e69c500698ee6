"""Notifications: one row per (event, recipient), keyed so a retried notify step stores it once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class Notification(BaseModel):
    id: int
    recipient: str
    kind: str
    data: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None


_COLUMNS = "id, recipient, kind, data, created_at, delivered_at"


async def store(
    conn: AsyncConnection, *, kind: str, data: dict[str, Any], keys: dict[str, str]
) -> list[Notification]:
    """One row per recipient (``keys``: recipient → idempotency key), stored once, in ONE statement: the rows
    this call stored, in id order (none on a retry that finds them all stored)."""
    recipients = list(keys)
    rows = await conn.execute(
        text(
            "INSERT INTO notifications (idempotency_key, recipient, kind, data) "
            "SELECT k, r, :kind, CAST(:data AS jsonb) FROM unnest(CAST(:keys AS text[]), CAST(:recipients AS text[])) "
            f"AS t(k, r) ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}"
        ),
        {
            "keys": [keys[r] for r in recipients],
            "recipients": recipients,
            "kind": kind,
            "data": json.dumps(data),
        },
    )
    return sorted((Notification.model_validate(dict(r._mapping)) for r in rows), key=lambda n: n.id)


async def mark_delivered(conn: AsyncConnection, *, notification_id: int, error: str | None) -> None:
    await conn.execute(
        text(
            "UPDATE notifications SET delivered_at = CASE WHEN CAST(:error AS text) IS NULL THEN now() END, "
            "delivery_error = :error WHERE id = :id"
        ),
        {"id": notification_id, "error": error},
    )


async def list_for(
    conn: AsyncConnection, recipient: str, *, limit: int, starting_after: int | None = None
) -> list[Notification]:
    rows = await conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM notifications WHERE recipient = :r "
            "AND (CAST(:after AS bigint) IS NULL OR id < :after) ORDER BY id DESC LIMIT :limit"
        ),
        {"r": recipient, "after": starting_after, "limit": limit},
    )
    return [Notification.model_validate(dict(r._mapping)) for r in rows]
