"""What every saga that waits on a gateway payment shares (deposit, checkout)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from payweave.contracts.activities import GatewayPayment, GatewayPaymentRef
    from payweave.contracts.sagas import PaymentEvent

from workflows.saga import gateway_step

# While a payment is `processing` at the gateway we look it up this often, in case its webhook is lost.
PROCESSING_POLL = timedelta(minutes=1)


def concerns(known_gateway_payment_id: str | None, event: PaymentEvent) -> bool:
    """Only events about the saga's own gateway object count (once that object is known)."""
    return known_gateway_payment_id is None or event.gateway_payment_id == known_gateway_payment_id


async def cancel_until_final(ref: GatewayPaymentRef, paid: Callable[[], bool]) -> GatewayPayment:
    """Cancel the gateway object and return its real final state: it may have been paid meanwhile (late
    success). While the gateway is still deciding, wait for a success signal (``paid``) or look again."""
    while True:
        final = await gateway_step(PaymentActivities.cancel_gateway_payment, ref)
        if final.status != "processing":
            return final
        try:
            await workflow.wait_condition(paid, timeout=PROCESSING_POLL)
            return final.model_copy(update={"status": "succeeded"})
        except TimeoutError:
            continue
