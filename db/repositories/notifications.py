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
    conn: AsyncConnection, *, idempotency_key: str, recipient: str, kind: str, data: dict[str, Any]
) -> Notification | None:
    """Store once; None when an earlier attempt already stored it."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO notifications (idempotency_key, recipient, kind, data) "
                "VALUES (:key, :recipient, :kind, CAST(:data AS jsonb)) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}"
            ),
            {"key": idempotency_key, "recipient": recipient, "kind": kind, "data": json.dumps(data)},
        )
    ).first()
    return Notification.model_validate(dict(row._mapping)) if row else None


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
