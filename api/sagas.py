"""Starting sagas: one Idempotency-Key end to end (ARCHITECTURE §4).

Idempotency-Key ─▶ workflow id "<kind>:<owner>:<key>" ─▶ resource id derived from it. The first request body
is remembered by hash; the workflow is started with USE_EXISTING while it runs and REJECT_DUPLICATE after it
closed, so any number of concurrent or later retries land on the one workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import request_hash
from db.engine import in_transaction
from db.repositories import payments as payments_repo
from payweave.errors import ServiceUnavailable
from payweave.ids import derived_id, workflow_id
from payweave.logs import bind_context
from payweave.metrics import SAGAS_STARTED

T = TypeVar("T")


def saga_ids(kind: str, owner: str, idempotency_key: str, prefix: str) -> tuple[str, str]:
    wf_id = workflow_id(kind, owner, idempotency_key)
    resource_id = derived_id(prefix, wf_id)
    bind_context(saga_id=wf_id, resource_id=resource_id)  # on every later log line of this request
    return wf_id, resource_id


async def claim_key(
    engine: AsyncEngine,
    *,
    wf_id: str,
    resource_id: str,
    scope: str,
    body: BaseModel,
    then: Callable[[AsyncConnection], Awaitable[object]] | None = None,
) -> bool:
    """True for the first request with this key; False for a retry (same body). ``then`` runs in the same
    transaction after a first claim (the resource recorded together with its key, or neither)."""
    digest = request_hash(scope, body)

    async def work(conn: AsyncConnection) -> bool:
        first = await payments_repo.claim_idempotency_key(
            conn, workflow_id=wf_id, request_hash=digest, resource_id=resource_id
        )
        if first and then is not None:
            await then(conn)
        return first

    return await in_transaction(engine, work)


async def recorded_answer(
    first: bool, client: Client, wf_id: str, load: Callable[[], Awaitable[T | None]]
) -> T | None:
    """For a retry whose saga's history is gone (closed and past Temporal's retention), the recorded resource:
    starting the workflow again would re-run a finished saga. None when the request should go on as usual."""
    if first:
        return None
    recorded = await load()
    if recorded is None:
        return None  # the first request never got as far as starting the saga: start it now
    try:
        await client.get_workflow_handle(wf_id).describe()
        return None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return recorded
        raise ServiceUnavailable(
            "the workflow service did not answer; retry with the same Idempotency-Key"
        ) from exc


async def start_saga(
    client: Client,
    *,
    run: Any,
    arg: BaseModel,
    wf_id: str,
    task_queue: str,
    search_attributes: TypedSearchAttributes,
) -> WorkflowHandle[Any, Any]:
    SAGAS_STARTED.labels(wf_id.split(":", 1)[0]).inc()
    try:
        return await client.start_workflow(
            run,
            arg,
            id=wf_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes,
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(wf_id)
    except RPCError as exc:
        # Temporal down or overloaded: nothing was started, and the key (with anything recorded under it) lets
        # a retry pick up where this request stopped.
        raise ServiceUnavailable(
            "the workflow service did not answer; retry with the same Idempotency-Key"
        ) from exc


async def workflow_id_for(engine: AsyncEngine, resource_id: str) -> str | None:
    async def work(conn: AsyncConnection) -> str | None:
        return await payments_repo.workflow_id_for_resource(conn, resource_id)

    return await in_transaction(engine, work)


M = TypeVar("M", bound=BaseModel)
ACCEPT_TIMEOUT_SECONDS = 15
QUERY_TIMEOUT = timedelta(seconds=3)


async def accepted_snapshot(
    handle: WorkflowHandle[Any, Any], update: Any, result_type: type[M], queries: tuple[str, ...]
) -> M | None:
    """What the saga answered when it accepted the request (its ``accepted`` update), the same for every retry.

    When the update cannot answer (the workflow closed already, the gateway is slow, Temporal hiccups), the
    workflow's queries are asked instead, a few times; None when nothing could be learned from Temporal — the
    caller then answers from the database."""
    try:
        result = await asyncio.wait_for(handle.execute_update(update), ACCEPT_TIMEOUT_SECONDS)
        return result_type.model_validate(result.model_dump())
    except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError, TimeoutError):
        pass
    for attempt in range(3):
        try:
            for name in queries:
                # A query waits for a worker; with none about (restarting), give up and answer from the DB.
                view = await handle.query(name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT)
                if view is not None:
                    return result_type.model_validate(view)
            return None
        except RPCError:
            await asyncio.sleep(0.1 * (attempt + 1))
    return None


UPDATE_ATTEMPTS = 8


async def execute_update_across_runs(
    handle: WorkflowHandle[Any, Any], update: Any, *args: Any, update_id: str
) -> Any:
    """Execute an Update, again when the server aborts it because the workflow continued as new meanwhile
    (UNAVAILABLE, "workflow update was aborted"): the next run takes it. Same update id every time, and the
    handlers are idempotent by request key, so a repeat never applies twice."""
    for attempt in range(UPDATE_ATTEMPTS):
        try:
            return await handle.execute_update(update, *args, id=update_id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.UNAVAILABLE or attempt == UPDATE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
