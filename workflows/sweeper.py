"""SweeperWorkflow — expiry and repair, one short run per schedule tick (ARCHITECTURE §5.7).

Finds and drives what a lost webhook or a dead workflow left behind, in five bounded passes:
  a. open payments past expiry (or older than a minimum age): look the gateway up, signal the owning saga
     the real outcome; if the saga is gone, close the payment (a late success is refunded);
  b. group-buy sessions past their deadline without a decision: signal ``deadline_passed``;
  c. holds past expiry whose saga is closed: release them as 'expired';
  d. webhook events stored but never delivered: route them again;
  e. orders still pending past their expiry whose saga never started (the API recorded the order, the start
     failed, the client never retried): expired, once nothing of a saga is found.
Every item is its own activity (retried a few times; the next tick retries the rest); a failing item is
counted as an error and never stops the sweep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.sweeper import SweeperActivities
    from payweave.contracts.operations import SweepInput, SweepSummary

from workflows.saga import set_search_attributes

T = TypeVar("T")

UNSTARTED_ORDERS = "sweeper-unstarted-orders"
SWEEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
SWEEP_TIMEOUT = timedelta(seconds=60)


async def run_bounded(
    activity: Callable[[Any, T], Awaitable[str]], items: Sequence[T], concurrency: int, summary: SweepSummary
) -> None:
    """Run ``activity`` for every item, ``concurrency`` at a time, counting each outcome in ``summary``."""

    async def one(item: T) -> None:
        try:
            outcome = await workflow.execute_activity_method(
                activity, item, start_to_close_timeout=SWEEP_TIMEOUT, retry_policy=SWEEP_RETRY
            )
        except ActivityError as exc:
            workflow.logger.warning("sweep item %r failed: %s", item, exc.cause or exc)
            summary.errors += 1
            return
        summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1

    for start in range(0, len(items), max(1, concurrency)):
        await asyncio.gather(*(one(item) for item in items[start : start + max(1, concurrency)]))


@workflow.defn
class SweeperWorkflow:
    def __init__(self) -> None:
        self._summary = SweepSummary()

    @workflow.query
    def status(self) -> SweepSummary:
        return self._summary

    @workflow.run
    async def run(self, inp: SweepInput) -> SweepSummary:
        set_search_attributes(kind="sweeper", status="running")
        passes: list[tuple[str, Callable[[Any, SweepInput], Awaitable[Sequence[Any]]], Any]] = [
            ("payments", SweeperActivities.find_stale_payments, SweeperActivities.sweep_payment),
            (
                "group_buys",
                SweeperActivities.find_overdue_group_buys,
                SweeperActivities.signal_group_buy_deadline,
            ),
            ("holds", SweeperActivities.find_expired_holds, SweeperActivities.expire_orphan_hold),
            ("webhooks", SweeperActivities.find_unrouted_webhooks, SweeperActivities.reroute_webhook),
        ]
        # e. (runs started since the patch) orders the API recorded whose saga never started.
        if workflow.patched(UNSTARTED_ORDERS):
            passes.append(
                (
                    "orders",
                    SweeperActivities.find_expired_pending_orders,
                    SweeperActivities.expire_unstarted_order,
                )
            )
        for name, find, drive in passes:
            try:
                items = await workflow.execute_activity_method(
                    find, inp, start_to_close_timeout=SWEEP_TIMEOUT, retry_policy=SWEEP_RETRY
                )
            except ActivityError as exc:
                workflow.logger.warning("sweeper could not list %s: %s", name, exc.cause or exc)
                self._summary.errors += 1
                continue
            self._summary.examined[name] = len(items)
            await run_bounded(drive, items, inp.concurrency, self._summary)
        set_search_attributes(status="errors" if self._summary.errors else "ok")
        workflow.logger.info(
            "sweep done: examined %s, outcomes %s, errors %d",
            self._summary.examined,
            self._summary.outcomes,
            self._summary.errors,
        )
        return self._summary
