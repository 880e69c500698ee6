"""Secrets never reach a log line or an error body (issue 5): the Stripe key, the Xendit key and callback token,
the webhook secret, the JWT secret and a caller's bearer token — on ordinary requests, refused ones, and a 500.

The app here is the production one with logging configured as ``payweave api`` configures it (both formats),
plus one endpoint that misbehaves on purpose: it logs the secrets and fails with them in the exception text,
as careless code might. The redacting handler must still keep them out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
import structlog
from fastapi import FastAPI
from temporalio.client import Client

from api.deps import CurrentUser, SettingsDep
from api.main import create_app
from payweave.logs import Redactor, configure_logging, secret_values, unconfigure_logging
from payweave.settings import Settings
from tests.conftest import Users
from tests.helpers import create_wallet, idem


def secrets_of(settings: Settings) -> dict[str, str]:
    assert settings.jwt_secret is not None
    return {
        "stripe_api_key": settings.stripe_api_key.get_secret_value(),
        "stripe_webhook_secret": settings.stripe_webhook_secret.get_secret_value(),
        "xendit_secret_key": settings.xendit_secret_key.get_secret_value(),
        "xendit_callback_token": settings.xendit_callback_token.get_secret_value(),
        "jwt_secret": settings.jwt_secret.get_secret_value(),
    }


def add_careless_endpoint(app: FastAPI) -> None:
    async def careless(user: CurrentUser, settings: SettingsDep) -> None:
        leaked = " ".join(secrets_of(settings).values())
        logging.getLogger("payweave.careless").warning("settings: %s %r", leaked, settings)
        structlog.get_logger("payweave.careless").info("calling the gateway", **secrets_of(settings))
        raise RuntimeError(f"gateway refused {leaked}")

    app.add_api_route("/v1/careless", careless, methods=["GET"])


@pytest_asyncio.fixture(params=["json", "console"])
async def captured(
    request: pytest.FixtureRequest, settings: Settings, temporal: Client, migrated: None, worker: None
) -> AsyncIterator[tuple[httpx.AsyncClient, io.StringIO]]:
    buffer = io.StringIO()
    level = logging.getLogger().level
    handler = configure_logging(
        settings.model_copy(update={"log_format": request.param, "log_level": "DEBUG"}), stream=buffer
    )
    app = create_app(settings, temporal=temporal)
    add_careless_endpoint(app)
    try:
        async with app.router.lifespan_context(app):
            # raise_app_exceptions=False: answer the 500 as a client sees it instead of raising it here.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://payweave.test") as http:
                yield http, buffer
    finally:
        unconfigure_logging(handler)
        logging.getLogger().setLevel(level)


async def test_secrets_never_logged_nor_answered(
    captured: tuple[httpx.AsyncClient, io.StringIO], settings: Settings, users: Users
) -> None:
    http, buffer = captured
    _, auth = users.new()
    bearer = auth["Authorization"].removeprefix("Bearer ")
    secrets = {**secrets_of(settings), "bearer_token": bearer}
    responses: list[httpx.Response] = []

    # The 500 path: the endpoint logs the secrets and raises with them.
    r = await http.get("/v1/careless", headers={**auth, "X-Request-ID": "req-careless-1"})
    responses.append(r)
    assert r.status_code == 500 and r.json()["code"] == "internal_error", r.text
    assert r.json()["request_id"] == "req-careless-1" and r.headers["X-Request-ID"] == "req-careless-1"

    # Ordinary and refused requests carrying secrets.
    w = await create_wallet(http, auth)
    r = await http.post(f"/v1/wallets/{w['id']}/deposits", json={"amount": 500}, headers={**auth, **idem()})
    responses.append(r)
    assert r.status_code == 202, r.text
    forged = jwt.encode(
        {"sub": "mallory", "aud": "payweave", "exp": 4_102_444_800},
        "not-the-secret-but-long-enough-for-hs256",
    )
    responses += [
        await http.get("/v1/wallets", headers={"Authorization": f"Bearer {forged}"}),
        await http.get("/v1/wallets", headers={"Authorization": f"Bearer {secrets['jwt_secret']}"}),
        await http.post(
            "/v1/webhooks/xendit",
            content=b"not json " + secrets["xendit_secret_key"].encode(),
            headers={"x-callback-token": secrets["xendit_callback_token"]},
        ),
        await http.post(
            "/v1/webhooks/xendit",
            json={},
            headers={"x-callback-token": secrets["xendit_callback_token"] + "x"},
        ),
        await http.post(
            "/v1/webhooks/stripe",
            content=json.dumps({"secret": secrets["stripe_webhook_secret"]}).encode(),
            headers={"Stripe-Signature": f"t=1,v1={secrets['stripe_webhook_secret']}"},
        ),
    ]
    assert [r.status_code for r in responses[2:]] == [401, 401, 400, 401, 400], [r.text for r in responses]

    logged = buffer.getvalue()
    # The log did capture this test's requests (so the absence below means something) …
    assert "req-careless-1" in logged and "unhandled RuntimeError" in logged and "[REDACTED]" in logged
    assert "saga_id" in logged and "deposit:" in logged  # the saga id is bound to the deposit's log lines
    # … and none of the secrets, in any spelling the renderers produce.
    for name, secret in secrets.items():
        for spelling in {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}:
            assert spelling not in logged, f"{name} appears in the log output"
        for r in responses:
            assert secret not in r.text, f"{name} appears in the answer to {r.request.method} {r.request.url}"


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def-ghi",
        "key=sk_live_51Habc123 and rk_test_xyz",
        "secret whsec_ABCdef123",
        "xnd_production_P4yW34v3 used",
        "postgresql+asyncpg://payweave:s3cr3t@db:5432/payweave_wallet",
        'headers {"x-callback-token": "tok_123"}',
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
    ],
)
def test_secret_shapes_are_redacted_even_when_unknown(text: str) -> None:
    redacted = Redactor().redact(text)
    assert "[REDACTED]" in redacted
    for word in (
        "abc.def-ghi",
        "51Habc123",
        "rk_test_xyz",
        "ABCdef123",
        "P4yW34v3",
        "s3cr3t",
        "tok_123",
        "c2lnbmF0dXJl",
    ):
        assert word not in redacted


def test_settings_secrets_include_rotation_parts_and_database_passwords() -> None:
    settings = Settings(
        stripe_webhook_secret="whsec_old1,whsec_new2",  # type: ignore[arg-type]
        wallet_database_url="postgresql+asyncpg://payweave:p%40ss-word@db/payweave_wallet",
        _env_file=None,  # type: ignore[call-arg]
    )
    values: Any = secret_values(settings)
    assert {"whsec_old1", "whsec_new2", "p%40ss-word", "p@ss-word"} <= set(values)
