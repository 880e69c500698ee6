"""OpenTelemetry tracing: one trace from the API request through the workflow to its activities.

Off by default (``PAYWEAVE_OTEL_ENABLED``); then nothing here is even imported beyond this module, and the
only cost is reading that setting. When on:

* the API's requests get server spans (``opentelemetry-instrumentation-fastapi``; probes and ``/metrics``
  excluded) and the trace context travels on to Temporal;
* every Temporal client (so every worker made from it) carries Temporal's ``TracingInterceptor``: starting,
  signalling, querying and updating a workflow get client spans, and the worker continues the trace in
  ``RunWorkflow:<type>`` / ``StartActivity:<name>`` / ``RunActivity:<name>`` spans, across processes, through
  the Temporal headers;
* spans are exported by OTLP over HTTP, configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
  default ``http://localhost:4318``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ...), or printed
  with ``PAYWEAVE_OTEL_EXPORTER=console``. The service name is ``payweave-api`` / ``payweave-worker`` unless
  ``OTEL_SERVICE_NAME`` says otherwise.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from payweave import __version__
from payweave.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.client import Interceptor

# Never traced: probes and scrapes would drown the traces that matter.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"

_provider: TracerProvider | None = None


def setup_tracing(settings: Settings, service: str) -> TracerProvider | None:
    """The process's tracer provider, made and set as the global one on the first call (whose ``service``
    names the process); None when tracing is off."""
    global _provider
    if not settings.otel_enabled:
        return None
    if _provider is None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        attributes: dict[str, str] = {"service.version": __version__}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = service
        provider = TracerProvider(resource=Resource.create(attributes))
        exporter: SpanExporter
        if settings.otel_exporter == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
    return _provider


def temporal_interceptors(settings: Settings, provider: TracerProvider | None = None) -> list[Interceptor]:
    """The Temporal client's interceptors: the tracing one when tracing is on (or a provider is given)."""
    provider = provider or setup_tracing(settings, "payweave")
    if provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer("payweave.temporal", __version__))]


def instrument_app(app: FastAPI, settings: Settings, provider: TracerProvider | None = None) -> None:
    """Server spans for the API's requests when tracing is on (or a provider is given)."""
    provider = provider or setup_tracing(settings, "payweave-api")
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
    )
