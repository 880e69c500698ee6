"""How a refund is split across an order's tenders (ARCHITECTURE §5.4).

``proportional`` (default): the gateway part is ``floor(amount × gateway_paid / total)`` and the wallet part
takes the rest, so the wallet part takes the remainder unit; then any part that would exceed what is left of
its tender moves to the other one. ``wallet_first`` / ``gateway_first`` fill one tender before the other.
Integers only: no rounding error can create or lose a minor unit.
"""

from __future__ import annotations

from typing import Literal

RefundPolicy = Literal["proportional", "wallet_first", "gateway_first"]


def split_refund(
    amount: int,
    *,
    wallet_paid: int,
    gateway_paid: int,
    wallet_refunded: int,
    gateway_refunded: int,
    policy: RefundPolicy = "proportional",
) -> tuple[int, int]:
    """(wallet part, gateway part) of a refund of ``amount``; raises ValueError when it does not fit."""
    wallet_left, gateway_left = wallet_paid - wallet_refunded, gateway_paid - gateway_refunded
    if amount <= 0 or amount > wallet_left + gateway_left:
        raise ValueError("refund exceeds what is left to refund")
    if policy == "wallet_first":
        wallet = min(amount, wallet_left)
        return wallet, amount - wallet
    if policy == "gateway_first":
        gateway = min(amount, gateway_left)
        return amount - gateway, gateway
    gateway = amount * gateway_paid // (wallet_paid + gateway_paid)
    wallet = amount - gateway
    if wallet > wallet_left:
        wallet, gateway = wallet_left, amount - wallet_left
    elif gateway > gateway_left:
        wallet, gateway = amount - gateway_left, gateway_left
    return wallet, gateway
