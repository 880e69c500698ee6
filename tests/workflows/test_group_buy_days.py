"""Group buys spanning days, on the time-skipping test server with the real activities (Postgres, localstripe):
the join deadline and the production deadline pass in moments, and a worker restart mid-session loses nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from db.engine import in_transaction
from db.repositories import ledger
from payweave import search_attributes as sa
from payweave.contracts.group_buy import GroupBuyInput, GroupBuyTerms, GroupBuyView, JoinRequest
from payweave.settings import Settings
from tests.conftest import Users
from tests.helpers import create_wallet, deposit, wallet
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings
from workflows.group_buy import GroupBuyWorkflow

PRICE = 1_000


def _worker(
    env: WorkflowEnvironment,
    queue: str,
    settings: Settings,
    wallets: AsyncEngine,
    payments: AsyncEngine,
    *,
    stopped_mid_session: bool = False,
) -> Worker:
    return Worker(
        env.client,
        task_queue=queue,
        # A worker that caches workflows has the server send their next workflow tasks to its own sticky queue.
        # Temporal moves them back to the shared queue when that worker shuts down (ShutdownWorker); the
        # time-skipping test server does not (ResetStickyTaskQueue is unimplemented and the sticky timeout never
        # fires for a task nobody polls), so the next update of a session last run by a stopped caching worker
        # waits forever. A worker stopped mid-session keeps no cache: its successor replays the session from history.
        max_cached_workflows=0 if stopped_mid_session else 1000,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            wallet_engine=wallets,
            payments_engine=payments,
            gateways=gateways_from_settings(settings),
            settings=settings,
        ),
    )


async def _session(
    env: WorkflowEnvironment, queue: str, factory: str, factory_wallet: str, **terms: object
) -> WorkflowHandle[GroupBuyWorkflow, GroupBuyView]:
    now = await env.get_current_time()
    gb_id = f"gb_days_{uuid.uuid4().hex[:12]}"
    return await env.client.start_workflow(
        GroupBuyWorkflow.run,
        GroupBuyInput(
            terms=GroupBuyTerms(
                group_buy_id=gb_id,
                factory=factory,
                factory_wallet_id=factory_wallet,
                product="cast-iron pan",
                unit_price=PRICE,
                currency="USD",
                moq=3,
                deadline=now + timedelta(days=3),
                production_deadline=now + timedelta(days=10),
                fee_bps=100,
                **terms,  # type: ignore[arg-type]
            )
        ),
        id=f"groupbuy:{factory}:{gb_id}",
        task_queue=queue,
        search_attributes=sa.initial(
            kind="group_buy", owner=factory, amount=0, currency="USD", status="open"
        ),
    )


async def _buyers(http: httpx.AsyncClient, users: Users, n: int) -> list[tuple[str, dict[str, str], str]]:
    out = []
    for _ in range(n):
        sub, auth = users.new()
        w = await create_wallet(http, auth)
        await deposit(http, auth, w["id"], 5_000)
        out.append((sub, auth, w["id"]))
    return out


async def test_production_on_day_five_with_a_worker_restart_in_between(
    time_skipping: WorkflowEnvironment,
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    queue = f"gb-days-{uuid.uuid4().hex[:8]}"
    factory, f_auth = users.new("factory")
    f_wallet = await create_wallet(http, f_auth)
    (a, a_auth, a_wallet), (b, b_auth, b_wallet) = await _buyers(http, users, 2)
    async with _worker(
        time_skipping, queue, settings, wallet_engine, payments_engine, stopped_mid_session=True
    ):
        handle = await _session(time_skipping, queue, factory, f_wallet["id"])
        started = await time_skipping.get_current_time()
        joined = await handle.execute_update(
            GroupBuyWorkflow.join,
            JoinRequest(request_key="k1", buyer=a, quantity=2, method="wallet", wallet_id=a_wallet),
        )
        assert joined.status == "held"
    # The worker goes away mid-session; a new one picks the session up where it was.
    async with _worker(time_skipping, queue, settings, wallet_engine, payments_engine):
        await handle.execute_update(
            GroupBuyWorkflow.join,
            JoinRequest(request_key="k2", buyer=b, quantity=1, method="wallet", wallet_id=b_wallet),
        )
        await time_skipping.sleep(timedelta(days=4))  # the 3-day join deadline passes
        view = await handle.query(GroupBuyWorkflow.status)
        assert (view.status, view.paid_units, view.paid_amount) == ("succeeded", 3, 3 * PRICE)
        # Production is done on day 5, well before its 10-day deadline.
        await time_skipping.sleep(timedelta(days=1))
        assert timedelta(days=5) <= await time_skipping.get_current_time() - started < timedelta(days=6)
        done = await handle.execute_update(GroupBuyWorkflow.production_complete)
        assert (done.status, done.fee_amount) == ("completed", 30)
        assert (await handle.result()).status == "completed"
    assert (await wallet(http, a_auth, a_wallet))["balance"] == 3_000
    assert (await wallet(http, b_auth, b_wallet))["balance"] == 4_000
    assert (await wallet(http, f_auth, f_wallet["id"]))["balance"] == 3 * PRICE - 30


async def test_missed_production_deadline_refunds_everyone_after_ten_days(
    time_skipping: WorkflowEnvironment,
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    queue = f"gb-days-{uuid.uuid4().hex[:8]}"
    factory, f_auth = users.new("factory")
    f_wallet = await create_wallet(http, f_auth)
    buyers = await _buyers(http, users, 3)
    async with _worker(time_skipping, queue, settings, wallet_engine, payments_engine):
        handle = await _session(time_skipping, queue, factory, f_wallet["id"])
        for n, (sub, _, wallet_id) in enumerate(buyers):
            await handle.execute_update(
                GroupBuyWorkflow.join,
                JoinRequest(request_key=f"k{n}", buyer=sub, quantity=1, method="wallet", wallet_id=wallet_id),
            )
        before = await time_skipping.get_current_time()
        result = await handle.result()  # no production_complete: the 10-day production deadline passes
        elapsed = await time_skipping.get_current_time() - before
    assert (result.status, result.failure_code) == ("refunded", "production_deadline_missed")
    assert elapsed >= timedelta(days=9)
    assert result.refund is not None and (result.refund.refunded, result.refund.total) == (3, 3)
    for _, auth, wallet_id in buyers:
        w = await wallet(http, auth, wallet_id)
        assert (w["balance"], w["held"]) == (5_000, 0)
    escrow = await in_transaction(wallet_engine, lambda c: ledger.get_wallet(c, "sys_escrow_usd"))
    assert escrow is not None
