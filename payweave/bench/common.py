"""Shared pieces of the benchmarks: funded wallets written straight into the ledger (the thing measured is the
saga, not the set-up), a bounded-concurrency load driver with per-item latencies, percentiles, and the API as a
process of its own on a free port (so localstripe's webhooks reach it over real HTTP)."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import in_transaction
from db.repositories import ledger
from payweave.bench.harness import Stack
from payweave.contracts.ledger import Posting
from payweave.devstack.localstripe_server import configure_webhook
from payweave.settings import Settings
from payweave.tokens import issue_token


def tag() -> str:
    return uuid.uuid4().hex[:8]


def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds, nearest-rank."""
    if not latencies_s:
        return 0.0, 0.0
    ordered = sorted(latencies_s)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))] * 1000

    return rank(0.50), rank(0.99)


async def fund_wallets(stack: Stack, owners: list[str], amount: int) -> dict[str, str]:
    """A customer wallet per owner (id ``wal_<owner>``), each funded with ``amount`` USD (one journal per 2,000)."""

    async def work(conn: AsyncConnection, chunk: list[str]) -> None:
        await conn.execute(
            text(
                "INSERT INTO wallets (id, owner, currency, kind) "
                "SELECT 'wal_' || o, o, 'USD', 'customer' FROM unnest(CAST(:owners AS text[])) AS o"
            ),
            {"owners": chunk},
        )
        if amount:
            fees = await ledger.ensure_system_wallet(conn, "platform_fees", "USD")
            await ledger.post_journal(
                conn,
                idempotency_key=f"bench:funding:{uuid.uuid4().hex}",
                kind="bench_funding",
                currency="USD",
                postings=[Posting(wallet_id=fees, amount=-amount * len(chunk))]
                + [Posting(wallet_id=f"wal_{o}", amount=amount) for o in chunk],
            )

    for start in range(0, len(owners), 2_000):
        chunk = owners[start : start + 2_000]
        await in_transaction(stack.wallet_engine, lambda c, chunk=chunk: work(c, chunk))  # type: ignore[misc]
    return {o: f"wal_{o}" for o in owners}


async def drive(
    n: int, concurrency: int, one: Callable[[int], Awaitable[object]]
) -> tuple[float, list[float]]:
    """Run ``one(i)`` for i < n with at most ``concurrency`` in flight: (elapsed seconds, latency of each)."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(i: int) -> None:
        async with limit:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(n)))
    return time.perf_counter() - started, latencies


@dataclass
class Api:
    url: str
    settings: Settings

    def auth(self, sub: str, *roles: str) -> dict[str, str]:
        token = issue_token(self.settings, sub=sub, roles=list(roles or ("customer",)))
        return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def api_server(stack: Stack) -> AsyncIterator[Api]:
    """The payweave API as production runs it: ``payweave api`` in a process of its own (B7's
    ``api_process``), with localstripe posting its signed webhooks to it."""
    from payweave.bench.api import api_process  # noqa: PLC0415 — api imports this module

    with tempfile.TemporaryDirectory(prefix="payweave-bench-api-") as tmp:
        async with api_process(stack, Path(tmp)) as (url, settings):
            stripe = stack.settings.stripe_api_base
            assert stripe is not None
            hook = (
                stripe,
                f"{url}/v1/webhooks/stripe",
                settings.stripe_webhook_secrets()[0],
                f"bench-{url.rsplit(':', 1)[1]}",
            )
            await asyncio.to_thread(configure_webhook, *hook)
            try:
                yield Api(url, settings)
            finally:
                # localstripe cannot forget a webhook: narrow it to an event that never happens instead.
                await asyncio.to_thread(configure_webhook, *hook, ["bench.never"])
