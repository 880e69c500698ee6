"""DepositWorkflow through the API, localstripe and its real (signed) webhooks."""

from __future__ import annotations

import httpx
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payweave.settings import Settings
from tests.conftest import Users
from tests.helpers import create_wallet, deposit, idem, until_terminal, wallet


async def deposit_journals(engine: AsyncEngine, wallet_id: str) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT j.kind, e.amount FROM entries e JOIN journals j ON j.id = e.journal_id "
                "WHERE e.wallet_id = :w ORDER BY e.id"
            ),
            {"w": wallet_id},
        )
        return [(r.kind, r.amount) for r in rows]


async def test_server_confirmed_card_deposit_credits_the_wallet_once(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    done = await deposit(http, auth, w["id"], 10_000)
    assert done["status"] == "succeeded" and done["credited"] is True
    assert done["gateway_payment_id"].startswith("pi_")
    after = await wallet(http, auth, w["id"])
    assert (after["balance"], after["held"], after["available"]) == (10_000, 0, 10_000)
    assert await deposit_journals(wallet_engine, w["id"]) == [("deposit", 10_000)]


async def test_declined_card_fails_the_deposit_and_moves_nothing(
    http: httpx.AsyncClient, users: Users
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.post(
        f"/v1/wallets/{w['id']}/deposits",
        json={"amount": 5_000, "payment_method": "pm_card_chargeCustomerFail"},
        headers={**auth, **idem()},
    )
    assert r.status_code == 202, r.text
    done = await until_terminal(http, auth, f"/v1/deposits/{r.json()['id']}")
    assert done["status"] == "failed" and done["failure_code"] == "card_declined"
    assert (await wallet(http, auth, w["id"]))["balance"] == 0


async def test_client_side_confirmation_credits_on_the_webhook(
    http: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    """No payment method: the payer gets the client secret, confirms on their side, the webhook credits."""
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.post(f"/v1/wallets/{w['id']}/deposits", json={"amount": 2_500}, headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "awaiting_payment"
    intent_id = accepted["next_action"]["payment_intent"]
    assert accepted["next_action"]["client_secret"].startswith(intent_id)

    # The payer's side (Stripe.js in a browser): attach a card and confirm.
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )
    await client.v1.payment_intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
    await client.v1.payment_intents.confirm_async(intent_id)

    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert done["status"] == "succeeded"
    assert (await wallet(http, auth, w["id"]))["balance"] == 2_500


async def test_unpaid_deposit_expires_and_its_intent_is_cancelled(
    http: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.post(
        f"/v1/wallets/{w['id']}/deposits", json={"amount": 700, "expires_in": 1}, headers={**auth, **idem()}
    )
    done = await until_terminal(http, auth, f"/v1/deposits/{r.json()['id']}")
    assert (done["status"], done["failure_code"]) == ("expired", "expired")
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )
    intent = await client.v1.payment_intents.retrieve_async(done["gateway_payment_id"])
    assert intent.status == "canceled"
    assert (await wallet(http, auth, w["id"]))["balance"] == 0


async def test_payment_for_a_wallet_frozen_meanwhile_is_refunded_at_the_gateway(
    http: httpx.AsyncClient, users: Users, settings: Settings, wallet_engine: AsyncEngine
) -> None:
    """Money is never kept where nobody can see it: the credit is refused, so the payment goes back."""
    _, auth = users.new()
    _, operator = users.new("operator")
    w = await create_wallet(http, auth)
    r = await http.post(f"/v1/wallets/{w['id']}/deposits", json={"amount": 1_100}, headers={**auth, **idem()})
    accepted = r.json()
    assert (await http.post(f"/v1/wallets/{w['id']}/freeze", headers=operator)).status_code == 200
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )
    intent_id = accepted["next_action"]["payment_intent"]
    await client.v1.payment_intents.update_async(intent_id, params={"payment_method": "pm_card_visa"})
    await client.v1.payment_intents.confirm_async(intent_id)

    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert (done["status"], done["failure_code"], done["credited"]) == ("refunded", "wallet_frozen", False)
    refunds = await client.v1.refunds.list_async()
    assert [(x.payment_intent, x.amount) for x in refunds.data if x.payment_intent == intent_id] == [
        (intent_id, 1_100)
    ]
    assert await deposit_journals(wallet_engine, w["id"]) == []
