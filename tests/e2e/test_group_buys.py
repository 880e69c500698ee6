"""GroupBuyWorkflow through the API, with real Postgres, Temporal, localstripe and the Xendit emulator (issue 4)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

from db.repositories import group_buys as group_buys_repo
from payweave.contracts.group_buy import GroupBuyInput, GroupBuyTerms
from payweave.contracts.operations import SweepInput
from payweave.settings import Settings
from tests.conftest import XENDIT_SECRET_KEY, Users, eventually
from tests.helpers import create_wallet, deposit, idem, wallet
from workers.registry import WORKFLOWS, build_activities, gateways_from_settings
from workflows.group_buy import GroupBuyWorkflow
from workflows.sweeper import SweeperWorkflow

PRICE = 1_000


@pytest_asyncio.fixture
async def emulator(xendit: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=xendit, auth=(XENDIT_SECRET_KEY, ""), timeout=30) as client:
        yield client


async def open_group_buy(
    http: httpx.AsyncClient, users: Users, *, moq: int, deadline_in: float, **extra: Any
) -> tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]:
    factory, f_auth = users.new("factory")
    f_wallet = await create_wallet(http, f_auth)
    body = {
        "product": "enamel mug",
        "unit_price": PRICE,
        "currency": "USD",
        "moq": moq,
        "deadline": (datetime.now(UTC) + timedelta(seconds=deadline_in)).isoformat(),
        **extra,
    }
    r = await http.post("/v1/group-buys", json=body, headers={**f_auth, **idem()})
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/group-buys/{r.json()['id']}"
    return factory, f_auth, f_wallet, r.json()


async def join(
    http: httpx.AsyncClient, auth: dict[str, str], gb: dict[str, Any], quantity: int, **payment: Any
) -> httpx.Response:
    return await http.post(
        f"/v1/group-buys/{gb['id']}/participants",
        json={"quantity": quantity, "payment": payment or {"method": "wallet"}},
        headers={**auth, **idem()},
    )


async def funded_buyer(http: httpx.AsyncClient, users: Users, amount: int) -> tuple[dict[str, str], str]:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    if amount:
        await deposit(http, auth, w["id"], amount)
    return auth, w["id"]


async def until_status(
    http: httpx.AsyncClient, auth: dict[str, str], gb_id: str, *statuses: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await http.get(f"/v1/group-buys/{gb_id}", headers=auth)
        return r.json() if r.status_code == 200 and r.json()["status"] in statuses else None

    return await eventually(probe)  # type: ignore[no-any-return]


async def until_participant(
    http: httpx.AsyncClient, auth: dict[str, str], gb_id: str, *statuses: str, ordered: bool = False
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await http.get(f"/v1/group-buys/{gb_id}/participants/me", headers=auth)
        if r.status_code != 200 or r.json()["status"] not in statuses:
            return None
        return r.json() if r.json()["order_id"] or not ordered else None

    return await eventually(probe)  # type: ignore[no-any-return]


async def escrow_net(wallet_engine: AsyncEngine, session_workflow_prefix: str, group_buy_id: str) -> int:
    """What this session's journals left in escrow (other tests share the escrow account)."""
    async with wallet_engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN journals j ON j.id = e.journal_id "
                        "WHERE e.wallet_id = 'sys_escrow_usd' AND (j.saga_id LIKE :wf OR j.saga_id = :gb)"
                    ),
                    {"wf": session_workflow_prefix + "%", "gb": group_buy_id},
                )
            ).scalar_one()
        )


async def session_workflow(payments_engine: AsyncEngine, gb_id: str) -> str:
    async with payments_engine.connect() as conn:
        return str(
            (
                await conn.execute(text("SELECT workflow_id FROM group_buys WHERE id = :id"), {"id": gb_id})
            ).scalar_one()
        )


