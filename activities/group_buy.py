"""Group-buy activities: joins, the decision, batched captures / orders / refunds (both databases, gateways).

Every activity is safe to run twice, concurrently, or after a crash between its effects and its return:
* participants are keyed by the caller's request key; holds, journals and gateway refunds by the participant;
* batches are cursors over the participants' ``seq``: a retried batch reads the same participants (their
  statuses only move forward, and only this batch moves them) and writes under the same keys.
Money moves (wallet database) happen before the participant's status says so (payments database); a retry
after a crash in between finds the money already moved, by key, and only finishes the bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.errors import business_errors
from activities.gateways.base import PaymentGateway
from activities.gateways.errors import GatewayError
from db.engine import in_transaction
from db.repositories import group_buys as repo
from db.repositories import ledger
from db.repositories import payments as payments_repo
from db.repositories.group_buys import ParticipantRow
from payweave import errors
from payweave.contracts.activities import GatewayRefund
from payweave.contracts.group_buy import (
    AcceptResult,
    BatchInput,
    BatchResult,
    DecideInput,
    Decision,
    GroupBuyCounts,
    GroupBuyTerms,
    JoinRequest,
    MarkGroupBuyInput,
    ParticipantRef,
    ParticipantRefundResult,
    Participation,
    RefundProgress,
    ReleaseEscrowResult,
)
from payweave.contracts.ledger import Hold, Journal, Posting
from payweave.ids import derived_id
from payweave.metrics import LEDGER_JOURNALS, journals_posted, saga_ended

# A hold outlives the join deadline a little: the decision captures or releases it right after the deadline,
# and only the sweeper expires a hold — never one whose saga is still running.
HOLD_GRACE = timedelta(hours=1)


def participant_payment_workflow_id(participant_id: str) -> str:
    """The per-participant payment workflow (webhooks for the participant's gateway object are routed to it)."""
    return f"groupbuy-payment:{participant_id}"


def order_id_for(participant_id: str) -> str:
    return derived_id("ord", participant_id)


class RecordGroupBuyInput(BaseModel):
    terms: GroupBuyTerms
    workflow_id: str


class JoinInput(BaseModel):
    terms: GroupBuyTerms
    session_workflow_id: str
    request: JoinRequest


class ParticipantRefundInput(BaseModel):
    participant_id: str
    reason: str  # late_payment | group_buy_failed | group_buy_canceled
    final_status: str = "refunded"  # or late_refunded


class GroupBuyActivities:
    def __init__(
        self, wallet_engine: AsyncEngine, payments_engine: AsyncEngine, gateways: Mapping[str, PaymentGateway]
    ) -> None:
        self._wallets = wallet_engine
        self._payments = payments_engine
        self._gateways = gateways

    # --- session -----------------------------------------------------------------------------------

    @activity.defn
    async def record_group_buy(self, inp: RecordGroupBuyInput) -> None:
        await in_transaction(
            self._payments, lambda c: repo.create_group_buy(c, terms=inp.terms, workflow_id=inp.workflow_id)
        )

    @activity.defn
    async def decide_group_buy(self, inp: DecideInput) -> Decision:
        return await in_transaction(
            self._payments,
            lambda c: repo.decide(c, group_buy_id=inp.group_buy_id, cancel_reason=inp.cancel_reason),
        )

    @activity.defn
    async def mark_group_buy(self, inp: MarkGroupBuyInput) -> None:
        await self._mark(
            inp.group_buy_id, inp.status, failure_code=inp.failure_code, cancel_reason=inp.cancel_reason
        )

    async def _mark(
        self,
        group_buy_id: str,
        status: str,
        *,
        failure_code: str | None = None,
        cancel_reason: str | None = None,
        fee_amount: int | None = None,
        clear_failure: bool = False,
    ) -> None:
        """Set the session's status; a session reaching its end is counted once that committed."""

        async def work(conn: AsyncConnection) -> str | None:
            try:
                before: str | None = await repo.session_status(conn, group_buy_id, lock="UPDATE")
            except errors.NotFound:
                before = None
            await repo.mark_group_buy(
                conn,
                group_buy_id=group_buy_id,
                status=status,
                failure_code=failure_code,
                cancel_reason=cancel_reason,
                fee_amount=fee_amount,
                clear_failure=clear_failure,
            )
            return before

        saga_ended("groupbuy", await in_transaction(self._payments, work), status)

    @activity.defn
    async def group_buy_counts(self, group_buy_id: str) -> GroupBuyCounts:
        committed, paid, people = await in_transaction(self._payments, lambda c: repo.counts(c, group_buy_id))
        return GroupBuyCounts(committed_units=committed, paid_units=paid, participants=people)

    @activity.defn
    async def pending_payment_workflows(self, group_buy_id: str) -> list[str]:
        return await in_transaction(self._payments, lambda c: repo.pending_payment_workflows(c, group_buy_id))

    # --- joining -----------------------------------------------------------------------------------

    @activity.defn
    async def join_group_buy(self, inp: JoinInput) -> Participation:
        """Record the participant, then reserve the money: a wallet hold, or a gateway payment to pay."""
        async with business_errors():
            return await self._join(inp)

    async def _join(self, inp: JoinInput) -> Participation:
        terms, req = inp.terms, inp.request
        key = f"{inp.session_workflow_id}:join:{req.buyer}:{req.request_key}"
        pid = derived_id("gbp", key)
        amount = terms.unit_price * req.quantity

        async def insert(conn: AsyncConnection) -> ParticipantRow:
            participant, created = await repo.insert_participant(
                conn,
                participant_id=pid,
                group_buy_id=terms.group_buy_id,
                idempotency_key=key,
                buyer=req.buyer,
                quantity=req.quantity,
                amount=amount,
                method=req.method,
                gateway=req.gateway if req.method == "gateway" else None,
                wallet_id=req.wallet_id,
                hold_id=f"hld_{pid}" if req.method == "wallet" else None,
                payment_id=f"pay_{pid}" if req.method == "gateway" else None,
            )
            if not created:
                return participant
            await repo.commit_units(conn, terms.group_buy_id, req.quantity)  # closed or full: all rolled back
            if req.method == "gateway":
                assert req.gateway is not None
                await payments_repo.create_payment(
                    conn,
                    payment_id=f"pay_{pid}",
                    idempotency_key=f"{pid}:payment",
                    workflow_id=participant_payment_workflow_id(pid),
                    purpose="group_buy",
                    owner=req.buyer,
                    wallet_id=req.wallet_id,
                    gateway=req.gateway,
                    amount=amount,
                    currency=terms.currency,
                    expires_at=terms.deadline,
                )
            return participant

        participant = await in_transaction(self._payments, insert)
        if participant.status in ("declined", "expired"):
            raise errors.BUSINESS_ERRORS.get(participant.failure_code or "", errors.Conflict)(
                f"this join was refused: {participant.failure_code}"
            )
        if participant.status != "joining":
            return participant
        if req.method == "wallet":
            return await self._hold(terms, inp.session_workflow_id, participant)
        return await self._gateway_payment(terms, participant, req)

    async def _decline(self, participant: ParticipantRow, code: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            await repo.set_participants(
                conn, [participant.id], status="declined", only_from=("joining",), failure_code=code
            )
            if participant.payment_id:
                await payments_repo.update_payment(
                    conn, payment_id=participant.payment_id, status="failed", failure_code=code
                )

        await in_transaction(self._payments, work)

    async def _hold(self, terms: GroupBuyTerms, session_wf: str, p: ParticipantRow) -> Participation:
        assert p.wallet_id is not None and p.hold_id is not None
        try:
            await in_transaction(
                self._wallets,
                lambda c: ledger.place_hold(
                    c,
                    idempotency_key=f"{p.id}:hold",
                    hold_id=p.hold_id or "",
                    wallet_id=p.wallet_id or "",
                    amount=p.amount,
                    currency=terms.currency,
                    expires_at=terms.deadline + HOLD_GRACE,
                    saga_id=session_wf,
                ),
            )
        except errors.PayweaveError as exc:
            await self._decline(p, exc.code)
            raise

        async def confirm(conn: AsyncConnection) -> str:
            status = await repo.session_status(conn, terms.group_buy_id)
            if status == "open":
                await repo.set_participants(conn, [p.id], status="held", only_from=("joining",))
            return status

        if await in_transaction(self._payments, confirm) != "open":
            # The decision came between the hold and now: this participant does not count; give it back.
            await in_transaction(self._wallets, lambda c: ledger.release_holds(c, [p.hold_id or ""]))
            await self._decline(p, "session_closed")
            raise errors.SessionClosed(f"group buy {terms.group_buy_id} closed while joining")
        return p.model_copy(update={"status": "held"})

    async def _gateway_payment(
        self, terms: GroupBuyTerms, p: ParticipantRow, req: JoinRequest
    ) -> Participation:
        assert p.gateway is not None and p.payment_id is not None
        try:
            payment = await self._gateways[p.gateway].create_payment(
                idempotency_key=f"{p.id}:gateway_payment",
                amount=p.amount,
                currency=terms.currency,
                metadata={
                    "workflow_id": participant_payment_workflow_id(p.id),
                    "payment_id": p.payment_id,
                    "group_buy_id": terms.group_buy_id,
                    "participant_id": p.id,
                    "purpose": "group_buy",
                },
                payment_method=req.payment_method,
                description=f"payweave group buy {terms.group_buy_id}: {p.quantity} x {terms.product}"[:200],
            )
        except GatewayError as exc:
            if exc.retryable:
                raise
            await self._decline(p, exc.code)
            raise
        if payment.status == "failed":
            await self._decline(p, payment.failure_code or "payment_declined")
            raise errors.GatewayDeclined(f"the gateway declined the payment: {payment.failure_code}")

        async def record(conn: AsyncConnection) -> None:
            await payments_repo.update_payment(
                conn,
                payment_id=p.payment_id or "",
                gateway_payment_id=payment.id,
                next_action=payment.next_action,
                status="awaiting_payment",
            )
            await repo.set_participants(conn, [p.id], status="awaiting_payment", only_from=("joining",))

        await in_transaction(self._payments, record)
        return p.model_copy(
            update={
                "status": "awaiting_payment",
                "gateway_payment_id": payment.id,
                "next_action": payment.next_action,
            }
        )

    # --- gateway participants ----------------------------------------------------------------------

    @activity.defn
    async def accept_group_payment(self, ref: ParticipantRef) -> AcceptResult:
        """The gateway confirmed the payment (its money is in escrow already): it counts if the session is open."""

        async def work(conn: AsyncConnection) -> AcceptResult:
            p = await repo.get_participant(conn, ref.participant_id)
            assert p is not None
            if p.status == "paid":
                return AcceptResult(accepted=True)
            if await repo.session_status(conn, p.group_buy_id) != "open" or p.status not in (
                "joining",
                "awaiting_payment",
            ):
                return AcceptResult(accepted=False)
            await repo.set_participants(
                conn, [p.id], status="paid", only_from=("joining", "awaiting_payment")
            )
            assert p.payment_id is not None
            await payments_repo.update_payment(
                conn, payment_id=p.payment_id, status="succeeded", credited=True
            )
            return AcceptResult(accepted=True)

        return await in_transaction(self._payments, work)

    @activity.defn
    async def end_group_payment(self, ref: ParticipantRef) -> None:
        """The participant never paid (declined, expired, canceled): it never counted; nothing to give back."""
        code = ref.failure_code or "expired"
        status = "expired" if code in ("expired", "canceled") else "declined"

        async def work(conn: AsyncConnection) -> None:
            p = await repo.get_participant(conn, ref.participant_id)
            assert p is not None and p.payment_id is not None
            await repo.set_participants(
                conn, [p.id], status=status, only_from=("joining", "awaiting_payment"), failure_code=code
            )
            await payments_repo.update_payment(
                conn,
                payment_id=p.payment_id,
                status="expired" if status == "expired" else "failed",
                failure_code=code,
            )

        await in_transaction(self._payments, work)

    @activity.defn
    async def refund_group_participant(self, inp: ParticipantRefundInput) -> ParticipantRefundResult:
        """Give one gateway participant's money back: a gateway refund (escrow → clearing), or, when the gateway
        refuses for good, a credit to the participant's wallet (escrow → wallet)."""
        p = await in_transaction(self._payments, lambda c: repo.get_participant(c, inp.participant_id))
        assert p is not None
        return await self._refund_gateway(p, inp.reason, inp.final_status)

    async def _refund_gateway(
        self, p: ParticipantRow, reason: str, final_status: str
    ) -> ParticipantRefundResult:
        if p.status in ("refunded", "refunded_to_wallet", "late_refunded"):
            outcome = "refunded_to_wallet" if p.status == "refunded_to_wallet" else "refunded"
            return ParticipantRefundResult(outcome=outcome, refund_id=p.refund_id)
        assert p.gateway is not None and p.gateway_payment_id is not None
        gateway = self._gateways[p.gateway]
        refund: GatewayRefund | None = None
        try:
            if p.refund_id:
                refund = await gateway.get_refund(p.refund_id)
            else:
                refund = await gateway.refund(
                    idempotency_key=f"{p.id}:refund",
                    gateway_payment_id=p.gateway_payment_id,
                    amount=p.amount,
                    metadata={"payment_id": p.payment_id or "", "reason": reason, "participant_id": p.id},
                )
                refund_id = refund.id
                await in_transaction(self._payments, lambda c: repo.set_refund_id(c, p.id, refund_id))
        except GatewayError as exc:
            if exc.retryable:
                raise
            activity.logger.warning(
                "gateway refused the refund of %s (%s): crediting the wallet", p.id, exc.code
            )
        if refund is not None and refund.status == "pending":
            await in_transaction(
                self._payments,
                lambda c: repo.set_participants(
                    c, [p.id], status="refund_pending", only_from=("paid", "awaiting_payment", "joining")
                ),
            )
            return ParticipantRefundResult(outcome="refund_pending", refund_id=refund.id)
        if refund is not None and refund.status == "succeeded":
            await self._book_refund(
                p,
                key=f"{p.id}:refund",
                to=Posting(wallet_id=await self._system("gateway_clearing", p.currency), amount=p.amount),
                status=final_status,
                reason=reason,
            )
            return ParticipantRefundResult(outcome="refunded", refund_id=refund.id)
        wallet_id = p.wallet_id or await self._wallet_of(p.buyer, p.currency)
        await self._book_refund(
            p,
            key=f"{p.id}:refund_to_wallet",
            to=Posting(wallet_id=wallet_id, amount=p.amount),
            status="refunded_to_wallet",
            reason=reason,
        )
        return ParticipantRefundResult(outcome="refunded_to_wallet", refund_id=refund.id if refund else None)

    async def _system(self, name: str, currency: str) -> str:
        return await in_transaction(self._wallets, lambda c: ledger.ensure_system_wallet(c, name, currency))

    async def _wallet_of(self, owner: str, currency: str) -> str:
        async def work(conn: AsyncConnection) -> str:
            wallet, _ = await ledger.create_wallet(
                conn, wallet_id=derived_id("wal", f"{owner}:{currency}"), owner=owner, currency=currency
            )
            return wallet.id

        return await in_transaction(self._wallets, work)

    async def _book_refund(
        self, p: ParticipantRow, *, key: str, to: Posting, status: str, reason: str
    ) -> None:
        """escrow → ``to`` for one participant (keyed), then the participant, its order and payment say so."""

        async def move(conn: AsyncConnection) -> Journal:
            escrow = await ledger.ensure_system_wallet(conn, "escrow", p.currency)
            return await ledger.post_journal(
                conn,
                idempotency_key=key,
                kind="group_buy_refund",
                currency=p.currency,
                postings=[Posting(wallet_id=escrow, amount=-p.amount), to],
                description=f"group buy {p.group_buy_id} refund ({reason})",
                saga_id=p.group_buy_id,
                compensation=True,  # money going back to its owner reaches a frozen wallet too
                external_ref=p.payment_id if to.wallet_id.startswith("sys_gateway_clearing") else None,
            )

        journals_posted([await in_transaction(self._wallets, move)])

        async def record(conn: AsyncConnection) -> None:
            await repo.set_participants(
                conn,
                [p.id],
                status=status,
                only_from=("paid", "captured", "refund_pending", "joining", "awaiting_payment"),
            )
            await repo.mark_orders_refunded(conn, [p.id])
            if p.payment_id:
                await payments_repo.update_payment(
                    conn, payment_id=p.payment_id, status="refunded", failure_code=reason
                )

        await in_transaction(self._payments, record)

    # --- success: capture, orders, release -------------------------------------------------------------

    async def _batch(
        self, inp: BatchInput, statuses: tuple[str, ...], method: str | None
    ) -> list[ParticipantRow]:
        return await in_transaction(
            self._payments,
            lambda c: repo.list_participants(
                c,
                group_buy_id=inp.group_buy_id,
                statuses=statuses,
                method=method,
                after_seq=inp.after_seq,
                limit=inp.limit,
            ),
        )

    @staticmethod
    def _next(batch: list[ParticipantRow], inp: BatchInput) -> int | None:
        return batch[-1].seq if len(batch) == inp.limit else None

    @activity.defn
    async def capture_group_holds(self, inp: BatchInput) -> BatchResult:
        """Wallet participants' holds → escrow: one journal per batch (the batch is fixed by the cursor)."""
        batch = await self._batch(inp, ("held", "captured"), "wallet")
        held = [p for p in batch if p.status == "held"]
        if held:
            key = f"{inp.workflow_id}:capture:{inp.after_seq}"

            async def capture(conn: AsyncConnection) -> tuple[bool, list[Hold]]:
                posted_before = await ledger.find_journal(conn, key) is not None
                holds = await ledger.capture_holds(
                    conn,
                    idempotency_key=key,
                    hold_ids=[p.hold_id or "" for p in held],
                    credit_to="escrow",
                    kind="group_buy_escrow",
                    description=f"group buy {inp.group_buy_id}: wallet holds into escrow",
                    saga_id=inp.workflow_id,
                )
                # Holds are captured only together with the batch's journal: any captured now means it is new.
                return not posted_before and any(h.status == "captured" for h in holds), holds

            posted, holds = await in_transaction(self._wallets, capture)
            if posted:
                LEDGER_JOURNALS.labels("group_buy_escrow").inc()
            status_of = {h.id: h.status for h in holds}
            captured = [p.id for p in held if status_of.get(p.hold_id or "") == "captured"]
            lost = [p.id for p in held if status_of.get(p.hold_id or "") != "captured"]
            if lost:
                activity.logger.error(
                    "group buy %s: %d holds gone before capture", inp.group_buy_id, len(lost)
                )

            async def record(conn: AsyncConnection) -> None:
                await repo.set_participants(conn, captured, status="captured", only_from=("held",))
                await repo.set_participants(
                    conn, lost, status="declined", only_from=("held",), failure_code="hold_expired"
                )

            await in_transaction(self._payments, record)
        return BatchResult(processed=len(batch), next_after_seq=self._next(batch, inp))

    @activity.defn
    async def create_group_orders(self, inp: BatchInput) -> BatchResult:
        batch = await self._batch(inp, ("captured", "paid"), None)
        await in_transaction(
            self._payments,
            lambda c: repo.create_orders(
                c,
                group_buy_id=inp.group_buy_id,
                session_workflow_id=inp.workflow_id,
                participants=batch,
                order_ids=[order_id_for(p.id) for p in batch],
            ),
        )
        return BatchResult(processed=len(batch), next_after_seq=self._next(batch, inp))

    @activity.defn
    async def release_escrow(self, terms: GroupBuyTerms) -> ReleaseEscrowResult:
        """escrow → factory (minus the fee, floor in the factory's favour) and platform_fees, one journal."""
        wf_id = activity.info().workflow_id
        total = await in_transaction(self._payments, lambda c: repo.escrowed_total(c, terms.group_buy_id))
        fee = total * terms.fee_bps // 10_000
        journal_id = None
        if total > 0:

            async def move(conn: AsyncConnection) -> Journal:
                escrow = await ledger.ensure_system_wallet(conn, "escrow", terms.currency)
                postings = [
                    Posting(wallet_id=escrow, amount=-total),
                    Posting(wallet_id=terms.factory_wallet_id, amount=total - fee),
                ]
                if fee > 0:
                    fees = await ledger.ensure_system_wallet(conn, "platform_fees", terms.currency)
                    postings.append(Posting(wallet_id=fees, amount=fee))
                return await ledger.post_journal(
                    conn,
                    idempotency_key=f"{wf_id}:release",
                    kind="group_buy_release",
                    currency=terms.currency,
                    postings=[p for p in postings if p.amount != 0],
                    description=f"group buy {terms.group_buy_id}: escrow released to the factory",
                    saga_id=wf_id,
                )

            async with business_errors():
                journal = await in_transaction(self._wallets, move)
            journals_posted([journal])
            journal_id = journal.id
        await self._mark(terms.group_buy_id, "completed", fee_amount=fee, clear_failure=True)
        return ReleaseEscrowResult(total=total, fee=fee, journal_id=journal_id)

    # --- bulk refund -----------------------------------------------------------------------------------

    @activity.defn
    async def release_group_holds(self, inp: BatchInput) -> BatchResult:
        """Failed before capture: wallet holds released, one transaction per batch (no money moved)."""
        batch = await self._batch(inp, ("held",), "wallet")
        if batch:
            await in_transaction(
                self._wallets, lambda c: ledger.release_holds(c, [p.hold_id or "" for p in batch])
            )
            await in_transaction(
                self._payments,
                lambda c: repo.set_participants(
                    c, [p.id for p in batch], status="released", only_from=("held",)
                ),
            )
        return BatchResult(processed=len(batch), next_after_seq=self._next(batch, inp), released=len(batch))

    @activity.defn
    async def refund_group_wallets(self, inp: BatchInput) -> BatchResult:
        """Canceled after capture: escrow → each wallet participant, a keyed journal each, one transaction."""
        batch = await self._batch(inp, ("captured",), "wallet")
        if batch:

            async def move(conn: AsyncConnection) -> list[Journal]:
                escrow = await ledger.ensure_system_wallet(conn, "escrow", batch[0].currency)
                journals = []
                for p in batch:
                    journal = await ledger.post_journal(
                        conn,
                        idempotency_key=f"{p.id}:refund",
                        kind="group_buy_refund",
                        currency=p.currency,
                        postings=[
                            Posting(wallet_id=escrow, amount=-p.amount),
                            Posting(wallet_id=p.wallet_id or "", amount=p.amount),
                        ],
                        description=f"group buy {p.group_buy_id} refund",
                        saga_id=p.group_buy_id,
                        compensation=True,
                    )
                    journals.append(journal)
                return journals

            journals_posted(await in_transaction(self._wallets, move))

            async def record(conn: AsyncConnection) -> None:
                ids = [p.id for p in batch]
                await repo.set_participants(conn, ids, status="refunded", only_from=("captured",))
                await repo.mark_orders_refunded(conn, ids)

            await in_transaction(self._payments, record)
        return BatchResult(processed=len(batch), next_after_seq=self._next(batch, inp), refunded=len(batch))

    @activity.defn
    async def refund_group_gateway(self, inp: BatchInput) -> BatchResult:
        """Gateway participants refunded with bounded concurrency; each refund keyed by the participant."""
        return await self._refund_batch(inp, ("paid",))

    @activity.defn
    async def check_group_refunds(self, inp: BatchInput) -> BatchResult:
        """Refunds the gateway had not finished: look again (a failed one goes to the wallet)."""
        return await self._refund_batch(inp, ("refund_pending",))

    async def _refund_batch(self, inp: BatchInput, statuses: tuple[str, ...]) -> BatchResult:
        batch = await self._batch(inp, statuses, "gateway")
        limit = asyncio.Semaphore(inp.concurrency)

        async def one(p: ParticipantRow) -> ParticipantRefundResult:
            async with limit:
                result = await self._refund_gateway(p, "group_buy_refund", "refunded")
                activity.heartbeat(p.seq)
                return result

        results = await asyncio.gather(*(one(p) for p in batch))
        counts = {
            o: sum(1 for r in results if r.outcome == o)
            for o in ("refunded", "refunded_to_wallet", "refund_pending")
        }
        return BatchResult(
            processed=len(batch),
            next_after_seq=self._next(batch, inp),
            refunded=counts["refunded"],
            refunded_to_wallet=counts["refunded_to_wallet"],
            pending=counts["refund_pending"],
        )

    @activity.defn
    async def group_refund_progress(self, group_buy_id: str) -> RefundProgress:
        return await in_transaction(self._payments, lambda c: repo.refund_progress(c, group_buy_id))

    @activity.defn
    async def group_refund_outcomes(self, group_buy_id: str) -> dict[str, str]:
        return await in_transaction(self._payments, lambda c: repo.outcomes(c, group_buy_id))
