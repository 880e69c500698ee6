"""Run a chaos plan against a real stack: submit the seeded sagas through the HTTP API while the plan's faults
happen — a ``payweave worker`` process SIGKILLed and restarted, the Temporal dev server restarted on its
persistent file, every PostgreSQL backend terminated, activities crashing right after their commit (the
seeded ``payweave.faults`` hook in the worker process) and gateway answers lost after the work (a seeded lossy
proxy in front of localstripe) — then check liveness (every saga terminal within ``liveness_seconds`` after the
last fault), the outcomes, money conservation over the run's wallets, one gateway object per payment
(localstripe) and ``verify_ledger`` (I1–I4, transit, clearing)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.verify import Violation, verify_ledger
from payweave.chaos.gateways import stripe_intents
from payweave.chaos.inject import LossyGateway, TemporalServer, terminate_backends
from payweave.chaos.plan import ChaosPlan, FaultEvent, SagaSpec
from payweave.chaos.worker import WorkerProcess, settings_env
from payweave.faults import CRASH_LOG, Seeded
from payweave.settings import Settings
from payweave.tokens import issue_token

T = TypeVar("T")

TERMINAL = {
    "deposit": {"succeeded", "failed", "expired", "canceled"},
    "transfer": {"completed", "failed"},
    "checkout": {"paid", "failed", "expired", "canceled", "refunded"},
}
EXPECTED = {
    "deposit": ("succeeded", None),
    "transfer": ("completed", None),
    "transfer_to_frozen": ("failed", "wallet_frozen"),
    "split_checkout": ("paid", None),
}


async def until(probe: Callable[[], Awaitable[T]], *, within: float, interval: float = 0.05) -> T:
    """Poll ``probe()`` until it returns a truthy value (a condition, not the clock); TimeoutError after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {within}s (last value {value!r})")
        await asyncio.sleep(interval)


@dataclass
class ChaosStack:
    """Where to run. ``settings`` must name the databases, the gateways and the JWT secret of the stack;
    its task queue is replaced by a fresh one (``chaos-<seed>-<hex>``) unless ``api_url`` is given, in which
    case that API's queue (``settings.temporal_task_queue``) is used and no other worker may poll it for the
    kills to mean anything. Without ``api_url`` the harness serves its own API in-process on a free port
    (starting workflows on the chaos queue); ``temporal_address`` is then required for both — unless the plan
    restarts Temporal: then the harness runs its own dev server on ``temporal_db`` (default: a new file in
    ``log_dir``) and the API and the worker use that one. Localstripe's webhooks still go to the stack's API,
    which finds no such workflow on its own server and stores them; the sagas do not need them (the payer's
    card is confirmed server-side, and a payment is always confirmed by look-up)."""

    settings: Settings
    wallet_engine: AsyncEngine
    payments_engine: AsyncEngine
    log_dir: Path
    temporal_address: str | None = None
    api_url: str | None = None
    temporal_db: Path | None = None


@dataclass
class Submitted:
    spec: SagaSpec
    path: str  # GET path of the saga's resource
    accepted: dict[str, Any]
    submitted_at: float
    final: dict[str, Any] | None = None
    terminal_at: float | None = None