async def test_moq_reached_with_wallet_stripe_and_xendit_participants_pays_the_factory(
    http: httpx.AsyncClient,
    users: Users,
    emulator: httpx.AsyncClient,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
) -> None:
    """MOQ 10, 12 paid units → succeeded → one order each → production complete → factory gets total − fee."""
    _, f_auth, f_wallet, gb = await open_group_buy(
        http, users, moq=10, deadline_in=3600, max_units=20, close_when_moq_reached=True
    )
    assert (gb["status"], gb["committed_units"], gb["paid_units"], gb["fee_bps"]) == ("open", 0, 0, 250)
    a, a_wallet = await funded_buyer(http, users, 5_000)
    b, b_wallet = await funded_buyer(http, users, 2_000)
    c, _ = await funded_buyer(http, users, 0)
    d, _ = await funded_buyer(http, users, 0)

    r = await join(http, a, gb, 3)
    assert r.status_code == 202 and r.json()["status"] == "held", r.text
    assert (await wallet(http, a, a_wallet))["held"] == 3 * PRICE
    assert (await join(http, b, gb, 2)).json()["status"] == "held"
    r = await join(http, c, gb, 4, method="gateway", gateway="stripe", payment_method="pm_card_visa")
    assert r.status_code == 202 and r.json()["status"] == "awaiting_payment", r.text
    await until_participant(http, c, gb["id"], "paid")  # confirmed server-side, looked up by its workflow
    r = await join(http, d, gb, 3, method="gateway", gateway="xendit")
    assert r.status_code == 202, r.text
    invoice_id = r.json()["gateway_payment_id"]
    assert r.json()["next_action"]["type"] == "xendit_invoice"
    view = (await http.get(f"/v1/group-buys/{gb['id']}", headers=d)).json()
    assert (view["committed_units"], view["paid_units"], view["participants"]) == (12, 9, 4)

    # The last 3 units are paid on the Xendit invoice page: 12 ≥ MOQ closes the session (close_when_moq_reached).
    assert (await emulator.post(f"/_control/invoices/{invoice_id}/pay", json={})).status_code == 200
    decided = await until_status(http, f_auth, gb["id"], "succeeded")
    assert (decided["paid_units"], decided["paid_amount"]) == (12, 12 * PRICE)

    wf_id = await session_workflow(payments_engine, gb["id"])
    for auth in (a, b, c, d):
        mine = await until_participant(http, auth, gb["id"], "captured", "paid", ordered=True)
        async with payments_engine.connect() as conn:
            order = (
                await conn.execute(
                    text("SELECT status, total, merchant, group_buy_id FROM orders WHERE id = :id"),
                    {"id": mine["order_id"]},
                )
            ).one()
        assert tuple(order) == ("paid", mine["amount"], decided["factory"], gb["id"])
    assert (await wallet(http, a, a_wallet))["balance"] == 2_000
    assert (await wallet(http, b, b_wallet))["balance"] == 0
    assert await escrow_net(wallet_engine, wf_id, gb["id"]) == 12 * PRICE

    r = await http.post(f"/v1/group-buys/{gb['id']}/production-complete", headers=f_auth)
    assert r.status_code == 200, r.text
    done = r.json()
    fee = 12 * PRICE * 250 // 10_000
    assert (done["status"], done["fee_amount"]) == ("completed", fee)
    assert (await wallet(http, f_auth, f_wallet["id"]))["balance"] == 12 * PRICE - fee
    assert await escrow_net(wallet_engine, wf_id, gb["id"]) == 0
    again = await http.post(f"/v1/group-buys/{gb['id']}/production-complete", headers=f_auth)
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    # Its orders are the session's: refunded with the session, never one by one through the checkout route.
    mine = (await http.get(f"/v1/group-buys/{gb['id']}/participants/me", headers=a)).json()
    r = await http.post(
        f"/v1/checkouts/{mine['order_id']}/refunds",
        json={"reason": "changed mind"},
        headers={**f_auth, **idem()},
    )
    assert (r.status_code, r.json()["code"]) == (409, "conflict")


