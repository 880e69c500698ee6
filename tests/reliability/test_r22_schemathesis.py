"""R22: schemathesis over the API's OpenAPI schema, authenticated: no response is a server error (≥ 500).

Every operation of ``/openapi.json`` (served by the fixture API over real HTTP, with its worker, Temporal,
localstripe and the Xendit emulator behind it) gets schemathesis cases in three passes:

1. the schema as served, random path ids, positive (requests the schema allows) and negative (requests it
   forbids: wrong types, missing fields, bad headers) generation: mostly 404 / 422;
2. the same with the path ids fixed to objects that exist (the user's wallet, a product), so the handlers
   behind the 404 are fuzzed too;
3. positive only, on a *refined* copy of the schema: what the handlers validate beyond the served schema (a
   supported currency, a positive amount, an Idempotency-Key) and body ids pointing at existing wallets and
   products, so cases pass validation and start real sagas (deposits on localstripe, wallet transfers).

Each request carries a valid token for a user holding every role (customer, merchant, factory, operator), so it
passes authentication and reaches the handler. Every response goes through schemathesis's
``not_a_server_error``; all failures are collected (not only the first) with a curl command that reproduces
them. No operation is skipped: the sagas the cases start run on the fixture worker, and the test ends with
``verify_ledger``. Cases are derandomized (same requests every run) and not shrunk.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import in_transaction
from db.repositories import ledger
from db.verify import verify_ledger
from payweave.contracts.ledger import Posting
from tests.conftest import Users

pytestmark = pytest.mark.reliability

# Cases per operation, generation mode and pass (29 operations; the run stays well under 60 s on 2 cores).
MAX_EXAMPLES = 6
REQUEST_TIMEOUT = 30


@dataclass
class Findings:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    nothing_to_generate: list[str] = field(default_factory=list)
    by_label: dict[str, dict[int, int]] = field(default_factory=dict)


def fuzz(
    schema: Any,
    name: str,
    modes: tuple[GenerationMode, ...],
    fixed: dict[str, str] | None,
    base_url: str,
    headers: dict[str, str],
    findings: Findings,
) -> None:
    """Runs in a worker thread (schemathesis calls are synchronous; the API is served by the test's loop).

    With ``fixed``, only operations whose path parameters all have an existing object are fuzzed, with those."""
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        path_parameters = None
        if fixed is not None:
            if not names <= fixed.keys():
                continue
            path_parameters = {n: fixed[n] for n in names}
        for mode in modes:
            label = f"{operation.label} [{name}, {mode.value}]"
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            try:
                fuzz_one(strategy, label, base_url, headers, findings)
            except Unsatisfiable:
                # Negative mode for an operation with nothing to make invalid (no parameters, no body).
                findings.nothing_to_generate.append(label)


def refine(spec: dict[str, Any], ids: dict[str, list[str]]) -> dict[str, Any]:
    """The served schema with what the handlers validate beyond it (a supported currency, a positive amount)
    and request fields pointing at objects that exist, so positive cases reach the sagas instead of a 422."""
    spec = copy.deepcopy(spec)
    for body in spec["components"]["schemas"].values():
        for name, prop in body.get("properties", {}).items():
            branches = prop.get("anyOf", [prop])
            for branch in branches:
                if branch.get("type") == "string" and name == "currency":
                    branch["enum"] = ["USD"]
                elif branch.get("type") == "string" and name in ids:
                    branch["enum"] = ids[name]
                elif branch.get("type") == "integer" and name in (
                    "amount",
                    "price",
                    "unit_price",
                    "wallet_amount",
                ):
                    branch.update(minimum=1, maximum=50_000)
    for operations in spec["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "Idempotency-Key":
                    parameter["required"] = True
                    parameter["schema"] = {"type": "string", "pattern": "^[A-Za-z0-9-]{8,64}$"}
    return spec


def fuzz_one(strategy: Any, label: str, base_url: str, headers: dict[str, str], findings: Findings) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run
        phases=[Phase.explicit, Phase.generate],  # collect every failure; no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT)
        findings.requests += 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        seen = findings.by_label.setdefault(label, {})
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except Exception as exc:  # a check failure: record it with the request, keep fuzzing
            findings.server_errors.append(
                f"{label} -> {response.status_code}: {response.content[:300]!r}\n"
                f"    {case.as_curl_command(headers=headers)}\n"
                f"    ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            )

    run()


async def test_r22_no_server_errors_over_the_openapi_schema(
    api_url: str,
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    _, headers = users.new("customer", "merchant", "factory", "operator")
    merchant, merchant_headers = users.new("merchant")
    _, other = users.new("customer")
    wallet = (await http.post("/v1/wallets", json={"currency": "USD"}, headers=headers)).json()
    payee = (await http.post("/v1/wallets", json={"currency": "USD"}, headers=other)).json()
    product = await http.post(
        "/v1/products",
        json={"name": f"r22-{uuid.uuid4().hex[:6]}", "price": 1_000, "currency": "USD", "stock": 1_000},
        headers=merchant_headers,
    )
    assert product.status_code in (200, 201), product.text
    await fund(wallet_engine, wallet["id"], 1_000_000)  # so wallet transfers and checkouts can succeed

    spec = (await http.get("/openapi.json")).json()
    fixed = {"wallet_id": wallet["id"], "product_id": product.json()["id"]}
    refined = refine(
        spec,
        {
            "from_wallet_id": [wallet["id"]],
            "to_wallet_id": [payee["id"], wallet["id"]],
            "product_id": [fixed["product_id"]],
            "merchant_id": [merchant],
        },
    )
    findings = Findings()
    both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for name, schema, modes, ids in (
        ("random ids", spec, both, None),  # as served: mostly 404 / 422
        ("existing ids", spec, both, fixed),  # as served, the user's wallet and product in the path
        ("refined", refined, (GenerationMode.POSITIVE,), fixed),  # requests that pass validation: sagas start
    ):
        loaded = schemathesis.openapi.from_dict(schema)
        await asyncio.to_thread(fuzz, loaded, name, modes, ids, api_url, headers, findings)

    print(f"R22: {findings.requests} requests, statuses {dict(sorted(findings.statuses.items()))}")
    for label, statuses in findings.by_label.items():
        print(f"    {label}: {dict(sorted(statuses.items()))}")
    print(f"R22: no negative cases possible for {findings.nothing_to_generate}")
    assert findings.requests >= 300, findings.requests
    assert not findings.server_errors, "responses >= 500:\n" + "\n".join(findings.server_errors)
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations


async def fund(engine: AsyncEngine, wallet_id: str, amount: int) -> None:
    async def work(conn: AsyncConnection) -> None:
        clearing = await ledger.ensure_system_wallet(conn, "gateway_clearing", "USD")
        await ledger.post_journal(
            conn,
            idempotency_key=f"r22-fund:{uuid.uuid4().hex}",
            kind="deposit",
            currency="USD",
            postings=[
                Posting(wallet_id=clearing, amount=-amount),
                Posting(wallet_id=wallet_id, amount=amount),
            ],
        )

    await in_transaction(engine, work)