@dataclass
class ChaosReport:
    plan: ChaosPlan
    task_queue: str = ""
    worker_starts: int = 0
    worker_kills: int = 0
    kill_pids: list[int] = field(default_factory=list)
    worker_deaths: int = 0  # the worker exited on its own (e.g. with its Temporal server) and was restarted
    temporal_restarts: int = 0
    pg_terminations: int = 0
    backends_terminated: int = 0
    crashes_after_commit: int = 0  # injected in the worker process (counted from its log)
    gateway_answers_lost: list[tuple[str, str]] = field(default_factory=list)  # (workflow id, mode)
    api_unavailable: int = 0  # 503 answers to a POST (asked again with the same key)
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    not_terminal: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    liveness_seconds: float = 0.0  # last saga terminal, counted from the last restart (faults stopped)
    ledger_violations: list[Violation] = field(default_factory=list)
    ledger_stats: dict[str, int] = field(default_factory=dict)
    gateway_objects: dict[str, int] = field(default_factory=dict)  # payment id → localstripe intents
    gateway_duplicates: dict[str, int] = field(default_factory=dict)
    gateway_missing: list[str] = field(default_factory=list)
    money_expected: int = 0
    money_actual: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.unexpected
            or self.not_terminal
            or self.errors
            or self.ledger_violations
            or self.gateway_duplicates
            or self.gateway_missing
            or self.money_expected != self.money_actual
            or self.worker_kills != len(self.plan.kill_after)
            or self.temporal_restarts != self.plan.count("temporal_restart")
            or self.pg_terminations != self.plan.count("pg_terminate")
        )

    def summary(self) -> str:
        lines = [
            self.plan.describe(),
            f"task queue {self.task_queue}; worker starts {self.worker_starts}, SIGKILLs {self.worker_kills}"
            f" (pids {self.kill_pids}), exits on its own {self.worker_deaths}",
            f"Temporal restarts {self.temporal_restarts}; PostgreSQL terminations {self.pg_terminations}"
            f" ({self.backends_terminated} backends); activity crashes after commit {self.crashes_after_commit};"
            f" gateway answers lost {len(self.gateway_answers_lost)}"
            f" {dict(Counter(m for _, m in self.gateway_answers_lost))}; API 503s asked again {self.api_unavailable}",
            f"outcomes {dict(sorted(self.outcomes.items()))}",
            f"liveness: every saga terminal {self.liveness_seconds:.1f}s after the last restart"
            if not self.not_terminal
            else f"NOT TERMINAL: {self.not_terminal}",
            f"money over the run's wallets: expected {self.money_expected}, actual {self.money_actual}",
            f"gateway objects: {len(self.gateway_objects)} payments, "
            f"{sum(self.gateway_objects.values())} localstripe intents, duplicates {self.gateway_duplicates},"
            f" missing {self.gateway_missing}",
            f"ledger verify: {'ok' if not self.ledger_violations else 'VIOLATIONS'} {self.ledger_stats}",
            "timings " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
        ]
        lines += [f"unexpected: {u}" for u in self.unexpected]
        lines += [f"error: {e}" for e in self.errors]
        lines += [f"violation {v.check}: {v.rows}" for v in self.ledger_violations]
        lines.append("RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


ATTEMPTS = 8


class _Api:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, run: str) -> None:
        self.http = http
        self.settings = settings
        self.run = run
        self.unavailable = 0  # 503 answers, asked again

    def user(self, name: str, *roles: str) -> tuple[str, dict[str, str]]:
        sub = f"chaos-{self.run}-{name}"
        token = issue_token(self.settings, sub=sub, roles=list(roles or ("customer",)))
        return sub, {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: dict[str, Any], auth: dict[str, str], key: str | None) -> Any:
        headers = dict(auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        # A client that got no answer, or a 503 (unavailable: retry later), asks again with the same key: one
        # saga either way. Any other answer counts (a 500 is a finding, not something to retry away).
        for attempt in range(ATTEMPTS):
            try:
                r = await self.http.post(path, json=body, headers=headers)
            except httpx.TransportError:
                if key is None or attempt == ATTEMPTS - 1:
                    raise
                continue
            if r.status_code == 503 and key is not None and attempt < ATTEMPTS - 1:
                self.unavailable += 1
                await asyncio.sleep(0.5 * (attempt + 1))  # the client's back-off
                continue
            break
        if r.status_code not in (200, 201, 202):
            raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text}")
        return r.json()

    async def get(self, path: str, auth: dict[str, str]) -> Any:
        r = await self.http.get(path, headers=auth)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path} answered {r.status_code}: {r.text}")
        return r.json()


async def start_api(settings: Settings, temporal_address: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """The payweave API served in-process on a free port, starting sagas on ``settings.temporal_task_queue``;
    returns its URL and how to stop it."""
    import uvicorn

    from api.main import create_app
    from payweave.devstack.supervisor import free_port
    from workers.client import connect

    client = await connect(settings.model_copy(update={"temporal_address": temporal_address}))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, temporal=client),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=60,
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await until(started, within=30)

    async def stop() -> None:
        server.should_exit = True
        await task

    return f"http://127.0.0.1:{port}", stop


