"""Inputs and results of the operational workflows: the sweeper and the daily reconciliation (§5.7)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from payweave.contracts.payments import Gateway


class SweepInput(BaseModel):
    """One sweep. Each category looks at ``limit`` rows at most, ``concurrency`` of them at a time."""

    limit: int = 100
    concurrency: int = 8
    # Open payments are looked up at the gateway once past expiry, or once this old (lost webhooks heal fast).
    min_payment_age_seconds: int = 60
    # Stored webhook events still unrouted after this long are routed again (the API routes them at once).
    webhook_min_age_seconds: int = 10


class StalePayment(BaseModel):
    payment_id: str
    workflow_id: str
    purpose: str
    gateway: Gateway
    gateway_payment_id: str | None
    amount: int
    currency: str
    expires_at: datetime | None


class OverdueGroupBuy(BaseModel):
    group_buy_id: str
    workflow_id: str
    deadline: datetime


class ExpiredHold(BaseModel):
    hold_id: str
    saga_id: str | None
    wallet_id: str
    amount: int
    expires_at: datetime


class PendingOrder(BaseModel):
    """An order still ``pending`` past its expiry: its saga never started, or never finished it."""

    order_id: str
    workflow_id: str
    expires_at: datetime


class UnroutedWebhook(BaseModel):
    event_row_id: int
    provider: str
    event_id: str


class SweepSummary(BaseModel):
    """What one sweep looked at and what it did, by kind (``none``: looked at, nothing to do)."""

    examined: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    errors: int = 0

    @property
    def repairs(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind not in NOT_REPAIRS)


# Outcomes that change nothing: counted in the summary, not as repairs.
NOT_REPAIRS = frozenset({"none", "needs_attention"})


class ReconcileInput(BaseModel):
    window_hours: int = 48
    page_size: int = 100
    concurrency: int = 8


class ReconcilePageInput(BaseModel):
    run_id: str
    window_start: datetime
    window_end: datetime
    after_created_at: datetime | None = None
    after_id: str | None = None
    page_size: int = 100
    concurrency: int = 8


class Mismatch(BaseModel):
    """One disagreement between the gateway, the payments DB and the ledger about one payment."""

    kind: str
    payment_id: str
    expected: str
    actual: str
    subject: str = ""  # what inside the payment it is about (a refund id), '' for the payment itself


class ReconcilePageResult(BaseModel):
    checked: int
    mismatches: list[Mismatch]
    next_created_at: datetime | None = None
    next_id: str | None = None


class ReconciliationReport(BaseModel):
    run_id: str
    window_start: datetime
    window_end: datetime
    payments_checked: int
    mismatch_count: int
    mismatches: list[Mismatch]  # the first MAX_REPORTED; all of them are in reconciliation_mismatches


MAX_REPORTED = 500
