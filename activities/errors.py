"""Turning domain errors into Temporal failures: business outcomes are non-retryable, the rest retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.exceptions import ApplicationError

from activities.gateways.errors import GatewayError
from payweave.errors import PayweaveError


@asynccontextmanager
async def business_errors() -> AsyncIterator[None]:
    try:
        yield
    except PayweaveError as exc:
        raise ApplicationError(exc.detail, type=exc.code, non_retryable=True) from None
    except GatewayError as exc:
        raise exc.to_application_error() from None
