"""Rate limits on the public API (the ``limits`` library), per client address and per user.

* Per address: checked by a middleware before anything else runs (so a flood of bad tokens is cut off early).
* Per user: checked right after the bearer token is verified (``api.deps.get_current_user``), keyed by the
  token's ``sub`` — never by an unverified claim, or anyone could spend someone else's allowance.

Over a limit → ``429`` problem+json, code ``rate_limited``, with ``Retry-After`` (seconds until the window
lets the next request through). Gateway webhooks (``/v1/webhooks/*``: they are size-capped and
signature-checked instead, and a gateway that gets 429s only redelivers later), ``/healthz``, ``/readyz`` and
``/metrics`` are never limited. Moving windows: no more than N requests in any window of the given length.
"""

from __future__ import annotations

import math
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem
from payweave.errors import PayweaveError
from payweave.metrics import RATE_LIMITED
from payweave.settings import Settings

EXEMPT_PREFIXES = ("/v1/webhooks/",)
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RateLimited(PayweaveError):
    code, status, title = "rate_limited", 429, "Too many requests"

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(f"rate limit per {scope} exceeded; retry in {retry_after} s")
        self.retry_after = retry_after


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self._per_user = parse_many(settings.rate_limit_user) if settings.rate_limit_user else []
        self._per_ip = parse_many(settings.rate_limit_ip) if settings.rate_limit_ip else []
        self._limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage_url))

    def _hit(self, items: list[RateLimitItem], scope: str, key: str) -> None:
        if not self.enabled:
            return
        # Test every limit before counting, so a request refused by one limit is not counted by the others.
        for item in items:
            if not self._limiter.test(item, scope, key):
                reset_at = self._limiter.get_window_stats(item, scope, key).reset_time
                RATE_LIMITED.labels(scope).inc()
                raise RateLimited(max(1, math.ceil(reset_at - time.time())), scope)
        for item in items:
            self._limiter.hit(item, scope, key)

    def check_user(self, sub: str) -> None:
        self._hit(self._per_user, "user", sub)

    def check_ip(self, address: str) -> None:
        self._hit(self._per_ip, "ip", address)


def too_many_requests(exc: RateLimited) -> JSONResponse:
    response = problem(exc.status, exc.code, exc.title, exc.detail, retry_after=exc.retry_after)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


class IPRateLimitMiddleware:
    """Per-address limit. The address is the ASGI client: behind a reverse proxy, let uvicorn take it from
    ``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS=<proxy address>``), or every caller shares the proxy's."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limiter.enabled and not is_exempt(scope["path"]):
            client = scope.get("client")
            try:
                self.limiter.check_ip(client[0] if client else "unknown")
            except RateLimited as exc:
                await too_many_requests(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    limiter = RateLimiter(settings)
    app.state.rate_limiter = limiter
    app.add_middleware(IPRateLimitMiddleware, limiter=limiter)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        return too_many_requests(exc)
