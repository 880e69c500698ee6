"""Group buys: a factory's offer, buyers joining into escrow, the MOQ decision (GroupBuyWorkflow).

Reads come from the database (the counts there are exact); joins, production-complete and cancel are
workflow Updates, so the workflow decides what is allowed in which state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Response, status
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentUser, IdempotencyKey, PaymentsDB, SettingsDep, TemporalDep, WalletDB
from api.sagas import claim_key, execute_update_across_runs, saga_ids, start_saga
from api.schemas import CancelGroupBuyIn, CreateGroupBuy, JoinGroupBuy
from api.security import Principal
from db.engine import in_transaction
from db.repositories import group_buys as repo
from db.repositories import ledger
from payweave import search_attributes as sa
from payweave.contracts.group_buy import (
    CancelGroupBuy,
    GroupBuyInput,
    GroupBuyTerms,
    GroupBuyView,
    JoinRequest,
    Participation,
)
from payweave.errors import (
    BUSINESS_ERRORS,
    Conflict,
    GatewayDeclined,
    InvalidAmount,
    NotFound,
    PayweaveError,
    ServiceUnavailable,
    SessionClosed,
    ValidationFailed,
    WalletClosed,
    WalletFrozen,
    WalletNotFound,
)
from payweave.ids import derived_id
from payweave.money import MAX_AMOUNT
from workflows.group_buy import GroupBuyWorkflow

router = APIRouter(prefix="/v1/group-buys", tags=["group buys"])
MAX_HORIZON = timedelta(days=366)


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationFailed(f"{field} needs a time zone (e.g. 2026-12-01T12:00:00Z)")
    return value.astimezone(UTC)


async def _view(payments: PaymentsDB, group_buy_id: str) -> GroupBuyView:
    view = (
        await in_transaction(payments, lambda c: repo.get_view(c, group_buy_id))
        if len(group_buy_id) <= 64
        else None
    )
    if view is None:
        raise NotFound(f"group buy {group_buy_id} not found")
    return view


async def _session(payments: PaymentsDB, group_buy_id: str) -> tuple[str, str]:
    found = (
        await in_transaction(payments, lambda c: repo.workflow_id_of(c, group_buy_id))
        if len(group_buy_id) <= 64
        else None
    )
    if found is None:
        raise NotFound(f"group buy {group_buy_id} not found")
    return found


def _update_failure(exc: BaseException, gone: PayweaveError) -> PayweaveError:
    """What a refused Update means for the caller, as a domain error with its stable code."""
    cause: BaseException | None = exc.cause if isinstance(exc, WorkflowUpdateFailedError) else None
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    if isinstance(cause, ApplicationError) and cause.type:
        error_type = BUSINESS_ERRORS.get(cause.type)
        if error_type is None and cause.type.startswith(("payment_", "card_", "gateway_")):
            error_type = GatewayDeclined
        return (error_type or Conflict)(cause.message)
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        return gone  # the session's workflow has finished
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError | RPCError):
        return ServiceUnavailable()
    return Conflict("the group buy refused the request")


async def _update(
    temporal: TemporalDep,
    wf_id: str,
    update: Any,
    arg: Any = None,
    *,
    gone: PayweaveError,
    update_id: str | None = None,
) -> Any:
    handle = temporal.get_workflow_handle(wf_id)
    args = () if arg is None else (arg,)
    try:
        return await execute_update_across_runs(
            handle, update, *args, update_id=update_id or str(uuid.uuid4())
        )
    except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as exc:
        raise _update_failure(exc, gone) from None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=GroupBuyView)
async def create_group_buy(
    body: CreateGroupBuy,
    user: CurrentUser,
    key: IdempotencyKey,
    wallets: WalletDB,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> GroupBuyView:
    """Open a group buy (factory): buyers pay into escrow until the deadline; the MOQ decides."""
    user.require("group_buys:manage")
    now = datetime.now(UTC)
    deadline = _aware(body.deadline, "deadline")
    production = _aware(body.production_deadline, "production_deadline") if body.production_deadline else None
    if not now < deadline <= now + MAX_HORIZON:
        raise ValidationFailed("deadline must be in the future, within a year")
    if production is not None and not deadline < production <= deadline + MAX_HORIZON:
        raise ValidationFailed("production_deadline must come after the deadline, within a year of it")
    if body.max_units is not None and body.max_units < body.moq:
        raise ValidationFailed("max_units cannot be below the MOQ")
    if body.unit_price * (body.max_units or body.moq) > MAX_AMOUNT:
        raise InvalidAmount("unit_price × units is too large")
    factory_wallet = await in_transaction(wallets, lambda c: ledger.find_wallet(c, user.sub, body.currency))
    if factory_wallet is None or factory_wallet.kind != "customer":
        raise WalletNotFound(f"the factory needs a {body.currency} wallet to receive the escrow")

    wf_id, group_buy_id = saga_ids("groupbuy", user.sub, key, "gb")
    await claim_key(payments, wf_id=wf_id, resource_id=group_buy_id, scope="group_buy", body=body)
    terms = GroupBuyTerms(
        group_buy_id=group_buy_id,
        factory=user.sub,
        factory_wallet_id=factory_wallet.id,
        product=body.product,
        unit_price=body.unit_price,
        currency=body.currency,
        moq=body.moq,
        max_units=body.max_units,
        deadline=deadline,
        production_deadline=production,
        fee_bps=settings.group_buy_fee_bps,
        close_when_moq_reached=body.close_when_moq_reached,
    )
    # The row first (keyed), so the session is readable the moment we answer; the workflow's record is a no-op.
    await in_transaction(payments, lambda c: repo.create_group_buy(c, terms=terms, workflow_id=wf_id))
    view = await _view(payments, group_buy_id)
    if view.status == "open":
        await start_saga(
            temporal,
            run=GroupBuyWorkflow.run,
            arg=GroupBuyInput(terms=terms),
            wf_id=wf_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=sa.initial(
                kind="group_buy", owner=user.sub, amount=0, currency=body.currency, status="open"
            ),
        )
    response.headers["Location"] = f"/v1/group-buys/{group_buy_id}"
    return view


@router.get("/{group_buy_id}", response_model=GroupBuyView)
async def get_group_buy(group_buy_id: str, user: CurrentUser, payments: PaymentsDB) -> GroupBuyView:
    """A group buy is a public offer: any signed-in user sees its terms and counts."""
    return await _view(payments, group_buy_id)


def _wallet_usable(wallet: Any) -> None:
    if wallet is None or wallet.kind != "customer":
        raise WalletNotFound("you have no wallet in this currency")
    if wallet.status == "frozen":
        raise WalletFrozen("your wallet is frozen")
    if wallet.status == "closed":
        raise WalletClosed("your wallet is closed")


@router.post(
    "/{group_buy_id}/participants", status_code=status.HTTP_202_ACCEPTED, response_model=Participation
)
async def join_group_buy(
    group_buy_id: str,
    body: JoinGroupBuy,
    user: CurrentUser,
    key: IdempotencyKey,
    wallets: WalletDB,
    payments: PaymentsDB,
    temporal: TemporalDep,
    response: Response,
) -> Participation:
    """Join with ``quantity`` units: from the wallet (a hold until the decision) or through a gateway (pay into
    escrow; ``next_action`` says how). Refused: ``session_closed``, ``already_joined``, ``validation_error``."""
    user.require("group_buys:join")
    view = await _view(payments, group_buy_id)
    wf_id, factory = await _session(payments, group_buy_id)
    if factory == user.sub:
        raise ValidationFailed("the factory cannot join its own group buy")
    pay = body.payment
    if pay.method == "wallet" and (pay.gateway or pay.payment_method):
        raise ValidationFailed("a wallet payment takes no gateway or payment_method")
    if view.unit_price * body.quantity > MAX_AMOUNT:
        raise InvalidAmount("unit_price × quantity is too large")
    wallet = await in_transaction(wallets, lambda c: ledger.find_wallet(c, user.sub, view.currency))
    if pay.method == "wallet":
        _wallet_usable(wallet)
    participant_key = f"{wf_id}:join:{user.sub}:{key}"
    participant_id = derived_id("gbp", participant_key)
    first = await claim_key(
        payments, wf_id=participant_key, resource_id=participant_id, scope="group_buy_join", body=body
    )
    response.headers["Location"] = f"/v1/group-buys/{group_buy_id}/participants/me"
    if not first:
        done = await in_transaction(payments, lambda c: repo.get_participant(c, participant_id))
        if done is not None and done.status not in ("joining", "declined", "expired"):
            return Participation.model_validate(done.model_dump())
    if view.status != "open" or datetime.now(UTC) >= view.deadline:
        raise SessionClosed("the group buy no longer takes participants")
    request = JoinRequest(
        request_key=key,
        buyer=user.sub,
        quantity=body.quantity,
        method=pay.method,
        gateway=(pay.gateway or "stripe") if pay.method == "gateway" else None,
        payment_method=pay.payment_method,
        wallet_id=wallet.id if wallet is not None and wallet.kind == "customer" else None,
    )
    joined: Participation = await _update(
        temporal,
        wf_id,
        GroupBuyWorkflow.join,
        request,
        gone=SessionClosed("the group buy no longer takes participants"),
        update_id=f"join:{participant_id}",
    )
    return Participation.model_validate(joined.model_dump())


@router.get("/{group_buy_id}/participants/me", response_model=Participation)
async def my_participation(group_buy_id: str, user: CurrentUser, payments: PaymentsDB) -> Participation:
    mine = (
        await in_transaction(payments, lambda c: repo.find_participation(c, group_buy_id, user.sub))
        if len(group_buy_id) <= 64
        else None
    )
    if mine is None:
        raise NotFound("you have not joined this group buy")
    return Participation.model_validate(mine.model_dump())


@router.get("/{group_buy_id}/participants", response_model=list[Participation])
async def list_participants(
    group_buy_id: str,
    user: CurrentUser,
    payments: PaymentsDB,
    limit: int = Query(default=100, gt=0, le=1000),
    starting_after: int = Query(
        default=0, ge=0, description="the seq of the last participant of the previous page"
    ),
) -> list[Participation]:
    """Every participant (the factory that owns the session, or an operator)."""
    await _owned(payments, user, group_buy_id, "sagas:read_any")
    rows = await in_transaction(
        payments,
        lambda c: repo.list_participants(c, group_buy_id=group_buy_id, after_seq=starting_after, limit=limit),
    )
    return [Participation.model_validate(r.model_dump()) for r in rows]


async def _owned(payments: PaymentsDB, user: Principal, group_buy_id: str, operator_permission: str) -> str:
    wf_id, factory = await _session(payments, group_buy_id)
    if factory != user.sub and not user.can(operator_permission):
        raise NotFound(f"group buy {group_buy_id} not found")
    return wf_id


@router.post("/{group_buy_id}/production-complete", response_model=GroupBuyView)
async def production_complete(
    group_buy_id: str, user: CurrentUser, payments: PaymentsDB, temporal: TemporalDep
) -> GroupBuyView:
    """The factory made the goods: escrow is released to its wallet, minus the platform fee."""
    user.require("group_buys:manage")
    wf_id = await _owned(payments, user, group_buy_id, "group_buys:manage_any")
    await _update(
        temporal, wf_id, GroupBuyWorkflow.production_complete, gone=Conflict("the group buy has finished")
    )
    return await _view(payments, group_buy_id)


@router.post("/{group_buy_id}/cancel", response_model=GroupBuyView)
async def cancel_group_buy(
    group_buy_id: str,
    user: CurrentUser,
    payments: PaymentsDB,
    temporal: TemporalDep,
    body: CancelGroupBuyIn | None = None,
) -> GroupBuyView:
    """Cancel before completion (the factory, or an operator): every participant is refunded."""
    wf_id = await _owned(payments, user, group_buy_id, "group_buys:cancel_any")
    if not (user.can("group_buys:manage") or user.can("group_buys:cancel_any")):
        raise NotFound(f"group buy {group_buy_id} not found")
    reason = body.reason if body else "canceled"
    await _update(
        temporal,
        wf_id,
        GroupBuyWorkflow.cancel,
        CancelGroupBuy(reason=reason, by=user.sub),
        gone=Conflict("the group buy has finished"),
    )
    return await _view(payments, group_buy_id)
