"""The Temporal Schedules of the operational workflows (ARCHITECTURE §5.7), and running them once by hand.

``ensure_schedules`` creates each schedule, or updates it to the current settings when it exists already:
idempotent, so every ``payweave worker`` start may call it (several workers, restarts, a changed interval).
The schedules are visible in the Temporal Web UI (Schedules) and with ``temporal schedule list``.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from payweave.contracts.operations import ReconcileInput, ReconciliationReport, SweepInput, SweepSummary
from payweave.settings import Settings

SWEEPER_SCHEDULE_ID = "payweave-sweeper"
RECONCILIATION_SCHEDULE_ID = "payweave-reconciliation"
SWEEPER_WORKFLOW = "SweeperWorkflow"
RECONCILIATION_WORKFLOW = "ReconciliationWorkflow"


def sweep_input(settings: Settings) -> SweepInput:
    return SweepInput(
        limit=settings.sweeper_batch_limit,
        concurrency=settings.sweeper_concurrency,
        min_payment_age_seconds=settings.sweeper_min_payment_age_seconds,
        webhook_min_age_seconds=settings.sweeper_webhook_min_age_seconds,
    )


def reconcile_input(settings: Settings, window_hours: int | None = None) -> ReconcileInput:
    return ReconcileInput(window_hours=window_hours or settings.reconciliation_window_hours)


def schedules(settings: Settings) -> dict[str, Schedule]:
    """Schedule id → schedule. A sweep that is still running when the next tick comes is not doubled (SKIP)."""
    sweeper = Schedule(
        action=ScheduleActionStartWorkflow(
            SWEEPER_WORKFLOW,
            sweep_input(settings),
            id="sweeper",  # Temporal appends the scheduled time: one workflow id per tick
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(seconds=max(10 * settings.sweeper_interval_seconds, 600)),
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.sweeper_interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    reconciliation = Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILIATION_WORKFLOW,
            reconcile_input(settings),
            id="reconciliation",
            task_queue=settings.temporal_task_queue,
            execution_timeout=timedelta(hours=12),
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=settings.reconciliation_interval_seconds))
            ]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    return {SWEEPER_SCHEDULE_ID: sweeper, RECONCILIATION_SCHEDULE_ID: reconciliation}


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Create or update every schedule; returns one line per schedule saying which."""
    done = []
    for schedule_id, schedule in schedules(settings).items():
        try:
            await client.create_schedule(schedule_id, schedule)
            done.append(f"schedule {schedule_id} created")
        except ScheduleAlreadyRunningError:

            def update(current: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                # The action, spec and policy from the settings; the state (paused by an operator, say) kept.
                return ScheduleUpdate(
                    schedule=dataclasses.replace(schedule, state=current.description.schedule.state)
                )

            await client.get_schedule_handle(schedule_id).update(update)
            done.append(f"schedule {schedule_id} updated")
    return done


async def sweep_now(client: Client, settings: Settings) -> SweepSummary:
    """One sweep, now, on the workers of the configured task queue (``payweave sweep``)."""
    summary: SweepSummary = await client.execute_workflow(
        SWEEPER_WORKFLOW,
        sweep_input(settings),
        id=f"sweeper-manual-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal_task_queue,
        result_type=SweepSummary,
        execution_timeout=timedelta(minutes=10),
    )
    return summary


async def reconcile_now(
    client: Client, settings: Settings, window_hours: int | None = None
) -> ReconciliationReport:
    """One reconciliation, now (``payweave reconcile``)."""
    report: ReconciliationReport = await client.execute_workflow(
        RECONCILIATION_WORKFLOW,
        reconcile_input(settings, window_hours),
        id=f"reconciliation-manual-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal_task_queue,
        result_type=ReconciliationReport,
        execution_timeout=timedelta(hours=12),
    )
    return report
