"""The one place the Temporal client is made: data converter (pydantic), TLS / API key for Temporal Cloud, the
process's runtime (Temporal's SDK metrics served with payweave's, `payweave/telemetry.py`) and, when tracing is
on, the OpenTelemetry interceptor (`payweave/tracing.py`; a worker made from this client inherits it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from payweave.settings import Settings
from payweave.telemetry import temporal_runtime
from payweave.tracing import temporal_interceptors

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


async def connect(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        tls=settings.temporal_tls or bool(api_key),
        api_key=api_key,
        runtime=temporal_runtime(),
        interceptors=temporal_interceptors(settings, tracer_provider),
    )
