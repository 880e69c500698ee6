"""Domain events reach users (GET /v1/notifications) and, signed, a merchant webhook; a failing webhook
never fails a saga."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
import uvicorn

from activities.notify import NotifyActivities
from payweave.contracts.activities import NotifyInput
from payweave.devstack.supervisor import free_port
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import checkout, until_done
from tests.helpers import create_wallet, deposit

RECEIVED: list[tuple[bytes, str]] = []


async def receiver(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A merchant's webhook endpoint (a real HTTP server on loopback)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    RECEIVED.append((body, headers.get(b"payweave-signature", b"").decode()))
    status = 500 if b"fail-me" in body else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest_asyncio.fixture(scope="module")
async def webhook_url() -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/hooks/payweave"
    server.should_exit = True
    await task


async def test_checkout_outcomes_are_notified_to_buyer_and_merchant(
    http: httpx.AsyncClient, users: Users
) -> None:
    merchant, m_auth = users.new("merchant")
    await create_wallet(http, m_auth)
    _, buyer = users.new()
    w = await create_wallet(http, buyer)
    await deposit(http, buyer, w["id"], 500)
    order = await checkout(
        http,
        buyer,
        {"merchant_id": merchant, "currency": "USD", "amount": 500, "payment": {"method": "wallet"}},
    )
    await until_done(http, buyer, order["id"])

    async def kinds(auth: dict[str, str]) -> list[tuple[str, str]]:
        page = (await http.get("/v1/notifications", headers=auth)).json()
        return [(n["kind"], n["data"]["order_id"]) for n in page["data"]]

    async def both_told() -> bool:
        return ("checkout.paid", order["id"]) in await kinds(buyer) and (
            "checkout.paid",
            order["id"],
        ) in await kinds(m_auth)

    await eventually(both_told)
    _, stranger = users.new()
    assert await kinds(stranger) == []


async def test_signed_merchant_webhook_and_failures_that_change_nothing(
    payments_engine: Any, webhook_url: str
) -> None:
    secret = "notify-secret-" + uuid.uuid4().hex
    activities = NotifyActivities(payments_engine, webhook_url, secret)
    for kind in ("checkout.paid", "fail-me"):
        inp = NotifyInput(
            idempotency_key=f"k-{uuid.uuid4().hex}", kind=kind, recipients=["m1"], data={"order_id": "o"}
        )
        assert await activities.notify(inp) == 1
        assert await activities.notify(inp) == 0  # a retried step stores (and sends) nothing twice
    bodies = {json.loads(body)["kind"]: (body, sig) for body, sig in RECEIVED}
    body, signature = bodies["checkout.paid"]
    t, v1 = (part.split("=", 1)[1] for part in signature.split(","))
    assert hmac.compare_digest(
        v1, hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    )
    assert "fail-me" in bodies  # delivered, answered 500: recorded on the row, nothing raised
