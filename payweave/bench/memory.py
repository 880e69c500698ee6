"""B6 (QUALITY.md): resident memory of a ``payweave worker`` process (its own process, as in production, on a
task queue of its own) with N open ``awaiting_payment`` checkouts (Stripe PaymentIntents created on localstripe,
no payment method, so each saga waits for the payer; all of them in the worker's sticky cache, default 1,000
entries) ↔ the same process idle, measured just before. Afterwards every checkout is canceled through its
``cancel`` Update (compensations run; nothing is left open)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import psutil

from payweave import search_attributes as sa
from payweave.bench.common import drive, fund_wallets, tag
from payweave.bench.harness import Stack
from payweave.bench.report import Result
from payweave.chaos.worker import WorkerProcess, settings_env
from payweave.contracts.sagas import CancelCheckout, CheckoutInput, CheckoutStatus
from workflows.checkout import CheckoutWorkflow

MB = 1024 * 1024
WARM_UP = 100
LIMIT_MB = 300.0


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / MB


@asynccontextmanager
async def worker_process(stack: Stack) -> AsyncIterator[tuple[str, psutil.Process]]:
    """A ``payweave worker`` child on the stack's servers and a fresh task queue: (queue, process)."""
    queue = f"{stack.settings.temporal_task_queue}-b6-{tag()}"
    settings = stack.settings.model_copy(
        update={
            "temporal_task_queue": queue,
            "temporal_address": stack.client.service_client.config.target_host,
        }
    )
    with TemporaryDirectory(prefix="payweave-bench-b6-") as tmp:
        worker = WorkerProcess(settings_env(settings), Path(tmp) / "worker.log")
        worker.start()
        try:
            for _ in range(600):
                if worker.ready():
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the B6 worker did not poll within 60 s")
            yield queue, psutil.Process(worker.pid)
        finally:
            await asyncio.to_thread(worker.stop)


async def _open_and_cancel(
    stack: Stack, queue: str, n: int, concurrency: int, between: Callable[[], None] | None = None
) -> tuple[str, float, float]:
    """Open n checkouts, call ``between`` while they are all open, cancel them all: (run, open s, cancel s)."""
    run = tag()
    buyers = [f"bench-{run}-b{i}" for i in range(n)]
    merchant = f"bench-{run}-m"
    await fund_wallets(stack, [merchant], 0)
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
            task_queue=queue,
            search_attributes=sa.initial(
                kind="checkout", owner=inp.buyer, amount=inp.total, currency="USD", order_id=inp.order_id
            ),
        )
        accepted: CheckoutStatus = await handle.execute_update(CheckoutWorkflow.accepted)
        if accepted.status != "awaiting_payment":
            raise RuntimeError(f"bench checkout {inp.order_id} is {accepted.status}, not awaiting_payment")

    start_elapsed, _ = await drive(n, concurrency, start)
    if between is not None:
        between()

    async def cancel(i: int) -> None:
        await handles[i].execute_update(CheckoutWorkflow.cancel, CancelCheckout(reason="bench"))

    cancel_elapsed, _ = await drive(n, concurrency, cancel)
    return run, start_elapsed, cancel_elapsed


async def open_checkouts(
    stack: Stack, n: int = 1_000, concurrency: int = 50, *, project_to: int | None = None
) -> Result:
    """RSS with n open checkouts; with ``project_to`` (``--quick``) the growth per open checkout measured at n is
    projected linearly to that many and the projection is the value compared with the target.

    "Idle" is a worker that has served checkouts before (a warm-up round opens and cancels ``WARM_UP`` of them
    at the same concurrency first): database pools at their working size, code paths imported and caches
    filled belong to any running worker, not to the open checkouts, so they must not be projected per
    checkout."""
    async with worker_process(stack) as (queue, process):
        await _open_and_cancel(stack, queue, min(WARM_UP, n), concurrency)
        idle = rss_mb(process)
        loaded = idle

        def measure() -> None:
            nonlocal loaded
            loaded = rss_mb(process)

        run, start_elapsed, cancel_elapsed = await _open_and_cancel(stack, queue, n, concurrency, measure)
    size = project_to or n
    value = idle + (loaded - idle) * size / n
    return Result(
        id="B6",
        name=f"worker process RSS with {size} open awaiting_payment checkouts"
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
            "warm_up_checkouts": min(WARM_UP, n),
            "baseline": "the same worker process idle, after a warm-up round of opened and canceled checkouts",
            "measured_rss_mb": loaded,
            "delta_mb": loaded - idle,
            "kb_per_open_checkout": (loaded - idle) * 1024 / n if n else 0.0,
            "start_s": start_elapsed,
            "cancel_s": cancel_elapsed,
        },
    )
