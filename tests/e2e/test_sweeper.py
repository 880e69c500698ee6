"""The sweeper (ARCHITECTURE §5.7) against the real stack: QUALITY R14 (webhooks lost entirely, one sweep
resolves every pending payment from the gateway), orphan payments of a dead saga, expired holds, stored
webhook events never delivered, the schedules and ``payweave sweep``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import Client

from db.engine import in_transaction
from db.repositories import ledger
from db.repositories import payments as payments_repo
from db.verify import verify_ledger
from payweave.contracts.operations import SweepInput, SweepSummary
from payweave.devstack.localstripe_server import configure_webhook
from payweave.devstack.supervisor import free_port
from payweave.schedules import RECONCILIATION_SCHEDULE_ID, SWEEPER_SCHEDULE_ID, ensure_schedules
from payweave.settings import Settings
from tests.conftest import WEBHOOK_SECRET, XENDIT_CALLBACK_TOKEN, Users, eventually
from tests.e2e.test_checkouts import checkout, until_done
from tests.e2e.test_group_buys import join, open_group_buy, until_participant
from tests.helpers import create_wallet, deposit, idem, until_terminal, wallet
from workflows.sweeper import SweeperWorkflow


@asynccontextmanager
async def webhooks_lost(localstripe: str, xendit: str, api_port: int) -> AsyncIterator[None]:
    """Every Stripe webhook and Xendit callback goes to a port nobody listens on, until the block ends."""
    dead = f"http://127.0.0.1:{free_port()}/lost"
    api = f"http://127.0.0.1:{api_port}"
    await asyncio.to_thread(configure_webhook, localstripe, dead, WEBHOOK_SECRET, f"tests-{api_port}")
    async with httpx.AsyncClient(base_url=xendit) as emulator:
        await emulator.post("/_control/callbacks", json={"url": dead, "token": XENDIT_CALLBACK_TOKEN})
        try:
            yield
        finally:
            await emulator.post(
                "/_control/callbacks",
                json={"url": f"{api}/v1/webhooks/xendit", "token": XENDIT_CALLBACK_TOKEN},
            )
            await asyncio.to_thread(
                configure_webhook,
                localstripe,
                f"{api}/v1/webhooks/stripe",
                WEBHOOK_SECRET,
                f"tests-{api_port}",
            )


def stripe_client(settings: Settings) -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base or ""},
        http_client=stripe.HTTPXClient(),
    )


async def pay_at_gateway(settings: Settings, xendit: str, next_action: dict[str, Any]) -> None:
    """The payer pays on their side: Stripe.js confirms the intent, or the Xendit invoice page is paid."""
    if next_action["type"] == "xendit_invoice":
        async with httpx.AsyncClient(base_url=xendit) as emulator:
            r = await emulator.post(f"/_control/invoices/{next_action['invoice_id']}/pay", json={})
            assert r.status_code == 200, r.text
        return
    client = stripe_client(settings)
    intent = next_action["payment_intent"]
    await client.v1.payment_intents.update_async(intent, params={"payment_method": "pm_card_visa"})
    await client.v1.payment_intents.confirm_async(intent)


async def sweep(temporal: Client, settings: Settings, **params: Any) -> SweepSummary:
    return await temporal.execute_workflow(
        SweeperWorkflow.run,
        SweepInput(**{"limit": 1000, "min_payment_age_seconds": 0, **params}),
        id=f"sweeper-test-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal_task_queue,
    )


async def start_deposit(
    http: httpx.AsyncClient, auth: dict[str, str], wallet_id: str, amount: int, gateway: str
) -> dict[str, Any]:
    r = await http.post(
        f"/v1/wallets/{wallet_id}/deposits",
        json={"amount": amount, "gateway": gateway},
        headers={**auth, **idem()},
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "awaiting_payment"
    return r.json()  # type: ignore[no-any-return]


async def payment_row(payments_engine: AsyncEngine, payment_id: str) -> Any:
    async with payments_engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT workflow_id, status, failure_code, credited FROM payments WHERE id = :id"),
                {"id": payment_id},
            )
        ).one()


@pytest.mark.reliability
async def test_r14_one_sweep_resolves_every_pending_payment_when_webhooks_are_lost(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    localstripe: str,
    xendit: str,
    api_port: int,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    merchant, m_auth = users.new("merchant")
    m_wallet = await create_wallet(http, m_auth)
    _, buyer = users.new()
    b_wallet = await create_wallet(http, buyer)
    await deposit(http, buyer, b_wallet["id"], 5_000)  # server-confirmed: needs no webhook

    async with webhooks_lost(localstripe, xendit, api_port):
        deposits = [
            await start_deposit(http, buyer, b_wallet["id"], 2_000, "stripe"),
            await start_deposit(http, buyer, b_wallet["id"], 3_000, "xendit"),
        ]
        checkouts = [
            await checkout(
                http,
                buyer,
                {
                    "merchant_id": merchant,
                    "currency": "USD",
                    "amount": 5_000,
                    "payment": {"method": "split", "wallet_amount": 1_000, "gateway": "stripe"},
                },
            ),
            await checkout(
                http,
                buyer,
                {
                    "merchant_id": merchant,
                    "currency": "USD",
                    "amount": 4_000,
                    "payment": {"method": "gateway", "gateway": "xendit"},
                },
            ),
        ]
        unpaid = await start_deposit(http, buyer, b_wallet["id"], 700, "stripe")
        _, f_auth, _, gb = await open_group_buy(http, users, moq=5, deadline_in=3600)
        joined = await join(http, buyer, gb, 1, method="gateway", gateway="xendit")
        assert joined.status_code == 202 and joined.json()["status"] == "awaiting_payment", joined.text
        for saga in (*deposits, *checkouts, joined.json()):
            await pay_at_gateway(settings, xendit, saga["next_action"])

        # Paid at the gateways, and nobody told us: every saga still waits.
        for d in deposits:
            assert (await http.get(f"/v1/deposits/{d['id']}", headers=buyer)).json()[
                "status"
            ] == "awaiting_payment"
        for c in checkouts:
            assert (await http.get(f"/v1/checkouts/{c['id']}", headers=buyer)).json()[
                "status"
            ] == "awaiting_payment"

        participant = (await http.get(f"/v1/group-buys/{gb['id']}/participants/me", headers=buyer)).json()
        assert participant["status"] == "awaiting_payment"

        summary = await sweep(temporal, settings)
        assert summary.outcomes.get("payment_signaled_succeeded", 0) >= 5, summary
        assert summary.errors == 0, summary

        for d in deposits:
            done = await until_terminal(http, buyer, f"/v1/deposits/{d['id']}")
            assert (done["status"], done["credited"]) == ("succeeded", True), done
        for c in checkouts:
            assert (await until_done(http, buyer, c["id"]))["status"] == "paid"
        assert (await until_participant(http, buyer, gb["id"], "paid"))["status"] == "paid"
        # The webhooks really were lost (checked before they are delivered again: Xendit retries a callback).
        async with payments_engine.connect() as conn:
            stored = (
                await conn.execute(
                    text("SELECT count(*) FROM webhook_events WHERE object_id = ANY(:ids)"),
                    {"ids": [saga["gateway_payment_id"] for saga in (*deposits, *checkouts, joined.json())]},
                )
            ).scalar_one()
        assert stored == 0
    assert (await wallet(http, buyer, b_wallet["id"]))["balance"] == 5_000 + 2_000 + 3_000 - 1_000
    assert (await wallet(http, m_auth, m_wallet["id"]))["balance"] == 5_000 + 4_000
    # The sweep signalled only what the gateway decided: the unpaid deposit still waits for its payer.
    assert (await http.get(f"/v1/deposits/{unpaid['id']}", headers=buyer)).json()[
        "status"
    ] == "awaiting_payment"
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations


@pytest.mark.reliability
async def test_a_payment_whose_saga_died_is_closed_and_a_late_payment_refunded(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    localstripe: str,
    xendit: str,
    api_port: int,
    payments_engine: AsyncEngine,
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    async with webhooks_lost(localstripe, xendit, api_port):
        paid = await start_deposit(http, auth, w["id"], 1_200, "stripe")
        abandoned = await start_deposit(http, auth, w["id"], 800, "xendit")
        await pay_at_gateway(settings, xendit, paid["next_action"])
        for d in (paid, abandoned):  # an operator terminated the sagas (or their history is gone)
            wf_id = (await payment_row(payments_engine, d["id"])).workflow_id
            await temporal.get_workflow_handle(wf_id).terminate(reason="test: saga gone")

        summary = await sweep(temporal, settings)
    assert summary.outcomes.get("payment_orphan_refunded", 0) >= 1, summary
    assert summary.outcomes.get("payment_orphan_closed", 0) >= 1, summary
    assert tuple(await payment_row(payments_engine, paid["id"]))[1:] == (
        "refunded",
        "orphan_late_payment",
        False,
    )
    assert tuple(await payment_row(payments_engine, abandoned["id"]))[1:3] == ("expired", "orphaned")
    refunds = await stripe_client(settings).v1.refunds.list_async()
    intent = paid["gateway_payment_id"]
    assert [(r.payment_intent, r.amount) for r in refunds.data if r.payment_intent == intent] == [
        (intent, 1_200)
    ]
    assert (await wallet(http, auth, w["id"]))["balance"] == 0  # nothing was credited, nothing kept

    again = await sweep(temporal, settings)  # closed now: nothing left to do for them
    assert again.outcomes.get("payment_orphan_refunded", 0) == 0


async def test_an_expired_hold_of_a_closed_saga_is_released_and_a_live_sagas_hold_is_not(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    await deposit(http, auth, w["id"], 3_000)
    live = await start_deposit(http, auth, w["id"], 500, "stripe")  # a running saga, waiting for its payer
    live_saga = (await payment_row(payments_engine, live["id"])).workflow_id
    suffix = uuid.uuid4().hex[:12]
    past = datetime.now(UTC) - timedelta(minutes=5)

    async def place(conn: AsyncConnection) -> None:
        for name, saga, amount in (("gone", f"checkout:gone:{suffix}", 1_000), ("live", live_saga, 700)):
            await ledger.place_hold(
                conn,
                idempotency_key=f"test:{suffix}:{name}",
                hold_id=f"hld_{name}_{suffix}",
                wallet_id=w["id"],
                amount=amount,
                currency="USD",
                expires_at=past,
                saga_id=saga,
            )

    await in_transaction(wallet_engine, place)
    assert (await wallet(http, auth, w["id"]))["held"] == 1_700

    summary = await sweep(temporal, settings)
    assert summary.outcomes.get("hold_expired", 0) >= 1, summary

    async def holds(conn: AsyncConnection) -> dict[str, str]:
        rows = await conn.execute(
            text("SELECT id, status FROM holds WHERE id = ANY(:ids)"),
            {"ids": [f"hld_gone_{suffix}", f"hld_live_{suffix}"]},
        )
        return {r.id: r.status for r in rows}

    assert await in_transaction(wallet_engine, holds) == {
        f"hld_gone_{suffix}": "expired",
        f"hld_live_{suffix}": "open",
    }
    assert (await wallet(http, auth, w["id"]))["held"] == 700
    await in_transaction(wallet_engine, lambda conn: ledger.release_hold(conn, hold_id=f"hld_live_{suffix}"))


async def test_a_stored_webhook_event_never_delivered_is_routed_again(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    localstripe: str,
    xendit: str,
    api_port: int,
    payments_engine: AsyncEngine,
) -> None:
    """The API stored the event and crashed before signalling (routed_at NULL, owner unknown then)."""
    _, auth = users.new()
    w = await create_wallet(http, auth)
    # Until the end: the real webhook must not beat the re-routed event.
    async with webhooks_lost(localstripe, xendit, api_port):
        d = await start_deposit(http, auth, w["id"], 900, "stripe")
        await pay_at_gateway(settings, xendit, d["next_action"])
        intent, suffix = d["gateway_payment_id"], uuid.uuid4().hex[:12]

        async def store(conn: AsyncConnection) -> list[int]:
            rows = []
            for event_id, object_id in (
                (f"evt_ours_{suffix}", intent),
                (f"evt_stranger_{suffix}", f"pi_x{suffix}"),
            ):
                stored = await payments_repo.store_webhook_event(
                    conn,
                    provider="stripe",
                    event_id=event_id,
                    event_type="payment_intent.succeeded",
                    object_id=object_id,
                    workflow_id=None,
                    payload={
                        "id": event_id,
                        "type": "payment_intent.succeeded",
                        "data": {"object": {"id": object_id, "object": "payment_intent", "metadata": {}}},
                    },
                )
                assert stored is not None
                rows.append(stored.id)
            return rows

        ours, stranger = await in_transaction(payments_engine, store)
        # Payments are left alone in this sweep (too young): only the re-routed event can tell the saga.
        summary = await sweep(temporal, settings, min_payment_age_seconds=3_600, webhook_min_age_seconds=0)
        assert summary.outcomes.get("webhook_rerouted", 0) >= 1, summary
        assert summary.outcomes.get("webhook_unknown_object", 0) >= 1, summary
        done = await until_terminal(http, auth, f"/v1/deposits/{d['id']}")
    assert (done["status"], done["credited"]) == ("succeeded", True)
    async with payments_engine.connect() as conn:
        rows = {
            r.id: r
            for r in await conn.execute(
                text(
                    "SELECT id, workflow_id, routed_at, route_error FROM webhook_events WHERE id = ANY(:ids)"
                ),
                {"ids": [ours, stranger]},
            )
        }
    wf_id = (await payment_row(payments_engine, d["id"])).workflow_id
    assert (rows[ours].workflow_id, rows[ours].route_error) == (wf_id, None) and rows[ours].routed_at
    assert rows[stranger].routed_at and "no owning workflow" in rows[stranger].route_error


async def test_schedules_are_registered_idempotently(temporal: Client, settings: Settings) -> None:
    # A task queue nobody polls: a tick that fires during the test starts nothing that runs.
    mine = settings.model_copy(update={"temporal_task_queue": f"nobody-{uuid.uuid4().hex[:8]}"})
    try:
        first = await ensure_schedules(temporal, mine)
        assert first == [
            f"schedule {SWEEPER_SCHEDULE_ID} created",
            f"schedule {RECONCILIATION_SCHEDULE_ID} created",
        ]
        changed = mine.model_copy(update={"sweeper_interval_seconds": 120})
        second = await ensure_schedules(temporal, changed)
        assert second == [
            f"schedule {SWEEPER_SCHEDULE_ID} updated",
            f"schedule {RECONCILIATION_SCHEDULE_ID} updated",
        ]

        described = await temporal.get_schedule_handle(SWEEPER_SCHEDULE_ID).describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(seconds=120)]

        async def listed() -> list[str] | None:
            ids = sorted([s.id async for s in await temporal.list_schedules()])
            return ids if ids == sorted([SWEEPER_SCHEDULE_ID, RECONCILIATION_SCHEDULE_ID]) else None

        assert await eventually(listed, timeout=30)  # one schedule each (listing is eventually consistent)
    finally:
        for schedule_id in (SWEEPER_SCHEDULE_ID, RECONCILIATION_SCHEDULE_ID):
            await temporal.get_schedule_handle(schedule_id).delete()


async def test_payweave_sweep_runs_one_sweep_and_prints_the_summary(
    temporal: Client, settings: Settings, api_url: str
) -> None:
    env = {
        **os.environ,
        "PAYWEAVE_TEMPORAL_ADDRESS": temporal.service_client.config.target_host,
        "PAYWEAVE_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "PAYWEAVE_TEMPORAL_NAMESPACE": temporal.namespace,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "payweave.cli", "sweep"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    summary = SweepSummary.model_validate_json(result.stdout)
    assert set(summary.examined) == {"payments", "group_buys", "holds", "webhooks", "orders"}
    assert "sweep done" in result.stderr


async def test_an_order_whose_saga_never_started_is_expired_after_its_deadline(
    http: httpx.AsyncClient, users: Users, settings: Settings, temporal: Client, migrated: None
) -> None:
    """The API recorded the order, Temporal was down (503), the client never retried: past its expiry the
    sweeper finds no saga and nothing a saga would have left, and expires the order (``saga_not_started``).
    No money had moved, and none moves."""
    from api.main import create_app
    from payweave.ids import derived_id, workflow_id
    from tests.api.support import assert_problem
    from tests.api.test_temporal_unavailable import unreachable_temporal

    buyer_sub, buyer = users.new()
    merchant, m_auth = users.new("merchant")
    b = await create_wallet(http, buyer)
    await create_wallet(http, m_auth)
    await deposit(http, buyer, b["id"], 400)
    key = idem()
    body = {"merchant_id": merchant, "currency": "USD", "amount": 400, "payment": {"method": "wallet"}}
    app = create_app(settings, temporal=await unreachable_temporal())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payweave.test") as down:
            refused = await down.post(
                "/v1/checkouts", json={**body, "expires_in": 1}, headers={**buyer, **key}
            )
            assert_problem(refused, 503, "service_unavailable")
    order_id = derived_id("ord", workflow_id("checkout", buyer_sub, key["Idempotency-Key"]))
    assert (await http.get(f"/v1/checkouts/{order_id}", headers=buyer)).json()["status"] == "pending"

    async def expired() -> tuple[dict[str, Any], SweepSummary] | None:
        summary = await sweep(temporal, settings)  # the order is found once its expiry (1 s) has passed
        order = (await http.get(f"/v1/checkouts/{order_id}", headers=buyer)).json()
        return (order, summary) if order["status"] == "expired" else None

    order, summary = await eventually(expired)
    assert order["failure_code"] == "saga_not_started"
    assert summary.outcomes.get("order_not_started", 0) >= 1
    assert (await wallet(http, buyer, b["id"]))["balance"] == 400
