"""The FastAPI application: ``create_app()`` plus a lifespan owning engines, Temporal client and verifier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from temporalio.client import Client

from api.errors import install_error_handlers
from api.ratelimit import install_rate_limits
from api.request_context import RequestContextMiddleware
from api.routers import (
    checkouts,
    deposits,
    group_buys,
    health,
    notifications,
    products,
    refunds,
    transfers,
    wallets,
    webhooks,
)
from api.security import TokenVerifier
from db.engine import make_engine
from payweave import __version__
from payweave.settings import Settings, get_settings
from payweave.tracing import instrument_app

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def create_app(
    settings: Settings | None = None,
    *,
    temporal: Client | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The app. Tracing (server spans, trace context on to Temporal) is on with ``PAYWEAVE_OTEL_ENABLED``, or
    with an explicit ``tracer_provider``; a ``temporal`` client given here brings its own interceptors."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from workers.client import connect

        app.state.settings = settings
        app.state.verifier = TokenVerifier(settings)
        app.state.wallet_engine = make_engine(
            settings.wallet_database_url, pool_size=settings.database_pool_size
        )
        app.state.payments_engine = make_engine(
            settings.payments_database_url, pool_size=settings.database_pool_size
        )
        app.state.temporal = temporal or await connect(settings, tracer_provider=tracer_provider)
        try:
            yield
        finally:
            await app.state.wallet_engine.dispose()
            await app.state.payments_engine.dispose()

    app = FastAPI(
        title="payweave",
        version=__version__,
        description="Workflow-orchestrated sagas for commerce money movement. Amounts are integers in minor "
        "units. Errors are RFC 9457 problem+json with a stable `code`.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    # Added last = outermost: the request id is bound before the rate limit or anything else runs; the same
    # middleware times every request (payweave_http_request_seconds) and logs it.
    install_rate_limits(app, settings)
    app.add_middleware(RequestContextMiddleware)

    for router in (
        health.router,
        wallets.router,
        deposits.router,
        transfers.router,
        products.router,
        checkouts.router,
        group_buys.router,
        refunds.router,
        notifications.router,
        webhooks.router,
    ):
        app.include_router(router)
    instrument_app(app, settings, tracer_provider)
    return app
