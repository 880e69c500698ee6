"""payweave's own Xendit emulator: invoices, refunds, callbacks and control endpoints (ARCHITECTURE §7).

``python -m payweave.devstack.xendit_emulator --port P [--host 127.0.0.1] [--callback-url URL]
[--callback-token TOKEN] [--store PATH] [--refund-delay SECONDS]``

It speaks the part of the Xendit API payweave uses, exactly as the official ``xendit-python`` SDK (v7) sends and
parses it (the SDK validates responses strictly: every field its models require is always present)::

    POST /v2/invoices/                 create: external_id, amount, currency, description, invoice_duration, metadata
    GET  /v2/invoices/{id}             one invoice
    GET  /v2/invoices?external_id=…    list, newest first (also ``statuses``, ``limit``: default 10, like Xendit)
    POST /invoices/{id}/expire!        PENDING → EXPIRED
    POST /refunds                      refund a PAID/SETTLED invoice; the ``idempotency-key`` header is honoured
    GET  /refunds/{id}
    GET  /refunds?invoice_id=…         list, newest first

Like Xendit: HTTP Basic auth with the secret key as the user name (any ``xnd_`` key); invoices take no
idempotency header and ``external_id`` is not unique (hence payweave's look-up before create); IDR and VND
amounts are whole numbers, the others have at most two decimals; refunds start PENDING and end SUCCEEDED or
FAILED. Callbacks are POSTed as JSON with the ``x-callback-token`` header: invoice callbacks when an invoice
becomes PAID, SETTLED or EXPIRED, refund callbacks (``refund.succeeded`` / ``refund.failed``) when a refund
ends. A failed delivery is retried a few times; callbacks about one object are delivered in order.

Control endpoints (no auth — the emulator binds loopback only)::

    POST /_control/invoices/{id}/pay       the customer pays → PAID  (optional {"amount", "payment_method",
                                           "payment_channel", "force": true to pay an EXPIRED invoice})
    POST /_control/invoices/{id}/settle    PAID → SETTLED
    POST /_control/invoices/{id}/expire    PENDING → EXPIRED
    POST /_control/invoices/{id}/callback  deliver the invoice's current callback once more (a duplicate)
    POST /_control/refunds/fail-next       the next refund(s) end FAILED  ({"count": 1, "failure_code": …})
    POST /_control/callbacks               {"url", "token"}: where callbacks go; GET shows recent deliveries
    POST /_control/faults                  {"path": glob, "method": …, "mode": "error" | "timeout" | "reset",
                                           "count": 1, "delay": 30}: the next ``count`` matching API requests
                                           do their work, then answer 500 / answer only after ``delay`` seconds
                                           / reset the connection — the unknown outcomes of QUALITY R15
    DELETE /_control/faults                forget all faults
    GET  /_control/health

``GET /web/invoices/{id}`` (the ``invoice_url``) is a tiny checkout page with a Pay button.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import fnmatch
import hashlib
import html
import ipaddress
import json
import logging
import os
import pickle
import secrets
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from payweave.devstack.supervisor import spawn, wait_http, with_project_on_pythonpath

log = logging.getLogger("payweave.xendit_emulator")

# The currencies the SDK's InvoiceCurrency enum knows, with the decimals Xendit accepts for each.
CURRENCY_DECIMALS = {"IDR": 0, "VND": 0, "USD": 2, "PHP": 2, "THB": 2, "MYR": 2}
COUNTRIES = {"IDR": "ID", "VND": "VN", "USD": "ID", "PHP": "PH", "THB": "TH", "MYR": "MY"}
DEFAULT_INVOICE_DURATION = 86_400
MAX_INVOICE_DURATION = 31_536_000
REFUND_REASONS = {"FRAUDULENT", "DUPLICATE", "REQUESTED_BY_CUSTOMER", "CANCELLATION", "OTHERS"}
CALLBACK_ATTEMPTS = 4
CALLBACK_BACKOFF = 0.25  # seconds, doubled after every failed attempt
CALLBACK_TOKEN_ENV = "PAYWEAVE_XENDIT_EMULATOR_CALLBACK_TOKEN"
MAX_IDEMPOTENCY_KEYS = 50_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- the objects ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Invoice:
    id: str
    external_id: str
    user_id: str
    amount: Decimal
    currency: str
    status: str  # PENDING | PAID | SETTLED | EXPIRED
    created: datetime
    updated: datetime
    expiry_date: datetime
    invoice_url: str
    description: str | None = None
    payer_email: str | None = None
    metadata: dict[str, Any] | None = None
    paid_amount: Decimal | None = None
    paid_at: datetime | None = None
    payment_method: str | None = None
    payment_channel: str | None = None


@dataclasses.dataclass
class Refund:
    id: str
    invoice_id: str
    user_id: str
    amount: Decimal
    currency: str
    status: str  # PENDING | SUCCEEDED | FAILED
    reason: str
    created: datetime
    updated: datetime
    reference_id: str | None = None
    metadata: dict[str, Any] | None = None
    failure_code: str | None = None
    fail_with: str | None = None  # decided at creation by /_control/refunds/fail-next


@dataclasses.dataclass
class Recorded:
    """The first answer to an ``idempotency-key``, replayed to every retry with the same body."""

    fingerprint: str
    status: int
    body: bytes


@dataclasses.dataclass
class Fault:
    path: str  # a glob over the request path, e.g. "/v2/invoices/*"
    mode: str  # error | timeout | reset
    remaining: int
    method: str | None = None
    delay: float = 30.0

    def matches(self, request: web.Request) -> bool:
        if self.method is not None and self.method != request.method:
            return False
        return fnmatch.fnmatchcase(request.path, self.path)


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _error(status: int, error_code: str, message: str) -> web.Response:
    # Always JSON: the SDK json-decodes every error body and raises a JSONDecodeError on anything else.
    return web.json_response({"error_code": error_code, "message": message}, status=status)


# -- JSON -----------------------------------------------------------------------------------------------


def _number(value: Decimal) -> int | float:
    """Whole amounts as JSON integers (as Xendit sends them), others as the float the SDK parses anyway."""
    return int(value) if value == value.to_integral_value() else float(value)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as JSON with exact decimals (``parse_float=Decimal``: the SDK sends amounts as floats)."""
    raw = await request.text()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise ApiError(400, "API_VALIDATION_ERROR", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "API_VALIDATION_ERROR", "the request body must be a JSON object")
    return data


