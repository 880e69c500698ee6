"""CheckoutWorkflow through the API with real Postgres, Temporal and localstripe (issue 3 acceptance)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.settings import Settings
from tests.api.test_stripe_webhooks import intent_event, sign
from tests.api.test_stripe_webhooks import pay as stripe_pay
from tests.api.test_stripe_webhooks import post as stripe_post
from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem, wallet

DONE = {"paid", "failed", "expired", "canceled"}


async def merchant_with_product(
    http: httpx.AsyncClient, users: Users, price: int, stock: int
) -> tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]:
    sub, auth = users.new("merchant")
    mw = await create_wallet(http, auth)
    r = await http.post(
        "/v1/products",
        json={"name": "widget", "price": price, "currency": "USD", "stock": stock},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    return sub, auth, mw, r.json()


async def checkout(http: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post("/v1/checkouts", json=body, headers={**auth, **idem()})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


async def until_done(http: httpx.AsyncClient, auth: dict[str, str], order_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await http.get(f"/v1/checkouts/{order_id}", headers=auth)
        return r.json() if r.status_code == 200 and r.json()["status"] in DONE else None

    return await eventually(probe)  # type: ignore[no-any-return]


async def product(http: httpx.AsyncClient, auth: dict[str, str], product_id: str) -> dict[str, Any]:
    return (await http.get(f"/v1/products/{product_id}", headers=auth)).json()  # type: ignore[no-any-return]


async def test_split_checkout_posts_one_balanced_journal(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    merchant, m_auth, m_wallet, prod = await merchant_with_product(http, users, price=5_000, stock=5)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 5_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 2}],
            "payment": {
                "method": "split",
                "wallet_amount": 3_000,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        },
    )
    assert (accepted["total"], accepted["wallet_amount"], accepted["gateway_amount"]) == (
        10_000,
        3_000,
        7_000,
    )
    done = await until_done(http, buyer, accepted["id"])
    assert done["status"] == "paid", done
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 2_000
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 10_000
    after = await product(http, buyer, prod["id"])
    assert (after["stock"], after["available"]) == (3, 3)
    async with wallet_engine.connect() as conn:
        legs = (
            await conn.execute(
                text(
                    "SELECT e.wallet_id, e.amount FROM journals j JOIN entries e ON e.journal_id = j.id "
                    "WHERE j.kind = 'checkout' AND j.description = :d ORDER BY e.id"
                ),
                {"d": f"order {accepted['id']}"},
            )
        ).all()
    assert sorted(amount for _, amount in legs) == [-7_000, -3_000, 10_000]
    assert dict(legs) == {b_wallet["id"]: -3_000, "sys_gateway_clearing_usd": -7_000, m_wallet["id"]: 10_000}


async def _assert_untouched(
    http: httpx.AsyncClient, buyer: dict[str, str], wallet_id: str, balance: int, product_id: str, stock: int
) -> None:
    w = await wallet(http, buyer, wallet_id)
    assert (w["balance"], w["held"]) == (balance, 0)
    p = await product(http, buyer, product_id)
    assert (p["stock"], p["available"]) == (stock, stock)


@pytest.mark.reliability
async def test_declined_card_compensates_hold_and_stock(http: httpx.AsyncClient, users: Users) -> None:
    merchant, _, _, prod = await merchant_with_product(http, users, price=4_000, stock=3)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 1_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 1}],
            "payment": {
                "method": "split",
                "gateway": "stripe",
                "payment_method": "pm_card_chargeCustomerFail",
            },
        },
    )
    done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "card_declined")
    await _assert_untouched(http, buyer, b_wallet["id"], 1_000, prod["id"], 3)


async def test_unpaid_checkout_expires_and_compensates(http: httpx.AsyncClient, users: Users) -> None:
    merchant, _, _, prod = await merchant_with_product(http, users, price=4_000, stock=3)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 1_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 2}],
            "payment": {"method": "split", "wallet_amount": 1_000, "gateway": "stripe"},
            "expires_in": 1,
        },
    )
    assert accepted["status"] == "awaiting_payment" and accepted["next_action"]["client_secret"]
    done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["failure_code"]) == ("expired", "expired")
    await _assert_untouched(http, buyer, b_wallet["id"], 1_000, prod["id"], 3)


async def test_cancel_compensates_and_a_second_cancel_conflicts(
    http: httpx.AsyncClient, users: Users
) -> None:
    merchant, _, _, prod = await merchant_with_product(http, users, price=2_500, stock=2)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 2_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 1}],
            "payment": {"method": "split", "gateway": "stripe"},
        },
    )
    held = await wallet(http, buyer, b_wallet["id"])
    assert (held["held"], held["available"]) == (2_000, 0)
    r = await http.post(f"/v1/checkouts/{accepted['id']}/cancel", headers=buyer)
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
    await _assert_untouched(http, buyer, b_wallet["id"], 2_000, prod["id"], 2)
    again = await http.post(f"/v1/checkouts/{accepted['id']}/cancel", headers=buyer)
    assert again.status_code == 409 and again.json()["code"] == "conflict"


async def test_wallet_checkout_without_enough_funds_fails_and_releases_stock(
    http: httpx.AsyncClient, users: Users
) -> None:
    merchant, _, _, prod = await merchant_with_product(http, users, price=3_000, stock=1)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 2_999)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 1}],
            "payment": {"method": "wallet"},
        },
    )
    done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "insufficient_funds")
    await _assert_untouched(http, buyer, b_wallet["id"], 2_999, prod["id"], 1)


async def test_fifty_buyers_for_the_last_ten_units_never_oversell(
    http: httpx.AsyncClient, users: Users
) -> None:
    merchant, _, m_wallet, prod = await merchant_with_product(http, users, price=100, stock=10)
    buyers = [users.new() for _ in range(50)]
    wallets = await asyncio.gather(*(create_wallet(http, auth) for _, auth in buyers))
    await asyncio.gather(
        *(deposit(http, auth, w["id"], 100) for (_, auth), w in zip(buyers, wallets, strict=True))
    )
    accepted = await asyncio.gather(
        *(
            checkout(
                http,
                auth,
                {
                    "merchant_id": merchant,
                    "currency": "USD",
                    "items": [{"product_id": prod["id"], "quantity": 1}],
                    "payment": {"method": "wallet"},
                },
            )
            for _, auth in buyers
        )
    )
    done = await asyncio.gather(
        *(until_done(http, auth, a["id"]) for (_, auth), a in zip(buyers, accepted, strict=True))
    )
    outcomes = [(d["status"], d["failure_code"]) for d in done]
    assert outcomes.count(("paid", None)) == 10
    assert outcomes.count(("failed", "out_of_stock")) == 40
    final = await product(http, buyers[0][1], prod["id"])
    assert (final["stock"], final["available"]) == (0, 0)
    balances = await asyncio.gather(
        *(wallet(http, auth, w["id"]) for (_, auth), w in zip(buyers, wallets, strict=True))
    )
    assert all(b["held"] == 0 for b in balances)
    assert sorted(b["balance"] for b in balances) == [0] * 10 + [100] * 40


async def test_split_checkout_through_xendit_is_paid_when_the_customer_pays_the_invoice(
    http: httpx.AsyncClient, users: Users, xendit: str, wallet_engine: AsyncEngine
) -> None:
    merchant, m_auth, m_wallet, prod = await merchant_with_product(http, users, price=10_000, stock=2)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 3_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 1}],
            "payment": {"method": "split", "wallet_amount": 3_000, "gateway": "xendit"},
        },
    )
    assert accepted["status"] == "awaiting_payment" and accepted["next_action"]["type"] == "xendit_invoice"
    async with httpx.AsyncClient(base_url=xendit) as emulator:  # the customer pays on Xendit's page
        paid = await emulator.post(f"/_control/invoices/{accepted['next_action']['invoice_id']}/pay", json={})
        assert paid.status_code == 200, paid.text
    done = await until_done(http, buyer, accepted["id"])
    assert done["status"] == "paid"
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 0
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 10_000
    assert (await product(http, buyer, prod["id"]))["stock"] == 1


@pytest.mark.reliability
async def test_settle_refused_refunds_the_card_and_releases_hold_and_stock(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine
) -> None:
    """R5 at the last step: the merchant's wallet is frozen, so the paid order cannot be settled; the card
    payment is refunded automatically and the buyer's hold and the stock are released."""
    merchant, m_auth, m_wallet, prod = await merchant_with_product(http, users, price=5_000, stock=1)
    _, operator = users.new("operator")
    assert (await http.post(f"/v1/wallets/{m_wallet['id']}/freeze", headers=operator)).status_code == 200
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 1_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "items": [{"product_id": prod["id"], "quantity": 1}],
            "payment": {
                "method": "split",
                "wallet_amount": 1_000,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        },
    )
    done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "wallet_frozen")
    await _assert_untouched(http, buyer, b_wallet["id"], 1_000, prod["id"], 1)
    assert (await wallet(http, operator, m_wallet["id"]))["balance"] == 0
    async with payments_engine.connect() as conn:
        card = (
            await conn.execute(
                text("SELECT status, failure_code FROM payments WHERE id = :id"),
                {"id": f"pay_{accepted['id']}"},
            )
        ).one()
    assert tuple(card) == ("refunded", "late_payment")


