"""B1/B2/B5 drive real CheckoutWorkflows: run here at tiny sizes on the test stack to prove every checkout is paid
and the results are reported (no timing asserted: speed lives in the benchmark, not in tests)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.bench import checkout
from payweave.bench.harness import Stack
from payweave.devstack.postgres import PostgresServer
from payweave.settings import Settings


def _stack(
    settings: Settings, temporal: Client, wallet: AsyncEngine, payments: AsyncEngine, pg: PostgresServer
) -> Stack:
    return Stack(settings, temporal, wallet, payments, pg)


async def test_checkout_bench_pays_every_checkout_and_runs_the_bare_baseline(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = _stack(settings, temporal, wallet_engine, payments_engine, postgres)
    result = await checkout.checkout(stack, n=4, concurrency=2)
    assert result.id == "B1" and result.value > 0 and result.baseline > 0
    assert result.details["activities_per_checkout"] >= 3
    assert result.p50_ms is not None and result.p99_ms is not None and result.p99_ms >= result.p50_ms


async def test_split_bench_is_paid_through_the_stripe_webhook(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = _stack(settings, temporal, wallet_engine, payments_engine, postgres)
    result = await checkout.split(stack, b1_rate=1.0, n=3, concurrency=3)
    assert (result.id, result.baseline) == ("B2", 1.0) and result.value > 0


async def test_hot_wallet_bench_credits_one_merchant(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = _stack(settings, temporal, wallet_engine, payments_engine, postgres)
    result = await checkout.hot_wallet(stack, n=5)
    assert result.id == "B5" and result.value > 0 and result.baseline > 0
    async with wallet_engine.connect() as conn:
        balances = (
            await conn.execute(
                text(
                    "SELECT balance FROM wallets WHERE owner LIKE 'bench-%-m%' AND balance > 0 "
                    "ORDER BY balance DESC LIMIT 1"
                )
            )
        ).scalar_one()
    assert balances >= 5 * checkout.PRICE
