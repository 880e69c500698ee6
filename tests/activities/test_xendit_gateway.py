"""XenditGateway against payweave's Xendit emulator through the real ``xendit-python`` SDK.

R3: one invoice per payment, also when the activity crashed right after Xendit made it.
R15: a 500, a timeout or a connection reset after the work was done is resolved by look-up / idempotency key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import xendit as xendit_sdk
from xendit.apis import InvoiceApi, RefundApi
from xendit.invoice.model.create_invoice_request import CreateInvoiceRequest

from activities.gateways.errors import GatewayError
from activities.gateways.xendit import XenditGateway
from payweave.devstack.supervisor import free_port
from tests.conftest import XENDIT_SECRET_KEY, eventually


@pytest.fixture
def gateway(xendit: str) -> XenditGateway:
    return XenditGateway(XENDIT_SECRET_KEY, xendit)


@pytest_asyncio.fixture
async def control(xendit: str) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator's own endpoints: the payer's side, faults, and raw reads of what Xendit holds."""
    async with httpx.AsyncClient(base_url=xendit, auth=(XENDIT_SECRET_KEY, ""), timeout=30) as client:
        yield client
        await client.delete("/_control/faults")


def sdk_invoices(xendit: str) -> Any:
    return InvoiceApi(xendit_sdk.ApiClient(xendit_sdk.Configuration(host=xendit, api_key=XENDIT_SECRET_KEY)))


def key() -> str:
    return f"deposit:user-{uuid.uuid4().hex[:8]}:{uuid.uuid4().hex}:gateway_payment"


