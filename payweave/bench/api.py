"""B7 (QUALITY.md): API latency at a fixed arrival rate, measured as production deploys it: the API is its own
``payweave api`` process (uvicorn, the production app and settings) and the load comes from another process
(``payweave.bench.loadgen``, open loop: a request every 1/rate s whether or not the previous one finished) over
real HTTP on loopback:

* POST /v1/checkouts (wallet payment of an amount): the start latency a buyer sees — idempotency key claimed
  and order recorded, wallets read, CheckoutWorkflow started (a wallet checkout is answered then).
  The value is the **API tier's**: while it is measured, no worker polls the API's task queue, as in
  production where the workers are a tier of their own (docker-compose.yml) and do not take the API's cores.
  Then a worker runs every checkout it started to ``paid`` (checked). The same load is measured again with that
  worker running the sagas on the same two cores (``colocated_*`` in the details): at 50 req/s the sagas need
  most of this machine (B1), so that figure is the machine's saturation more than the API's latency;
* POST /v1/webhooks/stripe: the acknowledgement latency of a signed ``payment_intent.succeeded`` event
  (signature check, owner look-up, stored once) for an intent no saga owns, so nothing is signalled;
* baseline for both: GET /healthz at the same rate on the same server (HTTP + ASGI floor of that process).

``ratio`` is baseline p99 / p99 (the share of the latency that is the HTTP floor)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from payweave.bench.common import fund_wallets, percentiles, tag
from payweave.bench.harness import Stack
from payweave.bench.loadgen import REQUEST_TIMEOUT_S
from payweave.bench.report import Result
from payweave.chaos.worker import REPO_ROOT, settings_env
from payweave.contracts.sagas import CheckoutStatus
from payweave.devstack.supervisor import free_port
from payweave.settings import Settings
from payweave.tokens import issue_token

CHECKOUT_P99_MS = 50.0
WEBHOOK_P99_MS = 20.0


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWEAVE_")} | extra
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn_api(settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    with open(log_dir / "api.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "payweave.cli", "api"],
            cwd=log_dir,
            env=_child_env(settings_env(settings)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@asynccontextmanager
async def api_process(
    stack: Stack, log_dir: Path, task_queue: str | None = None
) -> AsyncIterator[tuple[str, Settings]]:
    """``payweave api`` as its own process on a free port, on the stack's databases and Temporal, starting sagas
    on ``task_queue`` (default: the stack's, which the bench process's worker polls)."""
    port = free_port()
    settings = stack.settings.model_copy(
        update={
            "temporal_task_queue": task_queue or stack.settings.temporal_task_queue,
            "stripe_webhook_secret": SecretStr("whsec_bench_" + uuid.uuid4().hex),
            "jwt_secret": SecretStr("bench-" + uuid.uuid4().hex),
            "public_base_url": f"http://127.0.0.1:{port}",
            "api_host": "127.0.0.1",
            "api_port": port,
            "temporal_address": stack.client.service_client.config.target_host,
        }
    )
    process = _spawn_api(settings, log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(600):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"payweave api exited with {process.returncode}: see {log_dir / 'api.log'}"
                    )
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("payweave api did not get ready within 60 s")
        yield url, settings
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def load(spec: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Run the load generator process on ``spec``; its JSON result (latencies, errors)."""
    path = work_dir / f"load-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(spec))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payweave.bench.loadgen",
        str(path),
        cwd=work_dir,
        env=_child_env({}),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


async def _checkouts(
    stack: Stack, url: str, settings: Settings, n: int
) -> tuple[str, dict[str, Any], list[str]]:
    """n funded buyers and one merchant: (run tag, the checkout load spec without rate/n, a token per buyer)."""
    run = tag()
    buyers = [f"bench-{run}-b{i}" for i in range(n)]
    merchant = f"bench-{run}-m"
    await fund_wallets(stack, buyers, 1_000)
    await fund_wallets(stack, [merchant], 0)
    tokens = [issue_token(settings, sub=b, roles=["customer"]) for b in buyers]
    checkout = {
        "kind": "checkout",
        "url": url,
        "body": {
            "merchant_id": merchant,
            "currency": "USD",
            "amount": 1_000,
            "payment": {"method": "wallet"},
        },
    }
    return run, checkout, tokens


async def _all_paid(stack: Stack, order_ids: list[str]) -> int:
    """Wait for the checkout saga of every order to end; how many ended ``paid``."""
    async with stack.payments_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT workflow_id FROM orders WHERE id = ANY(:ids)"), {"ids": order_ids}
        )
        workflow_ids = [r[0] for r in rows]
    results = await asyncio.gather(
        *(stack.client.get_workflow_handle(w, result_type=CheckoutStatus).result() for w in workflow_ids),
        return_exceptions=True,
    )
    return sum(1 for r in results if isinstance(r, CheckoutStatus) and r.status == "paid")


