"""Which workflows and activities a payweave worker hosts, built once per worker process."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from activities.gateways.base import PaymentGateway
from activities.gateways.stripe import StripeGateway
from activities.gateways.xendit import XenditGateway
from activities.group_buy import GroupBuyActivities
from activities.notify import NotifyActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.reconciliation import ReconciliationActivities
from activities.saga_audit import SagaAuditActivities
from activities.sweeper import SweeperActivities
from activities.wallet import LedgerActivities
from payweave.settings import Settings
from workflows.bulk_refund import BulkRefundWorkflow
from workflows.checkout import CheckoutWorkflow
from workflows.deposit import DepositWorkflow
from workflows.group_buy import GroupBuyPaymentWorkflow, GroupBuyWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.refund import RefundWorkflow
from workflows.sweeper import SweeperWorkflow
from workflows.transfer import TransferWorkflow

WORKFLOWS: Sequence[type] = (
    DepositWorkflow,
    TransferWorkflow,
    CheckoutWorkflow,
    RefundWorkflow,
    SweeperWorkflow,
    ReconciliationWorkflow,
    GroupBuyWorkflow,
    GroupBuyPaymentWorkflow,
    BulkRefundWorkflow,
)


def gateways_from_settings(settings: Settings) -> dict[str, PaymentGateway]:
    return {
        "stripe": StripeGateway(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base),
        "xendit": XenditGateway(settings.xendit_secret_key.get_secret_value(), settings.xendit_api_base),
    }


def operations_activities(
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    gateways: Mapping[str, PaymentGateway],
    client: Client | None,
) -> list[Callable[..., Any]]:
    """The sweeper's (they signal and describe workflows: only with a Temporal client) and the reconciliation's."""
    reconciliation = ReconciliationActivities(wallet_engine, payments_engine, gateways)
    found: list[Callable[..., Any]] = [reconciliation.reconcile_page]
    if client is not None:
        sweeper = SweeperActivities(wallet_engine, payments_engine, gateways, client)
        found += [
            sweeper.find_stale_payments,
            sweeper.sweep_payment,
            sweeper.find_overdue_group_buys,
            sweeper.signal_group_buy_deadline,
            sweeper.find_expired_holds,
            sweeper.expire_orphan_hold,
            sweeper.find_unrouted_webhooks,
            sweeper.reroute_webhook,
            sweeper.find_expired_pending_orders,
            sweeper.expire_unstarted_order,
        ]
    return found


def build_activities(
    *,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    gateways: Mapping[str, PaymentGateway],
    settings: Settings | None = None,
    client: Client | None = None,
) -> list[Callable[..., Any]]:
    secret = settings.notify_webhook_secret if settings else None
    notify = NotifyActivities(
        payments_engine,
        settings.notify_webhook_url if settings else None,
        secret.get_secret_value() if secret else None,
    )
    ledger = LedgerActivities(wallet_engine)
    payments = PaymentActivities(payments_engine, gateways)
    orders = OrderActivities(payments_engine)
    group_buys = GroupBuyActivities(wallet_engine, payments_engine, gateways)
    return [
        *operations_activities(wallet_engine, payments_engine, gateways, client),
        group_buys.record_group_buy,
        group_buys.group_buy_counts,
        group_buys.pending_payment_workflows,
        group_buys.join_group_buy,
        group_buys.decide_group_buy,
        group_buys.mark_group_buy,
        group_buys.accept_group_payment,
        group_buys.end_group_payment,
        group_buys.refund_group_participant,
        group_buys.capture_group_holds,
        group_buys.create_group_orders,
        group_buys.release_escrow,
        group_buys.release_group_holds,
        group_buys.refund_group_wallets,
        group_buys.refund_group_gateway,
        group_buys.check_group_refunds,
        group_buys.group_refund_progress,
        group_buys.group_refund_outcomes,
        notify.notify,
        notify.finish_order,
        SagaAuditActivities(payments_engine).record_saga_audit,
        orders.record_order,
        orders.reserve_stock,
        orders.release_stock,
        orders.commit_stock,
        orders.mark_order,
        orders.reserve_refund,
        orders.finish_refund,
        payments.get_gateway_refund,
        ledger.post_journal,
        ledger.reverse_journal,
        ledger.place_hold,
        ledger.release_hold,
        ledger.capture_hold,
        payments.record_payment,
        payments.create_gateway_payment,
        payments.get_gateway_payment,
        payments.cancel_gateway_payment,
        payments.refund_gateway_payment,
        payments.mark_payment,
        payments.record_transfer,
        payments.mark_transfer,
    ]
