"""Products, stock reservations and orders (payments database). Same rules as the other repositories:
the caller owns the transaction; keyed writes return the first result; states only move forward."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from payweave import errors
from payweave.contracts.commerce import Order, OrderItem, Product, Refund, Reservation
from payweave.refund_split import RefundPolicy, split_refund

_PRODUCT_COLUMNS = "id, merchant, name, price, currency, stock, reserved, created_at"
_RESERVATION_COLUMNS = "id, product_id, order_id, quantity, status"
_ORDER_COLUMNS = (
    "id, workflow_id, buyer, merchant, currency, total, wallet_amount, gateway_amount, method, gateway, "
    "buyer_wallet_id, merchant_wallet_id, items, status, failure_code, refunded_amount, refunded_wallet, "
    "refunded_gateway, expires_at, created_at, updated_at, group_buy_id"
)
# An order never moves backwards: a late "failed" cannot un-pay it, a late "paid" cannot revive a cancel.
ORDER_RANK = {
    "pending": 0,
    "awaiting_payment": 1,
    "failed": 2,
    "expired": 2,
    "canceled": 2,
    "paid": 3,
    "partially_refunded": 4,
    "refunded": 5,
}


# The rank of an order status as SQL over ``col``: an order never moves to a lower rank.
_ORDER_RANK_SQL = "CASE {col} " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in ORDER_RANK.items()) + " END"


def _strip(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    if isinstance(data.get("currency"), str):
        data["currency"] = data["currency"].strip()
    return data


async def create_product(
    conn: AsyncConnection, *, product_id: str, merchant: str, name: str, price: int, currency: str, stock: int
) -> Product:
    row = (
        await conn.execute(
            text(
                "INSERT INTO products (id, merchant, name, price, currency, stock) "
                f"VALUES (:id, :merchant, :name, :price, :currency, :stock) RETURNING {_PRODUCT_COLUMNS}"
            ),
            {
                "id": product_id,
                "merchant": merchant,
                "name": name,
                "price": price,
                "currency": currency,
                "stock": stock,
            },
        )
    ).one()
    return Product.model_validate(_strip(row))


async def get_product(conn: AsyncConnection, product_id: str) -> Product | None:
    row = (
        await conn.execute(
            text(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = :id"), {"id": product_id}
        )
    ).first()
    return Product.model_validate(_strip(row)) if row else None


async def reserve_stock(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    reservation_id: str,
    product_id: str,
    order_id: str,
    quantity: int,
) -> Reservation:
    """Hold ``quantity`` units for an order; concurrent checkouts can never reserve more than the stock."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO stock_reservations (id, idempotency_key, product_id, order_id, quantity) "
                "VALUES (:id, :key, :product_id, :order_id, :quantity) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_RESERVATION_COLUMNS}"
            ),
            {
                "id": reservation_id,
                "key": idempotency_key,
                "product_id": product_id,
                "order_id": order_id,
                "quantity": quantity,
            },
        )
    ).first()
    if row is None:
        existing = (
            await conn.execute(
                text(f"SELECT {_RESERVATION_COLUMNS} FROM stock_reservations WHERE idempotency_key = :key"),
                {"key": idempotency_key},
            )
        ).one()
        return Reservation.model_validate(dict(existing._mapping))
    updated = (
        await conn.execute(
            text(
                "UPDATE products SET reserved = reserved + :q, updated_at = now() "
                "WHERE id = :id AND stock - reserved >= :q RETURNING id"
            ),
            {"q": quantity, "id": product_id},
        )
    ).first()
    if updated is None:
        raise errors.OutOfStock(f"product {product_id} has fewer than {quantity} units available")
    return Reservation.model_validate(dict(row._mapping))


async def _move_reservation(conn: AsyncConnection, reservation_id: str, to: str) -> Reservation | None:
    row = (
        await conn.execute(
            text(
                "UPDATE stock_reservations SET status = :to, updated_at = now() "
                f"WHERE id = :id AND status = 'reserved' RETURNING {_RESERVATION_COLUMNS}"
            ),
            {"id": reservation_id, "to": to},
        )
    ).first()
    if row is None:  # already committed or released: nothing to do twice
        current = (
            await conn.execute(
                text(f"SELECT {_RESERVATION_COLUMNS} FROM stock_reservations WHERE id = :id"),
                {"id": reservation_id},
            )
        ).first()
        return Reservation.model_validate(dict(current._mapping)) if current else None
    reservation = Reservation.model_validate(dict(row._mapping))
    stock_change = "stock = stock - :q, " if to == "committed" else ""
    await conn.execute(
        text(
            f"UPDATE products SET {stock_change}reserved = reserved - :q, updated_at = now() WHERE id = :id"
        ),
        {"q": reservation.quantity, "id": reservation.product_id},
    )
    return reservation


