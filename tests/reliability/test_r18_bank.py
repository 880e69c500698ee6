"""QUALITY R18, the bank test: 20 wallets, concurrent clients moving money between them through the API
(some to frozen wallets, which roll back), while PostgreSQL backends of both databases are terminated
(``pg_terminate_backend``) again and again. Every read sees I3 (no wallet below zero, held ≤ balance); at the
end every transfer is terminal, the total is conserved and I1–I4 hold.

Reduced by default (300 transfers, 8 clients, 6 terminations); ``PAYWEAVE_CHAOS_SCALE=full`` runs QUALITY.md's
size (10,000 transfers, 32 clients, 60 terminations). Worker kills are R1's (tests/reliability/test_r1_chaos.py):
here the worker is the in-process fixture worker, which cannot be SIGKILLed without killing the test."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import in_transaction
from db.repositories import ledger
from db.verify import verify_ledger
from payweave.contracts.ledger import Posting
from tests.conftest import Users, eventually
from tests.helpers import create_wallet

pytestmark = pytest.mark.reliability
FULL = os.environ.get("PAYWEAVE_CHAOS_SCALE") == "full"
TRANSFERS, CLIENTS, TERMINATIONS = (10_000, 32, 60) if FULL else (300, 8, 6)
WALLETS, FROZEN, FUNDS = 20, 2, 50_000


async def _terminate_backends(engine: AsyncEngine) -> int:
    """Kill every other backend of both payweave databases (the API's, the worker's, the tests')."""
    async with engine.connect() as conn:
        killed = (
            await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname IN ('payweave_wallet', 'payweave_payments') AND pid <> pg_backend_pid()"
                )
            )
        ).scalar_one()
    return int(killed)


async def test_r18_bank_transfers_conserve_money_while_backends_die(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    owners: list[tuple[str, dict[str, str], str]] = []
    for _ in range(WALLETS):
        sub, auth = users.new()
        owners.append((sub, auth, (await create_wallet(http, auth))["id"]))
    ids = [w for _, _, w in owners]

    async def fund(conn: Any) -> None:
        fees = await ledger.ensure_system_wallet(conn, "platform_fees", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"r18:{uuid.uuid4().hex}:funding",
            kind="test_funding",
            currency="USD",
            postings=[Posting(wallet_id=fees, amount=-FUNDS * WALLETS)]
            + [Posting(wallet_id=w, amount=FUNDS) for w in ids],
        )

    await in_transaction(wallet_engine, fund)
    _, operator = users.new("operator")
    for _, _, w in owners[:FROZEN]:
        assert (await http.post(f"/v1/wallets/{w}/freeze", headers=operator)).status_code == 200

    rng = random.Random(18)
    plan = [rng.sample(range(WALLETS), 2) + [rng.randint(1, 700)] for _ in range(TRANSFERS)]
    started: list[tuple[dict[str, str], str]] = []
    done_posts = 0
    reads_checked = 0
    server_errors: list[str] = []

    async def post_transfer(src: int, dst: int, amount: int) -> None:
        nonlocal done_posts
        _, auth, from_id = owners[src]
        headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
        body = {"from_wallet_id": from_id, "to_wallet_id": ids[dst], "amount": amount, "currency": "USD"}
        while True:  # a client retries with the same key until it gets an answer
            r = await http.post("/v1/transfers", json=body, headers=headers)
            if r.status_code < 500:
                break
            server_errors.append(r.text)
        if r.status_code == 202:
            started.append((auth, r.json()["id"]))
        else:  # refused up front: only a frozen source, or funds the source no longer has
            assert r.json()["code"] in ("wallet_frozen", "insufficient_funds"), r.text
        done_posts += 1

    async def client(n: int) -> None:
        for src, dst, amount in plan[n::CLIENTS]:
            await post_transfer(src, dst, amount)

    async def reader() -> None:
        nonlocal reads_checked
        while done_posts < TRANSFERS:
            _, auth, w = owners[rng.randrange(WALLETS)]
            r = await http.get(f"/v1/wallets/{w}", headers=auth)
            if r.status_code >= 500:
                server_errors.append(r.text)
            if r.status_code == 200:
                body = r.json()
                assert body["balance"] >= 0 and 0 <= body["held"] <= body["balance"], body  # I3 on every read
                reads_checked += 1

    async def chaos() -> int:
        killed = 0
        for k in range(1, TERMINATIONS + 1):
            await eventually(lambda k=k: _ready(k * TRANSFERS // (TERMINATIONS + 1)), timeout=600)
            killed += await _terminate_backends(wallet_engine)
        return killed

    async def _ready(threshold: int) -> bool:
        return done_posts >= threshold

    results = await asyncio.gather(*(client(n) for n in range(CLIENTS)), reader(), chaos())
    assert results[-1] > 0  # backends really died
    assert reads_checked > 0
    # A backend killed mid-request is retried on a fresh connection (db.engine.in_transaction): never a 5xx.
    assert not server_errors, server_errors[:3]

    async def all_terminal() -> bool:
        for auth, transfer_id in started:
            r = await http.get(f"/v1/transfers/{transfer_id}", headers=auth)
            if r.status_code != 200 or r.json()["status"] not in ("completed", "failed"):
                return False
        return True

    await eventually(all_terminal, timeout=300)
    async with wallet_engine.connect() as conn:
        total, negative = (
            await conn.execute(
                text(
                    "SELECT sum(balance), count(*) FILTER (WHERE balance < 0) FROM wallets WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).one()
    assert (total, negative) == (FUNDS * WALLETS, 0)  # conserved: nothing created, nothing lost
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations
