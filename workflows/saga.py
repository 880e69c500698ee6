"""What every saga shares: activity options, search attributes, compensations run in reverse."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, RetryState
from temporalio.exceptions import TimeoutError as StepTimeout
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from activities.saga_audit import SagaAuditActivities
    from payweave import search_attributes as sa
    from payweave.contracts.activities import NotifyInput
    from payweave.contracts.attention import SAGA_ACTOR, AttentionView, OperatorDecision, SagaAuditInput
    from payweave.ids import step_key

# Money-moving steps retry until they succeed or fail for a business reason (non-retryable ApplicationError).
# Every attempt carries the same step key, so a retry can never move money twice.
MONEY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
# A compensation gives up after this many attempts of one of its steps (or at once, when refused for a business
# reason) and the saga waits for an operator (``decide_compensation``: retry or resolve). With MONEY_RETRY's
# backoff, 25 attempts are about nine minutes of trying: more than QUALITY R6's 20 transient failures, a worker
# restart or a database failover; few enough that a compensation which cannot finish by itself (a bug, a
# constraint, a gateway that keeps refusing) raises an alert within ten minutes instead of retrying unseen.
COMPENSATION_ATTEMPTS = 25
COMPENSATION_RETRY = RetryPolicy(
    initial_interval=MONEY_RETRY.initial_interval,
    backoff_coefficient=MONEY_RETRY.backoff_coefficient,
    maximum_interval=MONEY_RETRY.maximum_interval,
    maximum_attempts=COMPENSATION_ATTEMPTS,
)
# A compensation that gives up after this patch parks its saga for an operator (a run open at the upgrade too);
# histories recorded before replay the old way (a refusal ended the saga with ``compensation_failed`` after the
# other compensations ran). Asked only when one gives up, so other histories' command sequences are unchanged.
COMPENSATION_QUEUE = "compensations-wait-for-an-operator"
# Set while a compensation runs (per asyncio task context): its steps retry under COMPENSATION_RETRY.
_undoing: ContextVar[bool] = ContextVar("payweave_undoing", default=False)
# When the saga is cancelled while a money step is in flight, wait for that attempt's outcome before
# compensating: otherwise the step could commit after its compensation ran, and money would be created.
WAIT_FOR_OUTCOME = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
DB_TIMEOUT = timedelta(seconds=30)
GATEWAY_TIMEOUT = timedelta(seconds=60)
# Short database steps run as local activities: in the worker that runs the workflow task, recorded as one
# marker each, without a round trip through the task queue (a wallet checkout goes from seven workflow tasks to
# one or two). Histories recorded before this patch keep replaying with regular activities.
LOCAL_DB_STEPS = "db-steps-as-local-activities"
# A checkout in one workflow task (runs started since this patch):
# * its gateway create call runs as a local activity too, so a card confirmed at once (a payment method given)
#   is charged, settled and finished in the checkout's first workflow task, instead of a task to schedule the
#   call, an activity task and a second workflow task. A crash mid-call fails the workflow task; its retry
#   calls again with the same idempotency key and the gateway answers with the object it made;
# * search attributes are upserted only when they change what Temporal already shows: none at the start when
#   the starter set them all (the API does), and no ``awaiting_payment`` when the gateway confirmed at once.
# Each upsert is a visibility write on the server, which is the platform's ceiling (docs/benchmarks.md, B2).
# It implies LOCAL_DB_STEPS, whose own marker such a run no longer records (local_db_steps).
CHECKOUT_ONE_TASK = "checkout-in-one-workflow-task"
# A checkout's gateway payment row is recorded with its order (one step, one transaction) and marked paid with
# the order's final status (one step, one transaction), for runs started since this patch: a split checkout
# paid at once is five local steps instead of seven. Each local activity costs the worker more CPU in the SDK's
# round trip (activation, payload visits, the activity task) than its database work (docs/benchmarks.md, B2).
# It implies CHECKOUT_ONE_TASK (a new run records this marker only).
CHECKOUT_PAYMENT_WITH_ORDER = "checkout-payment-with-order"
# A failure event is a claim too (a late, reordered or forged ``payment_failed`` for a card that was paid):
# since this patch a checkout looks the payment up before it gives up on it, as deposits do. Asked only when a
# failure arrives, so other histories' command sequences are unchanged.
FAILURE_LOOKED_UP = "checkout-failure-looked-up"

A = TypeVar("A")
R = TypeVar("R")


def local_db_steps() -> bool:
    """Whether this run executes its database steps as local activities (every run started since the patch).

    A later patch that implies it (CHECKOUT_ONE_TASK) sets ``_db_steps_local`` on the workflow instead, so a
    new run records one patch marker (and one TemporalChangeVersion upsert), not two."""
    if getattr(workflow.instance(), "_db_steps_local", False):
        return True
    return workflow.patched(LOCAL_DB_STEPS)


def step_retry() -> RetryPolicy:
    """Forward steps retry until they succeed or fail for a business reason; a compensation's steps give up after
    COMPENSATION_ATTEMPTS (and the saga asks an operator)."""
    return COMPENSATION_RETRY if _undoing.get() else MONEY_RETRY


def db_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> Awaitable[R]:
    """Run a database activity method: retried until it succeeds or fails for a business reason.

    A local activity: a crash mid-step fails the workflow task, whose retry runs the step again under the
    same key, so the first outcome still wins.
    """
    if local_db_steps():
        return _local_step(activity, arg)
    return batch_step(activity, arg)


async def _local_step(
    activity: Callable[[Any, A], Awaitable[R]], arg: A, start_to_close: timedelta = DB_TIMEOUT
) -> R:
    try:
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=start_to_close,
            retry_policy=step_retry(),
            cancellation_type=WAIT_FOR_OUTCOME,
        )
    except (ApplicationError, StepTimeout) as exc:
        # A local activity's failure reaches the workflow bare (a business failure, or the last attempt's error
        # once a compensation's attempts ran out); wrap it as a remote activity's arrives, so every caller (and
        # business_code) handles one shape.
        refused = isinstance(exc, ApplicationError) and exc.non_retryable
        raise ActivityError(
            str(exc),
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=getattr(activity, "__name__", ""),
            activity_id="",
            retry_state=RetryState.NON_RETRYABLE_FAILURE if refused else RetryState.MAXIMUM_ATTEMPTS_REACHED,
        ) from exc


def batch_step(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> Awaitable[R]:
    """Run a database activity method as a regular activity (long batches: visible and retried on their own)."""
    return workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=DB_TIMEOUT,
        retry_policy=step_retry(),
        cancellation_type=WAIT_FOR_OUTCOME,
    )


def gateway_step(activity: Callable[[Any, A], Awaitable[R]], arg: A, *, local: bool = False) -> Awaitable[R]:
    """Run a gateway activity method (same key on every attempt; unknown outcomes resolved by look-up); as a
    local activity when ``local`` (a short call whose result the same workflow task goes on with)."""
    if local:
        return _local_step(activity, arg, GATEWAY_TIMEOUT)
    return workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=GATEWAY_TIMEOUT,
        retry_policy=step_retry(),
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
    only_changes: bool = False,
) -> None:
    """Upsert the given attributes; with ``only_changes``, just those that differ from what Temporal shows."""
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
    if only_changes:
        shown = workflow.info().typed_search_attributes
        updates = [u for u in updates if shown.get(u.key) != u.value]
    if updates:
        workflow.upsert_search_attributes(updates)


# A saga's first step records its row; when that is refused for a business reason nothing has moved, so since
# this patch the saga ends ``failed`` with the code (its status query and search attribute say so) and the
# workflow completes; before, the refusal failed the workflow and its status said ``pending`` for ever (found by
# R5). Asked only when the first step is refused.
FIRST_RECORD_REFUSED = "refused-first-record-ends-failed"


class RecordRefused(Exception):
    """The saga's first record was refused (``code``): end the saga failed, nothing to compensate."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def first_record(step: Awaitable[R]) -> R:
    """Run the saga's first step; a business refusal raises RecordRefused (runs since FIRST_RECORD_REFUSED)."""
    try:
        return await step
    except ActivityError as exc:
        code = business_code(exc)
        if code is None or not workflow.patched(FIRST_RECORD_REFUSED):
            raise
        raise RecordRefused(code) from exc


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


