"""DepositWorkflow — gateway → wallet (ARCHITECTURE §5.2).

pending → awaiting_payment → succeeded (wallet credited: gateway_clearing −a, wallet +a)
                           → failed | expired   (gateway object cancelled)
                           → refunded           (paid, but the wallet was frozen/closed meanwhile: the
                                                 payment is refunded at the gateway, nothing is posted)

The outcome comes from a webhook signal, or, when the expiry timer fires first, from cancelling the
gateway object: a payment that won the race against the cancellation (a late success) is still credited,
because the money arrived.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import (
        CreateGatewayPaymentInput,
        GatewayPaymentRef,
        MarkPaymentInput,
        PostingSpec,
        PostJournalInput,
        RecordPaymentInput,
        RefundGatewayPaymentInput,
    )
    from payweave.contracts.sagas import DepositInput, DepositStatus, PaymentEvent
    from payweave.ids import step_key

from workflows.gateway_payment import cancel_until_final, concerns
from workflows.saga import (
    AwaitsOperator,
    OperatorDesk,
    RecordRefused,
    business_code,
    db_step,
    finish_forward,
    first_record,
    forward,
    gateway_step,
    set_search_attributes,
)


@workflow.defn
class DepositWorkflow(AwaitsOperator):
    def __init__(self) -> None:
        # A step after the money moved that is refused waits here for an operator (``forward``).
        self._desk = OperatorDesk()
        self._view: DepositStatus | None = None
        self._outcome: str | None = None  # "succeeded" | "failed", first signal wins
        self._failure_code: str | None = None
        self._accepted: DepositStatus | None = None  # the deposit as first answered to the payer

    @workflow.query
    def status(self) -> DepositStatus | None:
        return self._view

    @workflow.update
    async def accepted(self) -> DepositStatus:
        """Waits until the gateway object exists; returns the deposit as the payer must see it (next_action).

        Every caller gets the same snapshot, taken once, so retried POSTs answer identically (QUALITY R8).
        """
        await workflow.wait_condition(lambda: self._accepted is not None)
        assert self._accepted is not None
        return self._accepted

    @workflow.query
    def accepted_view(self) -> DepositStatus | None:
        return self._accepted

    def _accept(self) -> None:
        if self._accepted is None:
            self._accepted = self._view

    @workflow.signal
    def payment_succeeded(self, event: PaymentEvent) -> None:
        if self._outcome is None and concerns(self._view.gateway_payment_id if self._view else None, event):
            self._outcome = "succeeded"

    @workflow.signal
    def payment_failed(self, event: PaymentEvent) -> None:
        if self._outcome is None and concerns(self._view.gateway_payment_id if self._view else None, event):
            self._outcome = "failed"
            self._failure_code = event.failure_code or "payment_failed"

    def _update_view(self, **changes: object) -> None:
        assert self._view is not None
        self._view = self._view.model_copy(update=changes)
        if "status" in changes:
            set_search_attributes(status=str(changes["status"]))

    @workflow.run
    async def run(self, inp: DepositInput) -> DepositStatus:
        wf_id = workflow.info().workflow_id
        expires_at = workflow.now() + timedelta(seconds=inp.expires_in_seconds)
        self._view = DepositStatus(
            id=inp.deposit_id,
            status="pending",
            owner=inp.owner,
            wallet_id=inp.wallet_id,
            amount=inp.amount,
            currency=inp.currency,
            gateway=inp.gateway,
            expires_at=expires_at,
        )
        set_search_attributes(
            kind="deposit", status="pending", owner=inp.owner, amount=inp.amount, currency=inp.currency
        )
        try:
            await first_record(
                db_step(
                    PaymentActivities.record_payment,
                    RecordPaymentInput(
                        payment_id=inp.deposit_id,
                        idempotency_key=step_key(wf_id, "payment"),
                        workflow_id=wf_id,
                        purpose="deposit",
                        owner=inp.owner,
                        wallet_id=inp.wallet_id,
                        gateway=inp.gateway,
                        amount=inp.amount,
                        currency=inp.currency,
                        expires_at=expires_at,
                    ),
                )
            )
        except RecordRefused as not_recorded:  # nothing moved: the deposit failed
            self._update_view(status="failed", failure_code=not_recorded.code)
            self._accept()
            assert self._view is not None
            return self._view
        create = CreateGatewayPaymentInput(
            payment_id=inp.deposit_id,
            idempotency_key=step_key(wf_id, "gateway_payment"),
            gateway=inp.gateway,
            amount=inp.amount,
            currency=inp.currency,
            metadata={"workflow_id": wf_id, "payment_id": inp.deposit_id, "purpose": "deposit"},
            payment_method=inp.payment_method,
            description=f"payweave deposit {inp.deposit_id}",
        )
        try:
            payment = await gateway_step(PaymentActivities.create_gateway_payment, create)
        except BaseException as exc:
            code = business_code(exc)
            if code is not None:
                return await self._finish(inp, "failed", code)
            # Cancelled around the create, whose outcome is unknown (with a payment method the card may be
            # charged already): ask again with the same key — the gateway answers with what it made — and close it.
            try:
                made = await gateway_step(PaymentActivities.create_gateway_payment, create)
            except BaseException as again:
                refused = business_code(again)
                if refused is None:
                    raise
                await self._finish(inp, "failed", refused)  # declined: nothing was charged
                raise exc from None
            self._update_view(gateway_payment_id=made.id)
            ref = GatewayPaymentRef(
                payment_id=inp.deposit_id, gateway=inp.gateway, gateway_payment_id=made.id
            )
            final = (
                made
                if made.status == "succeeded"
                else await cancel_until_final(ref, lambda: self._outcome == "succeeded")
            )
            if final.status == "succeeded":
                await self._credit(inp)
            else:
                await self._finish(inp, "canceled", "canceled")
            raise

        self._update_view(
            status="awaiting_payment" if payment.status != "failed" else "failed",
            gateway_payment_id=payment.id,
            next_action=payment.next_action,
            failure_code=payment.failure_code,
        )
        self._accept()
        if payment.status == "failed":
            return await self._finish(inp, "failed", payment.failure_code or "payment_failed")
        if payment.status == "succeeded":  # the gateway's own answer: paid already
            return await self._credit(inp)

        ref = GatewayPaymentRef(payment_id=inp.deposit_id, gateway=inp.gateway, gateway_payment_id=payment.id)
        try:
            if await self._await_confirmed_success(ref, expires_at):
                return await self._credit(inp)
        except BaseException:
            # Cancelled while the payer may still pay: close the gateway object first, and if the payment got
            # through anyway, the money arrived and is credited.
            final = await cancel_until_final(ref, lambda: self._outcome == "succeeded")
            if final.status == "succeeded" or self._outcome == "succeeded":
                await self._credit(inp)
            else:
                await self._finish(inp, "canceled", "canceled")
            raise

        # Failed or expired: cancel the gateway object. Its answer is the truth: if the payment won the race,
        # the money arrived and the wallet is credited (documented late-success behaviour).
        final = await cancel_until_final(ref, lambda: self._outcome == "succeeded")
        if final.status == "succeeded":
            return await self._credit(inp)
        if self._outcome == "failed":  # an invoice the gateway expired itself is an expired deposit
            status = "expired" if self._failure_code == "expired" else "failed"
            return await self._finish(inp, status, self._failure_code)
        return await self._finish(inp, "expired", "expired")

    async def _await_confirmed_success(self, ref: GatewayPaymentRef, expires_at: datetime) -> bool:
        """Wait for an outcome until expiry. A success signal is a claim; the gateway's record is the proof:
        it is looked up before any money moves, and an unconfirmed claim is ignored."""
        while True:
            remaining = (expires_at - workflow.now()).total_seconds()
            if remaining <= 0:
                return False
            try:
                await workflow.wait_condition(lambda: self._outcome is not None, timeout=remaining)
            except TimeoutError:
                return False
            if self._outcome != "succeeded":
                return False
            actual = await gateway_step(PaymentActivities.get_gateway_payment, ref)
            if actual.status == "succeeded":
                return True
            workflow.logger.warning(
                "success signal not confirmed by the gateway (%s); waiting on", actual.status
            )
            self._outcome = None

    async def _credit(self, inp: DepositInput) -> DepositStatus:
        """Past the point of no return (the money arrived): runs to the end even if cancelled meanwhile."""
        return await finish_forward(self._credit_or_refund(inp))

    async def _credit_or_refund(self, inp: DepositInput) -> DepositStatus:
        wf_id = workflow.info().workflow_id
        try:
            await self._post_credit(inp, wf_id)
        except ActivityError as exc:
            code = business_code(exc)
            if code is None:
                raise
            # The wallet cannot take the money any more (frozen or closed meanwhile): give it back at the
            # gateway rather than keep money nobody can see.
            assert self._view is not None and self._view.gateway_payment_id is not None
            await gateway_step(
                PaymentActivities.refund_gateway_payment,
                RefundGatewayPaymentInput(
                    payment_id=inp.deposit_id,
                    idempotency_key=step_key(wf_id, "refund"),
                    gateway=inp.gateway,
                    gateway_payment_id=self._view.gateway_payment_id,
                    amount=inp.amount,
                    reason=code,
                ),
            )
            return await self._finish_forward(inp, "refunded", code)
        self._update_view(credited=True)
        return await self._finish_forward(inp, "succeeded", None, credited=True)

    async def _finish_forward(
        self, inp: DepositInput, status: str, failure_code: str | None, *, credited: bool | None = None
    ) -> DepositStatus:
        """The last mark once the money has moved (credited, or given back at the gateway): it can only be
        finished, so a refusal waits for an operator (``payweave sagas retry|resolve``) instead of failing the
        saga with the wallet credited and the deposit still ``awaiting_payment``."""
        await forward(
            self._desk,
            "mark_payment",
            lambda: self._finish(inp, status, failure_code, credited=credited),
        )
        if self._view is not None and self._view.status != status:  # resolved by hand: show what happened
            self._update_view(status=status, failure_code=failure_code)
            self._accept()
        assert self._view is not None
        return self._view

    async def _post_credit(self, inp: DepositInput, wf_id: str) -> None:
        await db_step(
            LedgerActivities.post_journal,
            PostJournalInput(
                idempotency_key=step_key(wf_id, "credit"),
                kind="deposit",
                currency=inp.currency,
                postings=[
                    PostingSpec(system="gateway_clearing", amount=-inp.amount),
                    PostingSpec(wallet_id=inp.wallet_id, amount=inp.amount),
                ],
                description=f"deposit {inp.deposit_id} via {inp.gateway}",
                saga_id=wf_id,
                external_ref=inp.deposit_id,  # the payment row's id (reconciliation, I5)
            ),
        )

    async def _finish(
        self, inp: DepositInput, status: str, failure_code: str | None, *, credited: bool | None = None
    ) -> DepositStatus:
        await db_step(
            PaymentActivities.mark_payment,
            MarkPaymentInput(
                payment_id=inp.deposit_id, status=status, failure_code=failure_code, credited=credited
            ),
        )
        self._update_view(status=status, failure_code=failure_code)
        self._accept()
        assert self._view is not None
        return self._view
