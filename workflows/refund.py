"""RefundWorkflow — full, partial, proportional across tenders (ARCHITECTURE §5.4).

reserve (book the refund on the order under its row lock: never above what was paid)
  → wallet part: journal merchant −w, buyer +w
  → gateway part: journal merchant −g, gateway_clearing +g, then the gateway refund (same key on every
    attempt: one refund), awaited until the gateway confirms it
  → succeeded.   Any refusal → compensations in reverse (journals reversed, booking released) → failed.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from activities.wallet import LedgerActivities
    from payweave.contracts.activities import (
        FinishRefundInput,
        GatewayRefundRef,
        PostingSpec,
        PostJournalInput,
        RefundGatewayPaymentInput,
        ReserveRefundInput,
        ReverseJournalInput,
    )
    from payweave.contracts.sagas import RefundInput, RefundStatus
    from payweave.ids import step_key

from workflows.saga import (
    AwaitsOperator,
    OperatorDesk,
    Saga,
    business_code,
    db_step,
    finish_forward,
    forward,
    gateway_step,
    notify,
    set_search_attributes,
)

REFUND_POLL = timedelta(seconds=30)


class _GatewayRefused(Exception):
    pass


@workflow.defn
class RefundWorkflow(AwaitsOperator):
    def __init__(self) -> None:
        self._view: RefundStatus | None = None
        self._accepted: RefundStatus | None = None
        self._desk = OperatorDesk()  # a reversal that gives up waits here for an operator

    @workflow.query
    def status(self) -> RefundStatus | None:
        return self._view

    @workflow.update
    async def accepted(self) -> RefundStatus:
        """The refund once booked (or refused, e.g. ``refund_exceeds_paid``): what the API answers."""
        await workflow.wait_condition(lambda: self._accepted is not None)
        assert self._accepted is not None
        return self._accepted

    def _update(self, **changes: object) -> None:
        assert self._view is not None
        self._view = self._view.model_copy(update=changes)
        if "status" in changes:
            set_search_attributes(status=str(changes["status"]))

    @workflow.run
    async def run(self, inp: RefundInput) -> RefundStatus:
        wf_id = workflow.info().workflow_id
        self._view = RefundStatus(
            id=inp.refund_id,
            order_id=inp.order_id,
            status="pending",
            amount=inp.amount,
            policy=inp.policy,
            reason=inp.reason,
        )
        set_search_attributes(
            kind="refund",
            status="pending",
            owner=inp.requester,
            currency=inp.currency,
            order_id=inp.order_id,
            amount=inp.amount,
        )
        try:
            booked = await db_step(
                OrderActivities.reserve_refund,
                ReserveRefundInput(
                    refund_id=inp.refund_id,
                    workflow_id=wf_id,
                    order_id=inp.order_id,
                    requester=inp.requester,
                    amount=inp.amount,
                    policy=inp.policy,
                    reason=inp.reason,
                ),
            )
        except BaseException as exc:
            code = business_code(exc)
            if code is None:
                raise
            self._update(status="failed", failure_code=code)
            self._accepted = self._view
            return self._view
        self._update(
            amount=booked.amount, wallet_amount=booked.wallet_amount, gateway_amount=booked.gateway_amount
        )
        set_search_attributes(amount=booked.amount)
        self._accepted = self._view

        saga = Saga(self._desk)
        try:
            # 1. The merchant pays the whole refund at once (its funds are checked once, up front): the wallet
            #    part waits in transit, the card part goes back to gateway_clearing.
            debit = [PostingSpec(wallet_id=inp.merchant_wallet_id, amount=-booked.amount)]
            if booked.wallet_amount:
                debit.append(PostingSpec(system="transit", amount=booked.wallet_amount))
            if booked.gateway_amount:
                debit.append(PostingSpec(system="gateway_clearing", amount=booked.gateway_amount))
            await self._post(saga, inp, "debit", debit)
            gateway_refund_id = None
            # 2. The card refund. Once asked for, it is followed to its end, whatever cancellation comes; a refusal
            #    undoes step 1 entirely, and nothing else has moved yet.
            if booked.gateway_amount:
                gateway_refund_id = await finish_forward(
                    self._refund_at_gateway(inp, wf_id, booked.gateway_amount)
                )
                saga.discard("reverse_debit")  # the card was refunded: step 1 must never be undone now
            # 3. The wallet part reaches the buyer, applied like a compensation: a wallet frozen meanwhile still
            #    gets its own money back, so nothing can strand it in transit after the card was refunded.
            if booked.wallet_amount:
                assert inp.buyer_wallet_id is not None
                wallet_part = PostJournalInput(
                    idempotency_key=step_key(wf_id, "wallet"),
                    kind="refund",
                    currency=inp.currency,
                    postings=[
                        PostingSpec(system="transit", amount=-booked.wallet_amount),
                        PostingSpec(wallet_id=inp.buyer_wallet_id, amount=booked.wallet_amount),
                    ],
                    description=f"refund {inp.refund_id} of order {inp.order_id} (wallet)",
                    saga_id=wf_id,
                    compensation=True,
                )
                if gateway_refund_id is None:  # nothing irreversible yet: a refusal undoes step 1
                    await finish_forward(db_step(LedgerActivities.post_journal, wallet_part))
                else:  # the card was refunded: the wallet part can only be finished (or resolved by hand)
                    await forward(
                        self._desk,
                        "refund_wallet_part",
                        lambda: db_step(LedgerActivities.post_journal, wallet_part),
                    )
        except BaseException as exc:
            code = "gateway_refund_failed" if isinstance(exc, _GatewayRefused) else business_code(exc)
            await saga.compensate()
            await db_step(
                OrderActivities.finish_refund,
                FinishRefundInput(refund_id=inp.refund_id, status="failed", failure_code=code or "canceled"),
            )
            self._update(status="failed", failure_code=code or "canceled")
            await notify("refund.failed", [inp.requester], self._event(), step="notify")
            if code is None:
                raise
            return self._view
        done = FinishRefundInput(
            refund_id=inp.refund_id, status="succeeded", gateway_refund_id=gateway_refund_id
        )
        # The money has moved: recording it can only be finished (or resolved by hand), never undone.
        await forward(self._desk, "finish_refund", lambda: db_step(OrderActivities.finish_refund, done))
        self._update(status="succeeded", gateway_refund_id=gateway_refund_id)
        await notify("refund.succeeded", [inp.requester, *inp.notify], self._event(), step="notify")
        return self._view

    def _event(self) -> dict[str, object]:
        assert self._view is not None
        return self._view.model_dump(mode="json")

    async def _post(self, saga: Saga, inp: RefundInput, part: str, postings: list[PostingSpec]) -> None:
        wf_id = workflow.info().workflow_id
        key = step_key(wf_id, part)
        saga.add(
            f"reverse_{part}",
            lambda: db_step(
                LedgerActivities.reverse_journal,
                ReverseJournalInput(
                    original_key=key,
                    idempotency_key=step_key(wf_id, f"reverse_{part}"),
                    kind="refund_reversal",
                    description=f"refund {inp.refund_id} not completed{self._desk.note}",
                    saga_id=wf_id,
                ),
            ),
        )
        await db_step(
            LedgerActivities.post_journal,
            PostJournalInput(
                idempotency_key=key,
                kind="refund",
                currency=inp.currency,
                postings=postings,
                description=f"refund {inp.refund_id} of order {inp.order_id} ({part})",
                saga_id=wf_id,
                # The order's gateway payment, when the card part goes back through gateway_clearing (I5);
                # the reversal copies it.
                external_ref=f"pay_{inp.order_id}"
                if any(p.system == "gateway_clearing" for p in postings)
                else None,
            ),
        )

    async def _refund_at_gateway(self, inp: RefundInput, wf_id: str, amount: int) -> str:
        assert inp.gateway is not None and inp.gateway_payment_id is not None
        refund = await gateway_step(
            PaymentActivities.refund_gateway_payment,
            RefundGatewayPaymentInput(
                payment_id=inp.order_id,
                idempotency_key=step_key(wf_id, "gateway_refund"),
                gateway=inp.gateway,
                gateway_payment_id=inp.gateway_payment_id,
                amount=amount,
                reason=inp.reason,
            ),
        )
        while refund.status == "pending":  # confirmed by look-up (a webhook only makes this sooner)
            await workflow.sleep(REFUND_POLL)
            refund = await gateway_step(
                PaymentActivities.get_gateway_refund,
                GatewayRefundRef(gateway=inp.gateway, refund_id=refund.id),
            )
        if refund.status == "failed":
            raise _GatewayRefused(refund.id)
        return refund.id