async def release_reservation(conn: AsyncConnection, reservation_id: str) -> Reservation | None:
    return await _move_reservation(conn, reservation_id, "released")


async def commit_reservation(conn: AsyncConnection, reservation_id: str) -> Reservation | None:
    return await _move_reservation(conn, reservation_id, "committed")


async def create_order(
    conn: AsyncConnection,
    *,
    order_id: str,
    workflow_id: str,
    buyer: str,
    merchant: str,
    currency: str,
    total: int,
    wallet_amount: int,
    gateway_amount: int,
    method: str,
    gateway: str | None,
    buyer_wallet_id: str | None,
    merchant_wallet_id: str,
    items: list[OrderItem],
    expires_at: datetime | None,
) -> Order:
    row = (
        await conn.execute(
            text(
                "INSERT INTO orders (id, workflow_id, buyer, merchant, currency, total, wallet_amount, gateway_amount, "
                "method, gateway, buyer_wallet_id, merchant_wallet_id, items, expires_at) VALUES (:id, :wf, :buyer, "
                ":merchant, :currency, :total, :wallet_amount, :gateway_amount, :method, :gateway, :buyer_wallet_id, "
                ":merchant_wallet_id, CAST(:items AS jsonb), :expires_at) ON CONFLICT (workflow_id) DO NOTHING "
                f"RETURNING {_ORDER_COLUMNS}"
            ),
            {
                "id": order_id,
                "wf": workflow_id,
                "buyer": buyer,
                "merchant": merchant,
                "currency": currency,
                "total": total,
                "wallet_amount": wallet_amount,
                "gateway_amount": gateway_amount,
                "method": method,
                "gateway": gateway,
                "buyer_wallet_id": buyer_wallet_id,
                "merchant_wallet_id": merchant_wallet_id,
                "items": json.dumps([i.model_dump() for i in items]),
                "expires_at": expires_at,
            },
        )
    ).first()
    if row is not None:
        return Order.model_validate(_strip(row))
    existing = await get_order(conn, order_id)
    assert existing is not None
    return existing