async def run_chaos(
    stack: ChaosStack,
    plan: ChaosPlan,
    *,
    liveness_seconds: float = 120.0,
    concurrency: int = 32,
    log: Callable[[str], None] = lambda line: None,
) -> ChaosReport:
    report = ChaosReport(plan)
    run = f"{plan.seed}-{uuid.uuid4().hex[:6]}"
    settings = stack.settings
    temporal: TemporalServer | None = None
    proxy: LossyGateway | None = None
    worker: WorkerProcess | None = None
    stop_api: Callable[[], Awaitable[None]] | None = None
    t0 = time.monotonic()
    try:
        temporal_address = stack.temporal_address
        if plan.count("temporal_restart"):
            if stack.api_url is not None:
                raise ValueError(
                    "Temporal restarts need the harness's own Temporal server and API (no api_url)"
                )
            db_file = stack.temporal_db or stack.log_dir / f"chaos-temporal-{run}.db"
            temporal = TemporalServer(db_file, stack.log_dir / f"chaos-temporal-{run}.log")
            stack.log_dir.mkdir(parents=True, exist_ok=True)
            await temporal.start()
            temporal_address = temporal.address
            log(f"own Temporal dev server on {temporal.address}, file {db_file}")
        if stack.api_url is None:
            if temporal_address is None:
                raise ValueError("temporal_address is needed to serve the harness's own API")
            settings = settings.model_copy(update={"temporal_task_queue": f"chaos-{run}"})
        overrides: dict[str, object] = {}
        if temporal_address is not None:
            overrides["temporal_address"] = temporal_address
        if plan.gateway_timeouts > 0:
            if settings.stripe_api_base is None:
                raise ValueError("gateway answers can only be lost in front of localstripe (stripe_api_base)")
            proxy = LossyGateway(settings.stripe_api_base, plan.seed, plan.gateway_timeouts, strip=run)
            overrides["stripe_api_base"] = await proxy.start()
        env = settings_env(settings, **overrides)
        if plan.crash_after_commit > 0:
            env |= Seeded(plan.seed, plan.crash_after_commit, strip=run).env()
        report.task_queue = settings.temporal_task_queue
        worker = WorkerProcess(env, stack.log_dir / f"chaos-worker-{run}.log")
        worker.start()
        await until(_ready(worker), within=60)
        api_url = stack.api_url
        if api_url is None:
            assert temporal_address is not None
            api_url, stop_api = await start_api(settings, temporal_address)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30)
        async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as http:
            api = _Api(http, settings, run)
            ctx = await _setup(api, plan, liveness_seconds)
            report.seconds["setup"] = time.monotonic() - t0
            log(f"setup done in {report.seconds['setup']:.1f}s; {plan.describe()}")
            t1 = time.monotonic()
            gate = asyncio.Semaphore(concurrency)
            submitted: list[Submitted] = []
            submissions = asyncio.create_task(_submit_all(api, plan, ctx, gate, submitted, report))
            await _faults(_Parts(worker, temporal, stack.wallet_engine), plan, report, log)
            faults_stopped = time.monotonic()
            report.seconds["faults"] = faults_stopped - t1
            await submissions
            report.api_unavailable = api.unavailable
            await _until_terminal(api, ctx, submitted, report, faults_stopped, liveness_seconds)
            report.seconds["liveness"] = time.monotonic() - faults_stopped
            _outcomes(submitted, report)
            await _conservation(stack, ctx, submitted, report)
            await _gateway_objects(stack, stack.settings, ctx, report)
        ledger = await verify_ledger(stack.wallet_engine, stack.payments_engine)
        report.ledger_violations = ledger.violations
        report.ledger_stats = ledger.stats
    finally:
        if worker is not None:
            report.worker_starts, report.worker_kills = worker.starts, worker.kills
            worker.stop()
            report.crashes_after_commit = worker.log_path.read_text(errors="replace").count(CRASH_LOG)
        if stop_api is not None:
            await stop_api()
        if proxy is not None:
            report.gateway_answers_lost = list(proxy.lost)
            await proxy.stop()
        if temporal is not None:
            await temporal.stop()
    report.seconds["total"] = time.monotonic() - t0
    return report


async def kill_and_restart(worker: WorkerProcess, down: float) -> int:
    """SIGKILL the worker, leave it dead ``down`` seconds, start it again and wait until it polls; its pid."""
    pid = worker.pid
    worker.kill()
    await asyncio.sleep(down)  # the outage itself
    worker.start()
    await until(_ready(worker), within=60)
    return pid


def _ready(worker: WorkerProcess) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return worker.ready()

    return probe


@dataclass
class _Ctx:
    customers: list[tuple[str, dict[str, str], str]]  # sub, auth, wallet id
    frozen_wallets: list[str]
    merchant: tuple[str, dict[str, str], str]
    product_id: str
    subs: list[str]


