"""``payweave demo``: every saga once, against a running ``payweave dev`` (or any API + Xendit emulator).

Runs, with fresh users each time (so a second run starts from scratch and never replays the first one's
Idempotency-Keys): a Stripe deposit, a transfer, a transfer to a frozen wallet that is rolled back, split
checkouts through Stripe and through Xendit (the emulator's control endpoint plays the payer), a partial
refund, a group buy that reaches its MOQ and is released to the factory, and one that misses its MOQ at a
short deadline and refunds everyone. Then it prints each saga's final state and its Web UI link.

Waiting is polling with a timeout (``until``), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from payweave.ids import workflow_id
from payweave.operator import ui_link
from payweave.settings import Settings
from payweave.tokens import issue_token

POLL_INTERVAL = 0.25
STEP_TIMEOUT = 90.0
PENDING = {"pending", "awaiting_payment"}


class DemoError(RuntimeError):
    pass


@dataclass
class SagaOutcome:
    saga: str
    workflow_id: str
    resource_id: str
    resource_path: str  # GET path that shows the resource's status
    expected: str
    status: str
    failure_code: str | None
    ui_url: str

    @property
    def ok(self) -> bool:
        return self.status == self.expected


async def until(
    probe: Callable[[], Awaitable[Any]], *, within: float = STEP_TIMEOUT, what: str = "condition"
) -> Any:
    """Poll ``probe()`` until it returns something truthy, or give up after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {within:.0f}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(POLL_INTERVAL)


