"""QUALITY R6: a compensation that fails transiently n times (the fault hook in payweave/faults.py fails its first
n attempts before it touches the database) is retried until it completes: the saga still ends, compensated,
with the money where it was (I5 liveness, I1)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.verify import verify_ledger
from payweave import faults
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import DONE, checkout
from tests.helpers import create_wallet, deposit, idem, wallet

pytestmark = pytest.mark.reliability
# MONEY_RETRY backs off 0.2 s × 2ⁿ up to 30 s: five failures cost about 6 s; QUALITY's n ≤ 20 about 7 minutes
# (PAYWEAVE_CHAOS_SCALE=full).
FULL = os.environ.get("PAYWEAVE_CHAOS_SCALE") == "full"
TIMES = 20 if FULL else 5
WAIT = 900 if FULL else 90


async def ended(
    http: httpx.AsyncClient, auth: dict[str, str], transfer_id: str, order_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    transfer = (await http.get(f"/v1/transfers/{transfer_id}", headers=auth)).json()
    order = (await http.get(f"/v1/checkouts/{order_id}", headers=auth)).json()
    if transfer["status"] in ("completed", "failed") and order["status"] in DONE:
        return transfer, order
    return None


async def test_compensations_failing_transiently_are_retried_until_they_complete(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    merchant, m_auth = users.new("merchant")
    await create_wallet(http, m_auth)
    _, alice = users.new()
    _, bob = users.new()
    _, operator = users.new("operator")
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 5_000)
    await http.post(f"/v1/wallets/{b['id']}/freeze", headers=operator)

    with faults.fail_transiently(
        {"reverse_journal", "release_hold", "cancel_gateway_payment"}, TIMES
    ) as failed:
        rolled = await http.post(
            "/v1/transfers",
            json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 1_500, "currency": "USD"},
            headers={**alice, **idem()},
        )
        assert rolled.status_code == 202, rolled.text
        expired = await checkout(
            http,
            alice,
            {
                "merchant_id": merchant,
                "currency": "USD",
                "amount": 2_000,
                "expires_in": 1,
                "payment": {"method": "split", "wallet_amount": 1_000, "gateway": "stripe"},
            },
        )
        transfer, order = await eventually(
            lambda: ended(http, alice, rolled.json()["id"], expired["id"]), timeout=WAIT, interval=0.5
        )
    assert (transfer["status"], order["status"]) == ("failed", "expired")
    assert failed.count("reverse_journal") == TIMES
    assert failed.count("release_hold") == TIMES
    w = await wallet(http, alice, a["id"])
    assert (w["balance"], w["held"]) == (5_000, 0)
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations
