"""QUALITY R23: bad money input is refused with a 4xx problem+json and a stable code, and nothing is written.

Every case gets fresh users, wallets and Idempotency-Key (cases of one endpoint run concurrently and are
reported as subtests); afterwards we check, in the databases themselves, that the
source wallet is untouched, that the owner has no new transfer/payment/idempotency-key rows, that no workflow
was started, and that the key was not consumed: a valid body under the same key is then accepted.

Decisions asserted here (documented behaviour of payweave.money):
* a lowercase currency ("usd") is normalised to "USD" by ``parse_currency`` and accepted;
* a *missing* amount is a schema problem (``validation_error``); a present but bad amount (≤ 0, > 2^63-1,
  float, string, boolean, null) is ``invalid_amount``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from tests.api.support import (
    OwnerRows,
    WalletRow,
    assert_problem,
    key_claimed,
    owner_rows,
    run_cases,
    wallet_row,
    wallets_of,
    workflow_exists,
)
from tests.conftest import Users
from tests.helpers import create_wallet, deposit, idem, until_terminal

FUNDS = 10_000
VALID_AMOUNT = 1_000

Body = dict[str, Any]


pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


@dataclass(frozen=True)
class Case:
    """How to spoil a valid body: a new dict (sent as JSON) or raw bytes (sent as application/json)."""

    spoil: Callable[[Body], Body | bytes]
    status: int
    code: str
    content_type: str = "application/json"


def with_(**changes: Any) -> Callable[[Body], Body]:
    return lambda body: {**body, **changes}


def without(field: str) -> Callable[[Body], Body]:
    return lambda body: {k: v for k, v in body.items() if k != field}


def raw_amount(literal: str) -> Callable[[Body], bytes]:
    """The body with ``amount`` written as a JSON literal json.dumps would never produce (1e3, NaN, …)."""
    return lambda body: json.dumps({**body, "amount": "__AMOUNT__"}).replace('"__AMOUNT__"', literal).encode()


def raw(content: bytes) -> Callable[[Body], bytes]:
    return lambda body: content


AMOUNT_CASES = {
    "amount_zero": Case(with_(amount=0), 422, "invalid_amount"),
    "amount_negative": Case(with_(amount=-1), 422, "invalid_amount"),
    "amount_2**63": Case(with_(amount=2**63), 422, "invalid_amount"),
    "amount_10**30": Case(with_(amount=10**30), 422, "invalid_amount"),
    "amount_float_10.5": Case(with_(amount=10.5), 422, "invalid_amount"),
    "amount_float_1.0": Case(with_(amount=1.0), 422, "invalid_amount"),
    "amount_too_many_decimals": Case(with_(amount=10.001), 422, "invalid_amount"),
    "amount_string": Case(with_(amount="100"), 422, "invalid_amount"),
    "amount_true": Case(with_(amount=True), 422, "invalid_amount"),
    "amount_null": Case(with_(amount=None), 422, "invalid_amount"),
    "amount_object": Case(with_(amount={"value": 100}), 422, "invalid_amount"),
    "amount_exponent_1e3": Case(raw_amount("1e3"), 422, "invalid_amount"),
    "amount_100.00": Case(raw_amount("100.00"), 422, "invalid_amount"),
    "amount_minus_zero": Case(raw_amount("-0"), 422, "invalid_amount"),
    "amount_NaN": Case(raw_amount("NaN"), 422, "invalid_amount"),
    "amount_Infinity": Case(raw_amount("Infinity"), 422, "invalid_amount"),
    "amount_missing": Case(without("amount"), 422, "validation_error"),
}

COMMON_CASES = {
    "currency_unknown_XXX": Case(with_(currency="XXX"), 422, "validation_error"),
    "currency_usd1": Case(with_(currency="usd1"), 422, "validation_error"),
    "currency_empty": Case(with_(currency=""), 422, "validation_error"),
    "currency_number": Case(with_(currency=840), 422, "validation_error"),
    "currency_mismatch": Case(with_(currency="EUR"), 422, "currency_mismatch"),
    "extra_field": Case(with_(fee=1), 422, "validation_error"),
    "extra_field_owner": Case(with_(owner="someone-else"), 422, "validation_error"),
    "malformed_json": Case(raw(b'{"amount": 100,'), 422, "validation_error"),
    "json_array": Case(raw(b"[]"), 422, "validation_error"),
    "json_string": Case(raw(b'"100"'), 422, "validation_error"),
    "empty_body": Case(raw(b""), 422, "validation_error"),
    "not_json_content_type": Case(
        lambda body: json.dumps(body).encode(), 422, "validation_error", content_type="text/plain"
    ),
}

TRANSFER_CASES = {
    **AMOUNT_CASES,
    **COMMON_CASES,
    "currency_null": Case(with_(currency=None), 422, "validation_error"),
    "currency_missing": Case(without("currency"), 422, "validation_error"),
    "same_source_and_destination": Case(
        lambda body: {**body, "to_wallet_id": body["from_wallet_id"]}, 422, "validation_error"
    ),
    "from_wallet_missing": Case(without("from_wallet_id"), 422, "validation_error"),
    "to_wallet_id_too_long": Case(with_(to_wallet_id="w" * 65), 422, "validation_error"),
    "description_too_long": Case(with_(description="d" * 501), 422, "validation_error"),
}

DEPOSIT_CASES = {
    **AMOUNT_CASES,
    **COMMON_CASES,
    "gateway_unknown": Case(with_(gateway="paypal"), 422, "validation_error"),
    "expires_in_zero": Case(with_(expires_in=0), 422, "validation_error"),
    "payment_method_too_long": Case(with_(payment_method="pm_" + "x" * 300), 422, "validation_error"),
}

WALLET_CASES = {
    "currency_unknown_XXX": Case(with_(currency="XXX"), 422, "validation_error"),
    "currency_usd1": Case(with_(currency="usd1"), 422, "validation_error"),
    "currency_two_letters": Case(with_(currency="US"), 422, "validation_error"),
    "currency_empty": Case(with_(currency=""), 422, "validation_error"),
    "currency_null": Case(with_(currency=None), 422, "validation_error"),
    "currency_number": Case(with_(currency=840), 422, "validation_error"),
    "currency_missing": Case(without("currency"), 422, "validation_error"),
    "extra_field_amount": Case(with_(amount=100), 422, "validation_error"),
    "extra_field_owner": Case(with_(owner="someone-else"), 422, "validation_error"),
    "malformed_json": Case(raw(b'{"currency": "USD"'), 422, "validation_error"),
    "json_array": Case(raw(b'["USD"]'), 422, "validation_error"),
}


async def send(
    http: httpx.AsyncClient, path: str, case: Case, valid: Body, headers: dict[str, str]
) -> httpx.Response:
    spoiled = case.spoil(valid)
    if isinstance(spoiled, bytes):
        return await http.post(path, content=spoiled, headers={**headers, "Content-Type": case.content_type})
    return await http.post(path, json=spoiled, headers=headers)


async def assert_nothing_written(
    payments_engine: AsyncEngine,
    wallet_engine: AsyncEngine,
    temporal: Client,
    *,
    sub: str,
    wallet_id: str,
    wallet_before: WalletRow,
    rows_before: OwnerRows,
    wf_id: str,
) -> None:
    assert await wallet_row(wallet_engine, wallet_id) == wallet_before
    assert await owner_rows(payments_engine, sub) == rows_before
    assert not await key_claimed(payments_engine, wf_id)
    assert not await workflow_exists(temporal, wf_id)


async def test_bad_transfer_input_is_refused_and_writes_nothing(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
    subtests: Any,
) -> None:
    async def check(case: Case) -> None:
        sub, auth = users.new()
        _, bob = users.new()
        src, dst = await create_wallet(http, auth), await create_wallet(http, bob)
        await deposit(http, auth, src["id"], FUNDS)
        valid = {
            "from_wallet_id": src["id"],
            "to_wallet_id": dst["id"],
            "amount": VALID_AMOUNT,
            "currency": "USD",
            "description": "r23",
        }
        key = idem()
        wallet_before = await wallet_row(wallet_engine, src["id"])
        rows_before = await owner_rows(payments_engine, sub)
        assert (wallet_before.balance, wallet_before.held) == (FUNDS, 0)

        r = await send(http, "/v1/transfers", case, valid, {**auth, **key})

        assert_problem(r, case.status, case.code)
        await assert_nothing_written(
            payments_engine,
            wallet_engine,
            temporal,
            sub=sub,
            wallet_id=src["id"],
            wallet_before=wallet_before,
            rows_before=rows_before,
            wf_id=f"transfer:{sub}:{key['Idempotency-Key']}",
        )
        assert (await wallet_row(wallet_engine, dst["id"])).balance == 0

        # The key was not consumed by the refused request: a valid body under it goes through, once.
        ok = await http.post("/v1/transfers", json=valid, headers={**auth, **key})
        assert ok.status_code == 202, ok.text
        done = await until_terminal(http, auth, f"/v1/transfers/{ok.json()['id']}")
        assert (done["status"], done["failure_code"]) == ("completed", None)
        assert (await wallet_row(wallet_engine, src["id"])).balance == FUNDS - VALID_AMOUNT
        assert (await wallet_row(wallet_engine, dst["id"])).balance == VALID_AMOUNT
        assert (await owner_rows(payments_engine, sub)).transfers == rows_before.transfers + 1

    await run_cases(subtests, TRANSFER_CASES, check)


async def test_bad_deposit_input_is_refused_and_writes_nothing(
    http: httpx.AsyncClient,
    users: Users,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    temporal: Client,
    subtests: Any,
) -> None:
    async def check(case: Case) -> None:
        sub, auth = users.new()
        w = await create_wallet(http, auth)
        path = f"/v1/wallets/{w['id']}/deposits"
        valid = {"amount": VALID_AMOUNT, "currency": "USD", "payment_method": "pm_card_visa"}
        key = idem()
        wallet_before = await wallet_row(wallet_engine, w["id"])
        assert await owner_rows(payments_engine, sub) == OwnerRows(0, 0, 0)

        r = await send(http, path, case, valid, {**auth, **key})

        assert_problem(r, case.status, case.code)
        await assert_nothing_written(
            payments_engine,
            wallet_engine,
            temporal,
            sub=sub,
            wallet_id=w["id"],
            wallet_before=wallet_before,
            rows_before=OwnerRows(0, 0, 0),
            wf_id=f"deposit:{sub}:{key['Idempotency-Key']}",
        )

        ok = await http.post(path, json=valid, headers={**auth, **key})
        assert ok.status_code == 202, ok.text
        done = await until_terminal(http, auth, f"/v1/deposits/{ok.json()['id']}")
        assert (done["status"], done["credited"]) == ("succeeded", True)
        assert (await wallet_row(wallet_engine, w["id"])).balance == VALID_AMOUNT
        assert await owner_rows(payments_engine, sub) == OwnerRows(
            transfers=0, payments=1, idempotency_keys=1
        )

    await run_cases(subtests, DEPOSIT_CASES, check)


@pytest.mark.parametrize("case", WALLET_CASES.values(), ids=WALLET_CASES.keys())
async def test_bad_wallet_input_is_refused_and_writes_nothing(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, case: Case
) -> None:
    sub, auth = users.new()
    r = await send(http, "/v1/wallets", case, {"currency": "USD"}, auth)
    assert_problem(r, case.status, case.code)
    assert await wallets_of(wallet_engine, sub) == []
    assert (await http.get("/v1/wallets", headers=auth)).json() == []


async def test_amount_with_more_digits_than_python_parses_is_a_4xx_problem(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    """A 5,000-digit integer literal exceeds Python's int-parsing limit: still a problem, never a 500."""
    sub, auth = users.new()
    _, bob = users.new()
    src, dst = await create_wallet(http, auth), await create_wallet(http, bob)
    body = raw_amount("9" * 5000)({"from_wallet_id": src["id"], "to_wallet_id": dst["id"], "currency": "USD"})
    for path in ("/v1/transfers", f"/v1/wallets/{src['id']}/deposits"):
        r = await http.post(
            path, content=body, headers={**auth, **idem(), "Content-Type": "application/json"}
        )
        assert 400 <= r.status_code < 500, r.text
        assert_problem(r, r.status_code, "invalid_amount" if r.status_code == 422 else "validation_error")
    assert await owner_rows(payments_engine, sub) == OwnerRows(0, 0, 0)
    assert (await wallet_row(wallet_engine, src["id"])).entries == 0


