"""Group-buy sessions and participants (payments database). All group-buy SQL lives here.

Like every repository: runs inside the caller's transaction, never commits, every write keyed.
The session row is the serialisation point: a join or an accepted gateway payment takes it FOR SHARE and
checks the session is still open; the decision takes it FOR UPDATE. So a participant either counts in the
decision or finds the session closed — never both, never neither.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from payweave import errors
from payweave.contracts.group_buy import (
    Decision,
    GroupBuyTerms,
    GroupBuyView,
    Participation,
    RefundProgress,
)

COUNTED = ("held", "paid")  # what the decision counts: money reserved (wallet hold) or received (gateway)
ACTIVE = ("joining", "held", "awaiting_payment", "paid", "captured")
REFUND_OUTCOMES = ("released", "refunded", "refunded_to_wallet")

_P_COLUMNS = (
    "p.id, p.seq, p.group_buy_id, p.idempotency_key, p.buyer, p.quantity, p.amount, p.method, p.gateway, "
    "p.wallet_id, p.hold_id, p.payment_id, p.status, p.failure_code, p.order_id, p.refund_id, p.created_at, "
    "g.currency, pay.gateway_payment_id, pay.next_action"
)
_P_FROM = (
    "FROM group_buy_participants p JOIN group_buys g ON g.id = p.group_buy_id "
    "LEFT JOIN payments pay ON pay.id = p.payment_id"
)


class ParticipantRow(Participation):
    seq: int  # always set on a stored participant
    wallet_id: str | None = None
    hold_id: str | None = None


def _participant(row: Any) -> ParticipantRow:
    data = dict(row._mapping)
    data["currency"] = data["currency"].strip()
    if isinstance(data.get("next_action"), str):
        data["next_action"] = json.loads(data["next_action"])
    return ParticipantRow.model_validate(data)


# --- sessions ------------------------------------------------------------------------------------------


async def create_group_buy(conn: AsyncConnection, *, terms: GroupBuyTerms, workflow_id: str) -> None:
    await conn.execute(
        text(
            "INSERT INTO group_buys (id, workflow_id, factory, factory_wallet_id, product, unit_price, currency, "
            "  moq, max_units, deadline, production_deadline, fee_bps, close_when_moq_reached) "
            "VALUES (:id, :wf, :factory, :factory_wallet_id, :product, :unit_price, :currency, :moq, :max_units, "
            "  :deadline, :production_deadline, :fee_bps, :close) ON CONFLICT (id) DO NOTHING"
        ),
        {
            "id": terms.group_buy_id,
            "wf": workflow_id,
            "factory": terms.factory,
            "factory_wallet_id": terms.factory_wallet_id,
            "product": terms.product,
            "unit_price": terms.unit_price,
            "currency": terms.currency,
            "moq": terms.moq,
            "max_units": terms.max_units,
            "deadline": terms.deadline,
            "production_deadline": terms.production_deadline,
            "fee_bps": terms.fee_bps,
            "close": terms.close_when_moq_reached,
        },
    )


async def session_status(conn: AsyncConnection, group_buy_id: str, *, lock: str = "SHARE") -> str:
    """The session's status, with the session row locked (SHARE: joins and payments; UPDATE: the decision)."""
    status = (
        await conn.execute(
            text(f"SELECT status FROM group_buys WHERE id = :id FOR {lock}"), {"id": group_buy_id}
        )
    ).scalar()
    if status is None:
        raise errors.NotFound(f"group buy {group_buy_id} not found")
    return str(status)


