"""Xendit adapter on the official ``xendit-python`` SDK (v7; synchronous → run in a thread).

Invoices take no idempotency header, so the step key is the invoice's ``external_id`` and every create first
looks the key up (ARCHITECTURE §4, QUALITY R3): a retry after a crash, a timeout or a 500 that happened after
Xendit made the invoice finds that invoice instead of making a second one. Refunds send the step key as the
``idempotency-key`` header. Amounts are integers in minor units everywhere but at the SDK call, where the SDK
insists on a float of major units (it refuses ints and Decimals).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import urllib3
import xendit
from xendit.apis import InvoiceApi, RefundApi
from xendit.invoice.model.create_invoice_request import CreateInvoiceRequest
from xendit.refund.model.create_refund import CreateRefund

from activities.gateways import errors
from payweave.contracts.activities import GatewayPayment, GatewayRefund
from payweave.money import from_major_units, to_major_units

T = TypeVar("T")

# What Xendit invoices accept (the SDK's InvoiceCurrency enum), with the decimals Xendit allows: whole rupiah
# and dong, cents elsewhere.
SUPPORTED_CURRENCIES = {"IDR": 0, "VND": 0, "USD": 2, "PHP": 2, "THB": 2, "MYR": 2}
# How long a payer may take. The workflows expire invoices themselves at their own deadline; this is the
# backstop for an invoice whose workflow is gone.
DEFAULT_INVOICE_DURATION_SECONDS = 24 * 3600
# Xendit's list endpoint answers 10 invoices by default; one external_id should only ever have one.
LOOKUP_LIMIT = 100

_INVOICE_STATES = {
    "PENDING": "requires_action",
    "PAID": "succeeded",
    "SETTLED": "succeeded",
    "EXPIRED": "expired",
}
_REFUND_STATES = {"PENDING": "pending", "SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "failed"}


def _field(obj: Any, name: str) -> Any:
    """A model attribute or additional property (the SDK keeps unknown response fields), None if absent."""
    value = obj.get(name) if hasattr(obj, "get") else getattr(obj, name, None)
    return getattr(value, "value", value)  # enum models (InvoiceStatus, InvoiceCurrency) → their string


def _minor(value: Any, currency: str) -> int:
    # repr of a float is its shortest round-tripping decimal: 1050.5 → "1050.5", never 1050.4999…
    return from_major_units(Decimal(repr(float(value))), currency)


def _normalise(invoice: Any) -> GatewayPayment:
    currency = str(_field(invoice, "currency"))
    state = _INVOICE_STATES.get(str(_field(invoice, "status")), "processing")  # an unknown status: look again
    next_action = None
    if state == "requires_action":
        next_action = {
            "type": "xendit_invoice",
            "invoice_url": _field(invoice, "invoice_url"),
            "invoice_id": _field(invoice, "id"),
        }
    return GatewayPayment(
        gateway="xendit",
        id=str(_field(invoice, "id")),
        status=state,
        amount=_minor(_field(invoice, "amount"), currency),
        currency=currency,
        next_action=next_action,
        failure_code="expired" if state == "expired" else None,
    )


def _normalise_refund(refund: Any, gateway_payment_id: str | None = None) -> GatewayRefund:
    currency = str(_field(refund, "currency"))
    return GatewayRefund(
        gateway="xendit",
        id=str(_field(refund, "id")),
        gateway_payment_id=gateway_payment_id or str(_field(refund, "invoice_id")),
        amount=_minor(_field(refund, "amount"), currency),
        status=_REFUND_STATES.get(str(_field(refund, "status")), "pending"),
    )


def _status(exc: xendit.XenditSdkException) -> int:
    try:
        return int(exc.status)  # the SDK keeps the HTTP status as a string ("404"), "0" without a response
    except (TypeError, ValueError):
        return 0


def _classify(exc: Exception) -> errors.GatewayError:
    """4xx → non-retryable; 5xx, 429, connection errors, timeouts and unreadable answers → transient."""
    if isinstance(exc, xendit.XenditSdkException):
        status = _status(exc)
        if status == 0 or status >= 500 or status == 429:
            return errors.transient(f"xendit error {status or 'without response'} ({exc.errorCode})")
        if status == 404:
            return errors.rejected(f"xendit: not found ({exc.errorCode})", code="gateway_object_not_found")
        if status == 409 and exc.errorCode == "IDEMPOTENCY_ERROR":
            return errors.rejected("xendit: idempotency key reused", code="idempotency_key_reused")
        return errors.rejected(f"xendit rejected the request ({status}: {exc.errorCode}: {exc.errorMessage})")
    # urllib3 errors (connection refused/reset, read timeout), a non-JSON error page (the SDK's exception
    # json-decodes every error body), or a response the SDK could not deserialize: the outcome is unknown.
    return errors.transient(f"xendit unreachable or unreadable answer: {type(exc).__name__}: {exc}"[:500])


# Everything the SDK can raise for a call whose outcome we do not know or that Xendit refused.
_SDK_ERRORS = (
    xendit.XenditSdkException,
    xendit.OpenApiException,
    urllib3.exceptions.HTTPError,
    OSError,
    json.JSONDecodeError,
    TypeError,  # a response missing a field the SDK's models require
)


class XenditGateway:
    name = "xendit"

    def __init__(
        self,
        secret_key: str,
        api_base: str | None = None,
        *,
        timeout: float = 20.0,
        invoice_duration_seconds: int = DEFAULT_INVOICE_DURATION_SECONDS,
    ) -> None:
        # Our own Configuration (not xendit.set_api_key, which sets a process-wide default): several
        # gateways with different keys and hosts can live in one worker.
        config = xendit.Configuration(host=api_base or None, api_key=secret_key)
        config.retries = False  # retries belong to Temporal, with the same external_id / idempotency key
        config.connection_pool_maxsize = 32  # calls run concurrently in threads
        client = xendit.ApiClient(config)
        self._invoices = InvoiceApi(client)
        self._refunds = RefundApi(client)
        self._timeout = timeout
        self._invoice_duration = invoice_duration_seconds

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            return fn(*args, _request_timeout=self._timeout, **kwargs)

        try:
            return await asyncio.to_thread(call)
        except _SDK_ERRORS as exc:
            raise _classify(exc) from None

    # -- payments ---------------------------------------------------------------------------------------

    async def create_payment(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        payment_method: str | None = None,
        description: str | None = None,
    ) -> GatewayPayment:
        """One invoice per step key: look it up first; create only when there is none.

        ``payment_method`` is a Stripe notion; a Xendit payer picks the method on the invoice page.
        """
        major = self._major(amount, currency)
        existing = await self._find_by_external_id(idempotency_key)
        if existing is None:
            created = await self._call(
                self._invoices.create_invoice,
                CreateInvoiceRequest(
                    external_id=idempotency_key,
                    amount=float(major),  # the SDK insists on a float; exact for any amount it can carry
                    currency=currency,
                    description=description or idempotency_key,
                    invoice_duration=float(self._invoice_duration),
                    metadata=dict(metadata),
                ),
            )
            # Look up again instead of trusting the answer: if an earlier attempt of this step (timed out,
            # still running) created one too, every attempt settles on the same, oldest, invoice. A listing
            # that does not show the new invoice yet is no reason to create another: keep the one we made.
            existing = await self._find_by_external_id(idempotency_key) or created
        payment = _normalise(existing)
        if (payment.amount, payment.currency) != (amount, currency):
            raise errors.rejected(
                f"invoice {payment.id} for this key is for {payment.amount} {payment.currency}",
                code="idempotency_key_reused",
            )
        return payment

    async def _find_by_external_id(self, external_id: str) -> Any | None:
        """The oldest invoice with this external_id; any younger duplicate (a race) is expired unused."""
        found = await self._call(
            self._invoices.get_invoices, external_id=external_id, limit=float(LOOKUP_LIMIT)
        )
        invoices = sorted(found, key=lambda i: (_field(i, "created"), str(_field(i, "id"))))
        if not invoices:
            return None
        paid = [i for i in invoices if _field(i, "status") in ("PAID", "SETTLED")]
        keep = paid[0] if paid else invoices[0]
        for duplicate in invoices:
            # Two unpaid invoices created in the same millisecond cannot be ordered the same way by every
            # client, so neither is expired on a guess.
            ambiguous = not paid and _field(duplicate, "created") == _field(keep, "created")
            if duplicate is not keep and not ambiguous and _field(duplicate, "status") == "PENDING":
                # Nobody has seen its URL (only the kept invoice's is ever returned), so nobody can pay it.
                try:
                    await self._call(self._invoices.expire_invoice, str(_field(duplicate, "id")))
                except errors.GatewayError:
                    pass  # paid or expired meanwhile, or unreachable: the next look-up tries again
        return keep

    async def get_payment(self, gateway_payment_id: str) -> GatewayPayment:
        return _normalise(await self._call(self._invoices.get_invoice_by_id, gateway_payment_id))

    async def cancel_payment(self, gateway_payment_id: str) -> GatewayPayment:
        """Expire the invoice unless it is final; returns its real state (it may have been paid meanwhile)."""
        current = await self.get_payment(gateway_payment_id)
        if current.status in ("succeeded", "expired"):
            return current
        try:
            return _normalise(await self._call(self._invoices.expire_invoice, gateway_payment_id))
        except errors.GatewayError as exc:
            if exc.retryable:
                raise
            # Xendit refuses to expire an invoice that is no longer pending (paid in the meantime).
            after = await self.get_payment(gateway_payment_id)
            if after.status in ("succeeded", "expired"):
                return after
            raise

    # -- refunds ----------------------------------------------------------------------------------------

    async def refund(
        self, *, idempotency_key: str, gateway_payment_id: str, amount: int, metadata: dict[str, str]
    ) -> GatewayRefund:
        invoice = await self.get_payment(gateway_payment_id)  # its currency gives the amount's scale
        major = self._major(amount, invoice.currency)
        refund = await self._call(
            self._refunds.create_refund,
            idempotency_key=idempotency_key,
            create_refund=CreateRefund(
                invoice_id=gateway_payment_id,
                reference_id=idempotency_key,
                amount=float(major),
                currency=invoice.currency,
                reason="OTHERS",
                metadata=dict(metadata),
            ),
        )
        return _normalise_refund(refund, gateway_payment_id)

    async def get_refund(self, refund_id: str) -> GatewayRefund:
        return _normalise_refund(await self._call(self._refunds.get_refund, refund_id))

    @staticmethod
    def _major(amount: int, currency: str) -> Decimal:
        if currency not in SUPPORTED_CURRENCIES:
            raise errors.rejected(f"xendit does not take {currency}", code="currency_not_supported")
        major = to_major_units(amount, currency)
        if major != major.quantize(Decimal(1).scaleb(-SUPPORTED_CURRENCIES[currency])):
            raise errors.rejected(
                f"xendit takes {currency} amounts with {SUPPORTED_CURRENCIES[currency]} decimals only",
                code="invalid_amount",
            )
        if Decimal(repr(float(major))) != major:
            raise errors.rejected(f"{major} {currency} does not fit the SDK's float", code="invalid_amount")
        return major
