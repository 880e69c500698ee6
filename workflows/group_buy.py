"""GroupBuyWorkflow — escrow until the minimum order quantity (ARCHITECTURE §5.5).

open ── join (Update): wallet → hold; gateway → a payment per participant (GroupBuyPaymentWorkflow, paid into
  │     escrow on the gateway's confirmation)
  │  deadline (durable timer; the sweeper may poke) | cancel | close_when_moq_reached
  ▼
one atomic decision in the database (paid units ≥ MOQ?)
  ├─ succeeded: wallet holds → escrow (batches), one order per participant (batches),
  │             await production_complete ─▶ escrow → factory − fee ─▶ completed
  │             (cancel or a missed production deadline ─▶ bulk refund ─▶ refunded)
  └─ failed | canceled ─▶ BulkRefundWorkflow ─▶ refunded

Built for 10,000 participants: per-participant state lives in the database, the workflow keeps counts, and the
open phase continues as new when Temporal suggests it (or every ``joins_per_run`` joins, 2000 by default),
carrying its counts; the database's counts decide (and are re-read before an early decision).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.group_buy import (
        GroupBuyActivities,
        JoinInput,
        ParticipantRefundInput,
        RecordGroupBuyInput,
        participant_payment_workflow_id,
    )
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import GatewayPaymentRef, PostingSpec, PostJournalInput
    from payweave.contracts.group_buy import (
        AcceptResult,
        BatchInput,
        BulkRefundInput,
        BulkRefundResult,
        CancelGroupBuy,
        DecideInput,
        Decision,
        GroupBuyCounts,
        GroupBuyInput,
        GroupBuyView,
        JoinRequest,
        MarkGroupBuyInput,
        ParticipantPaid,
        ParticipantPaymentInput,
        ParticipantRef,
        Participation,
    )
    from payweave.contracts.sagas import PaymentEvent
    from payweave.ids import step_key

from workflows.bulk_refund import BulkRefundWorkflow
from workflows.gateway_payment import cancel_until_final, concerns
from workflows.saga import (
    DB_TIMEOUT,
    MONEY_RETRY,
    batch_step,
    business_code,
    db_step,
    finish_forward,
    gateway_step,
    notify,
    set_search_attributes,
)

LATE_REFUND_POLL = timedelta(seconds=30)
PAYMENT_POLL = timedelta(
    minutes=15
)  # a gateway participant's payment is looked up this often (lost webhooks)
RELEASE_RETRY = timedelta(hours=1)  # escrow release refused (factory wallet frozen): try again, loudly


def _refused(exc: BaseException) -> ApplicationError:
    """An activity's business failure as the update's own failure (the API maps its type to a problem code)."""
    code = business_code(exc)
    if code is None:
        raise exc
    message = str(exc.cause) if isinstance(exc, ActivityError) and exc.cause else str(exc)
    return ApplicationError(message, type=code, non_retryable=True)


@workflow.defn
class GroupBuyWorkflow:
    @workflow.init
    def __init__(self, inp: GroupBuyInput) -> None:
        self._terms = inp.terms
        self._joins_per_run = inp.joins_per_run
        self._counts = (inp.counts or GroupBuyCounts()).model_copy()
        self._status = "open"
        self._closing = False  # the decision is being made: no new joins
        self._joining = 0  # join handlers in flight
        self._joins_this_run = 0
        self._seen: set[str] = set()  # participants counted in this run (a retried join counts once)
        self._poked = False
        self._retry_release = False
        self._decision: Decision | None = None
        self._fee_amount: int | None = None
        self._failure_code: str | None = None
        self._refund: BulkRefundResult | None = None

    # --- queries, updates, signals ---------------------------------------------------------------------

    @workflow.query
    def status(self) -> GroupBuyView:
        t = self._terms
        return GroupBuyView(
            id=t.group_buy_id,
            status=self._status,
            factory=t.factory,
            product=t.product,
            unit_price=t.unit_price,
            currency=t.currency,
            moq=t.moq,
            max_units=t.max_units,
            deadline=t.deadline,
            production_deadline=t.production_deadline,
            fee_bps=t.fee_bps,
            close_when_moq_reached=t.close_when_moq_reached,
            committed_units=self._counts.committed_units,
            paid_units=self._decision.paid_units if self._decision else self._counts.paid_units,
            participants=self._counts.participants,
            paid_amount=self._decision.paid_amount if self._decision else None,
            fee_amount=self._fee_amount,
            failure_code=self._failure_code,
            cancel_reason=self._counts.cancel_reason,
            refund=self._refund.progress if self._refund else None,
        )

    def _check_join(self, req: JoinRequest) -> None:
        if self._status != "open" or self._closing or workflow.now() >= self._terms.deadline:
            raise ApplicationError("the group buy no longer takes participants", type="session_closed")
        if req.quantity < 1:
            raise ApplicationError("quantity must be at least 1", type="validation_error")
        cap = self._terms.max_units
        if cap is not None and self._counts.committed_units + req.quantity > cap:
            left = max(cap - self._counts.committed_units, 0)
            raise ApplicationError(f"only {left} units left in this group buy", type="validation_error")

    @workflow.update
    async def join(self, req: JoinRequest) -> Participation:
        self._check_join(req)  # again: validators of updates in one task all ran before any handler
        self._joining += 1
        self._joins_this_run += 1
        self._counts.committed_units += req.quantity
        try:
            p = await workflow.execute_activity_method(
                GroupBuyActivities.join_group_buy,
                JoinInput(terms=self._terms, session_workflow_id=workflow.info().workflow_id, request=req),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=MONEY_RETRY,
            )
        except ActivityError as exc:
            self._counts.committed_units -= req.quantity
            raise _refused(exc) from None
        finally:
            self._joining -= 1
        if p.id in self._seen:
            self._counts.committed_units -= req.quantity
            return p
        self._seen.add(p.id)
        self._counts.participants += 1
        if p.status == "held":
            self._counts.paid_units += p.quantity
        elif p.status == "awaiting_payment":
            assert p.gateway is not None and p.payment_id is not None and p.gateway_payment_id is not None
            try:
                await workflow.start_child_workflow(
                    GroupBuyPaymentWorkflow.run,
                    ParticipantPaymentInput(
                        session_workflow_id=workflow.info().workflow_id,
                        group_buy_id=self._terms.group_buy_id,
                        participant_id=p.id,
                        payment_id=p.payment_id,
                        gateway=p.gateway,
                        gateway_payment_id=p.gateway_payment_id,
                        amount=p.amount,
                        quantity=p.quantity,
                        currency=self._terms.currency,
                        deadline=self._terms.deadline,
                    ),
                    id=participant_payment_workflow_id(p.id),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
            except WorkflowAlreadyStartedError:  # a join retried after a continue-as-new
                pass
        return p

    @join.validator
    def _validate_join(self, req: JoinRequest) -> None:
        self._check_join(req)

    @workflow.update
    async def cancel(self, request: CancelGroupBuy) -> GroupBuyView:
        self._counts.cancel_reason = self._counts.cancel_reason or request.reason
        await workflow.wait_condition(lambda: self._status not in ("open", "succeeded"))
        return self.status()

    @cancel.validator
    def _validate_cancel(self, request: CancelGroupBuy) -> None:
        if self._status not in ("open", "succeeded") or self._counts.production_done:
            raise ApplicationError(f"the group buy is {self._status}", type="conflict")

    @workflow.update
    async def production_complete(self) -> GroupBuyView:
        """Answers once the escrow is released — or once the release is refused (``release_blocked:<code>``,
        retried hourly and on the ``retry_release`` signal), so the factory is never left hanging."""
        self._counts.production_done = True
        await workflow.wait_condition(
            lambda: self._status == "completed" or (self._failure_code or "").startswith("release_blocked")
        )
        return self.status()

    @production_complete.validator
    def _validate_production(self) -> None:
        if self._status != "succeeded" or self._counts.cancel_reason:
            raise ApplicationError(
                f"production can only complete a succeeded group buy (this one is {self._status})",
                type="conflict",
            )

    @workflow.signal
    def participant_paid(self, event: ParticipantPaid) -> None:
        if self._status == "open":
            self._counts.paid_units += event.quantity

    @workflow.signal
    def participant_ended(self, event: ParticipantPaid) -> None:
        """A gateway participant that never paid: its units are free again."""
        if self._status == "open":
            self._counts.committed_units = max(self._counts.committed_units - event.quantity, 0)

    @workflow.signal
    def retry_release(self) -> None:
        """From an operator, after fixing what blocked the escrow release (e.g. unfreezing the factory wallet)."""
        self._retry_release = True

    @workflow.signal
    def deadline_passed(self) -> None:
        """From the sweeper: look at the deadline now (the durable timer does the same)."""
        self._poked = True

    # --- the saga --------------------------------------------------------------------------------------

    def _set_status(self, status: str) -> None:
        self._status = status
        set_search_attributes(status=status)

    def _should_continue_as_new(self) -> bool:
        return workflow.info().is_continue_as_new_suggested() or self._joins_this_run >= self._joins_per_run

    def _moq_reached(self) -> bool:
        return self._terms.close_when_moq_reached and self._counts.paid_units >= self._terms.moq

    @workflow.run
    async def run(self, inp: GroupBuyInput) -> GroupBuyView:
        t = self._terms
        wf_id = workflow.info().workflow_id
        if inp.counts is None:
            set_search_attributes(
                kind="group_buy",
                status="open",
                owner=t.factory,
                amount=0,
                currency=t.currency,
                order_id=t.group_buy_id,
            )
            await db_step(
                GroupBuyActivities.record_group_buy, RecordGroupBuyInput(terms=t, workflow_id=wf_id)
            )
        if not await self._take_joins():
            # No await between the handlers finishing and continuing: a join accepted in between would be cut off.
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(
                GroupBuyInput(terms=t, counts=self._counts, joins_per_run=self._joins_per_run)
            )

        self._closing = True
        await workflow.wait_condition(lambda: self._joining == 0)
        decision = await db_step(
            GroupBuyActivities.decide_group_buy,
            DecideInput(group_buy_id=t.group_buy_id, cancel_reason=self._counts.cancel_reason),
        )
        self._decision = decision
        self._failure_code = {"failed": "moq_not_reached", "canceled": "canceled"}.get(decision.status)
        set_search_attributes(amount=decision.paid_amount)
        self._set_status(decision.status)
        if workflow.now() < t.deadline:
            await self._close_pending_payments()
        await notify(
            f"group_buy.{decision.status}",
            [t.factory],
            {"group_buy_id": t.group_buy_id, "paid_units": decision.paid_units, "moq": t.moq},
            step="notify_decision",
        )
        if decision.status == "succeeded":
            await finish_forward(self._capture_and_order(wf_id))
            if await self._await_production():
                return await finish_forward(self._complete())
            self._failure_code = (
                "production_deadline_missed"
                if self._counts.cancel_reason == "production_deadline_missed"
                else "canceled"
            )
            await db_step(
                GroupBuyActivities.mark_group_buy,
                MarkGroupBuyInput(
                    group_buy_id=t.group_buy_id,
                    status="canceled",
                    failure_code=self._failure_code,
                    cancel_reason=self._counts.cancel_reason,
                ),
            )
            self._set_status("canceled")
        return await finish_forward(self._bulk_refund(wf_id))

    async def _take_joins(self) -> bool:
        """The open phase. True: time to decide; False: continue as new first (history getting long)."""
        t = self._terms
        while True:
            if self._counts.cancel_reason or workflow.now() >= t.deadline:
                return True
            if self._moq_reached():
                fresh = await db_step(GroupBuyActivities.group_buy_counts, t.group_buy_id)
                if fresh.paid_units >= t.moq:
                    return True
                self._counts.paid_units = fresh.paid_units
            if self._should_continue_as_new():
                return False
            self._poked = False
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._poked
                        or bool(self._counts.cancel_reason)
                        or self._moq_reached()
                        or self._should_continue_as_new()
                    ),
                    timeout=max((t.deadline - workflow.now()).total_seconds(), 0.001),
                )
            except TimeoutError:
                pass

    async def _close_pending_payments(self) -> None:
        """Decided before the deadline: unpaid gateway participants stop waiting (their payments are closed)."""
        for child in await db_step(GroupBuyActivities.pending_payment_workflows, self._terms.group_buy_id):
            try:
                await workflow.get_external_workflow_handle(child).signal(
                    GroupBuyPaymentWorkflow.session_closed
                )
            except FailureError:  # the signal failed: the payment workflow already finished, nothing to close
                workflow.logger.info("payment workflow %s already closed", child)

    async def _capture_and_order(self, wf_id: str) -> None:
        for activity_method in (
            GroupBuyActivities.capture_group_holds,
            GroupBuyActivities.create_group_orders,
        ):
            cursor: int | None = 0
            while cursor is not None:
                batch = await batch_step(
                    activity_method,
                    BatchInput(group_buy_id=self._terms.group_buy_id, workflow_id=wf_id, after_seq=cursor),
                )
                cursor = batch.next_after_seq

    async def _await_production(self) -> bool:
        """True once the factory reports production complete; False on cancel or a missed production deadline."""
        deadline = self._terms.production_deadline
        timeout = None if deadline is None else max((deadline - workflow.now()).total_seconds(), 0.001)
        try:
            await workflow.wait_condition(
                lambda: self._counts.production_done or bool(self._counts.cancel_reason), timeout=timeout
            )
        except TimeoutError:
            self._counts.cancel_reason = "production_deadline_missed"
        return self._counts.production_done and not self._counts.cancel_reason

    async def _complete(self) -> GroupBuyView:
        t = self._terms
        while True:
            try:
                released = await workflow.execute_activity_method(
                    GroupBuyActivities.release_escrow,
                    t,
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=MONEY_RETRY,
                )
                break
            except ActivityError as exc:
                code = business_code(exc)
                if code is None:
                    raise
                workflow.logger.error("escrow release refused (%s): retrying in %s", code, RELEASE_RETRY)
                blocked = f"release_blocked:{code}"
                await db_step(
                    GroupBuyActivities.mark_group_buy,
                    MarkGroupBuyInput(group_buy_id=t.group_buy_id, status="succeeded", failure_code=blocked),
                )
                self._failure_code = (
                    blocked  # recorded first: whoever reads it can read it in the database too
                )
                self._retry_release = False
                try:
                    await workflow.wait_condition(lambda: self._retry_release, timeout=RELEASE_RETRY)
                except TimeoutError:
                    pass
        self._fee_amount, self._failure_code = released.fee, None
        self._set_status("completed")
        await notify(
            "group_buy.completed",
            [t.factory],
            {"group_buy_id": t.group_buy_id, "released": released.total - released.fee, "fee": released.fee},
            step="notify_completed",
        )
        return self.status()

    async def _bulk_refund(self, wf_id: str) -> GroupBuyView:
        t = self._terms
        reason = self._counts.cancel_reason or self._failure_code or "failed"
        self._refund = await workflow.execute_child_workflow(
            BulkRefundWorkflow.run,
            BulkRefundInput(group_buy_id=t.group_buy_id, session_workflow_id=wf_id, reason=reason),
            id=f"{wf_id}:bulk-refund",
        )
        await db_step(
            GroupBuyActivities.mark_group_buy,
            MarkGroupBuyInput(group_buy_id=t.group_buy_id, status="refunded"),
        )
        self._set_status("refunded")
        await notify(
            "group_buy.refunded",
            [t.factory],
            {"group_buy_id": t.group_buy_id, "reason": reason, **self._refund.progress.model_dump()},
            step="notify_refunded",
        )
        return self.status()


@workflow.defn
class GroupBuyPaymentWorkflow:
    """One gateway participant's payment: paid into escrow when the gateway confirms it before the decision;
    expired (the gateway object canceled) at the deadline; refunded automatically when it lands late."""

    def __init__(self) -> None:
        self._claims = 0  # success signals received: each is a claim the gateway's record must confirm
        self._failed = False
        self._failure_code: str | None = None
        self._session_closed = False
        self._gateway_payment_id: str | None = None
        self._status = "awaiting_payment"

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.signal
    def payment_succeeded(self, event: PaymentEvent) -> None:
        if concerns(self._gateway_payment_id, event):
            self._claims += 1

    @workflow.signal
    def payment_failed(self, event: PaymentEvent) -> None:
        if not self._failed and concerns(self._gateway_payment_id, event):
            self._failed = True
            self._failure_code = event.failure_code or "payment_failed"

    @workflow.signal
    def session_closed(self) -> None:
        self._session_closed = True

    @workflow.run
    async def run(self, inp: ParticipantPaymentInput) -> str:
        self._gateway_payment_id = inp.gateway_payment_id
        set_search_attributes(
            kind="group_buy_payment",
            status="awaiting_payment",
            amount=inp.amount,
            currency=inp.currency,
            order_id=inp.group_buy_id,
        )
        ref = GatewayPaymentRef(
            payment_id=inp.payment_id, gateway=inp.gateway, gateway_payment_id=inp.gateway_payment_id
        )
        outcome = await self._wait_for_payment(ref, inp)
        if outcome != "succeeded":
            # Close the gateway object for good, whatever ended the wait: a declined Stripe intent could still
            # be paid with another card, and money must never arrive for a participation we ended.
            claims = self._claims
            final = await cancel_until_final(ref, lambda: self._claims > claims)
            if final.status == "succeeded":
                outcome = "succeeded"
            elif outcome == "unpaid":
                outcome, self._failure_code = "expired", self._failure_code or "expired"
        if outcome != "succeeded":
            await db_step(
                GroupBuyActivities.end_group_payment,
                ParticipantRef(participant_id=inp.participant_id, failure_code=self._failure_code),
            )
            await self._tell_session(inp, "participant_ended")
            return self._finish("expired" if outcome == "expired" else "declined")
        return await finish_forward(self._paid(inp))

    async def _wait_for_payment(self, ref: GatewayPaymentRef, inp: ParticipantPaymentInput) -> str:
        """succeeded | failed | unpaid (deadline passed or session decided without this payment).

        Every success claim (signal) is checked against the gateway's record; a claim arriving while a look-up
        is in flight is looked at again afterwards, never lost."""
        checked = -1  # claims already looked at; -1: look at start (a payment confirmed server-side is paid)
        while True:
            if checked < self._claims:
                seen = self._claims
                actual = await gateway_step(PaymentActivities.get_gateway_payment, ref)
                if actual.status == "succeeded":
                    return "succeeded"
                if actual.status in ("failed", "canceled", "expired"):
                    self._failure_code = actual.failure_code or actual.status
                    return "failed" if actual.status == "failed" else "unpaid"
                checked = seen
            if self._failed:
                return "failed"
            remaining = (inp.deadline - workflow.now()).total_seconds()
            if remaining <= 0 or self._session_closed:
                return "unpaid"
            try:
                await workflow.wait_condition(
                    lambda seen=checked: self._claims > seen or self._failed or self._session_closed,  # type: ignore[misc]
                    timeout=min(remaining, PAYMENT_POLL.total_seconds()),
                )
            except TimeoutError:
                checked = -1  # time to look again (a lost webhook)

    async def _paid(self, inp: ParticipantPaymentInput) -> str:
        wf_id = workflow.info().workflow_id
        # Into escrow first, keyed: whatever the session decided, the money is in escrow before anyone counts it.
        await db_step(
            LedgerActivities.post_journal,
            PostJournalInput(
                idempotency_key=step_key(wf_id, "escrow"),
                kind="group_buy_payment",
                currency=inp.currency,
                postings=[
                    PostingSpec(system="gateway_clearing", amount=-inp.amount),
                    PostingSpec(system="escrow", amount=inp.amount),
                ],
                description=f"group buy {inp.group_buy_id}: {inp.gateway} payment into escrow",
                saga_id=inp.session_workflow_id,
                external_ref=inp.payment_id,
            ),
        )
        accepted: AcceptResult = await db_step(
            GroupBuyActivities.accept_group_payment, ParticipantRef(participant_id=inp.participant_id)
        )
        if accepted.accepted:
            await self._tell_session(inp, "participant_paid")
            return self._finish("paid")
        # Late: the session decided without this payment. Give it back (to the wallet if the gateway refuses).
        while True:
            refund = await gateway_step(
                GroupBuyActivities.refund_group_participant,
                ParticipantRefundInput(
                    participant_id=inp.participant_id, reason="late_payment", final_status="late_refunded"
                ),
            )
            if refund.outcome != "refund_pending":
                break
            await workflow.sleep(LATE_REFUND_POLL)
        await self._tell_session(inp, "participant_ended")
        return self._finish(f"late_{refund.outcome}")

    async def _tell_session(self, inp: ParticipantPaymentInput, signal: str) -> None:
        try:
            await workflow.get_external_workflow_handle(inp.session_workflow_id).signal(
                signal,
                ParticipantPaid(participant_id=inp.participant_id, quantity=inp.quantity),
            )
        except FailureError:  # the signal failed: the session finished, it no longer counts
            workflow.logger.info("session %s no longer running", inp.session_workflow_id)

    def _finish(self, status: str) -> str:
        self._status = status
        set_search_attributes(status=status)
        return status