async def get_view(conn: AsyncConnection, group_buy_id: str) -> GroupBuyView | None:
    """The session as the database knows it, with live counts (for closed sessions and the API fallback)."""
    row = (
        await conn.execute(
            text(
                "SELECT g.*, "
                "  (SELECT coalesce(sum(quantity), 0) FROM group_buy_participants "
                "    WHERE group_buy_id = g.id AND status IN ('held', 'paid', 'captured')) AS paid_now,"
                "  (SELECT count(*) FROM group_buy_participants "
                "    WHERE group_buy_id = g.id AND status NOT IN ('declined', 'expired', 'late_refunded')) AS people "
                "FROM group_buys g WHERE g.id = :id"
            ),
            {"id": group_buy_id},
        )
    ).first()
    if row is None:
        return None
    m = row._mapping
    decided = m["decided_at"] is not None
    progress = None
    if m["status"] in ("failed", "canceled", "refunded"):
        progress = await refund_progress(conn, group_buy_id)
    return GroupBuyView(
        id=m["id"],
        status=m["status"],
        factory=m["factory"],
        product=m["product"],
        unit_price=m["unit_price"],
        currency=m["currency"].strip(),
        moq=m["moq"],
        max_units=m["max_units"],
        deadline=m["deadline"],
        production_deadline=m["production_deadline"],
        fee_bps=m["fee_bps"],
        close_when_moq_reached=m["close_when_moq_reached"],
        committed_units=m["committed_units"],
        paid_units=m["paid_units"] if decided else m["paid_now"],
        participants=m["people"],
        paid_amount=m["paid_amount"] if decided else None,
        fee_amount=m["fee_amount"],
        failure_code=m["failure_code"],
        cancel_reason=m["cancel_reason"],
        refund=progress,
    )


async def workflow_id_of(conn: AsyncConnection, group_buy_id: str) -> tuple[str, str] | None:
    """(workflow id, factory) of a session."""
    row = (
        await conn.execute(
            text("SELECT workflow_id, factory FROM group_buys WHERE id = :id"), {"id": group_buy_id}
        )
    ).first()
    return (row.workflow_id, row.factory) if row else None


async def decide(conn: AsyncConnection, *, group_buy_id: str, cancel_reason: str | None) -> Decision:
    """The one atomic decision. Deciding again returns the first decision."""
    status = await session_status(conn, group_buy_id, lock="UPDATE")
    if status == "open":
        totals = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(p.quantity), 0) AS units, coalesce(sum(p.amount), 0) AS amount, "
                    "  count(*) AS people, g.moq "
                    "FROM group_buys g LEFT JOIN group_buy_participants p "
                    "  ON p.group_buy_id = g.id AND p.status = ANY(:counted) "
                    "WHERE g.id = :id GROUP BY g.moq"
                ),
                {"id": group_buy_id, "counted": list(COUNTED)},
            )
        ).one()
        if cancel_reason is not None:
            outcome, code = "canceled", "canceled"
        elif totals.units >= totals.moq:
            outcome, code = "succeeded", None
        else:
            outcome, code = "failed", "moq_not_reached"
        await conn.execute(
            text(
                "UPDATE group_buys SET status = :status, failure_code = :code, cancel_reason = :reason, "
                "  paid_units = :units, "
                "  paid_amount = :amount, paid_participants = :people, decided_at = now(), updated_at = now() "
                "WHERE id = :id"
            ),
            {
                "id": group_buy_id,
                "status": outcome,
                "code": code,
                "reason": cancel_reason,
                "units": totals.units,
                "amount": totals.amount,
                "people": totals.people,
            },
        )
    row = (
        await conn.execute(
            text("SELECT status, paid_units, paid_amount, paid_participants FROM group_buys WHERE id = :id"),
            {"id": group_buy_id},
        )
    ).one()
    return Decision.model_validate(dict(row._mapping))


async def mark_group_buy(
    conn: AsyncConnection,
    *,
    group_buy_id: str,
    status: str,
    failure_code: str | None = None,
    fee_amount: int | None = None,
    cancel_reason: str | None = None,
    clear_failure: bool = False,
) -> None:
    await conn.execute(
        text(
            "UPDATE group_buys SET status = :status, "
            "  failure_code = CASE WHEN :clear THEN NULL ELSE coalesce(:code, failure_code) END, "
            "  cancel_reason = coalesce(:reason, cancel_reason), "
            "  fee_amount = coalesce(:fee, fee_amount), updated_at = now() WHERE id = :id"
        ),
        {
            "id": group_buy_id,
            "status": status,
            "code": failure_code,
            "fee": fee_amount,
            "reason": cancel_reason,
            "clear": clear_failure,
        },
    )


# --- participants --------------------------------------------------------------------------------------


