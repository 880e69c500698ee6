"""The compensation-failure queue: a compensation that gave up waits for an operator's decision.

A saga whose compensation is refused (a business failure) or still fails after ``COMPENSATION_ATTEMPTS``
attempts sets ``PwNeedsAttention = true`` and waits for the ``decide_compensation`` Update: ``retry`` (run the
compensation again) or ``resolve`` (an operator has made it right by hand; a reason is mandatory). Every step
of that story is a row of the ``saga_audit`` table (payments DB).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

# What the saga itself writes as the actor of its own audit rows (an operator's name never looks like this).
SAGA_ACTOR = "payweave"

AuditAction = Literal["needs_attention", "retry", "resolve", "cancel", "release_transit"]


class OperatorDecision(BaseModel):
    """The ``decide_compensation`` Update's argument (``payweave sagas retry|resolve``)."""

    action: Literal["retry", "resolve"]
    operator: str
    reason: str | None = None  # mandatory (non-blank) to resolve; optional to retry


class AttentionView(BaseModel):
    """The ``attention`` query and the ``attention`` memo: the latest compensation that gave up, and what the
    operator decided about it."""

    state: Literal["waiting", "retrying", "resolved"]
    compensation: str  # the saga's name for it, e.g. ``reverse_debit``, ``close_gateway_payment``
    failure: str  # why it gave up: ``refused: <code>: …`` or ``failed N times: …``
    refused: bool  # a business refusal (no retry will help until something changes) vs retries exhausted
    since: datetime  # when the saga started waiting (workflow time)
    times: int  # how many times this saga has had to ask (1, then +1 for each failed retry)
    status_before: str | None = None  # PwStatus before it became ``needs_attention`` (restored after)
    operator: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None


class SagaAuditInput(BaseModel):
    """One row of ``saga_audit``: the saga asking for attention, or an operator's decision or cancellation."""

    idempotency_key: (
        str  # ``<workflow id>:attention:<n>`` / ``<workflow id>:decision:<n>``; cancel: per request
    )
    saga_id: str  # the workflow id
    saga_kind: str  # PwKind
    action: AuditAction
    operator: str  # ``payweave`` for the saga's own rows
    compensation: str | None = None
    failure: str | None = None
    reason: str | None = None


class SagaAuditEntry(SagaAuditInput):
    id: int
    created_at: datetime
    created: bool = False  # this call inserted it (a retried activity finds the first row: False)
