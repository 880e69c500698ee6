"""QUALITY R24: authentication and ownership.

Every bad credential → 401 ``unauthenticated`` problem+json and nothing written; another user's wallet →
404 ``wallet_not_found`` (never 403, and the same answer as for a wallet that does not exist); another user's
transfer or deposit → 404 ``not_found``; freezing is for operators only (403 ``forbidden`` otherwise).
Neither the JWT secret nor the presented token ever appears in an error body.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.ext.asyncio import AsyncEngine

from payweave.settings import Settings
from tests.api.support import (
    OwnerRows,
    assert_problem,
    key_claimed,
    owner_rows,
    wallet_row,
    wallets_of,
)
from tests.conftest import Users
from tests.helpers import create_wallet, deposit, idem, until_terminal

# A token that would be perfectly valid (and powerful: it claims operator) if it were not spoiled.
ROLES = ["customer", "operator"]


pytestmark = pytest.mark.reliability  # QUALITY.md case, see docs/reliability.md


def claims(settings: Settings, subject: str, /, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": subject,
        "roles": ROLES,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def secret(settings: Settings) -> str:
    assert settings.jwt_secret is not None
    return settings.jwt_secret.get_secret_value()


def hs256(settings: Settings, subject: str, /, **changes: Any) -> str:
    return jwt.encode(claims(settings, subject, **changes), secret(settings), algorithm="HS256")


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(settings: Settings, sub: str, alg: str) -> str:
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(settings, sub))}."


def alg_none_keeping_signature(settings: Settings, sub: str) -> str:
    _, payload, signature = hs256(settings, sub).split(".")
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}"


def forged_payload(settings: Settings, sub: str) -> str:
    """A genuine signature over someone else's claims, glued to this user's claims."""
    header, _, signature = hs256(settings, "someone-else").split(".")
    return f"{header}.{b64(claims(settings, sub))}.{signature}"


def rs256(settings: Settings, sub: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(settings, sub), key, algorithm="RS256")


Header = Callable[[Settings, str], str | None]

BAD_CREDENTIALS: dict[str, Header] = {
    "no_token": lambda s, sub: None,
    "empty_header": lambda s, sub: "",
    "basic_scheme": lambda s, sub: "Basic " + base64.b64encode(b"user:password").decode(),
    "bearer_without_token": lambda s, sub: "Bearer",
    "bearer_token_with_spaces": lambda s, sub: "Bearer not a jwt",
    "bearer_garbage": lambda s, sub: "Bearer not-a-jwt",
    "bearer_two_parts": lambda s, sub: "Bearer " + ".".join(hs256(s, sub).split(".")[:2]),
    "token_without_scheme": lambda s, sub: hs256(s, sub),
    "token_scheme": lambda s, sub: "Token " + hs256(s, sub),
    "expired": lambda s, sub: "Bearer " + hs256(s, sub, exp=int(time.time()) - 3600),
    "not_yet_valid": lambda s, sub: "Bearer " + hs256(s, sub, nbf=int(time.time()) + 3600),
    "exp_not_a_number": lambda s, sub: "Bearer " + hs256(s, sub, exp="tomorrow"),
    "wrong_audience": lambda s, sub: "Bearer " + hs256(s, sub, aud="someone-else"),
    "missing_audience": lambda s, sub: "Bearer " + hs256(s, sub, aud=DROP),
    "wrong_secret": lambda s, sub: (
        "Bearer " + jwt.encode(claims(s, sub), "not-the-secret-" + "x" * 32, algorithm="HS256")
    ),
    "alg_none_pyjwt": lambda s, sub: "Bearer " + jwt.encode(claims(s, sub), None, algorithm="none"),
    "alg_none_manual": lambda s, sub: "Bearer " + unsigned(s, sub, "none"),
    "alg_None_manual": lambda s, sub: "Bearer " + unsigned(s, sub, "None"),
    "alg_NONE_manual": lambda s, sub: "Bearer " + unsigned(s, sub, "NONE"),
    "alg_none_keeping_signature": lambda s, sub: "Bearer " + alg_none_keeping_signature(s, sub),
    "forged_payload": lambda s, sub: "Bearer " + forged_payload(s, sub),
    "hs512_with_the_right_secret": lambda s, sub: (
        "Bearer " + jwt.encode(claims(s, sub), secret(s) * 2, algorithm="HS512")
    ),
    "rs256_when_hs256_configured": lambda s, sub: "Bearer " + rs256(s, sub),
    "missing_sub": lambda s, sub: "Bearer " + hs256(s, sub, sub=DROP),
    "missing_exp": lambda s, sub: "Bearer " + hs256(s, sub, exp=DROP),
    "empty_sub": lambda s, sub: "Bearer " + hs256(s, ""),
    "sub_not_a_string": lambda s, sub: "Bearer " + hs256(s, sub, sub=12345),
    "sub_with_colon": lambda s, sub: "Bearer " + hs256(s, f"{sub}:x"),
    "roles_not_a_list": lambda s, sub: "Bearer " + hs256(s, sub, roles={"operator": True}),
}


def assert_no_secret(r: httpx.Response, settings: Settings, header: str | None) -> None:
    assert secret(settings) not in r.text
    for part in (header or "").split():
        if part.count(".") >= 1:  # the token (or what was presented as one), never echoed back
            assert part not in r.text


async def test_the_crafted_token_is_accepted_when_nothing_is_wrong(
    http: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    """Control for the cases below: the same builder, unspoiled, yields a working token."""
    sub, auth = users.new()
    w = await create_wallet(http, auth)
    r = await http.get(f"/v1/wallets/{w['id']}", headers={"Authorization": "Bearer " + hs256(settings, sub)})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("make_header", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
async def test_bad_credentials_are_401_and_write_nothing(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    make_header: Header,
) -> None:
    sub, auth = users.new()
    _, bob = users.new()
    w, dst = await create_wallet(http, auth), await create_wallet(http, bob)
    before = await wallet_row(wallet_engine, w["id"])
    header = make_header(settings, sub)
    bad = {} if header is None else {"Authorization": header}
    key = idem()
    transfer = {"from_wallet_id": w["id"], "to_wallet_id": dst["id"], "amount": 100, "currency": "USD"}

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/wallets", {"headers": bad}),
        ("POST", "/v1/wallets", {"json": {"currency": "EUR"}, "headers": bad}),
        ("GET", f"/v1/wallets/{w['id']}", {"headers": bad}),
        ("GET", f"/v1/wallets/{w['id']}/entries", {"headers": bad}),
        (
            "POST",
            f"/v1/wallets/{w['id']}/deposits",
            {"json": {"amount": 100, "payment_method": "pm_card_visa"}, "headers": {**bad, **key}},
        ),
        ("POST", "/v1/transfers", {"json": transfer, "headers": {**bad, **key}}),
        ("POST", f"/v1/wallets/{dst['id']}/freeze", {"headers": bad}),
        ("GET", "/v1/transfers/tr_whatever", {"headers": bad}),
    ]
    for method, path, kwargs in requests:
        r = await http.request(method, path, **kwargs)
        body = assert_problem(r, 401, "unauthenticated")
        assert "detail" in body
        assert_no_secret(r, settings, header)

    assert await wallets_of(wallet_engine, sub) == [w["id"]]
    assert await wallet_row(wallet_engine, w["id"]) == before
    assert (await wallet_row(wallet_engine, dst["id"])).status == "active"
    assert await owner_rows(payments_engine, sub) == OwnerRows(0, 0, 0)
    # The key is still free for the real owner.
    ok = await http.post(
        f"/v1/wallets/{w['id']}/deposits",
        json={"amount": 100, "payment_method": "pm_card_visa"},
        headers={**auth, **key},
    )
    assert ok.status_code == 202, ok.text
    assert (await until_terminal(http, auth, f"/v1/deposits/{ok.json()['id']}"))["status"] == "succeeded"


def same_problem(r: httpx.Response, reference: httpx.Response, **ids: str) -> None:
    """``r`` reads exactly like ``reference`` once the ids in ``ids`` (real → missing) are swapped."""
    text = r.text
    for real, missing in ids.items():
        text = text.replace(real, missing)
    assert (r.status_code, r.headers["content-type"], text) == (
        reference.status_code,
        reference.headers["content-type"],
        reference.text,
    )


async def test_another_users_wallet_is_404_like_a_missing_one_and_nothing_moves(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    alice_sub, alice = users.new()
    _, bob = users.new()
    mine = await create_wallet(http, alice)
    theirs = await create_wallet(http, bob)
    await deposit(http, bob, theirs["id"], 5_000)
    before = await wallet_row(wallet_engine, theirs["id"])
    missing = "wal_" + "0" * 32

    async def both(method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
        body = kwargs.pop("json", None)

        def fill(wallet_id: str) -> dict[str, Any] | None:
            return None if body is None else json.loads(json.dumps(body).replace("{w}", wallet_id))

        real = await http.request(method, path.format(w=theirs["id"]), json=fill(theirs["id"]), **kwargs)
        ghost = await http.request(method, path.format(w=missing), json=fill(missing), **kwargs)
        return real, ghost

    key = idem()
    transfer = {"from_wallet_id": "{w}", "to_wallet_id": mine["id"], "amount": 1_000, "currency": "USD"}
    for method, path, kwargs in [
        ("GET", "/v1/wallets/{w}", {"headers": alice}),
        ("GET", "/v1/wallets/{w}/entries", {"headers": alice}),
        ("GET", "/v1/wallets/{w}/entries?limit=1", {"headers": alice}),
        (
            "POST",
            "/v1/wallets/{w}/deposits",
            {"headers": {**alice, **key}, "json": {"amount": 1_000, "payment_method": "pm_card_visa"}},
        ),
        ("POST", "/v1/transfers", {"headers": {**alice, **key}, "json": transfer}),
    ]:
        real, ghost = await both(method, path, **kwargs)
        assert_problem(real, 404, "wallet_not_found")
        same_problem(real, ghost, **{theirs["id"]: missing})

    assert [w["id"] for w in (await http.get("/v1/wallets", headers=alice)).json()] == [mine["id"]]
    assert await wallet_row(wallet_engine, theirs["id"]) == before
    assert (await wallet_row(wallet_engine, mine["id"])).balance == 0
    assert await owner_rows(payments_engine, alice_sub) == OwnerRows(0, 0, 0)
    assert not await key_claimed(payments_engine, f"transfer:{alice_sub}:{key['Idempotency-Key']}")


async def test_another_users_transfer_and_deposit_are_404_not_found(
    http: httpx.AsyncClient, users: Users
) -> None:
    _, alice = users.new()
    _, bob = users.new()
    _, carol = users.new()
    b, c = await create_wallet(http, bob), await create_wallet(http, carol)
    dep = await deposit(http, bob, b["id"], 2_000)
    r = await http.post(
        "/v1/transfers",
        json={"from_wallet_id": b["id"], "to_wallet_id": c["id"], "amount": 500, "currency": "USD"},
        headers={**bob, **idem()},
    )
    assert r.status_code == 202, r.text
    tr = await until_terminal(http, bob, f"/v1/transfers/{r.json()['id']}")

    for path, ghost_path, real_id, ghost_id in [
        (f"/v1/transfers/{tr['id']}", "/v1/transfers/tr_" + "0" * 26, tr["id"], "tr_" + "0" * 26),
        (f"/v1/deposits/{dep['id']}", "/v1/deposits/dep_" + "0" * 26, dep["id"], "dep_" + "0" * 26),
    ]:
        for outsider in (alice, carol):  # carol received the money, but the transfer is bob's
            r = await http.get(path, headers=outsider)
            assert_problem(r, 404, "not_found")
            same_problem(r, await http.get(ghost_path, headers=outsider), **{real_id: ghost_id})
        assert (await http.get(path, headers=bob)).status_code == 200
    # A deposit id is not a transfer id and vice versa, even for the owner.
    assert_problem(await http.get(f"/v1/transfers/{dep['id']}", headers=bob), 404, "not_found")
    assert_problem(await http.get(f"/v1/deposits/{tr['id']}", headers=bob), 404, "not_found")
    assert_problem(await http.get("/v1/transfers/" + "t" * 65, headers=bob), 404, "not_found")


async def test_only_operators_freeze_and_they_can_freeze_anyone(
    http: httpx.AsyncClient, users: Users, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> None:
    bob_sub, bob = users.new()
    _, alice = users.new()
    _, merchant = users.new("merchant")
    _, operator = users.new("operator")
    b = await create_wallet(http, bob)
    await create_wallet(http, alice)
    await deposit(http, bob, b["id"], 3_000)
    before = await wallet_row(wallet_engine, b["id"])

    for who in (bob, alice, merchant):  # not even the owner may freeze or unfreeze
        for action in ("freeze", "unfreeze"):
            assert_problem(await http.post(f"/v1/wallets/{b['id']}/{action}", headers=who), 403, "forbidden")
    assert await wallet_row(wallet_engine, b["id"]) == before

    r = await http.post(f"/v1/wallets/{b['id']}/freeze", headers=operator)
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["status"], r.json()["balance"]) == (b["id"], "frozen", 3_000)
    assert (await wallet_row(wallet_engine, b["id"])).status == "frozen"
    # the operator reads any wallet; the owner sees it frozen and cannot deposit into it
    assert (await http.get(f"/v1/wallets/{b['id']}", headers=operator)).json()["status"] == "frozen"
    rows = await owner_rows(payments_engine, bob_sub)
    assert_problem(
        await http.post(f"/v1/wallets/{b['id']}/deposits", json={"amount": 100}, headers={**bob, **idem()}),
        409,
        "wallet_frozen",
    )
    assert await owner_rows(payments_engine, bob_sub) == rows
    # freezing twice is harmless
    assert (await http.post(f"/v1/wallets/{b['id']}/freeze", headers=operator)).json()["status"] == "frozen"

    r = await http.post(f"/v1/wallets/{b['id']}/unfreeze", headers=operator)
    assert (r.status_code, r.json()["status"]) == (200, "active")
    assert await wallet_row(wallet_engine, b["id"]) == before
    assert_problem(
        await http.post("/v1/wallets/wal_missing/freeze", headers=operator), 404, "wallet_not_found"
    )


async def test_operators_read_any_wallet_but_cannot_move_its_money(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    """Reading any wallet is not acting on it: a user who is also an operator acts on their own wallets only."""
    _, bob = users.new()
    _, operator = users.new("operator")
    both_sub, both = users.new("customer", "operator")
    b = await create_wallet(http, bob)
    own = await create_wallet(http, both)
    await deposit(http, bob, b["id"], 2_000)
    before = await wallet_row(wallet_engine, b["id"])

    assert (await http.get(f"/v1/wallets/{b['id']}", headers=operator)).json()["balance"] == 2_000
    assert (await http.get(f"/v1/wallets/{b['id']}/entries", headers=operator)).status_code == 200
    deposit_body = {"amount": 100, "payment_method": "pm_card_visa"}
    transfer = {"from_wallet_id": b["id"], "to_wallet_id": own["id"], "amount": 100, "currency": "USD"}
    # a pure operator has no money permissions at all
    assert_problem(
        await http.post(f"/v1/wallets/{b['id']}/deposits", json=deposit_body, headers={**operator, **idem()}),
        403,
        "forbidden",
    )
    assert_problem(
        await http.post("/v1/transfers", json=transfer, headers={**operator, **idem()}), 403, "forbidden"
    )
    # customer + operator: the wallet is visible, but not theirs to move money with
    assert_problem(
        await http.post(f"/v1/wallets/{b['id']}/deposits", json=deposit_body, headers={**both, **idem()}),
        404,
        "wallet_not_found",
    )
    assert_problem(
        await http.post("/v1/transfers", json=transfer, headers={**both, **idem()}), 404, "wallet_not_found"
    )
    assert await wallet_row(wallet_engine, b["id"]) == before
    assert await owner_rows(payments_engine, both_sub) == OwnerRows(0, 0, 0)


async def test_errors_never_carry_the_jwt_secret_or_the_token(
    http: httpx.AsyncClient, users: Users, settings: Settings
) -> None:
    sub, auth = users.new()
    _, bob = users.new()
    w, other = await create_wallet(http, auth), await create_wallet(http, bob)
    token = auth["Authorization"]
    responses = [
        await http.get("/v1/wallets/wal_missing", headers=auth),
        await http.get(f"/v1/wallets/{other['id']}", headers=auth),
        await http.post(f"/v1/wallets/{w['id']}/freeze", headers=auth),
        await http.post("/v1/transfers", json={"amount": 0}, headers={**auth, **idem()}),
        await http.post(
            "/v1/transfers", content=b"{", headers={**auth, **idem(), "Content-Type": "application/json"}
        ),
        await http.post(f"/v1/wallets/{w['id']}/deposits", json={"amount": 1}, headers=auth),
        await http.get("/v1/transfers/tr_missing", headers=auth),
        await http.get("/v1/nowhere", headers=auth),
        await http.post(
            "/v1/wallets", json={"currency": "USD"}, headers={"Authorization": token + "x"}
        ),  # tampered signature
        await http.post(
            "/v1/wallets",
            json={"currency": "USD"},
            headers={"Authorization": "Bearer " + hs256(settings, sub, aud="other")},
        ),
    ]
    for r in responses:
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert secret(settings) not in r.text
        assert token.split()[1] not in r.text
        assert token.split()[1].split(".")[2] not in r.text  # not even the signature
