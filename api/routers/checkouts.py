"""Checkouts: wallet, gateway or split payment through CheckoutWorkflow; cancel as a workflow Update."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import CurrentUser, IdempotencyKey, PaymentsDB, SettingsDep, TemporalDep, WalletDB
from api.sagas import accepted_snapshot, claim_key, recorded_answer, saga_ids, start_saga
from api.schemas import CancelCheckoutIn, CheckoutOut, CreateCheckout
from api.security import Principal
from db.engine import in_statement, in_transaction
from db.repositories import commerce, ledger
from db.repositories import payments as payments_repo
from payweave import search_attributes as sa
from payweave.contracts.commerce import Order, OrderItem
from payweave.contracts.ledger import Wallet
from payweave.contracts.payments import Payment
from payweave.contracts.sagas import CancelCheckout, CheckoutInput, CheckoutStatus
from payweave.errors import (
    Conflict,
    CurrencyMismatch,
    InvalidAmount,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
    WalletClosed,
    WalletFrozen,
    WalletNotFound,
)
from payweave.money import MAX_AMOUNT
from workflows.checkout import OPEN, CheckoutWorkflow

router = APIRouter(prefix="/v1/checkouts", tags=["checkouts"])


async def _priced_items(payments: PaymentsDB, body: CreateCheckout) -> list[OrderItem]:
    quantities: dict[str, int] = defaultdict(int)
    for item in body.items or []:
        quantities[item.product_id] += item.quantity

    async def work(conn: AsyncConnection) -> list[OrderItem]:
        priced = []
        for product_id, quantity in quantities.items():
            product = await commerce.get_product(conn, product_id)
            if product is None:
                raise NotFound(f"product {product_id} not found")
            if product.merchant != body.merchant_id:
                raise ValidationFailed(f"product {product_id} is not sold by {body.merchant_id}")
            if product.currency != body.currency:
                raise CurrencyMismatch(f"product {product_id} is priced in {product.currency}")
            priced.append(OrderItem(product_id=product_id, quantity=quantity, unit_price=product.price))
        return priced

    return await in_transaction(payments, work)


async def _wallets(wallets: WalletDB, owners: list[str], currency: str) -> list[Wallet | None]:
    """Each owner's wallet in ``currency`` (None where there is none): reads on one connection, no transaction."""

    async def work(conn: AsyncConnection) -> list[Wallet | None]:
        return [await ledger.find_wallet(conn, owner, currency) for owner in owners]

    return await in_statement(wallets, work)


def _usable(wallet: Wallet | None, what: str) -> Wallet:
    if wallet is None:
        raise WalletNotFound(f"{what} has no wallet in this currency")
    if wallet.status == "frozen":
        raise WalletFrozen(f"{what}'s wallet is frozen")
    if wallet.status == "closed":
        raise WalletClosed(f"{what}'s wallet is closed")
    return wallet


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=CheckoutOut)
async def create_checkout(
    body: CreateCheckout,
    user: CurrentUser,
    key: IdempotencyKey,
    wallets: WalletDB,
    payments: PaymentsDB,
    temporal: TemporalDep,
    settings: SettingsDep,
    response: Response,
) -> CheckoutOut:
    """Pay a merchant for ``items`` (stock is reserved) or a plain ``amount``: from the wallet, through a gateway,
    or split between them. ``next_action`` tells the payer what to do for the gateway part."""
    user.require("checkouts:create")
    if (body.items is None) == (body.amount is None):
        raise ValidationFailed("give either items or amount")
    if body.merchant_id == user.sub:
        raise ValidationFailed("buyer and merchant are the same")
    items = await _priced_items(payments, body) if body.items else []
    total = sum(i.quantity * i.unit_price for i in items) if items else int(body.amount or 0)
    if total > MAX_AMOUNT:
        raise InvalidAmount("the order total is too large")
    pay = body.payment
    with_wallet = pay.method in ("wallet", "split")
    found = await _wallets(wallets, [body.merchant_id, *([user.sub] if with_wallet else [])], body.currency)
    merchant_wallet = found[0]
    if merchant_wallet is None or merchant_wallet.kind != "customer":
        raise ValidationFailed(f"merchant {body.merchant_id} cannot receive {body.currency}")
    buyer_wallet: Wallet | None = _usable(found[1], "the buyer") if with_wallet else None
    if pay.method == "wallet":
        if pay.gateway or pay.wallet_amount or pay.payment_method:
            raise ValidationFailed("a wallet payment takes no gateway, wallet_amount or payment_method")
        wallet_amount = total
    elif pay.method == "gateway":
        if pay.wallet_amount:
            raise ValidationFailed("a gateway payment takes no wallet_amount")
        wallet_amount = 0
    else:
        assert buyer_wallet is not None
        wallet_amount = (
            pay.wallet_amount if pay.wallet_amount is not None else min(buyer_wallet.available, total)
        )
        if wallet_amount > total:
            raise InvalidAmount("wallet_amount is larger than the order total")
    gateway = (pay.gateway or "stripe") if wallet_amount < total else None

    wf_id, order_id = saga_ids("checkout", user.sub, key, "ord")
    expires_in = body.expires_in or settings.deposit_expiry_seconds
    arg = CheckoutInput(
        order_id=order_id,
        buyer=user.sub,
        merchant=body.merchant_id,
        currency=body.currency,
        items=items,
        total=total,
        method=pay.method,
        wallet_amount=wallet_amount,
        gateway=gateway,
        payment_method=pay.payment_method,
        buyer_wallet_id=buyer_wallet.id if buyer_wallet else None,
        merchant_wallet_id=merchant_wallet.id,
        expires_in_seconds=expires_in,
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
    )
    # The key is claimed and the order recorded (pending) in one transaction, so the order can be read the
    # moment this request is answered; the saga's own record_order step then finds it.
    first = await claim_key(
        payments, wf_id=wf_id, resource_id=order_id, scope="checkout", body=body, then=_record(arg, wf_id)
    )

    async def recorded() -> Order | None:
        return await in_transaction(payments, lambda conn: commerce.get_order(conn, order_id))

    async def finished() -> Order | None:
        # Only a finished order may stand for its saga: a pending one may never have had its saga started
        # (the first request failed between recording it and starting the saga).
        order = await recorded()
        return order if order is not None and order.status not in OPEN else None

    done = await recorded_answer(first, temporal, wf_id, finished)
    response.headers["Location"] = f"/v1/checkouts/{order_id}"
    if done is not None:
        return await _view(payments, temporal, done)
    handle = await start_saga(
        temporal,
        run=CheckoutWorkflow.run,
        arg=arg,
        wf_id=wf_id,
        task_queue=settings.temporal_task_queue,
        search_attributes=sa.initial(
            kind="checkout", owner=user.sub, amount=total, currency=body.currency, order_id=order_id
        ),
    )
    if first and gateway is None:
        # Nothing for the payer to do (no next_action): answer as soon as the saga is started; its outcome is
        # read with GET (Location). A gateway checkout waits for the saga's answer, which carries next_action.
        return CheckoutOut.model_validate(
            {**arg.model_dump(), "id": order_id, "status": "pending", "gateway_amount": 0}
        )
    accepted = await accepted_snapshot(
        handle, CheckoutWorkflow.accepted, CheckoutStatus, ("accepted_view", "status")
    )
    if accepted is None:
        order = await recorded()
        if order is None:
            raise ServiceUnavailable("the checkout was accepted but its state is not readable yet")
        return await _view(payments, temporal, order)
    return CheckoutOut.model_validate(accepted.model_dump())


