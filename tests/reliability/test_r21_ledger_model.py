"""R21: a hypothesis stateful model of wallets, holds and journals, checked against the real ledger repository.

A ``RuleBasedStateMachine`` drives the functions of ``db/repositories/ledger.py`` (each call in its own
transaction through ``db.engine.in_transaction``, as activities do) on the test PostgreSQL and keeps a plain
Python model of every wallet's balance, held amount and status, and of every hold and journal key. After every
step the model must equal the database, and I1–I4 must hold over the machine's own wallets, journals and holds.
A business error (``payweave.errors.*``) must be the one the model predicts and leave the database unchanged.
Each example ends with the full ``db.verify.verify_ledger``; its violations that concern the machine's objects
fail the test (other tests share the database, so theirs are left to the session-end check).

The repository is async (SQLAlchemy on asyncpg, engines bound to the session's event loop); hypothesis is
synchronous. The machine runs in a worker thread (``asyncio.to_thread``) and sends every coroutine back to the
test's loop with ``asyncio.run_coroutine_threadsafe``, so the engines only ever see their own loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_transaction
from db.repositories import ledger
from db.verify import verify_ledger
from payweave import errors
from payweave.contracts.ledger import Posting

pytestmark = pytest.mark.reliability

T = TypeVar("T")

CURRENCIES = ("USD", "EUR")
AMOUNTS = st.integers(min_value=1, max_value=2_000)
STEP_TIMEOUT = 60.0


@dataclass
class ModelWallet:
    id: str
    owner: str
    currency: str
    status: str = "active"
    balance: int = 0
    held: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass
class ModelHold:
    id: str
    key: str
    wallet_id: str
    amount: int
    currency: str
    status: str = "open"
    captured_amount: int = 0


@dataclass
class Model:
    wallets: dict[str, ModelWallet] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    journal_keys: set[str] = field(default_factory=set)
    # money that entered (funding) and left (captures into escrow) the machine's wallets, per currency
    funded: dict[str, int] = field(default_factory=dict)
    escrowed: dict[str, int] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    """Set by the test before running: the engines, the test's loop and a prefix unique to this test run."""

    wallet_engine: ClassVar[AsyncEngine]
    payments_engine: ClassVar[AsyncEngine]
    loop: ClassVar[asyncio.AbstractEventLoop]
    prefix: ClassVar[str]
    stats: ClassVar[dict[str, int]]

    wallets = Bundle("wallets")
    holds = Bundle("holds")
    journal_keys = Bundle("journal_keys")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.run_id = f"{self.prefix}{uuid.uuid4().hex[:10]}"
        self.n = 0
        self.rare = 0  # the steps that only probe a refusal are limited, so money-moving steps dominate

    # --- plumbing -----------------------------------------------------------------------------------------

    def await_(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=STEP_TIMEOUT)

    def tx(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return self.await_(in_transaction(self.wallet_engine, work))

    def key(self, what: str) -> str:
        self.n += 1
        return f"{self.run_id}:{what}:{self.n}"

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def expect_error(self, expected: type[errors.PayweaveError], call: Callable[[], object]) -> None:
        """The call must fail with exactly the error the model predicts (the invariant then checks that the
        database did not change: the model was not touched)."""
        try:
            result = call()
        except errors.PayweaveError as exc:
            assert type(exc) is expected, f"expected {expected.__name__}, got {type(exc).__name__}: {exc}"
            self.count(f"error:{expected.code}")
            return
        raise AssertionError(f"expected {expected.__name__}, the call succeeded: {result!r}")

    def posting_error(
        self, wallet: ModelWallet, amount: int, currency: str
    ) -> type[errors.PayweaveError] | None:
        """What ``_check_posting`` refuses, for a customer wallet (no compensation)."""
        if wallet.currency != currency:
            return errors.CurrencyMismatch
        if wallet.status == "frozen":
            return errors.WalletFrozen
        if wallet.status == "closed":
            return errors.WalletClosed
        if amount < 0 and wallet.available + amount < 0:
            return errors.InsufficientFunds
        return None

    # --- wallets ------------------------------------------------------------------------------------------

    @initialize(target=wallets)
    def first_wallets(self) -> Any:
        """Two USD wallets and a EUR one, funded, so most steps move money rather than bounce."""
        created = [self._create(currency) for currency in ("USD", "USD", "EUR")]
        for wallet_id in created:
            self._fund(wallet_id, 5_000)
        return multiple(*created)

    def _create(self, currency: str) -> str:
        owner = f"{self.run_id}:owner:{len(self.model.wallets)}"
        wallet_id = f"wal_{self.run_id}_{len(self.model.wallets)}"
        wallet, created = self.tx(
            lambda c: ledger.create_wallet(c, wallet_id=wallet_id, owner=owner, currency=currency)
        )
        assert created and wallet.id == wallet_id and wallet.balance == 0 and wallet.held == 0
        self.model.wallets[wallet_id] = ModelWallet(wallet_id, owner, currency)
        self.count("create_wallet")
        return wallet_id

    @precondition(lambda self: len(self.model.wallets) < 6)
    @rule(target=wallets, currency=st.sampled_from(["USD", "USD", "EUR"]))
    def create_wallet(self, currency: str) -> str:
        return self._create(currency)

    @precondition(lambda self: self.rare < 3)
    @rule(wallet_id=wallets)
    def create_wallet_again(self, wallet_id: str) -> None:
        """One wallet per (owner, currency): a second create returns the first, unchanged."""
        self.rare += 1
        m = self.model.wallets[wallet_id]
        wallet, created = self.tx(
            lambda c: ledger.create_wallet(
                c, wallet_id=f"wal_{self.run_id}_dup{self.n}", owner=m.owner, currency=m.currency
            )
        )
        assert not created and wallet.id == wallet_id
        self.count("create_wallet_again")

    @rule(wallet_id=wallets, status=st.sampled_from(["frozen", "active", "active", "active", "closed"]))
    def set_status(self, wallet_id: str, status: str) -> None:
        wallet = self.tx(lambda c: ledger.set_wallet_status(c, wallet_id, status))
        assert wallet.status == status
        self.model.wallets[wallet_id].status = status
        self.count(f"set_status:{status}")

    # --- journals -----------------------------------------------------------------------------------------

    @rule(target=journal_keys, wallet_id=wallets, amount=st.integers(min_value=1, max_value=5_000))
    def fund(self, wallet_id: str, amount: int) -> Any:
        """A deposit: gateway_clearing (a system account, may go negative) → the wallet."""
        key = self._fund(wallet_id, amount)
        return multiple() if key is None else key

    def _fund(self, wallet_id: str, amount: int) -> str | None:
        m = self.model.wallets[wallet_id]
        key = self.key("fund")

        async def work(conn: AsyncConnection) -> Any:
            clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", m.currency)
            return await ledger.post_journal(
                conn,
                idempotency_key=key,
                kind="deposit",
                currency=m.currency,
                postings=[
                    Posting(wallet_id=clearing, amount=-amount),
                    Posting(wallet_id=m.id, amount=amount),
                ],
                customer_wallets=[m.id],
            )

        expected = self.posting_error(m, amount, m.currency)
        if expected is not None:
            self.expect_error(expected, lambda: self.tx(work))
            return None
        journal = self.tx(work)
        assert journal.created and sum(e.amount for e in journal.entries) == 0
        m.balance += amount
        self.model.funded[m.currency] = self.model.funded.get(m.currency, 0) + amount
        self.model.journal_keys.add(key)
        self.count("fund")
        return key

    def partner(self, wallet_id: str, other: str, same_currency: bool) -> str | None:
        """``other``, or (``same_currency``) the first other wallet of ``wallet_id``'s currency: most money
        moves between wallets that can take it, a few attempts probe the currency check."""
        currency = self.model.wallets[wallet_id].currency
        if same_currency and self.model.wallets[other].currency != currency or other == wallet_id:
            other = next(
                (w for w, m in self.model.wallets.items() if w != wallet_id and m.currency == currency),
                wallet_id,
            )
        return None if other == wallet_id else other

    @rule(
        target=journal_keys,
        source=wallets,
        other=wallets,
        same_currency=st.sampled_from([True, True, True, False]),
        amount=AMOUNTS,
    )
    def transfer(self, source: str, other: str, same_currency: bool, amount: int) -> Any:
        destination = self.partner(source, other, same_currency)
        if destination is None:
            return multiple()
        a, b = self.model.wallets[source], self.model.wallets[destination]
        key = self.key("transfer")

        def call() -> Any:
            return self.tx(
                lambda c: ledger.post_journal(
                    c,
                    idempotency_key=key,
                    kind="transfer",
                    currency=a.currency,
                    postings=[
                        Posting(wallet_id=a.id, amount=-amount),
                        Posting(wallet_id=b.id, amount=amount),
                    ],
                    customer_wallets=[a.id, b.id],
                )
            )

        # post_journal checks the wallets in the order of the postings: source first.
        expected = self.posting_error(a, -amount, a.currency) or self.posting_error(b, amount, a.currency)
        if expected is not None:
            self.expect_error(expected, call)
            return multiple()
        journal = call()
        assert journal.created
        assert [(e.wallet_id, e.amount) for e in journal.entries] == [(a.id, -amount), (b.id, amount)]
        a.balance -= amount
        b.balance += amount
        self.model.journal_keys.add(key)
        self.count("transfer")
        return key

    @rule(key=journal_keys, source=wallets, destination=wallets, amount=AMOUNTS)
    def post_duplicate_key(self, key: str, source: str, destination: str, amount: int) -> None:
        """A retried or different request under a used key returns the first journal and changes nothing,
        whatever the postings, funds or statuses now."""
        journal = self.tx(
            lambda c: ledger.post_journal(
                c,
                idempotency_key=key,
                kind="transfer",
                currency=self.model.wallets[source].currency,
                postings=[
                    Posting(wallet_id=source, amount=-amount),
                    Posting(wallet_id=destination, amount=amount),
                ],
            )
        )
        assert not journal.created and journal.idempotency_key == key
        self.count("post_duplicate_key")

    @precondition(lambda self: self.rare < 3)
    @rule(wallet_id=wallets, amount=AMOUNTS)
    def unbalanced_journal(self, wallet_id: str, amount: int) -> None:
        self.rare += 1
        key = self.key("unbalanced")
        self.expect_error(
            errors.InvalidAmount,
            lambda: self.tx(
                lambda c: ledger.post_journal(
                    c,
                    idempotency_key=key,
                    kind="transfer",
                    currency=self.model.wallets[wallet_id].currency,
                    postings=[Posting(wallet_id=wallet_id, amount=amount)],
                )
            ),
        )

    # --- holds --------------------------------------------------------------------------------------------

    @rule(target=holds, wallet_id=wallets, amount=AMOUNTS)
    def place_hold(self, wallet_id: str, amount: int) -> Any:
        m = self.model.wallets[wallet_id]
        key = self.key("hold")
        hold_id = f"hold_{self.run_id}_{self.n}"

        def call() -> Any:
            return self.tx(
                lambda c: ledger.place_hold(
                    c,
                    idempotency_key=key,
                    hold_id=hold_id,
                    wallet_id=wallet_id,
                    amount=amount,
                    currency=m.currency,
                    expires_at=datetime.now(UTC) + timedelta(hours=1),
                )
            )

        expected = self.posting_error(m, -amount, m.currency)
        if expected is not None:
            self.expect_error(expected, call)
            return multiple()
        hold = call()
        assert hold.id == hold_id and hold.status == "open" and hold.amount == amount
        m.held += amount
        self.model.holds[hold_id] = ModelHold(hold_id, key, wallet_id, amount, m.currency)
        self.count("place_hold")
        return hold_id

    @rule(hold_id=holds, amount=AMOUNTS)
    def place_hold_again(self, hold_id: str, amount: int) -> None:
        """The same hold key again (a retried activity): the first hold, nothing reserved twice."""
        h = self.model.holds[hold_id]
        hold = self.tx(
            lambda c: ledger.place_hold(
                c,
                idempotency_key=h.key,
                hold_id=f"hold_{self.run_id}_dup{self.n}",
                wallet_id=h.wallet_id,
                amount=amount,
                currency=h.currency,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
        assert hold.id == hold_id and hold.amount == h.amount and hold.status == h.status
        self.count("place_hold_again")

    @rule(hold_id=holds)
    def release_hold(self, hold_id: str) -> None:
        h = self.model.holds[hold_id]
        hold = self.tx(lambda c: ledger.release_hold(c, hold_id=hold_id))
        assert hold is not None and hold.id == hold_id
        if h.status == "open":
            h.status = "released"
            self.model.wallets[h.wallet_id].held -= h.amount
            self.count("release_hold")
        else:
            self.count("release_hold:not_open")
        assert hold.status == h.status

    @rule(
        target=journal_keys,
        hold_id=holds,
        other=wallets,
        same_currency=st.sampled_from([True, True, True, False]),
        fraction=st.sampled_from([1, 2, 3]),
    )
    def capture_hold(self, hold_id: str, other: str, same_currency: bool, fraction: int) -> Any:
        """Capture all, half or a third of a hold into another customer wallet; the rest is released."""
        h = self.model.holds[hold_id]
        destination = self.partner(h.wallet_id, other, same_currency)
        if destination is None:
            return multiple()
        source, dest = self.model.wallets[h.wallet_id], self.model.wallets[destination]
        amount = max(1, h.amount // fraction)
        key = self.key("capture")

        def call() -> Any:
            return self.tx(
                lambda c: ledger.capture_hold(
                    c,
                    idempotency_key=key,
                    hold_id=hold_id,
                    amount=amount,
                    counter_postings=[Posting(wallet_id=destination, amount=amount)],
                    kind="checkout_capture",
                    customer_wallets=[destination],
                )
            )

        expected: type[errors.PayweaveError] | None = None
        if h.status != "open":
            expected = errors.HoldNotOpen
        else:
            # The hold's wallet is checked (its hold already given back) before the destination.
            unheld = ModelWallet(source.id, source.owner, source.currency, source.status, source.balance)
            unheld.held = source.held - h.amount
            expected = self.posting_error(unheld, -amount, h.currency) or self.posting_error(
                dest, amount, h.currency
            )
        if expected is not None:
            self.expect_error(expected, call)
            return multiple()
        journal = call()
        assert journal.created
        h.status, h.captured_amount = "captured", amount
        source.held -= h.amount
        source.balance -= amount
        dest.balance += amount
        self.model.journal_keys.add(key)
        self.count("capture_hold")
        return key

    @precondition(lambda self: self.rare < 3)
    @rule(hold_id=holds, amount=AMOUNTS)
    def capture_more_than_held(self, hold_id: str, amount: int) -> None:
        self.rare += 1
        h = self.model.holds[hold_id]
        escrow = ledger.system_wallet_id("escrow", h.currency)
        key = self.key("overcapture")

        async def work(conn: AsyncConnection) -> Any:
            await ledger.ensure_system_wallet(conn, "escrow", h.currency)
            return await ledger.capture_hold(
                conn,
                idempotency_key=key,
                hold_id=hold_id,
                amount=h.amount + amount,
                counter_postings=[Posting(wallet_id=escrow, amount=h.amount + amount)],
                kind="checkout_capture",
            )

        expected = errors.HoldNotOpen if h.status != "open" else errors.InvalidAmount
        self.expect_error(expected, lambda: self.tx(work))

    @rule(key=journal_keys, hold_id=holds)
    def capture_hold_with_used_key(self, key: str, hold_id: str) -> None:
        """A retried capture finds its journal and changes nothing (even if the hold is another one now)."""
        journal = self.tx(
            lambda c: ledger.capture_hold(
                c,
                idempotency_key=key,
                hold_id=hold_id,
                amount=1,
                counter_postings=[Posting(wallet_id=self.model.holds[hold_id].wallet_id, amount=1)],
                kind="checkout_capture",
            )
        )
        assert not journal.created and journal.idempotency_key == key
        self.count("capture_hold_with_used_key")

    @rule(
        target=journal_keys,
        hold_ids=st.lists(holds, min_size=1, max_size=5, unique=True),
        repeat=st.booleans(),
    )
    def capture_holds(self, hold_ids: list[str], repeat: bool) -> Any:
        """A batch capture of every still-open hold (of one currency) into escrow, as one journal; ``repeat``
        calls it twice with the same key (the second changes nothing)."""
        currency = self.model.holds[hold_ids[0]].currency
        hold_ids = [h for h in hold_ids if self.model.holds[h].currency == currency]
        key = self.key("batch")

        def call() -> list[Any]:
            return self.tx(
                lambda c: ledger.capture_holds(
                    c, idempotency_key=key, hold_ids=hold_ids, credit_to="escrow", kind="group_buy_capture"
                )
            )

        result = {h.id: h for h in call()}
        if repeat:
            again = {h.id: h for h in call()}
            assert {i: h.status for i, h in again.items()} == {i: h.status for i, h in result.items()}
        to_capture = [self.model.holds[h] for h in hold_ids if self.model.holds[h].status == "open"]
        for h in to_capture:
            # Captured in full, whatever the wallet's status: the money was reserved before any freeze.
            h.status, h.captured_amount = "captured", h.amount
            w = self.model.wallets[h.wallet_id]
            w.held -= h.amount
            w.balance -= h.amount
            self.model.escrowed[currency] = self.model.escrowed.get(currency, 0) + h.amount
        assert set(result) == set(hold_ids)
        for hold_id, hold in result.items():
            m = self.model.holds[hold_id]
            assert (hold.status, hold.captured_amount) == (m.status, m.captured_amount)
        self.count("capture_holds" if to_capture else "capture_holds:none_open")
        if not to_capture:  # nothing captured: no journal is written, the key stays free
            return multiple()
        self.model.journal_keys.add(key)
        return key

    @rule(hold_ids=st.lists(holds, min_size=1, max_size=5, unique=True))
    def release_holds(self, hold_ids: list[str]) -> None:
        released = self.tx(lambda c: ledger.release_holds(c, hold_ids))
        expected = {h for h in hold_ids if self.model.holds[h].status == "open"}
        assert {h.id for h in released} == expected
        for hold_id in expected:
            h = self.model.holds[hold_id]
            h.status = "released"
            self.model.wallets[h.wallet_id].held -= h.amount
        self.count("release_holds")

    @rule(hold_id=consumes(holds))
    def forget_hold(self, hold_id: str) -> None:
        """Keeps the bundle from filling up with settled holds (nothing happens in the database)."""

    # --- after every step ---------------------------------------------------------------------------------

    @invariant()
    def database_equals_model(self) -> None:
        if not self.model.wallets:
            return
        db = self.await_(self._read_state())
        wallets = {w: (m.currency, m.status, m.balance, m.held) for w, m in self.model.wallets.items()}
        assert db["wallets"] == wallets
        assert db["holds"] == {
            h: (m.wallet_id, m.status, m.amount, m.captured_amount) for h, m in self.model.holds.items()
        }
        assert db["journal_keys"] == self.model.journal_keys
        for currency in CURRENCIES:  # money conservation over the machine's wallets
            inside = sum(m.balance for m in self.model.wallets.values() if m.currency == currency)
            assert inside == self.model.funded.get(currency, 0) - self.model.escrowed.get(currency, 0)
        assert db["violations"] == {}, db["violations"]

    async def _read_state(self) -> dict[str, Any]:
        ids = list(self.model.wallets)
        like = f"{self.run_id}:%"
        async with self.wallet_engine.connect() as conn:
            await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            wallets = {
                r.id: (r.currency, r.status, r.balance, r.held)
                for r in await conn.execute(
                    text("SELECT id, currency, status, balance, held FROM wallets WHERE id = ANY(:ids)"),
                    {"ids": ids},
                )
            }
            holds = {
                r.id: (r.wallet_id, r.status, r.amount, r.captured_amount)
                for r in await conn.execute(
                    text(
                        "SELECT id, wallet_id, status, amount, captured_amount FROM holds WHERE wallet_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            }
            keys = {
                r[0]
                for r in await conn.execute(
                    text(
                        "SELECT DISTINCT j.idempotency_key FROM journals j JOIN entries e ON e.journal_id = j.id "
                        "WHERE e.wallet_id = ANY(:ids) "
                        "UNION SELECT idempotency_key FROM journals WHERE idempotency_key LIKE :like"
                    ),
                    {"ids": ids, "like": like},
                )
            }
            violations: dict[str, list[Any]] = {}
            for name, sql in SCOPED_CHECKS.items():
                rows = (await conn.execute(text(sql), {"ids": ids, "like": like})).all()
                if rows:
                    violations[name] = [tuple(r) for r in rows]
        return {"wallets": wallets, "holds": holds, "journal_keys": keys, "violations": violations}

    def teardown(self) -> None:
        if self.model.wallets:
            report = self.await_(verify_ledger(self.wallet_engine, self.payments_engine))
            ours = [
                (v.check, row)
                for v in report.violations
                for row in v.rows
                if any(
                    str(value).startswith((f"wal_{self.run_id}", f"hold_{self.run_id}", f"{self.run_id}:"))
                    for value in row.values()
                )
            ]
            assert not ours, f"verify_ledger: {ours}"
            self.count("verify_ledger")


# I1–I4 restricted to the machine's wallets (``:ids``) and journal keys (``:like``): the same rules as
# db/verify.py, cheap enough to run after every step.
_OUR_JOURNALS = (
    "SELECT j.id FROM journals j WHERE j.idempotency_key LIKE :like "
    "UNION SELECT e.journal_id FROM entries e WHERE e.wallet_id = ANY(:ids)"
)
SCOPED_CHECKS = {
    "I1 journal sums to zero, two or more entries": f"""
        SELECT j.id, coalesce(sum(e.amount), 0), count(e.id) FROM journals j LEFT JOIN entries e ON e.journal_id = j.id
        WHERE j.id IN ({_OUR_JOURNALS}) GROUP BY j.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2""",
    "I1 entry currency matches journal and wallet": f"""
        SELECT e.id FROM entries e JOIN journals j ON j.id = e.journal_id JOIN wallets w ON w.id = e.wallet_id
        WHERE j.id IN ({_OUR_JOURNALS}) AND (e.currency <> j.currency OR w.currency <> j.currency)""",
    "I2 balance equals sum of entries and newest balance_after": """
        SELECT w.id, w.balance, coalesce(sum(e.amount), 0),
               (SELECT balance_after FROM entries l WHERE l.wallet_id = w.id ORDER BY l.id DESC LIMIT 1)
        FROM wallets w LEFT JOIN entries e ON e.wallet_id = w.id WHERE w.id = ANY(:ids) GROUP BY w.id
        HAVING w.balance <> coalesce(sum(e.amount), 0)
            OR w.balance <> coalesce((SELECT balance_after FROM entries l WHERE l.wallet_id = w.id
                                      ORDER BY l.id DESC LIMIT 1), 0)""",
    "I2 held equals open holds": """
        SELECT w.id, w.held, coalesce(sum(h.amount) FILTER (WHERE h.status = 'open'), 0)
        FROM wallets w LEFT JOIN holds h ON h.wallet_id = w.id WHERE w.id = ANY(:ids) GROUP BY w.id
        HAVING w.held <> coalesce(sum(h.amount) FILTER (WHERE h.status = 'open'), 0)""",
    "I3 not below zero, 0 <= held <= balance": """
        SELECT id, balance, held FROM wallets WHERE id = ANY(:ids) AND (balance < 0 OR held < 0 OR held > balance)""",
    "I3 a captured hold's journal moved at most the hold": """
        SELECT h.id FROM holds h WHERE h.wallet_id = ANY(:ids)
        AND (h.captured_amount > h.amount OR (h.status <> 'captured' AND h.captured_amount <> 0))""",
    "I4 one journal per step key": """
        SELECT idempotency_key FROM journals WHERE idempotency_key LIKE :like GROUP BY idempotency_key
        HAVING count(*) > 1""",
    "I4 one hold per step key": """
        SELECT idempotency_key FROM holds WHERE wallet_id = ANY(:ids) GROUP BY idempotency_key HAVING count(*) > 1""",
}


async def test_r21_ledger_repository_matches_a_model(
    wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    LedgerMachine.wallet_engine = wallet_engine
    LedgerMachine.payments_engine = payments_engine
    LedgerMachine.loop = asyncio.get_running_loop()
    LedgerMachine.prefix = f"r21{uuid.uuid4().hex[:6]}"
    LedgerMachine.stats = {}
    config = settings(
        max_examples=30,
        stateful_step_count=40,
        deadline=None,
        database=None,  # no .hypothesis directory in the repository
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(run_state_machine_as_test, LedgerMachine, settings=config)
    stats = LedgerMachine.stats
    print("R21 steps:", dict(sorted(stats.items())))
    # The run must actually have exercised the interesting paths, not only created wallets.
    for name in ("fund", "transfer", "place_hold", "verify_ledger"):
        assert stats.get(name, 0) > 0, f"no {name} step ran: {stats}"
    assert sum(v for k, v in stats.items() if k.startswith("error:")) > 0, stats
