"""``payweave worker``: hosts every workflow and activity on the configured task queue."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from db.engine import make_engine
from payweave.schedules import ensure_schedules
from payweave.settings import Settings
from payweave.tracing import setup_tracing
from workers.client import connect
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings

log = logging.getLogger("payweave.worker")

# The sandbox imports each workflow's own module afresh for every run (that keeps workflow state isolated);
# the deterministic modules they share (contracts, ids, the saga helpers; activities only for their
# signatures) are passed through: imported once per process, not once per saga (ARCHITECTURE §5).
SHARED_WORKFLOW_MODULES = ("payweave", "activities", "db", "workflows.saga", "workflows.gateway_payment")


def workflow_runner(sandboxed: bool = True) -> WorkflowRunner:
    """The sandbox (the default: development, tests, ``payweave dev``) refuses non-deterministic calls in
    workflow code as it runs; it costs a fresh import of the workflow's module for every run started or
    replayed into the cache. Production runs the same code without it (``PAYWEAVE_WORKFLOW_SANDBOX=false`` in
    docker-compose.yml): the suite has already run every workflow sandboxed, and the replay tests replay every
    recorded history under both runners. Measured in docs/benchmarks.md (B1, B6)."""
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SHARED_WORKFLOW_MODULES)
    )


def build_worker(
    client: Client, settings: Settings, *, task_queue: str | None = None, **resources: object
) -> Worker:
    wallet_engine = resources.get("wallet_engine") or make_engine(
        settings.wallet_database_url, pool_size=settings.database_pool_size
    )
    payments_engine = resources.get("payments_engine") or make_engine(
        settings.payments_database_url, pool_size=settings.database_pool_size
    )
    gateways = resources.get("gateways") or gateways_from_settings(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner(settings.workflow_sandbox),
        activities=build_activities(
            wallet_engine=wallet_engine,  # type: ignore[arg-type]
            payments_engine=payments_engine,  # type: ignore[arg-type]
            gateways=gateways,  # type: ignore[arg-type]
            settings=settings,
            client=client,
        ),
        max_concurrent_activities=200,
    )


async def run_worker(settings: Settings) -> None:
    setup_tracing(settings, "payweave-worker")  # names this process's spans, when tracing is on
    client = await connect(settings)
    worker = build_worker(client, settings)
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    if settings.schedules_enabled:
        # Create or update the sweeper and reconciliation schedules (idempotent: every worker may do it).
        # A worker that may not manage schedules still serves its task queue; the log says why not.
        try:
            for line in await ensure_schedules(client, settings):
                log.info("%s", line)
        except RPCError as exc:
            log.error("schedules not created or updated: %s", exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s on %s", settings.temporal_task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
    log.info("worker stopped")
