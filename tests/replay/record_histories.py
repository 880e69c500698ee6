"""Record workflow histories for the replay tests. Not collected by default (no ``test_`` prefix):

    pytest tests/replay/record_histories.py

writes tests/replay/histories/<name>.json from sagas run against the real stack. Re-record only when a
workflow changes on purpose (and then version it: running workflows must still replay).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem, until_terminal

HISTORIES = Path(__file__).parent / "histories"


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
    (HISTORIES / f"{name}.json").write_text(history.to_json())


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
