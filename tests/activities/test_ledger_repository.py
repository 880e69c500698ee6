"""The ledger repository on a real PostgreSQL: keyed writes, concurrency, the CHECK constraints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_transaction
from db.repositories import ledger
from payweave import errors
from payweave.contracts.ledger import Hold, Journal, Posting, Wallet


async def new_wallet(engine: AsyncEngine, currency: str = "USD") -> Wallet:
    async def work(conn: AsyncConnection) -> Wallet:
        wallet, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{uuid.uuid4().hex}", owner=f"owner-{uuid.uuid4().hex}", currency=currency
        )
        return wallet

    return await in_transaction(engine, work)


async def fund(engine: AsyncEngine, wallet: Wallet, amount: int) -> None:
    async def work(conn: AsyncConnection) -> None:
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", wallet.currency)
        await ledger.post_journal(
            conn,
            idempotency_key=f"fund:{uuid.uuid4().hex}",
            kind="deposit",
            currency=wallet.currency,
            postings=[
                Posting(wallet_id=clearing, amount=-amount),
                Posting(wallet_id=wallet.id, amount=amount),
            ],
        )

    await in_transaction(engine, work)


async def read(engine: AsyncEngine, wallet_id: str) -> Wallet:
    async def work(conn: AsyncConnection) -> Wallet | None:
        return await ledger.get_wallet(conn, wallet_id)

    wallet = await in_transaction(engine, work)
    assert wallet is not None
    return wallet


def placing(
    wallet_id: str, amount: int, *, key: str | None = None, hold_id: str | None = None
) -> Callable[[AsyncConnection], Awaitable[Hold]]:
    """A unit of work placing a USD hold: a fresh key and hold id on every call unless given."""

    async def work(conn: AsyncConnection) -> Hold:
        return await ledger.place_hold(
            conn,
            idempotency_key=key or f"h:{uuid.uuid4().hex}",
            hold_id=hold_id or f"hld_{uuid.uuid4().hex}",
            wallet_id=wallet_id,
            amount=amount,
            currency="USD",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )

    return work


def capturing(
    hold_id: str, amount: int, to: str, *, key: str | None = None
) -> Callable[[AsyncConnection], Awaitable[Journal]]:
    """A unit of work capturing ``amount`` of a hold into the wallet ``to`` (a fresh key unless given)."""

    async def work(conn: AsyncConnection) -> Journal:
        return await ledger.capture_hold(
            conn,
            idempotency_key=key or f"cap:{uuid.uuid4().hex}",
            hold_id=hold_id,
            amount=amount,
            kind="checkout",
            counter_postings=[Posting(wallet_id=to, amount=amount)],
        )

    return work


async def set_status(engine: AsyncEngine, wallet: Wallet, status: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await ledger.set_wallet_status(conn, wallet.id, status)

    await in_transaction(engine, work)


async def test_concurrent_duplicate_journal_posts_have_one_effect(wallet_engine: AsyncEngine) -> None:
    a, b = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, a, 1_000)
    key = f"dup:{uuid.uuid4().hex}"

    async def post(conn: AsyncConnection):  # type: ignore[no-untyped-def]
        return await ledger.post_journal(
            conn,
            idempotency_key=key,
            kind="transfer",
            currency="USD",
            postings=[Posting(wallet_id=a.id, amount=-300), Posting(wallet_id=b.id, amount=300)],
        )

    results = await asyncio.gather(*(in_transaction(wallet_engine, post) for _ in range(20)))
    assert len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert (await read(wallet_engine, a.id)).balance == 700
    assert (await read(wallet_engine, b.id)).balance == 300


async def test_concurrent_duplicate_holds_have_one_effect(wallet_engine: AsyncEngine) -> None:
    a = await new_wallet(wallet_engine)
    await fund(wallet_engine, a, 500)
    key = f"hold:{uuid.uuid4().hex}"
    hold = placing(a.id, 200, key=key)  # a new hold id each attempt, one key
    results = await asyncio.gather(*(in_transaction(wallet_engine, hold) for _ in range(10)))
    assert len({h.id for h in results}) == 1
    w = await read(wallet_engine, a.id)
    assert (w.balance, w.held, w.available) == (500, 200, 300)


@pytest.mark.reliability
async def test_200_concurrent_debits_on_a_wallet_funded_for_100_exactly_100_succeed(
    wallet_engine: AsyncEngine,
) -> None:
    """QUALITY R19: no overdraft, and no serialization/deadlock error leaks to the caller."""
    source, sink = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, source, 100)

    async def debit(i: int) -> str:
        async def work(conn: AsyncConnection) -> None:
            await ledger.post_journal(
                conn,
                idempotency_key=f"r19:{source.id}:{i}",
                kind="transfer",
                currency="USD",
                postings=[Posting(wallet_id=source.id, amount=-1), Posting(wallet_id=sink.id, amount=1)],
            )

        try:
            await in_transaction(wallet_engine, work)
            return "ok"
        except errors.InsufficientFunds:
            return "insufficient_funds"

    outcomes = await asyncio.gather(*(debit(i) for i in range(200)))
    assert outcomes.count("ok") == 100
    assert outcomes.count("insufficient_funds") == 100
    assert (await read(wallet_engine, source.id)).balance == 0
    assert (await read(wallet_engine, sink.id)).balance == 100


@pytest.mark.reliability
async def test_raw_sql_overdraft_is_rejected_by_the_check_constraint(wallet_engine: AsyncEngine) -> None:
    """QUALITY R20: the database itself refuses a negative customer balance or held > balance."""
    w = await new_wallet(wallet_engine)
    await fund(wallet_engine, w, 50)
    with pytest.raises(IntegrityError, match="wallets_customer_balance_nonnegative"):
        async with wallet_engine.begin() as conn:
            await conn.execute(text("UPDATE wallets SET balance = balance - 51 WHERE id = :id"), {"id": w.id})
    with pytest.raises(IntegrityError, match="wallets_held_within_balance"):
        async with wallet_engine.begin() as conn:
            await conn.execute(text("UPDATE wallets SET held = 51 WHERE id = :id"), {"id": w.id})
    assert (await read(wallet_engine, w.id)).balance == 50


async def test_entries_are_immutable_and_journals_must_balance(wallet_engine: AsyncEngine) -> None:
    w = await new_wallet(wallet_engine)
    await fund(wallet_engine, w, 10)
    with pytest.raises(DBAPIError, match="immutable"):
        async with wallet_engine.begin() as conn:
            await conn.execute(
                text("UPDATE entries SET amount = amount + 1 WHERE wallet_id = :id"), {"id": w.id}
            )
    with pytest.raises(DBAPIError, match="does not balance"):
        async with wallet_engine.begin() as conn:
            jid = (
                await conn.execute(
                    text(
                        "INSERT INTO journals (idempotency_key, kind, currency) VALUES (:k, 'bad', 'USD') RETURNING id"
                    ),
                    {"k": uuid.uuid4().hex},
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO entries (journal_id, wallet_id, amount, currency, balance_after) "
                    "VALUES (:j, :w, 5, 'USD', 15)"
                ),
                {"j": jid, "w": w.id},
            )
    assert (await read(wallet_engine, w.id)).balance == 10


async def test_hold_capture_partial_and_release(wallet_engine: AsyncEngine) -> None:
    buyer, merchant = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 1_000)
    hold = await in_transaction(wallet_engine, placing(buyer.id, 600))
    with pytest.raises(errors.InsufficientFunds):
        await in_transaction(wallet_engine, placing(buyer.id, 600))  # only 400 available now
    capture = capturing(hold.id, 450, merchant.id, key=f"cap:{uuid.uuid4().hex}")
    first, again = await in_transaction(wallet_engine, capture), await in_transaction(wallet_engine, capture)
    assert first.id == again.id and first.created and not again.created
    b = await read(wallet_engine, buyer.id)
    assert (b.balance, b.held, b.available) == (550, 0, 550)
    assert (await read(wallet_engine, merchant.id)).balance == 450

    released_hold = await in_transaction(wallet_engine, placing(buyer.id, 500))

    async def release(conn: AsyncConnection):  # type: ignore[no-untyped-def]
        return await ledger.release_hold(conn, hold_id=released_hold.id)

    await asyncio.gather(*(in_transaction(wallet_engine, release) for _ in range(5)))
    b = await read(wallet_engine, buyer.id)
    assert (b.balance, b.held) == (550, 0)


@pytest.mark.parametrize("status,code", [("frozen", errors.WalletFrozen), ("closed", errors.WalletClosed)])
async def test_inactive_wallets_refuse_postings(wallet_engine: AsyncEngine, status: str, code: type) -> None:
    w = await new_wallet(wallet_engine)
    await set_status(wallet_engine, w, status)
    with pytest.raises(code):
        await fund(wallet_engine, w, 10)


async def test_concurrent_holds_and_captures_on_one_wallet_do_not_deadlock(
    wallet_engine: AsyncEngine,
) -> None:
    """Holds insert a row referencing the wallet (KEY SHARE) and then lock it: 50 at once must all succeed,
    and captures racing journals on the same wallets must not deadlock either (no leaked 40P01)."""
    buyer, merchant = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 10_000)

    def hold(i: int) -> Callable[[AsyncConnection], Awaitable[Hold]]:
        return placing(buyer.id, 100, key=f"dl:{buyer.id}:{i}", hold_id=f"hld_{buyer.id}_{i}")

    async def no_retry(work):  # type: ignore[no-untyped-def]
        async with wallet_engine.begin() as conn:
            return await work(conn)

    holds = await asyncio.gather(*(no_retry(hold(i)) for i in range(50)))
    assert len({h.id for h in holds}) == 50

    async def journal(conn: AsyncConnection) -> None:
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"j:{uuid.uuid4().hex}",
            kind="deposit",
            currency="USD",
            postings=[
                Posting(wallet_id=clearing, amount=-1),
                Posting(wallet_id=merchant.id, amount=1),
                Posting(wallet_id=clearing, amount=-1),
                Posting(wallet_id=buyer.id, amount=1),
            ],
        )

    await asyncio.gather(
        *(no_retry(capturing(h.id, 100, merchant.id)) for h in holds[:25]),
        *(no_retry(journal) for _ in range(25)),
    )
    b, m = await read(wallet_engine, buyer.id), await read(wallet_engine, merchant.id)
    assert (b.balance, b.held) == (10_000 - 2_500 + 25, 2_500)
    assert m.balance == 2_500 + 25


async def test_a_new_journal_is_one_statement_and_each_entry_records_its_balance_after(
    wallet_engine: AsyncEngine,
) -> None:
    """post_journal writes a new journal in one round trip (B3), and balance_after walks every wallet's
    postings in order, also when a wallet appears more than once."""
    a, b = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, a, 1_000)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    async def work(conn: AsyncConnection):  # type: ignore[no-untyped-def]
        event.listen(conn.sync_connection, "before_cursor_execute", count)
        return await ledger.post_journal(
            conn,
            idempotency_key=f"walk:{uuid.uuid4().hex}",
            kind="transfer",
            currency="USD",
            postings=[
                Posting(wallet_id=a.id, amount=-100),
                Posting(wallet_id=b.id, amount=60),
                Posting(wallet_id=a.id, amount=-20),
                Posting(wallet_id=b.id, amount=80),
                Posting(wallet_id=a.id, amount=20),
                Posting(wallet_id=b.id, amount=-40),
            ],
        )

    journal = await in_transaction(wallet_engine, work)
    assert len(statements) == 1
    assert [(e.wallet_id, e.amount, e.balance_after) for e in journal.entries] == [
        (a.id, -100, 900),
        (b.id, 60, 60),
        (a.id, -20, 880),
        (b.id, 80, 140),
        (a.id, 20, 900),
        (b.id, -40, 100),
    ]
    assert [e.id for e in journal.entries] == sorted(e.id for e in journal.entries)
    assert (await read(wallet_engine, a.id)).balance == 900
    assert (await read(wallet_engine, b.id)).balance == 100


@pytest.mark.parametrize(
    "case,code",
    [
        ("unknown wallet", errors.WalletNotFound),
        ("system account addressed by a customer", errors.WalletNotFound),
        ("other currency", errors.CurrencyMismatch),
        ("held debit in another currency", errors.CurrencyMismatch),
        ("debit beyond available", errors.InsufficientFunds),
        ("debit from frozen", errors.WalletFrozen),
        ("credit to closed", errors.WalletClosed),
        ("compensation debit from frozen", errors.WalletFrozen),
    ],
)
async def test_a_refused_journal_raises_its_error_and_writes_nothing(
    wallet_engine: AsyncEngine, case: str, code: type
) -> None:
    a, b, eur = (
        await new_wallet(wallet_engine),
        await new_wallet(wallet_engine),
        await new_wallet(wallet_engine, "EUR"),
    )
    await fund(wallet_engine, a, 100)
    await fund(wallet_engine, b, 100)
    await fund(wallet_engine, eur, 100)
    await in_transaction(wallet_engine, placing(a.id, 60))  # a: balance 100, available 40
    src, dst, amount, options = a.id, b.id, 10, {}
    if case == "unknown wallet":
        dst = f"wal_{uuid.uuid4().hex}"
    elif case == "system account addressed by a customer":
        dst = ledger.system_wallet_id("escrow", "USD")
        options = {"customer_wallets": {dst}}
    elif case == "other currency":
        dst = eur.id
    elif case == "held debit in another currency":
        src, options = eur.id, {"held_debits": {eur.id}}
    elif case == "debit beyond available":
        amount = 41
    elif case == "debit from frozen":
        await set_status(wallet_engine, a, "frozen")
    elif case == "credit to closed":
        await set_status(wallet_engine, b, "closed")
    elif case == "compensation debit from frozen":
        await set_status(wallet_engine, a, "frozen")
        options = {"compensation": True}
    before = {w: (await read(wallet_engine, w)).balance for w in (a.id, b.id, eur.id)}
    key = f"refused:{uuid.uuid4().hex}"

    async def post(conn: AsyncConnection) -> None:
        await ledger.ensure_system_wallet(conn, "escrow", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=key,
            kind="transfer",
            currency="USD",
            postings=[Posting(wallet_id=src, amount=-amount), Posting(wallet_id=dst, amount=amount)],
            **options,  # type: ignore[arg-type]
        )

    with pytest.raises(code):
        await in_transaction(wallet_engine, post)

    async def journal(conn: AsyncConnection):  # type: ignore[no-untyped-def]
        return await ledger.find_journal(conn, key)

    assert await in_transaction(wallet_engine, journal) is None
    assert {w: (await read(wallet_engine, w)).balance for w in before} == before


async def test_a_compensation_credit_and_a_held_debit_pass_a_freeze(wallet_engine: AsyncEngine) -> None:
    """An undo gives money back to a frozen wallet; a debit a hold already reserved is taken from one."""
    a, b = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, a, 100)
    await set_status(wallet_engine, a, "frozen")
    await set_status(wallet_engine, b, "frozen")

    def post(**options: object):  # type: ignore[no-untyped-def]
        async def work(conn: AsyncConnection):  # type: ignore[no-untyped-def]
            return await ledger.post_journal(
                conn,
                idempotency_key=f"pass:{uuid.uuid4().hex}",
                kind="transfer",
                currency="USD",
                postings=[Posting(wallet_id=a.id, amount=-30), Posting(wallet_id=b.id, amount=30)],
                **options,  # type: ignore[arg-type]
            )

        return work

    assert (await in_transaction(wallet_engine, post(held_debits={a.id}, compensation=True))).created
    with pytest.raises(errors.WalletFrozen):  # the credit alone passes (compensation), not the debit
        await in_transaction(wallet_engine, post(compensation=True))
    with pytest.raises(errors.WalletFrozen):  # the debit alone passes (held), not the credit
        await in_transaction(wallet_engine, post(held_debits={a.id}))
    assert ((await read(wallet_engine, a.id)).balance, (await read(wallet_engine, b.id)).balance) == (70, 30)
