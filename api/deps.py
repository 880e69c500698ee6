"""Dependencies: the lifespan owns one engine per database, the Temporal client and the token verifier."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.security import Principal, TokenVerifier
from payweave.errors import ValidationFailed
from payweave.settings import Settings


def _state(request: Request) -> Any:
    return request.app.state


# The dependencies are ``async def`` although none of them waits: FastAPI runs a plain ``def`` dependency in
# its thread pool, a thread hand-off per dependency per request for work that takes microseconds.
async def get_settings_dep(request: Request) -> Settings:
    return _state(request).settings  # type: ignore[no-any-return]


async def get_wallet_engine(request: Request) -> AsyncEngine:
    return _state(request).wallet_engine  # type: ignore[no-any-return]


async def get_payments_engine(request: Request) -> AsyncEngine:
    return _state(request).payments_engine  # type: ignore[no-any-return]


async def get_temporal(request: Request) -> Client:
    return _state(request).temporal  # type: ignore[no-any-return]


async def get_current_user(
    request: Request, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Principal:
    verifier: TokenVerifier = _state(request).verifier
    principal = verifier.verify(authorization)
    limiter = getattr(_state(request), "rate_limiter", None)
    if limiter is not None:
        limiter.check_user(principal.sub)  # keyed by the verified `sub` only (api/ratelimit.py)
    return principal


async def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Required on money-moving POSTs (≤ 255 chars)"),
    ] = None,
) -> str:
    if not idempotency_key or not idempotency_key.strip():
        raise ValidationFailed("the Idempotency-Key header is required for this request")
    if len(idempotency_key) > 255 or not (idempotency_key.isascii() and idempotency_key.isprintable()):
        raise ValidationFailed("the Idempotency-Key header must be at most 255 printable ASCII characters")
    return idempotency_key


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
WalletDB = Annotated[AsyncEngine, Depends(get_wallet_engine)]
PaymentsDB = Annotated[AsyncEngine, Depends(get_payments_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
CurrentUser = Annotated[Principal, Depends(get_current_user)]
IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]


def request_hash(scope: str, body: BaseModel) -> str:
    """Hash of what was asked, to tell a retry (same body) from a reused key (different body)."""
    canonical = json.dumps({"scope": scope, "body": body.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
