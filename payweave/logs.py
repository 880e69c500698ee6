"""Structured logs (structlog): one JSON object per line in production, readable coloured lines in development.

Every record goes through one handler on the root logger — structlog's and the standard library's alike
(uvicorn, temporalio, payweave modules using ``logging.getLogger``) — so there is one format and one place
where secrets are redacted. Context bound with :func:`bind_context` (request id, saga id, …) is added to
every line logged while that request is handled.

Redaction is a last line of defence, not a licence to log secrets: code never logs a token, key or password
(settings hold them as ``SecretStr``). The handler still replaces every configured secret value, bearer
tokens, JWTs and anything shaped like a Stripe or Xendit key, in the message, the bound fields and tracebacks.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import structlog
from pydantic import SecretStr

from payweave.settings import Settings

REDACTED = "[REDACTED]"
# A secret shorter than this is not looked for verbatim: it would blank out ordinary words.
_MIN_SECRET_LENGTH = 6

_SHAPED_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),  # a JWT (header.payload.signature)
    (re.compile(r"\b(?:sk|rk)_(?:live|test)_\w+"), REDACTED),  # Stripe secret / restricted keys
    (re.compile(r"\bwhsec_\w+"), REDACTED),  # Stripe webhook secrets
    (re.compile(r"\bxnd_(?:development|production)_\w+"), REDACTED),  # Xendit secret keys
    (re.compile(r"(?i)(x-callback-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"), rf"\1{REDACTED}"),
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), rf"\1{REDACTED}@"),  # password in a URL
)


class Redactor:
    """Replaces known secret values and secret-shaped strings in rendered log text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Also as JSON and repr() render them (escaped quotes, backslashes, non-ASCII); longest first, so a
        # secret that contains another is replaced whole.
        spellings = {
            variant
            for s in secrets
            if len(s) >= _MIN_SECRET_LENGTH
            for variant in (s, json.dumps(s)[1:-1], repr(s)[1:-1])
        }
        self._secrets = sorted(spellings, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _SHAPED_SECRETS:
            text = pattern.sub(replacement, text)
        return text


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: ``SecretStr`` fields (each part of a comma-separated rotation list)
    and the passwords inside the database URLs."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            values += [raw, *(part.strip() for part in raw.split(","))]
    for url in (settings.wallet_database_url, settings.payments_database_url):
        password = urlsplit(url).password
        if password:
            values += [password, unquote(password)]
    return [v for v in values if v]


class RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    def __init__(self, *, redactor: Redactor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))


# The fields of the request being handled, shared by reference: what an endpoint binds (a saga id) is seen by
# the request middleware's closing line, although Starlette runs parts of a request in copied contexts.
_request_fields: ContextVar[dict[str, Any] | None] = ContextVar("payweave_request_fields", default=None)


def begin_request_context(**fields: Any) -> dict[str, Any]:
    """Start a request's context (clears what an earlier request on this task bound) and return its fields."""
    structlog.contextvars.clear_contextvars()
    shared = dict(fields)
    _request_fields.set(shared)
    structlog.contextvars.bind_contextvars(**fields)
    return shared


def bind_context(**fields: Any) -> None:
    """Add fields (``saga_id``, ``order_id``, …) to every later log line of the current request or task."""
    shared = _request_fields.get()
    if shared is not None:
        shared.update(fields)
    structlog.contextvars.bind_contextvars(**fields)


def end_request_context() -> None:
    _request_fields.set(None)
    structlog.contextvars.clear_contextvars()


_HANDLER_MARK = "_payweave_handler"


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Route all logging through one redacting structlog handler on the root logger (idempotent: a second
    call replaces the handler the first installed). Returns the handler."""
    stream = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if settings.log_format == "console":
        # Plain tracebacks: the rich ones print local variables, and locals can hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = RedactingFormatter(
        redactor=Redactor(secret_values(settings)),
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler


def unconfigure_logging(handler: logging.Handler) -> None:
    """Remove a handler :func:`configure_logging` installed (tests)."""
    logging.getLogger().removeHandler(handler)
    structlog.reset_defaults()