async def test_a_wallet_checkout_is_answered_at_once_and_readable_at_once(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine
) -> None:
    """A wallet checkout has nothing for the payer to do, so the API answers once the saga is started, and the
    order it recorded with the key is readable the moment the answer arrives; a retry gets the same answer."""
    merchant, _, _, _ = await merchant_with_product(http, users, price=100, stock=1)
    _, buyer = users.new()
    await deposit(http, buyer, (await create_wallet(http, buyer))["id"], 2_500)
    body = {"merchant_id": merchant, "currency": "USD", "amount": 2_500, "payment": {"method": "wallet"}}
    key = idem()
    r = await http.post("/v1/checkouts", json=body, headers={**buyer, **key})
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    assert r.headers["Location"] == f"/v1/checkouts/{r.json()['id']}"
    now = await http.get(r.headers["Location"], headers=buyer)
    assert now.status_code == 200 and now.json()["status"] in ("pending", "paid"), now.text
    assert (await until_done(http, buyer, r.json()["id"]))["status"] == "paid"
    again = await http.post("/v1/checkouts", json=body, headers={**buyer, **key})
    assert (again.status_code, again.json()) == (202, r.json())
    async with payments_engine.connect() as conn:
        orders = await conn.execute(
            text("SELECT count(*) FROM orders WHERE id = :id"), {"id": r.json()["id"]}
        )
        assert orders.scalar() == 1


