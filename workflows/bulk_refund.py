"""BulkRefundWorkflow — every participant of a failed or canceled group buy made whole (ARCHITECTURE §5.6).

Phases, each a cursor over the participants (resumable after any crash; continue-as-new between batches when
the history grows):
1. release_holds   wallet holds never captured → released, one transaction per batch (no money moved)
2. refund_wallets  wallet money already captured into escrow → back to each wallet, a keyed journal each
3. refund_gateway  gateway payments refunded with bounded concurrency; a refund the gateway refuses for good
                   is credited to the participant's wallet instead (refunded_to_wallet)
4. await_pending   refunds the gateway is still processing are looked at again until they end
The result lists every participant's outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.group_buy import GroupBuyActivities
    from payweave.contracts.group_buy import (
        BatchInput,
        BatchResult,
        BulkRefundInput,
        BulkRefundResult,
        RefundProgress,
    )

from workflows.saga import MONEY_RETRY, WAIT_FOR_OUTCOME, db_step, set_search_attributes

# Refunds the gateway is still processing are looked at again after 2 s, then less and less often (≤ 30 s).
PENDING_POLL_FIRST = timedelta(seconds=2)
PENDING_POLL_MAX = timedelta(seconds=30)
GATEWAY_BATCH = 100
GATEWAY_CONCURRENCY = 16


def _gateway_batch(
    activity: Callable[[Any, BatchInput], Awaitable[BatchResult]], inp: BatchInput
) -> Awaitable[BatchResult]:
    return workflow.execute_activity_method(
        activity,
        inp,
        start_to_close_timeout=timedelta(minutes=10),
        heartbeat_timeout=timedelta(minutes=1),
        retry_policy=MONEY_RETRY,
        cancellation_type=WAIT_FOR_OUTCOME,
    )


@workflow.defn
class BulkRefundWorkflow:
    def __init__(self) -> None:
        self._progress = RefundProgress()
        self._phase = "release_holds"

    @workflow.query
    def progress(self) -> RefundProgress:
        return self._progress

    @workflow.query
    def phase(self) -> str:
        return self._phase

    @workflow.run
    async def run(self, inp: BulkRefundInput) -> BulkRefundResult:
        wf_id = workflow.info().workflow_id
        gb = inp.group_buy_id
        if inp.progress is None:
            set_search_attributes(kind="bulk_refund", status="running", order_id=gb)
            self._progress = await db_step(GroupBuyActivities.group_refund_progress, gb)
        else:
            self._progress = inp.progress
        phases: list[tuple[str, Callable[[Any, BatchInput], Awaitable[BatchResult]], int]] = [
            ("release_holds", GroupBuyActivities.release_group_holds, 500),
            ("refund_wallets", GroupBuyActivities.refund_group_wallets, 500),
            ("refund_gateway", GroupBuyActivities.refund_group_gateway, GATEWAY_BATCH),
        ]
        names = [name for name, _, _ in phases]
        start = names.index(inp.phase) if inp.phase in names else len(phases)
        cursor = inp.after_seq
        for name, activity_method, limit in phases[start:]:
            self._phase = name
            next_cursor: int | None = cursor
            while next_cursor is not None:
                batch = BatchInput(
                    group_buy_id=gb,
                    workflow_id=wf_id,
                    after_seq=next_cursor,
                    limit=limit,
                    concurrency=GATEWAY_CONCURRENCY,
                )
                result = await _gateway_batch(activity_method, batch)
                self._count(result)
                next_cursor = result.next_after_seq
                if next_cursor is not None and workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(
                        inp.model_copy(
                            update={"phase": name, "after_seq": next_cursor, "progress": self._progress}
                        )
                    )
            cursor = 0
        self._phase = "await_pending"
        poll = PENDING_POLL_FIRST
        while True:
            self._progress = await db_step(GroupBuyActivities.group_refund_progress, gb)
            if self._progress.pending == 0:
                break
            await workflow.sleep(poll)
            poll = min(poll * 2, PENDING_POLL_MAX)
            cursor_pending: int | None = 0
            while cursor_pending is not None:
                result = await _gateway_batch(
                    GroupBuyActivities.check_group_refunds,
                    BatchInput(
                        group_buy_id=gb,
                        workflow_id=wf_id,
                        after_seq=cursor_pending,
                        limit=GATEWAY_BATCH,
                        concurrency=GATEWAY_CONCURRENCY,
                    ),
                )
                cursor_pending = result.next_after_seq
        self._phase = "done"
        outcomes = await db_step(GroupBuyActivities.group_refund_outcomes, gb)
        set_search_attributes(status="completed")
        return BulkRefundResult(
            group_buy_id=gb, reason=inp.reason, progress=self._progress, outcomes=outcomes
        )

    def _count(self, result: BatchResult) -> None:
        p = self._progress
        p.released += result.released
        p.refunded += result.refunded
        p.refunded_to_wallet += result.refunded_to_wallet
        p.pending += result.pending
        p.done = p.released + p.refunded + p.refunded_to_wallet
