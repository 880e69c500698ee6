"""Configuration from the environment (prefix ``PAYWEAVE_``), via pydantic-settings.

Defaults point at the ports ``payweave dev`` uses, so the CLI works against a running dev stack without
any configuration. ``payweave dev`` skips starting a part whose setting was given explicitly (environment
or ``.env``): that is how you point the stack at a real PostgreSQL, Temporal cluster or gateway.
Secrets are ``SecretStr`` so they never show up in a repr, a log line or an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The dev stack keeps its generated secrets (JWT secret, webhook secrets) here, so `payweave token`,
# `payweave api` and `payweave worker` started by hand agree with a running `payweave dev`.
DEV_DIR = Path(".payweave")
DEV_ENV_FILE = DEV_DIR / "dev.env"

DEV_POSTGRES_PORT = 55432
DEV_TEMPORAL_PORT = 7233
DEV_TEMPORAL_UI_PORT = 8233
DEV_LOCALSTRIPE_PORT = 8420
DEV_XENDIT_PORT = 8421
DEV_API_PORT = 8000
DEV_WORKER_METRICS_PORT = 8422


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYWEAVE_", env_file=(".env", str(DEV_ENV_FILE)), extra="ignore"
    )

    wallet_database_url: str = f"postgresql+asyncpg://postgres@127.0.0.1:{DEV_POSTGRES_PORT}/payweave_wallet"
    payments_database_url: str = (
        f"postgresql+asyncpg://postgres@127.0.0.1:{DEV_POSTGRES_PORT}/payweave_payments"
    )
    database_pool_size: int = 10

    temporal_address: str = f"127.0.0.1:{DEV_TEMPORAL_PORT}"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "payweave"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_ui_url: str = f"http://127.0.0.1:{DEV_TEMPORAL_UI_PORT}"
    # Run workflows in Temporal's sandbox (refuses non-deterministic calls; re-imports the workflow's module for
    # every run). On for development and tests; docker-compose.yml turns it off (workers/main.py says why).
    workflow_sandbox: bool = True

    stripe_api_key: SecretStr = SecretStr("sk_test_payweave_localstripe")
    # None → the real Stripe API; the dev stack points this at localstripe.
    stripe_api_base: str | None = f"http://127.0.0.1:{DEV_LOCALSTRIPE_PORT}"
    # Comma-separated: during a secret rotation both the old and the new secret are accepted.
    stripe_webhook_secret: SecretStr = SecretStr("whsec_payweave_dev")

    xendit_secret_key: SecretStr = SecretStr("xnd_development_payweave")
    xendit_api_base: str | None = f"http://127.0.0.1:{DEV_XENDIT_PORT}"
    xendit_callback_token: SecretStr = SecretStr("xendit_callback_dev")

    jwt_secret: SecretStr | None = None
    # Earlier HS256 secrets, comma-separated, still accepted (never used to sign) while their tokens expire.
    jwt_previous_secrets: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str = "payweave"
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = 10

    api_host: str = "127.0.0.1"
    api_port: int = DEV_API_PORT
    public_base_url: str = f"http://127.0.0.1:{DEV_API_PORT}"

    # Where `payweave dev` runs its own parts (used only when the part is not configured explicitly).
    dev_data_dir: Path = DEV_DIR
    dev_postgres_port: int = DEV_POSTGRES_PORT
    dev_temporal_port: int = DEV_TEMPORAL_PORT
    dev_temporal_ui_port: int = DEV_TEMPORAL_UI_PORT
    dev_localstripe_port: int = DEV_LOCALSTRIPE_PORT
    dev_xendit_port: int = DEV_XENDIT_PORT

    # Optional: domain events are also POSTed here, signed with HMAC-SHA256 (header Payweave-Signature).
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None

    deposit_expiry_seconds: int = Field(default=30 * 60, gt=0)
    # The platform's cut of a completed group buy, in basis points (250 = 2.5 %), fixed per session at creation.
    group_buy_fee_bps: int = Field(default=250, ge=0, le=10_000)
    log_level: str = "INFO"
    # json: one JSON object per line (production); console: coloured, readable lines (`payweave dev`).
    log_format: Literal["json", "console"] = "json"

    # Public API rate limits (the `limits` library): "<n>/<second|minute|hour|day>", several joined by ";".
    # An empty value switches that limit off. Webhooks, /healthz, /readyz and /metrics are never limited.
    rate_limit_enabled: bool = True
    rate_limit_user: str = "600/minute"  # per JWT `sub`
    # Per client address (behind a proxy: see FORWARDED_ALLOW_IPS). Higher than per user: a NAT or a
    # merchant's backend speaks for many users from one address.
    rate_limit_ip: str = "6000/minute"
    # memory:// counts per process; redis://… (needs the `redis` package) shares the counts between replicas.
    rate_limit_storage_url: str = "memory://"

    # Temporal Schedules, created or updated at every `payweave worker` start (ARCHITECTURE §5.7).
    schedules_enabled: bool = True
    sweeper_interval_seconds: int = Field(default=60, gt=0)
    # Open payments are looked up at the gateway once past expiry or once this old (0: at once).
    sweeper_min_payment_age_seconds: int = Field(default=60, ge=0)
    sweeper_webhook_min_age_seconds: int = Field(default=10, ge=0)
    sweeper_batch_limit: int = Field(default=100, gt=0)  # rows per category per sweep
    sweeper_concurrency: int = Field(default=8, gt=0)
    reconciliation_interval_seconds: int = Field(default=24 * 3600, gt=0)
    reconciliation_window_hours: int = Field(default=48, gt=0)
    # `payweave worker` serves its Prometheus metrics here: Temporal's SDK metrics and the counters its
    # activities keep (sagas completed, ledger journals, sweeper repairs, reconciliation mismatches).
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    # `payweave dev` only: where its worker serves those metrics (unless PAYWEAVE_WORKER_METRICS_PORT is set).
    dev_worker_metrics_port: int = DEV_WORKER_METRICS_PORT

    # OpenTelemetry tracing (API request → workflow → activities), off by default. The exporter is configured
    # by the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
    # OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...); "console" prints the spans instead (debugging).
    otel_enabled: bool = False
    otel_exporter: Literal["otlp", "console"] = "otlp"

    @field_validator("rate_limit_user", "rate_limit_ip")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # ValueError on a malformed limit: refused at start, not on the first request
        return value.strip()

    def jwt_verification_secrets(self) -> list[str]:
        """The HS256 secrets a token may be signed with: the current one first, then the previous ones."""
        current = [self.jwt_secret.get_secret_value()] if self.jwt_secret else []
        previous = (
            self.jwt_previous_secrets.get_secret_value().split(",") if self.jwt_previous_secrets else []
        )
        return [s for s in (*current, *(p.strip() for p in previous)) if s]

    def stripe_webhook_secrets(self) -> list[str]:
        return [s.strip() for s in self.stripe_webhook_secret.get_secret_value().split(",") if s.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
