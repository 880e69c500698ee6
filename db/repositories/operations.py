"""SQL of the sweeper and the reconciliation: read-mostly queries over both databases, each bounded.

Writes go through the owning repositories (``payments.update_payment``, ``ledger.release_hold``,
``payments.mark_webhook_routed``), except the reconciliation's own mismatch table.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.repositories.payments import _PAYMENT_COLUMNS as PAYMENT_COLUMNS
from db.repositories.payments import _payment as payment_from_row
from payweave.contracts.operations import (
    ExpiredHold,
    Mismatch,
    OverdueGroupBuy,
    PendingOrder,
    StalePayment,
    UnroutedWebhook,
)
from payweave.contracts.payments import Payment, WebhookEvent

# --- payments DB ---------------------------------------------------------------------------------------


async def stale_payments(conn: AsyncConnection, *, min_age_seconds: int, limit: int) -> list[StalePayment]:
    """Open payments past their expiry or older than ``min_age_seconds``: the expired ones first."""
    rows = await conn.execute(
        text(
            "SELECT id AS payment_id, workflow_id, purpose, gateway, gateway_payment_id, amount, "
            "       trim(currency) AS currency, expires_at "
            "FROM payments WHERE status IN ('pending', 'awaiting_payment') "
            "AND (expires_at < now() OR created_at <= now() - make_interval(secs => :age)) "
            "ORDER BY (expires_at IS NOT NULL AND expires_at < now()) DESC, created_at LIMIT :limit"
        ),
        {"age": min_age_seconds, "limit": limit},
    )
    return [StalePayment.model_validate(dict(r)) for r in rows.mappings()]


async def overdue_group_buys(conn: AsyncConnection, *, limit: int) -> list[OverdueGroupBuy]:
    """Group-buy sessions past their join deadline that have not decided yet."""
    rows = await conn.execute(
        text(
            "SELECT id AS group_buy_id, workflow_id, deadline FROM group_buys "
            "WHERE status = 'open' AND deadline < now() ORDER BY deadline LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [OverdueGroupBuy.model_validate(dict(r)) for r in rows.mappings()]


async def unrouted_webhooks(
    conn: AsyncConnection, *, min_age_seconds: int, limit: int
) -> list[UnroutedWebhook]:
    rows = await conn.execute(
        text(
            "SELECT id AS event_row_id, provider, event_id FROM webhook_events "
            "WHERE routed_at IS NULL AND received_at <= now() - make_interval(secs => :age) "
            "ORDER BY received_at LIMIT :limit"
        ),
        {"age": min_age_seconds, "limit": limit},
    )
    return [UnroutedWebhook.model_validate(dict(r)) for r in rows.mappings()]


async def unrouted_webhook(
    conn: AsyncConnection, event_row_id: int
) -> tuple[WebhookEvent, dict[str, Any]] | None:
    """A stored event still waiting for delivery, with its payload (None once somebody routed it)."""
    row = (
        await conn.execute(
            text(
                "SELECT id, provider, event_id, event_type, object_id, workflow_id, routed_at, payload "
                "FROM webhook_events WHERE id = :id AND routed_at IS NULL"
            ),
            {"id": event_row_id},
        )
    ).first()
    if row is None:
        return None
    data = dict(row._mapping)
    payload = data.pop("payload")
    return WebhookEvent.model_validate(data), payload if isinstance(payload, dict) else {}


async def set_webhook_owner(conn: AsyncConnection, *, event_row_id: int, workflow_id: str) -> None:
    await conn.execute(
        text("UPDATE webhook_events SET workflow_id = :wf WHERE id = :id AND workflow_id IS NULL"),
        {"id": event_row_id, "wf": workflow_id},
    )


async def payments_in_window(
    conn: AsyncConnection,
    *,
    start: datetime,
    end: datetime,
    after_created_at: datetime | None,
    after_id: str | None,
    limit: int,
) -> list[Payment]:
    """Payments created in [start, end), keyset-paginated by (created_at, id)."""
    rows = await conn.execute(
        text(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE created_at >= :start AND created_at < :end "
            "AND (CAST(:after_ts AS timestamptz) IS NULL OR (created_at, id) > (:after_ts, :after_id)) "
            "ORDER BY created_at, id LIMIT :limit"
        ),
        {
            "start": start,
            "end": end,
            "after_ts": after_created_at,
            "after_id": after_id or "",
            "limit": limit,
        },
    )
    return [payment_from_row(r) for r in rows]


async def gateway_refunds_of(conn: AsyncConnection, payment_id: str) -> list[dict[str, Any]]:
    """The refunds with a card part of the order a checkout payment (``pay_<order id>``) belongs to."""
    if not payment_id.startswith("pay_"):
        return []
    rows = await conn.execute(
        text(
            "SELECT id, workflow_id, status, gateway_amount, gateway_refund_id FROM refunds "
            "WHERE order_id = :order_id AND gateway_amount > 0 ORDER BY id"
        ),
        {"order_id": payment_id.removeprefix("pay_")},
    )
    return [dict(r) for r in rows.mappings()]


async def record_mismatches(conn: AsyncConnection, run_id: str, mismatches: list[Mismatch]) -> list[Mismatch]:
    """Store a run's mismatches once (a retried page adds nothing); returns the ones new in this call."""
    if not mismatches:
        return []
    rows = await conn.execute(
        text(
            "INSERT INTO reconciliation_mismatches (run_id, kind, payment_id, subject, expected, actual) "
            "SELECT :run_id, m.kind, m.payment_id, m.subject, m.expected, m.actual "
            "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "     AS m(kind text, payment_id text, subject text, expected text, actual text) "
            "ON CONFLICT (run_id, kind, payment_id, subject) DO NOTHING "
            "RETURNING kind, payment_id, subject, expected, actual"
        ),
        {"run_id": run_id, "rows": json.dumps([m.model_dump() for m in mismatches])},
    )
    return [Mismatch.model_validate(dict(r)) for r in rows.mappings()]


