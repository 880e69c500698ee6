"""Round trips of the split-checkout hold steps (QUALITY B2: on a slow link every round trip counts), and that
folding them into fewer statements kept what they did: keyed replays, concurrent duplicates, every error, and
nothing written by a call that fails.

Round trips are counted with ``sql_log``: SQLAlchemy's statements (``before_cursor_execute``) and the BEGIN /
COMMIT / ROLLBACK asyncpg sends (its query logger). The first use of a statement on a pooled connection adds one
prepare to that, as it always did.

Before this change: place_hold 5 (BEGIN, INSERT hold, SELECT wallet FOR UPDATE, UPDATE held, COMMIT), capture_hold
10 (BEGIN, SELECT hold, INSERT system wallet, SELECT journal, SELECT hold FOR UPDATE, SELECT wallets FOR UPDATE,
UPDATE hold, UPDATE held, the journal statement, COMMIT); their replays 4 and 6."""

from __future__ import annotations

import asyncio
import random
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.exceptions import ApplicationError

from activities.wallet import LedgerActivities
from db.engine import in_transaction
from db.repositories import ledger
from payweave import errors
from payweave.contracts.activities import CaptureHoldInput, JournalResult, PlaceHoldInput, PostingSpec
from payweave.contracts.ledger import Hold, Journal, Wallet
from tests.activities.test_ledger_repository import capturing, fund, new_wallet, placing, read, set_status
from tests.activities.test_statement_units import sql_log
from tests.conftest import eventually

# verify_ledger (I1–I4: balanced journals, balance = entries, held = open holds, 0 ≤ held ≤ balance) runs
# before and after every test here.
pytestmark = pytest.mark.reliability


def hold_input(wallet: Wallet, amount: int, *, key: str | None = None) -> PlaceHoldInput:
    return PlaceHoldInput(
        idempotency_key=key or f"hold:{uuid.uuid4().hex}",
        hold_id=f"hld_{uuid.uuid4().hex}",
        wallet_id=wallet.id,
        amount=amount,
        currency=wallet.currency,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


def capture_input(
    hold_id: str, amount: int, credits: list[PostingSpec], *, key: str | None = None
) -> CaptureHoldInput:
    return CaptureHoldInput(
        idempotency_key=key or f"settle:{uuid.uuid4().hex}",
        hold_id=hold_id,
        amount=amount,
        credits=credits,
        kind="checkout",
        description="a split checkout",
    )


async def split_checkout(engine: AsyncEngine) -> tuple[Wallet, Wallet, Hold]:
    """A buyer with 1,000 and a 600 hold, a merchant with nothing; gateway_clearing exists in USD."""
    buyer, merchant = await new_wallet(engine), await new_wallet(engine)
    await fund(engine, buyer, 1_000)
    hold = await in_transaction(engine, placing(buyer.id, 600))
    return buyer, merchant, hold


def settle(merchant: Wallet, wallet_part: int, gateway_part: int) -> list[PostingSpec]:
    """The checkout's settle credits: gateway_clearing gives the gateway part (if any), the merchant gets the
    total."""
    credits = [PostingSpec(wallet_id=merchant.id, amount=wallet_part + gateway_part)]
    if gateway_part:
        credits.insert(0, PostingSpec(system="gateway_clearing", amount=-gateway_part))
    return credits


async def ledger_state(engine: AsyncEngine, wallet_ids: list[str], hold_id: str, key: str) -> Any:
    """What a call could have changed: the wallets, the hold, the journal under the key."""

    async def work(conn: AsyncConnection) -> Any:
        wallets = [await ledger.get_wallet(conn, w) for w in wallet_ids]
        hold = await ledger.get_hold(conn, hold_id)
        journal = await ledger.find_journal(conn, key)
        return (
            [(w.balance, w.held, w.status, w.updated_at) if w else None for w in wallets],
            hold.model_dump() if hold else None,
            journal.model_dump() if journal else None,
        )

    return await in_transaction(engine, work)


async def business_error(call: Any) -> str:
    with pytest.raises(ApplicationError) as raised:
        await call
    assert raised.value.non_retryable
    return str(raised.value.type)


# --- round trips ---------------------------------------------------------------------------------------


async def test_place_hold_is_one_round_trip(wallet_engine: AsyncEngine) -> None:
    buyer = await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 1_000)
    activities = LedgerActivities(wallet_engine)
    inp = hold_input(buyer, 400)

    with sql_log(wallet_engine) as placed:
        result = await activities.place_hold(inp)
        await placed.settled()
    assert (result.hold_id, result.status, result.amount) == (inp.hold_id, "open", 400)
    # Was BEGIN, INSERT hold, lock the wallet, UPDATE held, COMMIT.
    assert (placed.statements, placed.control) == (["WITH"], [])

    with sql_log(wallet_engine) as again:
        assert await activities.place_hold(inp) == result
        await again.settled()
    assert (again.statements, again.control) == (["WITH"], [])  # was 4
    w = await read(wallet_engine, buyer.id)
    assert (w.balance, w.held) == (1_000, 400)


