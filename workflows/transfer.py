"""TransferWorkflow — wallet to wallet through ``transit``, rolled back when the destination refuses.

source ──debit──▶ transit ──credit──▶ destination
   ▲                  │
   └───── reversal ───┘   (when the credit fails for a business reason: frozen, closed, missing, currency)

The saga exists because wallets may live on different database shards: each leg is its own transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import (
        MarkTransferInput,
        PostingSpec,
        PostJournalInput,
        RecordTransferInput,
        ReverseJournalInput,
    )
    from payweave.contracts.sagas import TransferInput, TransferStatusView
    from payweave.ids import step_key

from workflows.saga import (
    AwaitsOperator,
    OperatorDesk,
    RecordRefused,
    Saga,
    business_code,
    db_step,
    first_record,
    forward,
    set_search_attributes,
)


@workflow.defn
class TransferWorkflow(AwaitsOperator):
    def __init__(self) -> None:
        self._view: TransferStatusView | None = None
        self._desk = OperatorDesk()  # a reversal that gives up waits here for an operator

    @workflow.query
    def status(self) -> TransferStatusView | None:
        return self._view

    async def _set_status(self, status: str, failure_code: str | None = None) -> None:
        assert self._view is not None
        self._view = self._view.model_copy(update={"status": status, "failure_code": failure_code})
        set_search_attributes(status=status)
        await db_step(
            PaymentActivities.mark_transfer,
            MarkTransferInput(transfer_id=self._view.id, status=status, failure_code=failure_code),
        )

    @staticmethod
    def _record(inp: TransferInput, wf_id: str) -> Awaitable[object]:
        return db_step(
            PaymentActivities.record_transfer,
            RecordTransferInput(
                transfer_id=inp.transfer_id,
                workflow_id=wf_id,
                owner=inp.owner,
                from_wallet_id=inp.from_wallet_id,
                to_wallet_id=inp.to_wallet_id,
                amount=inp.amount,
                currency=inp.currency,
                description=inp.description,
            ),
        )

    @workflow.run
    async def run(self, inp: TransferInput) -> TransferStatusView:
        wf_id = workflow.info().workflow_id
        self._view = TransferStatusView(
            id=inp.transfer_id,
            status="pending",
            owner=inp.owner,
            from_wallet_id=inp.from_wallet_id,
            to_wallet_id=inp.to_wallet_id,
            amount=inp.amount,
            currency=inp.currency,
            description=inp.description,
        )
        set_search_attributes(
            kind="transfer", status="pending", owner=inp.owner, amount=inp.amount, currency=inp.currency
        )
        try:
            await first_record(self._record(inp, wf_id))
        except RecordRefused as refused:
            self._view = self._view.model_copy(update={"status": "failed", "failure_code": refused.code})
            set_search_attributes(status="failed")
            return self._view
        saga = Saga(self._desk)
        debit_key, credit_key = step_key(wf_id, "debit"), step_key(wf_id, "credit")
        saga.add(
            "reverse_debit",
            lambda: db_step(
                LedgerActivities.reverse_journal,
                ReverseJournalInput(
                    original_key=debit_key,
                    idempotency_key=step_key(wf_id, "reverse_debit"),
                    kind="transfer_reversal",
                    description=f"transfer {inp.transfer_id} rolled back{self._desk.note}",
                    saga_id=wf_id,
                    unless_posted=credit_key,
                ),
            ),
        )
        try:
            await self._post(
                debit_key,
                "transfer_debit",
                inp,
                [
                    PostingSpec(wallet_id=inp.from_wallet_id, amount=-inp.amount),
                    PostingSpec(system="transit", amount=inp.amount),
                ],
            )
            await self._set_status("debited")
            await self._post(
                credit_key,
                "transfer_credit",
                inp,
                [
                    PostingSpec(system="transit", amount=-inp.amount),
                    PostingSpec(wallet_id=inp.to_wallet_id, amount=inp.amount),
                ],
            )
        except BaseException as exc:
            # A business refusal (code), a cancellation (asyncio's, or an in-flight step's ActivityError) or a
            # bug: undo before giving up — unless the credit had gone through, and the transfer is complete.
            code = business_code(exc)
            undone = await saga.compensate()
            if code is not None:
                await self._set_status("failed", code)
                return self._view
            # A reversal an operator resolved by hand (``Resolved``) counts as done: the transfer ends failed.
            if getattr(undone["reverse_debit"], "skipped", False):
                await self._set_status("completed")
            else:
                await self._set_status("failed", "canceled")
            raise
        # The credit has gone through: recording it can only be finished (or resolved by hand), never undone.
        await forward(self._desk, "mark_transfer", lambda: self._set_status("completed"))
        return self._view

    async def _post(self, key: str, kind: str, inp: TransferInput, postings: list[PostingSpec]) -> None:
        await db_step(
            LedgerActivities.post_journal,
            PostJournalInput(
                idempotency_key=key,
                kind=kind,
                currency=inp.currency,
                postings=postings,
                description=inp.description or f"transfer {inp.transfer_id}",
                saga_id=workflow.info().workflow_id,
            ),
        )
