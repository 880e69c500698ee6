"""Starting sagas: one Idempotency-Key end to end (ARCHITECTURE §4).

Idempotency-Key ─▶ workflow id "<kind>:<owner>:<key>" ─▶ resource id derived from it. The first request body
is remembered by hash; the workflow is started with USE_EXISTING while it runs and REJECT_DUPLICATE after it
closed, so any number of concurrent or later retries land on the one workflow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import request_hash
from db.engine import in_transaction
from db.repositories import payments as payments_repo
from payweave.ids import derived_id, workflow_id
from payweave.metrics import SAGAS_STARTED


def saga_ids(kind: str, owner: str, idempotency_key: str, prefix: str) -> tuple[str, str]:
    wf_id = workflow_id(kind, owner, idempotency_key)
    return wf_id, derived_id(prefix, wf_id)


async def claim_key(
    engine: AsyncEngine, *, wf_id: str, resource_id: str, scope: str, body: BaseModel
) -> None:
    digest = request_hash(scope, body)

    async def work(conn: AsyncConnection) -> None:
        await payments_repo.claim_idempotency_key(
            conn, workflow_id=wf_id, request_hash=digest, resource_id=resource_id
        )

    await in_transaction(engine, work)


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


async def workflow_id_for(engine: AsyncEngine, resource_id: str) -> str | None:
    async def work(conn: AsyncConnection) -> str | None:
        return await payments_repo.workflow_id_for_resource(conn, resource_id)

    return await in_transaction(engine, work)
