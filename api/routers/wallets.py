"""Wallets: create, list mine, read with balance/held/available, entries (cursor pagination), freeze."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.deps import CurrentUser, WalletDB
from api.schemas import CreateWallet, EntryOut, EntryPage, WalletOut
from api.security import Principal
from db.engine import in_transaction
from db.repositories import ledger
from payweave.contracts.ledger import Wallet
from payweave.errors import WalletNotFound
from payweave.ids import new_id

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])


def wallet_out(w: Wallet) -> WalletOut:
    return WalletOut(
        id=w.id,
        owner=w.owner,
        currency=w.currency.strip(),
        status=w.status,
        balance=w.balance,
        held=w.held,
        available=w.available,
        created_at=w.created_at,
    )


async def visible_wallet(engine: AsyncEngine, user: Principal, wallet_id: str) -> Wallet:
    """The wallet if this user may see it; otherwise 404, never 403 (no probing for others' wallets)."""

    async def work(conn: AsyncConnection) -> Wallet | None:
        return await ledger.get_wallet(conn, wallet_id)

    wallet = await in_transaction(engine, work) if len(wallet_id) <= 64 else None
    if (
        wallet is None
        or wallet.kind != "customer"
        or (wallet.owner != user.sub and not user.can("wallets:read_any"))
    ):
        raise WalletNotFound(f"wallet {wallet_id} not found")
    return wallet


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WalletOut)
async def create_wallet(body: CreateWallet, user: CurrentUser, db: WalletDB, response: Response) -> WalletOut:
    """One wallet per (owner, currency): asking again returns the existing wallet with 200."""
    user.require("wallets:own")

    async def work(conn: AsyncConnection) -> tuple[Wallet, bool]:
        return await ledger.create_wallet(
            conn, wallet_id=new_id("wal"), owner=user.sub, currency=body.currency
        )

    wallet, created = await in_transaction(db, work)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/wallets/{wallet.id}"
    return wallet_out(wallet)


@router.get("", response_model=list[WalletOut])
async def list_my_wallets(user: CurrentUser, db: WalletDB) -> list[WalletOut]:
    async def work(conn: AsyncConnection) -> list[Wallet]:
        return await ledger.list_wallets(conn, user.sub)

    return [wallet_out(w) for w in await in_transaction(db, work)]


@router.get("/{wallet_id}", response_model=WalletOut)
async def get_wallet(wallet_id: str, user: CurrentUser, db: WalletDB) -> WalletOut:
    return wallet_out(await visible_wallet(db, user, wallet_id))


@router.get("/{wallet_id}/entries", response_model=EntryPage)
async def list_entries(
    wallet_id: str,
    user: CurrentUser,
    db: WalletDB,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="entry id cursor")] = None,
) -> EntryPage:
    await visible_wallet(db, user, wallet_id)

    async def work(conn: AsyncConnection) -> list[EntryOut]:
        rows = await ledger.list_entries(conn, wallet_id, limit=limit + 1, starting_after=starting_after)
        return [
            EntryOut(
                id=e.id,
                journal_id=e.journal_id,
                amount=e.amount,
                currency=e.currency.strip(),
                balance_after=e.balance_after,
                kind=e.journal_kind,
                description=e.description,
                created_at=e.created_at,
            )
            for e in rows
        ]

    rows = await in_transaction(db, work)
    page = rows[:limit]
    has_more = len(rows) > limit
    return EntryPage(data=page, has_more=has_more, next_cursor=page[-1].id if has_more and page else None)


async def _set_status(db: AsyncEngine, user: Principal, wallet_id: str, new_status: str) -> WalletOut:
    user.require("wallets:freeze")
    await visible_wallet(db, user, wallet_id)

    async def work(conn: AsyncConnection) -> Wallet:
        return await ledger.set_wallet_status(conn, wallet_id, new_status)

    return wallet_out(await in_transaction(db, work))


@router.post("/{wallet_id}/freeze", response_model=WalletOut)
async def freeze_wallet(wallet_id: str, user: CurrentUser, db: WalletDB) -> WalletOut:
    """Operator only: no debits or credits; transfers to it fail and roll back."""
    return await _set_status(db, user, wallet_id, "frozen")


@router.post("/{wallet_id}/unfreeze", response_model=WalletOut)
async def unfreeze_wallet(wallet_id: str, user: CurrentUser, db: WalletDB) -> WalletOut:
    return await _set_status(db, user, wallet_id, "active")
