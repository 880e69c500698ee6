"""QUALITY R16, the cancel half, on the real gateways: the payer pays, the webhook is lost, the buyer cancels —
the checkout's compensation finds the payment made after all and refunds it automatically."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.verify import verify_ledger
from payweave.settings import Settings
from tests.conftest import Users
from tests.e2e.test_checkouts import checkout, until_done
from tests.e2e.test_sweeper import pay_at_gateway, webhooks_lost
from tests.helpers import create_wallet

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("gateway", ["stripe", "xendit"])
async def test_a_payment_made_before_a_cancel_is_refunded_automatically(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    localstripe: str,
    xendit: str,
    api_port: int,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
    gateway: str,
) -> None:
    merchant, m_auth = users.new("merchant")
    m_wallet = await create_wallet(http, m_auth)
    _, buyer = users.new()
    async with webhooks_lost(localstripe, xendit, api_port):
        accepted = await checkout(
            http,
            buyer,
            {
                "merchant_id": merchant,
                "currency": "USD",
                "amount": 2_500,
                "payment": {"method": "gateway", "gateway": gateway},
            },
        )
        await pay_at_gateway(settings, xendit, accepted["next_action"])  # paid; nobody is told
        r = await http.post(
            f"/v1/checkouts/{accepted['id']}/cancel", json={"reason": "requested_by_customer"}, headers=buyer
        )
        assert r.status_code == 200, r.text
        done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["late_payment_refunded"]) == ("canceled", True), done
    async with payments_engine.connect() as conn:
        payment = (
            await conn.execute(
                text("SELECT status, failure_code FROM payments WHERE id = :id"),
                {"id": f"pay_{accepted['id']}"},
            )
        ).one()
    assert tuple(payment) == ("refunded", "late_payment")
    merchant_wallet = (await http.get(f"/v1/wallets/{m_wallet['id']}", headers=m_auth)).json()
    assert merchant_wallet["balance"] == 0  # the merchant never got money for a canceled order
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations
