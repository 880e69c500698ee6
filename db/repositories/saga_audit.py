"""saga_audit (payments DB): compensations that gave up and what operators decided. Rows are only inserted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from payweave.contracts.attention import SagaAuditEntry, SagaAuditInput

_COLUMNS = (
    "id, idempotency_key, saga_id, saga_kind, action, operator, compensation, failure, reason, created_at"
)


def _entry(row: Any, *, created: bool) -> SagaAuditEntry:
    return SagaAuditEntry.model_validate({**dict(row._mapping), "created": created})


async def record(conn: AsyncConnection, entry: SagaAuditInput) -> SagaAuditEntry:
    """Insert once by ``idempotency_key``; a repeated call returns the first row (``created`` False)."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO saga_audit (idempotency_key, saga_id, saga_kind, action, operator, compensation, "
                "failure, reason) VALUES (:idempotency_key, :saga_id, :saga_kind, :action, :operator, "
                ":compensation, :failure, :reason) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}"
            ),
            entry.model_dump(),
        )
    ).first()
    if row is not None:
        return _entry(row, created=True)
    found = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM saga_audit WHERE idempotency_key = :key"),
            {"key": entry.idempotency_key},
        )
    ).one()
    return _entry(found, created=False)


async def for_saga(conn: AsyncConnection, saga_id: str) -> list[SagaAuditEntry]:
    """The saga's rows, oldest first."""
    rows = await conn.execute(
        text(f"SELECT {_COLUMNS} FROM saga_audit WHERE saga_id = :saga ORDER BY id"), {"saga": saga_id}
    )
    return [_entry(r, created=False) for r in rows]