async def insert_participant(
    conn: AsyncConnection,
    *,
    participant_id: str,
    group_buy_id: str,
    idempotency_key: str,
    buyer: str,
    quantity: int,
    amount: int,
    method: str,
    gateway: str | None,
    wallet_id: str | None,
    hold_id: str | None,
    payment_id: str | None,
) -> tuple[ParticipantRow, bool]:
    """Join once: the same key returns the first participation (created False); another key of the same buyer
    is refused."""
    inserted = await conn.execute(
        text(
            "INSERT INTO group_buy_participants (id, group_buy_id, idempotency_key, buyer, quantity, amount, "
            "  method, gateway, wallet_id, hold_id, payment_id) "
            "VALUES (:id, :gb, :key, :buyer, :quantity, :amount, :method, :gateway, :wallet_id, :hold_id, "
            "  :payment_id) ON CONFLICT DO NOTHING RETURNING id"
        ),
        {
            "id": participant_id,
            "gb": group_buy_id,
            "key": idempotency_key,
            "buyer": buyer,
            "quantity": quantity,
            "amount": amount,
            "method": method,
            "gateway": gateway,
            "wallet_id": wallet_id,
            "hold_id": hold_id,
            "payment_id": payment_id,
        },
    )
    mine = await get_participant(conn, participant_id)
    if mine is None or mine.buyer != buyer or mine.group_buy_id != group_buy_id:
        raise errors.AlreadyJoined(f"{buyer} already joined group buy {group_buy_id}")
    return mine, inserted.first() is not None


async def get_participant(conn: AsyncConnection, participant_id: str) -> ParticipantRow | None:
    row = (
        await conn.execute(text(f"SELECT {_P_COLUMNS} {_P_FROM} WHERE p.id = :id"), {"id": participant_id})
    ).first()
    return _participant(row) if row else None


async def find_participation(conn: AsyncConnection, group_buy_id: str, buyer: str) -> ParticipantRow | None:
    """The buyer's participation: the active one, else the newest attempt."""
    row = (
        await conn.execute(
            text(
                f"SELECT {_P_COLUMNS} {_P_FROM} WHERE p.group_buy_id = :gb AND p.buyer = :buyer "
                "ORDER BY (p.status IN ('declined', 'expired')), p.seq DESC LIMIT 1"
            ),
            {"gb": group_buy_id, "buyer": buyer},
        )
    ).first()
    return _participant(row) if row else None


async def list_participants(
    conn: AsyncConnection,
    *,
    group_buy_id: str,
    statuses: Sequence[str] | None = None,
    method: str | None = None,
    after_seq: int = 0,
    limit: int = 500,
) -> list[ParticipantRow]:
    rows = await conn.execute(
        text(
            f"SELECT {_P_COLUMNS} {_P_FROM} WHERE p.group_buy_id = :gb AND p.seq > :after "
            "  AND (CAST(:statuses AS text[]) IS NULL OR p.status = ANY(CAST(:statuses AS text[]))) "
            "  AND (CAST(:method AS text) IS NULL OR p.method = :method) "
            "ORDER BY p.seq LIMIT :limit"
        ),
        {
            "gb": group_buy_id,
            "after": after_seq,
            "statuses": list(statuses) if statuses is not None else None,
            "method": method,
            "limit": limit,
        },
    )
    return [_participant(r) for r in rows]


DROPPED = ("declined", "expired", "late_refunded")


async def commit_units(conn: AsyncConnection, group_buy_id: str, quantity: int) -> None:
    """Count a new participant's units against the session (serialised on the session row): refused when the
    session is no longer open or ``max_units`` would be exceeded."""
    done = (
        await conn.execute(
            text(
                "UPDATE group_buys SET committed_units = committed_units + :q, updated_at = now() "
                "WHERE id = :id AND status = 'open' AND (max_units IS NULL OR committed_units + :q <= max_units) "
                "RETURNING committed_units"
            ),
            {"id": group_buy_id, "q": quantity},
        )
    ).first()
    if done is not None:
        return
    row = (
        await conn.execute(
            text("SELECT status, max_units, committed_units FROM group_buys WHERE id = :id"),
            {"id": group_buy_id},
        )
    ).first()
    if row is None:
        raise errors.NotFound(f"group buy {group_buy_id} not found")
    if row.status != "open":
        raise errors.SessionClosed(f"group buy {group_buy_id} is {row.status}")
    raise errors.ValidationFailed(f"only {row.max_units - row.committed_units} units left in this group buy")