async def test_capture_hold_is_two_round_trips(wallet_engine: AsyncEngine) -> None:
    buyer, merchant, hold = await split_checkout(wallet_engine)
    activities = LedgerActivities(wallet_engine)
    inp = capture_input(hold.id, 500, settle(merchant, 500, 250))

    with sql_log(wallet_engine) as captured:
        result = await activities.capture_hold(inp)
        await captured.settled()
    assert result.created and result.journal_id is not None
    # The key's journal or the hold, then hold + wallets + journal + entries + held in one statement. Was 10.
    assert (captured.statements, captured.control) == (["SELECT", "WITH"], [])

    with sql_log(wallet_engine) as again:
        assert await activities.capture_hold(inp) == JournalResult(
            journal_id=result.journal_id, created=False
        )
        await again.settled()
    # The key's journal id, then the journal with its entries. Was 6.
    assert (again.statements, again.control) == (["SELECT", "SELECT"], [])

    b, m = await read(wallet_engine, buyer.id), await read(wallet_engine, merchant.id)
    assert (b.balance, b.held) == (500, 0)
    assert (m.balance, m.held) == (750, 0)


async def test_the_repository_calls_alone(wallet_engine: AsyncEngine) -> None:
    """The statements of each repository call, inside any transaction."""
    buyer, merchant, hold = await split_checkout(wallet_engine)
    key = f"cap:{uuid.uuid4().hex}"

    async def find(conn: AsyncConnection) -> Journal | None:
        return await ledger.find_journal(conn, key)

    with sql_log(wallet_engine) as placed:
        await in_transaction(wallet_engine, placing(buyer.id, 100))
    with sql_log(wallet_engine) as captured:
        journal = await in_transaction(wallet_engine, capturing(hold.id, 100, merchant.id, key=key))
    with sql_log(wallet_engine) as found:
        assert await in_transaction(wallet_engine, find) == journal.model_copy(update={"created": False})
    assert (placed.statements, captured.statements, found.statements) == (
        ["WITH"],
        ["SELECT", "WITH"],
        ["SELECT"],
    )


# --- keyed: replays and concurrent duplicates ------------------------------------------------------------


async def test_a_replayed_capture_returns_the_journal_and_changes_nothing(wallet_engine: AsyncEngine) -> None:
    buyer, merchant, hold = await split_checkout(wallet_engine)
    activities = LedgerActivities(wallet_engine)
    inp = capture_input(hold.id, 450, settle(merchant, 450, 0))
    first = await activities.capture_hold(inp)
    watched = [buyer.id, merchant.id]
    before = await ledger_state(wallet_engine, watched, hold.id, inp.idempotency_key)
    # Even with the merchant frozen since: the key is the first answer.
    await set_status(wallet_engine, merchant, "frozen")
    again = await activities.capture_hold(inp)
    await set_status(wallet_engine, merchant, "active")
    assert (again.journal_id, again.created) == (first.journal_id, False)
    after = await ledger_state(wallet_engine, watched, hold.id, inp.idempotency_key)
    assert after[1:] == before[1:]
    assert [w[:2] for w in after[0]] == [w[:2] for w in before[0]] == [(550, 0), (450, 0)]
    assert before[1]["status"] == "captured" and before[1]["captured_amount"] == 450
    assert [(e["wallet_id"], e["amount"]) for e in before[2]["entries"]] == [
        (buyer.id, -450),
        (merchant.id, 450),
    ]


