"""Fast checks of the dev-stack helpers (no child processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from dotenv import dotenv_values
from pydantic import SecretStr

from payweave import search_attributes
from payweave.devstack.localstripe_server import make_idempotency_middleware
from payweave.devstack.stack import GENERATED_SECRETS, child_env, ensure_dev_secrets, uses_real_stripe
from payweave.devstack.temporal import SEARCH_ATTRIBUTES, dev_server_argv, search_attribute_keys
from payweave.settings import Settings


def test_dev_secrets_are_generated_once(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    assert ensure_dev_secrets(env_file) == list(GENERATED_SECRETS)
    first = dotenv_values(env_file)
    assert str(first["PAYWEAVE_STRIPE_WEBHOOK_SECRET"]).startswith("whsec_")
    assert ensure_dev_secrets(env_file) == []
    assert dotenv_values(env_file) == first
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_dev_secrets_keep_what_is_there(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    env_file.write_text("PAYWEAVE_JWT_SECRET=mine")
    assert "PAYWEAVE_JWT_SECRET" not in ensure_dev_secrets(env_file)
    assert dotenv_values(env_file)["PAYWEAVE_JWT_SECRET"] == "mine"
    settings = Settings(_env_file=str(env_file))  # type: ignore[call-arg]
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "mine"


def test_child_env_spells_out_settings() -> None:
    settings = Settings(_env_file=None, jwt_secret=SecretStr("s"), stripe_api_base=None)  # type: ignore[call-arg]
    env = child_env(settings, base={})
    assert env["PAYWEAVE_JWT_SECRET"] == "s"
    assert env["PAYWEAVE_STRIPE_API_BASE"] == ""  # None on purpose → "no base URL", not the default
    assert env["PAYWEAVE_TEMPORAL_TLS"] == "false"
    assert "PAYWEAVE_JWT_JWKS_URL" not in env  # None by default: left out
    assert "PYTHONPATH" in env


def test_real_stripe_detection() -> None:
    assert not uses_real_stripe(Settings(_env_file=None))  # type: ignore[call-arg]
    assert uses_real_stripe(Settings(_env_file=None, stripe_api_key=SecretStr("sk_live_x")))  # type: ignore[call-arg]
    assert uses_real_stripe(Settings(_env_file=None, stripe_api_key=SecretStr("sk_test_x")))  # type: ignore[call-arg]


def test_search_attributes_agree_with_the_workflow_side() -> None:
    assert SEARCH_ATTRIBUTES == search_attributes.cli_flags()
    assert {k.name for k in search_attribute_keys()} == set(SEARCH_ATTRIBUTES)


def test_dev_server_argv() -> None:
    argv = dev_server_argv(Path("t.db"), 7233, 8233, namespaces=["default", "pw"])
    assert argv[1:3] == ["server", "start-dev"]
    assert ["--db-filename", "t.db"] == argv[argv.index("--db-filename") : argv.index("--db-filename") + 2]
    assert "--namespace" in argv and "default" not in argv
    assert argv.count("--search-attribute") == len(SEARCH_ATTRIBUTES)
    assert "--ui-port" not in dev_server_argv(None, 7233, 8233, headless=True)


async def test_idempotency_middleware_replays_and_rejects_mismatches() -> None:
    calls = 0

    async def create(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # let concurrent duplicates pile up
        return web.json_response({"id": f"obj_{calls}"})

    app = web.Application(middlewares=[make_idempotency_middleware()])
    app.router.add_post("/v1/things", create)
    async with TestClient(TestServer(app)) as client:
        auth = {"Authorization": "Bearer sk_test_a", "Idempotency-Key": "k"}
        responses = await asyncio.gather(
            *(client.post("/v1/things", data={"a": "1", "b": "2"}, headers=auth) for _ in range(5))
        )
        bodies = [await r.json() for r in responses]
        assert calls == 1 and all(b == {"id": "obj_1"} for b in bodies)
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 4
        # Same parameters in another order: still the same request.
        r = await client.post(
            "/v1/things", data="b=2&a=1", headers=auth | {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert (await r.json()) == {"id": "obj_1"}
        r = await client.post("/v1/things", data={"a": "9"}, headers=auth)
        assert r.status == 400 and (await r.json())["error"]["type"] == "idempotency_error"
        # Another account may use the same key; no key means no replay.
        r = await client.post(
            "/v1/things", data={"a": "1"}, headers=auth | {"Authorization": "Bearer sk_test_b"}
        )
        assert (await r.json()) == {"id": "obj_2"}
        r = await client.post("/v1/things", data={"a": "1"}, headers={"Authorization": "Bearer sk_test_a"})
        assert (await r.json()) == {"id": "obj_3"}