async def set_participants(
    conn: AsyncConnection,
    participant_ids: Sequence[str],
    *,
    status: str,
    only_from: Sequence[str],
    failure_code: str | None = None,
) -> int:
    """Move participants to ``status`` — only those still in one of ``only_from`` (states never go back).
    A participant dropping out (declined, expired, late) gives its units back to the session."""
    if not participant_ids:
        return 0
    moved = (
        await conn.execute(
            text(
                "UPDATE group_buy_participants SET status = :status, "
                "  failure_code = coalesce(:code, failure_code), updated_at = now() "
                "WHERE id = ANY(:ids) AND status = ANY(:from) RETURNING group_buy_id, quantity"
            ),
            {"ids": list(participant_ids), "status": status, "code": failure_code, "from": list(only_from)},
        )
    ).all()
    if status in DROPPED and moved:
        await conn.execute(
            text(
                "UPDATE group_buys SET committed_units = committed_units - :q, updated_at = now() WHERE id = :id"
            ),
            {"id": moved[0].group_buy_id, "q": sum(r.quantity for r in moved)},
        )
    return len(moved)


async def set_refund_id(conn: AsyncConnection, participant_id: str, refund_id: str) -> None:
    await conn.execute(
        text("UPDATE group_buy_participants SET refund_id = :r, updated_at = now() WHERE id = :id"),
        {"id": participant_id, "r": refund_id},
    )


async def refund_progress(conn: AsyncConnection, group_buy_id: str) -> RefundProgress:
    rows = await conn.execute(
        text(
            "SELECT status, count(*) AS n FROM group_buy_participants "
            "WHERE group_buy_id = :gb AND (order_id IS NOT NULL OR status <> 'captured') "
            "GROUP BY status"
        ),
        {"gb": group_buy_id},
    )
    n = {r.status: r.n for r in rows}
    released, refunded, to_wallet = n.get("released", 0), n.get("refunded", 0), n.get("refunded_to_wallet", 0)
    pending = n.get("refund_pending", 0)
    open_ = n.get("held", 0) + n.get("paid", 0) + n.get("captured", 0)
    done = released + refunded + to_wallet
    return RefundProgress(
        total=done + pending + open_,
        done=done,
        released=released,
        refunded=refunded,
        refunded_to_wallet=to_wallet,
        pending=pending,
    )


async def outcomes(conn: AsyncConnection, group_buy_id: str) -> dict[str, str]:
    rows = await conn.execute(
        text("SELECT id, status FROM group_buy_participants WHERE group_buy_id = :gb ORDER BY seq"),
        {"gb": group_buy_id},
    )
    return {r.id: r.status for r in rows}


async def pending_payment_workflows(conn: AsyncConnection, group_buy_id: str) -> list[str]:
    rows = await conn.execute(
        text(
            "SELECT pay.workflow_id FROM group_buy_participants p JOIN payments pay ON pay.id = p.payment_id "
            "WHERE p.group_buy_id = :gb AND p.status IN ('joining', 'awaiting_payment') ORDER BY p.seq"
        ),
        {"gb": group_buy_id},
    )
    return [r.workflow_id for r in rows]


# --- orders --------------------------------------------------------------------------------------------


