"""Wallet endpoints (create/list/read/entries with cursor pagination) and the service endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.support import assert_problem, wallet_row, wallets_of
from tests.conftest import Users
from tests.helpers import create_wallet, deposit, idem, until_terminal


async def test_create_wallet_is_201_then_200_with_the_same_wallet(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    sub, auth = users.new()
    r = await http.post("/v1/wallets", json={"currency": "USD"}, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/wallets/{created['id']}"
    assert {k: created[k] for k in ("owner", "currency", "status", "balance", "held", "available")} == {
        "owner": sub,
        "currency": "USD",
        "status": "active",
        "balance": 0,
        "held": 0,
        "available": 0,
    }
    assert created["id"].startswith("wal_") and created["created_at"]

    again = await http.post("/v1/wallets", json={"currency": "USD"}, headers=auth)
    assert again.status_code == 200, again.text
    assert again.json() == created
    assert again.headers["location"] == f"/v1/wallets/{created['id']}"
    # concurrent creations of the same currency also converge on one wallet
    racing = await asyncio.gather(
        *(http.post("/v1/wallets", json={"currency": "EUR"}, headers=auth) for _ in range(10))
    )
    assert sorted(r.status_code for r in racing) == [200] * 9 + [201], [r.text for r in racing]
    assert len({r.json()["id"] for r in racing}) == 1
    assert len(await wallets_of(wallet_engine, sub)) == 2


async def test_list_shows_only_my_wallets(http: httpx.AsyncClient, users: Users) -> None:
    me_sub, me = users.new()
    _, other = users.new()
    mine = {(await create_wallet(http, me, cur))["id"] for cur in ("USD", "EUR", "JPY")}
    await create_wallet(http, other, "USD")
    await create_wallet(http, other, "GBP")

    r = await http.get("/v1/wallets", headers=me)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert {w["id"] for w in listed} == mine
    assert {w["owner"] for w in listed} == {me_sub}
    assert {w["currency"] for w in listed} == {"USD", "EUR", "JPY"}
    _, newcomer = users.new()
    assert (await http.get("/v1/wallets", headers=newcomer)).json() == []


async def test_get_wallet_shows_balance_held_and_available(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    await deposit(http, auth, w["id"], 4_200)
    r = await http.get(f"/v1/wallets/{w['id']}", headers=auth)
    assert r.status_code == 200, r.text
    got = r.json()
    stored = await wallet_row(wallet_engine, w["id"])
    assert (
        (got["balance"], got["held"], got["available"])
        == (stored.balance, stored.held, stored.balance - stored.held)
        == (4_200, 0, 4_200)
    )
    assert (got["id"], got["currency"], got["status"]) == (w["id"], "USD", "active")
    assert_problem(await http.get("/v1/wallets/wal_does_not_exist", headers=auth), 404, "wallet_not_found")
    assert_problem(await http.get("/v1/wallets/" + "w" * 65, headers=auth), 404, "wallet_not_found")


async def test_entries_cursor_pagination_sees_every_entry_once_newest_first(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    _, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 10_000)
    # four transfers out: with the deposit, five entries on alice's wallet
    for amount in (100, 200, 300, 400):
        r = await http.post(
            "/v1/transfers",
            json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": amount, "currency": "USD"},
            headers={**alice, **idem()},
        )
        assert r.status_code == 202, r.text
        assert (await until_terminal(http, alice, f"/v1/transfers/{r.json()['id']}"))["status"] == "completed"

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        r = await http.get(f"/v1/wallets/{a['id']}/entries", params=params, headers=alice)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        assert len(page["data"]) <= 2
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        params = {"limit": 2, "starting_after": page["next_cursor"]}
        assert len(pages) < 10, "pagination does not end"

    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    seen = [e for p in pages for e in p["data"]]
    ids = [e["id"] for e in seen]
    assert len(set(ids)) == len(ids) == 5
    assert ids == sorted(ids, reverse=True)  # newest first
    assert [e["amount"] for e in seen] == [-400, -300, -200, -100, 10_000]
    assert [e["kind"] for e in seen] == ["transfer_debit"] * 4 + ["deposit"]
    assert [e["balance_after"] for e in seen] == [9_000, 9_400, 9_700, 9_900, 10_000]
    assert {e["currency"] for e in seen} == {"USD"}
    assert (await wallet_row(wallet_engine, a["id"])).entries == 5
    # one big page says the same
    whole = (await http.get(f"/v1/wallets/{a['id']}/entries", params={"limit": 100}, headers=alice)).json()
    assert (whole["data"], whole["has_more"], whole["next_cursor"]) == (seen, False, None)
    # past the last entry: an empty page
    after_last = await http.get(
        f"/v1/wallets/{a['id']}/entries", params={"starting_after": ids[-1]}, headers=alice
    )
    assert after_last.json() == {"data": [], "has_more": False, "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"starting_after": 0},
        {"starting_after": 2**63},
        {"starting_after": "abc"},
    ],
    ids=["limit_0", "limit_101", "limit_negative", "limit_text", "cursor_0", "cursor_2**63", "cursor_text"],
)
async def test_bad_pagination_parameters_are_422(
    http: httpx.AsyncClient, users: Users, params: dict[str, Any]
) -> None:
    _, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.get(f"/v1/wallets/{w['id']}/entries", params=params, headers=auth)
    assert_problem(r, 422, "validation_error")


async def test_health_readiness_and_docs(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await http.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"wallet_db": "ok", "payments_db": "ok", "temporal": "ok"},
    }

    docs = await http.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    spec = (await http.get("/openapi.json")).json()
    for path in (
        "/v1/wallets",
        "/v1/wallets/{wallet_id}",
        "/v1/wallets/{wallet_id}/entries",
        "/v1/wallets/{wallet_id}/deposits",
        "/v1/wallets/{wallet_id}/freeze",
        "/v1/wallets/{wallet_id}/unfreeze",
        "/v1/deposits/{deposit_id}",
        "/v1/transfers",
        "/v1/transfers/{transfer_id}",
        "/v1/webhooks/stripe",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    assert "post" in spec["paths"]["/v1/transfers"]
    params = {p["name"] for p in spec["paths"]["/v1/transfers"]["post"]["parameters"]}
    assert "Idempotency-Key" in params


async def test_unknown_routes_and_methods_are_problems(http: httpx.AsyncClient, users: Users) -> None:
    _, auth = users.new()
    for r in (
        await http.get("/v1/nowhere"),
        await http.get("/v1/nowhere", headers=auth),
        await http.post("/v2/transfers", json={}, headers=auth),
    ):
        assert_problem(r, 404, "not_found")
    assert_problem(await http.delete("/v1/wallets", headers=auth), 405, "method_not_allowed")
