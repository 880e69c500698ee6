"""`payweave sagas list|show` against real Temporal visibility, histories and the ledger; `payweave demo`'s
core end to end against the test API and Xendit emulator."""

from __future__ import annotations

import time
import uuid

import httpx
from rich.console import Console
from temporalio.client import Client

from payweave.demo import run_demo
from payweave.devstack.supervisor import free_port
from payweave.ids import workflow_id
from payweave.operator import build_query, list_sagas, run_list, run_show, show_saga
from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.helpers import create_wallet, deposit, until_terminal


def recording_console() -> Console:
    return Console(record=True, width=400, force_terminal=False, color_system=None)


def test_query_values_are_quoted_and_escaped() -> None:
    assert build_query() == "PwKind IS NOT NULL"
    assert build_query(kind="transfer", owner="o'brien\\x") == (
        "PwKind = 'transfer' AND PwOwner = 'o\\'brien\\\\x'"
    )


async def test_sagas_list_and_show_a_deposit_a_transfer_and_a_rolled_back_transfer(
    http: httpx.AsyncClient, users: Users, temporal: Client, settings: Settings
) -> None:
    alice, a_auth = users.new()
    _, b_auth = users.new()
    _, ops = users.new("operator")
    a, b = await create_wallet(http, a_auth), await create_wallet(http, b_auth)
    dep = await deposit(http, a_auth, a["id"], 5_000)
    keys = {"ok": uuid.uuid4().hex, "frozen": uuid.uuid4().hex}
    transfers = {}
    for name, amount in (("ok", 1_250), ("frozen", 700)):
        if name == "frozen":
            assert (await http.post(f"/v1/wallets/{b['id']}/freeze", headers=ops)).status_code == 200
        r = await http.post(
            "/v1/transfers",
            json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": amount, "currency": "USD"},
            headers={**a_auth, "Idempotency-Key": keys[name]},
        )
        assert r.status_code == 202, r.text
        transfers[name] = await until_terminal(http, a_auth, f"/v1/transfers/{r.json()['id']}")
    assert transfers["frozen"]["failure_code"] == "wallet_frozen"
    ok_wf, frozen_wf = (workflow_id("transfer", alice, keys[n]) for n in ("ok", "frozen"))

    async def all_three_listed() -> list[object]:
        rows = await list_sagas(temporal, settings, owner=alice)
        return rows if len(rows) == 3 and all(r.close_status == "completed" for r in rows) else []

    rows = {r.workflow_id: r for r in await eventually(all_three_listed)}
    ok = rows[ok_wf]
    assert (ok.kind, ok.status, ok.owner, ok.amount, ok.currency) == (
        "transfer",
        "completed",
        alice,
        1_250,
        "USD",
    )
    assert ok.workflow_type == "TransferWorkflow"
    assert (
        ok.ui_url
        == f"{settings.temporal_ui_url}/namespaces/default/workflows/transfer%3A{alice}%3A{keys['ok']}"
    )
    assert (rows[frozen_wf].status, rows[frozen_wf].amount) == ("failed", 700)
    deposits = [r for r in rows.values() if r.kind == "deposit"]
    assert [(d.status, d.amount) for d in deposits] == [("succeeded", 5_000)]

    assert [r.workflow_id for r in await list_sagas(temporal, settings, owner=alice, status="failed")] == [
        frozen_wf
    ]
    assert len(await list_sagas(temporal, settings, owner=alice, kind="transfer", limit=1)) == 1
    # A value with quotes cannot widen the query: it is one (non-matching) literal.
    assert await list_sagas(temporal, settings, owner=f"{alice}' OR PwKind IS NOT NULL OR PwOwner = 'x") == []

    console = recording_console()
    assert (
        await run_list(
            settings, console, kind="transfer", status=None, owner=alice, limit=10, client=temporal
        )
        == 0
    )
    out = console.export_text()
    assert (
        ok_wf in out
        and frozen_wf in out
        and "12.50 USD" in out
        and "7.00 USD" in out
        and dep["id"] not in out
    )

    # show: the good transfer posted one journal (alice → transit → bob) and compensated nothing.
    detail = await show_saga(temporal, settings, ok_wf)
    assert detail.row.close_status == "completed" and detail.state is None  # closed: no status query
    assert [s.outcome for s in detail.steps] == ["completed"] * len(detail.steps)
    assert "post_journal" in [s.activity for s in detail.steps] and detail.compensations == []
    assert detail.result["status"] == "completed"
    amounts = {e[0]: e[1] for j in detail.journals for e in j.entries}
    assert amounts[a["id"]] == -1_250 and amounts[b["id"]] == 1_250
    assert all(j.idempotency_key.startswith(ok_wf) for j in detail.journals)

    # The rolled-back one: debit, refused credit, compensation; its journals show the reversal.
    frozen = await show_saga(temporal, settings, frozen_wf)
    assert [s.activity for s in frozen.compensations] == ["reverse_journal"], frozen.steps
    assert [j.kind for j in frozen.journals] == ["transfer_debit", "transfer_reversal"]
    assert sum(e[1] for j in frozen.journals for e in j.entries if e[0] == a["id"]) == 0

    console = recording_console()
    assert await run_show(settings, console, frozen_wf, client=temporal) == 0
    out = console.export_text()
    for expected in (
        frozen_wf,
        "TransferWorkflow",
        "reverse_journal",
        "transfer_reversal",
        "compensations run",
    ):
        assert expected in out, out
    console = recording_console()
    assert await run_show(settings, console, "transfer:nobody:nothing", client=temporal) == 1
    assert "no workflow" in console.export_text()


async def test_sagas_commands_say_when_temporal_is_unreachable(settings: Settings) -> None:
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    for command in ("list", "show"):
        console = recording_console()
        started = time.monotonic()
        if command == "list":
            code = await run_list(down, console, kind=None, status=None, owner=None, limit=5)
        else:
            code = await run_show(down, console, "transfer:a:b")
        assert code == 2 and time.monotonic() - started < 30
        assert f"cannot reach Temporal at {down.temporal_address}" in console.export_text()


async def test_demo_runs_every_saga_to_its_expected_end(
    api_url: str, xendit: str, settings: Settings, temporal: Client
) -> None:
    steps: list[str] = []
    started = time.monotonic()
    outcomes = await run_demo(
        settings, api_url=api_url, xendit_url=xendit, failed_group_buy_deadline=6, on_step=steps.append
    )
    assert time.monotonic() - started < 60
    assert {o.saga: (o.status, o.failure_code) for o in outcomes} == {
        "deposit (Stripe)": ("succeeded", None),
        "group buy, MOQ missed": ("refunded", "moq_not_reached"),
        "transfer": ("completed", None),
        "transfer, rolled back": ("failed", "wallet_frozen"),
        "checkout split (Stripe)": ("partially_refunded", None),
        "checkout split (Xendit)": ("paid", None),
        "refund, partial": ("succeeded", None),
        "group buy, MOQ reached": ("completed", None),
    }
    assert all(o.ok for o in outcomes) and len(steps) == 11
    # Every saga the demo names is a real workflow, with its Web UI link.
    for o in outcomes:
        assert (await temporal.get_workflow_handle(o.workflow_id).describe()).id == o.workflow_id
        assert o.ui_url.startswith(f"{settings.temporal_ui_url}/namespaces/default/workflows/")
