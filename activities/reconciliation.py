"""The daily reconciliation's activity: gateway objects vs payments DB vs ledger clearing entries (§5.7, I5).

For each payment of the window (one page per activity, ``concurrency`` gateway look-ups at a time):
* the gateway's status agrees with ours: paid there ⇔ ``succeeded`` (or ``refunded``: a late payment given
  back) here; the paid amount is ours;
* the ledger took it in exactly once: a payment we kept (a credited deposit, a paid checkout) is matched by
  exactly one clearing capture entry with ``external_ref`` = the payment id, of the payment's amount; one we
  did not keep by none;
* every finished refund with a card part is matched by its clearing entries (a succeeded one by +its card
  amount, a failed one by nothing: its reversal), and the gateway confirms the succeeded ones;
* all of it nets out: the clearing entries about the payment sum to −amount + what was refunded by card.
Open payments are the sweeper's; refunds still running are skipped. Every mismatch is stored once per run
(``reconciliation_mismatches``), logged and counted (``payweave_reconciliation_mismatches_total{kind}``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from activities.gateways.base import PaymentGateway
from activities.gateways.errors import GatewayError
from db.engine import in_transaction
from db.repositories import operations as ops
from payweave.contracts.activities import GatewayPayment
from payweave.contracts.operations import Mismatch, ReconcilePageInput, ReconcilePageResult
from payweave.contracts.payments import Payment
from payweave.metrics import RECONCILED_PAYMENTS, RECONCILIATION_MISMATCHES

log = logging.getLogger("payweave.reconciliation")

OPEN = ("pending", "awaiting_payment")
# Purposes whose sagas post a clearing capture with external_ref (group-buy escrow is checked at the gateway only).
LEDGER_CHECKED = ("deposit", "checkout")


class ReconciliationActivities:
    def __init__(
        self, wallet_engine: AsyncEngine, payments_engine: AsyncEngine, gateways: Mapping[str, PaymentGateway]
    ) -> None:
        self._wallet = wallet_engine
        self._payments = payments_engine
        self._gateways = gateways

    @activity.defn
    async def reconcile_page(self, inp: ReconcilePageInput) -> ReconcilePageResult:
        async def page(conn: AsyncConnection) -> list[Payment]:
            return await ops.payments_in_window(
                conn,
                start=inp.window_start,
                end=inp.window_end,
                after_created_at=inp.after_created_at,
                after_id=inp.after_id,
                limit=inp.page_size,
            )

        payments = await in_transaction(self._payments, page)
        limit = asyncio.Semaphore(max(1, inp.concurrency))

        async def bounded(p: Payment) -> list[Mismatch]:
            async with limit:
                return await self._reconcile(p)

        found = [m for ms in await asyncio.gather(*(bounded(p) for p in payments)) for m in ms]
        new = await in_transaction(
            self._payments, lambda conn: ops.record_mismatches(conn, inp.run_id, found)
        )
        for m in new:  # a retried page logs and counts only what it had not stored yet
            RECONCILIATION_MISMATCHES.labels(m.kind).inc()
            log.warning(
                "reconciliation mismatch %s: payment %s%s expected %s, actual %s (run %s)",
                m.kind,
                m.payment_id,
                f" ({m.subject})" if m.subject else "",
                m.expected,
                m.actual,
                inp.run_id,
            )
        RECONCILED_PAYMENTS.inc(len(payments))
        last = payments[-1] if len(payments) == inp.page_size else None
        return ReconcilePageResult(
            checked=len(payments),
            mismatches=found,
            next_created_at=last.created_at if last else None,
            next_id=last.id if last else None,
        )

    async def _gateway_payment(self, p: Payment) -> GatewayPayment | str:
        """The gateway's object, or why there is none."""
        if p.gateway_payment_id is None:
            return "no gateway object"
        try:
            return await self._gateways[p.gateway].get_payment(p.gateway_payment_id)
        except GatewayError as exc:
            if exc.retryable:
                raise
            return exc.code

    async def _reconcile(self, p: Payment) -> list[Mismatch]:
        out: list[Mismatch] = []

        def mismatch(kind: str, expected: object, actual: object, subject: str = "") -> None:
            out.append(
                Mismatch(
                    kind=kind, payment_id=p.id, expected=str(expected), actual=str(actual), subject=subject
                )
            )

        gateway = await self._gateway_payment(p)
        paid_there = isinstance(gateway, GatewayPayment) and gateway.status == "succeeded"
        if p.status in OPEN:
            if paid_there and p.expires_at is not None and p.expires_at < datetime.now(UTC):
                mismatch("open_but_paid", "closed by its saga or the sweeper", f"{p.status} past expiry")
            return out  # in flight: the saga or the sweeper decides it
        if isinstance(gateway, str):
            if p.status in ("succeeded", "refunded"):
                mismatch("gateway_object_missing", "a paid gateway object", gateway)
        elif paid_there != (p.status in ("succeeded", "refunded")):
            mismatch("status", f"gateway {gateway.status}", f"payments DB {p.status}")
        elif paid_there and gateway.amount != p.amount:
            mismatch("amount", p.amount, gateway.amount)
        if p.purpose in LEDGER_CHECKED:
            await self._reconcile_ledger(p, mismatch)
        return out

    async def _reconcile_ledger(self, p: Payment, mismatch: Any) -> None:
        refunds = await in_transaction(self._payments, lambda conn: ops.gateway_refunds_of(conn, p.id))
        journals = await in_transaction(
            self._wallet,
            lambda conn: ops.clearing_journals(
                conn, payment_id=p.id, saga_ids=[p.workflow_id, *(r["workflow_id"] for r in refunds)]
            ),
        )
        kept = p.status == "succeeded" and (p.purpose != "deposit" or p.credited)
        captures = [
            j
            for j in journals
            if ops.is_capture(j) and j["saga_id"] not in {r["workflow_id"] for r in refunds}
        ]
        if len(captures) != (1 if kept else 0):
            mismatch("clearing_captures", 1 if kept else 0, len(captures))
        elif kept and int(captures[0]["clearing"]) != -p.amount:
            mismatch("clearing_capture_amount", -p.amount, captures[0]["clearing"])
        if any(r["status"] == "pending" for r in refunds):
            return  # a refund is moving money right now
        refunded = 0
        for r in refunds:
            net = sum(int(j["clearing"]) for j in journals if j["saga_id"] == r["workflow_id"])
            expected = int(r["gateway_amount"]) if r["status"] == "succeeded" else 0
            if net != expected:
                mismatch("refund_clearing", expected, net, subject=r["id"])
            if r["status"] == "succeeded":
                refunded += expected
                await self._check_gateway_refund(p, r, mismatch)
        total = sum(int(j["clearing"]) for j in journals)
        if total != (-p.amount if kept else 0) + refunded:
            mismatch("clearing_balance", (-p.amount if kept else 0) + refunded, total)

    async def _check_gateway_refund(self, p: Payment, r: dict[str, Any], mismatch: Any) -> None:
        if not r["gateway_refund_id"]:
            mismatch("gateway_refund", "a gateway refund id", "none", subject=r["id"])
            return
        try:
            refund = await self._gateways[p.gateway].get_refund(r["gateway_refund_id"])
        except GatewayError as exc:
            if exc.retryable:
                raise
            mismatch("gateway_refund", "succeeded", exc.code, subject=r["id"])
            return
        if (refund.status, refund.amount) != ("succeeded", int(r["gateway_amount"])):
            mismatch(
                "gateway_refund",
                f"succeeded {r['gateway_amount']}",
                f"{refund.status} {refund.amount}",
                subject=r["id"],
            )