async def get_order(conn: AsyncConnection, order_id: str, *, for_update: bool = False) -> Order | None:
    lock = " FOR UPDATE" if for_update else ""
    row = (
        await conn.execute(
            text(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = :id{lock}"), {"id": order_id}
        )
    ).first()
    return Order.model_validate(_strip(row)) if row else None


async def update_order(
    conn: AsyncConnection, *, order_id: str, status: str, failure_code: str | None = None
) -> Order:
    return (await move_order(conn, order_id=order_id, status=status, failure_code=failure_code))[1]


async def move_order(
    conn: AsyncConnection, *, order_id: str, status: str, failure_code: str | None = None
) -> tuple[str, Order]:
    """Move the order forward to ``status`` (never backwards) under its row lock, in one statement:
    (status before, order after)."""
    if status not in ORDER_RANK:
        raise ValueError(f"unknown order status {status!r}")
    row = (
        await conn.execute(
            text(
                "UPDATE orders p SET status = :status, failure_code = coalesce(:code, p.failure_code), "
                "updated_at = now() FROM (SELECT id, status AS old_status FROM orders WHERE id = :id FOR UPDATE) o "
                f"WHERE p.id = o.id AND ({_ORDER_RANK_SQL.format(col='CAST(:status AS text)')} > "
                f"{_ORDER_RANK_SQL.format(col='o.old_status')} OR o.old_status = :status) "
                f"RETURNING o.old_status, {', '.join('p.' + c.strip() for c in _ORDER_COLUMNS.split(','))}"
            ),
            {"id": order_id, "status": status, "code": failure_code},
        )
    ).first()
    if row is not None:
        data = _strip(row)
        return str(data.pop("old_status")), Order.model_validate(data)
    current = await get_order(conn, order_id)  # not there, or a move backwards: nothing changed
    if current is None:
        raise errors.NotFound(f"order {order_id} not found")
    return current.status, current


# --- refunds -------------------------------------------------------------------------------------------

_REFUND_COLUMNS = (
    "id, workflow_id, order_id, requester, amount, wallet_amount, gateway_amount, policy, reason, status, "
    "failure_code, gateway_refund_id, created_at"
)
REFUNDABLE = ("paid", "partially_refunded")


async def get_refund(conn: AsyncConnection, refund_id: str) -> Refund | None:
    row = (
        await conn.execute(text(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = :id"), {"id": refund_id})
    ).first()
    return Refund.model_validate(dict(row._mapping)) if row else None


async def _add_refunded(conn: AsyncConnection, order: Order, wallet: int, gateway: int) -> None:
    refunded = order.refunded_amount + wallet + gateway
    status = "refunded" if refunded == order.total else ("partially_refunded" if refunded else "paid")
    await conn.execute(
        text(
            "UPDATE orders SET refunded_wallet = refunded_wallet + :w, refunded_gateway = refunded_gateway + :g, "
            "refunded_amount = refunded_amount + :w + :g, status = :status, updated_at = now() WHERE id = :id"
        ),
        {"w": wallet, "g": gateway, "status": status, "id": order.id},
    )


async def reserve_refund(
    conn: AsyncConnection,
    *,
    refund_id: str,
    workflow_id: str,
    order_id: str,
    requester: str,
    amount: int | None,
    policy: RefundPolicy,
    reason: str,
) -> Refund:
    """Book a refund against the order under its row lock: concurrent refunds are serialized here, so their
    sum can never exceed what was paid. The same refund id again returns the first booking."""
    existing = await get_refund(conn, refund_id)
    if existing is not None:
        return existing
    order = await get_order(conn, order_id, for_update=True)
    if order is None:
        raise errors.NotFound(f"order {order_id} not found")
    again = await get_refund(conn, refund_id)  # a concurrent duplicate may have booked it while we waited
    if again is not None:
        return again
    if order.status not in REFUNDABLE:
        raise errors.Conflict(f"order {order_id} is {order.status}, not refundable")
    left = order.total - order.refunded_amount
    amount = left if amount is None else amount
    try:
        wallet, gateway = split_refund(
            amount,
            wallet_paid=order.wallet_amount,
            gateway_paid=order.gateway_amount,
            wallet_refunded=order.refunded_wallet,
            gateway_refunded=order.refunded_gateway,
            policy=policy,
        )
    except ValueError:
        raise errors.RefundExceedsPaid(f"{amount} is more than the {left} left to refund") from None
    row = (
        await conn.execute(
            text(
                "INSERT INTO refunds (id, workflow_id, order_id, requester, amount, wallet_amount, gateway_amount, "
                "policy, reason) VALUES (:id, :wf, :order_id, :requester, :amount, :w, :g, :policy, :reason) "
                f"RETURNING {_REFUND_COLUMNS}"
            ),
            {
                "id": refund_id,
                "wf": workflow_id,
                "order_id": order_id,
                "requester": requester,
                "amount": amount,
                "w": wallet,
                "g": gateway,
                "policy": policy,
                "reason": reason,
            },
        )
    ).one()
    await _add_refunded(conn, order, wallet, gateway)
    return Refund.model_validate(dict(row._mapping))


async def finish_refund(
    conn: AsyncConnection,
    *,
    refund_id: str,
    status: str,
    failure_code: str | None = None,
    gateway_refund_id: str | None = None,
) -> Refund:
    """Close a refund. A failed refund gives its booking back to the order (once: only from pending)."""
    row = (
        await conn.execute(
            text(
                "UPDATE refunds SET status = :status, failure_code = :code, "
                "gateway_refund_id = coalesce(:gid, gateway_refund_id), updated_at = now() "
                f"WHERE id = :id AND status = 'pending' RETURNING {_REFUND_COLUMNS}"
            ),
            {"id": refund_id, "status": status, "code": failure_code, "gid": gateway_refund_id},
        )
    ).first()
    if row is None:
        current = await get_refund(conn, refund_id)
        if current is None:
            raise errors.NotFound(f"refund {refund_id} not found")
        return current
    refund = Refund.model_validate(dict(row._mapping))
    if status == "failed":
        order = await get_order(conn, refund.order_id, for_update=True)
        assert order is not None
        await _add_refunded(conn, order, -refund.wallet_amount, -refund.gateway_amount)
    return refund
