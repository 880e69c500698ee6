"""A deliberately broken TransferWorkflow (steps reordered) that must fail replay of recorded histories."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import PostingSpec, PostJournalInput, RecordTransferInput
    from payweave.contracts.sagas import TransferInput

from workflows.saga import db_step


@workflow.defn(name="TransferWorkflow")
class ReorderedTransferWorkflow:
    @workflow.run
    async def run(self, inp: TransferInput) -> None:
        wf_id = workflow.info().workflow_id
        await db_step(
            LedgerActivities.post_journal,
            PostJournalInput(
                idempotency_key=f"{wf_id}:debit",
                kind="transfer_debit",
                currency=inp.currency,
                postings=[
                    PostingSpec(wallet_id=inp.from_wallet_id, amount=-inp.amount),
                    PostingSpec(system="transit", amount=inp.amount),
                ],
            ),
        )
        await db_step(
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
