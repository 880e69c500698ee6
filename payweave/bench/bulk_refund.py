"""B4 — bulk refund of a failed group buy (QUALITY.md): 10,000 wallet-held participants and 1,000 gateway
participants, each against a baseline measured on the same servers in the same run:

* wallet: BulkRefundWorkflow releasing N holds ↔ the same number of holds released by plain batched
  transactions (the database limit, no Temporal);
* gateway: BulkRefundWorkflow refunding M Stripe payments (refund, escrow journal, bookkeeping each) ↔ M
  refunds sent straight to the gateway with the same concurrency (the gateway limit).

The session and its participants are written straight into the databases (the thing measured is the refund,
not the joins); the workflow then runs exactly as it does for a real failed session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.gateways.stripe import StripeGateway
from db.engine import in_transaction
from db.repositories import ledger
from payweave.bench.harness import Stack
from payweave.bench.report import Result
from payweave.contracts.group_buy import BulkRefundInput, GroupBuyTerms
from payweave.contracts.ledger import Posting
from workflows.bulk_refund import GATEWAY_CONCURRENCY, BulkRefundWorkflow

PRICE = 1_000
BATCH = 500


async def _session(stack: Stack, tag: str) -> tuple[str, str]:
    gb_id = f"gb_bench_{tag}"
    wf_id = f"groupbuy:bench:{tag}"
    factory = f"bench-factory-{tag}"

    async def wallet(conn: AsyncConnection) -> str:
        created, _ = await ledger.create_wallet(
            conn, wallet_id=f"wal_{factory}", owner=factory, currency="USD"
        )
        return created.id

    factory_wallet = await in_transaction(stack.wallet_engine, wallet)
    terms = GroupBuyTerms(
        group_buy_id=gb_id,
        factory=factory,
        factory_wallet_id=factory_wallet,
        product="bench",
        unit_price=PRICE,
        currency="USD",
        moq=10**6,
        deadline=datetime.now(UTC) - timedelta(minutes=1),
    )
    from db.repositories import group_buys  # noqa: PLC0415

    async def record(conn: AsyncConnection) -> None:
        await group_buys.create_group_buy(conn, terms=terms, workflow_id=wf_id)
        await conn.execute(
            text("UPDATE group_buys SET status = 'failed', decided_at = now() WHERE id = :id"), {"id": gb_id}
        )

    await in_transaction(stack.payments_engine, record)
    return gb_id, wf_id


async def _held_wallets(stack: Stack, tag: str, n: int) -> list[tuple[str, str, str]]:
    """n funded wallets, each with an open hold of PRICE: (owner, wallet id, hold id)."""
    owners = [f"bench-{tag}-{i}" for i in range(n)]

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO wallets (id, owner, currency, kind) "
                "SELECT 'wal_' || o, o, 'USD', 'customer' FROM unnest(CAST(:owners AS text[])) AS o"
            ),
            {"owners": owners},
        )
        fees = await ledger.ensure_system_wallet(conn, "platform_fees", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"bench:{tag}:funding",
            kind="bench_funding",
            currency="USD",
            postings=[Posting(wallet_id=fees, amount=-PRICE * n)]
            + [Posting(wallet_id=f"wal_{o}", amount=PRICE) for o in owners],
        )
        await conn.execute(
            text(
                "INSERT INTO holds (id, idempotency_key, wallet_id, amount, currency, saga_id, expires_at) "
                "SELECT 'hld_' || o, 'bench:' || o, 'wal_' || o, :price, 'USD', :saga, now() + interval '1 day' "
                "FROM unnest(CAST(:owners AS text[])) AS o"
            ),
            {"owners": owners, "price": PRICE, "saga": f"bench:{tag}"},
        )
        await conn.execute(
            text("UPDATE wallets SET held = :price WHERE id = ANY(:ids)"),
            {"price": PRICE, "ids": [f"wal_{o}" for o in owners]},
        )

    await in_transaction(stack.wallet_engine, work)
    return [(o, f"wal_{o}", f"hld_{o}") for o in owners]


async def _participants(stack: Stack, gb_id: str, rows: list[dict[str, object]]) -> None:
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO group_buy_participants (id, group_buy_id, idempotency_key, buyer, quantity, amount, "
                "  method, gateway, wallet_id, hold_id, payment_id, status) "
                "VALUES (:id, :gb, :id, :buyer, 1, :amount, :method, :gateway, :wallet_id, :hold_id, :payment_id, "
                "  :status)"
            ),
            [{"gb": gb_id, "amount": PRICE, **r} for r in rows],
        )

    await in_transaction(stack.payments_engine, work)


async def _run_bulk_refund(stack: Stack, gb_id: str, wf_id: str) -> float:
    started = time.perf_counter()
    result = await stack.client.execute_workflow(
        BulkRefundWorkflow.run,
        BulkRefundInput(group_buy_id=gb_id, session_workflow_id=wf_id, reason="bench"),
        id=f"{wf_id}:bulk-refund",
        task_queue=stack.settings.temporal_task_queue,
    )
    elapsed = time.perf_counter() - started
    if result.progress.pending or result.progress.done != result.progress.total:
        raise RuntimeError(f"bulk refund incomplete: {result.progress}")
    return elapsed


async def wallet_participants(stack: Stack, n: int) -> Result:
    tag = uuid.uuid4().hex[:8]
    gb_id, wf_id = await _session(stack, tag)
    held = await _held_wallets(stack, tag, n)
    await _participants(
        stack,
        gb_id,
        [
            {
                "id": f"gbp_{owner}",
                "buyer": owner,
                "method": "wallet",
                "gateway": None,
                "wallet_id": wallet_id,
                "hold_id": hold_id,
                "payment_id": None,
                "status": "held",
            }
            for owner, wallet_id, hold_id in held
        ],
    )
    value = await _run_bulk_refund(stack, gb_id, wf_id)

    # Baseline: as many holds released by plain batched transactions, no Temporal in between.
    base_holds = [h for _, _, h in await _held_wallets(stack, uuid.uuid4().hex[:8], n)]
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        chunk = base_holds[start : start + BATCH]
        await in_transaction(stack.wallet_engine, lambda c, ids=chunk: ledger.release_holds(c, ids))  # type: ignore[misc]
    baseline = time.perf_counter() - started
    return Result(
        id="B4",
        name=f"bulk refund, {n} wallet-held participants",
        value=value,
        unit="s",
        baseline=baseline,
        ratio=baseline / value if value else 0.0,
        target="≤ 20 s for 10,000" if n >= 10_000 else f"≤ {20 * n / 10_000:.1f} s (20 s per 10,000)",
        meets_target=value <= 20 * max(n, 1) / 10_000,
        details={"participants": n, "participants_per_s": n / value if value else 0.0},
    )


async def gateway_participants(stack: Stack, m: int) -> Result:
    tag = uuid.uuid4().hex[:8]
    gb_id, wf_id = await _session(stack, tag)
    stripe = StripeGateway(stack.settings.stripe_api_key.get_secret_value(), stack.settings.stripe_api_base)
    limit = asyncio.Semaphore(GATEWAY_CONCURRENCY)

    async def paid(i: int) -> str:
        async with limit:
            payment = await stripe.create_payment(
                idempotency_key=f"bench:{tag}:{i}",
                amount=PRICE,
                currency="USD",
                metadata={"purpose": "bench"},
                payment_method="pm_card_visa",
            )
            return payment.id

    intents = await asyncio.gather(*(paid(i) for i in range(m)))
    owners = [f"bench-{tag}-g{i}" for i in range(m)]

    async def payments(conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO payments (id, idempotency_key, workflow_id, purpose, owner, gateway, gateway_payment_id, "
                "  amount, currency, status, credited) "
                "VALUES (:id, :id, :wf, 'group_buy', :owner, 'stripe', :gid, :amount, 'USD', 'succeeded', true)"
            ),
            [
                {"id": f"pay_{o}", "wf": f"groupbuy-payment:gbp_{o}", "owner": o, "gid": g, "amount": PRICE}
                for o, g in zip(owners, intents, strict=True)
            ],
        )

    await in_transaction(stack.payments_engine, payments)

    async def escrow(conn: AsyncConnection) -> None:
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        account = await ledger.ensure_system_wallet(conn, "escrow", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"bench:{tag}:escrow",
            kind="bench_escrow",
            currency="USD",
            postings=[
                Posting(wallet_id=clearing, amount=-PRICE * m),
                Posting(wallet_id=account, amount=PRICE * m),
            ],
        )

    await in_transaction(stack.wallet_engine, escrow)
    await _participants(
        stack,
        gb_id,
        [
            {
                "id": f"gbp_{o}",
                "buyer": o,
                "method": "gateway",
                "gateway": "stripe",
                "wallet_id": None,
                "hold_id": None,
                "payment_id": f"pay_{o}",
                "status": "paid",
            }
            for o in owners
        ],
    )
    value = await _run_bulk_refund(stack, gb_id, wf_id)

    # Baseline: as many refunds sent straight to the gateway, same concurrency, no Temporal, no database.
    more = await asyncio.gather(*(paid(m + i) for i in range(m)))
    started = time.perf_counter()

    async def refund(intent: str) -> None:
        async with limit:
            await stripe.refund(
                idempotency_key=f"bench:{tag}:refund:{intent}",
                gateway_payment_id=intent,
                amount=PRICE,
                metadata={},
            )

    await asyncio.gather(*(refund(i) for i in more))
    baseline = time.perf_counter() - started
    return Result(
        id="B4-gateway",
        name=f"bulk refund, {m} gateway participants (Stripe)",
        value=value,
        unit="s",
        baseline=baseline,
        ratio=baseline / value if value else 0.0,
        target="≤ 60 s for 1,000" if m >= 1_000 else f"≤ {60 * m / 1_000:.1f} s (60 s per 1,000)",
        meets_target=value <= 60 * max(m, 1) / 1_000,
        details={"participants": m, "participants_per_s": m / value if value else 0.0},
    )
