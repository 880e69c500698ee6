"""What every saga shares: activity options, search attributes, compensations run in reverse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, RetryState
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from payweave import search_attributes as sa
    from payweave.contracts.activities import NotifyInput

# Money-moving steps retry until they succeed or fail for a business reason (non-retryable ApplicationError).
# Every attempt carries the same step key, so a retry can never move money twice.
MONEY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
# When the saga is cancelled while a money step is in flight, wait for that attempt's outcome before
# compensating: otherwise the step could commit after its compensation ran, and money would be created.
WAIT_FOR_OUTCOME = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
DB_TIMEOUT = timedelta(seconds=30)
GATEWAY_TIMEOUT = timedelta(seconds=60)
# Short database steps run as local activities: in the worker that runs the workflow task, recorded as one
# marker each, without a round trip through the task queue (a wallet checkout goes from seven workflow tasks to
# one or two). Histories recorded before this patch keep replaying with regular activities.
LOCAL_DB_STEPS = "db-steps-as-local-activities"

A = TypeVar("A")
R = TypeVar("R")


def local_db_steps() -> bool:
    """Whether this run executes its database steps as local activities (every run started since the patch)."""
    return workflow.patched(LOCAL_DB_STEPS)


def db_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> Awaitable[R]:
    """Run a database activity method: retried until it succeeds or fails for a business reason.

    A local activity: a crash mid-step fails the workflow task, whose retry runs the step again under the
    same key, so the first outcome still wins.
    """
    if local_db_steps():
        return _local_step(activity, arg)
    return batch_step(activity, arg)


async def _local_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> R:
    try:
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=MONEY_RETRY,
            cancellation_type=WAIT_FOR_OUTCOME,
        )
    except ApplicationError as exc:
        # A local activity's business failure reaches the workflow bare; wrap it as a remote activity's
        # arrives, so every caller (and business_code) handles one shape.
        raise ActivityError(
            str(exc),
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=getattr(activity, "__name__", ""),
            activity_id="",
            retry_state=RetryState.NON_RETRYABLE_FAILURE,
        ) from exc


def batch_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> Awaitable[R]:
    """Run a database activity method as a regular activity (long batches: visible and retried on their own)."""
    return workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=MONEY_RETRY,
        cancellation_type=WAIT_FOR_OUTCOME,
    )


def gateway_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> Awaitable[R]:
    """Run a gateway activity method (same key on every attempt; unknown outcomes resolved by look-up)."""
    return workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=GATEWAY_TIMEOUT,
        retry_policy=MONEY_RETRY,
        cancellation_type=WAIT_FOR_OUTCOME,
    )


NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


async def notify(kind: str, recipients: list[str], data: dict[str, Any], *, step: str) -> None:
    """Tell users what happened. Best effort: a failing notification never fails the saga."""
    note = NotifyInput(
        idempotency_key=f"{workflow.info().workflow_id}:{step}", kind=kind, recipients=recipients, data=data
    )
    options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": NOTIFY_RETRY}
    try:
        if local_db_steps():
            await workflow.execute_local_activity_method(NotifyActivities.notify, note, **options)
        else:
            await workflow.execute_activity_method(NotifyActivities.notify, note, **options)
    except FailureError:  # ActivityError, or a local activity's failure, which arrives bare
        workflow.logger.warning("notification %s not stored", kind)


def business_code(exc: BaseException) -> str | None:
    """The stable code of a business failure raised by an activity, or None for anything else."""
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    if isinstance(cause, ApplicationError) and cause.non_retryable and cause.type:
        return cause.type
    return None


def set_search_attributes(
    *,
    kind: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    order_id: str | None = None,
) -> None:
    updates: list[SearchAttributeUpdate[Any]] = []
    for key, text_value in (
        (sa.PW_KIND, kind),
        (sa.PW_STATUS, status),
        (sa.PW_OWNER, owner),
        (sa.PW_CURRENCY, currency),
        (sa.PW_ORDER_ID, order_id),
    ):
        if text_value is not None:
            updates.append(key.value_set(text_value))
    if amount is not None:
        updates.append(sa.PW_AMOUNT.value_set(amount))
    if updates:
        workflow.upsert_search_attributes(updates)


async def finish_forward(step: Awaitable[R]) -> R:
    """Run ``step`` to its end even if the workflow is cancelled meanwhile: for the steps after a saga's point
    of no return (money has moved), where a cancellation can no longer undo anything and must not stop the
    saga half-way. Business failures of ``step`` still raise."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
            workflow.logger.info("cancellation after the point of no return: finishing forward")


class Saga:
    """Compensations, registered before the step they undo, run in reverse; each retried until it succeeds.

    A compensation must be harmless when its step did nothing (it looks up what the step did by key).
    """

    def __init__(self) -> None:
        self._compensations: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def add(self, name: str, compensation: Callable[[], Awaitable[Any]]) -> None:
        self._compensations.append((name, compensation))

    def discard(self, name: str) -> None:
        self._compensations = [c for c in self._compensations if c[0] != name]

    async def compensate(self) -> dict[str, Any]:
        """Run every compensation, newest first; returns each one's result by name.

        A compensation refused for a business reason (e.g. a reversal whose money was spent meanwhile) does not
        stop the others: all of them run, then the saga fails with ``compensation_failed`` for an operator.
        """
        done: dict[str, Any] = {}
        refused: list[str] = []
        while self._compensations:
            name, compensation = self._compensations.pop()
            workflow.logger.info("compensating %s", name)
            try:
                done[name] = await compensation()
            except ActivityError as exc:
                code = business_code(exc)
                if code is None:
                    raise
                workflow.logger.error("compensation %s refused: %s", name, code)
                refused.append(f"{name}: {code}")
        if refused:
            raise ApplicationError(
                "compensations refused: " + "; ".join(refused), type="compensation_failed", non_retryable=True
            )
        return done