async def test_moq_missed_at_the_deadline_makes_every_participant_whole(
    http: httpx.AsyncClient,
    users: Users,
    emulator: httpx.AsyncClient,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
) -> None:
    """MOQ 10 with 6 paid units → failed → holds released, card refunded, a refused Xendit refund credited to
    the wallet, the unpaid invoice expired."""
    _, f_auth, _, gb = await open_group_buy(http, users, moq=10, deadline_in=12)
    a, a_wallet = await funded_buyer(http, users, 3_000)
    b, _ = await funded_buyer(http, users, 0)
    c, c_wallet = await funded_buyer(http, users, 0)
    d, _ = await funded_buyer(http, users, 0)

    assert (await join(http, a, gb, 2)).json()["status"] == "held"
    r = await join(http, b, gb, 2, method="gateway", gateway="stripe", payment_method="pm_card_visa")
    assert r.status_code == 202, r.text
    r = await join(http, c, gb, 2, method="gateway", gateway="xendit")
    c_invoice = r.json()["gateway_payment_id"]
    r = await join(http, d, gb, 1, method="gateway", gateway="xendit")
    d_invoice = r.json()["gateway_payment_id"]
    assert (await emulator.post(f"/_control/invoices/{c_invoice}/pay", json={})).status_code == 200
    await until_participant(http, b, gb["id"], "paid")
    await until_participant(http, c, gb["id"], "paid")
    # The gateway will refuse C's refund for good: C's money goes to C's wallet instead.
    assert (await emulator.post("/_control/refunds/fail-next", json={"count": 1})).status_code == 200

    done = await until_status(http, f_auth, gb["id"], "refunded")
    assert (done["failure_code"], done["paid_units"]) == ("moq_not_reached", 6)
    assert done["refund"] == {
        "total": 3,
        "done": 3,
        "released": 1,
        "refunded": 1,
        "refunded_to_wallet": 1,
        "pending": 0,
    }
    a_now = await wallet(http, a, a_wallet)
    assert (a_now["balance"], a_now["held"]) == (3_000, 0)
    assert (await until_participant(http, a, gb["id"], "released"))["status"] == "released"
    assert (await until_participant(http, b, gb["id"], "refunded"))["refund_id"]
    assert (await until_participant(http, c, gb["id"], "refunded_to_wallet"))[
        "status"
    ] == "refunded_to_wallet"
    assert (await wallet(http, c, c_wallet))["balance"] == 2 * PRICE
    assert (await until_participant(http, d, gb["id"], "expired"))["failure_code"] == "expired"
    assert (await emulator.get(f"/v2/invoices/{d_invoice}")).json()["status"] == "EXPIRED"
    wf_id = await session_workflow(payments_engine, gb["id"])
    assert await escrow_net(wallet_engine, wf_id, gb["id"]) == 0


async def test_refused_joins_change_nothing(http: httpx.AsyncClient, users: Users) -> None:
    """Second join → already_joined; over max units → validation_error; after the deadline → session_closed."""
    _, f_auth, _, gb = await open_group_buy(http, users, moq=2, deadline_in=6, max_units=3)
    a, a_wallet = await funded_buyer(http, users, 5_000)
    b, b_wallet = await funded_buyer(http, users, 5_000)
    assert (await join(http, a, gb, 1)).status_code == 202

    again = await join(http, a, gb, 1)
    assert (again.status_code, again.json()["code"]) == (409, "already_joined")
    over = await join(http, b, gb, 3)
    assert (over.status_code, over.json()["code"]) == (422, "validation_error")
    assert "2 units left" in over.json()["detail"]
    assert (await wallet(http, a, a_wallet))["held"] == PRICE
    assert (await wallet(http, b, b_wallet))["held"] == 0

    await until_status(http, f_auth, gb["id"], "refunded")  # MOQ 2 missed at the deadline
    late = await join(http, b, gb, 1)
    assert (late.status_code, late.json()["code"]) == (409, "session_closed")
    assert (await wallet(http, b, b_wallet))["held"] == 0
    assert (await wallet(http, a, a_wallet))["held"] == 0