async def invoices_for(control: httpx.AsyncClient, external_id: str) -> list[dict[str, Any]]:
    r = await control.get("/v2/invoices", params={"external_id": external_id, "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def pay(control: httpx.AsyncClient, invoice_id: str) -> None:
    r = await control.post(f"/_control/invoices/{invoice_id}/pay", json={})
    assert r.status_code == 200, r.text


async def fault(control: httpx.AsyncClient, **spec: Any) -> None:
    r = await control.post("/_control/faults", json=spec)
    assert r.status_code == 200, r.text


async def create(gateway: XenditGateway, k: str, amount: int = 10_000, currency: str = "USD") -> Any:
    return await gateway.create_payment(
        idempotency_key=k,
        amount=amount,
        currency=currency,
        metadata={"workflow_id": k.rsplit(":", 1)[0]},
        description="test deposit",
    )


async def test_create_returns_a_payable_invoice_found_by_its_external_id(
    gateway: XenditGateway, control: httpx.AsyncClient
) -> None:
    k = key()
    payment = await create(gateway, k, 12_345)
    assert (payment.gateway, payment.status, payment.amount, payment.currency) == (
        "xendit",
        "requires_action",
        12_345,
        "USD",
    )
    assert payment.next_action == {
        "type": "xendit_invoice",
        "invoice_url": payment.next_action and payment.next_action["invoice_url"],
        "invoice_id": payment.id,
    }
    assert payment.next_action["invoice_url"].endswith(f"/web/invoices/{payment.id}")
    [stored] = await invoices_for(control, k)
    assert (stored["id"], stored["status"], stored["metadata"]) == (
        payment.id,
        "PENDING",
        {"workflow_id": k.rsplit(":", 1)[0]},
    )
    assert await gateway.get_payment(payment.id) == payment


@pytest.mark.reliability
async def test_the_same_key_twice_or_concurrently_makes_one_invoice(
    gateway: XenditGateway, control: httpx.AsyncClient
) -> None:
    """QUALITY R3 / I4: the step key is the external_id, looked up before every create."""
    k = key()
    first = await create(gateway, k)
    again = await create(gateway, k)
    assert again.id == first.id
    assert [i["id"] for i in await invoices_for(control, k)] == [first.id]

    racing = key()
    results = await asyncio.gather(*(create(gateway, racing) for _ in range(6)))
    assert len({p.id for p in results}) == 1
    pending = [i for i in await invoices_for(control, racing) if i["status"] == "PENDING"]
    assert [i["id"] for i in pending] == [results[0].id]  # any extra one made in the race was expired


@pytest.mark.reliability
async def test_an_invoice_created_before_a_crash_is_found_not_duplicated(
    gateway: XenditGateway, control: httpx.AsyncClient, xendit: str
) -> None:
    """QUALITY R3: the activity made the invoice and died before recording it; the retry finds it."""
    k = key()
    made = await asyncio.to_thread(
        sdk_invoices(xendit).create_invoice,
        CreateInvoiceRequest(external_id=k, amount=100.0, currency="USD", invoice_duration=3600.0),
    )
    payment = await create(gateway, k)
    assert payment.id == made.id
    assert len(await invoices_for(control, k)) == 1


async def test_a_key_reused_for_another_amount_is_refused(gateway: XenditGateway) -> None:
    k = key()
    await create(gateway, k, 5_000)
    with pytest.raises(GatewayError) as err:
        await create(gateway, k, 6_000)
    assert (err.value.code, err.value.retryable) == ("idempotency_key_reused", False)


async def test_get_follows_the_payer(gateway: XenditGateway, control: httpx.AsyncClient) -> None:
    payment = await create(gateway, key(), 7_700)
    await pay(control, payment.id)
    paid = await gateway.get_payment(payment.id)
    assert (paid.status, paid.amount, paid.next_action) == ("succeeded", 7_700, None)
    assert (await control.post(f"/_control/invoices/{payment.id}/settle")).status_code == 200
    assert (await gateway.get_payment(payment.id)).status == "succeeded"  # SETTLED is paid too


async def test_cancel_expires_an_unpaid_invoice_and_reports_a_paid_one_as_paid(
    gateway: XenditGateway, control: httpx.AsyncClient
) -> None:
    unpaid = await create(gateway, key())
    canceled = await gateway.cancel_payment(unpaid.id)
    assert (canceled.status, canceled.failure_code) == ("expired", "expired")
    assert (await control.get(f"/v2/invoices/{unpaid.id}")).json()["status"] == "EXPIRED"
    assert (await gateway.cancel_payment(unpaid.id)).status == "expired"  # compensations run again

    paid = await create(gateway, key())
    await pay(control, paid.id)  # the payer won the race against the expiry
    assert (await gateway.cancel_payment(paid.id)).status == "succeeded"
    assert (await control.get(f"/v2/invoices/{paid.id}")).json()["status"] == "PAID"


async def test_refund_with_one_key_is_one_refund_and_ends_succeeded(
    gateway: XenditGateway, control: httpx.AsyncClient, xendit: str
) -> None:
    """I4: one gateway refund per refund, whatever the retries."""
    payment = await create(gateway, key(), 10_000)
    await pay(control, payment.id)
    refund_key = f"{key()}:gateway_refund"
    refunds = [
        await gateway.refund(
            idempotency_key=refund_key, gateway_payment_id=payment.id, amount=2_550, metadata={"r": "x"}
        )
        for _ in range(2)
    ]
    assert refunds[0].id == refunds[1].id
    assert (refunds[0].amount, refunds[0].gateway_payment_id) == (2_550, payment.id)
    listed = (await control.get("/refunds", params={"invoice_id": payment.id})).json()["data"]
    assert [r["id"] for r in listed] == [refunds[0].id]

    async def final() -> Any:
        r = await gateway.get_refund(refunds[0].id)
        return r if r.status != "pending" else None

    done = await eventually(final)
    assert (done.status, done.amount, done.gateway_payment_id) == ("succeeded", 2_550, payment.id)

    # The refund is visible through the SDK's own listing too (its RefundList model parses our answer).
    api = RefundApi(xendit_sdk.ApiClient(xendit_sdk.Configuration(host=xendit, api_key=XENDIT_SECRET_KEY)))
    assert [r.id for r in (await asyncio.to_thread(api.get_all_refunds, invoice_id=payment.id)).data] == [
        done.id
    ]


async def test_a_refund_can_fail_and_refunds_never_exceed_what_was_paid(
    gateway: XenditGateway, control: httpx.AsyncClient
) -> None:
    payment = await create(gateway, key(), 5_000)
    with pytest.raises(GatewayError) as unpaid:
        await gateway.refund(
            idempotency_key=f"{key()}:r0", gateway_payment_id=payment.id, amount=1_000, metadata={}
        )
    assert unpaid.value.retryable is False

    await pay(control, payment.id)
    assert (await control.post("/_control/refunds/fail-next", json={})).status_code == 200
    failing = await gateway.refund(
        idempotency_key=f"{key()}:r1", gateway_payment_id=payment.id, amount=5_000, metadata={}
    )

    async def failed() -> bool:
        return (await gateway.get_refund(failing.id)).status == "failed"

    await eventually(failed)
    # A failed refund gave nothing back: the whole amount can still be refunded, but not a cent more.
    with pytest.raises(GatewayError) as too_much:
        await gateway.refund(
            idempotency_key=f"{key()}:r2", gateway_payment_id=payment.id, amount=5_001, metadata={}
        )
    assert too_much.value.retryable is False
    whole = await gateway.refund(
        idempotency_key=f"{key()}:r3", gateway_payment_id=payment.id, amount=5_000, metadata={}
    )
    assert whole.amount == 5_000


@pytest.mark.parametrize("mode", ["error", "timeout", "reset"])
@pytest.mark.reliability
async def test_create_whose_answer_is_lost_is_resolved_by_look_up(
    xendit: str, control: httpx.AsyncClient, mode: str
) -> None:
    """QUALITY R15: Xendit made the invoice, the answer got lost; the retry finds it, never makes a second."""
    gateway = XenditGateway(XENDIT_SECRET_KEY, xendit, timeout=0.5)
    k = key()
    await fault(control, path="/v2/invoices*", method="POST", mode=mode, count=1, delay=5)
    with pytest.raises(GatewayError) as lost:
        await create(gateway, k)
    assert lost.value.retryable is True
    [made] = await invoices_for(control, k)  # the work was done
    retried = await create(gateway, k)
    assert retried.id == made["id"]
    assert len(await invoices_for(control, k)) == 1


@pytest.mark.parametrize("mode", ["error", "timeout"])
@pytest.mark.reliability
async def test_refund_and_expire_whose_answer_is_lost_are_resolved_on_retry(
    xendit: str, control: httpx.AsyncClient, mode: str
) -> None:
    """QUALITY R15 for refunds (the idempotency-key replays the first refund) and expiry (looked up)."""
    gateway = XenditGateway(XENDIT_SECRET_KEY, xendit, timeout=0.5)
    payment = await create(gateway, key(), 3_000)
    await pay(control, payment.id)
    refund_key = f"{key()}:gateway_refund"
    await fault(control, path="/refunds", method="POST", mode=mode, count=1, delay=5)
    with pytest.raises(GatewayError) as lost:
        await gateway.refund(
            idempotency_key=refund_key, gateway_payment_id=payment.id, amount=3_000, metadata={}
        )
    assert lost.value.retryable is True
    retried = await gateway.refund(
        idempotency_key=refund_key, gateway_payment_id=payment.id, amount=3_000, metadata={}
    )
    listed = (await control.get("/refunds", params={"invoice_id": payment.id})).json()["data"]
    assert [r["id"] for r in listed] == [retried.id]

    unpaid = await create(gateway, key())
    await fault(control, path=f"/invoices/{unpaid.id}/expire!", mode=mode, count=1, delay=5)
    with pytest.raises(GatewayError) as lost_expiry:
        await gateway.cancel_payment(unpaid.id)
    assert lost_expiry.value.retryable is True
    assert (await gateway.cancel_payment(unpaid.id)).status == "expired"


@pytest.mark.parametrize(
    ("amount", "currency", "major"),
    [
        (15_000_000, "IDR", 150_000),  # Rp150,000.00: whole rupiah, sent as 150000.0, stored as 150000
        (1_050, "USD", 10.5),
        (1, "USD", 0.01),
        (123_456_789_012, "USD", 1_234_567_890.12),
        (2_500_000, "VND", 2_500_000),
        (99_999, "PHP", 999.99),
    ],
)
async def test_amounts_round_trip_exactly(
    gateway: XenditGateway, control: httpx.AsyncClient, amount: int, currency: str, major: float
) -> None:
    """Minor units in, the SDK's float of major units on the wire, the same minor units back."""
    payment = await create(gateway, key(), amount, currency)
    assert (payment.amount, payment.currency) == (amount, currency)
    raw = (await control.get(f"/v2/invoices/{payment.id}")).json()
    assert (raw["amount"], raw["currency"]) == (major, currency)
    await pay(control, payment.id)
    refund = await gateway.refund(
        idempotency_key=f"{key()}:refund", gateway_payment_id=payment.id, amount=amount, metadata={}
    )
    assert refund.amount == amount


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        (150, "IDR", "invalid_amount"),  # Rp1.50: Xendit takes whole rupiah only
        (1_000, "EUR", "currency_not_supported"),
    ],
)
async def test_amounts_xendit_cannot_take_are_refused_before_any_call(
    gateway: XenditGateway, control: httpx.AsyncClient, amount: int, currency: str, code: str
) -> None:
    k = key()
    with pytest.raises(GatewayError) as err:
        await create(gateway, k, amount, currency)
    assert (err.value.code, err.value.retryable) == (code, False)
    assert await invoices_for(control, k) == []


async def test_errors_are_classified(xendit: str, gateway: XenditGateway) -> None:
    """4xx → non-retryable; no answer at all → transient (retried with the same key)."""
    with pytest.raises(GatewayError) as missing:
        await gateway.get_payment("does-not-exist")
    assert (missing.value.code, missing.value.retryable) == ("gateway_object_not_found", False)

    with pytest.raises(GatewayError) as wrong_key:
        await XenditGateway("not_a_xendit_key", xendit).get_payment("x")
    assert wrong_key.value.retryable is False

    with pytest.raises(GatewayError) as down:
        await create(XenditGateway(XENDIT_SECRET_KEY, f"http://127.0.0.1:{free_port()}"), key())
    assert down.value.retryable is True
