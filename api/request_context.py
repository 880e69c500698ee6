"""Request ids and the per-request log line.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token, a new one otherwise. It is
bound to the logging context (every line logged while handling the request carries it), echoed in the
response's ``X-Request-ID`` header and, on a 500, put in the problem body so a caller can quote it.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payweave.logs import begin_request_context, end_request_context
from payweave.metrics import REQUEST_SECONDS

REQUEST_ID_HEADER = "X-Request-ID"
# A caller-chosen id is kept only when it cannot smuggle anything into a log line or a header.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes are logged at debug level: at info they would drown everything else.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = structlog.get_logger("payweave.api.request")


def incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): the endpoint runs in this task, so the context bound here is seen
    by every log line of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        fields = begin_request_context(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error = type(exc).__name__  # the type only: exception text can carry request data
            raise
        finally:
            self._log(scope, status, time.perf_counter() - started, error, fields)
            end_request_context()

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, error: str | None, fields: dict[str, Any]) -> None:
        route = getattr(scope.get("route"), "path", None)
        REQUEST_SECONDS.labels(scope["method"], route or "unmatched", str(status)).observe(seconds)
        extra = {k: v for k, v in fields.items() if k != "request_id"}  # bound in the endpoint's context
        if error:
            extra["error"] = error
        level = "debug" if scope["path"] in _QUIET_PATHS and status < 500 else "info"
        getattr(log, level)(
            "request",
            method=scope["method"],
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 1),
            **extra,
        )