async def test_same_idempotency_key_answers_the_same_participation(
    http: httpx.AsyncClient, users: Users
) -> None:
    _, _, _, gb = await open_group_buy(http, users, moq=5, deadline_in=3600)
    a, a_wallet = await funded_buyer(http, users, 5_000)
    headers = {**a, **idem()}
    body = {"quantity": 2, "payment": {"method": "wallet"}}
    first = await http.post(f"/v1/group-buys/{gb['id']}/participants", json=body, headers=headers)
    second = await http.post(f"/v1/group-buys/{gb['id']}/participants", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert (await wallet(http, a, a_wallet))["held"] == 2 * PRICE
    reused = await http.post(
        f"/v1/group-buys/{gb['id']}/participants", json={**body, "quantity": 3}, headers=headers
    )
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_key_reused")


async def test_cancel_after_success_refunds_captured_wallets(
    http: httpx.AsyncClient, users: Users, payments_engine: AsyncEngine, wallet_engine: AsyncEngine
) -> None:
    _, f_auth, f_wallet, gb = await open_group_buy(
        http, users, moq=2, deadline_in=3600, close_when_moq_reached=True
    )
    a, a_wallet = await funded_buyer(http, users, 5_000)
    b, _ = await funded_buyer(http, users, 0)
    assert (await join(http, a, gb, 1)).status_code == 202
    r = await join(http, b, gb, 1, method="gateway", gateway="stripe", payment_method="pm_card_visa")
    assert r.status_code == 202, r.text
    await until_status(http, f_auth, gb["id"], "succeeded")
    await until_participant(http, a, gb["id"], "captured")
    assert (await wallet(http, a, a_wallet))["balance"] == 4_000

    stranger, s_auth = users.new("factory")
    assert (await http.post(f"/v1/group-buys/{gb['id']}/cancel", headers=s_auth)).status_code == 404
    r = await http.post(f"/v1/group-buys/{gb['id']}/cancel", json={"reason": "kiln broke"}, headers=f_auth)
    assert r.status_code == 200, r.text
    done = await until_status(http, f_auth, gb["id"], "refunded")
    assert (done["failure_code"], done["cancel_reason"]) == ("canceled", "kiln broke")
    assert (await wallet(http, a, a_wallet))["balance"] == 5_000
    assert (await until_participant(http, b, gb["id"], "refunded"))["status"] == "refunded"
    assert (await wallet(http, f_auth, f_wallet["id"]))["balance"] == 0
    wf_id = await session_workflow(payments_engine, gb["id"])
    assert await escrow_net(wallet_engine, wf_id, gb["id"]) == 0
    async with payments_engine.connect() as conn:
        statuses = (
            (await conn.execute(text("SELECT status FROM orders WHERE group_buy_id = :id"), {"id": gb["id"]}))
            .scalars()
            .all()
        )
    assert sorted(statuses) == ["refunded", "refunded"]


async def test_create_validation(http: httpx.AsyncClient, users: Users) -> None:
    _, f_auth = users.new("factory")
    await create_wallet(http, f_auth)
    soon = datetime.now(UTC) + timedelta(hours=1)
    base = {"product": "mug", "unit_price": PRICE, "currency": "USD", "moq": 10, "deadline": soon.isoformat()}
    cases = [
        ({**base, "deadline": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}, "validation_error"),
        ({**base, "max_units": 5}, "validation_error"),
        ({**base, "production_deadline": (soon - timedelta(minutes=1)).isoformat()}, "validation_error"),
        ({**base, "unit_price": 0}, "invalid_amount"),
        ({**base, "unit_price": 10.5}, "invalid_amount"),
        ({**base, "currency": "EUR"}, "wallet_not_found"),
    ]
    for body, code in cases:
        r = await http.post("/v1/group-buys", json=body, headers={**f_auth, **idem()})
        assert r.headers["content-type"] == "application/problem+json", body
        assert r.json()["code"] == code, (body, r.text)
    _, customer = users.new()
    r = await http.post("/v1/group-buys", json=base, headers={**customer, **idem()})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")


async def test_escrow_release_blocked_by_a_frozen_factory_wallet_answers_and_retries(
    http: httpx.AsyncClient, users: Users, temporal: Client, payments_engine: AsyncEngine
) -> None:
    """production-complete never hangs: a refused release is reported (release_blocked:wallet_frozen) and
    finishes once an operator unfroze the wallet and asked for a retry."""
    _, f_auth, f_wallet, gb = await open_group_buy(
        http, users, moq=1, deadline_in=3600, close_when_moq_reached=True
    )
    a, _ = await funded_buyer(http, users, 5_000)
    assert (await join(http, a, gb, 2)).status_code == 202
    await until_status(http, f_auth, gb["id"], "succeeded")
    await until_participant(http, a, gb["id"], "captured", ordered=True)
    _, operator = users.new("operator")
    assert (await http.post(f"/v1/wallets/{f_wallet['id']}/freeze", headers=operator)).status_code == 200

    r = await http.post(f"/v1/group-buys/{gb['id']}/production-complete", headers=f_auth)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["failure_code"]) == ("succeeded", "release_blocked:wallet_frozen")

    assert (await http.post(f"/v1/wallets/{f_wallet['id']}/unfreeze", headers=operator)).status_code == 200
    await temporal.get_workflow_handle(await session_workflow(payments_engine, gb["id"])).signal(
        GroupBuyWorkflow.retry_release
    )
    done = await until_status(http, f_auth, gb["id"], "completed")
    assert (done["failure_code"], done["fee_amount"]) == (None, 2 * PRICE * 250 // 10_000)
    assert (await wallet(http, f_auth, f_wallet["id"]))["balance"] == 2 * PRICE - done["fee_amount"]


async def test_the_sweeper_drives_a_session_whose_deadline_passed_without_a_decision(
    temporal: Client,
    settings: Settings,
    users: Users,
    http: httpx.AsyncClient,
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
) -> None:
    """A session past its deadline still `open` (its worker was away): one sweep signals `deadline_passed`;
    once a worker serves it, it decides at once."""
    factory, f_auth = users.new("factory")
    f_wallet = await create_wallet(http, f_auth)
    gb_id = f"gb_swept_{uuid.uuid4().hex[:10]}"
    wf_id = f"groupbuy:{factory}:{gb_id}"
    queue = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker polls it yet: the session cannot decide by itself
    terms = GroupBuyTerms(
        group_buy_id=gb_id,
        factory=factory,
        factory_wallet_id=f_wallet["id"],
        product="tiles",
        unit_price=PRICE,
        currency="USD",
        moq=3,
        deadline=datetime.now(UTC) - timedelta(minutes=5),
    )
    async with payments_engine.begin() as conn:
        await group_buys_repo.create_group_buy(conn, terms=terms, workflow_id=wf_id)
    await temporal.start_workflow(
        GroupBuyWorkflow.run, GroupBuyInput(terms=terms), id=wf_id, task_queue=queue
    )

    summary = await temporal.execute_workflow(
        SweeperWorkflow.run,
        SweepInput(limit=1000, min_payment_age_seconds=3_600),
        id=f"sweeper-test-{uuid.uuid4().hex[:12]}",
        task_queue=settings.temporal_task_queue,
    )
    assert summary.outcomes.get("group_buy_deadline_signaled", 0) >= 1, summary

    async with Worker(
        temporal,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(
            wallet_engine=wallet_engine,
            payments_engine=payments_engine,
            gateways=gateways_from_settings(settings),
            settings=settings,
        ),
    ):
        done = await temporal.get_workflow_handle_for(GroupBuyWorkflow.run, wf_id).result()
    assert (done.status, done.failure_code) == ("refunded", "moq_not_reached")
    assert (await http.get(f"/v1/group-buys/{gb_id}", headers=f_auth)).json()["status"] == "refunded"
