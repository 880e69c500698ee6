"""Gateway error classification, in one place (ARCHITECTURE §7).

Declines and other 4xx answers are business outcomes: not retried. Connection errors, timeouts, 5xx and 429
are transient: retried by Temporal with the same idempotency key, so a call that did the work before it
failed is resolved by the gateway replaying (Stripe) or by a look-up (Xendit), never by a second charge.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


class GatewayError(Exception):
    def __init__(self, message: str, *, code: str, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable

    def to_application_error(self) -> ApplicationError:
        return ApplicationError(str(self), type=self.code, non_retryable=not self.retryable)


def declined(message: str, code: str = "payment_declined") -> GatewayError:
    return GatewayError(message, code=code, retryable=False)


def rejected(message: str, code: str = "gateway_rejected") -> GatewayError:
    return GatewayError(message, code=code, retryable=False)


def transient(message: str, code: str = "gateway_unavailable") -> GatewayError:
    return GatewayError(message, code=code, retryable=True)
