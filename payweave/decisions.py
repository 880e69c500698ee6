"""``payweave sagas retry|resolve|cancel ID``: an operator acts on a saga.

* ``retry`` / ``resolve`` answer a saga whose compensation gave up (``PwNeedsAttention = true``) through its
  ``decide_compensation`` Update; the saga records the decision in ``saga_audit`` itself, and its validator
  refuses a decision when nothing waits for one.
* ``cancel`` takes the saga's own cancel path, so its compensations run: the ``cancel`` Update of a checkout or
  a group buy, a Temporal cancellation for the others. The command records it in ``saga_audit``.

The operator's name comes from ``--operator`` (default: the login name, ``$USER``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from payweave import search_attributes as sa
from payweave.contracts.attention import AttentionView, OperatorDecision, SagaAuditInput
from payweave.contracts.group_buy import CancelGroupBuy
from payweave.contracts.sagas import CancelCheckout
from payweave.operator import SagaNotFound, TemporalUnavailable, connect_or_fail, ui_link
from payweave.settings import Settings

DECIDE_UPDATE = "decide_compensation"
OPERATOR_CANCEL = (
    "canceled_by_operator"  # the failure code a checkout or group buy cancelled this way ends with
)
CANCEL_WAIT_SECONDS = 60.0
T = TypeVar("T")


class Refused(Exception):
    """The saga refused the action: nothing waits for a decision, it is closed, a reason is missing, …"""


@dataclass
class CancelOutcome:
    workflow_id: str
    closed: bool
    close_status: str
    status: str | None  # PwStatus after the cancellation
    needs_attention: bool


async def _running(
    client: Client, workflow_id: str
) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise SagaNotFound(f"no workflow {workflow_id!r}") from exc
        raise TemporalUnavailable(f"Temporal refused describe: {exc.message}") from exc
    if desc.status != WorkflowExecutionStatus.RUNNING:
        state = desc.status.name.lower() if desc.status else "closed"
        raise Refused(f"{workflow_id} is {state}: nothing to act on")
    return handle, desc


def _refusal(exc: WorkflowUpdateFailedError) -> Refused:
    cause = exc.cause
    code = getattr(cause, "type", None)
    return Refused(f"{cause}" + (f" ({code})" if code else ""))


async def decide(
    client: Client,
    workflow_id: str,
    action: Literal["retry", "resolve"],
    *,
    operator: str,
    reason: str | None,
) -> AttentionView:
    """Send the decision; returns the saga's attention view once it recorded it. Raises Refused, SagaNotFound."""
    handle, _ = await _running(client, workflow_id)
    decision = OperatorDecision(action=action, operator=operator, reason=reason)
    try:
        view: AttentionView = await handle.execute_update(DECIDE_UPDATE, decision, result_type=AttentionView)
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from exc
    except RPCError as exc:
        raise Refused(f"Temporal refused the decision: {exc.message}") from exc
    return view


