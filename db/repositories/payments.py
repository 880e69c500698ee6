"""Payments-database SQL: idempotency keys, gateway payments, transfers, webhook events.

Same rules as the ledger repository: the caller owns the transaction; keyed inserts return the first row.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from payweave import errors
from payweave.contracts.payments import Payment, Transfer, WebhookEvent

_PAYMENT_COLUMNS = (
    "id, idempotency_key, workflow_id, purpose, owner, wallet_id, gateway, gateway_payment_id, amount, currency, "
    "status, failure_code, credited, next_action, expires_at, created_at, updated_at"
)
_TRANSFER_COLUMNS = (
    "id, workflow_id, owner, from_wallet_id, to_wallet_id, amount, currency, description, status, failure_code, "
    "created_at, updated_at"
)

# A payment's status only moves forward: a late or duplicated event never un-pays a payment (R10, R12).
_PAYMENT_RANK = {
    "pending": 0,
    "awaiting_payment": 1,
    "failed": 2,
    "expired": 2,
    "canceled": 2,
    "succeeded": 3,
    "refunded": 4,
}
_TRANSFER_RANK = {"pending": 0, "debited": 1, "completed": 2, "failed": 2}


def _payment(row: Any) -> Payment:
    return _payment_of(dict(row._mapping))


def _payment_of(data: dict[str, Any]) -> Payment:
    data["currency"] = data["currency"].strip()
    return Payment.model_validate(data)


def _transfer(row: Any) -> Transfer:
    data = dict(row._mapping)
    data["currency"] = data["currency"].strip()
    return Transfer.model_validate(data)


# --- Idempotency-Key ↔ request -------------------------------------------------------------------------


async def claim_idempotency_key(
    conn: AsyncConnection, *, workflow_id: str, request_hash: str, resource_id: str
) -> bool:
    """Remember the first request body seen for a key; a different body under the same key is a 409.
    Returns True for the request that claimed the key first."""
    claimed = await conn.execute(
        text(
            "INSERT INTO idempotency_keys (workflow_id, request_hash, resource_id) "
            "VALUES (:wf, :hash, :rid) ON CONFLICT (workflow_id) DO NOTHING"
        ),
        {"wf": workflow_id, "hash": request_hash, "rid": resource_id},
    )
    stored = (
        await conn.execute(
            text("SELECT request_hash FROM idempotency_keys WHERE workflow_id = :wf"), {"wf": workflow_id}
        )
    ).scalar_one()
    if stored != request_hash:
        raise errors.IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return bool(claimed.rowcount)


# --- payments ------------------------------------------------------------------------------------------


async def create_payment(
    conn: AsyncConnection,
    *,
    payment_id: str,
    idempotency_key: str,
    workflow_id: str,
    purpose: str,
    owner: str,
    wallet_id: str | None,
    gateway: str,
    amount: int,
    currency: str,
    expires_at: datetime | None,
) -> Payment:
    row = (
        await conn.execute(
            text(
                "INSERT INTO payments (id, idempotency_key, workflow_id, purpose, owner, wallet_id, gateway, "
                "amount, currency, expires_at) VALUES (:id, :key, :wf, :purpose, :owner, :wallet_id, :gateway, "
                f":amount, :currency, :expires_at) ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_PAYMENT_COLUMNS}"
            ),
            {
                "id": payment_id,
                "key": idempotency_key,
                "wf": workflow_id,
                "purpose": purpose,
                "owner": owner,
                "wallet_id": wallet_id,
                "gateway": gateway,
                "amount": amount,
                "currency": currency,
                "expires_at": expires_at,
            },
        )
    ).first()
    if row is not None:
        return _payment(row)
    existing = await get_payment(conn, payment_id)
    assert existing is not None
    return existing


async def get_payment(conn: AsyncConnection, payment_id: str) -> Payment | None:
    row = (
        await conn.execute(
            text(f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = :id"), {"id": payment_id}
        )
    ).first()
    return _payment(row) if row else None


async def find_payment_by_gateway_id(
    conn: AsyncConnection, gateway: str, gateway_payment_id: str
) -> Payment | None:
    row = (
        await conn.execute(
            text(f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE gateway = :g AND gateway_payment_id = :gid"),
            {"g": gateway, "gid": gateway_payment_id},
        )
    ).first()
    return _payment(row) if row else None


async def find_payment_by_step_key(conn: AsyncConnection, gateway: str, key: str) -> Payment | None:
    """The payment of the workflow that made the step key ``key`` (``<workflow id>:<step>[:<n>]``, ARCHITECTURE §4),
    e.g. a Xendit invoice's external_id. Workflow ids contain ':' too, so every prefix that ends before a ':' is
    a candidate; the longest one that owns a payment wins."""
    parts = key.split(":")
    candidates = [":".join(parts[:n]) for n in range(1, len(parts))]
    if not candidates:
        return None
    row = (
        await conn.execute(
            text(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE gateway = :g AND workflow_id = ANY(:wfs) "
                "ORDER BY length(workflow_id) DESC, created_at LIMIT 1"
            ),
            {"g": gateway, "wfs": candidates},
        )
    ).first()
    return _payment(row) if row else None


async def update_payment(conn: AsyncConnection, *, payment_id: str, **changes: Any) -> Payment:
    """Move a payment forward (``move_payment``'s fields). A status that ranks below the current one is ignored,
    never applied."""
    return (await move_payment(conn, payment_id=payment_id, **changes))[1]


# The rank of every payment status as a SQL expression over ``status``: a move to a lower rank is ignored.
_RANK_SQL = "CASE {col} " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in _PAYMENT_RANK.items()) + " END"
_FINAL_STATUSES = "('failed', 'expired', 'canceled', 'refunded')"


async def move_payment(
    conn: AsyncConnection,
    *,
    payment_id: str,
    status: str | None = None,
    gateway_payment_id: str | None = None,
    next_action: dict[str, Any] | None = None,
    failure_code: str | None = None,
    credited: bool | None = None,
) -> tuple[str, Payment]:
    """update_payment in ONE statement (the row locked by the UPDATE itself, the rank compared in SQL), also
    returning the status the payment had before: (previous status, payment)."""
    if status is not None and status not in _PAYMENT_RANK:
        raise ValueError(f"unknown payment status {status!r}")
    row = (
        await conn.execute(
            text(
                "UPDATE payments p SET status = o.new_status, "
                "gateway_payment_id = coalesce(p.gateway_payment_id, :gid), "
                "next_action = coalesce(CAST(:next_action AS jsonb), p.next_action), "
                f"failure_code = CASE WHEN o.new_status IN {_FINAL_STATUSES} "
                "                    THEN coalesce(:failure_code, p.failure_code) ELSE p.failure_code END, "
                "credited = coalesce(:credited, p.credited), updated_at = now() "
                "FROM (SELECT id, status AS old_status, CASE WHEN CAST(:status AS text) IS NOT NULL AND "
                f"{_RANK_SQL.format(col='CAST(:status AS text)')} > {_RANK_SQL.format(col='status')} "
                "THEN CAST(:status AS text) ELSE status END AS new_status "
                "FROM payments WHERE id = :id FOR UPDATE) o "
                f"WHERE p.id = o.id RETURNING o.old_status, {_aliased(_PAYMENT_COLUMNS, 'p')}"
            ),
            {
                "id": payment_id,
                "status": status,
                "gid": gateway_payment_id,
                "next_action": json.dumps(next_action) if next_action is not None else None,
                "failure_code": failure_code,
                "credited": credited,
            },
        )
    ).first()
    if row is None:
        raise errors.NotFound(f"payment {payment_id} not found")
    data = dict(row._mapping)
    previous = str(data.pop("old_status"))
    return previous, _payment_of(data)


def _aliased(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


async def list_payments(conn: AsyncConnection, *, owner: str, purpose: str, limit: int = 50) -> list[Payment]:
    rows = await conn.execute(
        text(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE owner = :owner AND purpose = :purpose "
            "ORDER BY created_at DESC LIMIT :limit"
        ),
        {"owner": owner, "purpose": purpose, "limit": limit},
    )
    return [_payment(r) for r in rows]


# --- transfers -----------------------------------------------------------------------------------------


async def create_transfer(
    conn: AsyncConnection,
    *,
    transfer_id: str,
    workflow_id: str,
    owner: str,
    from_wallet_id: str,
    to_wallet_id: str,
    amount: int,
    currency: str,
    description: str | None,
) -> Transfer:
    row = (
        await conn.execute(
            text(
                "INSERT INTO transfers (id, workflow_id, owner, from_wallet_id, to_wallet_id, amount, currency, "
                "description) VALUES (:id, :wf, :owner, :src, :dst, :amount, :currency, :description) "
                f"ON CONFLICT (workflow_id) DO NOTHING RETURNING {_TRANSFER_COLUMNS}"
            ),
            {
                "id": transfer_id,
                "wf": workflow_id,
                "owner": owner,
                "src": from_wallet_id,
                "dst": to_wallet_id,
                "amount": amount,
                "currency": currency,
                "description": description,
            },
        )
    ).first()
    if row is not None:
        return _transfer(row)
    existing = await get_transfer(conn, transfer_id)
    assert existing is not None
    return existing


async def get_transfer(conn: AsyncConnection, transfer_id: str) -> Transfer | None:
    row = (
        await conn.execute(
            text(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = :id"), {"id": transfer_id}
        )
    ).first()
    return _transfer(row) if row else None


async def update_transfer(
    conn: AsyncConnection, *, transfer_id: str, status: str, failure_code: str | None = None
) -> Transfer:
    current = await conn.execute(
        text("SELECT status FROM transfers WHERE id = :id FOR UPDATE"), {"id": transfer_id}
    )
    old = current.scalar()
    if old is None:
        raise errors.NotFound(f"transfer {transfer_id} not found")
    new = status if _TRANSFER_RANK[status] > _TRANSFER_RANK[old] else old
    row = (
        await conn.execute(
            text(
                "UPDATE transfers SET status = :status, failure_code = coalesce(:code, failure_code), "
                f"updated_at = now() WHERE id = :id RETURNING {_TRANSFER_COLUMNS}"
            ),
            {"id": transfer_id, "status": new, "code": failure_code if new == status else None},
        )
    ).one()
    return _transfer(row)


# --- webhook events ------------------------------------------------------------------------------------


async def store_webhook_event(
    conn: AsyncConnection,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    object_id: str | None,
    workflow_id: str | None,
    payload: dict[str, Any],
) -> WebhookEvent | None:
    """Store a verified event once (UNIQUE(provider, event_id)); None when it was already stored — unless the
    stored copy was never delivered to its saga (routed_at NULL for over a minute, e.g. the API crashed between
    storing and signalling): then it is returned again so the redelivery routes it (signals are idempotent)."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO webhook_events (provider, event_id, event_type, object_id, workflow_id, payload) "
                "VALUES (:provider, :event_id, :event_type, :object_id, :wf, CAST(:payload AS jsonb)) "
                "ON CONFLICT (provider, event_id) DO NOTHING "
                "RETURNING id, provider, event_id, event_type, object_id, workflow_id, routed_at"
            ),
            {
                "provider": provider,
                "event_id": event_id,
                "event_type": event_type,
                "object_id": object_id,
                "wf": workflow_id,
                "payload": json.dumps(payload),
            },
        )
    ).first()
    if row is None:
        row = (
            await conn.execute(
                text(
                    "SELECT id, provider, event_id, event_type, object_id, workflow_id, routed_at FROM webhook_events "
                    "WHERE provider = :provider AND event_id = :event_id AND routed_at IS NULL "
                    "AND received_at < now() - interval '1 minute'"
                ),
                {"provider": provider, "event_id": event_id},
            )
        ).first()
    return WebhookEvent.model_validate(dict(row._mapping)) if row else None


async def mark_webhook_routed(
    conn: AsyncConnection, *, event_row_id: int, error: str | None = None, note: str | None = None
) -> None:
    """``error``: delivery failed, leave it for the sweeper. ``note``: done, with a remark for operators."""
    await conn.execute(
        text(
            "UPDATE webhook_events SET routed_at = CASE WHEN CAST(:error AS text) IS NULL THEN now() END, "
            "route_error = coalesce(:error, :note) WHERE id = :id"
        ),
        {"id": event_row_id, "error": error, "note": note},
    )


async def workflow_id_for_resource(conn: AsyncConnection, resource_id: str) -> str | None:
    return (
        await conn.execute(
            text("SELECT workflow_id FROM idempotency_keys WHERE resource_id = :rid"), {"rid": resource_id}
        )
    ).scalar()
