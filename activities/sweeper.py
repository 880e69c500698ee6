"""The sweeper's activities (ARCHITECTURE §5.7): find what a lost webhook or a dead workflow left behind, and
drive it. Janitor-style: every repair is logged and counted (``payweave_sweeper_repairs_total{kind}``).

Each item is one activity, safe to run twice or concurrently with another sweep: signals are idempotent (the
sagas take the first outcome and confirm it by look-up), gateway cancels and refunds are keyed, hold releases
and payment updates only move forward.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.gateways.base import PaymentGateway
from activities.gateways.errors import GatewayError
from activities.webhook_routing import (
    owning_workflow,
    route_event,
    stripe_object,
    stripe_routing,
    xendit_event,
    xendit_routing,
)
from db.engine import in_statement, in_transaction
from db.repositories import commerce, ledger
from db.repositories import operations as ops
from db.repositories import payments as payments_repo
from payweave.contracts.activities import GatewayPayment
from payweave.contracts.operations import (
    ExpiredHold,
    OverdueGroupBuy,
    PendingOrder,
    StalePayment,
    SweepInput,
    UnroutedWebhook,
)
from payweave.contracts.sagas import PaymentEvent
from payweave.ids import step_key
from payweave.metrics import SWEEPER_REPAIRS

log = logging.getLogger("payweave.sweeper")

FINAL_FAILURES = ("failed", "canceled", "expired")


def repaired(kind: str, subject: str, detail: str) -> str:
    """Log and count one repair; returns its kind (the sweep's summary counts it too)."""
    SWEEPER_REPAIRS.labels(kind).inc()
    level = logging.WARNING if kind == "needs_attention" else logging.INFO
    log.log(level, "sweeper %s: %s (%s)", kind, subject, detail)
    return kind


class SweeperActivities:
    def __init__(
        self,
        wallet_engine: AsyncEngine,
        payments_engine: AsyncEngine,
        gateways: Mapping[str, PaymentGateway],
        client: Client,
    ) -> None:
        self._wallet = wallet_engine
        self._payments = payments_engine
        self._gateways = gateways
        self._client = client

    async def _running(self, workflow_id: str) -> bool:
        """Whether the workflow is open. One that Temporal no longer knows (retention) is closed."""
        try:
            described = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return described.status == WorkflowExecutionStatus.RUNNING

    async def _signal(self, workflow_id: str, signal: str, *args: object) -> bool:
        """Signal an open workflow; False when it closed meanwhile."""
        try:
            await self._client.get_workflow_handle(workflow_id).signal(signal, *args)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    # --- a. payments the gateway decided but our saga never heard of ------------------------------------

    @activity.defn
    async def find_stale_payments(self, inp: SweepInput) -> list[StalePayment]:
        return await in_transaction(
            self._payments,
            lambda conn: ops.stale_payments(
                conn, min_age_seconds=inp.min_payment_age_seconds, limit=inp.limit
            ),
        )

    @activity.defn
    async def sweep_payment(self, p: StalePayment) -> str:
        """Ask the gateway; tell the owning saga the real outcome, or close the payment if the saga is gone."""
        subject = f"payment {p.payment_id} ({p.gateway} {p.gateway_payment_id}, workflow {p.workflow_id})"
        running = await self._running(p.workflow_id)
        if p.gateway_payment_id is None:
            # No gateway object recorded: a running saga is still creating it; a dead one needs a person.
            return "none" if running else repaired("needs_attention", subject, "saga gone, no gateway object")
        gateway = self._gateways[p.gateway]
        try:
            actual = await gateway.get_payment(p.gateway_payment_id)
        except GatewayError as exc:
            if exc.retryable:
                raise
            return repaired("needs_attention", subject, f"gateway look-up refused: {exc.code}")
        if running:
            event = PaymentEvent(
                gateway=p.gateway,
                gateway_payment_id=p.gateway_payment_id,
                event_id=f"sweeper:{p.gateway_payment_id}:{actual.status}",
                failure_code=(actual.failure_code or actual.status) if actual.status != "succeeded" else None,
            )
            if actual.status == "succeeded":
                if await self._signal(p.workflow_id, "payment_succeeded", event):
                    return repaired("payment_signaled_succeeded", subject, "paid at the gateway")
            elif actual.status in FINAL_FAILURES:
                if await self._signal(p.workflow_id, "payment_failed", event):
                    return repaired("payment_signaled_failed", subject, f"{actual.status} at the gateway")
            return "none"  # still undecided at the gateway (the saga's own timer covers the expiry)
        return await self._close_orphan(p, gateway, subject)

    async def _close_orphan(self, p: StalePayment, gateway: PaymentGateway, subject: str) -> str:
        """The saga is gone but the payment is open: close it at the gateway; a payment that got through and
        that no saga took into the ledger is refunded (orphan late payment)."""
        assert p.gateway_payment_id is not None
        try:
            final = await gateway.cancel_payment(p.gateway_payment_id)
            if final.status == "succeeded":
                return await self._settle_orphan_success(p, gateway, final, subject)
        except GatewayError as exc:
            if exc.retryable:
                raise
            return repaired("needs_attention", subject, f"gateway refused: {exc.code}")
        if final.status not in FINAL_FAILURES:
            return repaired("needs_attention", subject, f"saga gone, gateway says {final.status}")
        await self._mark(p.payment_id, final.status, "orphaned")
        return repaired("payment_orphan_closed", subject, f"saga gone; {final.status} at the gateway")

    async def _settle_orphan_success(
        self, p: StalePayment, gateway: PaymentGateway, final: GatewayPayment, subject: str
    ) -> str:
        async def captures(conn: AsyncConnection) -> int:
            journals = await ops.clearing_journals(conn, payment_id=p.payment_id, saga_ids=[p.workflow_id])
            return sum(1 for j in journals if ops.is_capture(j))

        if await in_transaction(self._wallet, captures):
            # The saga took the money into the ledger and died before recording it: record it, refund nothing.
            await self._mark(
                p.payment_id, "succeeded", None, credited=True if p.purpose == "deposit" else None
            )
            return repaired("payment_orphan_marked_succeeded", subject, "already in the ledger")
        refund = await gateway.refund(
            idempotency_key=f"{p.workflow_id}:sweeper_refund",
            gateway_payment_id=p.gateway_payment_id or final.id,
            amount=p.amount,
            metadata={"payment_id": p.payment_id, "reason": "orphan_late_payment"},
        )
        await self._mark(p.payment_id, "refunded", "orphan_late_payment")
        return repaired("payment_orphan_refunded", subject, f"paid after its saga ended; refund {refund.id}")

    async def _mark(
        self, payment_id: str, status: str, failure_code: str | None, *, credited: bool | None = None
    ) -> None:
        async def work(conn: AsyncConnection) -> None:
            await payments_repo.update_payment(
                conn, payment_id=payment_id, status=status, failure_code=failure_code, credited=credited
            )

        await in_transaction(self._payments, work)

    # --- b. group-buy sessions past their deadline without a decision -----------------------------------

    @activity.defn
    async def find_overdue_group_buys(self, inp: SweepInput) -> list[OverdueGroupBuy]:
        return await in_transaction(
            self._payments, lambda conn: ops.overdue_group_buys(conn, limit=inp.limit)
        )

    @activity.defn
    async def signal_group_buy_deadline(self, g: OverdueGroupBuy) -> str:
        subject = f"group buy {g.group_buy_id} (workflow {g.workflow_id}, deadline {g.deadline.isoformat()})"
        if await self._signal(g.workflow_id, "deadline_passed"):
            return repaired("group_buy_deadline_signaled", subject, "deadline passed without a decision")
        return repaired("needs_attention", subject, "open past its deadline, workflow not running")

    # --- c. holds past expiry whose saga is gone -----------------------------------------------------------

    @activity.defn
    async def find_expired_holds(self, inp: SweepInput) -> list[ExpiredHold]:
        return await in_transaction(self._wallet, lambda conn: ops.expired_open_holds(conn, limit=inp.limit))

    @activity.defn
    async def expire_orphan_hold(self, h: ExpiredHold) -> str:
        """Release an expired hold with status 'expired' — never one whose saga still runs (it decides)."""
        if h.saga_id is not None and await self._running(h.saga_id):
            return "none"

        async def work(conn: AsyncConnection) -> bool:
            released = await ledger.release_hold(conn, hold_id=h.hold_id, status="expired")
            return released is not None and released.status == "expired"

        if not await in_transaction(self._wallet, work):
            return "none"  # captured or released meanwhile
        subject = f"hold {h.hold_id} ({h.amount} on {h.wallet_id}, saga {h.saga_id})"
        return repaired("hold_expired", subject, f"expired {h.expires_at.isoformat()}, saga closed")

    # --- e. orders the API recorded whose saga never started ----------------------------------------------

    @activity.defn
    async def find_expired_pending_orders(self, inp: SweepInput) -> list[PendingOrder]:
        return await in_statement(
            self._payments, lambda conn: ops.expired_pending_orders(conn, limit=inp.limit)
        )

    @activity.defn
    async def expire_unstarted_order(self, o: PendingOrder) -> str:
        """Expire an order still ``pending`` past its expiry whose saga Temporal never knew (the API recorded
        the order, the start failed, the client never retried) — only when nothing of a saga exists: no hold,
        no settle journal, no gateway payment, no stock reservation. A saga that ran, or whose history is gone,
        is an operator's to look at."""
        subject = f"order {o.order_id} (workflow {o.workflow_id}, expired {o.expires_at.isoformat()})"
        try:
            described = await self._client.get_workflow_handle(o.workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            described = None
        if described is not None:
            if described.status == WorkflowExecutionStatus.RUNNING:
                return "none"  # the saga decides
            return repaired("needs_attention", subject, "pending past its expiry, its saga closed")
        traces = await in_statement(self._payments, lambda conn: ops.order_left_traces(conn, o.order_id))
        moved = await in_statement(
            self._wallet,
            lambda conn: ops.saga_moved_money(
                conn, hold_id=f"hld_{o.order_id}", settle_key=step_key(o.workflow_id, "settle")
            ),
        )
        if traces or moved:
            return repaired(
                "needs_attention", subject, "pending past its expiry, no saga, but a saga's traces"
            )

        async def work(conn: AsyncConnection) -> bool:
            before, order = await commerce.move_order(
                conn, order_id=o.order_id, status="expired", failure_code="saga_not_started"
            )
            return before == "pending" and order.status == "expired"

        if not await in_statement(self._payments, work):
            return "none"  # its saga started and moved it meanwhile
        return repaired("order_not_started", subject, "its saga never started: expired")

    # --- d. webhook events stored but never delivered ----------------------------------------------------

    @activity.defn
    async def find_unrouted_webhooks(self, inp: SweepInput) -> list[UnroutedWebhook]:
        return await in_transaction(
            self._payments,
            lambda conn: ops.unrouted_webhooks(
                conn, min_age_seconds=inp.webhook_min_age_seconds, limit=inp.limit
            ),
        )

    @activity.defn
    async def reroute_webhook(self, w: UnroutedWebhook) -> str:
        """Deliver a stored event with the API's own routing. Its owner is looked up again (the payment row may
        have recorded the object since); an event nobody owns is marked handled, so it is not retried forever."""
        found = await in_transaction(self._payments, lambda conn: ops.unrouted_webhook(conn, w.event_row_id))
        if found is None:
            return "none"  # routed meanwhile
        stored, payload = found
        if stored.provider == "stripe":
            obj = stripe_object(payload)
            routing = stripe_routing(stored.event_id, stored.event_type, obj)
        else:
            _, _, obj = xendit_event(payload, b"")
            routing = xendit_routing(stored.event_id, stored.event_type, obj)
        subject = f"webhook event {stored.provider}/{stored.event_id} (row {stored.id})"
        if stored.workflow_id is None and routing.signal is not None:
            owner = await owning_workflow(self._payments, stored.provider, stored.event_type, obj)
            if owner is None:

                async def unknown(conn: AsyncConnection) -> None:
                    await payments_repo.mark_webhook_routed(
                        conn, event_row_id=stored.id, note="no owning workflow (sweeper gave up: not ours)"
                    )

                await in_transaction(self._payments, unknown)
                return repaired("webhook_unknown_object", subject, "no owning workflow")
            await in_transaction(
                self._payments,
                lambda conn: ops.set_webhook_owner(conn, event_row_id=stored.id, workflow_id=owner),
            )
            stored = stored.model_copy(update={"workflow_id": owner})
        outcome = await route_event(self._payments, self._client, stored, routing, count=False)
        if outcome == "unrouted":
            return repaired("needs_attention", subject, "signal failed again")
        return repaired("webhook_rerouted", subject, outcome)
