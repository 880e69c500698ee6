"""Which workflows and activities a payweave worker hosts, built once per worker process."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from activities.gateways.base import PaymentGateway
from activities.gateways.stripe import StripeGateway
from activities.gateways.xendit import XenditGateway
from activities.notify import NotifyActivities
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.wallet import LedgerActivities
from payweave.settings import Settings
from workflows.checkout import CheckoutWorkflow
from workflows.deposit import DepositWorkflow
from workflows.refund import RefundWorkflow
from workflows.transfer import TransferWorkflow

WORKFLOWS: Sequence[type] = (DepositWorkflow, TransferWorkflow, CheckoutWorkflow, RefundWorkflow)


def gateways_from_settings(settings: Settings) -> dict[str, PaymentGateway]:
    return {
        "stripe": StripeGateway(settings.stripe_api_key.get_secret_value(), settings.stripe_api_base),
        "xendit": XenditGateway(settings.xendit_secret_key.get_secret_value(), settings.xendit_api_base),
    }


def build_activities(
    *,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    gateways: Mapping[str, PaymentGateway],
    settings: Settings | None = None,
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
    return [
        notify.notify,
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