async def test_lowercase_currency_is_normalised_to_upper_case(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    sub, auth = users.new()
    _, bob = users.new()
    r = await http.post("/v1/wallets", json={"currency": "usd"}, headers=auth)
    assert r.status_code == 201, r.text
    src = r.json()
    assert src["currency"] == "USD"
    again = await http.post("/v1/wallets", json={"currency": "USD"}, headers=auth)
    assert (again.status_code, again.json()["id"]) == (200, src["id"])
    assert await wallets_of(wallet_engine, sub) == [src["id"]]

    r = await http.post(
        f"/v1/wallets/{src['id']}/deposits",
        json={"amount": FUNDS, "currency": "usd", "payment_method": "pm_card_visa"},
        headers={**auth, **idem()},
    )
    assert r.status_code == 202, r.text
    assert r.json()["currency"] == "USD"
    assert (await until_terminal(http, auth, f"/v1/deposits/{r.json()['id']}"))["status"] == "succeeded"

    dst = await create_wallet(http, bob, "usd")
    key = idem()
    body = {"from_wallet_id": src["id"], "to_wallet_id": dst["id"], "amount": VALID_AMOUNT, "currency": "usd"}
    first = await http.post("/v1/transfers", json=body, headers={**auth, **key})
    assert first.status_code == 202, first.text
    assert first.json()["currency"] == "USD"
    # "usd" and "USD" are the same request once normalised: a retry spelled in upper case is not a reused key.
    retry = await http.post("/v1/transfers", json={**body, "currency": "USD"}, headers={**auth, **key})
    assert (retry.status_code, retry.json()) == (202, first.json())
    done = await until_terminal(http, auth, f"/v1/transfers/{first.json()['id']}")
    assert done["status"] == "completed"
    assert (await wallet_row(wallet_engine, dst["id"])).balance == VALID_AMOUNT
    assert (await owner_rows(payments_engine, sub)).transfers == 1
