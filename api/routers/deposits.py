"""Deposits: gateway → wallet through DepositWorkflow."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.service import RPCError

from api.deps import CurrentUser, IdempotencyKey, PaymentsDB, SettingsDep, TemporalDep, WalletDB
from api.routers.wallets import visible_wallet
from api.sagas import accepted_snapshot, claim_key, recorded_answer, saga_ids, start_saga, workflow_id_for
from api.schemas import CreateDeposit, DepositOut
from db.engine import in_transaction
from db.repositories import payments as payments_repo
from payweave import search_attributes as sa
from payweave.contracts.payments import Payment
from payweave.contracts.sagas import DepositInput, DepositStatus
from payweave.errors import (
    CurrencyMismatch,
    NotFound,
    ServiceUnavailable,
    WalletClosed,
    WalletFrozen,
    WalletNotFound,
)
from workflows.deposit import DepositWorkflow

router = APIRouter(tags=["deposits"])


def deposit_out(d: DepositStatus | Payment) -> DepositOut:
    data = d.model_dump()
    data["wallet_id"] = data.get("wallet_id") or ""
    return DepositOut.model_validate(data)


@router.post(
    "/v1/wallets/{wallet_id}/deposits", status_code=status.HTTP_202_ACCEPTED, response_model=DepositOut
)
async def create_deposit(
    wallet_id: str,
    body: CreateDeposit,
    user: CurrentUser,
    key: IdempotencyKey,
    wallets: WalletDB,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> DepositOut:
    """Start a deposit. With ``payment_method`` the payment is confirmed server-side; otherwise
    ``next_action`` carries the Stripe client secret the payer confirms with."""
    user.require("deposits:create")
    wallet = await visible_wallet(wallets, user, wallet_id)
    if wallet.owner != user.sub:  # visible (an operator reads any wallet) but not theirs to pay into
        raise WalletNotFound(f"wallet {wallet_id} not found")
    if body.currency is not None and body.currency != wallet.currency:
        raise CurrencyMismatch(f"wallet {wallet_id} holds {wallet.currency}")
    if wallet.status == "frozen":
        raise WalletFrozen(f"wallet {wallet_id} is frozen")
    if wallet.status == "closed":
        raise WalletClosed(f"wallet {wallet_id} is closed")

    wf_id, deposit_id = saga_ids("deposit", user.sub, key, "dep")
    first = await claim_key(
        payments, wf_id=wf_id, resource_id=deposit_id, scope=f"deposit:{wallet_id}", body=body
    )

    async def recorded() -> Payment | None:
        return await in_transaction(payments, lambda conn: payments_repo.get_payment(conn, deposit_id))

    done = await recorded_answer(first, temporal, wf_id, recorded)
    if done is not None:
        response.headers["Location"] = f"/v1/deposits/{deposit_id}"
        return deposit_out(done)
    arg = DepositInput(
        deposit_id=deposit_id,
        owner=user.sub,
        wallet_id=wallet_id,
        amount=body.amount,
        currency=wallet.currency,
        gateway=body.gateway,
        payment_method=body.payment_method,
        expires_in_seconds=body.expires_in or settings.deposit_expiry_seconds,
    )
    handle = await start_saga(
        temporal,
        run=DepositWorkflow.run,
        arg=arg,
        wf_id=wf_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=sa.initial(
            kind="deposit", owner=user.sub, amount=body.amount, currency=wallet.currency
        ),
    )
    accepted: DepositStatus | Payment | None = await accepted_snapshot(
        handle, DepositWorkflow.accepted, DepositStatus, ("accepted_view", "status")
    )
    if accepted is None:
        accepted = await recorded()
    if accepted is None:
        raise ServiceUnavailable("the deposit was accepted but its state is not readable yet")
    response.headers["Location"] = f"/v1/deposits/{deposit_id}"
    return deposit_out(accepted)


@router.get("/v1/deposits/{deposit_id}", response_model=DepositOut)
async def get_deposit(
    deposit_id: str, user: CurrentUser, payments: PaymentsDB, temporal: TemporalDep
) -> DepositOut:
    async def work(conn: AsyncConnection) -> Payment | None:
        return await payments_repo.get_payment(conn, deposit_id)

    payment = await in_transaction(payments, work) if len(deposit_id) <= 64 else None
    if payment is not None and payment.purpose == "deposit":
        if payment.owner != user.sub and not user.can("sagas:read_any"):
            raise NotFound("deposit not found")
        return deposit_out(payment)
    # Not recorded yet (the saga's first step is still running): ask the workflow.
    wf_id = await workflow_id_for(payments, deposit_id) if len(deposit_id) <= 64 else None
    if wf_id is None or not wf_id.startswith("deposit:"):
        raise NotFound("deposit not found")
    try:
        view = await temporal.get_workflow_handle(wf_id).query(DepositWorkflow.status)
    except RPCError:
        raise NotFound("deposit not found") from None
    if view is None or (view.owner != user.sub and not user.can("sagas:read_any")):
        raise NotFound("deposit not found")
    return deposit_out(view)
