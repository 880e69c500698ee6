"""Assertions the API tests share: problem+json shape and "nothing was written" read from the databases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

PROBLEM_TYPE_BASE = "https://payweave.dev/problems/"
C = TypeVar("C")


async def run_cases(
    subtests: Any, cases: Mapping[str, C], check: Callable[[C], Awaitable[None]], *, concurrency: int = 16
) -> None:
    """Run independent cases (each with its own fresh users and wallets) concurrently, then report each one
    as a subtest with its own traceback. Sagas cost a few hundred milliseconds each on the dev server; run
    one after another, dozens of cases would take most of a minute."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: C) -> None:
        async with gate:
            await check(case)

    results = await asyncio.gather(*(one(c) for c in cases.values()), return_exceptions=True)
    for case_id, result in zip(cases, results, strict=True):
        with subtests.test(case=case_id):
            if isinstance(result, BaseException):
                raise result


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the stable ``code``; returns the body."""
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "code"} <= body.keys(), body
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] == PROBLEM_TYPE_BASE + code, body
    assert isinstance(body["title"], str) and body["title"], body
    return body


@dataclass(frozen=True)
class OwnerRows:
    """Rows in the payments database that belong to one user."""

    transfers: int
    payments: int
    idempotency_keys: int


async def owner_rows(payments_engine: AsyncEngine, sub: str) -> OwnerRows:
    async with payments_engine.connect() as conn:

        async def count(sql: str) -> int:
            return int((await conn.execute(text(sql), {"sub": sub})).scalar_one())

        return OwnerRows(
            transfers=await count("SELECT count(*) FROM transfers WHERE owner = :sub"),
            payments=await count("SELECT count(*) FROM payments WHERE owner = :sub"),
            # workflow ids are "<kind>:<owner>:<Idempotency-Key>" (payweave.ids.workflow_id)
            idempotency_keys=await count(
                "SELECT count(*) FROM idempotency_keys WHERE split_part(workflow_id, ':', 2) = :sub"
            ),
        )


@dataclass(frozen=True)
class WalletRow:
    balance: int
    held: int
    status: str
    entries: int


async def wallet_row(wallet_engine: AsyncEngine, wallet_id: str) -> WalletRow:
    """The wallet as stored (not as the API reports it), with its number of ledger entries."""
    async with wallet_engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT w.balance, w.held, w.status, (SELECT count(*) FROM entries e WHERE e.wallet_id = w.id) "
                    "FROM wallets w WHERE w.id = :id"
                ),
                {"id": wallet_id},
            )
        ).one()
    return WalletRow(balance=int(row[0]), held=int(row[1]), status=str(row[2]), entries=int(row[3]))


async def wallets_of(wallet_engine: AsyncEngine, sub: str) -> list[str]:
    async with wallet_engine.connect() as conn:
        rows = await conn.execute(text("SELECT id FROM wallets WHERE owner = :sub ORDER BY id"), {"sub": sub})
        return [str(r[0]) for r in rows]


async def key_claimed(payments_engine: AsyncEngine, wf_id: str) -> bool:
    async with payments_engine.connect() as conn:
        row = await conn.execute(
            text("SELECT 1 FROM idempotency_keys WHERE workflow_id = :wf"), {"wf": wf_id}
        )
        return row.first() is not None


async def workflow_exists(temporal: Client, wf_id: str) -> bool:
    """Asks the server directly (describe), so unlike visibility queries it is never stale."""
    try:
        await temporal.get_workflow_handle(wf_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def journals_of_saga(wallet_engine: AsyncEngine, wf_id: str) -> list[str]:
    async with wallet_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind FROM journals WHERE saga_id = :wf ORDER BY id"), {"wf": wf_id}
        )
        return [str(r[0]) for r in rows]
