"""Prometheus metrics: the API serves them at ``/metrics``, the worker on ``PAYWEAVE_WORKER_METRICS_PORT``.

Each process serves what it counts: the API its requests, saga starts, webhooks, rate limits and the open holds;
the worker what its activities did (sagas completed, ledger journals, sweeper repairs, reconciliation). Both also
serve Temporal's SDK metrics (``payweave/telemetry.py``). Workflow code never counts: a replay would count
again. Activities count after their transaction committed, and only a change that transaction made.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payweave.contracts.ledger import Journal

WEBHOOK_EVENTS = Counter(
    "payweave_webhook_events_total",
    "Gateway webhook deliveries by provider and outcome "
    "(routed, duplicate, unrouted, unknown_object, no_signal, invalid_signature)",
    ["provider", "outcome"],
)
SAGAS_STARTED = Counter("payweave_sagas_started_total", "Saga start requests accepted by the API", ["kind"])
REQUEST_SECONDS = Histogram(
    "payweave_http_request_seconds",
    "API request latency",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SWEEPER_REPAIRS = Counter(
    "payweave_sweeper_repairs_total",
    "What the sweeper repaired, by kind (payment_signaled_succeeded, payment_signaled_failed, "
    "payment_orphan_closed, payment_orphan_refunded, payment_orphan_marked_succeeded, group_buy_deadline_signaled, "
    "hold_expired, webhook_rerouted, webhook_unknown_object, needs_attention)",
    ["kind"],
)
RECONCILIATION_MISMATCHES = Counter(
    "payweave_reconciliation_mismatches_total",
    "Mismatches the reconciliation found between gateway, payments DB and ledger, by kind",
    ["kind"],
)
RECONCILED_PAYMENTS = Counter("payweave_reconciled_payments_total", "Payments the reconciliation checked")
RATE_LIMITED = Counter(
    "payweave_rate_limited_total",
    "API requests refused with 429 by the rate limits, by scope (user, ip)",
    ["scope"],
)

# --- sagas and ledger (counted by the worker's activities, after their transaction committed) ------------

SAGAS_COMPLETED = Counter(
    "payweave_sagas_completed_total",
    "Sagas that reached their end, by kind (the workflow id's prefix, as in payweave_sagas_started_total), "
    "outcome (succeeded; compensated: ended without its effect, whatever it had done undone) and final status",
    ["kind", "outcome", "status"],
)
SAGAS_NEEDING_ATTENTION = Counter(
    "payweave_sagas_needing_attention_total",
    "Compensations that gave up (refused, or still failing after their bounded attempts): the saga waits for an "
    "operator's retry or resolve (docs/sagas.md, 'A failed compensation'), by kind",
    ["kind"],
)
SAGA_DECISIONS = Counter(
    "payweave_saga_decisions_total",
    "Operator decisions about sagas (retry, resolve, cancel), by kind and action",
    ["kind", "action"],
)
LEDGER_JOURNALS = Counter(
    "payweave_ledger_journals_total",
    "Ledger journals posted (balanced sets of entries; an idempotent replay by key is not counted), by kind",
    ["kind"],
)
# Read from the wallet database when the API's /metrics is scraped (every API replica reports the same value).
HOLDS_OPEN = Gauge("payweave_holds_open", "Open wallet holds, by currency", ["currency"])
HOLDS_OPEN_AMOUNT = Gauge(
    "payweave_holds_open_amount",
    "Money reserved by open wallet holds, in minor units, by currency",
    ["currency"],
)

# Per saga kind: the statuses its row ends in, and the one of them that means it succeeded.
SAGA_ENDS: dict[str, tuple[frozenset[str], str]] = {
    "deposit": (frozenset({"succeeded", "failed", "expired", "canceled", "refunded"}), "succeeded"),
    "transfer": (frozenset({"completed", "failed"}), "completed"),
    "checkout": (frozenset({"paid", "failed", "expired", "canceled"}), "paid"),
    "refund": (frozenset({"succeeded", "failed"}), "succeeded"),
    "groupbuy": (frozenset({"completed", "refunded"}), "completed"),
}


def saga_ended(kind: str, before: str | None, after: str) -> None:
    """Count a saga whose row just moved from a non-final status (``before``) to a final one (``after``).

    Called once the transaction that moved it committed; a retry that finds the row final already counts
    nothing, so each saga is counted at most once."""
    ends, success = SAGA_ENDS[kind]
    if after in ends and before not in ends:
        SAGAS_COMPLETED.labels(kind, "succeeded" if after == success else "compensated", after).inc()


def journals_posted(journals: Iterable[Journal | None]) -> None:
    """Count the journals a committed transaction inserted (``created``; not those found by their key)."""
    for journal in journals:
        if journal is not None and journal.created:
            LEDGER_JOURNALS.labels(journal.kind).inc()


HOLDS_REFRESH_SECONDS = 5.0  # /metrics is unauthenticated: at most one holds query per this long
_holds_refreshed_at = -HOLDS_REFRESH_SECONDS
_holds_currencies: set[str] = set()


async def refresh_open_holds(engine: AsyncEngine) -> None:
    """Set the open-holds gauges from the wallet database (the partial index on open holds serves it)."""
    global _holds_refreshed_at
    now = time.monotonic()
    if now - _holds_refreshed_at < HOLDS_REFRESH_SECONDS:
        return
    _holds_refreshed_at = now
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT currency, count(*) AS n, coalesce(sum(amount), 0) AS amount "
                    "FROM holds WHERE status = 'open' GROUP BY currency"
                )
            )
        ).all()
    found = {row.currency.strip(): (row.n, row.amount) for row in rows}
    _holds_currencies.update(found)  # a currency seen once reads 0 when its holds are all gone
    for currency in _holds_currencies:
        n, amount = found.get(currency, (0, 0))
        HOLDS_OPEN.labels(currency).set(n)
        HOLDS_OPEN_AMOUNT.labels(currency).set(amount)
