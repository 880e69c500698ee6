"""Operator views of the sagas: ``payweave sagas list`` and ``payweave sagas show ID``; and the operator's
actions: ``payweave sagas retry|resolve|cancel ID`` (payweave/decisions.py).

The views read: Temporal visibility (the Pw* search attributes), a workflow's description, its ``status`` query
and its history, the saga's journals in the wallet DB and its ``saga_audit`` rows in the payments DB.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError

from payweave import search_attributes as sa
from payweave.contracts.attention import SagaAuditEntry
from payweave.money import CURRENCY_EXPONENTS, format_amount
from payweave.settings import Settings

T = TypeVar("T")

# Activities that undo a step; a saga that ran any of them rolled something back.
COMPENSATIONS = frozenset({"reverse_journal", "release_hold", "release_stock", "cancel_gateway_payment"})


class TemporalUnavailable(RuntimeError):
    """Temporal could not be reached, or refused the request."""


def quote_value(value: str) -> str:
    """A string literal for a Temporal visibility query: single-quoted, backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build_query(
    *,
    kind: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    needs_attention: bool = False,
) -> str:
    """``PwKind = '…' AND …`` over the filters given; values are always quoted, never spliced raw."""
    clauses = [
        f"{key.name} = {quote_value(value)}"
        for key, value in ((sa.PW_KIND, kind), (sa.PW_STATUS, status), (sa.PW_OWNER, owner))
        if value
    ]
    if needs_attention:
        clauses.append(f"{sa.PW_NEEDS_ATTENTION.name} = true")
    # Only payweave's sagas carry PwKind: without a kind filter, ask for any.
    return " AND ".join(clauses) if clauses else f"{sa.PW_KIND.name} IS NOT NULL"


