"""Transfers: wallet to wallet through TransferWorkflow (rolled back when the destination refuses)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.service import RPCError

from api.deps import CurrentUser, IdempotencyKey, PaymentsDB, SettingsDep, TemporalDep, WalletDB
from api.routers.wallets import visible_wallet
from api.sagas import claim_key, recorded_answer, saga_ids, start_saga, workflow_id_for
from api.schemas import CreateTransfer, TransferOut
from db.engine import in_transaction
from db.repositories import payments as payments_repo
from payweave import search_attributes as sa
from payweave.contracts.payments import Transfer
from payweave.contracts.sagas import TransferInput
from payweave.errors import CurrencyMismatch, NotFound, ValidationFailed, WalletNotFound
from workflows.transfer import TransferWorkflow

router = APIRouter(prefix="/v1/transfers", tags=["transfers"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TransferOut)
async def create_transfer(
    body: CreateTransfer,
    user: CurrentUser,
    key: IdempotencyKey,
    wallets: WalletDB,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> TransferOut:
    """Move money from one of your wallets to any wallet. A destination that cannot be credited (frozen,
    closed, missing, other currency) fails the transfer with ``failure_code`` and restores the source."""
    user.require("transfers:create")
    if body.from_wallet_id == body.to_wallet_id:
        raise ValidationFailed("source and destination are the same wallet")
    source = await visible_wallet(wallets, user, body.from_wallet_id)
    if source.owner != user.sub:
        raise WalletNotFound(f"wallet {body.from_wallet_id} not found")
    if source.currency != body.currency:
        raise CurrencyMismatch(f"wallet {source.id} holds {source.currency}, not {body.currency}")

    wf_id, transfer_id = saga_ids("transfer", user.sub, key, "tr")
    first = await claim_key(payments, wf_id=wf_id, resource_id=transfer_id, scope="transfer", body=body)

    async def recorded() -> Transfer | None:
        return await in_transaction(payments, lambda conn: payments_repo.get_transfer(conn, transfer_id))

    done = await recorded_answer(first, temporal, wf_id, recorded)
    if done is not None:  # a finished transfer whose history is gone: never run it again
        response.headers["Location"] = f"/v1/transfers/{transfer_id}"
        return TransferOut.model_validate(done.model_dump())
    arg = TransferInput(
        transfer_id=transfer_id,
        owner=user.sub,
        from_wallet_id=body.from_wallet_id,
        to_wallet_id=body.to_wallet_id,
        amount=body.amount,
        currency=body.currency,
        description=body.description,
    )
    await start_saga(
        temporal,
        run=TransferWorkflow.run,
        arg=arg,
        wf_id=wf_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=sa.initial(
            kind="transfer", owner=user.sub, amount=body.amount, currency=body.currency
        ),
    )
    response.headers["Location"] = f"/v1/transfers/{transfer_id}"
    # The answer is what was accepted, the same for every retry of this key; GET shows the progress.
    return TransferOut(
        id=transfer_id, status="pending", **body.model_dump(exclude={"currency"}), currency=body.currency
    )


@router.get("/{transfer_id}", response_model=TransferOut)
async def get_transfer(
    transfer_id: str, user: CurrentUser, payments: PaymentsDB, temporal: TemporalDep
) -> TransferOut:
    async def work(conn: AsyncConnection) -> Transfer | None:
        return await payments_repo.get_transfer(conn, transfer_id)

    transfer = await in_transaction(payments, work) if len(transfer_id) <= 64 else None
    if transfer is not None:
        if transfer.owner != user.sub and not user.can("sagas:read_any"):
            raise NotFound("transfer not found")
        return TransferOut.model_validate(transfer.model_dump())
    wf_id = await workflow_id_for(payments, transfer_id) if len(transfer_id) <= 64 else None
    if wf_id is None or not wf_id.startswith("transfer:"):
        raise NotFound("transfer not found")
    try:
        view = await temporal.get_workflow_handle(wf_id).query(TransferWorkflow.status)
    except RPCError:
        raise NotFound("transfer not found") from None
    if view is None or (view.owner != user.sub and not user.can("sagas:read_any")):
        raise NotFound("transfer not found")
    return TransferOut.model_validate(view.model_dump())
