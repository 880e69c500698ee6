"""RefundWorkflow through the API: proportional split, refund_exceeds_paid, concurrent refunds (R17)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import stripe

from payweave.ids import derived_id, workflow_id
from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import checkout, until_done
from tests.e2e.test_compensation_queue import Lab, lab  # noqa: F401 - `lab` is a fixture
from tests.helpers import create_wallet, deposit, idem, wallet


async def paid_split_order(http: httpx.AsyncClient, users: Users) -> tuple[dict[str, Any], ...]:
    merchant, m_auth = users.new("merchant")
    m_wallet = await create_wallet(http, m_auth)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 3_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 10_000,
            "payment": {
                "method": "split",
                "wallet_amount": 3_000,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        },
    )
    order = await until_done(http, buyer, accepted["id"])
    assert order["status"] == "paid", order
    return order, m_auth, m_wallet, buyer, b_wallet


async def refund(
    http: httpx.AsyncClient, auth: dict[str, str], order_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await http.post(f"/v1/checkouts/{order_id}/refunds", json=body, headers={**auth, **idem()})


async def until_refund_done(
    http: httpx.AsyncClient, auth: dict[str, str], refund_id: str, timeout: float = 90
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await http.get(f"/v1/refunds/{refund_id}", headers=auth)
        return r.json() if r.status_code == 200 and r.json()["status"] != "pending" else None

    return await eventually(probe, timeout=timeout)  # type: ignore[no-any-return]


async def test_partial_refund_is_proportional_and_a_refund_beyond_paid_is_refused(
    http: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    order, m_auth, m_wallet, buyer, b_wallet = await paid_split_order(http, users)
    r = await refund(http, m_auth, order["id"], {"amount": 4_000, "reason": "damaged"})
    assert r.status_code == 202, r.text
    assert (r.json()["wallet_amount"], r.json()["gateway_amount"]) == (1_200, 2_800)
    done = await until_refund_done(http, m_auth, r.json()["id"])
    assert done["status"] == "succeeded" and done["gateway_refund_id"].startswith("re_")
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 1_200
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 6_000
    client = stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )
    card_refund = await client.v1.refunds.retrieve_async(done["gateway_refund_id"])
    assert (card_refund.amount, card_refund.payment_intent) == (2_800, order["gateway_payment_id"])
    assert (await http.get(f"/v1/checkouts/{order['id']}", headers=buyer)).json()[
        "status"
    ] == "partially_refunded"

    too_much = await refund(http, m_auth, order["id"], {"amount": 7_000, "reason": "again"})
    assert too_much.status_code == 422 and too_much.json()["code"] == "refund_exceeds_paid"
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 1_200


@pytest.mark.reliability
async def test_concurrent_partial_refunds_never_exceed_what_was_paid(
    http: httpx.AsyncClient, users: Users
) -> None:
    """QUALITY R17."""
    order, m_auth, m_wallet, buyer, b_wallet = await paid_split_order(http, users)
    responses = await asyncio.gather(
        *(refund(http, m_auth, order["id"], {"amount": 1_500, "reason": f"r{i}"}) for i in range(10))
    )
    accepted = [r.json() for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 422]
    assert len(accepted) == 6 and len(refused) == 4  # 6 × 15.00 = 90.00 ≤ 100.00 < 7 × 15.00
    assert all(r.json()["code"] == "refund_exceeds_paid" for r in refused)
    finished = await asyncio.gather(*(until_refund_done(http, m_auth, a["id"]) for a in accepted))
    assert all(f["status"] == "succeeded" for f in finished)
    assert sum(f["wallet_amount"] for f in finished) <= 3_000
    assert sum(f["gateway_amount"] for f in finished) <= 7_000
    rest = await refund(http, m_auth, order["id"], {"reason": "the rest"})
    assert rest.status_code == 202 and rest.json()["amount"] == 1_000
    await until_refund_done(http, m_auth, rest.json()["id"])
    assert (await http.get(f"/v1/checkouts/{order['id']}", headers=buyer)).json()["status"] == "refunded"
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 0


async def test_only_the_merchant_or_an_operator_refunds(http: httpx.AsyncClient, users: Users) -> None:
    order, _, _, buyer, _ = await paid_split_order(http, users)
    r = await refund(http, buyer, order["id"], {"amount": 100, "reason": "self-service"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    _, stranger = users.new("merchant")
    assert (await refund(http, stranger, order["id"], {"amount": 100, "reason": "x"})).status_code == 404


async def test_a_refused_card_refund_moves_nothing_and_frees_the_booking(
    http: httpx.AsyncClient, users: Users, xendit: str
) -> None:
    merchant, m_auth = users.new("merchant")
    m_wallet = await create_wallet(http, m_auth)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 3_000)
    accepted = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 10_000,
            "payment": {"method": "split", "wallet_amount": 3_000, "gateway": "xendit"},
        },
    )
    async with httpx.AsyncClient(base_url=xendit) as emulator:
        await emulator.post(f"/_control/invoices/{accepted['next_action']['invoice_id']}/pay", json={})
        assert (await until_done(http, buyer, accepted["id"]))["status"] == "paid"
        assert (await emulator.post("/_control/refunds/fail-next")).status_code == 200
    r = await refund(http, m_auth, accepted["id"], {"amount": 4_000, "reason": "damaged"})
    done = await until_refund_done(http, m_auth, r.json()["id"], timeout=120)  # confirmed by a 30 s look-up
    assert (done["status"], done["failure_code"]) == ("failed", "gateway_refund_failed")
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 0
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 10_000
    order = (await http.get(f"/v1/checkouts/{accepted['id']}", headers=buyer)).json()
    assert order["status"] == "paid"  # the booking was given back: 100.00 can still be refunded
    again = await refund(http, m_auth, accepted["id"], {"reason": "all of it"})
    assert again.status_code == 202 and again.json()["amount"] == 10_000


async def test_a_refund_refused_before_booking_for_an_unnamed_reason_is_a_problem_and_nothing_is_read(
    lab: Lab,  # noqa: F811 - the fixture imported above
) -> None:
    """The refund saga's first step refuses for a reason no API code names: the POST is a 409 problem
    (``refund_refused``, the saga's code in the detail), not a refund view whose Location would answer 404; the
    refund id still reads 404 and no money moved."""
    order, m_auth, m_wallet, buyer, b_wallet = await paid_split_order(lab.http, lab.users)
    merchant = await wallet(lab.http, m_auth, m_wallet["id"])
    before = (merchant["balance"], (await wallet(lab.http, buyer, b_wallet["id"]))["balance"])
    key = uuid.uuid4().hex
    lab.outage.arm("reserve_refund", refusal="injected_refusal")
    try:
        r = await lab.http.post(
            f"/v1/checkouts/{order['id']}/refunds",
            json={"amount": 1_000, "reason": "damaged"},
            headers={**m_auth, "Idempotency-Key": key},
        )
    finally:
        lab.outage.heal("reserve_refund")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "refund_refused" and "injected_refusal" in r.json()["detail"]
    assert "Location" not in r.headers
    refund_id = derived_id("re", workflow_id("refund", merchant["owner"], key))
    assert (await lab.http.get(f"/v1/refunds/{refund_id}", headers=m_auth)).status_code == 404
    after = (
        (await wallet(lab.http, m_auth, m_wallet["id"]))["balance"],
        (await wallet(lab.http, buyer, b_wallet["id"]))["balance"],
    )
    assert after == before
