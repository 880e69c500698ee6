"""``payweave ledger release-transit``: money a finished saga left in ``transit``, moved to a wallet by an operator.

A transfer or refund whose reversal gave up and was resolved by hand (``payweave sagas resolve``) ends with its
debit still in ``transit``, and ``payweave ledger verify`` reports it (I1) until a journal carrying the saga's id
takes it out. This posts that journal — ``transit −left, wallet +left``, kind ``operator_transit_release``,
keyed by the saga, so running it again moves nothing twice — and records the operator and the reason in
``saga_audit``. Only for a saga that has finished (a running one may still move the money itself), only what is
left in transit (never more), only to a customer wallet in the transit's currency.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_transaction, make_engine
from db.repositories import ledger, saga_audit
from payweave import errors
from payweave.contracts.attention import SagaAuditInput
from payweave.contracts.ledger import Posting
from payweave.settings import Settings

# Finished: nothing in the saga moves money any more (the statuses db.verify's transit check covers).
_FINISHED = {"transfer": ("completed", "failed"), "refund": ("succeeded", "failed")}


@dataclass(frozen=True)
class Released:
    saga_id: str
    amount: int
    currency: str
    journal_id: int
    to_wallet: str


async def _finished_saga(payments: AsyncEngine, saga_id: str) -> str:
    """The saga's kind, if it is a finished transfer or refund; else refused."""

    async def work(conn: AsyncConnection) -> tuple[str, str] | None:
        row = (
            await conn.execute(
                text(
                    "SELECT 'transfer', status FROM transfers WHERE workflow_id = :w "
                    "UNION ALL SELECT 'refund', status FROM refunds WHERE workflow_id = :w"
                ),
                {"w": saga_id},
            )
        ).first()
        return (str(row[0]), str(row[1])) if row else None

    found = await in_transaction(payments, work)
    if found is None:
        raise errors.NotFound(f"no transfer or refund saga {saga_id}")
    kind, status = found
    if status not in _FINISHED[kind]:
        raise errors.Conflict(f"the {kind} is {status}: only a finished saga's transit can be released")
    return kind


async def release_transit(
    wallet_db: AsyncEngine,
    payments: AsyncEngine,
    saga_id: str,
    *,
    to_wallet: str,
    operator: str,
    reason: str,
) -> Released:
    if not reason.strip():
        raise errors.ValidationFailed("a release needs a reason (--reason: what was decided, where)")
    if not operator.strip():
        raise errors.ValidationFailed("a release needs an operator (--operator)")
    kind = await _finished_saga(payments, saga_id)

    async def post(conn: AsyncConnection) -> Released:
        rows = await ledger.left_in_transit(conn, [saga_id])
        if not rows:
            raise errors.Conflict(f"{saga_id} has nothing left in transit")
        if len(rows) > 1 or rows[0]["left_in_transit"] < 0:
            raise errors.Conflict(
                f"{saga_id}'s transit legs do not net to money waiting there ({rows}): "
                "more left transit than entered it — not something to release; ask finance"
            )
        transit, currency, left = rows[0]["transit"], rows[0]["currency"], int(rows[0]["left_in_transit"])
        target = await ledger.get_wallet(conn, to_wallet)
        if target is None or target.kind != "customer":
            raise errors.WalletNotFound(f"no customer wallet {to_wallet}")
        if target.currency != currency:
            raise errors.CurrencyMismatch(f"{to_wallet} is {target.currency}, the transit is {currency}")
        journal = await ledger.post_journal(
            conn,
            idempotency_key=f"operator:release-transit:{saga_id}",
            kind="operator_transit_release",
            currency=currency,
            postings=[Posting(wallet_id=transit, amount=-left), Posting(wallet_id=to_wallet, amount=left)],
            description=f"{kind} {saga_id}: released from transit by {operator}: {reason}",
            saga_id=saga_id,
            customer_wallets=[to_wallet],
        )
        return Released(saga_id, left, currency, journal.id, to_wallet)

    released = await in_transaction(wallet_db, post)

    async def audit(conn: AsyncConnection) -> None:
        await saga_audit.record(
            conn,
            SagaAuditInput(
                idempotency_key=f"{saga_id}:release-transit",
                saga_id=saga_id,
                saga_kind=kind,
                action="release_transit",
                operator=operator,
                compensation="reverse_debit",
                reason=f"{reason} ({released.amount} {released.currency} to {to_wallet}, journal "
                f"{released.journal_id})",
            ),
        )

    await in_transaction(payments, audit)
    return released


async def run_release_transit(
    settings: Settings, console: Console, saga_id: str, *, to_wallet: str, operator: str, reason: str
) -> int:
    """Exit codes: 0 released, 1 refused."""
    wallet_db = make_engine(settings.wallet_database_url)
    payments = make_engine(settings.payments_database_url)
    try:
        released = await release_transit(
            wallet_db, payments, saga_id, to_wallet=to_wallet, operator=operator, reason=reason
        )
    except errors.PayweaveError as exc:
        console.print(f"[red]refused[/red] ({exc.code}): {exc.detail}")
        return 1
    finally:
        await wallet_db.dispose()
        await payments.dispose()
    console.print(
        f"[green]released[/green] {released.amount} {released.currency} of {saga_id} from transit to "
        f"{released.to_wallet} (journal {released.journal_id}, by {operator}); check: payweave ledger verify"
    )
    return 0
