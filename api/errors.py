"""RFC 9457 problem+json for every error, with a stable ``code``. Never a bare 500 with a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from payweave.errors import PayweaveError

log = logging.getLogger("payweave.api")
PROBLEM_BASE = "https://payweave.dev/problems/"

_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem(status: int, code: str, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def _validation_code(errors: list[dict[str, Any]]) -> str:
    for err in errors:
        if "invalid_amount" in str(err.get("msg", "")):
            return "invalid_amount"
    return "validation_error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PayweaveError)
    async def domain_error(request: Request, exc: PayweaveError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.title, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        code = _validation_code(errors)
        title = "Invalid amount" if code == "invalid_amount" else "Validation error"
        return problem(422, code, title, "the request does not match the schema", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(
            exc.status_code, "validation_error" if exc.status_code < 500 else "internal_error"
        )
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its type only: exception text can carry request data or secrets. The request id (bound to
        # the log line by api/request_context.py) lets the caller point at that line.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        request_id = getattr(request.state, "request_id", None)
        response = problem(
            500,
            "internal_error",
            "Internal error",
            "something went wrong; it has been logged",
            request_id=request_id,
        )
        if request_id:
            response.headers["X-Request-ID"] = request_id
        return response