# --- wallet DB -----------------------------------------------------------------------------------------


async def expired_open_holds(conn: AsyncConnection, *, limit: int) -> list[ExpiredHold]:
    rows = await conn.execute(
        text(
            "SELECT id AS hold_id, saga_id, wallet_id, amount, expires_at FROM holds "
            "WHERE status = 'open' AND expires_at < now() ORDER BY expires_at LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [ExpiredHold.model_validate(dict(r)) for r in rows.mappings()]


async def expired_pending_orders(conn: AsyncConnection, *, limit: int) -> list[PendingOrder]:
    rows = await conn.execute(
        text(
            "SELECT id AS order_id, workflow_id, expires_at FROM orders "
            "WHERE status = 'pending' AND expires_at < now() ORDER BY expires_at LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [PendingOrder.model_validate(dict(r)) for r in rows.mappings()]


async def order_left_traces(conn: AsyncConnection, order_id: str) -> bool:
    """Whether anything of the order's saga reached the payments database: its gateway payment or a stock
    reservation (both keyed by the order)."""
    row = await conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE id = :payment) "
            "OR EXISTS (SELECT 1 FROM stock_reservations WHERE order_id = :order)"
        ),
        {"payment": f"pay_{order_id}", "order": order_id},
    )
    return bool(row.scalar_one())


async def saga_moved_money(conn: AsyncConnection, *, hold_id: str, settle_key: str) -> bool:
    """Whether a checkout's saga touched the wallet database: its hold or its settle journal (both keyed)."""
    row = await conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM holds WHERE id = :hold) "
            "OR EXISTS (SELECT 1 FROM journals WHERE idempotency_key = :settle)"
        ),
        {"hold": hold_id, "settle": settle_key},
    )
    return bool(row.scalar_one())


async def clearing_journals(
    conn: AsyncConnection, *, payment_id: str, saga_ids: list[str]
) -> list[dict[str, Any]]:
    """Every journal about the payment with its net ``gateway_clearing`` amount (journal id, kind, saga_id,
    clearing). A journal is about the payment by its ``external_ref``; journals posted before that column
    existed (NULL) count when their saga is one of ``saga_ids`` (the payment's and its refunds' workflows)."""
    rows = await conn.execute(
        text(
            "SELECT j.id, j.kind, j.saga_id, sum(e.amount) AS clearing FROM journals j "
            "JOIN entries e ON e.journal_id = j.id JOIN wallets w ON w.id = e.wallet_id "
            "WHERE w.owner = 'system:gateway_clearing' "
            "AND (j.external_ref = :ref OR (j.external_ref IS NULL AND j.saga_id = ANY(:sagas))) "
            "GROUP BY j.id, j.kind, j.saga_id ORDER BY j.id"
        ),
        {"ref": payment_id, "sagas": saga_ids},
    )
    return [dict(r) for r in rows.mappings()]


def is_capture(journal: dict[str, Any]) -> bool:
    """A journal that takes a gateway payment into the ledger (clearing debited), not a reversal."""
    return int(journal["clearing"]) < 0 and not str(journal["kind"]).endswith("_reversal")
