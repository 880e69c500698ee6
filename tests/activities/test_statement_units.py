"""``in_statement``: a unit whose one write is a single statement runs without BEGIN/COMMIT (one round trip), and
work that needs a transaction is refused before its second write runs. The one-statement moves of payments and
orders keep update_payment's and move_order's rules (never backwards, the status before, NotFound)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_statement, in_transaction
from db.repositories import commerce
from db.repositories import payments as repo
from payweave import errors


@dataclass
class SqlLog:
    statements: list[str] = field(default_factory=list)  # what SQLAlchemy executes (first word)
    control: list[str] = field(default_factory=list)  # BEGIN / COMMIT / ROLLBACK asyncpg sends itself

    async def settled(self) -> SqlLog:
        # asyncpg hands each logged query to its loggers with loop.call_soon: one pass of the loop delivers
        # every query already sent (no timing involved).
        await asyncio.sleep(0)
        return self


@contextmanager
def sql_log(engine: AsyncEngine) -> Iterator[SqlLog]:
    """What goes to PostgreSQL on ``engine`` while the block runs: SQLAlchemy's statements, and the transaction
    control asyncpg sends as simple queries (its query logger), which is where a BEGIN would show."""
    log = SqlLog()

    def statement(conn: Any, cursor: Any, stmt: str, params: Any, context: Any, many: bool) -> None:
        log.statements.append(stmt.split()[0].upper())

    def logged(record: Any) -> None:
        log.control.append(record.query.split()[0].upper().rstrip(";"))

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.remove_query_logger(logged)

    listeners = [
        (engine.sync_engine, "before_cursor_execute", statement),
        (engine.sync_engine.pool, "checkout", checkout),
        (engine.sync_engine.pool, "checkin", checkin),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield log
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)


async def new_payment(engine: AsyncEngine) -> str:
    payment_id = f"pay_{uuid.uuid4().hex}"

    async def work(conn: AsyncConnection) -> None:
        await repo.create_payment(
            conn,
            payment_id=payment_id,
            idempotency_key=payment_id,
            workflow_id=f"wf:{payment_id}",
            # A deposit never credited: db/verify.py checks the money of succeeded checkout payments, and
            # these tests move statuses of payments that no saga paid.
            purpose="deposit",
            owner="alice",
            wallet_id=None,
            gateway="stripe",
            amount=500,
            currency="USD",
            expires_at=None,
        )

    await in_statement(engine, work)
    return payment_id


async def test_one_statement_unit_sends_no_begin_and_its_write_commits(payments_engine: AsyncEngine) -> None:
    with sql_log(payments_engine) as log:
        payment_id = await new_payment(payments_engine)
        await log.settled()
    assert (log.statements, log.control) == (["INSERT"], [])
    with sql_log(payments_engine) as log:  # the same look at a transaction: the log does see BEGIN and COMMIT
        found = await in_transaction(payments_engine, lambda conn: repo.get_payment(conn, payment_id))
        await log.settled()
    assert (log.statements, log.control) == (["SELECT"], ["BEGIN", "COMMIT"])
    assert found is not None and found.status == "pending"


async def test_a_second_write_is_refused_before_it_runs(payments_engine: AsyncEngine) -> None:
    first, second = f"pay_{uuid.uuid4().hex}", f"pay_{uuid.uuid4().hex}"

    async def two_writes(conn: AsyncConnection) -> None:
        for payment_id in (first, second):
            await conn.execute(
                text(
                    "INSERT INTO payments (id, idempotency_key, workflow_id, purpose, owner, gateway, amount, "
                    "currency) VALUES (:id, :id, :id, 'deposit', 'alice', 'stripe', 1, 'USD')"
                ),
                {"id": payment_id},
            )

    with pytest.raises(RuntimeError, match="needs in_transaction"):
        await in_statement(payments_engine, two_writes)
    ids = await in_transaction(
        payments_engine,
        lambda conn: conn.execute(
            text("SELECT id FROM payments WHERE id IN (:a, :b)"), {"a": first, "b": second}
        ),
    )
    assert [r.id for r in ids] == [first]  # the first statement committed on its own; the second never ran


async def test_a_lock_that_would_end_with_its_statement_is_refused(payments_engine: AsyncEngine) -> None:
    payment_id = await new_payment(payments_engine)

    async def locks(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT id FROM payments WHERE id = :id FOR UPDATE"), {"id": payment_id})
        await conn.execute(text("UPDATE payments SET credited = true WHERE id = :id"), {"id": payment_id})

    with pytest.raises(RuntimeError, match="needs in_transaction"):
        await in_statement(payments_engine, locks)


async def test_the_guard_ends_with_the_unit(payments_engine: AsyncEngine) -> None:
    """A pooled connection that served an in_statement unit runs any number of writes in a transaction next."""
    await new_payment(payments_engine)

    async def many(conn: AsyncConnection) -> int:
        for _ in range(3):
            await conn.execute(text("UPDATE payments SET updated_at = now() WHERE false"))
        return 3

    results = await asyncio.gather(*(in_transaction(payments_engine, many) for _ in range(40)))
    assert results == [3] * 40


async def test_move_payment_is_one_statement_and_never_moves_backwards(payments_engine: AsyncEngine) -> None:
    payment_id = await new_payment(payments_engine)
    with sql_log(payments_engine) as log:
        before, waiting = await in_statement(
            payments_engine,
            lambda conn: repo.move_payment(conn, payment_id=payment_id, status="awaiting_payment"),
        )
        await log.settled()
    assert (log.statements, log.control) == (["UPDATE"], [])
    assert (before, waiting.status) == ("pending", "awaiting_payment")

    before, failed = await in_statement(
        payments_engine,
        lambda conn: repo.move_payment(
            conn, payment_id=payment_id, status="failed", failure_code="card_declined"
        ),
    )
    assert (before, failed.status, failed.failure_code) == ("awaiting_payment", "failed", "card_declined")

    # Backwards is ignored; the other fields still move (gateway id kept once set, next action replaced).
    gid, action = "pi_123", {"type": "redirect"}
    before, same = await in_statement(
        payments_engine,
        lambda conn: repo.move_payment(
            conn, payment_id=payment_id, status="awaiting_payment", gateway_payment_id=gid, next_action=action
        ),
    )
    assert (before, same.status, same.failure_code) == ("failed", "failed", "card_declined")
    assert (same.gateway_payment_id, same.next_action) == (gid, action)


async def test_move_payment_of_an_unknown_payment_is_not_found(payments_engine: AsyncEngine) -> None:
    with pytest.raises(errors.NotFound):
        await in_statement(
            payments_engine, lambda conn: repo.move_payment(conn, payment_id="pay_nope", status="failed")
        )


async def new_order(engine: AsyncEngine) -> str:
    order_id = f"ord_{uuid.uuid4().hex}"

    async def work(conn: AsyncConnection) -> None:
        await commerce.create_order(
            conn,
            order_id=order_id,
            workflow_id=f"checkout:{order_id}",
            buyer="alice",
            merchant="shop",
            currency="USD",
            total=500,
            wallet_amount=500,
            gateway_amount=0,
            method="wallet",
            gateway=None,
            buyer_wallet_id="wal_alice",
            merchant_wallet_id="wal_shop",
            items=[],
            expires_at=None,
        )

    await in_statement(engine, work)
    return order_id


async def test_move_order_in_one_statement_forward_only(payments_engine: AsyncEngine) -> None:
    order_id = await new_order(payments_engine)
    with sql_log(payments_engine) as log:
        before, paid = await in_statement(
            payments_engine, lambda conn: commerce.move_order(conn, order_id=order_id, status="paid")
        )
        await log.settled()
    assert (log.statements, log.control) == (["UPDATE"], [])
    assert (before, paid.status) == ("pending", "paid")

    # Backwards: nothing changes, the current order comes back.
    before, same = await in_statement(
        payments_engine,
        lambda conn: commerce.move_order(conn, order_id=order_id, status="failed", failure_code="late"),
    )
    assert (before, same.status, same.failure_code) == ("paid", "paid", None)

    # The same status again is applied (a retried finish), keeping the status.
    before, again = await in_statement(
        payments_engine, lambda conn: commerce.move_order(conn, order_id=order_id, status="paid")
    )
    assert (before, again.status) == ("paid", "paid")

    with pytest.raises(errors.NotFound):
        await in_statement(
            payments_engine, lambda conn: commerce.move_order(conn, order_id="ord_nope", status="paid")
        )


async def test_concurrent_moves_of_one_order_see_each_other(payments_engine: AsyncEngine) -> None:
    """Under the row lock: of two concurrent moves to different final statuses exactly one reports the order's
    previous status as pending; the other sees the first's status as its 'before'."""
    order_id = await new_order(payments_engine)
    results = await asyncio.gather(
        in_statement(
            payments_engine, lambda conn: commerce.move_order(conn, order_id=order_id, status="paid")
        ),
        in_statement(
            payments_engine, lambda conn: commerce.move_order(conn, order_id=order_id, status="expired")
        ),
    )
    befores = sorted(before for before, _ in results)
    assert befores.count("pending") == 1
    final = await in_transaction(payments_engine, lambda conn: commerce.get_order(conn, order_id))
    assert final is not None and final.status == "paid"  # paid outranks expired, whichever came first