async def create_orders(
    conn: AsyncConnection,
    *,
    group_buy_id: str,
    session_workflow_id: str,
    participants: Sequence[ParticipantRow],
    order_ids: Sequence[str],
) -> None:
    """One paid order per participant (bulk, keyed by order id), linked back from the participant."""
    if not participants:
        return
    session = (
        await conn.execute(
            text("SELECT factory, factory_wallet_id, unit_price FROM group_buys WHERE id = :id"),
            {"id": group_buy_id},
        )
    ).one()
    await conn.execute(
        text(
            "INSERT INTO orders (id, workflow_id, buyer, merchant, currency, total, wallet_amount, gateway_amount, "
            "  method, gateway, buyer_wallet_id, merchant_wallet_id, items, status, group_buy_id) "
            "SELECT d.order_id, :wf || ':order:' || d.pid, d.buyer, :factory, :currency, d.amount, "
            "  CASE WHEN d.method = 'wallet' THEN d.amount ELSE 0 END, "
            "  CASE WHEN d.method = 'gateway' THEN d.amount ELSE 0 END, "
            "  d.method, d.gateway, d.wallet_id, :factory_wallet, "
            "  jsonb_build_array(jsonb_build_object('product_id', CAST(:gb AS text), 'quantity', d.quantity, "
            "    'unit_price', CAST(:unit_price AS bigint))), 'paid', :gb "
            "FROM unnest(CAST(:order_ids AS text[]), CAST(:pids AS text[]), CAST(:buyers AS text[]), "
            "  CAST(:amounts AS bigint[]), CAST(:methods AS text[]), CAST(:gateways AS text[]), "
            "  CAST(:wallets AS text[]), CAST(:quantities AS int[])) "
            "  AS d(order_id, pid, buyer, amount, method, gateway, wallet_id, quantity) "
            "ON CONFLICT (id) DO NOTHING"
        ),
        {
            "wf": session_workflow_id,
            "factory": session.factory,
            "factory_wallet": session.factory_wallet_id,
            "unit_price": session.unit_price,
            "currency": participants[0].currency,
            "gb": group_buy_id,
            "order_ids": list(order_ids),
            "pids": [p.id for p in participants],
            "buyers": [p.buyer for p in participants],
            "amounts": [p.amount for p in participants],
            "methods": [p.method for p in participants],
            "gateways": [p.gateway for p in participants],
            "wallets": [p.wallet_id for p in participants],
            "quantities": [p.quantity for p in participants],
        },
    )
    await conn.execute(
        text(
            "UPDATE group_buy_participants p SET order_id = d.order_id, updated_at = now() "
            "FROM unnest(CAST(:pids AS text[]), CAST(:order_ids AS text[])) AS d(pid, order_id) "
            "WHERE p.id = d.pid AND p.order_id IS NULL"
        ),
        {"pids": [p.id for p in participants], "order_ids": list(order_ids)},
    )


async def mark_orders_refunded(conn: AsyncConnection, participant_ids: Sequence[str]) -> None:
    await conn.execute(
        text(
            "UPDATE orders o SET status = 'refunded', refunded_amount = o.total, refunded_wallet = o.wallet_amount, "
            "  refunded_gateway = o.gateway_amount, updated_at = now() "
            "FROM group_buy_participants p WHERE p.id = ANY(:ids) AND o.id = p.order_id AND o.status = 'paid'"
        ),
        {"ids": list(participant_ids)},
    )


async def escrowed_total(conn: AsyncConnection, group_buy_id: str) -> int:
    """What the factory is owed: every participant whose money is in escrow and who has an order."""
    total = (
        await conn.execute(
            text(
                "SELECT coalesce(sum(amount), 0) FROM group_buy_participants "
                "WHERE group_buy_id = :gb AND status IN ('captured', 'paid') AND order_id IS NOT NULL"
            ),
            {"gb": group_buy_id},
        )
    ).scalar()
    return int(total or 0)


async def counts(conn: AsyncConnection, group_buy_id: str) -> tuple[int, int, int]:
    """(committed units, paid units, participants) as the database has them now."""
    row = (
        await conn.execute(
            text(
                "SELECT g.committed_units, "
                "  coalesce(sum(p.quantity) FILTER (WHERE p.status IN ('held', 'paid', 'captured')), 0) AS paid, "
                "  count(p.id) FILTER (WHERE p.status NOT IN ('declined', 'expired', 'late_refunded')) AS people "
                "FROM group_buys g LEFT JOIN group_buy_participants p ON p.group_buy_id = g.id "
                "WHERE g.id = :id GROUP BY g.committed_units"
            ),
            {"id": group_buy_id},
        )
    ).one()
    return int(row.committed_units), int(row.paid), int(row.people)