NEEDS_ATTENTION = "needs_attention"  # PwStatus while a compensation waits for an operator


@dataclass(frozen=True)
class Resolved:
    """The result of a compensation an operator resolved by hand (``payweave sagas resolve``)."""

    operator: str
    reason: str


def gave_up(exc: BaseException) -> tuple[str, bool] | None:
    """Why a compensation's step gave up, and whether it was refused (a business failure) rather than out of
    attempts; None for anything else (a cancellation), which is not the operator's to decide."""
    if not isinstance(exc, ActivityError):
        return None
    cause = exc.cause
    detail = cause.message if isinstance(cause, FailureError) else str(cause or exc)
    code = business_code(exc)
    if code is not None:
        return f"refused: {code}: {detail}", True
    if exc.retry_state in (RetryState.MAXIMUM_ATTEMPTS_REACHED, RetryState.TIMEOUT):
        return f"still failing after {COMPENSATION_ATTEMPTS} attempts: {detail}", False
    return None


class OperatorDesk:
    """Where a saga waits for an operator when one of its compensations gave up (the compensation-failure queue).

    While it waits: ``PwNeedsAttention = true``, ``PwStatus = needs_attention``, the ``attention`` memo and the
    current details say what failed; an ERROR line and ``payweave_sagas_needing_attention_total`` alert (written
    with the ``saga_audit`` row). The ``decide_compensation`` Update (``AwaitsOperator``) answers it.
    """

    def __init__(self) -> None:
        self.view: AttentionView | None = None
        self._decision: OperatorDecision | None = None
        self._asked = 0  # how many times this saga has asked
        self._answered = 0  # how many of those decisions are recorded

    def check(self, decision: OperatorDecision) -> None:
        """Refuse a decision nothing waits for, or a resolve without a reason (the Update's validator)."""
        if self.view is None or self.view.state != "waiting" or self._decision is not None:
            state = f" (compensation {self.view.compensation}: {self.view.state})" if self.view else ""
            raise ApplicationError(
                f"the saga is not waiting for an operator's decision{state}",
                type="not_waiting",
                non_retryable=True,
            )
        if not decision.operator.strip():
            raise ApplicationError(
                "a decision names its operator", type="validation_error", non_retryable=True
            )
        if decision.action == "resolve" and not (decision.reason or "").strip():
            raise ApplicationError(
                "resolving by hand needs a reason (what was done, where)",
                type="reason_required",
                non_retryable=True,
            )

    async def decide(self, decision: OperatorDecision) -> AttentionView:
        """Take the decision; answer once the saga has recorded it (``saga_audit``)."""
        self.check(decision)  # again: two decisions validated in one activation both passed the validator
        self._decision = decision
        asked = self._asked
        await workflow.wait_condition(lambda: self._answered >= asked)
        assert self.view is not None
        return self.view

    @property
    def note(self) -> str:
        """For the description of a journal a compensation posts after an operator's decision with a reason."""
        view = self.view
        if view is None or view.state == "waiting" or not view.reason:
            return ""
        return (
            f" ({view.operator} decided {'retry' if view.state == 'retrying' else 'resolve'}: {view.reason})"
        )

    async def ask(self, compensation: str, failure: str, refused: bool) -> OperatorDecision:
        """Show that the saga needs attention, record it, and wait for the operator's decision (recorded too)."""
        self._asked += 1
        asked = self._asked
        info = workflow.info()
        before = info.typed_search_attributes.get(sa.PW_STATUS)
        self.view = AttentionView(
            state="waiting",
            compensation=compensation,
            failure=failure,
            refused=refused,
            since=workflow.now(),
            times=asked,
            status_before=before,
        )
        self._show(NEEDS_ATTENTION)
        workflow.logger.error(
            "compensation %s gave up (%s): waiting for an operator's retry or resolve", compensation, failure
        )
        await self._audit(f"attention:{asked}", "needs_attention", SAGA_ACTOR, failure=failure)
        while self._decision is None:
            try:
                await workflow.wait_condition(lambda: self._decision is not None)
            except asyncio.CancelledError:
                # The saga is compensating already: a cancellation cannot undo more. The operator decides.
                workflow.logger.warning("cancellation while %s waits for an operator: ignored", compensation)
        decision = self._decision
        await self._audit(f"decision:{asked}", decision.action, decision.operator, reason=decision.reason)
        self.view = self.view.model_copy(
            update={
                "state": "retrying" if decision.action == "retry" else "resolved",
                "operator": decision.operator,
                "reason": decision.reason,
                "decided_at": workflow.now(),
            }
        )
        self._decision = None
        self._answered = asked
        self._show(before)
        return decision

    async def _audit(
        self, step: str, action: str, operator: str, *, failure: str | None = None, reason: str | None = None
    ) -> None:
        assert self.view is not None
        info = workflow.info()
        entry = SagaAuditInput.model_validate(
            {
                "idempotency_key": step_key(info.workflow_id, step),
                "saga_id": info.workflow_id,
                "saga_kind": info.typed_search_attributes.get(sa.PW_KIND) or info.workflow_type,
                "action": action,
                "operator": operator,
                "compensation": self.view.compensation,
                "failure": failure,
                "reason": reason,
            }
        )
        # Recorded even if a cancellation arrives meanwhile (the step is not the cancellation's to stop).
        await finish_forward(db_step(SagaAuditActivities.record_saga_audit, entry))

    def _show(self, status: str | None) -> None:
        """Search attributes, memo and current details (the Web UI's summary) for the desk's state."""
        view = self.view
        assert view is not None
        waiting = view.state == "waiting"
        workflow.upsert_search_attributes(
            [
                sa.PW_NEEDS_ATTENTION.value_set(waiting),
                sa.PW_STATUS.value_set(status) if status else sa.PW_STATUS.value_unset(),
            ]
        )
        workflow.upsert_memo({"attention": view.model_dump(mode="json")})
        wf_id = workflow.info().workflow_id
        if waiting:
            details = (
                f"**Needs attention**: compensation `{view.compensation}` gave up: {view.failure}. "
                f"Decide with `payweave sagas retry {wf_id}` or "
                f'`payweave sagas resolve {wf_id} --reason "..."` (docs/sagas.md, A failed compensation).'
            )
        else:
            details = f"Compensation `{view.compensation}`: {view.state} by {view.operator}" + (
                f": {view.reason}" if view.reason else ""
            )
        workflow.set_current_details(details)


