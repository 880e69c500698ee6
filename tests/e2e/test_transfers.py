"""TransferWorkflow through the API on real Postgres + Temporal: success and every rollback (QUALITY R5)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, idem, until_terminal, wallet


async def journals_of(engine: AsyncEngine, transfer_id: str) -> list[tuple[str, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT j.kind, e.wallet_id, e.amount FROM journals j JOIN entries e ON e.journal_id = j.id "
                "WHERE j.saga_id LIKE 'transfer:%' AND j.description LIKE :d ORDER BY j.id, e.id"
            ),
            {"d": f"%{transfer_id}%"},
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_transfer_moves_money_and_is_visible_to_its_owner_only(
    http: httpx.AsyncClient, users: Users
) -> None:
    alice, alice_auth = users.new()
    _, bob_auth = users.new()
    a, b = await create_wallet(http, alice_auth), await create_wallet(http, bob_auth)
    await deposit(http, alice_auth, a["id"], 10_000)
    r = await http.post(
        "/v1/transfers",
        json={
            "from_wallet_id": a["id"],
            "to_wallet_id": b["id"],
            "amount": 3_000,
            "currency": "USD",
            "description": "rent",
        },
        headers={**alice_auth, **idem()},
    )
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/transfers/{r.json()['id']}"
    done = await until_terminal(http, alice_auth, f"/v1/transfers/{r.json()['id']}")
    assert done["status"] == "completed" and done["failure_code"] is None
    assert (await wallet(http, alice_auth, a["id"]))["balance"] == 7_000
    assert (await wallet(http, bob_auth, b["id"]))["balance"] == 3_000
    assert (await http.get(f"/v1/transfers/{done['id']}", headers=bob_auth)).status_code == 404


async def _frozen(http: httpx.AsyncClient, users: Users, w: dict[str, Any]) -> None:
    _, operator = users.new("operator")
    r = await http.post(f"/v1/wallets/{w['id']}/freeze", headers=operator)
    assert r.status_code == 200 and r.json()["status"] == "frozen"


async def _closed(engine: AsyncEngine, w: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE wallets SET status = 'closed' WHERE id = :id"), {"id": w["id"]})


@pytest.mark.parametrize(
    "case,code",
    [
        ("frozen", "wallet_frozen"),
        ("closed", "wallet_closed"),
        ("missing", "wallet_not_found"),
        ("other_currency", "currency_mismatch"),
        ("system_clearing", "wallet_not_found"),
        ("system_transit", "wallet_not_found"),
    ],
)
@pytest.mark.reliability
async def test_transfer_to_a_destination_that_refuses_rolls_back(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, case: str, code: str
) -> None:
    _, alice = users.new()
    _, bob = users.new()
    a = await create_wallet(http, alice)
    await deposit(http, alice, a["id"], 5_000)
    if case == "missing":
        dest_id = "wal_does_not_exist"
    elif case.startswith("system_"):  # system accounts are not addressable by customers
        dest_id = {"system_clearing": "sys_gateway_clearing_usd", "system_transit": "sys_transit_usd"}[case]
    else:
        dest = await create_wallet(http, bob, "EUR" if case == "other_currency" else "USD")
        dest_id = dest["id"]
        if case == "frozen":
            await _frozen(http, users, dest)
        elif case == "closed":
            await _closed(wallet_engine, dest)
    r = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": dest_id, "amount": 2_000, "currency": "USD"},
        headers={**alice, **idem()},
    )
    assert r.status_code == 202, r.text
    done = await until_terminal(http, alice, f"/v1/transfers/{r.json()['id']}")
    assert (done["status"], done["failure_code"]) == ("failed", code)
    after = await wallet(http, alice, a["id"])
    assert (after["balance"], after["held"]) == (5_000, 0)
    legs = await journals_of(wallet_engine, r.json()["id"])
    kinds = [k for k, _, _ in legs]
    # the journals tell the story: debit into transit, then its compensation back to the source
    assert kinds == ["transfer_debit", "transfer_debit", "transfer_reversal", "transfer_reversal"]
    assert [(w, amt) for k, w, amt in legs if w == a["id"]] == [(a["id"], -2_000), (a["id"], 2_000)]


async def test_transfer_from_a_frozen_or_poor_source_fails_without_moving_money(
    http: httpx.AsyncClient, users: Users
) -> None:
    _, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 1_000)
    r = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 1_001, "currency": "USD"},
        headers={**alice, **idem()},
    )
    done = await until_terminal(http, alice, f"/v1/transfers/{r.json()['id']}")
    assert (done["status"], done["failure_code"]) == ("failed", "insufficient_funds")
    await _frozen(http, users, a)
    r = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 10, "currency": "USD"},
        headers={**alice, **idem()},
    )
    done = await until_terminal(http, alice, f"/v1/transfers/{r.json()['id']}")
    assert (done["status"], done["failure_code"]) == ("failed", "wallet_frozen")
    assert (await wallet(http, alice, a["id"]))["balance"] == 1_000
    assert (await wallet(http, bob, b["id"]))["balance"] == 0


async def test_a_retry_after_the_saga_history_is_gone_never_runs_it_again(
    http: httpx.AsyncClient, users: Users, temporal: Client, payments_engine: AsyncEngine
) -> None:
    """Temporal deletes closed workflows after the namespace's retention; the Idempotency-Key row stays. A retry
    then must answer the recorded outcome instead of starting the transfer again (which would credit the
    destination with money whose debit was already reversed)."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
    from temporalio.service import RPCError

    _, alice = users.new()
    _, bob = users.new()
    a, b = await create_wallet(http, alice), await create_wallet(http, bob)
    await deposit(http, alice, a["id"], 5_000)
    await _frozen(http, users, b)
    body = {"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 2_000, "currency": "USD"}
    key = idem()
    r = await http.post("/v1/transfers", json=body, headers={**alice, **key})
    done = await until_terminal(http, alice, f"/v1/transfers/{r.json()['id']}")
    assert (done["status"], done["failure_code"]) == ("failed", "wallet_frozen")
    _, operator = users.new("operator")
    await http.post(f"/v1/wallets/{b['id']}/unfreeze", headers=operator)
    async with payments_engine.connect() as conn:
        wf_id = (
            await conn.execute(text("SELECT workflow_id FROM transfers WHERE id = :id"), {"id": done["id"]})
        ).scalar_one()
    await temporal.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=temporal.namespace, workflow_execution=WorkflowExecution(workflow_id=wf_id)
        )
    )

    async def gone() -> bool:
        try:
            await temporal.get_workflow_handle(wf_id).describe()
            return False
        except RPCError:
            return True

    await eventually(gone, timeout=120)
    again = await http.post("/v1/transfers", json=body, headers={**alice, **key})
    assert again.status_code == 202 and (again.json()["status"], again.json()["failure_code"]) == (
        "failed",
        "wallet_frozen",
    )
    assert (await wallet(http, alice, a["id"]))["balance"] == 5_000
    assert (await wallet(http, bob, b["id"]))["balance"] == 0
