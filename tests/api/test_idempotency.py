"""QUALITY R8/R9: one Idempotency-Key, one saga.

R8: any number of concurrent (or later) POSTs with one key and one body answer identically and start one
workflow; the money moves once. R9: the same key with a different body is 409 ``idempotency_key_reused`` and
changes nothing. Keys are scoped per user; money-moving POSTs without a usable key are 422.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowExecutionStatus

from tests.api.support import (
    OwnerRows,
    assert_problem,
    journals_of_saga,
    key_claimed,
    owner_rows,
    wallet_row,
    workflow_exists,
)
from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem, until_terminal

pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


async def runs_of(temporal: Client, wf_id: str) -> list[Any]:
    """Every run with this workflow id, once visibility shows the first one closed (it lags a little)."""

    async def probe() -> list[Any] | None:
        runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{wf_id}'")]
        return runs if runs and all(r.status != WorkflowExecutionStatus.RUNNING for r in runs) else None

    return await eventually(probe)  # type: ignore[no-any-return]


async def concurrently(n: int, method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
    http: httpx.AsyncClient = kwargs.pop("http")
    return await asyncio.gather(*(http.request(method, path, **kwargs) for _ in range(n)))


def assert_all_identical(responses: list[httpx.Response], status: int) -> dict[str, Any]:
    assert [r.status_code for r in responses] == [status] * len(responses), [r.text for r in responses]
    first = responses[0]
    for r in responses[1:]:
        assert r.json() == first.json()
        assert r.headers.get("location") == first.headers.get("location")
    return first.json()  # type: ignore[no-any-return]


async def test_50_concurrent_transfer_posts_with_one_key_start_one_saga(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
) -> None:
    sub, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 10_000)
    key = idem()
    wf_id = f"transfer:{sub}:{key['Idempotency-Key']}"
    body = {
        "from_wallet_id": a["id"],
        "to_wallet_id": b["id"],
        "amount": 1_234,
        "currency": "USD",
        "description": "r8",
    }

    responses = await concurrently(
        50, "POST", "/v1/transfers", http=http, json=body, headers={**alice, **key}
    )

    accepted = assert_all_identical(responses, 202)
    assert (accepted["status"], accepted["amount"]) == ("pending", 1_234)
    assert responses[0].headers["location"] == f"/v1/transfers/{accepted['id']}"
    done = await until_terminal(http, alice, f"/v1/transfers/{accepted['id']}")
    assert (done["status"], done["failure_code"]) == ("completed", None)
    assert len(await runs_of(temporal, wf_id)) == 1
    assert await journals_of_saga(wallet_engine, wf_id) == ["transfer_debit", "transfer_credit"]
    assert (await wallet_row(wallet_engine, a["id"])).balance == 10_000 - 1_234
    assert (await wallet_row(wallet_engine, b["id"])).balance == 1_234
    assert await owner_rows(payments_engine, sub) == OwnerRows(transfers=1, payments=1, idempotency_keys=2)

    # A retry long after the saga closed answers the same and starts nothing.
    late = await http.post("/v1/transfers", json=body, headers={**alice, **key})
    assert (late.status_code, late.json()) == (202, accepted)
    assert len(await runs_of(temporal, wf_id)) == 1
    assert (await wallet_row(wallet_engine, a["id"])).balance == 10_000 - 1_234


async def test_20_concurrent_deposit_posts_with_one_key_credit_once(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
) -> None:
    sub, alice = users.new()
    w = await create_wallet(http, alice)
    key = idem()
    wf_id = f"deposit:{sub}:{key['Idempotency-Key']}"
    path = f"/v1/wallets/{w['id']}/deposits"
    body = {"amount": 2_500, "payment_method": "pm_card_visa"}

    responses = await concurrently(20, "POST", path, http=http, json=body, headers={**alice, **key})

    accepted = assert_all_identical(responses, 202)
    assert accepted["gateway_payment_id"], accepted  # answered once the gateway object existed
    done = await until_terminal(http, alice, f"/v1/deposits/{accepted['id']}")
    assert (done["status"], done["credited"], done["gateway_payment_id"]) == (
        "succeeded",
        True,
        accepted["gateway_payment_id"],
    )
    assert len(await runs_of(temporal, wf_id)) == 1
    assert await journals_of_saga(wallet_engine, wf_id) == ["deposit"]
    assert (await wallet_row(wallet_engine, w["id"])).balance == 2_500
    assert await owner_rows(payments_engine, sub) == OwnerRows(transfers=0, payments=1, idempotency_keys=1)

    late = await http.post(path, json=body, headers={**alice, **key})
    assert (late.status_code, late.json()) == (202, accepted)
    assert (await wallet_row(wallet_engine, w["id"])).balance == 2_500
    assert (await owner_rows(payments_engine, sub)).payments == 1


async def test_same_key_different_transfer_body_is_409_and_changes_nothing(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
) -> None:
    sub, alice = users.new()
    _, bob = users.new()
    _, carol = users.new()
    a, b, c = (
        await create_wallet(http, alice),
        await create_wallet(http, bob),
        await create_wallet(http, carol),
    )
    await deposit(http, alice, a["id"], 10_000)
    key = idem()
    wf_id = f"transfer:{sub}:{key['Idempotency-Key']}"
    body = {"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 1_000, "currency": "USD"}
    first = await http.post("/v1/transfers", json=body, headers={**alice, **key})
    assert first.status_code == 202, first.text
    await until_terminal(http, alice, f"/v1/transfers/{first.json()['id']}")
    state = {w: await wallet_row(wallet_engine, w) for w in (a["id"], b["id"], c["id"])}
    rows = await owner_rows(payments_engine, sub)

    for changed in ({"amount": 2_000}, {"to_wallet_id": c["id"]}, {"description": "something else"}):
        r = await http.post("/v1/transfers", json={**body, **changed}, headers={**alice, **key})
        assert_problem(r, 409, "idempotency_key_reused")
        assert first.json()["id"] not in r.text

    assert {w: await wallet_row(wallet_engine, w) for w in state} == state
    assert (
        await owner_rows(payments_engine, sub)
        == rows
        == OwnerRows(transfers=1, payments=1, idempotency_keys=2)
    )
    assert await journals_of_saga(wallet_engine, wf_id) == ["transfer_debit", "transfer_credit"]
    assert len(await runs_of(temporal, wf_id)) == 1
    # the original body is still a plain retry
    retry = await http.post("/v1/transfers", json=body, headers={**alice, **key})
    assert (retry.status_code, retry.json()) == (202, first.json())


async def test_racing_different_bodies_under_one_key_one_wins_the_rest_are_409(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    sub, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 10_000)
    key = idem()
    bodies = [
        {"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": amount, "currency": "USD"}
        for amount in (100, 200)
        for _ in range(10)
    ]

    responses = await asyncio.gather(
        *(http.post("/v1/transfers", json=body, headers={**alice, **key}) for body in bodies)
    )

    winners = {r.json()["amount"] for r in responses if r.status_code == 202}
    assert len(winners) == 1, [r.text for r in responses]
    (amount,) = winners
    for body, r in zip(bodies, responses, strict=True):
        if body["amount"] == amount:
            assert r.status_code == 202, r.text
        else:
            assert_problem(r, 409, "idempotency_key_reused")
    winner = next(r for r in responses if r.status_code == 202).json()
    assert (await until_terminal(http, alice, f"/v1/transfers/{winner['id']}"))["status"] == "completed"
    assert (await wallet_row(wallet_engine, a["id"])).balance == 10_000 - amount
    assert (await wallet_row(wallet_engine, b["id"])).balance == amount
    assert (await owner_rows(payments_engine, sub)).transfers == 1


async def test_same_key_different_deposit_body_is_409_and_changes_nothing(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    sub, alice = users.new()
    usd, eur = await create_wallet(http, alice), await create_wallet(http, alice, "EUR")
    key = idem()
    body = {"amount": 1_500, "payment_method": "pm_card_visa"}
    first = await http.post(f"/v1/wallets/{usd['id']}/deposits", json=body, headers={**alice, **key})
    assert first.status_code == 202, first.text
    await until_terminal(http, alice, f"/v1/deposits/{first.json()['id']}")

    for path, changed in [
        (f"/v1/wallets/{usd['id']}/deposits", {**body, "amount": 1_501}),
        (f"/v1/wallets/{usd['id']}/deposits", {**body, "payment_method": "pm_card_mastercard"}),
        (f"/v1/wallets/{eur['id']}/deposits", body),  # same body, other wallet: a different request
    ]:
        assert_problem(
            await http.post(path, json=changed, headers={**alice, **key}), 409, "idempotency_key_reused"
        )

    assert (await wallet_row(wallet_engine, usd["id"])).balance == 1_500
    assert (await wallet_row(wallet_engine, eur["id"])).entries == 0
    assert await owner_rows(payments_engine, sub) == OwnerRows(transfers=0, payments=1, idempotency_keys=1)


async def test_keys_are_scoped_per_user(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    alice_sub, alice = users.new()
    bob_sub, bob = users.new()
    _, carol = users.new()
    a, b, c = (
        await create_wallet(http, alice),
        await create_wallet(http, bob),
        await create_wallet(http, carol),
    )
    key = idem()  # both users happen to pick the same key
    dep_a = await http.post(
        f"/v1/wallets/{a['id']}/deposits",
        json={"amount": 3_000, "payment_method": "pm_card_visa"},
        headers={**alice, **key},
    )
    dep_b = await http.post(
        f"/v1/wallets/{b['id']}/deposits",
        json={"amount": 4_000, "payment_method": "pm_card_visa"},
        headers={**bob, **key},
    )
    assert (dep_a.status_code, dep_b.status_code) == (202, 202), (dep_a.text, dep_b.text)
    assert dep_a.json()["id"] != dep_b.json()["id"]
    await until_terminal(http, alice, f"/v1/deposits/{dep_a.json()['id']}")
    await until_terminal(http, bob, f"/v1/deposits/{dep_b.json()['id']}")

    tr_a = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": c["id"], "amount": 300, "currency": "USD"},
        headers={**alice, **key},
    )
    tr_b = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": b["id"], "to_wallet_id": c["id"], "amount": 400, "currency": "USD"},
        headers={**bob, **key},
    )
    assert (tr_a.status_code, tr_b.status_code) == (202, 202), (tr_a.text, tr_b.text)
    assert tr_a.json()["id"] != tr_b.json()["id"]
    assert (tr_b.json()["from_wallet_id"], tr_b.json()["amount"]) == (b["id"], 400)  # bob's, not alice's
    await until_terminal(http, alice, f"/v1/transfers/{tr_a.json()['id']}")
    await until_terminal(http, bob, f"/v1/transfers/{tr_b.json()['id']}")
    assert (await http.get(f"/v1/transfers/{tr_a.json()['id']}", headers=bob)).status_code == 404

    assert (await wallet_row(wallet_engine, a["id"])).balance == 2_700
    assert (await wallet_row(wallet_engine, b["id"])).balance == 3_600
    assert (await wallet_row(wallet_engine, c["id"])).balance == 700
    for sub in (alice_sub, bob_sub):
        assert await owner_rows(payments_engine, sub) == OwnerRows(
            transfers=1, payments=1, idempotency_keys=2
        )


@pytest.mark.parametrize(
    "key_header,accepted",
    [
        pytest.param({}, False, id="missing"),
        pytest.param({"Idempotency-Key": ""}, False, id="empty"),
        pytest.param({"Idempotency-Key": "k" * 256}, False, id="256_chars"),
        pytest.param({"Idempotency-Key": "k" * 10_000}, False, id="10000_chars"),
        pytest.param({"Idempotency-Key": "k" * 255}, True, id="255_chars"),
    ],
)
async def test_money_posts_need_a_usable_idempotency_key(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
    key_header: dict[str, str],
    accepted: bool,
) -> None:
    sub, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    posts = [
        (
            "/v1/transfers",
            {"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 10, "currency": "USD"},
            "transfer",
            "/v1/transfers/{}",
        ),
        (
            f"/v1/wallets/{a['id']}/deposits",
            {"amount": 10, "payment_method": "pm_card_visa"},
            "deposit",
            "/v1/deposits/{}",
        ),
    ]
    for path, body, kind, get_path in posts:
        r = await http.post(path, json=body, headers={**alice, **key_header})
        if not accepted:
            detail = assert_problem(r, 422, "validation_error")["detail"]
            assert "Idempotency-Key" in detail
            continue
        assert r.status_code == 202, r.text
        wf_id = f"{kind}:{sub}:{key_header['Idempotency-Key']}"
        assert await key_claimed(payments_engine, wf_id) and await workflow_exists(temporal, wf_id)
        await until_terminal(http, alice, get_path.format(r.json()["id"]))
    if not accepted:
        assert await owner_rows(payments_engine, sub) == OwnerRows(0, 0, 0)
        assert (await wallet_row(wallet_engine, a["id"])).entries == 0


async def test_non_ascii_idempotency_key_is_refused(http: httpx.AsyncClient, users: Users) -> None:
    _, auth = users.new()
    headers: dict[str, str | bytes] = {
        **auth,
        "Idempotency-Key": "dép-1".encode(),
    }  # raw UTF-8 bytes on the wire
    r = await http.post("/v1/wallets/wal_x/deposits", json={"amount": 100}, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