@asynccontextmanager
async def row_locked(
    engine: AsyncEngine, table: str, row_id: str, waiting: str
) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Holds a row lock in a transaction of its own until the block ends. The block gets ``queued(n)``: wait until
    ``n`` statements containing ``waiting`` are blocked (behind this lock or behind each other), so that every one
    of them read its snapshot before the lock is let go — a race made certain, not left to timing."""

    async def queued(n: int) -> None:
        async def probe() -> bool:
            async with engine.connect() as conn:
                blocked = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND cardinality(pg_blocking_pids(pid)) > 0 AND strpos(query, :waiting) > 0"
                    ),
                    {"waiting": waiting},
                )
                return int(blocked.scalar_one()) >= n

        await eventually(probe, timeout=30)

    async with engine.begin() as conn:
        await conn.execute(text(f"SELECT 1 FROM {table} WHERE id = :id FOR NO KEY UPDATE"), {"id": row_id})
        yield queued


async def test_concurrent_duplicate_captures_post_one_journal(wallet_engine: AsyncEngine) -> None:
    """Ten attempts with one key all read the hold open and no journal, then queue on the hold's lock: the first
    captures it, the others find it captured and answer with its journal."""
    buyer, merchant, hold = await split_checkout(wallet_engine)
    activities = LedgerActivities(wallet_engine)
    inp = capture_input(hold.id, 600, settle(merchant, 600, 100))
    async with row_locked(wallet_engine, "holds", hold.id, "WITH hold AS") as queued:
        attempts = [asyncio.create_task(activities.capture_hold(inp)) for _ in range(10)]
        await queued(10)
    results = await asyncio.gather(*attempts)
    assert len({r.journal_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    b, m = await read(wallet_engine, buyer.id), await read(wallet_engine, merchant.id)
    assert (b.balance, b.held, m.balance) == (400, 0, 700)


async def test_a_replayed_hold_returns_the_hold_and_changes_nothing(wallet_engine: AsyncEngine) -> None:
    buyer = await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 500)
    activities = LedgerActivities(wallet_engine)
    inp = hold_input(buyer, 300)
    first = await activities.place_hold(inp)
    before = await read(wallet_engine, buyer.id)
    await set_status(wallet_engine, buyer, "frozen")  # the key is still the first answer
    assert await activities.place_hold(inp) == first
    await set_status(wallet_engine, buyer, "active")
    after = await read(wallet_engine, buyer.id)
    assert (after.balance, after.held) == (before.balance, before.held) == (500, 300)


@pytest.mark.parametrize("funded", [300, 2_000], ids=["funds for one", "funds for all"])
async def test_concurrent_duplicate_holds_return_the_first(wallet_engine: AsyncEngine, funded: int) -> None:
    """Ten attempts with one key all see no hold under it, then queue on the wallet's lock. The first places the
    hold; the others find the key taken — and where the money is now held, the key is still the answer, not
    insufficient funds."""
    buyer = await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, funded)
    activities = LedgerActivities(wallet_engine)
    key = f"hold:{uuid.uuid4().hex}"
    inputs = [hold_input(buyer, 200, key=key) for _ in range(10)]  # one key, a new hold id each time
    async with row_locked(wallet_engine, "wallets", buyer.id, "WITH existing AS") as queued:
        attempts = [asyncio.create_task(activities.place_hold(i)) for i in inputs]
        await queued(10)
    results = await asyncio.gather(*attempts)
    assert len({r.hold_id for r in results}) == 1
    w = await read(wallet_engine, buyer.id)
    assert (w.balance, w.held) == (funded, 200)


async def test_captures_racing_releases_end_one_way_or_the_other(wallet_engine: AsyncEngine) -> None:
    buyer, merchant = await new_wallet(wallet_engine), await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 1_000)
    activities = LedgerActivities(wallet_engine)
    holds = [await in_transaction(wallet_engine, placing(buyer.id, 100)) for _ in range(8)]

    async def capture(hold: Hold) -> str:
        try:
            await activities.capture_hold(capture_input(hold.id, 60, settle(merchant, 60, 0)))
            return "captured"
        except ApplicationError as exc:
            assert exc.type == errors.HoldNotOpen.code
            return "released"

    async def release(hold: Hold) -> Hold | None:
        async def work(conn: AsyncConnection) -> Hold | None:
            return await ledger.release_hold(conn, hold_id=hold.id)

        return await in_transaction(wallet_engine, work)

    outcomes = await asyncio.gather(*(capture(h) for h in holds), *(release(h) for h in holds))
    captured = outcomes[: len(holds)]
    for hold, won, released in zip(holds, captured, outcomes[len(holds) :], strict=True):
        assert isinstance(released, Hold)
        assert released.status == won, (hold.id, won, released.status)
    n = captured.count("captured")
    b, m = await read(wallet_engine, buyer.id), await read(wallet_engine, merchant.id)
    assert (b.balance, b.held, m.balance) == (1_000 - 60 * n, 0, 60 * n)


# --- errors: the same ones, and nothing written ----------------------------------------------------------

CAPTURE_ERRORS = [
    ("unknown hold", errors.NotFound),
    ("released hold", errors.HoldNotOpen),
    ("hold captured under another key", errors.HoldNotOpen),
    ("more than the hold", errors.InvalidAmount),
    ("nothing", errors.InvalidAmount),
    ("credits that do not add up", errors.InvalidAmount),
    ("frozen merchant", errors.WalletFrozen),
    ("closed merchant", errors.WalletClosed),
    ("frozen buyer", errors.WalletFrozen),
    ("unknown merchant", errors.WalletNotFound),
    ("merchant in another currency", errors.CurrencyMismatch),
    ("system account given as a wallet", errors.WalletNotFound),
]


@pytest.mark.parametrize("case,error", CAPTURE_ERRORS, ids=[c for c, _ in CAPTURE_ERRORS])
async def test_a_refused_capture_raises_its_error_and_writes_nothing(
    wallet_engine: AsyncEngine, case: str, error: type[errors.PayweaveError]
) -> None:
    buyer, merchant, hold = await split_checkout(wallet_engine)
    activities = LedgerActivities(wallet_engine)
    hold_id, amount, credits = hold.id, 500, settle(merchant, 500, 0)
    if case == "unknown hold":
        hold_id = f"hld_{uuid.uuid4().hex}"
    elif case == "released hold":
        await in_transaction(wallet_engine, lambda c: ledger.release_hold(c, hold_id=hold.id))
    elif case == "hold captured under another key":
        assert (await activities.capture_hold(capture_input(hold.id, 100, settle(merchant, 100, 0)))).created
    elif case == "more than the hold":
        amount, credits = 601, settle(merchant, 601, 0)
    elif case == "nothing":
        amount, credits = 0, settle(merchant, 0, 0)
    elif case == "credits that do not add up":
        credits = settle(merchant, 400, 0)
    elif case == "frozen merchant":
        await set_status(wallet_engine, merchant, "frozen")
    elif case == "closed merchant":
        await set_status(wallet_engine, merchant, "closed")
    elif case == "frozen buyer":  # a capture is a debit of the buyer's wallet, checked like any other
        await set_status(wallet_engine, buyer, "frozen")
    elif case == "unknown merchant":
        credits = [PostingSpec(wallet_id=f"wal_{uuid.uuid4().hex}", amount=500)]
    elif case == "merchant in another currency":
        eur = await new_wallet(wallet_engine, "EUR")
        credits = [PostingSpec(wallet_id=eur.id, amount=500)]
    elif case == "system account given as a wallet":
        credits = [PostingSpec(wallet_id=ledger.system_wallet_id("gateway_clearing", "USD"), amount=500)]
    inp = capture_input(hold_id, amount, credits)
    watched = [buyer.id, merchant.id]
    before = await ledger_state(wallet_engine, watched, hold_id, inp.idempotency_key)

    assert await business_error(activities.capture_hold(inp)) == error.code

    assert await ledger_state(wallet_engine, watched, hold_id, inp.idempotency_key) == before
    assert before[2] is None  # no journal under the key


PLACE_ERRORS = [
    ("beyond available", errors.InsufficientFunds),
    ("frozen wallet", errors.WalletFrozen),
    ("closed wallet", errors.WalletClosed),
    ("other currency", errors.CurrencyMismatch),
    ("nothing", errors.InvalidAmount),
]


@pytest.mark.parametrize("case,error", PLACE_ERRORS, ids=[c for c, _ in PLACE_ERRORS])
async def test_a_refused_hold_raises_its_error_and_writes_nothing(
    wallet_engine: AsyncEngine, case: str, error: type[errors.PayweaveError]
) -> None:
    buyer = await new_wallet(wallet_engine)
    await fund(wallet_engine, buyer, 500)
    await in_transaction(wallet_engine, placing(buyer.id, 200))  # available 300
    activities = LedgerActivities(wallet_engine)
    inp = hold_input(buyer, 300)
    if case == "beyond available":
        inp = hold_input(buyer, 301)
    elif case == "frozen wallet":
        await set_status(wallet_engine, buyer, "frozen")
    elif case == "closed wallet":
        await set_status(wallet_engine, buyer, "closed")
    elif case == "other currency":
        inp = inp.model_copy(update={"currency": "EUR"})
    elif case == "nothing":
        inp = inp.model_copy(update={"amount": 0})
    before = await read(wallet_engine, buyer.id)

    assert await business_error(activities.place_hold(inp)) == error.code

    assert await read(wallet_engine, buyer.id) == before

    async def by_key(conn: AsyncConnection) -> Hold | None:
        return await ledger._hold_by_key(conn, inp.idempotency_key)

    assert await in_transaction(wallet_engine, by_key) is None


async def test_a_hold_on_an_unknown_wallet_still_fails_on_the_foreign_key(wallet_engine: AsyncEngine) -> None:
    """As before: the hold row's foreign key refuses it (a retryable database error, not a business one)."""
    with pytest.raises(IntegrityError, match="foreign key"):
        await in_transaction(wallet_engine, placing(f"wal_{uuid.uuid4().hex}", 100))