FORWARD_QUEUE = "forward-steps-wait-for-operator"


async def forward(desk: OperatorDesk | None, name: str, step: Callable[[], Awaitable[R]]) -> R | Resolved:
    """Run a step after the saga's point of no return (the money has moved): nothing before it may be undone
    any more, so a refusal waits for an operator's decision (``retry`` runs it again, ``resolve`` takes it as
    done by hand) instead of failing the saga or compensating; a cancellation cannot stop it either.
    (Runs from before this patch: the refusal raises, as it did.)"""
    while True:
        try:
            return await finish_forward(step())
        except ActivityError as exc:
            why = gave_up(exc)
            if why is None or desk is None or not workflow.patched(FORWARD_QUEUE):
                raise
            failure, refused = why
        decision = await desk.ask(name, failure, refused)
        if decision.action == "resolve":
            return Resolved(decision.operator, decision.reason or "")


class AwaitsOperator:
    """The Update and query by which an operator decides about a compensation that gave up. A workflow using
    it sets ``self._desk = OperatorDesk()`` in ``__init__`` and hands it to its ``Saga``."""

    _desk: OperatorDesk

    @workflow.update
    async def decide_compensation(self, decision: OperatorDecision) -> AttentionView:
        """``retry`` runs the compensation again; ``resolve`` (reason required) takes it as done by hand. Answers
        once the decision is recorded; refused when no compensation waits for one."""
        return await self._desk.decide(decision)

    @decide_compensation.validator
    def _validate_decision(self, decision: OperatorDecision) -> None:
        self._desk.check(decision)

    @workflow.query
    def attention(self) -> AttentionView | None:
        """The latest compensation that gave up and what was decided (None: none ever did)."""
        return self._desk.view


