"""``payweave ledger verify``: passes on a healthy ledger, fails readably on a corrupted one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from db.migrate import upgrade_all
from payweave.devstack.postgres import PostgresServer
from payweave.settings import Settings


def run_verify(wallet_url: str, payments_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PAYWEAVE_WALLET_DATABASE_URL": wallet_url,
        "PAYWEAVE_PAYMENTS_DATABASE_URL": payments_url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "payweave.cli", "ledger", "verify"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )


async def fresh_databases(postgres: PostgresServer, prefix: str) -> tuple[str, str]:
    """A migrated wallet and payments database of their own (the session's ledger must stay valid)."""
    suffix = uuid.uuid4().hex[:8]
    urls = []
    for name in (f"{prefix}_wallet_{suffix}", f"{prefix}_payments_{suffix}"):
        postgres.create_database(name)
        urls.append(postgres.url(name))
    await upgrade_all(urls[0], urls[1])
    return urls[0], urls[1]


async def test_verify_passes_on_the_test_ledger(settings: Settings, wallet_engine: object) -> None:
    result = await asyncio.to_thread(run_verify, settings.wallet_database_url, settings.payments_database_url)
    assert result.returncode == 0, result.stderr
    assert "ledger OK" in result.stderr


async def test_verify_fails_and_explains_on_a_corrupted_database(postgres: PostgresServer) -> None:
    wallet_url, payments_url = await fresh_databases(postgres, "corrupt")
    engine = create_async_engine(wallet_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO wallets (id, owner, currency, kind, balance) VALUES "
                    "('sys_gateway_clearing_usd', 'system:gateway_clearing', 'USD', 'system', -500), "
                    "('wal_victim', 'victim', 'USD', 'customer', 500)"
                )
            )
            jid = (
                await conn.execute(
                    text(
                        "INSERT INTO journals (idempotency_key, kind, currency) VALUES ('k1', 'deposit', 'USD') "
                        "RETURNING id"
                    )
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO entries (journal_id, wallet_id, amount, currency, balance_after) VALUES "
                    "(:j, 'sys_gateway_clearing_usd', -500, 'USD', -500), (:j, 'wal_victim', 500, 'USD', 500)"
                ),
                {"j": jid},
            )
        assert (await asyncio.to_thread(run_verify, wallet_url, payments_url)).returncode == 0
        async with engine.begin() as conn:  # money appears from nowhere: balance no longer matches entries
            await conn.execute(text("UPDATE wallets SET balance = balance + 1 WHERE id = 'wal_victim'"))
    finally:
        await engine.dispose()
    result = await asyncio.to_thread(run_verify, wallet_url, payments_url)
    assert result.returncode == 1
    assert "ledger INVALID" in result.stderr
    assert "I2 balance equals sum of entries" in result.stderr
    assert "wal_victim" in result.stderr


async def test_verify_reports_a_finished_refund_that_left_money_in_transit(postgres: PostgresServer) -> None:
    """The transit check covers refunds as well as transfers: a refund recorded as finished whose wallet part
    was debited into ``transit`` but never paid out to the buyer is reported, naming the refund's saga."""
    wallet_url, payments_url = await fresh_databases(postgres, "transit")
    saga = "refund:merchant:stuck"
    wallets, payments = create_async_engine(wallet_url), create_async_engine(payments_url)
    try:
        async with payments.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO orders (id, workflow_id, buyer, merchant, currency, total, wallet_amount, "
                    "gateway_amount, method, merchant_wallet_id, status) VALUES ('ord_1', 'checkout:1', 'buyer', "
                    "'shop', 'USD', 800, 800, 0, 'wallet', 'wal_shop', 'paid')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO refunds (id, workflow_id, order_id, requester, amount, wallet_amount, "
                    "gateway_amount, policy, reason, status) VALUES ('rfd_1', :saga, 'ord_1', 'shop', 300, 300, "
                    "0, 'proportional', 'damaged', 'pending')"
                ),
                {"saga": saga},
            )
        async with wallets.begin() as conn:  # the shop was paid 800; the refund debits 300 of it into transit
            await conn.execute(
                text(
                    "INSERT INTO wallets (id, owner, currency, kind, balance) VALUES "
                    "('sys_gateway_clearing_usd', 'system:gateway_clearing', 'USD', 'system', -800), "
                    "('sys_transit_usd', 'system:transit', 'USD', 'system', 300), "
                    "('wal_shop', 'shop', 'USD', 'customer', 500)"
                )
            )
            for key, saga_id, legs in (
                ("paid", None, [("sys_gateway_clearing_usd", -800, -800), ("wal_shop", 800, 800)]),
                (f"{saga}:debit", saga, [("wal_shop", -300, 500), ("sys_transit_usd", 300, 300)]),
            ):
                jid = (
                    await conn.execute(
                        text(
                            "INSERT INTO journals (idempotency_key, kind, currency, saga_id) "
                            "VALUES (:key, 'refund', 'USD', :saga) RETURNING id"
                        ),
                        {"key": key, "saga": saga_id},
                    )
                ).scalar_one()
                for wallet_id, amount, after in legs:
                    await conn.execute(
                        text(
                            "INSERT INTO entries (journal_id, wallet_id, amount, currency, balance_after) "
                            "VALUES (:j, :w, :a, 'USD', :after)"
                        ),
                        {"j": jid, "w": wallet_id, "a": amount, "after": after},
                    )
        # In flight (pending), money in transit is expected: not a violation.
        assert (await asyncio.to_thread(run_verify, wallet_url, payments_url)).returncode == 0
        async with payments.begin() as conn:  # recorded as succeeded although the buyer never got the 300
            await conn.execute(text("UPDATE refunds SET status = 'succeeded' WHERE id = 'rfd_1'"))
    finally:
        await wallets.dispose()
        await payments.dispose()
    result = await asyncio.to_thread(run_verify, wallet_url, payments_url)
    assert result.returncode == 1, result.stderr
    assert "I1 a finished transfer or refund leaves nothing in transit" in " ".join(result.stderr.split())
    assert saga in result.stderr
