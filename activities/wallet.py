"""Ledger activities: journals and holds on the wallet database. Each is keyed by its step key."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.errors import business_errors
from db.engine import in_statement, in_transaction
from db.repositories import ledger
from payweave import errors
from payweave.contracts.activities import (
    CaptureHoldInput,
    HoldResult,
    JournalResult,
    PlaceHoldInput,
    PostingSpec,
    PostJournalInput,
    ReleaseHoldInput,
    ReverseJournalInput,
)
from payweave.contracts.ledger import Journal, Posting
from payweave.metrics import journals_posted


async def _resolve(
    conn: AsyncConnection, specs: list[PostingSpec], currency: str, *, create: bool = True
) -> tuple[list[Posting], set[str]]:
    """Postings with real wallet ids, and the ids that were given as customer wallets (never a system account).

    ``create=False`` names the system accounts without making sure they exist (no round trip): a journal on one
    that does not exist yet is refused with WalletNotFound, and the caller tries again with ``create=True``."""
    postings = []
    addressed: set[str] = set()
    for spec in specs:
        if spec.system is not None:
            if create:
                wallet_id = await ledger.ensure_system_wallet(conn, spec.system, currency)
            else:
                wallet_id = ledger.system_wallet_id(spec.system, currency)
        elif spec.wallet_id is not None:
            wallet_id = spec.wallet_id
            addressed.add(wallet_id)
        else:
            raise ValueError("a posting names a wallet or a system account")
        postings.append(Posting(wallet_id=wallet_id, amount=spec.amount))
    return postings, addressed


def _posted(journal: Journal) -> JournalResult:
    """The activity's answer about a journal whose transaction committed (counted if this call inserted it)."""
    journals_posted([journal])
    return JournalResult(journal_id=journal.id, created=journal.created)


class LedgerActivities:
    def __init__(self, wallet_engine: AsyncEngine) -> None:
        self._engine = wallet_engine

    @activity.defn
    async def post_journal(self, inp: PostJournalInput) -> JournalResult:
        async def work(conn: AsyncConnection) -> Journal:
            postings, addressed = await _resolve(conn, inp.postings, inp.currency)
            return await ledger.post_journal(
                conn,
                idempotency_key=inp.idempotency_key,
                kind=inp.kind,
                currency=inp.currency,
                postings=postings,
                customer_wallets=addressed,
                description=inp.description,
                saga_id=inp.saga_id,
                compensation=inp.compensation,
                external_ref=inp.external_ref,
            )

        async with business_errors():
            return _posted(await in_transaction(self._engine, work))

    @activity.defn
    async def reverse_journal(self, inp: ReverseJournalInput) -> JournalResult:
        """Compensation. Undoes exactly what ``original_key`` posted (nothing, if it posted nothing).

        A reversal gives money back to where it came from, so it is applied even to a wallet that was
        frozen in the meantime: a compensation must always be able to finish.
        """

        async def work(conn: AsyncConnection) -> JournalResult | Journal:
            if inp.unless_posted and await ledger.find_journal(conn, inp.unless_posted) is not None:
                return JournalResult(journal_id=None, created=False, skipped=True)
            original = await ledger.find_journal(conn, inp.original_key)
            if original is None:
                return JournalResult(journal_id=None, created=False)
            return await ledger.post_journal(
                conn,
                idempotency_key=inp.idempotency_key,
                kind=inp.kind,
                currency=original.currency,
                postings=[Posting(wallet_id=e.wallet_id, amount=-e.amount) for e in original.entries],
                description=inp.description,
                saga_id=inp.saga_id,
                compensation=True,
                external_ref=inp.external_ref or original.external_ref,
            )

        async with business_errors():
            done = await in_transaction(self._engine, work)
        return done if isinstance(done, JournalResult) else _posted(done)

    @activity.defn
    async def place_hold(self, inp: PlaceHoldInput) -> HoldResult:
        async def work(conn: AsyncConnection) -> HoldResult:
            hold = await ledger.place_hold(
                conn,
                idempotency_key=inp.idempotency_key,
                hold_id=inp.hold_id,
                wallet_id=inp.wallet_id,
                amount=inp.amount,
                currency=inp.currency,
                expires_at=inp.expires_at,
                saga_id=inp.saga_id,
            )
            return HoldResult(hold_id=hold.id, status=hold.status, amount=hold.amount)

        # One statement that writes everything or nothing: no BEGIN/COMMIT around it.
        async with business_errors():
            return await in_statement(self._engine, work)

    @activity.defn
    async def release_hold(self, inp: ReleaseHoldInput) -> HoldResult | None:
        async def work(conn: AsyncConnection) -> HoldResult | None:
            hold = await ledger.release_hold(conn, hold_id=inp.hold_id)
            return HoldResult(hold_id=hold.id, status=hold.status, amount=hold.amount) if hold else None

        async with business_errors():
            return await in_transaction(self._engine, work)

    @activity.defn
    async def capture_hold(self, inp: CaptureHoldInput) -> JournalResult:
        """Two round trips and no BEGIN/COMMIT: one read (the journal of an earlier attempt, or the hold and its
        currency), then the whole capture in one statement that writes everything or nothing. The system accounts
        the credits name are taken to exist; the first capture on one that does not yet (in that currency) is
        refused, writing nothing, and done again in a transaction that creates it."""

        async def work(conn: AsyncConnection, *, create: bool) -> Journal:
            hold = await ledger.hold_to_capture(
                conn, idempotency_key=inp.idempotency_key, hold_id=inp.hold_id, amount=inp.amount
            )
            if isinstance(hold, Journal):
                return hold
            credits, addressed = await _resolve(conn, inp.credits, hold.currency, create=create)
            return await ledger.capture_hold(
                conn,
                idempotency_key=inp.idempotency_key,
                hold_id=inp.hold_id,
                amount=inp.amount,
                counter_postings=credits,
                customer_wallets=addressed,
                kind=inp.kind,
                description=inp.description,
                external_ref=inp.external_ref,
                hold=hold,
            )

        async with business_errors():
            try:
                journal = await in_statement(self._engine, partial(work, create=False))
            except errors.WalletNotFound:
                if not any(spec.system is not None for spec in inp.credits):
                    raise
                journal = await in_transaction(self._engine, partial(work, create=True))
            return _posted(journal)