class Saga:
    """Compensations, registered before the step they undo, run in reverse; each retried until it succeeds,
    or — when it gives up (refused, or COMPENSATION_ATTEMPTS used) — until an operator decides about it.

    A compensation must be harmless when its step did nothing (it looks up what the step did by key).
    """

    def __init__(self, desk: OperatorDesk | None = None) -> None:
        self._compensations: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._desk = desk

    def add(self, name: str, compensation: Callable[[], Awaitable[Any]]) -> None:
        self._compensations.append((name, compensation))

    def discard(self, name: str) -> None:
        self._compensations = [c for c in self._compensations if c[0] != name]

    async def compensate(self) -> dict[str, Any]:
        """Run every compensation, newest first; returns each one's result by name (``Resolved`` for one an
        operator resolved by hand).

        A compensation that gives up waits for an operator: ``retry`` runs it again, ``resolve`` goes on with the
        next. (Runs from before the queue existed: a refused compensation does not stop the others, then the saga
        fails with ``compensation_failed``.)
        """
        done: dict[str, Any] = {}
        refused: list[str] = []
        while self._compensations:
            name, compensation = self._compensations.pop()
            workflow.logger.info("compensating %s", name)
            try:
                done[name] = await self._undo(name, compensation)
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

    async def _undo(self, name: str, compensation: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            undoing = _undoing.set(True)
            try:
                return await compensation()
            except ActivityError as exc:
                why = gave_up(exc)
                desk = self._desk
                if why is None or desk is None or not workflow.patched(COMPENSATION_QUEUE):
                    raise
                failure, refused = why
            finally:
                _undoing.reset(undoing)
            decision = await desk.ask(name, failure, refused)
            if decision.action == "resolve":
                return Resolved(decision.operator, decision.reason or "")