async def test_a_retry_starts_the_saga_the_first_request_recorded_but_never_started(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine
) -> None:
    """The first request claimed its key and recorded the order, then died before starting the saga: the
    retry with the same key and body finds no saga for the pending order and starts it."""
    from api.sagas import claim_key, saga_ids  # noqa: PLC0415
    from api.schemas import CreateCheckout  # noqa: PLC0415
    from db.engine import in_transaction  # noqa: PLC0415
    from db.repositories import commerce  # noqa: PLC0415

    merchant, _, m_wallet, _ = await merchant_with_product(http, users, price=100, stock=1)
    buyer_sub, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 1_500)
    body = {"merchant_id": merchant, "currency": "USD", "amount": 1_500, "payment": {"method": "wallet"}}
    key = idem()
    wf_id, order_id = saga_ids("checkout", buyer_sub, key["Idempotency-Key"], "ord")

    async def record(conn: Any) -> Any:
        return await commerce.create_order(
            conn,
            order_id=order_id,
            workflow_id=wf_id,
            buyer=buyer_sub,
            merchant=merchant,
            currency="USD",
            total=1_500,
            wallet_amount=1_500,
            gateway_amount=0,
            method="wallet",
            gateway=None,
            buyer_wallet_id=b_wallet["id"],
            merchant_wallet_id=m_wallet["id"],
            items=[],
            expires_at=None,
        )

    parsed = CreateCheckout.model_validate(body)
    assert await claim_key(
        payments_engine, wf_id=wf_id, resource_id=order_id, scope="checkout", body=parsed, then=record
    )
    r = await http.post("/v1/checkouts", json=body, headers={**buyer, **key})
    assert r.status_code == 202 and r.json()["id"] == order_id, r.text
    assert (await until_done(http, buyer, order_id))["status"] == "paid"
    order = await in_transaction(payments_engine, lambda conn: commerce.get_order(conn, order_id))
    assert order is not None and order.workflow_id == wf_id


async def test_a_failure_event_for_a_card_that_was_paid_ends_the_checkout_paid(
    http: httpx.AsyncClient, users: Users, settings: Settings, temporal: Client, payments_engine: AsyncEngine
) -> None:
    await failure_event_after_payment(http, users, settings, temporal, payments_engine)


async def failure_event_after_payment(
    http: httpx.AsyncClient, users: Users, settings: Settings, temporal: Client, payments_engine: AsyncEngine
) -> str:
    """A ``payment_failed`` is a claim like a success: the checkout looks the intent up and the gateway's record
    wins. Here the buyer paid the card, then a failure event (late, reordered or forged) arrives before
    Stripe's own success event: the checkout ends paid and the merchant is credited."""
    merchant, m_auth = users.new("merchant")
    m_wallet = await create_wallet(http, m_auth)
    _, buyer = users.new()
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 2_500,
            "payment": {"method": "gateway", "gateway": "stripe"},
        },
    )
    assert accepted["status"] == "awaiting_payment"
    intent = accepted["gateway_payment_id"]
    await stripe_pay(settings, intent)  # localstripe sends its own success event a second later
    failed = intent_event("payment_intent.payment_failed", intent, None, status="requires_payment_method")
    assert (await stripe_post(http, failed, sign(failed))).status_code == 200

    done = await until_done(http, buyer, accepted["id"])
    assert (done["status"], done["failure_code"]) == ("paid", None)
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 2_500
    # The test shows what it names only if the failure was the first outcome the saga heard.
    async with payments_engine.connect() as conn:
        wf_id = (
            await conn.execute(text("SELECT workflow_id FROM orders WHERE id = :id"), {"id": accepted["id"]})
        ).scalar_one()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        async for e in temporal.get_workflow_handle(wf_id).fetch_history_events()
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals[:1] == ["payment_failed"], signals
    return str(wf_id)
