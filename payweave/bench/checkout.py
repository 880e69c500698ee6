"""B1, B2 and B5 (QUALITY.md): CheckoutWorkflow driven through the Temporal client exactly as the API starts it,
each run measured against a baseline on the same servers in the same run.

* B1 — wallet-only checkouts, sagas/s and start→paid latency ↔ a bare workflow running the same number of
  no-op activities as one wallet checkout records in its history (the naive saga on this Temporal server);
* B2 — split checkouts (wallet hold + a Stripe PaymentIntent confirmed server-side on localstripe, paid when the
  signed webhook reaches the API served in this process) ↔ B1's wallet-only rate;
* B5 — 100 concurrent checkouts all crediting one merchant wallet ↔ the same load spread over 100 merchants.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from payweave import search_attributes as sa
from payweave.bench.baseline import BareSagaWorkflow, noop
from payweave.bench.common import api_server, drive, fund_wallets, percentiles, tag
from payweave.bench.harness import Stack
from payweave.bench.report import Result
from payweave.contracts.sagas import CheckoutInput, CheckoutStatus
from workflows.checkout import CheckoutWorkflow

PRICE = 1_000


class Load:
    """n buyers funded for one checkout each, paying ``merchants`` merchants round-robin."""

    def __init__(self, stack: Stack, n: int, merchants: int = 1) -> None:
        self.stack, self.n, self.tag = stack, n, tag()
        self.buyers = [f"bench-{self.tag}-b{i}" for i in range(n)]
        self.merchants = [f"bench-{self.tag}-m{i}" for i in range(max(1, merchants))]

    async def prepare(self) -> None:
        await fund_wallets(self.stack, self.buyers, PRICE)
        await fund_wallets(self.stack, self.merchants, 0)

    def input(self, i: int, method: Literal["wallet", "split"]) -> CheckoutInput:
        merchant = self.merchants[i % len(self.merchants)]
        return CheckoutInput(
            order_id=f"ord_bench_{self.tag}_{i}",
            buyer=self.buyers[i],
            merchant=merchant,
            currency="USD",
            total=PRICE,
            method=method,
            wallet_amount=PRICE if method == "wallet" else PRICE // 2,
            gateway="stripe" if method == "split" else None,
            payment_method="pm_card_visa" if method == "split" else None,
            buyer_wallet_id=f"wal_{self.buyers[i]}",
            merchant_wallet_id=f"wal_{merchant}",
            expires_in_seconds=600,
        )

    def workflow_id(self, i: int) -> str:
        return f"checkout:bench:{self.tag}:{i}"

    async def one(self, i: int, method: Literal["wallet", "split"]) -> CheckoutStatus:
        inp = self.input(i, method)
        handle = await self.stack.client.start_workflow(
            CheckoutWorkflow.run,
            inp,
            id=self.workflow_id(i),
            task_queue=self.stack.settings.temporal_task_queue,
            search_attributes=sa.initial(
                kind="checkout", owner=inp.buyer, amount=inp.total, currency="USD", order_id=inp.order_id
            ),
        )
        status = await handle.result()
        if status.status != "paid":
            raise RuntimeError(f"bench checkout {inp.order_id} ended {status.status}: {status.failure_code}")
        return status

    async def run(
        self, concurrency: int, method: Literal["wallet", "split"] = "wallet"
    ) -> tuple[float, list[float]]:
        await self.prepare()
        return await drive(self.n, concurrency, lambda i: self.one(i, method))


async def steps_of_one_checkout(load: Load) -> int:
    """Activities (regular and local) one finished wallet checkout recorded in its history."""
    history = await load.stack.client.get_workflow_handle(load.workflow_id(0)).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        or (
            e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            # a patch marker (workflow.patched) is not a step
            and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        )
    )


async def bare_sagas(stack: Stack, n: int, concurrency: int, steps: int) -> tuple[float, list[float]]:
    """n bare workflows of ``steps`` no-op activities at ``concurrency``: (elapsed, latencies)."""
    queue = f"{stack.settings.temporal_task_queue}-bare-{tag()}"
    run = tag()
    async with Worker(
        stack.client,
        task_queue=queue,
        workflows=[BareSagaWorkflow],
        activities=[noop],
        max_concurrent_activities=200,
    ):

        async def one(i: int) -> None:
            await stack.client.execute_workflow(
                BareSagaWorkflow.run,
                steps,
                id=f"bench-bare:{run}:{i}",
                task_queue=queue,
                execution_timeout=timedelta(minutes=10),
            )

        return await drive(n, concurrency, one)


async def checkout(stack: Stack, n: int = 1_000, concurrency: int = 100) -> Result:
    load = Load(stack, n, merchants=n)
    elapsed, latencies = await load.run(concurrency)
    steps = await steps_of_one_checkout(load)
    base_elapsed, base_latencies = await bare_sagas(stack, n, concurrency, steps)
    value, baseline = n / elapsed, n / base_elapsed
    p50, p99 = percentiles(latencies)
    b50, b99 = percentiles(base_latencies)
    return Result(
        id="B1",
        name=f"wallet checkouts, {n} at {concurrency} concurrent",
        value=value,
        unit="sagas/s",
        baseline=baseline,
        ratio=value / baseline,
        target="ratio ≥ 1.0 vs bare workflow",
        meets_target=value / baseline >= 1.0,
        p50_ms=p50,
        p99_ms=p99,
        details={
            "checkouts": n,
            "concurrency": concurrency,
            "activities_per_checkout": steps,
            "baseline": f"bare workflow, {steps} no-op activities",
            "baseline_p50_ms": b50,
            "baseline_p99_ms": b99,
        },
    )


async def split(stack: Stack, b1_rate: float | None = None, n: int = 500, concurrency: int = 50) -> Result:
    """B2; ``b1_rate`` is B1's value from this run (measured here at n, concurrency when not given)."""
    async with api_server(stack):
        load = Load(stack, n, merchants=n)
        elapsed, latencies = await load.run(concurrency, "split")
    if b1_rate is None:
        wallet_load = Load(stack, n, merchants=n)
        wallet_elapsed, _ = await wallet_load.run(concurrency)
        b1_rate = n / wallet_elapsed
    value = n / elapsed
    p50, p99 = percentiles(latencies)
    return Result(
        id="B2",
        name=f"split wallet+Stripe checkouts incl. webhook, {n} at {concurrency} concurrent",
        value=value,
        unit="sagas/s",
        baseline=b1_rate,
        ratio=value / b1_rate,
        target="ratio ≥ 0.6 vs B1",
        meets_target=value / b1_rate >= 0.6,
        p50_ms=p50,
        p99_ms=p99,
        details={"checkouts": n, "concurrency": concurrency, "baseline": "B1 wallet checkouts/s"},
    )


async def hot_wallet(stack: Stack, n: int = 100) -> Result:
    hot = Load(stack, n, merchants=1)
    elapsed, latencies = await hot.run(n)
    spread = Load(stack, n, merchants=n)
    base_elapsed, base_latencies = await spread.run(n)
    value, baseline = n / elapsed, n / base_elapsed
    p50, p99 = percentiles(latencies)
    b50, b99 = percentiles(base_latencies)
    return Result(
        id="B5",
        name=f"hot merchant wallet, {n} concurrent checkouts",
        value=value,
        unit="sagas/s",
        baseline=baseline,
        ratio=value / baseline,
        target="ratio ≥ 0.5 vs 100 merchants",
        meets_target=value / baseline >= 0.5,
        p50_ms=p50,
        p99_ms=p99,
        details={
            "checkouts": n,
            "baseline": f"same load spread over {n} merchants",
            "baseline_p50_ms": b50,
            "baseline_p99_ms": b99,
        },
    )
