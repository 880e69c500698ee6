"""Small helpers the API-level tests share."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import eventually

TERMINAL = {"completed", "failed", "succeeded", "expired", "canceled", "refunded"}


def idem(key: str | None = None) -> dict[str, str]:
    return {"Idempotency-Key": key or uuid.uuid4().hex}


async def create_wallet(
    http: httpx.AsyncClient, auth: dict[str, str], currency: str = "USD"
) -> dict[str, Any]:
    r = await http.post("/v1/wallets", json={"currency": currency}, headers=auth)
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


async def wallet(http: httpx.AsyncClient, auth: dict[str, str], wallet_id: str) -> dict[str, Any]:
    r = await http.get(f"/v1/wallets/{wallet_id}", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def deposit(
    http: httpx.AsyncClient, auth: dict[str, str], wallet_id: str, amount: int, pm: str = "pm_card_visa"
) -> dict[str, Any]:
    """A server-confirmed Stripe deposit, waited until the webhook credited the wallet."""
    r = await http.post(
        f"/v1/wallets/{wallet_id}/deposits",
        json={"amount": amount, "payment_method": pm},
        headers={**auth, **idem()},
    )
    assert r.status_code == 202, r.text
    return await until_terminal(http, auth, f"/v1/deposits/{r.json()['id']}")


async def until_terminal(http: httpx.AsyncClient, auth: dict[str, str], path: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await http.get(path, headers=auth)
        return r.json() if r.status_code == 200 and r.json()["status"] in TERMINAL else None

    return await eventually(probe)  # type: ignore[no-any-return]


async def transfer(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    from_wallet_id: str,
    to_wallet_id: str,
    amount: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A USD transfer between two wallets, waited until it ended."""
    r = await http.post(
        "/v1/transfers",
        json={
            "from_wallet_id": from_wallet_id,
            "to_wallet_id": to_wallet_id,
            "amount": amount,
            "currency": "USD",
        },
        headers={**auth, **idem(), **(headers or {})},
    )
    assert r.status_code == 202, r.text
    return await until_terminal(http, auth, f"/v1/transfers/{r.json()['id']}")