async def _setup(api: _Api, plan: ChaosPlan, wait: float) -> _Ctx:
    """Users, funded wallets, frozen wallets and a merchant's product, with the worker up and no faults."""

    async def wallet_of(name: str, *roles: str) -> tuple[str, dict[str, str], str]:
        sub, auth = api.user(name, *roles)
        w = await api.post("/v1/wallets", {"currency": "USD"}, auth, None)
        return sub, auth, str(w["id"])

    customers = list(await asyncio.gather(*(wallet_of(f"c{i}") for i in range(plan.customers))))
    frozen = list(await asyncio.gather(*(wallet_of(f"f{i}") for i in range(plan.frozen))))
    merchant = await wallet_of("m", "merchant")
    _, operator = api.user("ops", "operator")
    for _, _, wid in frozen:
        await api.post(f"/v1/wallets/{wid}/freeze", {}, operator, None)
    product = await api.post(
        "/v1/products",
        {"name": "chaos widget", "price": plan.price, "currency": "USD", "stock": len(plan.sagas) + 10},
        merchant[1],
        None,
    )

    async def fund(c: tuple[str, dict[str, str], str]) -> None:
        d = await api.post(
            f"/v1/wallets/{c[2]}/deposits",
            {"amount": plan.funding, "payment_method": "pm_card_visa"},
            c[1],
            f"fund-{c[0]}",
        )

        async def done() -> Any:
            body = await api.get(f"/v1/deposits/{d['id']}", c[1])
            return body if body["status"] in TERMINAL["deposit"] else None

        final = await until(done, within=wait)
        if final["status"] != "succeeded":
            raise RuntimeError(f"funding deposit {final}")

    await asyncio.gather(*(fund(c) for c in customers))
    return _Ctx(
        customers=customers,
        frozen_wallets=[w for _, _, w in frozen],
        merchant=merchant,
        product_id=str(product["id"]),
        subs=[c[0] for c in customers] + [f[0] for f in frozen] + [merchant[0]],
    )


async def _submit_one(api: _Api, plan: ChaosPlan, ctx: _Ctx, spec: SagaSpec) -> Submitted:
    sub, auth, wid = ctx.customers[spec.customer]
    key = f"chaos-{api.run}-{spec.index}"
    if spec.kind == "deposit":
        body: dict[str, Any] = {"amount": spec.amount, "payment_method": "pm_card_visa"}
        r = await api.post(f"/v1/wallets/{wid}/deposits", body, auth, key)
        path = f"/v1/deposits/{r['id']}"
    elif spec.kind in ("transfer", "transfer_to_frozen"):
        to = ctx.customers[spec.peer][2] if spec.kind == "transfer" else ctx.frozen_wallets[spec.peer]
        body = {"from_wallet_id": wid, "to_wallet_id": to, "amount": spec.amount, "currency": "USD"}
        r = await api.post("/v1/transfers", body, auth, key)
        path = f"/v1/transfers/{r['id']}"
    else:
        body = {
            "merchant_id": ctx.merchant[0],
            "currency": "USD",
            "items": [{"product_id": ctx.product_id, "quantity": 1}],
            "payment": {
                "method": "split",
                "wallet_amount": spec.amount,
                "gateway": "stripe",
                "payment_method": "pm_card_visa",
            },
        }
        r = await api.post("/v1/checkouts", body, auth, key)
        path = f"/v1/checkouts/{r['id']}"
    return Submitted(spec, path, r, time.monotonic())


async def _submit_all(
    api: _Api,
    plan: ChaosPlan,
    ctx: _Ctx,
    gate: asyncio.Semaphore,
    out: list[Submitted],
    report: ChaosReport,
) -> None:
    async def one(spec: SagaSpec) -> None:
        async with gate:
            try:
                out.append(await _submit_one(api, plan, ctx, spec))
            except Exception as exc:  # an API error is a finding, not a crash of the harness
                report.errors.append(f"saga {spec.index} ({spec.kind}) not accepted: {exc!r}")

    tasks = []
    for spec in plan.sagas:
        await asyncio.sleep(spec.gap)  # pacing from the plan, so sagas are in flight at every kill
        tasks.append(asyncio.create_task(one(spec)))
    await asyncio.gather(*tasks)


@dataclass
class _Parts:
    """What the fault schedule acts on."""

    worker: WorkerProcess
    temporal: TemporalServer | None
    wallet_engine: AsyncEngine


async def _worker_polling(worker: WorkerProcess, report: ChaosReport, log: Callable[[str], None]) -> None:
    """A worker that exited on its own (not killed by us) is started again, as a supervisor would."""
    if worker.process is not None and worker.process.poll() is not None:
        report.worker_deaths += 1
        log(f"worker exited on its own ({worker.process.returncode}): starting it again")
        worker.start()
        await until(_ready(worker), within=60)


async def _fault(parts: _Parts, event: FaultEvent, report: ChaosReport, log: Callable[[str], None]) -> str:
    if event.kind == "worker_kill":
        pid = await kill_and_restart(parts.worker, event.down)
        report.kill_pids.append(pid)
        return f"SIGKILL worker pid {pid}"
    if event.kind == "temporal_restart":
        assert parts.temporal is not None
        await parts.temporal.restart(event.down)
        report.temporal_restarts += 1
        return "Temporal dev server restarted on its file"
    killed = await terminate_backends(parts.wallet_engine)
    report.pg_terminations += 1
    report.backends_terminated += killed
    return f"pg_terminate_backend: {killed} backends"