def _record(arg: CheckoutInput, wf_id: str) -> Callable[[AsyncConnection], Awaitable[object]]:
    async def work(conn: AsyncConnection) -> Order:
        return await commerce.create_order(
            conn,
            order_id=arg.order_id,
            workflow_id=wf_id,
            buyer=arg.buyer,
            merchant=arg.merchant,
            currency=arg.currency,
            total=arg.total,
            wallet_amount=arg.wallet_amount,
            gateway_amount=arg.total - arg.wallet_amount,
            method=arg.method,
            gateway=arg.gateway,
            buyer_wallet_id=arg.buyer_wallet_id,
            merchant_wallet_id=arg.merchant_wallet_id,
            items=arg.items,
            expires_at=arg.expires_at,
        )

    return work


async def visible_order(payments: PaymentsDB, user: Principal, order_id: str) -> Order:
    async def work(conn: AsyncConnection) -> Order | None:
        return await commerce.get_order(conn, order_id)

    order = await in_transaction(payments, work) if len(order_id) <= 64 else None
    if order is None or user.sub not in (order.buyer, order.merchant) and not user.can("sagas:read_any"):
        raise NotFound(f"checkout {order_id} not found")
    return order


async def _view(payments: PaymentsDB, temporal: TemporalDep, order: Order) -> CheckoutOut:
    if order.status in ("pending", "awaiting_payment"):
        try:
            live = await temporal.get_workflow_handle(order.workflow_id).query(
                "status", result_type=CheckoutStatus
            )
        except RPCError:  # Temporal unreachable or the workflow gone: the database's record stands
            live = None
        if live is not None:
            return CheckoutOut.model_validate(live.model_dump())

    async def work(conn: AsyncConnection) -> Payment | None:
        return await payments_repo.get_payment(conn, f"pay_{order.id}")

    payment = await in_transaction(payments, work) if order.gateway_amount else None
    return CheckoutOut.model_validate(
        {
            **order.model_dump(),
            "gateway_payment_id": payment.gateway_payment_id if payment else None,
            "late_payment_refunded": payment is not None and payment.status == "refunded",
        }
    )


@router.get("/{order_id}", response_model=CheckoutOut)
async def get_checkout(
    order_id: str, user: CurrentUser, payments: PaymentsDB, temporal: TemporalDep
) -> CheckoutOut:
    return await _view(payments, temporal, await visible_order(payments, user, order_id))


@router.post("/{order_id}/cancel", response_model=CheckoutOut)
async def cancel_checkout(
    order_id: str,
    user: CurrentUser,
    payments: PaymentsDB,
    temporal: TemporalDep,
    body: CancelCheckoutIn | None = None,
) -> CheckoutOut:
    """Cancel an unpaid checkout: the hold, the stock and the gateway payment are released. A paid one → 409."""
    order = await visible_order(payments, user, order_id)
    if order.buyer != user.sub and not user.can("sagas:read_any"):
        raise NotFound(f"checkout {order_id} not found")
    if order.status not in ("pending", "awaiting_payment"):
        raise Conflict(f"checkout is {order.status}")
    handle = temporal.get_workflow_handle(order.workflow_id)
    try:
        view = await handle.execute_update(
            CheckoutWorkflow.cancel, CancelCheckout(reason=(body.reason if body else "canceled_by_buyer"))
        )
    except (WorkflowUpdateFailedError, RPCError):
        raise Conflict("checkout can no longer be canceled") from None
    return CheckoutOut.model_validate(view.model_dump())