def ui_link(settings: Settings, workflow_id: str, run_id: str | None = None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    link = f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    return f"{link}/{quote(run_id, safe='')}/history" if run_id else link


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return ""
    if currency and currency in CURRENCY_EXPONENTS:
        return format_amount(amount, currency)
    return f"{amount} {currency or ''}".strip()


def _close_status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else ""


@dataclass
class SagaRow:
    workflow_id: str
    run_id: str
    workflow_type: str
    kind: str | None
    status: str | None
    owner: str | None
    amount: int | None
    currency: str | None
    order_id: str | None
    start_time: datetime
    close_status: str
    ui_url: str
    needs_attention: bool = False

    @classmethod
    def of(cls, wf: WorkflowExecution, settings: Settings) -> SagaRow:
        attrs = wf.typed_search_attributes
        return cls(
            workflow_id=wf.id,
            run_id=wf.run_id,
            workflow_type=wf.workflow_type,
            kind=attrs.get(sa.PW_KIND),
            status=attrs.get(sa.PW_STATUS),
            owner=attrs.get(sa.PW_OWNER),
            amount=attrs.get(sa.PW_AMOUNT),
            currency=attrs.get(sa.PW_CURRENCY),
            order_id=attrs.get(sa.PW_ORDER_ID),
            start_time=wf.start_time,
            close_status=_close_status(wf.status),
            ui_url=ui_link(settings, wf.id),
            needs_attention=bool(attrs.get(sa.PW_NEEDS_ATTENTION)),
        )


async def list_sagas(
    client: Client,
    settings: Settings,
    *,
    kind: str | None = None,
    status: str | None = None,
    owner: str | None = None,
    needs_attention: bool = False,
    limit: int = 50,
) -> list[SagaRow]:
    """The newest sagas matching the filters (Temporal visibility is eventually consistent: ~1 s)."""
    query = build_query(kind=kind, status=status, owner=owner, needs_attention=needs_attention)
    try:
        return [SagaRow.of(wf, settings) async for wf in client.list_workflows(query, limit=limit)]
    except RPCError as exc:
        raise TemporalUnavailable(f"Temporal refused the list ({query}): {exc.message}") from exc


def sagas_table(rows: list[SagaRow], *, title: str | None = None) -> Table:
    table = Table(title=title)
    for column in (
        "workflow id",
        "kind",
        "status",
        "owner",
        "amount",
        "order / resource",
        "started (UTC)",
        "close status",
        "Web UI",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.workflow_id,
            r.kind or "",
            f"[bold red]{r.status or ''} (needs attention)[/bold red]"
            if r.needs_attention
            else r.status or "",
            r.owner or "",
            money(r.amount, r.currency),
            r.order_id or "",
            r.start_time.strftime("%Y-%m-%d %H:%M:%S"),
            r.close_status,
            r.ui_url,
        )
    return table


@dataclass
class Step:
    activity: str
    outcome: str  # completed, failed, timed_out, canceled, running
    attempts: int = 1
    compensation: bool = False


@dataclass
class JournalView:
    id: int
    kind: str
    idempotency_key: str
    description: str | None
    currency: str
    created_at: datetime
    entries: list[tuple[str, int, int]] = field(default_factory=list)  # wallet, amount, balance_after


@dataclass
class SagaDetail:
    row: SagaRow
    close_time: datetime | None
    history_length: int
    state: Any  # the `status` query's answer (open workflows), else None
    state_error: str | None
    steps: list[Step]
    result: Any
    journals: list[JournalView]
    journals_error: str | None = None
    attention: dict[str, Any] | None = (
        None  # the ``attention`` memo: the compensation that gave up, the decision
    )
    audit: list[SagaAuditEntry] = field(default_factory=list)  # saga_audit rows, oldest first
    audit_error: str | None = None

    @property
    def compensations(self) -> list[Step]:
        return [s for s in self.steps if s.compensation and s.outcome == "completed"]


def _payload_json(payloads: Any) -> Any:
    """Decode JSON payloads of a history event (pydantic converter → plain JSON)."""
    values = []
    for p in payloads:
        try:
            values.append(json.loads(p.data))
        except (ValueError, UnicodeDecodeError):
            values.append(p.data.decode(errors="replace"))
    return values[0] if len(values) == 1 else values or None


def steps_from_history(events: Any) -> tuple[list[Step], Any]:
    """Activities in the order they were scheduled, each with its outcome; and the workflow's result."""
    steps: dict[int, Step] = {}
    result: Any = None
    for event in events:
        et = event.event_type
        if et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            steps[event.event_id] = Step(name, "running", compensation=name in COMPENSATIONS)
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if attrs.scheduled_event_id in steps:
                steps[attrs.scheduled_event_id].attempts = max(1, attrs.attempt)
        elif et in _OUTCOMES:
            outcome, attr_name = _OUTCOMES[et]
            scheduled = getattr(event, attr_name).scheduled_event_id
            if scheduled in steps:
                steps[scheduled].outcome = outcome
        elif et == EventType.EVENT_TYPE_MARKER_RECORDED:
            local = _local_step(event.marker_recorded_event_attributes)
            if local is not None:
                steps[event.event_id] = local
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            result = _payload_json(event.workflow_execution_completed_event_attributes.result.payloads)
        elif et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            result = {"failure": event.workflow_execution_failed_event_attributes.failure.message}
    return list(steps.values()), result


LOCAL_ACTIVITY_MARKER = "core_local_activity"


def _local_step(marker: Any) -> Step | None:
    """A local activity (database steps since the local-steps patch) is one marker in the history: its type and
    attempt are in the marker's ``data``, a failure in its ``failure``. A marker with a ``backoff`` is an attempt
    that failed and is retried after a timer (the final one comes later): not a step of its own."""
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    try:
        data = json.loads(marker.details["data"].payloads[0].data)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if data.get("backoff"):
        return None
    name = str(data.get("activity_type", "?"))
    outcome = "failed" if marker.HasField("failure") else "completed"
    return Step(
        name, outcome, attempts=max(1, int(data.get("attempt") or 1)), compensation=name in COMPENSATIONS
    )


_OUTCOMES = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("completed", "activity_task_completed_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("failed", "activity_task_failed_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("timed_out", "activity_task_timed_out_event_attributes"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("canceled", "activity_task_canceled_event_attributes"),
}


async def saga_journals(settings: Settings, workflow_id: str) -> list[JournalView]:
    """The ledger journals the saga posted (``journals.saga_id`` = workflow id), with their entries."""
    from db.engine import make_engine

    engine = make_engine(settings.wallet_database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            rows = await conn.execute(
                text(
                    "SELECT j.id, j.kind, j.idempotency_key, j.description, j.currency, j.created_at, "
                    "e.wallet_id, e.amount, e.balance_after "
                    "FROM journals j JOIN entries e ON e.journal_id = j.id "
                    "WHERE j.saga_id = :saga ORDER BY j.id, e.id"
                ),
                {"saga": workflow_id},
            )
            journals: dict[int, JournalView] = {}
            for r in rows:
                j = journals.setdefault(
                    r.id,
                    JournalView(r.id, r.kind, r.idempotency_key, r.description, r.currency, r.created_at),
                )
                j.entries.append((r.wallet_id, int(r.amount), int(r.balance_after)))
            return list(journals.values())
    finally:
        await engine.dispose()


async def saga_audit_rows(settings: Settings, workflow_id: str) -> list[SagaAuditEntry]:
    """The saga's ``saga_audit`` rows (payments DB): when it needed attention, what operators decided."""
    from db.engine import make_engine
    from db.repositories import saga_audit

    engine = make_engine(settings.payments_database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return await saga_audit.for_saga(conn, workflow_id)
    finally:
        await engine.dispose()


async def _read(database: str, read: Awaitable[T]) -> tuple[T | None, str | None]:
    """What a database read gave, or why it could not (shown to the operator; the rest of the view stands)."""
    try:
        return await read, None
    except (OSError, SQLAlchemyError) as exc:
        return None, f"{database} DB unreachable ({type(exc).__name__}): {exc}"


class SagaNotFound(LookupError):
    pass


async def show_saga(client: Client, settings: Settings, workflow_id: str) -> SagaDetail:
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status.name == "NOT_FOUND":
            raise SagaNotFound(
                f"no workflow {workflow_id!r} in namespace {settings.temporal_namespace}"
            ) from exc
        raise TemporalUnavailable(f"Temporal refused describe: {exc.message}") from exc
    state: Any = None
    state_error: str | None = None
    if desc.status == WorkflowExecutionStatus.RUNNING:
        try:
            state = await handle.query("status")
            if hasattr(state, "model_dump"):
                state = state.model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001 - shown to the operator, not fatal
            state_error = f"{type(exc).__name__}: {exc}"
    history = await handle.fetch_history()
    steps, result = steps_from_history(history.events)
    journals, journals_error = await _read("wallet", saga_journals(settings, workflow_id))
    audit, audit_error = await _read("payments", saga_audit_rows(settings, workflow_id))
    attention = (await desc.memo()).get("attention")
    return SagaDetail(
        row=SagaRow.of(desc, settings),
        close_time=desc.close_time,
        history_length=len(history.events),
        state=state,
        state_error=state_error,
        steps=steps,
        result=result,
        journals=journals or [],
        journals_error=journals_error,
        attention=attention if isinstance(attention, dict) else None,
        audit=audit or [],
        audit_error=audit_error,
    )


def render_detail(detail: SagaDetail, console: Console) -> None:
    r = detail.row
    summary = Table(show_header=False, title=f"saga {r.workflow_id}", title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    for label, value in (
        ("type", r.workflow_type),
        ("kind", r.kind or ""),
        ("status (PwStatus)", r.status or ""),
        ("owner", r.owner or ""),
        ("amount", money(r.amount, r.currency)),
        ("order / resource", r.order_id or ""),
        ("started", r.start_time.isoformat()),
        ("closed", detail.close_time.isoformat() if detail.close_time else ""),
        ("close status", r.close_status),
        ("run id", r.run_id),
        ("history events", str(detail.history_length)),
        ("Web UI", r.ui_url),
    ):
        summary.add_row(label, value)
    console.print(summary)
    if detail.state is not None:
        console.print("[bold]status query[/bold]")
        console.print_json(json.dumps(detail.state, default=str))
    elif detail.state_error:
        console.print(f"[yellow]status query failed:[/yellow] {detail.state_error}")
    if detail.result is not None:
        console.print("[bold]result[/bold]")
        console.print_json(json.dumps(detail.result, default=str))

    steps = Table(title="activities (in order)", title_justify="left")
    for column in ("#", "activity", "outcome", "attempts", "compensation"):
        steps.add_column(column)
    colours = {"completed": "green", "failed": "red", "timed_out": "red", "canceled": "yellow"}
    for i, s in enumerate(detail.steps, 1):
        colour = colours.get(s.outcome, "cyan")
        steps.add_row(
            str(i),
            s.activity,
            f"[{colour}]{s.outcome}[/{colour}]",
            str(s.attempts),
            "yes" if s.compensation else "",
        )
    console.print(steps)
    comp = detail.compensations
    console.print(
        f"compensations run: {', '.join(s.activity for s in comp)}" if comp else "compensations run: none"
    )

    journals = Table(title=f"ledger journals (saga_id = {r.workflow_id})", title_justify="left")
    for column in ("journal", "kind", "step key", "description", "wallet", "amount", "balance after"):
        journals.add_column(column, overflow="fold")
    for j in detail.journals:
        for n, (wallet_id, amount, balance_after) in enumerate(j.entries):
            first = n == 0
            journals.add_row(
                str(j.id) if first else "",
                j.kind if first else "",
                j.idempotency_key if first else "",
                (j.description or "") if first else "",
                wallet_id,
                money(amount, j.currency),
                money(balance_after, j.currency),
            )
    if detail.journals_error:
        console.print(f"[yellow]ledger journals unavailable:[/yellow] {detail.journals_error}")
    else:
        console.print(journals if detail.journals else "ledger journals: none")
    render_attention(detail, console)


def render_attention(detail: SagaDetail, console: Console) -> None:
    """The compensation-failure queue's part: what gave up, what to do, and the saga's audit trail."""
    attention = detail.attention
    if detail.row.needs_attention and attention:
        console.print(
            f"[bold red]NEEDS ATTENTION[/bold red]: compensation {attention.get('compensation')} gave up: "
            f"{attention.get('failure')}\n"
            f"  decide: payweave sagas retry {detail.row.workflow_id}   (run it again, once the cause is fixed)\n"
            f'          payweave sagas resolve {detail.row.workflow_id} --reason "..."   (made right by hand)'
        )
    elif attention:
        console.print(
            f"compensation {attention.get('compensation')} gave up ({attention.get('failure')}); "
            f"{attention.get('state')} by {attention.get('operator')}: {attention.get('reason') or '-'}"
        )
    if detail.audit_error:
        console.print(f"[yellow]operator decisions unavailable:[/yellow] {detail.audit_error}")
        return
    if not detail.audit:
        return
    table = Table(title="compensation queue and operator decisions (saga_audit)", title_justify="left")
    for column in ("at (UTC)", "action", "operator", "compensation", "failure / reason"):
        table.add_column(column, overflow="fold")
    for entry in detail.audit:
        table.add_row(
            entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.action,
            entry.operator,
            entry.compensation or "",
            entry.failure or entry.reason or "",
        )
    console.print(table)


async def connect_or_fail(settings: Settings) -> Client:
    from workers.client import connect

    try:
        return await connect(settings)
    except Exception as exc:  # noqa: BLE001 - any connect failure means the same to the operator
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {exc}. Is `payweave dev` running? "
            "Set PAYWEAVE_TEMPORAL_ADDRESS for another server."
        ) from exc


async def run_list(
    settings: Settings,
    console: Console,
    *,
    kind: str | None,
    status: str | None,
    owner: str | None,
    limit: int,
    needs_attention: bool = False,
    client: Client | None = None,
) -> int:
    filters: dict[str, Any] = {
        "kind": kind,
        "status": status,
        "owner": owner,
        "needs_attention": needs_attention,
    }
    try:
        client = client or await connect_or_fail(settings)
        rows = await list_sagas(client, settings, **filters, limit=limit)
    except TemporalUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    query = build_query(**filters)
    console.print(sagas_table(rows, title=f"{len(rows)} sagas ({query}, newest first, limit {limit})"))
    return 0


async def run_show(
    settings: Settings, console: Console, workflow_id: str, *, client: Client | None = None
) -> int:
    try:
        client = client or await connect_or_fail(settings)
        detail = await show_saga(client, settings, workflow_id)
    except TemporalUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except SagaNotFound as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    render_detail(detail, console)
    return 0
