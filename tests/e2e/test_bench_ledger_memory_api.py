"""B3, B6 and B7 at tiny sizes on the test stack: each does its work and reports it (no timing asserted: speed
lives in the benchmark, not in tests)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.bench import api, ledger, memory
from payweave.bench.harness import Stack
from payweave.devstack.postgres import PostgresServer
from payweave.settings import Settings


async def test_ledger_bench_posts_balanced_journals_both_ways(
    temporal: Client,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = Stack(settings, temporal, wallet_engine, payments_engine, postgres)
    result = await ledger.postings(stack, journals=40, concurrency=4)
    assert result.id == "B3" and result.value > 0 and result.baseline > 0
    async with wallet_engine.connect() as conn:
        kinds = dict(
            (
                await conn.execute(
                    text(
                        "SELECT j.kind, sum(e.amount) FROM journals j JOIN entries e ON e.journal_id = j.id "
                        "WHERE j.kind IN ('bench_transfer', 'bench_raw') GROUP BY j.kind"
                    )
                )
            ).all()
        )
    assert kinds == {"bench_transfer": 0, "bench_raw": 0}


async def test_memory_bench_opens_then_cancels_the_checkouts(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = Stack(settings, temporal, wallet_engine, payments_engine, postgres)
    result = await memory.open_checkouts(stack, n=3, concurrency=3)
    assert result.id == "B6" and result.value > 0 and result.baseline > 0
    assert result.details["open_checkouts"] == 3
    async with payments_engine.connect() as conn:
        statuses = (
            await conn.execute(
                text("SELECT status, count(*) FROM orders WHERE id LIKE :p GROUP BY status"),
                {"p": f"ord_bench_{result.details['run']}_%"},
            )
        ).all()
    assert [tuple(s) for s in statuses] == [("canceled", 3)]


async def test_api_bench_measures_checkout_start_and_webhook_ack(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
) -> None:
    stack = Stack(settings, temporal, wallet_engine, payments_engine, postgres)
    results = await api.latency(stack, seconds=0.2, rate=20)
    assert [r.id for r in results] == ["B7", "B7-webhook"]
    assert all(r.p99_ms is not None and r.p99_ms > 0 and r.baseline > 0 for r in results)
    # The API tier is measured with no worker on its queue; a worker then runs every checkout it started, and
    # the co-located run's too.
    checkout = results[0].details
    assert (checkout["errors"], checkout["sagas_paid_afterwards"]) == (0, 4)
    assert (checkout["colocated_errors"], checkout["colocated_sagas_paid"]) == (0, 4)
    async with payments_engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM webhook_events WHERE event_id LIKE :p"),
                {"p": f"evt_bench_{results[0].details['run']}_%"},
            )
        ).scalar_one()
    assert stored == 4
