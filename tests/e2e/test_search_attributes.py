"""Operators find sagas in the Web UI / `temporal workflow list` by their search attributes."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem, until_terminal


async def test_sagas_are_listed_by_kind_status_owner_amount_currency(
    http: httpx.AsyncClient, users: Users, temporal: Client
) -> None:
    sub, auth = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, auth), await create_wallet(http, bob)
    await deposit(http, auth, a["id"], 1_234)
    r = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 234, "currency": "USD"},
        headers={**auth, **idem()},
    )
    await until_terminal(http, auth, f"/v1/transfers/{r.json()['id']}")

    async def listed(query: str) -> list[str]:
        return [wf.id async for wf in temporal.list_workflows(query)]

    async def both_visible() -> bool:
        transfers = await listed(
            f"PwKind = 'transfer' AND PwOwner = '{sub}' AND PwStatus = 'completed' "
            "AND PwAmount = 234 AND PwCurrency = 'USD'"
        )
        deposits = await listed(f"PwKind = 'deposit' AND PwOwner = '{sub}' AND PwStatus = 'succeeded'")
        return len(transfers) == 1 and len(deposits) == 1

    await eventually(both_visible)
