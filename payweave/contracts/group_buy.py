"""Group buying: sessions, participants, bulk refunds — workflow inputs, snapshots and activity models."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from payweave.contracts.payments import Gateway

GroupBuyStatusName = Literal["open", "succeeded", "completed", "failed", "canceled", "refunded"]
JoinMethod = Literal["wallet", "gateway"]
ParticipantStatus = Literal[
    "joining",
    "held",
    "awaiting_payment",
    "paid",
    "captured",
    "declined",
    "expired",
    "late_refunded",
    "released",
    "refund_pending",
    "refunded",
    "refunded_to_wallet",
]


class GroupBuyTerms(BaseModel):
    """What the factory offers; fixed when the session is created (the fee too, whatever the settings later)."""

    group_buy_id: str
    factory: str
    factory_wallet_id: str
    product: str
    unit_price: int
    currency: str
    moq: int
    max_units: int | None = None
    deadline: datetime
    production_deadline: datetime | None = None
    fee_bps: int = 0
    close_when_moq_reached: bool = False


class GroupBuyCounts(BaseModel):
    """What a run hands to the next one on continue-as-new (per-participant state lives in the database)."""

    committed_units: int = 0  # joined and not declined/expired: held, paid or awaiting payment
    paid_units: int = 0  # wallet held + gateway paid
    participants: int = 0
    cancel_reason: str | None = None
    production_done: bool = False


class GroupBuyInput(BaseModel):
    terms: GroupBuyTerms
    counts: GroupBuyCounts | None = None  # set by continue-as-new
    joins_per_run: int = 2000  # continue as new after this many joins (or sooner, when Temporal suggests it)


class JoinRequest(BaseModel):
    request_key: str  # the caller's Idempotency-Key: the same join retried answers the same participation
    buyer: str
    quantity: int
    method: JoinMethod
    gateway: Gateway | None = None
    payment_method: str | None = None
    wallet_id: str | None = None  # resolved by the API for wallet joins; for gateway joins, refunds fall back


class Participation(BaseModel):
    id: str
    seq: int | None = None  # the participant's place in the session (cursor for listing pages)
    group_buy_id: str
    buyer: str
    quantity: int
    amount: int
    currency: str
    method: JoinMethod
    gateway: Gateway | None = None
    status: ParticipantStatus
    failure_code: str | None = None
    payment_id: str | None = None
    gateway_payment_id: str | None = None
    next_action: dict[str, object] | None = None
    order_id: str | None = None
    refund_id: str | None = None
    created_at: datetime | None = None


class CancelGroupBuy(BaseModel):
    reason: str
    by: str


class RefundProgress(BaseModel):
    total: int = 0
    done: int = 0
    released: int = 0
    refunded: int = 0
    refunded_to_wallet: int = 0
    pending: int = 0


class GroupBuyView(BaseModel):
    id: str
    status: GroupBuyStatusName
    factory: str
    product: str
    unit_price: int
    currency: str
    moq: int
    max_units: int | None = None
    deadline: datetime
    production_deadline: datetime | None = None
    fee_bps: int = 0
    close_when_moq_reached: bool = False
    committed_units: int = 0
    paid_units: int = 0
    participants: int = 0
    paid_amount: int | None = None
    fee_amount: int | None = None
    failure_code: str | None = None
    cancel_reason: str | None = None
    refund: RefundProgress | None = None


class Decision(BaseModel):
    status: GroupBuyStatusName
    paid_units: int
    paid_amount: int
    paid_participants: int


class DecideInput(BaseModel):
    group_buy_id: str
    cancel_reason: str | None = None


class BatchInput(BaseModel):
    group_buy_id: str
    workflow_id: str  # whose step keys the batch writes under
    after_seq: int = 0
    limit: int = 500
    concurrency: int = 16


class BatchResult(BaseModel):
    processed: int
    next_after_seq: int | None  # None: nothing after this batch
    released: int = 0
    refunded: int = 0
    refunded_to_wallet: int = 0
    pending: int = 0


class MarkGroupBuyInput(BaseModel):
    group_buy_id: str
    status: GroupBuyStatusName
    failure_code: str | None = None
    cancel_reason: str | None = None


class ReleaseEscrowResult(BaseModel):
    total: int
    fee: int
    journal_id: int | None


class ParticipantPaymentInput(BaseModel):
    """The per-participant gateway payment: waits for the buyer to pay until the session's deadline."""

    session_workflow_id: str
    group_buy_id: str
    participant_id: str
    payment_id: str
    gateway: Gateway
    gateway_payment_id: str
    amount: int
    quantity: int
    currency: str
    deadline: datetime


class ParticipantRef(BaseModel):
    participant_id: str
    failure_code: str | None = None


class ParticipantPaid(BaseModel):
    participant_id: str
    quantity: int


class AcceptResult(BaseModel):
    accepted: bool  # False: the session decided before the payment was confirmed (a late payment)


class ParticipantRefundResult(BaseModel):
    outcome: Literal["refunded", "refunded_to_wallet", "refund_pending"]
    refund_id: str | None = None


class BulkRefundInput(BaseModel):
    group_buy_id: str
    session_workflow_id: str
    reason: str
    phase: Literal["release_holds", "refund_wallets", "refund_gateway", "await_pending", "done"] = (
        "release_holds"
    )
    after_seq: int = 0
    progress: RefundProgress | None = None


class BulkRefundResult(BaseModel):
    group_buy_id: str
    reason: str
    progress: RefundProgress
    outcomes: dict[str, str]  # participant id → released | refunded | refunded_to_wallet | …