class Api:
    """A thin httpx wrapper: bearer tokens per user, Idempotency-Keys, problem+json → DemoError."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings, run: str) -> None:
        self.client = client
        self.settings = settings
        self.run = run

    def user(self, name: str, *roles: str) -> tuple[str, dict[str, str]]:
        sub = f"{name}-{self.run}"
        token = issue_token(self.settings, sub=sub, roles=list(roles) or ["customer"], ttl_seconds=3600)
        return sub, {"Authorization": f"Bearer {token}"}

    def key(self, name: str) -> str:
        return f"demo-{self.run}-{name}"

    async def call(
        self,
        method: str,
        path: str,
        auth: dict[str, str],
        *,
        json: Any = None,
        key: str | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        headers = dict(auth)
        if key:
            headers["Idempotency-Key"] = key
        for _ in range(20):
            r = await self.client.request(method, path, json=json, headers=headers)
            if r.status_code != 429:
                break
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
        if r.status_code not in ok:
            raise DemoError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    async def status_of(self, path: str, auth: dict[str, str], done: Callable[[dict[str, Any]], bool]) -> Any:
        async def probe() -> dict[str, Any] | None:
            body: dict[str, Any] = await self.call("GET", path, auth)
            return body if done(body) else None

        return await until(probe, what=f"{path} to finish")


async def run_demo(
    settings: Settings,
    *,
    api_url: str,
    xendit_url: str,
    failed_group_buy_deadline: float = 20.0,
    on_step: Callable[[str], None] | None = None,
    run: str | None = None,
) -> list[SagaOutcome]:
    """Run every saga once; return what each ended as (re-read from the API at the end)."""
    run = run or uuid.uuid4().hex[:8]
    step = on_step or (lambda _: None)
    outcomes: list[SagaOutcome] = []

    def record(saga: str, kind: str, owner: str, key: str, resource: str, path: str, expected: str) -> None:
        wf = workflow_id(kind, owner, key)
        outcomes.append(SagaOutcome(saga, wf, resource, path, expected, "?", None, ui_link(settings, wf)))

    async with (
        httpx.AsyncClient(base_url=api_url, timeout=30) as client,
        httpx.AsyncClient(base_url=xendit_url, timeout=30) as xendit,
    ):
        api = Api(client, settings, run)
        not_pending = lambda b: b["status"] not in PENDING  # noqa: E731

        step("users and wallets")
        alice, alice_auth = api.user("alice")
        bob, bob_auth = api.user("bob")
        carol, carol_auth = api.user("carol")
        shop, shop_auth = api.user("shop", "merchant")
        kiln, kiln_auth = api.user("kiln", "factory")
        _, ops_auth = api.user("ops", "operator")
        wallets = {}
        for name, auth in (
            ("alice", alice_auth),
            ("bob", bob_auth),
            ("shop", shop_auth),
            ("kiln", kiln_auth),
        ):
            wallets[name] = (await api.call("POST", "/v1/wallets", auth, json={"currency": "USD"}))["id"]

        step("deposit 200.00 USD to alice (Stripe, pm_card_visa)")
        key = api.key("deposit")
        dep = await api.call(
            "POST",
            f"/v1/wallets/{wallets['alice']}/deposits",
            alice_auth,
            json={"amount": 20_000, "payment_method": "pm_card_visa"},
            key=key,
        )
        record("deposit (Stripe)", "deposit", alice, key, dep["id"], f"/v1/deposits/{dep['id']}", "succeeded")
        await api.status_of(f"/v1/deposits/{dep['id']}", alice_auth, not_pending)

        # The failed group buy runs while the rest goes on: its deadline is the longest wait of the demo.
        step("group buy that will miss its MOQ: opened, alice (wallet) and carol (Stripe) join")
        deadline = datetime.now(UTC) + timedelta(seconds=failed_group_buy_deadline)
        key = api.key("bowls")
        gb_failed = await api.call(
            "POST",
            "/v1/group-buys",
            kiln_auth,
            json={
                "product": "Enamel bowl",
                "unit_price": 100,
                "currency": "USD",
                "moq": 10,
                "deadline": deadline.isoformat(),
            },
            key=key,
        )
        record(
            "group buy, MOQ missed",
            "groupbuy",
            kiln,
            key,
            gb_failed["id"],
            f"/v1/group-buys/{gb_failed['id']}",
            "refunded",
        )
        await api.call(
            "POST",
            f"/v1/group-buys/{gb_failed['id']}/participants",
            alice_auth,
            json={"quantity": 1, "payment": {"method": "wallet"}},
            key=api.key("bowls-alice"),
        )
        await api.call(
            "POST",
            f"/v1/group-buys/{gb_failed['id']}/participants",
            carol_auth,
            json={
                "quantity": 2,
                "payment": {"method": "gateway", "gateway": "stripe", "payment_method": "pm_card_visa"},
            },
            key=api.key("bowls-carol"),
        )

        step("transfer 30.00 alice → bob")
        key = api.key("transfer")
        transfer_body = {
            "from_wallet_id": wallets["alice"],
            "to_wallet_id": wallets["bob"],
            "currency": "USD",
        }
        tr = await api.call(
            "POST",
            "/v1/transfers",
            alice_auth,
            json={**transfer_body, "amount": 3_000, "description": "lunch"},
            key=key,
        )
        record("transfer", "transfer", alice, key, tr["id"], f"/v1/transfers/{tr['id']}", "completed")
        await api.status_of(f"/v1/transfers/{tr['id']}", alice_auth, not_pending)

        step("operator freezes bob's wallet; transfer 20.00 alice → bob is rolled back")
        await api.call("POST", f"/v1/wallets/{wallets['bob']}/freeze", ops_auth)
        key = api.key("transfer-frozen")
        tr2 = await api.call(
            "POST", "/v1/transfers", alice_auth, json={**transfer_body, "amount": 2_000}, key=key
        )
        record(
            "transfer, rolled back", "transfer", alice, key, tr2["id"], f"/v1/transfers/{tr2['id']}", "failed"
        )
        await api.status_of(f"/v1/transfers/{tr2['id']}", alice_auth, not_pending)

        step("split checkout via Stripe: 100.00 (30.00 wallet + 70.00 card)")
        key = api.key("order-stripe")
        split = {"method": "split", "wallet_amount": 3_000}
        order1 = await api.call(
            "POST",
            "/v1/checkouts",
            alice_auth,
            json={
                "merchant_id": shop,
                "currency": "USD",
                "amount": 10_000,
                "payment": {**split, "gateway": "stripe", "payment_method": "pm_card_visa"},
            },
            key=key,
        )
        # Refunded below: its final state is partially_refunded.
        record(
            "checkout split (Stripe)",
            "checkout",
            alice,
            key,
            order1["id"],
            f"/v1/checkouts/{order1['id']}",
            "partially_refunded",
        )
        paid = await api.status_of(f"/v1/checkouts/{order1['id']}", alice_auth, not_pending)
        if paid["status"] != "paid":
            raise DemoError(f"Stripe checkout ended {paid['status']} ({paid.get('failure_code')})")

        step("split checkout via Xendit: 100.00 (30.00 wallet + 70.00 invoice, paid on the emulator)")
        key = api.key("order-xendit")
        order2 = await api.call(
            "POST",
            "/v1/checkouts",
            alice_auth,
            json={
                "merchant_id": shop,
                "currency": "USD",
                "amount": 10_000,
                "payment": {**split, "gateway": "xendit"},
            },
            key=key,
        )
        record(
            "checkout split (Xendit)",
            "checkout",
            alice,
            key,
            order2["id"],
            f"/v1/checkouts/{order2['id']}",
            "paid",
        )
        invoice = (order2.get("next_action") or {}).get("invoice_id")
        if not invoice:
            raise DemoError(f"the Xendit checkout has no invoice to pay: {order2}")
        r = await xendit.post(f"/_control/invoices/{invoice}/pay", json={})
        if r.status_code != 200:
            raise DemoError(
                f"the Xendit emulator did not pay invoice {invoice}: {r.status_code} {r.text[:200]}"
            )
        await api.status_of(f"/v1/checkouts/{order2['id']}", alice_auth, not_pending)

        step("partial refund: the shop refunds 40.00 of the Stripe order")
        key = api.key("refund")
        refund = await api.call(
            "POST",
            f"/v1/checkouts/{order1['id']}/refunds",
            shop_auth,
            json={"amount": 4_000, "reason": "damaged"},
            key=key,
        )
        record(
            "refund, partial", "refund", shop, key, refund["id"], f"/v1/refunds/{refund['id']}", "succeeded"
        )
        await api.status_of(f"/v1/refunds/{refund['id']}", shop_auth, lambda b: b["status"] != "pending")

        step("group buy reaching its MOQ: alice (wallet) and carol (Stripe), production complete")
        key = api.key("mugs")
        gb = await api.call(
            "POST",
            "/v1/group-buys",
            kiln_auth,
            json={
                "product": "Enamel mug",
                "unit_price": 1_000,
                "currency": "USD",
                "moq": 5,
                "max_units": 10,
                "deadline": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                "close_when_moq_reached": True,
            },
            key=key,
        )
        record(
            "group buy, MOQ reached",
            "groupbuy",
            kiln,
            key,
            gb["id"],
            f"/v1/group-buys/{gb['id']}",
            "completed",
        )
        await api.call(
            "POST",
            f"/v1/group-buys/{gb['id']}/participants",
            alice_auth,
            json={"quantity": 2, "payment": {"method": "wallet"}},
            key=api.key("mugs-alice"),
        )
        await api.call(
            "POST",
            f"/v1/group-buys/{gb['id']}/participants",
            carol_auth,
            json={
                "quantity": 3,
                "payment": {"method": "gateway", "gateway": "stripe", "payment_method": "pm_card_visa"},
            },
            key=api.key("mugs-carol"),
        )
        decided = await api.status_of(
            f"/v1/group-buys/{gb['id']}", kiln_auth, lambda b: b["status"] != "open"
        )
        if decided["status"] != "succeeded":
            raise DemoError(f"group buy ended {decided['status']} ({decided.get('failure_code')})")

        async def orders_made() -> bool:
            ps = await api.call("GET", f"/v1/group-buys/{gb['id']}/participants", kiln_auth)
            return bool(ps) and all(p.get("order_id") for p in ps)

        await until(orders_made, what="an order for every group-buy participant")
        await api.call("POST", f"/v1/group-buys/{gb['id']}/production-complete", kiln_auth)

        step(f"waiting for the MOQ-missed group buy (deadline {deadline:%H:%M:%S} UTC) to refund everyone")
        await until(
            lambda: _status_is(api, f"/v1/group-buys/{gb_failed['id']}", kiln_auth, {"refunded"}),
            within=failed_group_buy_deadline + STEP_TIMEOUT,
            what="the failed group buy to be refunded",
        )

        step("reading the final state of every saga")
        auths = {alice: alice_auth, shop: shop_auth, kiln: kiln_auth}
        for o in outcomes:
            owner = o.workflow_id.split(":")[1]
            body = await api.call("GET", o.resource_path, auths[owner])
            o.status, o.failure_code = body["status"], body.get("failure_code")
    return outcomes


async def _status_is(api: Api, path: str, auth: dict[str, str], statuses: set[str]) -> bool:
    return (await api.call("GET", path, auth))["status"] in statuses


def outcomes_table(outcomes: list[SagaOutcome]) -> Table:
    table = Table(title="payweave demo: what happened")
    for column in ("saga", "workflow id", "resource id", "final status", "expected", "Web UI"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        colour = "green" if o.ok else "red"
        status = o.status + (f" ({o.failure_code})" if o.failure_code else "")
        table.add_row(
            o.saga, o.workflow_id, o.resource_id, f"[{colour}]{status}[/{colour}]", o.expected, o.ui_url
        )
    return table


STEPS = 11  # on_step calls in run_demo


def run_demo_cli(settings: Settings, *, api_url: str | None = None, xendit_url: str | None = None) -> int:
    console = Console()
    api_url = api_url or settings.public_base_url
    xendit_url = xendit_url or settings.xendit_api_base
    if not xendit_url:
        console.print("[red]error:[/red] no Xendit emulator URL (PAYWEAVE_XENDIT_API_BASE or --xendit-url)")
        return 2
    try:
        httpx.get(f"{api_url.rstrip('/')}/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        console.print(
            f"[red]error:[/red] the API at {api_url} does not answer ({exc}). Is `payweave dev` running?"
        )
        return 2
    run = uuid.uuid4().hex[:8]
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=STEPS)
        seen: list[str] = []

        def on_step(description: str) -> None:
            if seen:
                progress.console.print(f"[green]✓[/green] {seen[-1]}")
                progress.advance(task)
            seen.append(description)
            progress.update(task, description=description)

        try:
            outcomes = asyncio.run(
                run_demo(settings, api_url=api_url, xendit_url=xendit_url, on_step=on_step, run=run)
            )
        except (DemoError, RuntimeError, httpx.HTTPError) as exc:
            progress.stop()
            console.print(f"[red]demo failed[/red] at “{seen[-1] if seen else 'start'}”: {exc}")
            return 1
        progress.console.print(f"[green]✓[/green] {seen[-1]}")
        progress.update(task, completed=STEPS, description="done")
    console.print(outcomes_table(outcomes))
    console.print(
        f"All of this run's sagas: payweave sagas list --owner alice-{run} (also bob-, shop-, kiln-, carol-{run})"
    )
    bad = [o for o in outcomes if not o.ok]
    if bad:
        console.print(f"[red]{len(bad)} sagas did not end as expected[/red]")
        return 1
    return 0
