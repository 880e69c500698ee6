"""Domain errors with stable problem codes (ARCHITECTURE §8).

The same code travels from the repository (``WalletFrozen``) through an activity
(``ApplicationError(type="wallet_frozen", non_retryable=True)``) to the API (problem+json ``code``).
"""

from __future__ import annotations

from typing import ClassVar


class PayweaveError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request failed"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class InsufficientFunds(PayweaveError):
    code, status, title = "insufficient_funds", 422, "Insufficient funds"


class WalletFrozen(PayweaveError):
    code, status, title = "wallet_frozen", 409, "Wallet is frozen"


class WalletClosed(PayweaveError):
    code, status, title = "wallet_closed", 409, "Wallet is closed"


class WalletNotFound(PayweaveError):
    code, status, title = "wallet_not_found", 404, "Wallet not found"


class CurrencyMismatch(PayweaveError):
    code, status, title = "currency_mismatch", 422, "Currency mismatch"


class InvalidAmount(PayweaveError):
    code, status, title = "invalid_amount", 422, "Invalid amount"


class IdempotencyKeyReused(PayweaveError):
    code, status, title = "idempotency_key_reused", 409, "Idempotency-Key reused with a different request"


class NotFound(PayweaveError):
    code, status, title = "not_found", 404, "Not found"


class Forbidden(PayweaveError):
    code, status, title = "forbidden", 403, "Forbidden"


class Unauthenticated(PayweaveError):
    code, status, title = "unauthenticated", 401, "Authentication required"


class ValidationFailed(PayweaveError):
    code, status, title = "validation_error", 422, "Validation error"


class Conflict(PayweaveError):
    code, status, title = "conflict", 409, "Conflict"


class HoldNotOpen(PayweaveError):
    code, status, title = "hold_not_open", 409, "Hold is no longer open"


class OutOfStock(PayweaveError):
    code, status, title = "out_of_stock", 409, "Out of stock"


class RefundExceedsPaid(PayweaveError):
    code, status, title = "refund_exceeds_paid", 422, "Refund exceeds what was paid"


class RefundRefused(PayweaveError):
    """A refund its saga refused before booking anything, for a reason no other code names: nothing was
    recorded, so there is no refund to read afterwards (the detail carries the saga's failure code)."""

    code, status, title = "refund_refused", 409, "Refund refused"


class SessionClosed(PayweaveError):
    code, status, title = "session_closed", 409, "The group buy no longer takes participants"


class AlreadyJoined(PayweaveError):
    code, status, title = "already_joined", 409, "Already joined this group buy"


class ServiceUnavailable(PayweaveError):
    code, status, title = (
        "service_unavailable",
        503,
        "Temporarily unavailable; retry with the same Idempotency-Key",
    )


class GatewayDeclined(PayweaveError):
    code, status, title = "payment_declined", 402, "Payment declined"


BUSINESS_ERRORS: dict[str, type[PayweaveError]] = {
    cls.code: cls
    for cls in (
        InsufficientFunds,
        WalletFrozen,
        WalletClosed,
        WalletNotFound,
        CurrencyMismatch,
        InvalidAmount,
        IdempotencyKeyReused,
        NotFound,
        Forbidden,
        Unauthenticated,
        ValidationFailed,
        Conflict,
        HoldNotOpen,
        GatewayDeclined,
        OutOfStock,
        RefundExceedsPaid,
        SessionClosed,
        AlreadyJoined,
    )
}
