"""Metrics and tracing on the real stack (issue 5, items 3 and 4).

* the ``payweave_`` domain series move when real sagas run (deposit, transfer, split checkouts paid and
  canceled), by exactly what the databases say happened;
* a process whose Temporal client comes from ``workers.client.connect`` serves Temporal's SDK metrics at the
  same ``/metrics``, including every ``temporal_`` series the Grafana dashboard queries;
* with tracing on, one trace runs from the API request span through the workflow to its activities.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.main import create_app
from payweave.devstack.supervisor import free_port
from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import checkout, merchant_with_product, until_done
from tests.helpers import create_wallet, deposit, transfer, wallet
from workers.client import connect
from workers.main import build_worker

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "payweave.json"


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await http.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def journal_kinds(engine: AsyncEngine, saga_ids: list[str]) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, count(*) FROM journals WHERE saga_id = ANY(:ids) GROUP BY kind"),
            {"ids": saga_ids},
        )
        return {kind: n for kind, n in rows}


async def test_domain_series_count_what_the_sagas_did(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine
) -> None:
    before = await scrape(http)
    merchant, _, _, prod = await merchant_with_product(http, users, price=2_000, stock=5)
    buyer_sub, buyer = users.new()
    _, friend = users.new()
    bw, fw = await create_wallet(http, buyer), await create_wallet(http, friend)
    dep = await deposit(http, buyer, bw["id"], 5_000)
    assert dep["status"] == "succeeded"
    assert (await transfer(http, buyer, bw["id"], fw["id"], 1_000))["status"] == "completed"
    item = {"merchant_id": merchant, "currency": "USD", "items": [{"product_id": prod["id"], "quantity": 1}]}
    paid = await checkout(
        http,
        buyer,
        {
            **item,
            "payment": {
                "method": "split",
                "wallet_amount": 500,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        },
    )
    assert (await until_done(http, buyer, paid["id"]))["status"] == "paid"
    # The wallet part of a split checkout waiting for its card is an open hold, until the checkout is canceled.
    waiting = await checkout(
        http, buyer, {**item, "payment": {"method": "split", "wallet_amount": 700, "gateway": "stripe"}}
    )
    held = (await wallet(http, buyer, bw["id"]))["held"]
    assert held == 700

    async def holds_seen() -> Any:
        now = await scrape(http)
        return total(now, "payweave_holds_open", currency="USD") >= 1 and (
            total(now, "payweave_holds_open_amount", currency="USD") >= held
        )

    await eventually(holds_seen, timeout=30)
    r = await http.post(f"/v1/checkouts/{waiting['id']}/cancel", headers=buyer)
    assert r.status_code == 200 and r.json()["status"] == "canceled", r.text

    expected = {
        ("deposit", "succeeded", "succeeded"): 1,
        ("transfer", "succeeded", "completed"): 1,
        ("checkout", "succeeded", "paid"): 1,
        ("checkout", "compensated", "canceled"): 1,
    }
    saga_ids = [f"deposit:{buyer_sub}:", f"transfer:{buyer_sub}:", f"checkout:{buyer_sub}:"]
    async with wallet_engine.connect() as conn:
        ids = list(
            (
                await conn.execute(
                    text("SELECT DISTINCT saga_id FROM journals WHERE saga_id LIKE ANY(:p)"),
                    {"p": [p + "%" for p in saga_ids]},
                )
            ).scalars()
        )
    kinds = await journal_kinds(wallet_engine, ids)
    assert {"deposit", "checkout"} <= set(kinds), kinds

    async def counted() -> Any:
        now = await scrape(http)
        grown = {
            key: total(now, "payweave_sagas_completed_total", kind=key[0], outcome=key[1], status=key[2])
            - total(before, "payweave_sagas_completed_total", kind=key[0], outcome=key[1], status=key[2])
            for key in expected
        }
        journals = {
            kind: total(now, "payweave_ledger_journals_total", kind=kind)
            - total(before, "payweave_ledger_journals_total", kind=kind)
            for kind in kinds
        }
        ok = all(grown[k] >= n for k, n in expected.items()) and all(
            journals[k] >= n for k, n in kinds.items()
        )
        return (now, grown, journals) if ok else None

    now, _, _ = await eventually(counted, timeout=30)
    # The API's own series moved too.
    for kind in ("deposit", "transfer", "checkout"):
        assert total(now, "payweave_sagas_started_total", kind=kind) > total(
            before, "payweave_sagas_started_total", kind=kind
        )
    assert total(now, "payweave_webhook_events_total", provider="stripe") > 0
    assert total(now, "payweave_http_request_seconds_count") > total(
        before, "payweave_http_request_seconds_count"
    )


# --- a traced stack of our own: client from workers.client.connect, its worker, an API served over HTTP ----


@dataclass
class TracedStack:
    url: str
    spans: InMemorySpanExporter
    task_queue: str


@pytest_asyncio.fixture(scope="module")
async def traced(
    settings: Settings,
    temporal: Client,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    worker: None,
) -> AsyncIterator[TracedStack]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    mine = settings.model_copy(
        update={
            "temporal_address": temporal.service_client.config.target_host,
            "temporal_task_queue": f"traced-{uuid.uuid4().hex[:8]}",
        }
    )
    client = await connect(mine, tracer_provider=provider)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(mine, temporal=client, tracer_provider=provider),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    async with build_worker(client, mine, wallet_engine=wallet_engine, payments_engine=payments_engine):
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
            assert not task.done(), task
            await asyncio.sleep(0.01)
        yield TracedStack(f"http://127.0.0.1:{port}", spans, mine.temporal_task_queue)
        server.should_exit = True
        await task
    provider.shutdown()


async def traced_sagas(users: Users, stack: TracedStack) -> str:
    """A deposit (a gateway activity, then local database steps) and a transfer through the traced API, run by
    its own worker; returns the transfer id."""
    _, a_auth = users.new()
    _, b_auth = users.new()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as api:
        a, b = await create_wallet(api, a_auth), await create_wallet(api, b_auth)
        assert (await deposit(api, a_auth, a["id"], 3_000))["status"] == "succeeded"
        traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"  # the caller's own trace
        done = await transfer(api, a_auth, a["id"], b["id"], 1_200, headers={"traceparent": traceparent})
    assert done["status"] == "completed"
    return str(done["id"])


async def test_one_trace_runs_from_the_api_request_through_the_workflow_to_its_activities(
    http: httpx.AsyncClient, users: Users, traced: TracedStack
) -> None:
    traced.spans.clear()
    await traced_sagas(users, traced)

    def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
        out = [span]
        while out[-1].parent is not None and out[-1].parent.span_id in by_id:
            out.append(by_id[out[-1].parent.span_id])
        return out

    async def activity_chains() -> Any:
        finished = traced.spans.get_finished_spans()
        by_id = {s.context.span_id: s for s in finished if s.context is not None}
        runs = [s for s in finished if s.name.startswith("RunActivity:")]
        names = {s.name for s in runs}
        return [chain(s, by_id) for s in runs] if {"RunActivity:mark_transfer"} <= names else None

    chains = await eventually(activity_chains, timeout=30)
    # Two requests started a saga each (the deposit, the transfer): each activity hangs under its request's
    # span, through the client's StartWorkflow span that the Temporal headers carried to the worker.
    by_root: dict[str, set[str]] = {}
    for spans in chains:
        root = spans[-1]
        assert root.kind == SpanKind.SERVER and spans[-2].name.startswith("StartWorkflow:"), [
            s.name for s in spans
        ]
        by_root.setdefault(root.name, set()).add(spans[-2].name)
    assert by_root == {
        "POST /v1/wallets/{wallet_id}/deposits": {"StartWorkflow:DepositWorkflow"},
        "POST /v1/transfers": {"StartWorkflow:TransferWorkflow"},
    }, by_root
    (root,) = {spans[-1] for spans in chains if spans[-1].name == "POST /v1/transfers"}
    assert root.parent is not None and root.parent.is_remote  # it continued the caller's traceparent
    assert root.context is not None
    in_trace = {
        s.name for s in traced.spans.get_finished_spans() if s.context.trace_id == root.context.trace_id
    }
    assert {
        "POST /v1/transfers",
        "StartWorkflow:TransferWorkflow",
        "RunWorkflow:TransferWorkflow",
        "StartActivity:mark_transfer",
        "RunActivity:mark_transfer",
    } <= in_trace, in_trace


async def test_temporal_sdk_metrics_are_served_with_payweaves(
    http: httpx.AsyncClient, users: Users, traced: TracedStack
) -> None:
    await traced_sagas(users, traced)
    dashboard = DASHBOARD.read_text()
    queried = set(re.findall(r"\btemporal_[A-Za-z0-9_]+", json.dumps(json.loads(dashboard))))
    assert queried, "the dashboard has Temporal panels"

    missing: list[str] = []

    async def served() -> Any:
        async with httpx.AsyncClient(base_url=traced.url, timeout=30) as api:
            now = await scrape(api)
        mine = {"task_queue": traced.task_queue}
        missing[:] = sorted(queried - {name for name, _ in now})
        if total(now, "temporal_workflow_completed_total", workflow_type="TransferWorkflow", **mine) < 1:
            missing.append("TransferWorkflow completed")
        if (
            total(
                now, "temporal_local_activity_execution_latency_count", activity_type="mark_transfer", **mine
            )
            < 1
        ):
            missing.append("mark_transfer executed")
        if (
            total(
                now,
                "temporal_activity_execution_latency_count",
                activity_type="create_gateway_payment",
                **mine,
            )
            < 1
        ):
            missing.append("create_gateway_payment executed")
        return None if missing else now

    try:
        now = await eventually(served, timeout=30)
    except AssertionError:
        raise AssertionError(f"not served: {missing}") from None
    assert total(now, "temporal_worker_task_slots_available", task_queue=traced.task_queue) > 0
    # The API and the worker in this process serve one registry: payweave's series are there too.
    assert total(now, "payweave_sagas_completed_total", kind="transfer") >= 1
