"""The compensation-failure queue's audit trail (payments DB ``saga_audit``): the saga asking for an operator,
and every operator decision. Counted and logged once, when the row is inserted (a retried step finds it)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from db.engine import in_transaction
from db.repositories import saga_audit
from payweave.contracts.attention import SagaAuditEntry, SagaAuditInput
from payweave.metrics import SAGA_DECISIONS, SAGAS_NEEDING_ATTENTION

log = logging.getLogger("payweave.attention")


def announce(entry: SagaAuditEntry) -> None:
    """Alert on a saga that needs an operator (ERROR line + counter); note a decision (WARNING + counter)."""
    if entry.action == "needs_attention":
        SAGAS_NEEDING_ATTENTION.labels(entry.saga_kind).inc()
        log.error(
            "saga needs attention: %s (%s) compensation %s gave up: %s. Decide with `payweave sagas retry %s` "
            "or `payweave sagas resolve %s --reason ...`",
            entry.saga_id,
            entry.saga_kind,
            entry.compensation,
            entry.failure,
            entry.saga_id,
            entry.saga_id,
        )
        return
    SAGA_DECISIONS.labels(entry.saga_kind, entry.action).inc()
    log.warning(
        "operator %s decided %s for saga %s (%s)%s",
        entry.operator,
        entry.action,
        entry.saga_id,
        entry.compensation or entry.saga_kind,
        f": {entry.reason}" if entry.reason else "",
    )


async def record_audit(engine: AsyncEngine, entry: SagaAuditInput) -> SagaAuditEntry:
    """Insert the row once by its key; alert/count only the call that inserted it."""

    async def work(conn: AsyncConnection) -> SagaAuditEntry:
        return await saga_audit.record(conn, entry)

    saved = await in_transaction(engine, work)
    if saved.created:
        announce(saved)
    return saved


class SagaAuditActivities:
    def __init__(self, payments_engine: AsyncEngine) -> None:
        self._engine = payments_engine

    @activity.defn
    async def record_saga_audit(self, inp: SagaAuditInput) -> SagaAuditEntry:
        return await record_audit(self._engine, inp)
