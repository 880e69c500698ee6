"""Refunds of paid orders through RefundWorkflow: full, partial, proportional across tenders."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import CurrentUser, IdempotencyKey, PaymentsDB, SettingsDep, TemporalDep
from api.routers.checkouts import visible_order
from api.sagas import accepted_snapshot, claim_key, recorded_answer, saga_ids, start_saga
from api.schemas import CreateRefund, RefundOut
from db.engine import in_transaction
from db.repositories import commerce
from db.repositories import payments as payments_repo
from payweave import errors
from payweave import search_attributes as sa
from payweave.contracts.commerce import Refund
from payweave.contracts.sagas import RefundInput, RefundStatus
from workflows.refund import RefundWorkflow

router = APIRouter(tags=["refunds"])


@router.post(
    "/v1/checkouts/{order_id}/refunds", status_code=status.HTTP_202_ACCEPTED, response_model=RefundOut
)
async def create_refund(
    order_id: str,
    body: CreateRefund,
    user: CurrentUser,
    key: IdempotencyKey,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> RefundOut:
    """The merchant (or an operator) refunds a paid order, all of it or part. Refunds of one order never add up
    to more than was paid: a refund that does not fit is refused with ``refund_exceeds_paid``."""
    order = await visible_order(payments, user, order_id)
    if user.sub != order.merchant and not user.can("refunds:create_any"):
        raise errors.Forbidden("only the merchant or an operator can refund an order")
    if order.group_buy_id is not None:
        raise errors.Conflict("a group-buy order is refunded by its group buy (cancel the session)")
    if order.status not in commerce.REFUNDABLE:
        raise errors.Conflict(f"checkout is {order.status}, not refundable")

    async def gateway_object(conn: AsyncConnection) -> str | None:
        payment = await payments_repo.get_payment(conn, f"pay_{order.id}")
        return payment.gateway_payment_id if payment else None

    gateway_payment_id = await in_transaction(payments, gateway_object) if order.gateway_amount else None
    wf_id, refund_id = saga_ids("refund", user.sub, key, "re")
    first = await claim_key(
        payments, wf_id=wf_id, resource_id=refund_id, scope=f"refund:{order_id}", body=body
    )

    async def recorded() -> Refund | None:
        return await in_transaction(payments, lambda conn: commerce.get_refund(conn, refund_id))

    done = await recorded_answer(first, temporal, wf_id, recorded)
    if done is not None:
        response.headers["Location"] = f"/v1/refunds/{refund_id}"
        return RefundOut.model_validate(done.model_dump())
    arg = RefundInput(
        refund_id=refund_id,
        order_id=order.id,
        requester=user.sub,
        amount=body.amount,
        policy=body.policy,
        reason=body.reason,
        currency=order.currency,
        buyer_wallet_id=order.buyer_wallet_id,
        merchant_wallet_id=order.merchant_wallet_id,
        gateway=order.gateway,
        gateway_payment_id=gateway_payment_id,
        notify=[order.buyer],
    )
    handle = await start_saga(
        temporal,
        run=RefundWorkflow.run,
        arg=arg,
        wf_id=wf_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=sa.initial(
            kind="refund", owner=user.sub, amount=body.amount or 0, currency=order.currency
        ),
    )
    accepted = await accepted_snapshot(handle, RefundWorkflow.accepted, RefundStatus, ("status",))
    if accepted is None:
        booked = await recorded()
        if booked is None:
            raise errors.ServiceUnavailable("the refund was accepted but its state is not readable yet")
        response.headers["Location"] = f"/v1/refunds/{refund_id}"
        return RefundOut.model_validate(booked.model_dump())
    if accepted.status == "failed" and accepted.failure_code in errors.BUSINESS_ERRORS:
        raise errors.BUSINESS_ERRORS[accepted.failure_code](f"refund refused: {accepted.failure_code}")
    if accepted.status == "failed" and await recorded() is None:
        # Refused before it was booked, for another reason: a refund view pointing at a Location that answers
        # 404 would contradict itself, so this is the problem too.
        raise errors.RefundRefused(f"refund refused before it was booked: {accepted.failure_code}")
    response.headers["Location"] = f"/v1/refunds/{refund_id}"
    return RefundOut.model_validate(accepted.model_dump())


@router.get("/v1/refunds/{refund_id}", response_model=RefundOut)
async def get_refund(refund_id: str, user: CurrentUser, payments: PaymentsDB) -> RefundOut:
    async def work(conn: AsyncConnection) -> Refund | None:
        return await commerce.get_refund(conn, refund_id)

    refund = await in_transaction(payments, work) if len(refund_id) <= 64 else None
    if refund is None:
        raise errors.NotFound(f"refund {refund_id} not found")
    await visible_order(payments, user, refund.order_id)  # buyer, merchant or operator; else 404
    return RefundOut.model_validate(refund.model_dump())
