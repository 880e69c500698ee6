"""docker-compose.yml, the production-shaped deployment (issue 5): services, build context, env wiring against
``Settings``, health checks and start order. Parsed with PyYAML (merge keys resolved); no Docker needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from payweave.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("api", "worker", "migrate", "temporal-setup")
# What a production api/worker cannot do without: the built-in defaults of these are development values.
REQUIRED_SETTINGS = {
    "wallet_database_url",
    "payments_database_url",
    "temporal_address",
    "temporal_namespace",
    "temporal_task_queue",
    "stripe_api_key",
    "stripe_api_base",
    "stripe_webhook_secret",
    "xendit_secret_key",
    "xendit_api_base",
    "xendit_callback_token",
    "jwt_secret",
    "jwt_jwks_url",
    "jwt_audience",
    "public_base_url",
    "log_format",
}
SECRETS = {"stripe_api_key", "stripe_webhook_secret", "xendit_secret_key", "xendit_callback_token"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, so merges and this test can read it"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def payweave_settings(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("PAYWEAVE_").lower(): v for k, v in env.items() if k.startswith("PAYWEAVE_")}


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "temporal", "temporal-ui", "migrate", "api", "worker"} <= services.keys()
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "postgres-data" in compose["volumes"]
    for name, service in services.items():
        image = str(service.get("image", ""))
        assert not image.endswith(":latest") or name in APP_SERVICES, f"{name}: pin the image version"


def test_temporal_auto_setup_on_postgres(compose: dict[str, Any]) -> None:
    temporal = compose["services"]["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    env = env_of(temporal)
    assert env["DB"].startswith("postgres") and env["POSTGRES_SEEDS"] == "postgres"
    assert env["POSTGRES_PWD"].startswith("${"), "the Temporal DB password comes from the environment"
    assert temporal["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_services_run_the_project_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"]["context"] == ".", name
        assert (
            ROOT / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")
        ).is_file()
    assert services["api"]["command"][:2] == ["payweave", "api"]
    assert services["worker"]["command"] == ["payweave", "worker"]
    assert services["migrate"]["command"] == ["payweave", "migrate"]
    assert services["migrate"]["restart"] == "no"


def test_env_wiring_matches_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in APP_SERVICES:
        settings = payweave_settings(env_of(compose["services"][name]))
        unknown = settings.keys() - fields
        assert not unknown, f"{name}: PAYWEAVE_* variables Settings does not read (typos?): {sorted(unknown)}"
        missing = REQUIRED_SETTINGS - settings.keys()
        assert not missing, f"{name}: settings left at their development defaults: {sorted(missing)}"
        assert not {k for k in settings if k.startswith("dev_")}, "payweave dev settings have no place here"
        # Real gateways, not the development emulators; JSON logs.
        assert settings["stripe_api_base"] == "" and settings["xendit_api_base"] == "", name
        assert settings["log_format"] == "json", name
        assert settings["temporal_address"] == "temporal:7233", name
        for url in ("wallet_database_url", "payments_database_url"):
            assert re.fullmatch(
                r"postgresql\+asyncpg://payweave:\$\{[^}]+\}@postgres:5432/payweave_\w+", settings[url]
            )
        for secret in SECRETS:
            # Required from the environment (`${VAR:?message}`): never a default baked into the file.
            assert re.fullmatch(r"\$\{PAYWEAVE_[A-Z_]+:\?[^}]*\}", settings[secret]), (name, secret)
        # Every value parses as Settings would read it (defaults substituted for ${VAR:-default}).
        resolved = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in settings.items()}
        resolved = {k: v for k, v in resolved.items() if "${" not in v and v != ""}
        Settings(**resolved, _env_file=None)  # type: ignore[arg-type]


def test_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "temporal", "api", "worker"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["temporal-ui"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully", name
        assert depends["temporal"]["condition"] == "service_healthy", name
        assert services[name]["restart"] == "unless-stopped", name


def test_only_the_api_is_published_beyond_localhost(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name != "api":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
