"""db.engine without pool_pre_ping: a connection the server closed is never handed to a unit of work, and one
that dies during a unit is retried on a fresh connection (QUALITY R18)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_transaction, make_engine
from payweave.settings import Settings


@pytest_asyncio.fixture
async def engine(settings: Settings, migrated: None) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.wallet_database_url, pool_size=3, max_overflow=0)
    yield engine
    await engine.dispose()


async def _backend_pid(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(wallet_engine: AsyncEngine, pids: set[int]) -> None:
    async with wallet_engine.connect() as conn:
        await conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:p AS int[])) AS pid"),
            {"p": sorted(pids)},
        )


async def _pool_pids(engine: AsyncEngine) -> set[int]:
    async def hold(conn: AsyncConnection) -> int:
        pid = await _backend_pid(conn)
        await asyncio.sleep(0.05)  # keep it checked out so the three units get three connections
        return pid

    return set(await asyncio.gather(*(in_transaction(engine, hold) for _ in range(3))))


async def test_pooled_connections_the_server_closed_are_replaced_at_checkout(
    engine: AsyncEngine, wallet_engine: AsyncEngine
) -> None:
    old = await _pool_pids(engine)
    assert len(old) == 3
    await _terminate(wallet_engine, old)
    await asyncio.sleep(0.2)  # the server's goodbye reaches the idle connections
    attempts = 0

    async def work(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        return await _backend_pid(conn)

    assert await in_transaction(engine, work) not in old
    assert attempts == 1  # replaced before the unit ran, not retried after failing
    async with engine.connect() as conn:  # plain connections too (readiness, verify)
        assert await _backend_pid(conn) not in old
    assert not (await _pool_pids(engine)) & old


async def test_a_connection_killed_during_a_unit_is_retried_on_a_fresh_one(
    engine: AsyncEngine, wallet_engine: AsyncEngine
) -> None:
    attempts: list[int] = []

    async def work(conn: AsyncConnection) -> int:
        pid = await _backend_pid(conn)
        attempts.append(pid)
        if len(attempts) == 1:
            await _terminate(wallet_engine, {pid})
            await asyncio.sleep(0.1)
        return int((await conn.execute(text("SELECT 1"))).scalar_one())

    assert await in_transaction(engine, work) == 1
    assert len(attempts) == 2 and attempts[0] != attempts[1]