async def _run(
    stack: Stack, url: str, settings: Settings, work_dir: Path, n: int, rate: float
) -> list[Result]:
    from workers.main import build_worker  # noqa: PLC0415 — the worker pulls in every workflow

    light_n = max(1, n // 10)
    run, checkout, tokens = await _checkouts(stack, url, settings, 2 * n + light_n)
    base = await load({"kind": "health", "url": url, "rate": rate, "n": n}, work_dir)
    secret = settings.stripe_webhook_secrets()[0]
    acked = await load(
        {"kind": "webhook", "url": url, "rate": rate, "n": n, "run": run, "secret": secret}, work_dir
    )
    # The API tier alone: nothing polls its task queue yet, so the sagas it starts wait in Temporal.
    started = await load({**checkout, "rate": rate, "n": n, "tokens": tokens[:n]}, work_dir)
    worker = build_worker(
        stack.client,
        settings,
        wallet_engine=stack.wallet_engine,
        payments_engine=stack.payments_engine,
    )
    async with worker:
        paid = await _all_paid(stack, started["accepted"])
        # With that worker running the sagas on the same cores: at a tenth of the rate (below the saga
        # throughput), then at the rate. Checkouts last: their sagas keep the worker busy after the last request.
        light = await load({**checkout, "rate": rate / 10, "n": light_n, "tokens": tokens[2 * n :]}, work_dir)
        colocated = await load({**checkout, "rate": rate, "n": n, "tokens": tokens[n : 2 * n]}, work_dir)
        paid_colocated = await _all_paid(stack, colocated["accepted"])
    l50, l99 = percentiles(light["latencies_s"])
    k50, k99 = percentiles(colocated["latencies_s"])
    (base50, base99), (c50, c99), (w50, w99) = (percentiles(x["latencies_s"]) for x in (base, started, acked))
    details = {
        "run": run,
        "requests": n,
        "rate_per_s": rate,
        "processes": "API (payweave api), load generator, worker (bench process): one each",
        "baseline": "GET /healthz, same rate",
        "baseline_p50_ms": base50,
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "baseline_errors": base["errors"],
    }
    return [
        Result(
            id="B7",
            name=f"API POST /v1/checkouts start latency at {rate:.0f} req/s (API tier)",
            value=c99,
            unit="ms p99",
            baseline=base99,
            ratio=base99 / c99 if c99 else 0.0,
            target=f"p99 ≤ {CHECKOUT_P99_MS:.0f} ms",
            meets_target=c99 <= CHECKOUT_P99_MS and not started["errors"] and paid == n,
            p50_ms=c50,
            p99_ms=c99,
            details={
                **details,
                "measured": "API tier: no worker polls the API's task queue meanwhile (workers are their own "
                "tier); a worker then ran every started checkout",
                "errors": started["errors"],
                "first_errors": started["first_errors"],
                "sagas_paid_afterwards": paid,
                "colocated_p50_ms": k50,
                "colocated_p99_ms": k99,
                "colocated_errors": colocated["errors"],
                "colocated_sagas_paid": paid_colocated,
                f"colocated_p50_ms_at_{rate / 10:g}_per_s": l50,
                f"colocated_p99_ms_at_{rate / 10:g}_per_s": l99,
                f"colocated_errors_at_{rate / 10:g}_per_s": light["errors"],
            },
        ),
        Result(
            id="B7-webhook",
            name=f"API Stripe webhook ack latency at {rate:.0f} req/s",
            value=w99,
            unit="ms p99",
            baseline=base99,
            ratio=base99 / w99 if w99 else 0.0,
            target=f"p99 ≤ {WEBHOOK_P99_MS:.0f} ms",
            meets_target=w99 <= WEBHOOK_P99_MS and not acked["errors"],
            p50_ms=w50,
            p99_ms=w99,
            details={**details, "errors": acked["errors"], "first_errors": acked["first_errors"]},
        ),
    ]


async def latency(stack: Stack, seconds: float = 30.0, rate: float = 50.0) -> list[Result]:
    n = max(1, int(seconds * rate))
    with tempfile.TemporaryDirectory(prefix="payweave-bench-api-") as tmp:
        work_dir = Path(tmp)
        queue = (
            f"{stack.settings.temporal_task_queue}-api-{tag()}"  # polled only once the API tier is measured
        )
        async with api_process(stack, work_dir, queue) as (url, settings):
            return await _run(stack, url, settings, work_dir, n, rate)


async def checkout_latency_by_rate(
    stack: Stack, rates: list[float], seconds: float
) -> list[tuple[float, int, float, float, int]]:
    """POST /v1/checkouts start latency at each arrival rate on one API process: (rate, requests, p50 ms,
    p99 ms, errors) — where the p99 target holds on this machine (docs/benchmarks.md)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="payweave-bench-api-") as tmp:
        work_dir = Path(tmp)
        async with api_process(stack, work_dir) as (url, settings):
            for rate in rates:
                n = max(1, int(seconds * rate))
                _, checkout, tokens = await _checkouts(stack, url, settings, n)
                result = await load({**checkout, "rate": rate, "n": n, "tokens": tokens}, work_dir)
                p50, p99 = percentiles(result["latencies_s"])
                out.append((rate, n, p50, p99, int(result["errors"])))
    return out
