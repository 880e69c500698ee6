"""The current user's notifications (domain events: checkout paid/failed, refund succeeded, …)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentUser, PaymentsDB
from db.engine import in_transaction
from db.repositories import notifications as repo

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


class NotificationOut(BaseModel):
    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


class NotificationPage(BaseModel):
    data: list[NotificationOut]
    has_more: bool
    next_cursor: int | None


@router.get("", response_model=NotificationPage)
async def list_notifications(
    user: CurrentUser,
    db: PaymentsDB,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> NotificationPage:
    async def work(conn: AsyncConnection) -> list[repo.Notification]:
        return await repo.list_for(conn, user.sub, limit=limit + 1, starting_after=starting_after)

    rows = await in_transaction(db, work)
    page = [NotificationOut(id=n.id, kind=n.kind, data=n.data, created_at=n.created_at) for n in rows[:limit]]
    has_more = len(rows) > limit
    return NotificationPage(
        data=page, has_more=has_more, next_cursor=page[-1].id if has_more and page else None
    )
