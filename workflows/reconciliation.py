"""ReconciliationWorkflow — daily: gateway objects vs payments DB vs ledger clearing entries (§5.7, I5).

Pages through the payments created in the window (default the last 48 h), one activity per page; each page
compares every payment at the gateway, in the payments DB and in the ledger, and stores what disagrees in
``reconciliation_mismatches`` (once per run). The result lists the mismatches (the first MAX_REPORTED).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconciliation import ReconciliationActivities
    from payweave.contracts.operations import (
        MAX_REPORTED,
        Mismatch,
        ReconcileInput,
        ReconcilePageInput,
        ReconciliationReport,
    )

from workflows.saga import set_search_attributes

# A gateway or database that stays down fails the run after about ten minutes; the next day's run covers
# the window again (48 h, twice the interval).
PAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=2), maximum_attempts=10
)


@workflow.defn
class ReconciliationWorkflow:
    def __init__(self) -> None:
        self._checked = 0
        self._mismatches: list[Mismatch] = []

    @workflow.query
    def progress(self) -> dict[str, int]:
        return {"payments_checked": self._checked, "mismatches": len(self._mismatches)}

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconciliationReport:
        set_search_attributes(kind="reconciliation", status="running")
        run_id = workflow.info().workflow_id
        end = workflow.now()
        start = end - timedelta(hours=inp.window_hours)
        page = ReconcilePageInput(
            run_id=run_id,
            window_start=start,
            window_end=end,
            page_size=inp.page_size,
            concurrency=inp.concurrency,
        )
        while True:
            result = await workflow.execute_activity_method(
                ReconciliationActivities.reconcile_page,
                page,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=PAGE_RETRY,
            )
            self._checked += result.checked
            self._mismatches += result.mismatches
            if result.next_id is None:
                break
            page = page.model_copy(
                update={"after_created_at": result.next_created_at, "after_id": result.next_id}
            )
        kinds: dict[str, int] = {}
        for m in self._mismatches:
            kinds[m.kind] = kinds.get(m.kind, 0) + 1
        set_search_attributes(status="mismatches" if self._mismatches else "ok")
        log = workflow.logger.warning if self._mismatches else workflow.logger.info
        log(
            "reconciliation %s: %d payments checked, %d mismatches %s",
            run_id,
            self._checked,
            len(self._mismatches),
            kinds,
        )
        return ReconciliationReport(
            run_id=run_id,
            window_start=start,
            window_end=end,
            payments_checked=self._checked,
            mismatch_count=len(self._mismatches),
            mismatches=self._mismatches[:MAX_REPORTED],
        )
