"""Stripe adapter on the official SDK (``StripeClient``; ``base_addresses`` for localstripe).

Requests go through the SDK's ``raw_request_async``: the same requestor (authentication, ``Idempotency-Key``,
the typed ``StripeError`` classes for error answers), but the JSON answer is used as the dict it is instead of
being built into a ``StripeObject`` tree first and converted back — which cost 0.65 ms of CPU per call out of
1.9 on the worker's event loop (measured against localstripe; docs/benchmarks.md, B2)."""

from __future__ import annotations

import hashlib
from typing import Any

import stripe

from activities.gateways import errors
from payweave.contracts.activities import GatewayPayment, GatewayRefund


def _normalise(intent: dict[str, Any]) -> GatewayPayment:
    status = intent["status"]
    last_error = intent.get("last_payment_error")
    if status == "succeeded":
        state = "succeeded"
    elif status == "canceled":
        state = "canceled"
    elif status == "processing" or status == "requires_capture":
        state = "processing"
    elif status == "requires_payment_method" and last_error:
        state = "failed"
    else:  # requires_payment_method / requires_confirmation / requires_action: the payer must act
        state = "requires_action"
    next_action = None
    if state == "requires_action":
        next_action = {
            "type": "stripe_client_secret",
            "payment_intent": intent["id"],
            "client_secret": intent.get("client_secret"),
        }
    failure_code = (last_error or {}).get("code") if state == "failed" else None
    return GatewayPayment(
        gateway="stripe",
        id=intent["id"],
        status=state,
        amount=int(intent["amount"]),
        currency=str(intent["currency"]).upper(),
        next_action=next_action,
        failure_code=failure_code,
    )


def _refund(data: dict[str, Any]) -> GatewayRefund:
    status = {"succeeded": "succeeded", "failed": "failed", "canceled": "failed"}.get(
        data["status"], "pending"
    )
    return GatewayRefund(
        gateway="stripe",
        id=data["id"],
        gateway_payment_id=str(data.get("payment_intent") or ""),
        amount=int(data["amount"]),
        status=status,
    )


def stripe_key(step_key: str) -> str:
    """Stripe's idempotency key for a step key: a fixed-length ASCII digest (step keys embed user ids and the
    caller's Idempotency-Key, which may be long; Stripe takes at most 255 characters)."""
    return "pw_" + hashlib.sha256(step_key.encode()).hexdigest()


def _classify(exc: stripe.StripeError) -> errors.GatewayError:
    if isinstance(exc, stripe.CardError):
        return errors.declined(exc.user_message or "card declined", code=exc.code or "card_declined")
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError)):
        return errors.transient(f"stripe unreachable: {type(exc).__name__}")
    status = exc.http_status or 0
    if status >= 500 or status == 0:
        return errors.transient(f"stripe error {status}")
    if status == 402:
        return errors.declined(exc.user_message or "payment declined", code=exc.code or "card_declined")
    return errors.rejected(f"stripe rejected the request ({status}: {exc.code or type(exc).__name__})")


class StripeGateway:
    name = "stripe"

    def __init__(self, api_key: str, api_base: str | None = None) -> None:
        base: Any = {"api": api_base} if api_base else None
        # Retries belong to Temporal (same idempotency key on every attempt), not to the SDK.
        self._client = stripe.StripeClient(
            api_key, base_addresses=base, max_network_retries=0, http_client=stripe.HTTPXClient()
        )

    async def _request(
        self, method: str, path: str, idempotency_key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        """The answer's JSON object; an error answer raises the SDK's ``StripeError`` subclass for it."""
        if idempotency_key is not None:
            params["idempotency_key"] = stripe_key(idempotency_key)
        response = await self._client.raw_request_async(method, path, **params)
        data: dict[str, Any] = response.data
        return data

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
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "metadata": metadata,
            "payment_method_types": ["card"],
        }
        if payment_method:
            # The payer already holds a PaymentMethod (Stripe.js or saved): create and confirm server-side.
            params.update(payment_method=payment_method, confirm=True)
        try:
            intent = await self._request("post", "/v1/payment_intents", idempotency_key, **params)
        except stripe.CardError as exc:
            # A declined confirm still created the intent; Stripe returns it inside the error.
            body: Any = exc.json_body or {}
            intent_data = (body.get("error") or {}).get("payment_intent")
            if intent_data:
                failed = _normalise(intent_data)
                return failed.model_copy(
                    update={"status": "failed", "failure_code": exc.code or "card_declined"}
                )
            raise _classify(exc) from None
        except stripe.StripeError as exc:
            raise _classify(exc) from None
        return _normalise(intent)

    async def get_payment(self, gateway_payment_id: str) -> GatewayPayment:
        try:
            intent = await self._request("get", f"/v1/payment_intents/{gateway_payment_id}")
        except stripe.StripeError as exc:
            raise _classify(exc) from None
        return _normalise(intent)

    async def cancel_payment(self, gateway_payment_id: str) -> GatewayPayment:
        """Cancel unless already final; returns the intent's real state (it may have succeeded meanwhile)."""
        current = await self.get_payment(gateway_payment_id)
        if current.status in ("succeeded", "canceled", "processing"):
            return current
        try:
            intent = await self._request("post", f"/v1/payment_intents/{gateway_payment_id}/cancel")
        except stripe.StripeError as exc:
            # Lost the race with a payment: the intent is no longer cancelable. Report what it is now.
            if (exc.http_status or 0) == 400:
                return await self.get_payment(gateway_payment_id)
            raise _classify(exc) from None
        return _normalise(intent)

    async def refund(
        self, *, idempotency_key: str, gateway_payment_id: str, amount: int, metadata: dict[str, str]
    ) -> GatewayRefund:
        try:
            refund = await self._request(
                "post",
                "/v1/refunds",
                idempotency_key,
                payment_intent=gateway_payment_id,
                amount=amount,
                metadata=metadata,
            )
        except stripe.StripeError as exc:
            raise _classify(exc) from None
        return _refund({**refund, "payment_intent": gateway_payment_id})

    async def get_refund(self, refund_id: str) -> GatewayRefund:
        try:
            refund = await self._request("get", f"/v1/refunds/{refund_id}")
        except stripe.StripeError as exc:
            raise _classify(exc) from None
        return _refund(refund)
