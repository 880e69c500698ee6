"""QUALITY R18, the bank test: 20 wallets, concurrent clients moving money between them through the API
(some to frozen wallets, which roll back), while PostgreSQL backends of both databases are terminated
(``pg_terminate_backend``) again and again and the worker is SIGKILLed and restarted. Every read sees I3 (no
wallet below zero, held ≤ balance); at the end every transfer is terminal, the total is conserved and I1–I4 hold.

The transfers run on their own task queue, served only by a ``payweave worker`` child process (the chaos
harness's ``WorkerProcess``) behind an API served in-process for that queue, so the worker can be SIGKILLed
without killing the test. Reduced by default (300 transfers, 8 clients, 6 terminations, 2 kills);
``PAYWEAVE_CHAOS_SCALE=full`` runs QUALITY.md's size (10,000 transfers, 32 clients, 60 terminations, 20 kills)."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from db.verify import Report, verify_ledger
from payweave.chaos import (
    ChaosStack,
    WorkerProcess,
    kill_and_restart,
    settings_env,
    start_api,
    terminate_backends,
)
from tests.conftest import Users, eventually
from tests.helpers import create_wallet
from tests.reliability.conftest import fund

pytestmark = pytest.mark.reliability
FULL = os.environ.get("PAYWEAVE_CHAOS_SCALE") == "full"
TRANSFERS, CLIENTS, TERMINATIONS, KILLS = (10_000, 32, 60, 20) if FULL else (300, 8, 6, 2)
WALLETS, FROZEN, FUNDS = 20, 2, 50_000


@asynccontextmanager
async def killable_api(stack: ChaosStack) -> AsyncIterator[tuple[WorkerProcess, httpx.AsyncClient]]:
    """A worker child on a fresh task queue, and a client of an API that starts the sagas on that queue."""
    assert stack.temporal_address is not None
    settings = stack.settings.model_copy(update={"temporal_task_queue": f"r18-{uuid.uuid4().hex[:8]}"})
    worker = WorkerProcess(
        settings_env(settings, temporal_address=stack.temporal_address),
        stack.log_dir / f"{settings.temporal_task_queue}.log",
    )
    worker.start()
    stop_api = None
    try:

        async def polling() -> bool:
            return worker.ready()

        await eventually(polling, timeout=60)
        url, stop_api = await start_api(settings, stack.temporal_address)
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=100, keepalive_expiry=30)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            yield worker, http
    finally:
        worker.stop()
        if stop_api is not None:
            await stop_api()


async def test_r18_bank_transfers_conserve_money_while_backends_and_workers_die(
    chaos_stack: ChaosStack, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    # The mid-flight verifier has engines of its own, without a pool: a connection terminated under it is
    # simply gone, never handed to the test's other queries.
    settings = chaos_stack.settings
    verify = (
        create_async_engine(settings.wallet_database_url, poolclass=NullPool),
        create_async_engine(settings.payments_database_url, poolclass=NullPool),
    )
    try:
        async with killable_api(chaos_stack) as (worker, http):
            await _bank(http, worker, users, wallet_engine, payments_engine, verify)
    finally:
        for engine in verify:
            await engine.dispose()


async def _bank(
    http: httpx.AsyncClient,
    worker: WorkerProcess,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    verify: tuple[AsyncEngine, AsyncEngine],
) -> None:
    owners: list[tuple[str, dict[str, str], str]] = []
    for _ in range(WALLETS):
        sub, auth = users.new()
        owners.append((sub, auth, (await create_wallet(http, auth))["id"]))
    ids = [w for _, _, w in owners]

    await fund(wallet_engine, dict.fromkeys(ids, FUNDS))
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

    verified: list[Report] = []
    interrupted: list[int] = []

    async def verifier() -> None:
        """The whole ``verify_ledger`` again and again while transfers are mid-flight: what the per-test check
        (tests/reliability/invariants.py) relies on — every check holds at any committed point."""
        while done_posts < TRANSFERS:
            try:
                report = await verify_ledger(*verify)
            except DBAPIError:  # its own backend was terminated (also while connecting): look again
                interrupted.append(1)
                continue
            assert report.ok, report.violations
            verified.append(report)

    # Terminations and kills spread evenly over the posts, in one seeded order.
    faults = [(k * TRANSFERS // (TERMINATIONS + 1), "terminate") for k in range(1, TERMINATIONS + 1)]
    faults += [((2 * k - 1) * TRANSFERS // (2 * KILLS + 1), "kill") for k in range(1, KILLS + 1)]
    kills: list[int] = []

    async def chaos() -> int:
        killed = 0
        for threshold, fault in sorted(faults):
            await eventually(lambda t=threshold: _ready(t), timeout=600)
            if fault == "terminate":
                killed += await terminate_backends(wallet_engine)
            else:
                kills.append(await kill_and_restart(worker, rng.uniform(0, 0.5)))
        return killed

    async def _ready(threshold: int) -> bool:
        return done_posts >= threshold

    results = await asyncio.gather(*(client(n) for n in range(CLIENTS)), reader(), verifier(), chaos())
    assert results[-1] > 0  # backends really died
    assert verified, f"verify_ledger never completed mid-flight ({len(interrupted)} interrupted)"
    print(
        f"R18: {TRANSFERS} posts ({len(started)} transfers started), {reads_checked} wallet reads with I3,"
        f" {len(verified)} whole verify_ledger runs mid-flight all clean ({len(interrupted)} cut off by a"
        f" termination), {results[-1]} backends terminated"
        f" in {TERMINATIONS} rounds, worker SIGKILLed {len(kills)} times (pids {kills})"
    )
    assert len(kills) == KILLS and worker.kills == KILLS  # and so did the worker
    assert reads_checked > 0
    # A backend killed mid-request is retried on a fresh connection (db.engine.in_transaction): never a 5xx.
    assert not server_errors, server_errors[:3]

    async def all_terminal() -> bool:
        for auth, transfer_id in started:
            r = await http.get(f"/v1/transfers/{transfer_id}", headers=auth)
            if r.status_code != 200 or r.json()["status"] not in ("completed", "failed"):
                return False
        return True

    # An activity abandoned by a killed worker is retried once its start-to-close timeout passed (30 s).
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