async def _faults(parts: _Parts, plan: ChaosPlan, report: ChaosReport, log: Callable[[str], None]) -> None:
    for i, event in enumerate(plan.events):
        await asyncio.sleep(event.after)  # the fault schedule itself: seconds after the previous recovery
        what = await _fault(parts, event, report, log)
        log(f"fault {i + 1}/{len(plan.events)}: {what}")
        await _worker_polling(parts.worker, report, log)


async def _until_terminal(
    api: _Api,
    ctx: _Ctx,
    submitted: list[Submitted],
    report: ChaosReport,
    faults_stopped: float,
    wait: float,
) -> None:
    auth_of = {c[0]: c[1] for c in ctx.customers}
    subs = [c[0] for c in ctx.customers]
    kind_of = {"deposits": "deposit", "transfers": "transfer", "checkouts": "checkout"}

    async def all_terminal() -> bool:
        pending = [s for s in submitted if s.final is None]
        for s in pending:
            # 404 until the saga's first step has recorded it (e.g. a checkout accepted while the worker is dead)
            r = await api.http.get(s.path, headers=auth_of[subs[s.spec.customer]])
            if r.status_code == 404:
                continue
            if r.status_code != 200:
                raise RuntimeError(f"GET {s.path} answered {r.status_code}: {r.text}")
            body = r.json()
            if body["status"] in TERMINAL[kind_of[s.path.split("/")[2]]]:
                s.final, s.terminal_at = body, time.monotonic()
        return all(s.final is not None for s in submitted)

    try:
        await until(all_terminal, within=wait, interval=0.2)
    except TimeoutError:
        report.not_terminal = [f"{s.spec.kind} {s.path}" for s in submitted if s.final is None]
    times = [s.terminal_at for s in submitted if s.terminal_at is not None]
    report.liveness_seconds = max(0.0, max(times, default=faults_stopped) - faults_stopped)


def _outcomes(submitted: list[Submitted], report: ChaosReport) -> None:
    for s in submitted:
        if s.final is None:
            continue
        got = (s.final["status"], s.final.get("failure_code"))
        report.outcomes[f"{s.spec.kind}:{got[0]}"] += 1
        if got != EXPECTED[s.spec.kind]:
            report.unexpected.append(f"{s.spec.kind} {s.path}: {got}, expected {EXPECTED[s.spec.kind]}")


async def _conservation(
    stack: ChaosStack, ctx: _Ctx, submitted: list[Submitted], report: ChaosReport
) -> None:
    """Money in the run's wallets = what came in through the gateway: the funding deposits, the chaos
    deposits that succeeded and the gateway part of every paid checkout. Transfers and the wallet part of a
    checkout only move money between these wallets."""
    plan = report.plan
    expected = plan.funding * plan.customers
    for s in submitted:
        if s.final is None:
            continue
        if s.spec.kind == "deposit" and s.final["status"] == "succeeded":
            expected += s.spec.amount
        if s.spec.kind == "split_checkout" and s.final["status"] == "paid":
            expected += int(s.accepted["gateway_amount"])
    wallets = [c[2] for c in ctx.customers] + ctx.frozen_wallets + [ctx.merchant[2]]
    async with stack.wallet_engine.connect() as conn:
        actual = (
            await conn.execute(
                text("SELECT coalesce(sum(balance), 0) FROM wallets WHERE id = ANY(:ids)"), {"ids": wallets}
            )
        ).scalar_one()
    report.money_expected, report.money_actual = expected, int(actual)


async def _gateway_objects(stack: ChaosStack, settings: Settings, ctx: _Ctx, report: ChaosReport) -> None:
    """Every Stripe payment of the run's users against the PaymentIntents localstripe holds (by the
    ``payment_id`` metadata the sagas send): exactly one each."""
    async with stack.payments_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, gateway_payment_id FROM payments WHERE gateway = 'stripe' AND owner = ANY(:subs)"
                ),
                {"subs": ctx.subs},
            )
        ).all()
    if settings.stripe_api_base is None:  # the real Stripe: not listed here (reconciliation's job)
        return
    intents = await stripe_intents(settings, "payment_id")
    for payment_id, gateway_id in rows:
        n = len(intents.get(str(payment_id), []))
        report.gateway_objects[str(payment_id)] = n
        if n > 1:
            report.gateway_duplicates[str(payment_id)] = n
        if gateway_id is not None and n == 0:
            report.gateway_missing.append(str(payment_id))
