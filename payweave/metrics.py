"""Prometheus metrics (served by the API at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