async def record_cancel(
    settings: Settings, workflow_id: str, kind: str, operator: str, reason: str | None
) -> None:
    from db.engine import make_engine
    from db.repositories import saga_audit

    entry = SagaAuditInput(
        idempotency_key=f"{workflow_id}:cancel:{uuid.uuid4().hex}",
        saga_id=workflow_id,
        saga_kind=kind,
        action="cancel",
        operator=operator,
        reason=reason,
    )
    engine = make_engine(settings.payments_database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await saga_audit.record(conn, entry)
    finally:
        await engine.dispose()


async def cancel(
    client: Client,
    settings: Settings,
    workflow_id: str,
    *,
    operator: str,
    reason: str | None,
    wait_seconds: float = CANCEL_WAIT_SECONDS,
) -> CancelOutcome:
    """Cancel through the saga's own path, record it, and wait (bounded) for the saga to close."""
    handle, desc = await _running(client, workflow_id)
    if desc.typed_search_attributes.get(sa.PW_NEEDS_ATTENTION):
        raise Refused(
            f"{workflow_id} is compensating already and waits for an operator: "
            f"decide with `payweave sagas retry` or `payweave sagas resolve`"
        )
    why = f"{operator}: {reason}" if reason else operator
    try:
        if desc.workflow_type == "CheckoutWorkflow":
            await handle.start_update(
                "cancel", CancelCheckout(reason=OPERATOR_CANCEL), wait_for_stage=WorkflowUpdateStage.ACCEPTED
            )
        elif desc.workflow_type == "GroupBuyWorkflow":
            await handle.start_update(
                "cancel",
                CancelGroupBuy(reason=OPERATOR_CANCEL, by=operator),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
        else:
            await handle.cancel(reason=f"payweave sagas cancel by {why}")
    except WorkflowUpdateFailedError as exc:
        raise _refusal(exc) from exc
    except RPCError as exc:
        raise Refused(f"Temporal refused the cancellation: {exc.message}") from exc
    kind = desc.typed_search_attributes.get(sa.PW_KIND) or desc.workflow_type
    await record_cancel(settings, workflow_id, kind, operator, reason)
    closed = True
    try:
        await asyncio.wait_for(handle.result(), timeout=wait_seconds)
    except WorkflowFailureError:
        pass  # a Temporal cancellation ends the workflow cancelled (compensated): that is the expected end
    except TimeoutError:
        closed = False
    after = await handle.describe()
    return CancelOutcome(
        workflow_id=workflow_id,
        closed=closed,
        close_status=after.status.name.lower() if after.status else "",
        status=after.typed_search_attributes.get(sa.PW_STATUS),
        needs_attention=bool(after.typed_search_attributes.get(sa.PW_NEEDS_ATTENTION)),
    )


async def _act(
    settings: Settings, console: Console, client: Client | None, act: Callable[[Client], Awaitable[T]]
) -> tuple[T | None, int]:
    """Run ``act`` against Temporal; on a refusal or an unreachable server, say why and give the exit code
    (1 refused or not found, 2 Temporal unreachable)."""
    try:
        return await act(client or await connect_or_fail(settings)), 0
    except TemporalUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        return None, 2
    except (Refused, SagaNotFound) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        return None, 1


async def run_decide(
    settings: Settings,
    console: Console,
    workflow_id: str,
    action: Literal["retry", "resolve"],
    *,
    operator: str,
    reason: str | None,
    client: Client | None = None,
) -> int:
    """Exit codes: 0 decided, 1 refused or not found, 2 Temporal unreachable."""
    if action == "resolve" and not (reason or "").strip():
        console.print("[red]refused:[/red] resolving by hand needs a reason (--reason: what was done, where)")
        return 1
    view, code = await _act(
        settings,
        console,
        client,
        lambda c: decide(c, workflow_id, action, operator=operator, reason=reason),
    )
    if view is None:
        return code
    what = "runs again" if action == "retry" else "is taken as done by hand; the saga goes on"
    console.print(
        f"[green]{action}[/green] recorded for {workflow_id} by {view.operator}: compensation "
        f"{view.compensation} {what}" + (f" (reason: {view.reason})" if view.reason else "")
    )
    console.print(f"follow it: payweave sagas show {workflow_id}   {ui_link(settings, workflow_id)}")
    return 0


async def run_cancel(
    settings: Settings,
    console: Console,
    workflow_id: str,
    *,
    operator: str,
    reason: str | None,
    client: Client | None = None,
    wait_seconds: float = CANCEL_WAIT_SECONDS,
) -> int:
    """Exit codes: 0 cancelled (or still compensating), 1 refused or not found, 2 Temporal/DB unreachable."""
    try:
        outcome, code = await _act(
            settings,
            console,
            client,
            lambda c: cancel(
                c, settings, workflow_id, operator=operator, reason=reason, wait_seconds=wait_seconds
            ),
        )
    except (OSError, SQLAlchemyError) as exc:
        console.print(
            f"[red]error:[/red] the cancellation of {workflow_id} was requested, but saga_audit could not record "
            f"it ({type(exc).__name__}: {exc}); note it by hand"
        )
        return 2
    if outcome is None:
        return code
    attention = " — NEEDS ATTENTION: a compensation gave up" if outcome.needs_attention else ""
    if not outcome.closed:
        console.print(
            f"cancellation of {workflow_id} requested by {operator}; still compensating after {wait_seconds:.0f} s"
            f" (PwStatus {outcome.status}{attention}): follow it with payweave sagas show {workflow_id}"
        )
        return 0
    console.print(
        f"[green]cancelled[/green] {workflow_id} (by {operator}): workflow {outcome.close_status}, "
        f"PwStatus {outcome.status}{attention}"
    )
    return 0
