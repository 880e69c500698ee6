"""QUALITY R10: each webhook delivered 2–10 times, concurrently, in every order — for both providers and every
flow that waits on a gateway payment (deposit, gateway checkout, group-buy gateway participant). The final
state is as if each event had come once, and the saga's state never moves backwards.

A run is one saga awaiting its payment and one order of the provider's four event types:

* Stripe: ``payment_intent.created``, ``payment_intent.succeeded``, ``payment_intent.payment_failed``,
  ``charge.refunded``;
* Xendit: invoice ``PAID``, ``SETTLED``, ``EXPIRED`` and a ``refund.succeeded`` callback.

The gateway's truth is what the first decisive event of the order says, made real before any delivery: the
payer pays (localstripe confirm / emulator pay, and settle when SETTLED comes first), or the card is declined
(Stripe) / the invoice expires (Xendit). The gateways' own webhooks for that arrive as they will (one more
duplicate). Then each type, in the order, is POSTed k times at once (k seeded in 2..10), authentic (signed with
the webhook secret / the callback token); later contrary events are stale claims the saga must not act on.

Checked: terminal with the truth's outcome (paid / credited, or failed with nothing moved), exactly one journal
for a payment that was kept and none otherwise, every distinct event stored once, the polled status sequence
never moving backwards, and (after each test) ``verify_ledger``.

By default each provider × flow runs 2 seeded orders (one success-first, one failure-first);
``PAYWEAVE_CHAOS_SCALE=full`` runs all 24 orders of each (144 sagas).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payweave.settings import Settings
from tests.api.test_stripe_webhooks import pay as stripe_pay
from tests.api.test_stripe_webhooks import post as stripe_post
from tests.api.test_stripe_webhooks import sign
from tests.api.test_xendit_webhooks import invoice_callback
from tests.api.test_xendit_webhooks import post as xendit_post
from tests.conftest import XENDIT_SECRET_KEY, Users
from tests.e2e.test_group_buys import open_group_buy
from tests.helpers import create_wallet, idem, wallet

pytestmark = pytest.mark.reliability

FULL = os.environ.get("PAYWEAVE_CHAOS_SCALE") == "full"
SEED = int(os.environ.get("PAYWEAVE_CHAOS_SEED", "10"))
TYPES = {
    "stripe": ("created", "succeeded", "failed", "refunded"),
    "xendit": ("succeeded", "settled", "failed", "refunded"),
}
SUCCESS = {"succeeded", "settled"}
TERMINAL = {"succeeded", "failed", "expired", "canceled", "refunded", "paid", "declined"}
AMOUNT = 2_300


def orders(provider: str, flow: str) -> list[tuple[str, ...]]:
    """Every order at full size; by default two seeded ones: a success first and a failure first."""
    every = list(itertools.permutations(TYPES[provider]))
    if FULL:
        return every
    rng = random.Random(f"{SEED}:{provider}:{flow}")
    success_first = [o for o in every if decisive(o) in SUCCESS]
    failure_first = [o for o in every if decisive(o) == "failed"]
    return [rng.choice(success_first), rng.choice(failure_first)]


def decisive(order: tuple[str, ...]) -> str:
    return next(t for t in order if t in SUCCESS or t == "failed")


@dataclass
class Saga:
    """One saga waiting on a gateway payment, as its payer sees it."""

    provider: str
    flow: str
    gateway_payment_id: str
    amount: int
    status: Callable[[], Awaitable[str]]
    journals: Callable[[], Awaitable[int]]  # how many journals took this payment's money in
    kept_balance: Callable[[], Awaitable[int]]  # the balance that shows the money (0 when not kept)


async def count_journals(engine: AsyncEngine, sql: str, **params: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def start_saga(
    flow: str, provider: str, http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, gb: Any
) -> Saga:
    sub, auth = users.new()
    w = await create_wallet(http, auth)

    async def get(path: str) -> dict[str, Any]:
        r = await http.get(path, headers=auth)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    if flow == "deposit":
        r = await http.post(
            f"/v1/wallets/{w['id']}/deposits",
            json={"amount": AMOUNT, "gateway": provider},
            headers={**auth, **idem()},
        )
        assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
        body, path = r.json(), f"/v1/deposits/{r.json()['id']}"
        sql = "SELECT count(*) FROM journals WHERE external_ref = :ref AND kind = 'deposit'"
        ref, balance_of = body["id"], (auth, w["id"])
    elif flow == "checkout":
        merchant, m_auth = users.new("merchant")
        m = await create_wallet(http, m_auth)
        r = await http.post(
            "/v1/checkouts",
            json={
                "merchant_id": merchant,
                "currency": "USD",
                "amount": AMOUNT,
                "payment": {"method": "gateway", "gateway": provider},
            },
            headers={**auth, **idem()},
        )
        assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
        body, path = r.json(), f"/v1/checkouts/{r.json()['id']}"
        sql = "SELECT count(*) FROM journals WHERE external_ref = :ref AND kind = 'checkout'"
        ref, balance_of = f"pay_{body['id']}", (m_auth, m["id"])
    else:
        r = await http.post(
            f"/v1/group-buys/{gb['id']}/participants",
            json={"quantity": 1, "payment": {"method": "gateway", "gateway": provider}},
            headers={**auth, **idem()},
        )
        assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
        body, path = r.json(), f"/v1/group-buys/{gb['id']}/participants/me"
        sql = "SELECT count(*) FROM journals WHERE external_ref = :ref AND kind = 'group_buy_payment'"
        ref, balance_of = body["payment_id"], None
    amount = int(body["amount"]) if flow == "group_buy" else AMOUNT

    async def status() -> str:
        return str((await get(path))["status"])

    async def journals() -> int:
        return await count_journals(wallet_engine, sql, ref=ref)

    async def kept_balance() -> int:
        if balance_of is None:  # a group-buy payment is kept in escrow: its journal shows it
            return amount if await journals() else 0
        return int((await wallet(http, balance_of[0], balance_of[1]))["balance"])

    return Saga(provider, flow, str(body["gateway_payment_id"]), amount, status, journals, kept_balance)


async def make_truth(
    saga: Saga, order: tuple[str, ...], settings: Settings, emulator: httpx.AsyncClient
) -> None:
    """What the first decisive event says becomes true at the gateway, before any delivery."""
    first = decisive(order)
    if saga.provider == "stripe":
        if first == "succeeded":
            await stripe_pay(settings, saga.gateway_payment_id)
            return
        client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base or ""},
            http_client=stripe.HTTPXClient(),
        )
        await client.v1.payment_intents.update_async(
            saga.gateway_payment_id, params={"payment_method": "pm_card_chargeCustomerFail"}
        )
        with pytest.raises(stripe.CardError):
            await client.v1.payment_intents.confirm_async(saga.gateway_payment_id)
        return
    invoice = saga.gateway_payment_id
    if first == "failed":
        r = await emulator.post(f"/_control/invoices/{invoice}/expire")
    else:
        r = await emulator.post(f"/_control/invoices/{invoice}/pay", json={})
        if r.status_code == 200 and first == "settled":
            r = await emulator.post(f"/_control/invoices/{invoice}/settle")
    assert r.status_code == 200, r.text


async def stripe_storm(
    saga: Saga, order: tuple[str, ...], k: dict[str, int], http: httpx.AsyncClient, settings: Settings
) -> list[str]:
    key = settings.stripe_api_key.get_secret_value()
    async with httpx.AsyncClient(base_url=settings.stripe_api_base or "", auth=(key, "")) as client:
        intent: dict[str, Any] = (await client.get(f"/v1/payment_intents/{saga.gateway_payment_id}")).json()
    objects = {
        "created": ("payment_intent.created", {**intent, "status": "requires_payment_method"}),
        "succeeded": ("payment_intent.succeeded", {**intent, "status": "succeeded"}),
        "failed": (
            "payment_intent.payment_failed",
            {**intent, "status": "requires_payment_method", "last_payment_error": {"code": "card_declined"}},
        ),
        "refunded": (
            "charge.refunded",
            {
                "id": f"ch_{uuid.uuid4().hex[:20]}",
                "object": "charge",
                "payment_intent": intent["id"],
                "metadata": intent.get("metadata") or {},
                "amount": saga.amount,
                "amount_refunded": saga.amount,
                "refunded": True,
            },
        ),
    }
    event_ids = []
    for kind in order:
        event_type, obj = objects[kind]
        event_id = f"evt_r10_{uuid.uuid4().hex[:16]}"
        event_ids.append(event_id)
        payload = json.dumps(
            {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}
        ).encode()
        answers = await asyncio.gather(*(stripe_post(http, payload, sign(payload)) for _ in range(k[kind])))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return event_ids


async def xendit_storm(
    saga: Saga,
    order: tuple[str, ...],
    k: dict[str, int],
    http: httpx.AsyncClient,
    emulator: httpx.AsyncClient,
) -> list[str]:
    invoice = saga.gateway_payment_id
    external_id = (await emulator.get(f"/v2/invoices/{invoice}")).json()["external_id"]
    refund_id = f"rfd-r10-{uuid.uuid4().hex[:16]}"
    bodies = {
        "succeeded": invoice_callback("PAID", invoice, external_id),
        "settled": invoice_callback("SETTLED", invoice, external_id),
        "failed": invoice_callback("EXPIRED", invoice, external_id),
        "refunded": {
            "event": "refund.succeeded",
            "business_id": "5f0000000000000000000000",
            "created": "2025-01-01T00:00:00.000Z",
            "data": {"id": refund_id, "invoice_id": invoice, "status": "SUCCEEDED", "amount": saga.amount},
        },
    }
    ids = {
        "succeeded": f"{invoice}:PAID",
        "settled": f"{invoice}:SETTLED",
        "failed": f"{invoice}:EXPIRED",
        "refunded": f"{refund_id}:SUCCEEDED",
    }
    for kind in order:
        answers = await asyncio.gather(*(xendit_post(http, bodies[kind]) for _ in range(k[kind])))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return [ids[kind] for kind in order]


RANK = {"pending": 0, "joining": 0, "awaiting_payment": 1}


async def run_one(
    saga: Saga,
    order: tuple[str, ...],
    http: httpx.AsyncClient,
    settings: Settings,
    emulator: httpx.AsyncClient,
    payments_engine: AsyncEngine,
) -> None:
    rng = random.Random(f"{SEED}:{saga.provider}:{saga.flow}:{order}")
    k = {kind: rng.randint(2, 10) for kind in order}
    seen: list[str] = []
    storming = True

    async def watch() -> None:
        while storming or not seen or seen[-1] not in TERMINAL:
            seen.append(await saga.status())
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    await make_truth(saga, order, settings, emulator)
    if saga.provider == "stripe":
        event_ids = await stripe_storm(saga, order, k, http, settings)
    else:
        event_ids = await xendit_storm(saga, order, k, http, emulator)
    storming = False
    await asyncio.wait_for(watcher, 120)

    where = f"{saga.provider} {saga.flow} order {order} k {k}: statuses {seen}"
    # Never backwards: the rank never drops, and once terminal the status never changes.
    ranks = [RANK.get(s, 2) for s in seen]
    assert ranks == sorted(ranks), where
    terminal = [s for s in seen if s in TERMINAL]
    assert len(set(terminal)) == 1, where
    paid = decisive(order) in SUCCESS
    final = terminal[0]
    if paid:
        assert final in ("succeeded", "paid"), where
        assert (await saga.journals(), await saga.kept_balance()) == (1, saga.amount), where
    else:
        assert final in ("failed", "expired", "declined", "canceled"), where
        assert (await saga.journals(), await saga.kept_balance()) == (0, 0), where
    # Each distinct event stored once, however many times it came.
    async with payments_engine.connect() as conn:
        stored = dict(
            (
                await conn.execute(
                    text(
                        "SELECT event_id, count(*) FROM webhook_events WHERE event_id = ANY(:ids) GROUP BY event_id"
                    ),
                    {"ids": event_ids},
                )
            ).all()
        )
    assert stored == dict.fromkeys(event_ids, 1), where
    assert await saga.status() == final, where  # and it stays


@pytest.mark.parametrize("provider", ["stripe", "xendit"])
@pytest.mark.parametrize("flow", ["deposit", "checkout", "group_buy"])
async def test_duplicated_reordered_webhooks_end_as_if_once(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    xendit: str,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    flow: str,
    provider: str,
) -> None:
    gb = None
    if flow == "group_buy":  # one open session (MOQ out of reach, deadline far) for every participant
        _, _, _, gb = await open_group_buy(http, users, moq=1_000, deadline_in=3600, max_units=1_000)
    async with httpx.AsyncClient(base_url=xendit, auth=(XENDIT_SECRET_KEY, ""), timeout=30) as emulator:

        async def one(order: tuple[str, ...]) -> None:
            saga = await start_saga(flow, provider, http, users, wallet_engine, gb)
            await run_one(saga, order, http, settings, emulator, payments_engine)

        runs = orders(provider, flow)
        for start in range(0, len(runs), 8):  # a few sagas at a time
            await asyncio.gather(*(one(o) for o in runs[start : start + 8]))
    assert len(runs) == (24 if FULL else 2)
