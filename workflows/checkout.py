"""CheckoutWorkflow — split wallet + gateway payment (ARCHITECTURE §5.1).

pending ─ reserve stock ─ hold wallet part ─ create gateway payment ─▶ awaiting_payment
   └─▶ paid: capture the hold and post ONE journal (buyer −wallet part, gateway_clearing −gateway part,
             merchant +total), commit the stock
   └─▶ failed | expired | canceled: compensations in reverse — close the gateway payment (a payment that got
       through anyway is refunded automatically: late success), release the hold, release the stock.

Every step is keyed ``<workflow id>:<step>[:<n>]``; the first outcome wins and states never move backwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import (
        CaptureHoldInput,
        CreateGatewayPaymentInput,
        FinishOrderInput,
        GatewayPaymentRef,
        MarkOrderInput,
        MarkPaymentInput,
        NotifyInput,
        PlaceHoldInput,
        PostingSpec,
        PostJournalInput,
        RecordOrderInput,
        RecordPaymentInput,
        RefundGatewayPaymentInput,
        ReleaseHoldInput,
        ReservationRef,
        ReserveStockInput,
    )
    from payweave.contracts.sagas import CancelCheckout, CheckoutInput, CheckoutStatus, PaymentEvent
    from payweave.ids import step_key

from workflows.gateway_payment import cancel_until_final, concerns
from workflows.saga import (
    CHECKOUT_ONE_TASK,
    CHECKOUT_PAYMENT_WITH_ORDER,
    FAILURE_LOOKED_UP,
    AwaitsOperator,
    OperatorDesk,
    RecordRefused,
    Saga,
    business_code,
    db_step,
    finish_forward,
    first_record,
    forward,
    gateway_step,
    local_db_steps,
    notify,
    set_search_attributes,
)

OPEN = ("pending", "awaiting_payment")
TERMINAL = ("paid", "failed", "expired", "canceled")
# A wallet hold outlives its saga's deadline a little, so only the sweeper ever expires a live saga's hold.
HOLD_GRACE = timedelta(minutes=10)


class _Ended(Exception):
    """The checkout ends without payment (expired, canceled, failed): compensate, then record ``status``."""

    def __init__(self, status: str, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


@workflow.defn
class CheckoutWorkflow(AwaitsOperator):
    def __init__(self) -> None:
        self._view: CheckoutStatus | None = None
        self._desk = OperatorDesk()  # a compensation that gives up waits here for an operator
        self._accepted: CheckoutStatus | None = None
        self._outcome: str | None = None
        self._one_task = False  # CHECKOUT_ONE_TASK, decided at the start of the run
        self._payment_with_order = False  # CHECKOUT_PAYMENT_WITH_ORDER (implies CHECKOUT_ONE_TASK)
        self._db_steps_local = False  # read by saga.local_db_steps: CHECKOUT_ONE_TASK implies LOCAL_DB_STEPS
        self._failure_code: str | None = None
        self._cancel_reason: str | None = None
        self._create_input: CreateGatewayPaymentInput | None = None  # set once the create is attempted
        self._create_refused = False

    # --- queries, updates, signals ---------------------------------------------------------------------

    @workflow.query
    def status(self) -> CheckoutStatus | None:
        return self._view

    @workflow.query
    def accepted_view(self) -> CheckoutStatus | None:
        return self._accepted

    @workflow.update
    async def accepted(self) -> CheckoutStatus:
        """The checkout as first answered to the buyer (with ``next_action``), the same for every retry."""
        await workflow.wait_condition(lambda: self._accepted is not None)
        assert self._accepted is not None
        return self._accepted

    @workflow.update
    async def cancel(self, request: CancelCheckout) -> CheckoutStatus:
        self._cancel_reason = self._cancel_reason or request.reason
        await workflow.wait_condition(lambda: self._view is not None and self._view.status in TERMINAL)
        assert self._view is not None
        return self._view

    @cancel.validator
    def _validate_cancel(self, request: CancelCheckout) -> None:
        if self._view is not None and self._view.status not in OPEN:
            raise ApplicationError(f"checkout is {self._view.status}", type="conflict", non_retryable=True)

    @workflow.signal
    def payment_succeeded(self, event: PaymentEvent) -> None:
        if self._outcome is None and concerns(self._view.gateway_payment_id if self._view else None, event):
            self._outcome = "succeeded"

    @workflow.signal
    def payment_failed(self, event: PaymentEvent) -> None:
        if self._outcome is None and concerns(self._view.gateway_payment_id if self._view else None, event):
            self._outcome = "failed"
            self._failure_code = event.failure_code or "payment_failed"

    # --- the saga --------------------------------------------------------------------------------------

    def _update(self, *, shown: bool = True, **changes: object) -> None:
        """Change the view; a status change is upserted (``shown``) for the Web UI and ``sagas list``."""
        assert self._view is not None
        self._view = self._view.model_copy(update=changes)
        if "status" in changes and shown:
            set_search_attributes(status=str(changes["status"]))

    def _accept(self) -> None:
        if self._accepted is None:
            self._accepted = self._view

    @workflow.run
    async def run(self, inp: CheckoutInput) -> CheckoutStatus:
        wf_id = workflow.info().workflow_id
        # The API fixes the expiry when it records the order; a saga started otherwise computes it here.
        expires_at = inp.expires_at or workflow.now() + timedelta(seconds=inp.expires_in_seconds)
        gateway_amount = inp.total - inp.wallet_amount
        self._view = CheckoutStatus(
            id=inp.order_id,
            status="pending",
            buyer=inp.buyer,
            merchant=inp.merchant,
            currency=inp.currency,
            total=inp.total,
            wallet_amount=inp.wallet_amount,
            gateway_amount=gateway_amount,
            method=inp.method,
            gateway=inp.gateway,
            items=inp.items,
            expires_at=expires_at,
        )
        self._payment_with_order = workflow.patched(CHECKOUT_PAYMENT_WITH_ORDER)
        self._one_task = self._payment_with_order or workflow.patched(CHECKOUT_ONE_TASK)
        self._db_steps_local = self._one_task
        payment = self._payment_record(inp, wf_id, expires_at) if self._payment_with_order else None
        set_search_attributes(
            kind="checkout",
            status="pending",
            owner=inp.buyer,
            amount=inp.total,
            currency=inp.currency,
            order_id=inp.order_id,
            only_changes=self._one_task,
        )
        try:
            await first_record(
                db_step(
                    OrderActivities.record_order,
                    RecordOrderInput(
                        order_id=inp.order_id,
                        workflow_id=wf_id,
                        buyer=inp.buyer,
                        merchant=inp.merchant,
                        currency=inp.currency,
                        total=inp.total,
                        wallet_amount=inp.wallet_amount,
                        gateway_amount=gateway_amount,
                        method=inp.method,
                        gateway=inp.gateway,
                        buyer_wallet_id=inp.buyer_wallet_id,
                        merchant_wallet_id=inp.merchant_wallet_id,
                        items=inp.items,
                        expires_at=expires_at,
                        payment=payment,
                    ),
                )
            )
        except RecordRefused as refused:
            # Nothing moved: the checkout failed (its order row, if any, says so).
            await self._finish(inp, "failed", refused.code)
            return self._view
        saga = Saga(self._desk)
        reservations: list[str] = []
        try:
            if payment is not None:
                # Until the gateway is asked, closing the payment is marking its row canceled; from the create
                # call on, the gateway's own compensation (registered just before it) closes it.
                saga.add("void_unsent_payment", lambda: self._void_unsent_payment(payment.payment_id))
            for n, item in enumerate(inp.items):
                reservation_id = f"rsv_{inp.order_id}_{n}"
                reservations.append(reservation_id)
                saga.add(
                    f"release_stock:{n}",
                    lambda r=reservation_id: db_step(  # type: ignore[misc]
                        OrderActivities.release_stock, ReservationRef(reservation_id=r)
                    ),
                )
                await db_step(
                    OrderActivities.reserve_stock,
                    ReserveStockInput(
                        idempotency_key=step_key(wf_id, "reserve", n),
                        reservation_id=reservation_id,
                        product_id=item.product_id,
                        order_id=inp.order_id,
                        quantity=item.quantity,
                    ),
                )
            hold_id = f"hld_{inp.order_id}"
            # A wallet-only checkout waits for nothing between reserving and taking the money, so (since the
            # local-steps patch) it takes it in one step: the settle journal debits the wallet directly.
            direct = gateway_amount == 0 and local_db_steps()
            if inp.wallet_amount > 0 and not direct:
                assert inp.buyer_wallet_id is not None
                saga.add(
                    "release_hold",
                    lambda: db_step(LedgerActivities.release_hold, ReleaseHoldInput(hold_id=hold_id)),
                )
                await db_step(
                    LedgerActivities.place_hold,
                    PlaceHoldInput(
                        idempotency_key=step_key(wf_id, "hold"),
                        hold_id=hold_id,
                        wallet_id=inp.buyer_wallet_id,
                        amount=inp.wallet_amount,
                        currency=inp.currency,
                        expires_at=expires_at + HOLD_GRACE,
                        saga_id=wf_id,
                    ),
                )
            if gateway_amount > 0:
                await self._pay_at_gateway(inp, wf_id, gateway_amount, expires_at, saga)
            else:
                self._accept()
                if self._cancel_reason:
                    raise _Ended("canceled", self._cancel_reason)
            # The point of no return: once the settle is scheduled, a cancellation cannot undo it.
            await finish_forward(self._settle(inp, wf_id, gateway_amount, None if direct else hold_id))
        except BaseException as exc:
            ended = exc if isinstance(exc, _Ended) else None
            code = ended.code if ended else business_code(exc)
            await saga.compensate()
            if code is None:  # cancelled from Temporal, or a bug: compensated, then give up loudly
                await self._finish(inp, "canceled", "canceled")
                raise
            await self._finish(inp, ended.status if ended else "failed", code)
            return self._view
        await finish_forward(self._record_paid(inp, reservations))
        return self._view

    async def _record_paid(self, inp: CheckoutInput, reservations: list[str]) -> None:
        """After the settle journal: book-keeping that cannot be undone, only finished (or resolved by hand)."""
        paid = MarkPaymentInput(payment_id=f"pay_{inp.order_id}", status="succeeded")
        has_payment = inp.total - inp.wallet_amount > 0
        if has_payment and not self._payment_with_order:
            await forward(self._desk, "mark_payment", lambda: db_step(PaymentActivities.mark_payment, paid))
        for reservation_id in reservations:
            ref = ReservationRef(reservation_id=reservation_id)
            await forward(self._desk, "commit_stock", lambda r=ref: db_step(OrderActivities.commit_stock, r))  # type: ignore[misc]
        # Since CHECKOUT_PAYMENT_WITH_ORDER the payment row is marked paid in the order's finishing transaction.
        with_payment = paid if has_payment and self._payment_with_order else None
        await forward(self._desk, "finish", lambda: self._finish(inp, "paid", None, payment=with_payment))

    async def _pay_at_gateway(
        self, inp: CheckoutInput, wf_id: str, amount: int, expires_at: datetime, saga: Saga
    ) -> None:
        assert inp.gateway is not None
        payment_id = f"pay_{inp.order_id}"
        if not self._payment_with_order:  # since the patch, recorded with the order
            record = self._payment_record(inp, wf_id, expires_at)
            assert record is not None
            await db_step(PaymentActivities.record_payment, record)
        # Registered before the call: if the call's outcome is unknown, closing by look-up is still right.
        saga.add("close_gateway_payment", lambda: self._close_gateway_payment(inp, wf_id, payment_id, amount))
        self._create_input = CreateGatewayPaymentInput(
            payment_id=payment_id,
            idempotency_key=step_key(wf_id, "gateway_payment"),
            gateway=inp.gateway,
            amount=amount,
            currency=inp.currency,
            metadata={
                "workflow_id": wf_id,
                "payment_id": payment_id,
                "order_id": inp.order_id,
                "purpose": "checkout",
            },
            payment_method=inp.payment_method,
            description=f"payweave order {inp.order_id}",
        )
        try:
            payment = await gateway_step(
                PaymentActivities.create_gateway_payment, self._create_input, local=self._one_task
            )
        except BaseException as exc:
            self._create_refused = business_code(exc) is not None
            raise
        if payment.status == "failed":
            self._update(gateway_payment_id=payment.id)
            raise _Ended("failed", payment.failure_code or "payment_declined")
        self._update(
            status="awaiting_payment",
            gateway_payment_id=payment.id,
            next_action=payment.next_action,
            shown=not (self._one_task and payment.status == "succeeded"),  # paid in this task: no one waits
        )
        self._accept()
        if payment.status == "succeeded":
            return
        ref = GatewayPaymentRef(payment_id=payment_id, gateway=inp.gateway, gateway_payment_id=payment.id)
        await self._await_confirmed_payment(ref, expires_at)

    async def _await_confirmed_payment(self, ref: GatewayPaymentRef, expires_at: datetime) -> None:
        """Returns once the gateway confirms the payment; raises _Ended on failure, expiry or cancel."""
        while True:
            remaining = (expires_at - workflow.now()).total_seconds()
            if remaining <= 0:
                raise _Ended("expired", "expired")
            try:
                await workflow.wait_condition(
                    lambda: self._outcome is not None or self._cancel_reason is not None, timeout=remaining
                )
            except TimeoutError:
                raise _Ended("expired", "expired") from None
            if self._cancel_reason is not None and self._outcome != "succeeded":
                raise _Ended("canceled", self._cancel_reason)
            if self._outcome == "failed":  # an invoice the gateway expired itself is an expired checkout
                code = self._failure_code or "payment_failed"
                # The claim is checked against the gateway's record, which wins: a card paid after all is paid.
                if workflow.patched(FAILURE_LOOKED_UP):
                    actual = await gateway_step(PaymentActivities.get_gateway_payment, ref)
                    if actual.status == "succeeded":
                        return
                raise _Ended("expired" if code == "expired" else "failed", code)
            # A success signal is a claim; the gateway's record is the proof.
            actual = await gateway_step(PaymentActivities.get_gateway_payment, ref)
            if actual.status == "succeeded":
                return
            self._outcome = None

    @staticmethod
    def _payment_record(inp: CheckoutInput, wf_id: str, expires_at: datetime) -> RecordPaymentInput | None:
        """The gateway part's payment row (None for a wallet-only checkout)."""
        amount = inp.total - inp.wallet_amount
        if amount <= 0 or inp.gateway is None:
            return None
        return RecordPaymentInput(
            payment_id=f"pay_{inp.order_id}",
            idempotency_key=step_key(wf_id, "payment"),
            workflow_id=wf_id,
            purpose="checkout",
            owner=inp.buyer,
            wallet_id=None,
            gateway=inp.gateway,
            amount=amount,
            currency=inp.currency,
            expires_at=expires_at,
        )

    async def _void_unsent_payment(self, payment_id: str) -> None:
        """Compensation for a payment row recorded with the order: canceled, if the gateway was never asked."""
        if self._create_input is None:
            await db_step(
                PaymentActivities.mark_payment,
                MarkPaymentInput(payment_id=payment_id, status="canceled", failure_code="canceled"),
            )

    async def _close_gateway_payment(
        self, inp: CheckoutInput, wf_id: str, payment_id: str, amount: int
    ) -> None:
        """Compensation: cancel the gateway payment; one that got through anyway is refunded (late success)."""
        view = self._view
        assert view is not None and inp.gateway is not None
        if view.gateway_payment_id is None and self._create_input is not None and not self._create_refused:
            # Cancelled around the create: its outcome is unknown. Asking again with the same key is safe
            # (Stripe replays, Xendit finds the invoice by external_id) and tells us what there is to close.
            try:
                made = await gateway_step(PaymentActivities.create_gateway_payment, self._create_input)
                self._update(gateway_payment_id=made.id)
                assert self._view is not None
                view = self._view
            except BaseException as exc:
                if business_code(exc) is None:
                    raise
        if view.gateway_payment_id is None:
            await db_step(
                PaymentActivities.mark_payment,
                MarkPaymentInput(payment_id=payment_id, status="canceled", failure_code="canceled"),
            )
            return
        ref = GatewayPaymentRef(
            payment_id=payment_id, gateway=inp.gateway, gateway_payment_id=view.gateway_payment_id
        )
        final = await cancel_until_final(ref, lambda: self._outcome == "succeeded")
        if final.status == "succeeded":
            await gateway_step(
                PaymentActivities.refund_gateway_payment,
                RefundGatewayPaymentInput(
                    payment_id=payment_id,
                    idempotency_key=step_key(wf_id, "late_payment_refund"),
                    gateway=inp.gateway,
                    gateway_payment_id=view.gateway_payment_id,
                    amount=amount,
                    reason="late_payment",
                ),
            )
            self._update(late_payment_refunded=True)
            await db_step(
                PaymentActivities.mark_payment,
                MarkPaymentInput(payment_id=payment_id, status="refunded", failure_code="late_payment"),
            )
        else:
            status = "failed" if final.status == "failed" else "canceled"
            await db_step(
                PaymentActivities.mark_payment,
                MarkPaymentInput(
                    payment_id=payment_id, status=status, failure_code=final.failure_code or status
                ),
            )

    async def _settle(self, inp: CheckoutInput, wf_id: str, gateway_amount: int, hold_id: str | None) -> None:
        """One journal: buyer −wallet part (the captured hold, or a direct debit when there is no hold),
        gateway_clearing −gateway part, merchant +total."""
        credits = [PostingSpec(wallet_id=inp.merchant_wallet_id, amount=inp.total)]
        if gateway_amount > 0:
            credits.insert(0, PostingSpec(system="gateway_clearing", amount=-gateway_amount))
        if hold_id is None and inp.wallet_amount > 0:
            credits.insert(0, PostingSpec(wallet_id=inp.buyer_wallet_id, amount=-inp.wallet_amount))
        description = f"order {inp.order_id}"
        # The gateway payment's row, when the journal draws on gateway_clearing (reconciliation, I5).
        external_ref = f"pay_{inp.order_id}" if gateway_amount > 0 else None
        if inp.wallet_amount > 0 and hold_id is not None:
            await db_step(
                LedgerActivities.capture_hold,
                CaptureHoldInput(
                    idempotency_key=step_key(wf_id, "settle"),
                    hold_id=hold_id,
                    amount=inp.wallet_amount,
                    credits=credits,
                    kind="checkout",
                    description=description,
                    external_ref=external_ref,
                ),
            )
        else:
            await db_step(
                LedgerActivities.post_journal,
                PostJournalInput(
                    idempotency_key=step_key(wf_id, "settle"),
                    kind="checkout",
                    currency=inp.currency,
                    postings=credits,
                    description=description,
                    saga_id=wf_id,
                    external_ref=external_ref,
                ),
            )

    async def _finish(
        self, inp: CheckoutInput, status: str, code: str | None, *, payment: MarkPaymentInput | None = None
    ) -> None:
        mark = MarkOrderInput(order_id=inp.order_id, status=status, failure_code=code)
        recipients = [inp.buyer, inp.merchant] if status == "paid" else [inp.buyer]
        data = {
            "order_id": inp.order_id,
            "status": status,
            "failure_code": code,
            "total": inp.total,
            "currency": inp.currency,
            "late_payment_refunded": self._view.late_payment_refunded if self._view else False,
        }
        if local_db_steps():  # one step: the order's status and its notifications in one transaction
            note = NotifyInput(
                idempotency_key=step_key(workflow.info().workflow_id, "notify"),
                kind=f"checkout.{status}",
                recipients=recipients,
                data=data,
            )
            finish = FinishOrderInput(order=mark, notification=note, payment=payment)
            await db_step(NotifyActivities.finish_order, finish)
            self._update(status=status, failure_code=code)
            self._accept()
            return
        assert payment is None  # only runs with local steps record it with the order
        await db_step(OrderActivities.mark_order, mark)
        self._update(status=status, failure_code=code)
        self._accept()
        await notify(f"checkout.{status}", recipients, data, step="notify")