async def test_the_first_capture_on_a_system_account_creates_it(wallet_engine: AsyncEngine) -> None:
    """A system account the credits name is taken to exist; the first capture in a currency where it does not
    yet is refused without writing and done again in a transaction that creates it. After that, the usual two
    round trips."""
    currency = "Q" + "".join(random.choices(string.ascii_uppercase, k=2))
    buyer, merchant = await new_wallet(wallet_engine, currency), await new_wallet(wallet_engine, currency)
    await fund(wallet_engine, buyer, 1_000)
    activities = LedgerActivities(wallet_engine)
    holds = [await activities.place_hold(hold_input(buyer, 100)) for _ in range(2)]
    fees = ledger.system_wallet_id("platform_fees", currency)
    credits = [PostingSpec(system="platform_fees", amount=10), PostingSpec(wallet_id=merchant.id, amount=90)]

    async def fees_wallet(conn: AsyncConnection) -> Wallet | None:
        return await ledger.get_wallet(conn, fees)

    assert await in_transaction(wallet_engine, fees_wallet) is None
    with sql_log(wallet_engine) as first:
        assert (await activities.capture_hold(capture_input(holds[0].hold_id, 100, credits))).created
        await first.settled()
    # Refused (read, statement), then BEGIN, read, create the account, statement, COMMIT.
    assert first.statements == ["SELECT", "WITH", "SELECT", "INSERT", "WITH"]
    assert first.control == ["BEGIN", "COMMIT"]
    with sql_log(wallet_engine) as second:
        assert (await activities.capture_hold(capture_input(holds[1].hold_id, 100, credits))).created
        await second.settled()
    assert (second.statements, second.control) == (["SELECT", "WITH"], [])
    account = await in_transaction(wallet_engine, fees_wallet)
    assert account is not None and (account.kind, account.balance) == ("system", 20)
    b, m = await read(wallet_engine, buyer.id), await read(wallet_engine, merchant.id)
    assert (b.balance, b.held, m.balance) == (800, 0, 180)
