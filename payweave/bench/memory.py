"""B6 (QUALITY.md): resident memory of the process hosting the worker with N open ``awaiting_payment`` checkouts
(Stripe PaymentIntents created on localstripe, no payment method, so each saga waits for the payer; all of them in
the worker's sticky cache, default 1,000 entries) ↔ the same process idle, measured just before. The benchmark
process hosts the worker in-process, so the figure is an upper bound for a worker process of its own. Afterwards
every checkout is canceled through its ``cancel`` Update (compensations run; nothing is left open)."""

from __future__ import annotations

import gc

import psutil

from payweave import search_attributes as sa
from payweave.bench.common import drive, fund_wallets, tag
from payweave.bench.harness import Stack
from payweave.bench.report import Result
from payweave.contracts.sagas import CancelCheckout, CheckoutInput, CheckoutStatus
from workflows.checkout import CheckoutWorkflow

MB = 1024 * 1024
LIMIT_MB = 300.0


def rss_mb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / MB


async def open_checkouts(
    stack: Stack, n: int = 1_000, concurrency: int = 50, *, project_to: int | None = None
) -> Result:
    """RSS with n open checkouts; with ``project_to`` (``--quick``) the growth per open checkout measured at n is
    projected linearly to that many and the projection is the value compared with the target."""
    run = tag()
    buyers = [f"bench-{run}-b{i}" for i in range(n)]
    merchant = f"bench-{run}-m"
    await fund_wallets(stack, [merchant], 0)
    idle = rss_mb()
    handles = [
        stack.client.get_workflow_handle_for(CheckoutWorkflow.run, f"checkout:bench:{run}:{i}")
        for i in range(n)
    ]

    async def start(i: int) -> None:
        inp = CheckoutInput(
            order_id=f"ord_bench_{run}_{i}",
            buyer=buyers[i],
            merchant=merchant,
            currency="USD",
            total=1_000,
            method="gateway",
            gateway="stripe",
            merchant_wallet_id=f"wal_{merchant}",
            expires_in_seconds=3_600,
        )
        handle = await stack.client.start_workflow(
            CheckoutWorkflow.run,
            inp,
            id=handles[i].id,
            task_queue=stack.settings.temporal_task_queue,
            search_attributes=sa.initial(kind="checkout", owner=inp.buyer, amount=inp.total, currency="USD"),
        )
        accepted: CheckoutStatus = await handle.execute_update(CheckoutWorkflow.accepted)
        if accepted.status != "awaiting_payment":
            raise RuntimeError(f"bench checkout {inp.order_id} is {accepted.status}, not awaiting_payment")

    start_elapsed, _ = await drive(n, concurrency, start)
    loaded = rss_mb()

    async def cancel(i: int) -> None:
        await handles[i].execute_update(CheckoutWorkflow.cancel, CancelCheckout(reason="bench"))

    cancel_elapsed, _ = await drive(n, concurrency, cancel)
    size = project_to or n
    value = idle + (loaded - idle) * size / n
    return Result(
        id="B6",
        name=f"worker RSS with {size} open awaiting_payment checkouts"
        + (f" (projected from {n})" if size != n else ""),
        value=value,
        unit="MB",
        baseline=idle,
        ratio=value / idle if idle else 0.0,
        target=f"≤ {LIMIT_MB:.0f} MB",
        meets_target=value <= LIMIT_MB,
        details={
            "open_checkouts": n,
            "run": run,
            "baseline": "same process idle, just before",
            "measured_rss_mb": loaded,
            "delta_mb": loaded - idle,
            "kb_per_open_checkout": (loaded - idle) * 1024 / n if n else 0.0,
            "start_s": start_elapsed,
            "cancel_s": cancel_elapsed,
        },
    )
