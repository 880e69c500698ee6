"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import PaymentsDB, TemporalDep, WalletDB
from payweave.metrics import refresh_open_holds

router = APIRouter(tags=["health"])
log = logging.getLogger("payweave.api")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
async def metrics(wallets: WalletDB) -> Response:
    """Prometheus exposition format. The open-holds gauges are read from the wallet database first (at most
    every few seconds); when it does not answer, the other metrics are served all the same."""
    try:
        await asyncio.wait_for(refresh_open_holds(wallets), timeout=2)
    except Exception as exc:  # a scrape must not fail because one gauge could not be read
        log.warning("open holds not read for /metrics: %s", type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
async def readyz(wallets: WalletDB, payments: PaymentsDB, temporal: TemporalDep) -> JSONResponse:
    """Ready when both databases answer and Temporal is reachable."""
    checks: dict[str, str] = {}

    async def db(name: str, engine: WalletDB) -> None:
        try:
            async with engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
            checks[name] = "ok"
        except Exception as exc:  # readiness reports, it does not raise
            checks[name] = f"unavailable ({type(exc).__name__})"

    async def temporal_check() -> None:
        try:
            await asyncio.wait_for(temporal.service_client.check_health(), timeout=2)
            checks["temporal"] = "ok"
        except Exception as exc:
            checks["temporal"] = f"unavailable ({type(exc).__name__})"

    await asyncio.gather(db("wallet_db", wallets), db("payments_db", payments), temporal_check())
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
