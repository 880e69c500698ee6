"""The daily reconciliation (gateway vs payments DB vs ledger clearing entries) and ledger verify's I5."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.client import Client

from db.migrate import upgrade_all
from db.verify import CLEARING_CHECK, verify_ledger
from payweave.contracts.operations import ReconcileInput, ReconciliationReport
from payweave.devstack.postgres import PostgresServer
from payweave.settings import Settings
from tests.conftest import Users
from tests.e2e.test_checkouts import checkout, until_done
from tests.e2e.test_refunds import refund, until_refund_done
from tests.helpers import create_wallet, deposit
from workflows.reconciliation import ReconciliationWorkflow


async def reconcile(temporal: Client, settings: Settings) -> ReconciliationReport:
    return await temporal.execute_workflow(
        ReconciliationWorkflow.run,
        ReconcileInput(window_hours=1, page_size=25),
        id=f"reconciliation-test-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal_task_queue,
    )


async def test_an_injected_mismatch_is_reported_and_clean_payments_are_not(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    merchant, m_auth = users.new("merchant")
    await create_wallet(http, m_auth)
    _, auth = users.new()
    w = await create_wallet(http, auth)
    clean = await deposit(http, auth, w["id"], 4_000)
    tampered = await deposit(http, auth, w["id"], 1_500)
    paid = await checkout(
        http,
        auth,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 6_000,
            "payment": {
                "method": "split",
                "wallet_amount": 2_000,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        },
    )
    assert (await until_done(http, auth, paid["id"]))["status"] == "paid"
    r = await refund(http, m_auth, paid["id"], {"amount": 3_000, "reason": "damaged"})
    assert (await until_refund_done(http, m_auth, r.json()["id"]))["status"] == "succeeded"

    # Someone "fixed" a payment by hand: the gateway was paid and the wallet credited, the row says expired.
    async with payments_engine.begin() as conn:
        await conn.execute(
            text("UPDATE payments SET status = 'expired' WHERE id = :id"), {"id": tampered["id"]}
        )
    try:
        report = await reconcile(temporal, settings)
        assert report.payments_checked >= 3
        found = {(m.kind, m.expected, m.actual) for m in report.mismatches if m.payment_id == tampered["id"]}
        assert ("status", "gateway succeeded", "payments DB expired") in found, report.mismatches
        assert ("clearing_captures", "0", "1") in found
        assert ("clearing_balance", "0", "-1500") in found
        # The clean deposit and the paid-then-partly-refunded split checkout reconcile.
        assert not [m for m in report.mismatches if m.payment_id in (clean["id"], f"pay_{paid['id']}")]
        async with payments_engine.connect() as conn:
            stored = {
                row.kind
                for row in await conn.execute(
                    text(
                        "SELECT kind FROM reconciliation_mismatches WHERE run_id = :run AND payment_id = :p"
                    ),
                    {"run": report.run_id, "p": tampered["id"]},
                )
            }
        assert stored == {kind for kind, _, _ in found}
    finally:
        async with payments_engine.begin() as conn:
            await conn.execute(
                text("UPDATE payments SET status = 'succeeded' WHERE id = :id"), {"id": tampered["id"]}
            )
    assert (await verify_ledger(wallet_engine, payments_engine)).ok


async def test_ledger_verify_i5_finds_a_kept_payment_without_its_clearing_capture(
    postgres: PostgresServer,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    wallet_db, payments_db = f"i5_wallet_{suffix}", f"i5_payments_{suffix}"
    for name in (wallet_db, payments_db):
        postgres.create_database(name)
    wallet_url, payments_url = postgres.url(wallet_db), postgres.url(payments_db)
    await upgrade_all(wallet_url, payments_url)
    wallet, payments = create_async_engine(wallet_url), create_async_engine(payments_url)
    try:
        async with payments.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO payments (id, idempotency_key, workflow_id, purpose, owner, wallet_id, gateway, "
                    "gateway_payment_id, amount, currency, status, credited) VALUES "
                    "('dep_1', 'k:payment', 'deposit:a:1', 'deposit', 'a', 'wal_a', 'stripe', 'pi_1', 500, 'USD', "
                    "'succeeded', true)"
                )
            )
        report = await verify_ledger(wallet, payments)
        assert [v.check for v in report.violations] == [CLEARING_CHECK]
        assert report.violations[0].rows == [{"payment": "dep_1", "clearing_captures": 0}]
    finally:
        await wallet.dispose()
        await payments.dispose()
