"""B3 (QUALITY.md): ledger postings/s through the wallet repository (``ledger.post_journal`` in ``in_transaction``,
the code every money-moving activity runs), 8 concurrent, ↔ the same rows written by a raw asyncpg transaction
(INSERT journal, then UPDATE balance + INSERT entry per posting) at the same concurrency on the same database.

Each of the 8 clients moves money back and forth between its own pair of wallets, so the figure is the per-posting
cost of the code path, not lock contention (B5 measures a hot wallet). Each side runs twice, in the order
repository, raw, raw, repository, so a change in the shared machine's load during the run weighs on both alike."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import in_transaction
from db.repositories import ledger
from payweave.bench.common import fund_wallets, tag
from payweave.bench.harness import Stack
from payweave.bench.report import Result
from payweave.contracts.ledger import Posting

POSTINGS_PER_JOURNAL = 2


async def _pairs(stack: Stack, run: str, concurrency: int) -> list[tuple[str, str]]:
    owners = [f"bench-{run}-l{i}" for i in range(2 * concurrency)]
    wallets = await fund_wallets(stack, owners, 1_000_000)
    ids = [wallets[o] for o in owners]
    return list(zip(ids[0::2], ids[1::2], strict=True))


async def _repository(stack: Stack, journals: int, concurrency: int) -> float:
    """Seconds to post ``journals`` (a multiple of ``concurrency``) through the repository."""
    run = tag()
    pairs = await _pairs(stack, run, concurrency)

    async def client(c: int) -> None:
        a, b = pairs[c]
        for i in range(journals // concurrency):
            src, dst = (a, b) if i % 2 == 0 else (b, a)

            async def post(conn: AsyncConnection, i: int = i, src: str = src, dst: str = dst) -> None:
                await ledger.post_journal(
                    conn,
                    idempotency_key=f"bench:{run}:{c}:{i}",
                    kind="bench_transfer",
                    currency="USD",
                    postings=[Posting(wallet_id=src, amount=-1), Posting(wallet_id=dst, amount=1)],
                )

            await in_transaction(stack.wallet_engine, post)

    # The raw pool below opens its connections before its clock starts: open as many in the engine's pool, as a
    # running service (or B1/B2 before this in `bench all`) would have. Nothing is posted.
    async def connect(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT 1"))

    await asyncio.gather(*(in_transaction(stack.wallet_engine, connect) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return time.perf_counter() - started


async def _raw(stack: Stack, journals: int, concurrency: int) -> float:
    """Seconds to write the same rows for ``journals`` journals with raw asyncpg."""
    run = tag()
    pairs = await _pairs(stack, run, concurrency)
    pool = await asyncpg.create_pool(
        stack.postgres.dsn("payweave_wallet"), min_size=concurrency, max_size=concurrency
    )
    try:

        async def client(c: int) -> None:
            a, b = pairs[c]
            async with pool.acquire() as conn:
                for i in range(journals // concurrency):
                    src, dst = (a, b) if i % 2 == 0 else (b, a)
                    async with conn.transaction():
                        jid = await conn.fetchval(
                            "INSERT INTO journals (idempotency_key, kind, currency) "
                            "VALUES ($1, 'bench_raw', 'USD') RETURNING id",
                            f"bench:raw:{run}:{c}:{i}",
                        )
                        for wallet, amount in ((src, -1), (dst, 1)):
                            after = await conn.fetchval(
                                "UPDATE wallets SET balance = balance + $2 WHERE id = $1 RETURNING balance",
                                wallet,
                                amount,
                            )
                            await conn.execute(
                                "INSERT INTO entries (journal_id, wallet_id, amount, currency, balance_after) "
                                "VALUES ($1, $2, $3, 'USD', $4)",
                                jid,
                                wallet,
                                amount,
                                after,
                            )

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await pool.close()


async def postings(stack: Stack, journals: int = 4_000, concurrency: int = 8) -> Result:
    # Half the journals each time, repository, raw, raw, repository (see the module docstring).
    half = max(journals // 2 // concurrency, 1) * concurrency
    seconds = {"repository": 0.0, "raw": 0.0}
    for side in ("repository", "raw", "raw", "repository"):
        seconds[side] += await (_repository if side == "repository" else _raw)(stack, half, concurrency)
    value, baseline = (2 * half * POSTINGS_PER_JOURNAL / seconds[side] for side in ("repository", "raw"))
    return Result(
        id="B3",
        name=f"ledger postings via the wallet repository, {concurrency} concurrent",
        value=value,
        unit="postings/s",
        baseline=baseline,
        ratio=value / baseline,
        target="ratio ≥ 0.5 vs raw asyncpg",
        meets_target=value / baseline >= 0.5,
        details={
            "journals": 2 * half,
            "order": "repository, raw, raw, repository (half the journals each)",
            "postings_per_journal": POSTINGS_PER_JOURNAL,
            "baseline": "raw asyncpg: INSERT journal + (UPDATE balance + INSERT entry) per posting, one transaction",
        },
    )
