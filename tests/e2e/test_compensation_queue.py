"""The compensation-failure queue (issue 5, scope 2) against the real stack: a compensation that gives up — refused
by the gateway, or still failing after its bounded attempts — marks the saga PwNeedsAttention (Temporal
visibility, ``payweave sagas list --needs-attention``) and waits for an operator: ``payweave sagas resolve`` (the
operator made it right by hand) or ``retry`` (the cause is gone); every step is a ``saga_audit`` row, and
``payweave ledger verify`` passes after.

The failures are real activity failures on a worker this module builds (its own task queue, the API served for
it, the session's Temporal dev server, databases and gateways): an interceptor makes every attempt of one
activity type fail — retryable, as an outage (the attempt asks Temporal for its next retry 10 ms later, so the 25
bounded attempts run out in about a second instead of nine minutes), or refused, as a gateway that says no.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from db.repositories import payments as payments_repo
from db.repositories import saga_audit
from db.verify import verify_ledger
from payweave import search_attributes as sa
from payweave.contracts.attention import AttentionView
from payweave.decisions import Refused, decide, run_cancel, run_decide
from payweave.ids import workflow_id
from payweave.operator import run_list, run_show, saga_journals
from payweave.settings import Settings
from tests.conftest import Users, eventually
from tests.e2e.test_checkouts import merchant_with_product, until_done
from tests.helpers import create_wallet, deposit, until_terminal, wallet
from tests.lab import own_queue
from workflows.checkout import CheckoutWorkflow
from workflows.saga import COMPENSATION_ATTEMPTS


@dataclass
class Outage(Interceptor):
    """While armed for an activity type, every attempt of it fails before it runs: retryable (an outage) or
    non-retryable with a business code (a refusal). Counts the attempts it failed."""

    failed: Counter[str] = field(default_factory=Counter)
    _armed: dict[str, str | None] = field(default_factory=dict)

    def arm(self, activity_type: str, *, refusal: str | None = None) -> None:
        self._armed[activity_type] = refusal

    def heal(self, activity_type: str) -> None:
        self._armed.pop(activity_type, None)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Failing(next, self)


class _Failing(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, outage: Outage) -> None:
        super().__init__(next)
        self._outage = outage

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        if name in self._outage._armed:
            self._outage.failed[name] += 1
            refusal = self._outage._armed[name]
            if refusal is not None:
                raise ApplicationError(f"injected refusal of {name}", type=refusal, non_retryable=True)
            raise ApplicationError(
                f"injected outage in {name}",
                type="InjectedOutage",
                next_retry_delay=timedelta(milliseconds=10),
            )
        return await self.next.execute_activity(input)


@dataclass
class Lab:
    http: httpx.AsyncClient  # the API of this module's worker queue
    outage: Outage
    temporal: Client
    settings: Settings  # pointing at that queue
    users: Users
    wallet_engine: AsyncEngine
    payments_engine: AsyncEngine


@pytest_asyncio.fixture
async def lab(
    settings: Settings,
    temporal: Client,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
    users: Users,
    api_url: str,  # the fixture API receives localstripe's webhooks and signals these sagas too
) -> AsyncIterator[Lab]:
    outage = Outage()
    async with own_queue(
        settings, temporal, wallet_engine, payments_engine, prefix="attention", interceptors=[outage]
    ) as (http, ours):
        yield Lab(http, outage, temporal, ours, users, wallet_engine, payments_engine)


def recording_console() -> Console:
    return Console(record=True, width=400, force_terminal=False, color_system=None)


async def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``payweave`` entry point in a child process, configured through the environment only (in a thread:
    the worker and the API run on this event loop and must go on answering it)."""
    env = {
        **os.environ,
        "PAYWEAVE_TEMPORAL_ADDRESS": lab.temporal.service_client.config.target_host,
        "PAYWEAVE_TEMPORAL_NAMESPACE": lab.temporal.namespace,
        "PAYWEAVE_WALLET_DATABASE_URL": lab.settings.wallet_database_url,
        "PAYWEAVE_PAYMENTS_DATABASE_URL": lab.settings.payments_database_url,
        "COLUMNS": "300",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "payweave.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )


async def attention(lab: Lab, wf_id: str) -> AttentionView | None:
    view: AttentionView | None = await lab.temporal.get_workflow_handle(wf_id).query(
        "attention", result_type=AttentionView
    )
    return view


async def until_waiting(lab: Lab, wf_id: str, times: int = 1) -> AttentionView:
    """Until the saga waits for an operator (the ``times``-th time) and Temporal visibility lists it so."""

    async def waiting() -> AttentionView | None:
        view = await attention(lab, wf_id)
        return view if view and view.state == "waiting" and view.times == times else None

    view: AttentionView = await eventually(waiting)

    async def listed() -> bool:
        query = f"{sa.PW_NEEDS_ATTENTION.name} = true AND WorkflowId = '{wf_id}'"
        return [wf.id async for wf in lab.temporal.list_workflows(query)] == [wf_id]

    await eventually(listed)
    return view


async def audit_rows(lab: Lab, wf_id: str) -> list[tuple[str, str, str | None]]:
    """(action, operator, reason) of the saga's saga_audit rows, oldest first."""
    async with lab.payments_engine.connect() as conn:
        return [(e.action, e.operator, e.reason) for e in await saga_audit.for_saga(conn, wf_id)]


async def frozen_transfer(lab: Lab, amount: int) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """A transfer from a funded wallet (5,000) to a frozen one, whose credit is refused: the saga compensates.
    Returns its workflow id, transfer id, the sender's auth and wallet."""
    alice, a_auth = lab.users.new()
    _, b_auth = lab.users.new()
    _, ops = lab.users.new("operator")
    a, b = await create_wallet(lab.http, a_auth), await create_wallet(lab.http, b_auth)
    await deposit(lab.http, a_auth, a["id"], 5_000)
    assert (await lab.http.post(f"/v1/wallets/{b['id']}/freeze", headers=ops)).status_code == 200
    key = uuid.uuid4().hex
    r = await lab.http.post(
        "/v1/transfers",
        json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": amount, "currency": "USD"},
        headers={**a_auth, "Idempotency-Key": key},
    )
    assert r.status_code == 202, r.text
    return workflow_id("transfer", alice, key), r.json()["id"], a_auth, a


@dataclass
class SplitCheckout:
    wf_id: str
    order: dict[str, Any]
    auth: dict[str, str]
    wallet_id: str
    product_id: str


async def split_checkout(
    lab: Lab, *, stock: int, wallet_amount: int, expires_in: int | None
) -> SplitCheckout:
    """A checkout of all ``stock`` units (1,000 each) paid by wallet (funded 5,000) and Stripe, not confirmed."""
    merchant, _, _, prod = await merchant_with_product(lab.http, lab.users, price=1_000, stock=stock)
    buyer, auth = lab.users.new()
    w = await create_wallet(lab.http, auth)
    await deposit(lab.http, auth, w["id"], 5_000)
    key = uuid.uuid4().hex
    body: dict[str, Any] = {
        "merchant_id": merchant,
        "currency": "USD",
        "items": [{"product_id": prod["id"], "quantity": stock}],
        "payment": {"method": "split", "wallet_amount": wallet_amount, "gateway": "stripe"},
    }
    if expires_in is not None:
        body["expires_in"] = expires_in
    r = await lab.http.post("/v1/checkouts", json=body, headers={**auth, "Idempotency-Key": key})
    assert r.status_code == 202, r.text
    return SplitCheckout(workflow_id("checkout", buyer, key), r.json(), auth, w["id"], prod["id"])


async def product_units(lab: Lab, c: SplitCheckout) -> tuple[int, int]:
    p = (await lab.http.get(f"/v1/products/{c.product_id}", headers=c.auth)).json()
    return p["stock"], p["available"]


async def test_a_refused_compensation_waits_for_an_operator_and_resolve_finishes_the_checkout(
    lab: Lab,
) -> None:
    """Acceptance: the gateway refuses to cancel an expired checkout's payment. The saga shows PwNeedsAttention;
    the operator cancels the payment by hand at the gateway and runs ``payweave sagas resolve`` with a reason;
    the checkout goes on (hold and stock released), ends ``expired``, the reason is recorded, the ledger verifies."""
    lab.outage.arm("cancel_gateway_payment", refusal="gateway_refused")
    c = await split_checkout(lab, stock=3, wallet_amount=500, expires_in=1)
    wf_id = c.wf_id

    view = await until_waiting(lab, wf_id)
    assert (view.compensation, view.refused, view.status_before) == (
        "close_gateway_payment",
        True,
        "awaiting_payment",
    )
    assert view.failure == "refused: gateway_refused: injected refusal of cancel_gateway_payment"
    assert lab.outage.failed["cancel_gateway_payment"] == 1  # a refusal is not retried: the operator decides
    handle = lab.temporal.get_workflow_handle(wf_id)
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    assert desc.typed_search_attributes.get(sa.PW_STATUS) == "needs_attention"
    assert (await desc.memo())["attention"]["compensation"] == "close_gateway_payment"
    # While it waits, the buyer's wallet part is still held (the compensations after this one have not run).
    assert (await wallet(lab.http, c.auth, c.wallet_id))["held"] == 500

    owner = wf_id.split(":")[1]
    console = recording_console()
    filters: dict[str, Any] = {"kind": "checkout", "status": None, "owner": owner, "limit": 10}
    assert await run_list(lab.settings, console, **filters, needs_attention=True, client=lab.temporal) == 0
    out = console.export_text()
    assert wf_id in out and "needs attention" in out and "PwNeedsAttention = true" in out, out
    listed = await cli(lab, "sagas", "list", "--needs-attention", "--owner", owner)
    assert listed.returncode == 0 and wf_id in listed.stdout, listed.stdout + listed.stderr
    async with lab.payments_engine.connect() as conn:
        [flagged] = await saga_audit.for_saga(conn, wf_id)
    assert (flagged.action, flagged.operator, flagged.saga_kind) == (
        "needs_attention",
        "payweave",
        "checkout",
    )
    assert (flagged.compensation, flagged.failure) == ("close_gateway_payment", view.failure)

    # A resolve without a reason is refused, by the CLI and by the workflow's validator; nothing is recorded.
    blank = await cli(lab, "sagas", "resolve", wf_id, "--reason", "  ", "--operator", "ops-ana")
    assert blank.returncode == 1 and "needs a reason" in blank.stdout
    try:
        await decide(lab.temporal, wf_id, "resolve", operator="ops-ana", reason=" ")
        raise AssertionError("a blank reason was accepted")
    except Refused as exc:
        assert "reason_required" in str(exc)
    assert len(await audit_rows(lab, wf_id)) == 1

    # The operator makes it right by hand: cancels the PaymentIntent at the gateway, then resolves.
    status = await handle.query(CheckoutWorkflow.status)
    assert status is not None and status.gateway_payment_id
    stripe_key = lab.settings.stripe_api_key.get_secret_value()
    async with httpx.AsyncClient(
        base_url=lab.settings.stripe_api_base or "", auth=(stripe_key, "")
    ) as stripe:
        cancelled = await stripe.post(f"/v1/payment_intents/{status.gateway_payment_id}/cancel")
        assert cancelled.json()["status"] == "canceled", cancelled.text
    reason = f"PaymentIntent {status.gateway_payment_id} cancelled by hand in the Stripe dashboard (INC-7)"
    resolved = await cli(lab, "sagas", "resolve", wf_id, "--reason", reason, "--operator", "ops-ana")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert "resolve recorded" in resolved.stdout

    done = await until_done(lab.http, c.auth, c.order["id"])
    assert (done["status"], done["failure_code"]) == ("expired", "expired")
    assert (await handle.result())["status"] == "expired"
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(sa.PW_NEEDS_ATTENTION) is False
    assert desc.typed_search_attributes.get(sa.PW_STATUS) == "expired"
    memo = (await desc.memo())["attention"]
    assert (memo["state"], memo["operator"], memo["reason"]) == ("resolved", "ops-ana", reason)
    # The compensations after the resolved one ran: the hold is released, the stock is back.
    after = await wallet(lab.http, c.auth, c.wallet_id)
    assert (after["balance"], after["held"]) == (5_000, 0)
    assert await product_units(lab, c) == (3, 3)
    assert await audit_rows(lab, wf_id) == [
        ("needs_attention", "payweave", None),
        ("resolve", "ops-ana", reason),
    ]
    console = recording_console()
    assert await run_show(lab.settings, console, wf_id, client=lab.temporal) == 0
    shown = console.export_text()
    assert "resolved by ops-ana" in shown and reason in shown and "saga_audit" in shown, shown

    # Still refused once decided: nothing waits any more.
    again = await cli(lab, "sagas", "retry", wf_id, "--operator", "ops-ana")
    assert again.returncode == 1 and "nothing to act on" in again.stdout

    verify = await cli(lab, "ledger", "verify")
    assert verify.returncode == 0 and "ledger OK" in verify.stderr, verify.stderr


async def test_a_reversal_out_of_attempts_is_retried_by_the_operator_and_the_reason_reaches_the_journal(
    lab: Lab,
) -> None:
    """A transfer's reversal keeps failing (an outage): after its bounded attempts the saga waits. A retry while
    the cause persists asks again; once it is gone, a retry completes the reversal: the money is back, the
    reversal journal's description carries the operator's reason."""
    lab.outage.arm("reverse_journal")
    wf_id, transfer_id, a_auth, a = await frozen_transfer(lab, 1_500)

    view = await until_waiting(lab, wf_id)
    assert (view.compensation, view.refused, view.status_before) == ("reverse_debit", False, "debited")
    assert (
        view.failure
        == f"still failing after {COMPENSATION_ATTEMPTS} attempts: injected outage in reverse_journal"
    )
    assert lab.outage.failed["reverse_journal"] == COMPENSATION_ATTEMPTS
    assert (await wallet(lab.http, a_auth, a["id"]))["balance"] == 3_500  # in transit meanwhile

    # Retried while the outage lasts: 25 more attempts, then it asks again.
    console = recording_console()
    decided = await run_decide(
        lab.settings, console, wf_id, "retry", operator="ops-bo", reason=None, client=lab.temporal
    )
    assert decided == 0 and "retry recorded" in console.export_text()
    await until_waiting(lab, wf_id, times=2)
    assert lab.outage.failed["reverse_journal"] == 2 * COMPENSATION_ATTEMPTS

    lab.outage.heal("reverse_journal")
    reason = "wallet DB failover finished (INC-9)"
    retried = await cli(lab, "sagas", "retry", wf_id, "--reason", reason, "--operator", "ops-bo")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    done = await until_terminal(lab.http, a_auth, f"/v1/transfers/{transfer_id}")
    assert (done["status"], done["failure_code"]) == ("failed", "wallet_frozen")
    assert (await wallet(lab.http, a_auth, a["id"]))["balance"] == 5_000
    journals = {j.idempotency_key: j for j in await saga_journals(lab.settings, wf_id)}
    reversal = journals[f"{wf_id}:reverse_debit"]
    assert reversal.kind == "transfer_reversal"
    assert (reversal.description or "").endswith(f"(ops-bo decided retry: {reason})"), reversal.description
    assert await audit_rows(lab, wf_id) == [
        ("needs_attention", "payweave", None),
        ("retry", "ops-bo", None),
        ("needs_attention", "payweave", None),
        ("retry", "ops-bo", reason),
    ]
    desc = await lab.temporal.get_workflow_handle(wf_id).describe()
    assert desc.typed_search_attributes.get(sa.PW_NEEDS_ATTENTION) is False
    assert desc.typed_search_attributes.get(sa.PW_STATUS) == "failed"
    report = await verify_ledger(lab.wallet_engine, lab.payments_engine)
    assert report.ok, report.violations


async def test_decisions_are_refused_when_nothing_waits_and_cancel_runs_the_compensations(lab: Lab) -> None:
    """No decision is taken by a saga that is not waiting for one (running, or closed); ``payweave sagas cancel``
    cancels a running checkout through its cancel Update — its compensations run — and is audited."""
    c = await split_checkout(lab, stock=2, wallet_amount=400, expires_in=None)
    assert c.order["status"] == "awaiting_payment"

    # Running, awaiting payment: its validator refuses both decisions; nothing is recorded.
    for action in ("retry", "resolve"):
        try:
            await decide(lab.temporal, c.wf_id, action, operator="ops-cy", reason="nothing is wrong")  # type: ignore[arg-type]
            raise AssertionError(f"{action} accepted by a saga that waits for nothing")
        except Refused as exc:
            assert "not waiting for an operator" in str(exc) and "not_waiting" in str(exc)
    assert await attention(lab, c.wf_id) is None

    console = recording_console()
    cancelled = await run_cancel(
        lab.settings, console, c.wf_id, operator="ops-cy", reason="buyer called support", client=lab.temporal
    )
    out = console.export_text()
    assert cancelled == 0 and "cancelled" in out and "PwStatus canceled" in out, out
    done = await until_done(lab.http, c.auth, c.order["id"])
    assert (done["status"], done["failure_code"]) == ("canceled", "canceled_by_operator")
    assert (await wallet(lab.http, c.auth, c.wallet_id))["held"] == 0
    assert await product_units(lab, c) == (2, 2)
    assert await audit_rows(lab, c.wf_id) == [("cancel", "ops-cy", "buyer called support")]

    # Closed: every action is refused, by the CLI, with a non-zero exit.
    for args in (("retry", c.wf_id), ("resolve", c.wf_id, "--reason", "x"), ("cancel", c.wf_id)):
        refused = await cli(lab, "sagas", *args)
        assert refused.returncode == 1 and "nothing to act on" in refused.stdout, refused.stdout
    missing = await cli(lab, "sagas", "retry", "transfer:nobody:nothing")
    assert missing.returncode == 1 and "no workflow" in missing.stdout


async def refused_hold_checkout(lab: Lab) -> SplitCheckout:
    """A split checkout whose wallet hold is refused for good (injected ``insufficient_funds``): it fails before
    the gateway is asked. Returns once its workflow closed."""
    lab.outage.arm("place_hold", refusal="insufficient_funds")
    try:
        c = await split_checkout(lab, stock=1, wallet_amount=300, expires_in=None)
        await until_done(lab.http, c.auth, c.order["id"])
        await lab.temporal.get_workflow_handle(c.wf_id).result()
    finally:
        lab.outage.heal("place_hold")
    return c


async def test_a_refused_hold_cancels_the_payment_row_recorded_with_the_order(lab: Lab) -> None:
    """Since checkout-payment-with-order the card part's payment row is written with the order, before the wallet
    hold: when the hold is refused, the compensation marks that row canceled (the gateway was never asked), so no
    payment is left pending behind a failed checkout."""
    c = await refused_hold_checkout(lab)
    done = await until_done(lab.http, c.auth, c.order["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "insufficient_funds")
    status = await lab.temporal.get_workflow_handle(c.wf_id).query(CheckoutWorkflow.status)
    assert status is not None and status.gateway_payment_id is None  # no gateway object was made
    async with lab.payments_engine.connect() as conn:
        payment = await payments_repo.get_payment(conn, f"pay_{c.order['id']}")
    assert payment is not None and (payment.status, payment.gateway_payment_id) == ("canceled", None)
    assert (await wallet(lab.http, c.auth, c.wallet_id))["held"] == 0
    assert await product_units(lab, c) == (1, 1)


async def test_a_reversal_resolved_by_hand_leaves_transit_until_the_operator_releases_it(lab: Lab) -> None:
    """A transfer's reversal gives up and an operator resolves it by hand: the saga ends, its debit still in
    transit, and ``ledger verify`` says so (I1). ``payweave ledger release-transit`` moves exactly what is left
    back to the sender with a journal carrying the saga's id and an audit row; verify is clean again, and a
    second release, a release without a reason and one into a system wallet are refused and move nothing."""
    lab.outage.arm("reverse_journal")
    wf_id, transfer_id, a_auth, a = await frozen_transfer(lab, 1_200)
    await until_waiting(lab, wf_id)
    lab.outage.heal("reverse_journal")
    resolved = await cli(lab, "sagas", "resolve", wf_id, "--reason", "reversal skipped (INC-11)")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    done = await until_terminal(lab.http, a_auth, f"/v1/transfers/{transfer_id}")
    assert done["status"] == "failed"
    assert (await wallet(lab.http, a_auth, a["id"]))["balance"] == 3_800
    report = await verify_ledger(lab.wallet_engine, lab.payments_engine)
    stranded = [v for v in report.violations if v.check.startswith("I1")]
    assert stranded and {"saga": wf_id, "left_in_transit": 1_200} in stranded[0].rows

    no_reason = await cli(lab, "ledger", "release-transit", wf_id, "--to", a["id"], "--reason", " ")
    assert no_reason.returncode == 1 and "validation_error" in no_reason.stdout, no_reason.stdout
    into_system = await cli(
        lab, "ledger", "release-transit", wf_id, "--to", "sys_escrow_usd", "--reason", "x"
    )
    assert into_system.returncode == 1 and "wallet_not_found" in into_system.stdout, into_system.stdout

    reason = "returned to the sender (INC-11)"
    released = await cli(
        lab, "ledger", "release-transit", wf_id, "--to", a["id"], "--reason", reason, "--operator", "ops-fi"
    )
    assert released.returncode == 0 and "released 1200 USD" in released.stdout, released.stdout
    assert (await wallet(lab.http, a_auth, a["id"]))["balance"] == 5_000
    journal = {j.idempotency_key: j for j in await saga_journals(lab.settings, wf_id)}[
        f"operator:release-transit:{wf_id}"
    ]
    assert journal.kind == "operator_transit_release" and reason in (journal.description or "")
    rows = await audit_rows(lab, wf_id)
    assert rows[-1][:2] == ("release_transit", "ops-fi") and reason in (rows[-1][2] or "")
    report = await verify_ledger(lab.wallet_engine, lab.payments_engine)
    assert report.ok, report.violations

    again = await cli(lab, "ledger", "release-transit", wf_id, "--to", a["id"], "--reason", reason)
    assert again.returncode == 1 and "nothing left in transit" in again.stdout, again.stdout
    assert (await wallet(lab.http, a_auth, a["id"]))["balance"] == 5_000