def _amount(value: Any, currency: str, field: str = "amount") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ApiError(400, "API_VALIDATION_ERROR", f"{field} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise ApiError(400, "API_VALIDATION_ERROR", f"{field} must be greater than 0")
    decimals = CURRENCY_DECIMALS[currency]
    try:
        exact = amount == amount.quantize(Decimal(1).scaleb(-decimals))
    except InvalidOperation:  # more digits than a Decimal context holds
        exact = False
    if not exact:
        raise ApiError(
            400, "API_VALIDATION_ERROR", f"{field} allows at most {decimals} decimal places for {currency}"
        )
    return amount


def _optional_str(data: dict[str, Any], field: str, max_length: int = 1000) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ApiError(
            400, "API_VALIDATION_ERROR", f"{field} must be a string of at most {max_length} characters"
        )
    return value


def _metadata(data: dict[str, Any]) -> dict[str, Any] | None:
    value = data.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 50:
        raise ApiError(400, "API_VALIDATION_ERROR", "metadata must be an object with at most 50 keys")
    return value


# -- the emulator ---------------------------------------------------------------------------------------


class XenditEmulator:
    def __init__(
        self,
        *,
        callback_url: str | None = None,
        callback_token: str | None = None,
        store_path: Path | None = None,
        refund_delay: float = 0.0,
    ) -> None:
        self.callback_url = callback_url
        self.callback_token = callback_token
        self.store_path = store_path
        self.refund_delay = refund_delay
        self.invoices: dict[str, Invoice] = {}
        self.refunds: dict[str, Refund] = {}
        self.idempotency: collections.OrderedDict[tuple[str, str], Recorded] = collections.OrderedDict()
        self.faults: list[Fault] = []
        self.fail_next_refunds: list[str] = []
        self.deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=500)
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._dump_scheduled = False
        self._load()

    # -- the aiohttp app --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        # Outermost first: a fault applies to whatever the request answered, errors included.
        app = web.Application(middlewares=[self._fault_injection, self._auth, self._errors])
        r = app.router
        for path in ("/v2/invoices", "/v2/invoices/"):
            r.add_post(path, self.create_invoice)
            r.add_get(path, self.list_invoices)
        r.add_get("/v2/invoices/{invoice_id}", self.get_invoice)
        r.add_post("/invoices/{invoice_id}/expire!", self.expire_invoice)
        r.add_post("/refunds", self.create_refund)
        r.add_get("/refunds", self.list_refunds)
        r.add_get("/refunds/{refund_id}", self.get_refund)
        r.add_get("/web/invoices/{invoice_id}", self.invoice_page)
        r.add_get("/_control/health", self.health)
        r.add_post("/_control/invoices/{invoice_id}/pay", self.control_pay)
        r.add_post("/_control/invoices/{invoice_id}/settle", self.control_settle)
        r.add_post("/_control/invoices/{invoice_id}/expire", self.control_expire)
        r.add_post("/_control/invoices/{invoice_id}/callback", self.control_resend_callback)
        r.add_post("/_control/refunds/fail-next", self.control_fail_next_refund)
        r.add_post("/_control/callbacks", self.control_configure_callbacks)
        r.add_get("/_control/callbacks", self.control_deliveries)
        r.add_post("/_control/faults", self.control_add_fault)
        r.add_get("/_control/faults", self.control_list_faults)
        r.add_delete("/_control/faults", self.control_clear_faults)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._expiry_task = asyncio.create_task(self._expire_due_invoices())
        for refund in self.refunds.values():  # refunds left PENDING by a previous run end now
            if refund.status == "PENDING":
                self._schedule_refund_completion(refund.id)

    async def _cleanup(self, _: web.Application) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for task in list(self._chains.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
        self._dump()

    # -- middlewares ------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.error_code, exc.message)
        except web.HTTPException as exc:  # unknown route, wrong method: still a JSON body
            if exc.status < 400:
                raise
            code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status, "REQUEST_ERROR")
            return _error(exc.status, code, exc.reason)

    @web.middleware
    async def _fault_injection(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = None if request.path.startswith("/_control/") else self._take_fault(request)
        response = await handler(request)  # the work is done either way: the outcome is what gets lost
        if fault is None:
            return response
        log.info("injected fault %s on %s %s", fault.mode, request.method, request.path)
        if fault.mode == "error":
            return _error(500, "SERVER_ERROR", "injected fault: the request was processed, the answer lost")
        if fault.mode == "timeout":
            await asyncio.sleep(fault.delay)
            return response
        _reset_connection(request)
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.matches(request):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/_control/", "/web/")):
            return await handler(request)
        key = _secret_key(request.headers.get("Authorization", ""))
        if key is None:
            return _error(401, "INVALID_API_KEY", "API key is invalid or missing")
        request["user_id"] = hashlib.sha256(key.encode()).hexdigest()[:24]
        request["api_key"] = key
        return await handler(request)

    # -- invoices ---------------------------------------------------------------------------------------

    async def create_invoice(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        external_id = data.get("external_id")
        if not isinstance(external_id, str) or not external_id or len(external_id) > 1000:
            raise ApiError(400, "API_VALIDATION_ERROR", "external_id is required (1 to 1000 characters)")
        currency = data.get("currency") or "IDR"
        if currency not in CURRENCY_DECIMALS:
            raise ApiError(400, "UNSUPPORTED_CURRENCY", f"currency {currency!r} is not supported")
        amount = _amount(data.get("amount"), currency)
        duration = data.get("invoice_duration", DEFAULT_INVOICE_DURATION)
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | Decimal)
            or not 1 <= duration <= MAX_INVOICE_DURATION
        ):
            raise ApiError(
                400, "API_VALIDATION_ERROR", f"invoice_duration must be between 1 and {MAX_INVOICE_DURATION}"
            )
        now = self._creation_time()
        invoice_id = secrets.token_hex(12)
        invoice = Invoice(
            id=invoice_id,
            external_id=external_id,
            user_id=request["user_id"],
            amount=amount,
            currency=currency,
            status="PENDING",
            created=now,
            updated=now,
            expiry_date=now + timedelta(seconds=float(duration)),
            invoice_url=f"{request.scheme}://{request.host}/web/invoices/{invoice_id}",
            description=_optional_str(data, "description"),
            payer_email=_optional_str(data, "payer_email", 255),
            metadata=_metadata(data),
        )
        self.invoices[invoice.id] = invoice
        self._changed()
        return web.json_response(self._invoice_json(invoice))

    async def get_invoice(self, request: web.Request) -> web.Response:
        return web.json_response(self._invoice_json(self._invoice(request)))

    async def list_invoices(self, request: web.Request) -> web.Response:
        external_id = request.query.get("external_id")
        statuses = set(request.query.getall("statuses", []))
        try:
            limit = int(float(request.query.get("limit", "10")))
        except ValueError:
            raise ApiError(400, "API_VALIDATION_ERROR", "limit must be a number") from None
        if not 1 <= limit <= 100:
            raise ApiError(400, "API_VALIDATION_ERROR", "limit must be between 1 and 100")
        found = [
            inv
            for inv in self.invoices.values()
            if (external_id is None or inv.external_id == external_id)
            and (not statuses or inv.status in statuses)
        ]
        found.sort(key=lambda inv: (inv.created, inv.id), reverse=True)  # newest first, like Xendit
        return web.json_response([self._invoice_json(inv) for inv in found[:limit]])

    async def expire_invoice(self, request: web.Request) -> web.Response:
        invoice = self._invoice(request)
        if invoice.status in ("PAID", "SETTLED"):
            # Xendit's expire endpoint only knows unpaid invoices.
            raise ApiError(404, "INVOICE_NOT_FOUND_ERROR", f"no unpaid invoice with id {invoice.id}")
        self._set_expired(invoice)
        return web.json_response(self._invoice_json(invoice))

    def _creation_time(self) -> datetime:
        """Now, but later than every invoice so far at the millisecond resolution the API shows: the oldest
        invoice for an external_id must be the same for every client that lists them."""
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        latest = max((inv.created for inv in self.invoices.values()), default=None)
        if latest is not None and now <= latest:
            now = latest + timedelta(milliseconds=1)
        return now

    def _invoice(self, request: web.Request) -> Invoice:
        invoice = self.invoices.get(request.match_info["invoice_id"])
        if invoice is None:
            raise ApiError(404, "INVOICE_NOT_FOUND_ERROR", "Invoice not found")
        if invoice.status == "PENDING" and invoice.expiry_date <= datetime.now(UTC):
            self._set_expired(invoice)
        return invoice

    def _set_expired(self, invoice: Invoice) -> None:
        if invoice.status != "PENDING":
            return
        invoice.status = "EXPIRED"
        invoice.updated = datetime.now(UTC)
        self._changed()
        self._send_callback(invoice.id, self._invoice_callback(invoice))

    async def _expire_due_invoices(self) -> None:
        while True:
            now = datetime.now(UTC)
            for invoice in list(self.invoices.values()):
                if invoice.status == "PENDING" and invoice.expiry_date <= now:
                    self._set_expired(invoice)
            await asyncio.sleep(0.5)

    def _invoice_json(self, invoice: Invoice) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": invoice.id,
            "external_id": invoice.external_id,
            "user_id": invoice.user_id,
            "status": invoice.status,
            "merchant_name": "payweave (Xendit emulator)",
            "merchant_profile_picture_url": "https://du8nwjtfkinx.cloudfront.net/xendit.png",
            "amount": invoice.amount,
            "description": invoice.description,
            "expiry_date": invoice.expiry_date,
            "invoice_url": invoice.invoice_url,
            "available_banks": [],
            "available_retail_outlets": [],
            "available_ewallets": [],
            "available_qr_codes": [],
            "available_direct_debits": [],
            "available_paylaters": [],
            "should_exclude_credit_card": False,
            "should_send_email": False,
            "created": invoice.created,
            "updated": invoice.updated,
            "currency": invoice.currency,
        }
        if invoice.payer_email is not None:
            data["payer_email"] = invoice.payer_email
        if invoice.metadata is not None:
            data["metadata"] = invoice.metadata
        if invoice.paid_amount is not None:
            data.update(
                paid_amount=invoice.paid_amount,
                paid_at=invoice.paid_at,
                payment_method=invoice.payment_method,
                payment_channel=invoice.payment_channel,
            )
        return _jsonable(data)  # type: ignore[no-any-return]

    def _invoice_callback(self, invoice: Invoice) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": invoice.id,
            "external_id": invoice.external_id,
            "user_id": invoice.user_id,
            "is_high": False,
            "status": invoice.status,
            "merchant_name": "payweave (Xendit emulator)",
            "amount": invoice.amount,
            "description": invoice.description,
            "created": invoice.created,
            "updated": invoice.updated,
            "currency": invoice.currency,
        }
        if invoice.payer_email is not None:
            data["payer_email"] = invoice.payer_email
        if invoice.metadata is not None:
            data["metadata"] = invoice.metadata
        if invoice.paid_amount is not None:
            data.update(
                paid_amount=invoice.paid_amount,
                adjusted_received_amount=invoice.paid_amount,
                fees_paid_amount=0,
                paid_at=invoice.paid_at,
                payment_method=invoice.payment_method,
                payment_channel=invoice.payment_channel,
                bank_code=invoice.payment_channel if invoice.payment_method == "BANK_TRANSFER" else None,
            )
        return _jsonable(data)  # type: ignore[no-any-return]

    # -- refunds ----------------------------------------------------------------------------------------

    async def create_refund(self, request: web.Request) -> web.Response:
        data = await _json_body(request)  # the only await: what follows runs without interleaving
        key = request.headers.get("idempotency-key")
        scope = (str(request["api_key"]), key) if key else None
        fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        if scope is not None and (previous := self.idempotency.get(scope)) is not None:
            if previous.fingerprint != fingerprint:
                raise ApiError(
                    409, "IDEMPOTENCY_ERROR", "this idempotency-key was used with a different request"
                )
            return web.Response(status=previous.status, body=previous.body, content_type="application/json")
        refund = self._new_refund(request, data)
        body = json.dumps(self._refund_json(refund)).encode()
        if scope is not None:
            self.idempotency[scope] = Recorded(fingerprint, 200, body)
            while len(self.idempotency) > MAX_IDEMPOTENCY_KEYS:
                self.idempotency.popitem(last=False)
        self._changed()
        self._schedule_refund_completion(refund.id)
        return web.Response(status=200, body=body, content_type="application/json")

    def _new_refund(self, request: web.Request, data: dict[str, Any]) -> Refund:
        if data.get("payment_request_id") is not None:
            raise ApiError(400, "REFUND_NOT_SUPPORTED", "the emulator refunds invoices only")
        invoice_id = data.get("invoice_id")
        if not isinstance(invoice_id, str) or invoice_id not in self.invoices:
            raise ApiError(404, "DATA_NOT_FOUND", "the invoice to refund was not found")
        invoice = self.invoices[invoice_id]
        if invoice.status not in ("PAID", "SETTLED") or invoice.paid_amount is None:
            raise ApiError(400, "INELIGIBLE_TRANSACTION", f"invoice {invoice_id} is {invoice.status}")
        currency = data.get("currency") or invoice.currency
        if currency != invoice.currency:
            raise ApiError(400, "API_VALIDATION_ERROR", f"the invoice was paid in {invoice.currency}")
        refunded = sum(
            (r.amount for r in self.refunds.values() if r.invoice_id == invoice_id and r.status != "FAILED"),
            Decimal(0),
        )
        remaining = invoice.paid_amount - refunded
        amount = _amount(data["amount"], currency) if data.get("amount") is not None else remaining
        if amount > remaining or remaining <= 0:
            raise ApiError(
                400,
                "MAXIMUM_REFUND_AMOUNT_REACHED",
                f"at most {_number(remaining)} {currency} can be refunded",
            )
        reason = data.get("reason") or "OTHERS"
        if reason not in REFUND_REASONS:
            raise ApiError(400, "API_VALIDATION_ERROR", f"reason must be one of {sorted(REFUND_REASONS)}")
        now = datetime.now(UTC)
        refund = Refund(
            id=f"rfd-{secrets.token_hex(16)}",
            invoice_id=invoice_id,
            user_id=request["user_id"],
            amount=amount,
            currency=currency,
            status="PENDING",
            reason=reason,
            created=now,
            updated=now,
            reference_id=_optional_str(data, "reference_id", 255),
            metadata=_metadata(data),
            fail_with=self.fail_next_refunds.pop(0) if self.fail_next_refunds else None,
        )
        self.refunds[refund.id] = refund
        return refund

    async def get_refund(self, request: web.Request) -> web.Response:
        refund = self.refunds.get(request.match_info["refund_id"])
        if refund is None:
            raise ApiError(404, "DATA_NOT_FOUND", "Refund not found")
        return web.json_response(self._refund_json(refund))

    async def list_refunds(self, request: web.Request) -> web.Response:
        invoice_id = request.query.get("invoice_id")
        found = [r for r in self.refunds.values() if invoice_id is None or r.invoice_id == invoice_id]
        found.sort(key=lambda r: (r.created, r.id), reverse=True)
        return web.json_response({"data": [self._refund_json(r) for r in found], "has_more": False})

    def _schedule_refund_completion(self, refund_id: str) -> None:
        asyncio.get_running_loop().call_later(self.refund_delay, self._complete_refund, refund_id)

    def _complete_refund(self, refund_id: str) -> None:
        refund = self.refunds.get(refund_id)
        if refund is None or refund.status != "PENDING":
            return
        refund.status = "FAILED" if refund.fail_with else "SUCCEEDED"
        refund.failure_code = refund.fail_with
        refund.updated = datetime.now(UTC)
        self._changed()
        self._send_callback(
            refund.id,
            {
                "event": f"refund.{refund.status.lower()}",
                "business_id": refund.user_id,
                "created": _timestamp(refund.updated),
                "data": self._refund_json(refund),
            },
        )

    def _refund_json(self, refund: Refund) -> dict[str, Any]:
        invoice = self.invoices.get(refund.invoice_id)
        return _jsonable(  # type: ignore[no-any-return]
            {
                "id": refund.id,
                "payment_id": refund.invoice_id,
                "payment_request_id": None,
                "invoice_id": refund.invoice_id,
                "amount": refund.amount,
                "payment_method_type": "BANK_TRANSFER",
                "channel_code": (invoice.payment_channel if invoice else None) or "BCA",
                "country": COUNTRIES[refund.currency],
                "currency": refund.currency,
                "reference_id": refund.reference_id,
                "reason": refund.reason,
                "status": refund.status,
                "failure_code": refund.failure_code,
                "refund_fee_amount": 0,
                "created": refund.created,
                "updated": refund.updated,
                "metadata": refund.metadata,
            }
        )

    # -- callbacks --------------------------------------------------------------------------------------

    def _send_callback(self, object_id: str, payload: dict[str, Any]) -> None:
        """Deliver in the background; callbacks about one object go out in order, one after the other."""
        previous = self._chains.get(object_id)
        task = asyncio.get_running_loop().create_task(self._deliver(previous, object_id, payload))
        self._chains[object_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(object_id) is done:
                del self._chains[object_id]

        task.add_done_callback(forget)

    async def _deliver(
        self, previous: asyncio.Task[None] | None, object_id: str, payload: dict[str, Any]
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        body = json.dumps(payload).encode()
        event = payload.get("event") or f"invoice.{str(payload.get('status', '')).lower()}"
        delay = CALLBACK_BACKOFF
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            url, token = self.callback_url, self.callback_token  # read now: it may have been reconfigured
            record: dict[str, Any] = {
                "object_id": object_id,
                "event": event,
                "attempt": attempt,
                "url": url,
                "at": _timestamp(datetime.now(UTC)),
            }
            if not url or self._session is None:
                self.deliveries.append({**record, "http_status": None, "error": "no callback URL configured"})
                return
            headers = {"Content-Type": "application/json", "x-callback-token": token or ""}
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    record["http_status"] = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                record.update(http_status=None, error=type(exc).__name__)
            self.deliveries.append(record)
            if 200 <= (record.get("http_status") or 0) < 300:
                return
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "callback %s about %s not delivered after %d attempts", event, object_id, CALLBACK_ATTEMPTS
        )

    # -- control endpoints ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "invoices": len(self.invoices), "refunds": len(self.refunds)})

    async def control_pay(self, request: web.Request) -> web.StreamResponse:
        form = request.content_type == "application/x-www-form-urlencoded"  # the checkout page's button
        data = {} if form else await _json_body(request)
        invoice = self._invoice(request)
        if invoice.status in ("PAID", "SETTLED"):
            raise ApiError(409, "INVOICE_ALREADY_PAID", f"invoice {invoice.id} is {invoice.status}")
        if invoice.status == "EXPIRED" and not data.get("force"):
            raise ApiError(409, "INVOICE_EXPIRED", f"invoice {invoice.id} expired (pass force to pay anyway)")
        amount = invoice.amount
        if data.get("amount") is not None:
            amount = _amount(data["amount"], invoice.currency)
        now = datetime.now(UTC)
        invoice.status = "PAID"
        invoice.paid_amount = amount
        invoice.paid_at = now
        invoice.updated = now
        invoice.payment_method = str(data.get("payment_method") or "BANK_TRANSFER")
        invoice.payment_channel = str(data.get("payment_channel") or "BCA")
        self._changed()
        self._send_callback(invoice.id, self._invoice_callback(invoice))
        if form:
            raise web.HTTPSeeOther(f"/web/invoices/{invoice.id}")
        return web.json_response(self._invoice_json(invoice))

    async def control_settle(self, request: web.Request) -> web.Response:
        invoice = self._invoice(request)
        if invoice.status != "PAID":
            raise ApiError(409, "INVALID_STATUS", f"invoice {invoice.id} is {invoice.status}, not PAID")
        invoice.status = "SETTLED"
        invoice.updated = datetime.now(UTC)
        self._changed()
        self._send_callback(invoice.id, self._invoice_callback(invoice))
        return web.json_response(self._invoice_json(invoice))

    async def control_expire(self, request: web.Request) -> web.Response:
        invoice = self._invoice(request)
        if invoice.status in ("PAID", "SETTLED"):
            raise ApiError(409, "INVOICE_ALREADY_PAID", f"invoice {invoice.id} is {invoice.status}")
        self._set_expired(invoice)
        return web.json_response(self._invoice_json(invoice))

    async def control_resend_callback(self, request: web.Request) -> web.Response:
        invoice = self._invoice(request)
        self._send_callback(invoice.id, self._invoice_callback(invoice))
        return web.json_response({"sent": invoice.status})

    async def control_fail_next_refund(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        count = data.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ApiError(400, "API_VALIDATION_ERROR", "count must be a positive integer")
        self.fail_next_refunds += [str(data.get("failure_code") or "INSUFFICIENT_BALANCE")] * count
        return web.json_response({"fail_next": len(self.fail_next_refunds)})

    async def control_configure_callbacks(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        url, token = data.get("url"), data.get("token")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(400, "API_VALIDATION_ERROR", "url must be an http(s) URL")
        if token is not None and not isinstance(token, str):
            raise ApiError(400, "API_VALIDATION_ERROR", "token must be a string")
        self.callback_url = url
        if token is not None:
            self.callback_token = token
        return web.json_response({"url": url})

    async def control_deliveries(self, request: web.Request) -> web.Response:
        return web.json_response({"url": self.callback_url, "deliveries": list(self.deliveries)})

    async def control_add_fault(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        path, mode = data.get("path"), data.get("mode", "error")
        count, delay, method = data.get("count", 1), data.get("delay", 30), data.get("method")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ApiError(400, "API_VALIDATION_ERROR", "path must be a glob starting with /")
        if mode not in ("error", "timeout", "reset"):
            raise ApiError(400, "API_VALIDATION_ERROR", "mode must be error, timeout or reset")
        if not isinstance(count, int) or count < 1:
            raise ApiError(400, "API_VALIDATION_ERROR", "count must be a positive integer")
        if isinstance(delay, bool) or not isinstance(delay, int | Decimal) or delay < 0:
            raise ApiError(400, "API_VALIDATION_ERROR", "delay must be a number of seconds")
        if method is not None and not isinstance(method, str):
            raise ApiError(400, "API_VALIDATION_ERROR", "method must be a string")
        fault = Fault(path, mode, count, method.upper() if method else None, float(delay))
        self.faults.append(fault)
        return web.json_response(dataclasses.asdict(fault))

    async def control_list_faults(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(f) for f in self.faults])

    async def control_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response([])

    async def invoice_page(self, request: web.Request) -> web.Response:
        invoice = self._invoice(request)
        amount = f"{_number(invoice.amount)} {invoice.currency}"
        button = (
            f'<form method="post" action="/_control/invoices/{html.escape(invoice.id)}/pay">'
            '<button type="submit">Pay</button></form>'
            if invoice.status == "PENDING"
            else ""
        )
        page = (
            "<!doctype html><title>Xendit emulator invoice</title>"
            f"<h1>{html.escape(amount)}</h1><p>{html.escape(invoice.description or '')}</p>"
            f"<p>Status: <b>{html.escape(invoice.status)}</b></p>{button}"
        )
        return web.Response(text=page, content_type="text/html")

    # -- persistence ------------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.store_path is None or self._dump_scheduled:
            return
        self._dump_scheduled = True
        asyncio.get_running_loop().call_soon(self._dump)  # one write per burst of changes

    def _dump(self) -> None:
        self._dump_scheduled = False
        if self.store_path is None:
            return
        state = {
            "invoices": [dataclasses.asdict(i) for i in self.invoices.values()],
            "refunds": [dataclasses.asdict(r) for r in self.refunds.values()],
            "idempotency": [(k, dataclasses.asdict(v)) for k, v in self.idempotency.items()],
        }
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store_path.with_name(self.store_path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)  # builtins, Decimal, datetime only
        os.replace(tmp, self.store_path)  # never a truncated store after a crash

    def _load(self) -> None:
        if self.store_path is None:
            return
        try:
            with open(self.store_path, "rb") as f:
                state = pickle.load(f)
            self.invoices = {d["id"]: Invoice(**d) for d in state["invoices"]}
            self.refunds = {d["id"]: Refund(**d) for d in state["refunds"]}
            self.idempotency = collections.OrderedDict(
                (tuple(k), Recorded(**v)) for k, v in state["idempotency"]
            )
        except FileNotFoundError:
            return
        except Exception as exc:  # written by an incompatible version, say
            log.warning("ignoring unreadable store %s: %s", self.store_path, exc)


def _secret_key(header: str) -> str | None:
    """The secret key from ``Authorization: Basic base64(key + ":")`` if it looks like a Xendit key."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if user.startswith("xnd_") and len(user) > 4 else None


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP reset, before any byte of the answer is sent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8421)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--callback-url", default=None, help="where invoice and refund callbacks go")
    parser.add_argument(
        "--callback-token",
        default=os.environ.get(CALLBACK_TOKEN_ENV),
        help=f"the x-callback-token value (default: ${CALLBACK_TOKEN_ENV})",
    )
    parser.add_argument("--store", type=Path, default=None, help="pickle file; omitted: keep nothing")
    parser.add_argument("--refund-delay", type=float, default=0.0, help="seconds a refund stays PENDING")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host):
        parser.error(
            f"--host must be a loopback address, not {args.host!r}: the control endpoints have no auth"
        )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    emulator = XenditEmulator(
        callback_url=args.callback_url,
        callback_token=args.callback_token,
        store_path=args.store,
        refund_delay=args.refund_delay,
    )
    # shutdown_timeout: don't wait for "timeout" faults or callback retries still sleeping.
    web.run_app(emulator.app(), host=args.host, port=args.port, shutdown_timeout=2, print=None)


# -- helpers for the parent process ---------------------------------------------------------------------


def xendit_emulator_argv(
    port: int,
    *,
    host: str = "127.0.0.1",
    callback_url: str | None = None,
    store: Path | None = None,
    refund_delay: float | None = None,
) -> list[str]:
    argv = [sys.executable, "-m", "payweave.devstack.xendit_emulator", "--port", str(port), "--host", host]
    if callback_url is not None:
        argv += ["--callback-url", callback_url]
    if store is not None:
        argv += ["--store", str(Path(store).absolute())]
    if refund_delay is not None:
        argv += ["--refund-delay", str(refund_delay)]
    return argv


def xendit_emulator_env(callback_token: str | None) -> dict[str, str]:
    """The child's environment; the token travels there, not on the command line (``ps`` shows that)."""
    env = with_project_on_pythonpath()
    if callback_token is not None:
        env[CALLBACK_TOKEN_ENV] = callback_token
    return env


def start_xendit_emulator_process(
    port: int,
    callback_url: str | None,
    callback_token: str | None,
    log_path: Path | None = None,
    store: Path | None = None,
    *,
    host: str = "127.0.0.1",
    refund_delay: float | None = None,
    wait: float | None = 30.0,
) -> subprocess.Popen[bytes]:
    """Start an emulator child (dies with us) and, unless ``wait`` is None, wait until it answers.

    Stop it with ``payweave.devstack.supervisor.terminate(process)``.
    """
    process = spawn(
        xendit_emulator_argv(
            port, host=host, callback_url=callback_url, store=store, refund_delay=refund_delay
        ),
        env=xendit_emulator_env(callback_token),
        log_path=log_path,
    )
    if wait is not None:
        try:
            wait_until_up(f"http://{host}:{port}", wait, process=process)
        except BaseException:
            process.kill()
            process.wait()
            raise
    return process


def wait_until_up(
    base_url: str, timeout: float = 30.0, *, process: subprocess.Popen[bytes] | None = None
) -> None:
    def check() -> None:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Xendit emulator exited with code {process.returncode}")

    wait_http(base_url.rstrip("/") + "/_control/health", timeout, check=check)


def configure_callbacks(base_url: str, url: str, token: str | None = None) -> None:
    """Point the emulator's callbacks at ``url`` (with ``token`` as ``x-callback-token``)."""
    body = json.dumps({"url": url, **({"token": token} if token is not None else {})}).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/_control/callbacks",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(
                f"the Xendit emulator refused the callback configuration: HTTP {response.status}"
            )


if __name__ == "__main__":
    main()
