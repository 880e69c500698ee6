"""Xendit callbacks: authenticity and duplicates (R12), unknown objects (R13), and a deposit paid through the
emulator end to end (its own callback → webhook → signal → credited)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.routers.webhooks import verify_xendit_token
from payweave.errors import Unauthenticated
from tests.api.support import assert_problem
from tests.conftest import XENDIT_CALLBACK_TOKEN, XENDIT_SECRET_KEY, Users, eventually
from tests.helpers import create_wallet, idem, until_terminal, wallet

pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


@pytest_asyncio.fixture
async def emulator(xendit: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=xendit, auth=(XENDIT_SECRET_KEY, ""), timeout=30) as client:
        yield client


def invoice_callback(
    status: str, invoice_id: str | None = None, external_id: str | None = None
) -> dict[str, Any]:
    """An invoice callback shaped like Xendit's."""
    body: dict[str, Any] = {
        "id": invoice_id or uuid.uuid4().hex[:24],
        "external_id": external_id or f"deposit:nobody:{uuid.uuid4().hex}:gateway_payment",
        "user_id": "5f0000000000000000000000",
        "is_high": False,
        "status": status,
        "merchant_name": "payweave",
        "amount": 42,
        "currency": "USD",
        "created": "2025-01-01T00:00:00.000Z",
        "updated": "2025-01-01T00:01:00.000Z",
    }
    if status in ("PAID", "SETTLED"):
        body.update(paid_amount=42, paid_at="2025-01-01T00:01:00.000Z", payment_method="BANK_TRANSFER")
    return body


async def post(
    http: httpx.AsyncClient, body: dict[str, Any], token: str | None = XENDIT_CALLBACK_TOKEN
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["x-callback-token"] = token
    return await http.post("/v1/webhooks/xendit", content=json.dumps(body), headers=headers)


async def stored_events(engine: AsyncEngine, object_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id, event_type, workflow_id, routed_at, route_error FROM webhook_events "
                "WHERE provider = 'xendit' AND object_id = :o ORDER BY id"
            ),
            {"o": object_id},
        )
        return [dict(r._mapping) for r in rows]


async def xendit_deposit(
    http: httpx.AsyncClient, users: Users, amount: int = 4_200, **extra: Any
) -> tuple[dict[str, str], dict[str, Any], str]:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.post(
        f"/v1/wallets/{w['id']}/deposits",
        json={"amount": amount, "gateway": "xendit", **extra},
        headers={**auth, **idem()},
    )
    assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
    return auth, r.json(), w["id"]


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


@pytest.mark.parametrize("case", ["missing", "empty", "wrong", "longer", "prefix"])
async def test_a_missing_or_wrong_token_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, payments_engine: AsyncEngine, case: str
) -> None:
    """QUALITY R12 / I7."""
    token = {
        "missing": None,
        "empty": "",
        "wrong": "wrong",
        "longer": XENDIT_CALLBACK_TOKEN + "x",
        "prefix": XENDIT_CALLBACK_TOKEN[:-1],
    }[case]
    body = invoice_callback("PAID")
    r = await post(http, body, token)
    assert_problem(r, 401, "unauthenticated")
    assert XENDIT_CALLBACK_TOKEN not in r.text
    assert await stored_events(payments_engine, body["id"]) == []


def test_token_comparison() -> None:
    verify_xendit_token("tok", "tok")
    for header in (None, "", "tok2", "to"):
        with pytest.raises(Unauthenticated):
            verify_xendit_token(header, "tok")
    with pytest.raises(Unauthenticated):  # an unconfigured token never matches an empty header
        verify_xendit_token("", "")


async def test_garbage_with_a_valid_token_is_a_400(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/webhooks/xendit", content=b"not json", headers={"x-callback-token": XENDIT_CALLBACK_TOKEN}
    )
    assert_problem(r, 400, "invalid_callback")


async def test_a_paid_invoice_end_to_end_credits_once_whatever_follows(
    http: httpx.AsyncClient,
    users: Users,
    emulator: httpx.AsyncClient,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
) -> None:
    """The payer pays on the emulator; its own callback credits the wallet. Then QUALITY R12: a duplicate PAID,
    a SETTLED (a new event, no new money) and a late EXPIRED (never un-pays)."""
    auth, accepted, wallet_id = await xendit_deposit(http, users, 4_200)
    invoice_id = accepted["gateway_payment_id"]
    assert accepted["next_action"] == {
        "type": "xendit_invoice",
        "invoice_id": invoice_id,
        "invoice_url": accepted["next_action"]["invoice_url"],
    }
    invoice = (await emulator.get(f"/v2/invoices/{invoice_id}")).json()
    assert (invoice["status"], invoice["amount"], invoice["currency"]) == ("PENDING", 42, "USD")

    assert (await emulator.post(f"/_control/invoices/{invoice_id}/pay", json={})).status_code == 200
    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert (done["status"], done["credited"]) == ("succeeded", True)
    assert (await wallet(http, auth, wallet_id))["balance"] == 4_200
    [paid] = await stored_events(payments_engine, invoice_id)
    assert paid["event_id"] == f"{invoice_id}:PAID" and paid["workflow_id"] and paid["routed_at"]

    # The emulator delivers the same PAID again, and a forged-looking copy arrives concurrently: stored once.
    assert (await emulator.post(f"/_control/invoices/{invoice_id}/callback")).status_code == 200
    duplicates = await asyncio.gather(*(post(http, invoice_callback("PAID", invoice_id)) for _ in range(5)))
    assert all(r.status_code == 200 and r.json()["duplicate"] for r in duplicates)

    assert (await emulator.post(f"/_control/invoices/{invoice_id}/settle")).status_code == 200

    async def settled_stored() -> bool:
        return [e["event_id"] for e in await stored_events(payments_engine, invoice_id)] == [
            f"{invoice_id}:PAID",
            f"{invoice_id}:SETTLED",
        ]

    await eventually(settled_stored)
    late = await post(http, invoice_callback("EXPIRED", invoice_id, "whatever"))
    assert late.status_code == 200 and late.json()["duplicate"] is False

    again = (await http.get(f"/v1/deposits/{accepted['id']}", headers=auth)).json()
    assert (again["status"], again["credited"]) == ("succeeded", True)
    assert (await wallet(http, auth, wallet_id))["balance"] == 4_200
    assert await deposit_journals(wallet_engine, wallet_id) == [("deposit", 4_200)]


