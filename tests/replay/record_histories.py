"""Record workflow histories for the replay tests. Not collected by default (no ``test_`` prefix):

    pytest tests/replay/record_histories.py

writes tests/replay/histories/<name>.json from sagas run against the real stack. Re-record only when a
workflow changes on purpose (and then version it: running workflows must still replay).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.e2e.test_compensation_queue import (  # noqa: F401 - `lab` is a fixture
    Lab,
    frozen_transfer,
    lab,
    refused_hold_checkout,
    split_checkout,
    until_waiting,
)
from tests.helpers import create_wallet, deposit, idem, until_terminal

HISTORIES = Path(__file__).parent / "histories"
# Record a later version beside the existing files instead of over them (running workflows started before a
# change must still replay): e.g. PAYWEAVE_HISTORY_SUFFIX=_localsteps writes deposit_succeeded_localsteps.json.
SUFFIX = os.environ.get("PAYWEAVE_HISTORY_SUFFIX", "")


async def _save(temporal: Client, payments: AsyncEngine, table: str, resource_id: str, name: str) -> None:
    async with payments.connect() as conn:
        wf_id = (
            await conn.execute(text(f"SELECT workflow_id FROM {table} WHERE id = :id"), {"id": resource_id})
        ).scalar_one()

    async def closed() -> bool:
        return (await temporal.get_workflow_handle(wf_id).describe()).close_time is not None

    await eventually(closed)
    history = await temporal.get_workflow_handle(wf_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}{SUFFIX}.json").write_text(history.to_json())


async def test_record(
    http: httpx.AsyncClient, users: Users, temporal: Client, payments_engine: AsyncEngine
) -> None:
    _, alice = users.new()
    _, bob = users.new()
    _, operator = users.new("operator")
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    dep = await deposit(http, alice, a["id"], 10_000)
    ok = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 3_000, "currency": "USD"},
        headers={**alice, **idem()},
    )
    await until_terminal(http, alice, f"/v1/transfers/{ok.json()['id']}")
    await http.post(f"/v1/wallets/{b['id']}/freeze", headers=operator)
    rb = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 1_000, "currency": "USD"},
        headers={**alice, **idem()},
    )
    await until_terminal(http, alice, f"/v1/transfers/{rb.json()['id']}")
    expired = await http.post(
        f"/v1/wallets/{a['id']}/deposits", json={"amount": 500, "expires_in": 1}, headers={**alice, **idem()}
    )
    await until_terminal(http, alice, f"/v1/deposits/{expired.json()['id']}")

    await _save(temporal, payments_engine, "payments", dep["id"], "deposit_succeeded")
    await _save(temporal, payments_engine, "payments", expired.json()["id"], "deposit_expired")
    await _save(temporal, payments_engine, "transfers", ok.json()["id"], "transfer_completed")
    await _save(temporal, payments_engine, "transfers", rb.json()["id"], "transfer_rolled_back")


async def test_record_checkout_and_refund(
    http: httpx.AsyncClient, users: Users, temporal: Client, payments_engine: AsyncEngine
) -> None:
    from tests.e2e.test_checkouts import checkout, until_done
    from tests.e2e.test_refunds import refund, until_refund_done

    merchant, m_auth = users.new("merchant")
    await create_wallet(http, m_auth)
    _, buyer = users.new()
    w = await create_wallet(http, buyer)
    await deposit(http, buyer, w["id"], 3_000)
    paid = await checkout(
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
    await until_done(http, buyer, paid["id"])
    from_wallet = await checkout(
        http,
        buyer,
        {"merchant_id": merchant, "currency": "USD", "amount": 700, "payment": {"method": "wallet"}},
    )
    await until_done(http, buyer, from_wallet["id"])
    expired = await checkout(
        http,
        buyer,
        {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 500,
            "expires_in": 1,
            "payment": {"method": "gateway", "gateway": "stripe"},
        },
    )
    await until_done(http, buyer, expired["id"])
    r = await refund(http, m_auth, paid["id"], {"amount": 4_000, "reason": "damaged"})
    await until_refund_done(http, m_auth, r.json()["id"])

    await _save(temporal, payments_engine, "orders", paid["id"], "checkout_split_paid")
    await _save(temporal, payments_engine, "orders", expired["id"], "checkout_expired")
    await _save(temporal, payments_engine, "orders", from_wallet["id"], "checkout_wallet_paid")
    await _save(temporal, payments_engine, "refunds", r.json()["id"], "refund_partial")


async def test_record_checkout_failure_looked_up(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    temporal: Client,
    payments_engine: AsyncEngine,
) -> None:
    """A failure event for a card that was paid: looked up, the checkout ends paid (checkout-failure-looked-up)."""
    from tests.e2e.test_checkouts import failure_event_after_payment

    wf_id = await failure_event_after_payment(http, users, settings, temporal, payments_engine)
    await _save_workflow(temporal, wf_id, "checkout_failure_event_paid")


async def _save_workflow(temporal: Client, wf_id: str, name: str) -> None:
    async def closed() -> bool:
        return (await temporal.get_workflow_handle(wf_id).describe()).close_time is not None

    await eventually(closed)
    history = await temporal.get_workflow_handle(wf_id).fetch_history()
    (HISTORIES / f"{name}{SUFFIX}.json").write_text(history.to_json())
    (HISTORIES / f"{name}{SUFFIX}.workflow_id").write_text(wf_id + "\n")


async def test_record_group_buys(
    http: httpx.AsyncClient, users: Users, temporal: Client, payments_engine: AsyncEngine
) -> None:
    from tests.e2e.test_group_buys import funded_buyer, join, open_group_buy, until_status

    _, f_auth, _, ok = await open_group_buy(http, users, moq=2, deadline_in=3600, close_when_moq_reached=True)
    a, _ = await funded_buyer(http, users, 5_000)
    b, _ = await funded_buyer(http, users, 0)
    assert (await join(http, a, ok, 1)).status_code == 202
    paying = await join(http, b, ok, 1, method="gateway", gateway="stripe", payment_method="pm_card_visa")
    await until_status(http, f_auth, ok["id"], "succeeded")
    assert (
        await http.post(f"/v1/group-buys/{ok['id']}/production-complete", headers=f_auth)
    ).status_code == 200

    _, g_auth, _, failed = await open_group_buy(http, users, moq=5, deadline_in=4)
    c, _ = await funded_buyer(http, users, 5_000)
    assert (await join(http, c, failed, 2)).status_code == 202
    await until_status(http, g_auth, failed["id"], "refunded")

    async def workflow_of(table: str, resource_id: str) -> str:
        async with payments_engine.connect() as conn:
            query = text(f"SELECT workflow_id FROM {table} WHERE id = :id")
            return str((await conn.execute(query, {"id": resource_id})).scalar_one())

    await _save_workflow(temporal, await workflow_of("group_buys", ok["id"]), "groupbuy_completed")
    failed_wf = await workflow_of("group_buys", failed["id"])
    await _save_workflow(temporal, failed_wf, "groupbuy_refunded")
    paid_wf = await workflow_of("payments", paying.json()["payment_id"])
    await _save_workflow(temporal, paid_wf, "groupbuypayment_paid")
    await _save_workflow(temporal, f"{failed_wf}:bulk-refund", "bulkrefund_released")


async def test_record_operations(temporal: Client, settings: Settings, worker: None) -> None:
    from payweave.contracts.operations import ReconcileInput, SweepInput
    from workflows.reconciliation import ReconciliationWorkflow
    from workflows.sweeper import SweeperWorkflow

    sweep_id = f"sweeper-record-{uuid.uuid4().hex[:8]}"
    await temporal.execute_workflow(
        SweeperWorkflow.run, SweepInput(), id=sweep_id, task_queue=settings.temporal_task_queue
    )
    reconcile_id = f"reconciliation-record-{uuid.uuid4().hex[:8]}"
    await temporal.execute_workflow(
        ReconciliationWorkflow.run, ReconcileInput(), id=reconcile_id, task_queue=settings.temporal_task_queue
    )
    await _save_workflow(temporal, sweep_id, "sweeper_once")
    await _save_workflow(temporal, reconcile_id, "reconciliation_once")


async def test_record_operator_decisions(lab: Lab) -> None:  # noqa: F811 - the fixture imported above
    """The compensation-failure queue's outcomes: a transfer whose reversal ran out of attempts and an operator
    retried once the outage was over; a checkout whose payment the gateway refused to cancel, cancelled by hand
    and resolved by an operator."""
    from payweave.decisions import decide
    from workflows.checkout import CheckoutWorkflow

    lab.outage.arm("reverse_journal")
    transfer_wf, *_ = await frozen_transfer(lab, 1_000)
    await until_waiting(lab, transfer_wf)
    lab.outage.heal("reverse_journal")
    await decide(lab.temporal, transfer_wf, "retry", operator="recorder", reason="wallet DB back (INC-2)")

    lab.outage.arm("cancel_gateway_payment", refusal="injected_refusal")
    checkout = await split_checkout(lab, stock=1, wallet_amount=300, expires_in=1)
    await until_waiting(lab, checkout.wf_id)
    lab.outage.heal("cancel_gateway_payment")
    status = await lab.temporal.get_workflow_handle(checkout.wf_id).query(CheckoutWorkflow.status)
    assert status is not None and status.gateway_payment_id
    key = lab.settings.stripe_api_key.get_secret_value()
    async with httpx.AsyncClient(base_url=lab.settings.stripe_api_base or "", auth=(key, "")) as stripe:
        await stripe.post(f"/v1/payment_intents/{status.gateway_payment_id}/cancel")
    await decide(
        lab.temporal, checkout.wf_id, "resolve", operator="recorder", reason="cancelled by hand (INC-3)"
    )

    await _save_workflow(lab.temporal, transfer_wf, "transfer_retried_by_operator")
    await _save_workflow(lab.temporal, checkout.wf_id, "checkout_resolved_by_operator")


async def test_record_refused_hold(lab: Lab) -> None:  # noqa: F811 - the fixture imported above
    """A split checkout whose wallet hold is refused: the payment row recorded with its order is canceled."""
    c = await refused_hold_checkout(lab)
    await _save_workflow(lab.temporal, c.wf_id, "checkout_hold_refused")
