"""Rate limits per user and per client address: 429 problem+json with Retry-After; webhooks and probes exempt.

The session's API runs with rate limits off (many users from one address, fast); each test here builds its
own app with tiny limits against the same databases and Temporal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pydantic
import pytest
from fastapi import FastAPI
from temporalio.client import Client

from api.main import create_app
from api.routers.webhooks import MAX_WEBHOOK_BYTES
from payweave.settings import Settings
from tests.api.support import assert_problem
from tests.conftest import Users


@asynccontextmanager
async def limited_app(settings: Settings, temporal: Client, **limits: Any) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"rate_limit_enabled": True, **limits}), temporal=temporal)
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI, ip: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://payweave.test")


def assert_rate_limited(r: httpx.Response, window_seconds: int) -> None:
    body = assert_problem(r, 429, "rate_limited")
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= window_seconds, r.headers["Retry-After"]
    assert body["retry_after"] == retry_after
    assert r.headers["X-Request-ID"]


async def test_per_user_limit(settings: Settings, temporal: Client, migrated: None, users: Users) -> None:
    _, alice = users.new()
    _, bob = users.new()
    async with limited_app(settings, temporal, rate_limit_user="3/minute", rate_limit_ip="") as app:
        async with client(app) as http:
            for _ in range(3):
                assert (await http.get("/v1/wallets", headers=alice)).status_code == 200
            assert_rate_limited(await http.get("/v1/wallets", headers=alice), 60)
            # Money-moving requests are limited the same way, before anything is validated or started.
            r = await http.post("/v1/wallets", json={"currency": "USD"}, headers=alice)
            assert_rate_limited(r, 60)
            # Another user from the same address has an allowance of their own.
            assert (await http.get("/v1/wallets", headers=bob)).status_code == 200
            # An invalid token is refused as such, never counted against the user it names.
            assert_problem(
                await http.get("/v1/wallets", headers={"Authorization": "Bearer x"}), 401, "unauthenticated"
            )


async def test_per_address_limit_and_exemptions(
    settings: Settings, temporal: Client, migrated: None, users: Users
) -> None:
    async with limited_app(settings, temporal, rate_limit_user="", rate_limit_ip="4/hour") as app:
        async with client(app) as http, client(app, ip="198.51.100.9") as other:
            for _ in range(4):
                _, auth = users.new()  # a new user each time: only the address is limited
                assert (await http.get("/v1/wallets", headers=auth)).status_code == 200
            _, auth = users.new()
            assert_rate_limited(await http.get("/v1/wallets", headers=auth), 3600)
            # Unauthenticated requests are limited by address, before the token is looked at.
            assert_rate_limited(await http.get("/v1/wallets"), 3600)
            assert (await other.get("/v1/wallets", headers=auth)).status_code == 200

            # Exempt: gateway webhooks (still verified and size-capped), probes and metrics.
            for _ in range(10):
                r = await http.post("/v1/webhooks/xendit", json={}, headers={"x-callback-token": "wrong"})
                assert_problem(r, 401, "unauthenticated")
                r = await http.post(
                    "/v1/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=0"}
                )
                assert r.status_code == 400, r.text
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/readyz")).status_code == 200
                assert (await http.get("/metrics")).status_code == 200
            big = b"x" * (MAX_WEBHOOK_BYTES + 1)
            r = await http.post("/v1/webhooks/stripe", content=big, headers={"Stripe-Signature": "t=1,v1=0"})
            assert assert_problem(r, 400, "invalid_signature")["detail"] == "payload too large"

            metrics = (await http.get("/metrics")).text
            assert 'payweave_rate_limited_total{scope="ip"}' in metrics


async def test_disabled(settings: Settings, temporal: Client, migrated: None, users: Users) -> None:
    _, auth = users.new()
    async with limited_app(
        settings, temporal, rate_limit_enabled=False, rate_limit_user="1/hour", rate_limit_ip="1/hour"
    ) as app:
        async with client(app) as http:
            for _ in range(5):
                assert (await http.get("/v1/wallets", headers=auth)).status_code == 200


@pytest.mark.parametrize("limit", ["abc", "10/fortnight", "ten/minute"])
def test_malformed_limits_are_refused_at_start(limit: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(rate_limit_user=limit, _env_file=None)  # type: ignore[call-arg]