async def test_an_invoice_that_expires_unpaid_expires_the_deposit_and_moves_nothing(
    http: httpx.AsyncClient, users: Users, emulator: httpx.AsyncClient, payments_engine: AsyncEngine
) -> None:
    auth, accepted, wallet_id = await xendit_deposit(http, users, 1_000)
    invoice_id = accepted["gateway_payment_id"]
    assert (await emulator.post(f"/_control/invoices/{invoice_id}/expire")).status_code == 200
    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert (done["status"], done["failure_code"], done["credited"]) == ("expired", "expired", False)
    assert (await wallet(http, auth, wallet_id))["balance"] == 0
    [expired] = await stored_events(payments_engine, invoice_id)
    assert expired["event_id"] == f"{invoice_id}:EXPIRED" and expired["routed_at"]


async def test_the_deposit_expiry_expires_the_invoice(
    http: httpx.AsyncClient, users: Users, emulator: httpx.AsyncClient
) -> None:
    """The workflow's own deadline closes the invoice: the payer can no longer pay it."""
    auth, accepted, wallet_id = await xendit_deposit(http, users, 1_000, expires_in=1)
    done = await until_terminal(http, auth, f"/v1/deposits/{accepted['id']}")
    assert done["status"] == "expired"
    invoice = (await emulator.get(f"/v2/invoices/{accepted['gateway_payment_id']}")).json()
    assert invoice["status"] == "EXPIRED"
    assert (await emulator.post(f"/_control/invoices/{invoice['id']}/pay", json={})).status_code == 409
    assert (await wallet(http, auth, wallet_id))["balance"] == 0


async def test_a_callback_is_routed_by_external_id_before_the_invoice_id_is_recorded(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine
) -> None:
    """The invoice may reach Xendit's callbacks before the activity recorded its id (crash after create):
    the external_id — our step key — names the workflow."""
    auth, accepted, _ = await xendit_deposit(http, users, 500)
    async with payments_engine.connect() as conn:
        wf_id = (
            await conn.execute(
                text("SELECT workflow_id FROM payments WHERE id = :id"), {"id": accepted["id"]}
            )
        ).scalar_one()
    other = uuid.uuid4().hex[:24]
    r = await post(http, invoice_callback("PAID", other, f"{wf_id}:gateway_payment"))
    assert r.status_code == 200
    [event] = await stored_events(payments_engine, other)
    assert event["workflow_id"] == wf_id
    # Delivered, but about another object than the deposit's own invoice: the saga ignores it.
    now = (await http.get(f"/v1/deposits/{accepted['id']}", headers=auth)).json()
    assert (now["status"], now["credited"]) == ("awaiting_payment", False)


async def test_a_callback_for_an_invoice_we_never_created_is_stored_and_answered_200(
    http: httpx.AsyncClient, payments_engine: AsyncEngine, wallet_engine: AsyncEngine
) -> None:
    """QUALITY R13."""
    body = invoice_callback("PAID")
    async with wallet_engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM journals"))).scalar_one()
    r = await post(http, body)
    assert r.status_code == 200 and r.json() == {"received": True, "duplicate": False}
    [event] = await stored_events(payments_engine, body["id"])
    assert event["workflow_id"] is None and event["route_error"] and event["routed_at"] is None
    async with wallet_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM journals"))).scalar_one() >= before
        assert (
            await conn.execute(
                text("SELECT count(*) FROM journals WHERE description LIKE :d"), {"d": f"%{body['id']}%"}
            )
        ).scalar_one() == 0
    metrics = (await http.get("/metrics")).text
    assert 'payweave_webhook_events_total{outcome="unknown_object",provider="xendit"}' in metrics


async def test_refund_callbacks_are_stored_per_refund_and_status(
    http: httpx.AsyncClient, payments_engine: AsyncEngine
) -> None:
    refund_id = f"rfd-{uuid.uuid4().hex}"
    body = {
        "event": "refund.succeeded",
        "business_id": "5f0000000000000000000000",
        "created": "2025-01-01T00:00:00.000Z",
        "data": {"id": refund_id, "invoice_id": uuid.uuid4().hex[:24], "status": "SUCCEEDED", "amount": 1},
    }
    assert (await post(http, body)).json()["duplicate"] is False
    assert (await post(http, body)).json()["duplicate"] is True
    [event] = await stored_events(payments_engine, refund_id)
    assert (event["event_id"], event["event_type"]) == (f"{refund_id}:SUCCEEDED", "refund.succeeded")
