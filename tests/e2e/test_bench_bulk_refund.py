"""``payweave bench bulk-refund`` measures the real BulkRefundWorkflow: run here at a tiny size on the test stack
to prove it does the work and reports it (no timing asserted: speed lives in the benchmark, not in tests)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.bench import bulk_refund
from payweave.bench.harness import Stack
from payweave.bench.report import write_json
from payweave.devstack.postgres import PostgresServer
from payweave.settings import Settings


async def test_bulk_refund_bench_refunds_every_participant_and_reports_b4(
    temporal: Client,
    worker: None,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    stack = Stack(settings, temporal, wallet_engine, payments_engine, postgres)
    wallet = await bulk_refund.wallet_participants(stack, 40)
    gateway = await bulk_refund.gateway_participants(stack, 4)
    assert (wallet.id, wallet.details["participants"]) == ("B4", 40)
    assert (gateway.id, gateway.details["participants"]) == ("B4-gateway", 4)
    assert wallet.value > 0 and wallet.baseline > 0 and gateway.value > 0
    async with payments_engine.connect() as conn:
        statuses = dict(
            (
                await conn.execute(
                    text(
                        "SELECT p.status, count(*) FROM group_buy_participants p "
                        "WHERE p.group_buy_id LIKE 'gb_bench_%' GROUP BY p.status"
                    )
                )
            ).all()
        )
    assert statuses == {"released": 40, "refunded": 4}
    out = tmp_path / "bench.json"
    write_json([wallet, gateway], out)
    report = json.loads(out.read_text())
    assert {b["id"] for b in report["benchmarks"]} == {"B4", "B4-gateway"}
    assert set(report["benchmarks"][0]) >= {"value", "unit", "baseline", "ratio", "target", "meets_target"}
