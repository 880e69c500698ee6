"""B7 (QUALITY.md): API latency at a fixed arrival rate (open loop: a request every 1/rate s whether or not the
previous one finished), against the API served by uvicorn in this process over real HTTP on loopback:

* POST /v1/checkouts (wallet payment of an amount): the start latency a buyer sees — idempotency key claimed,
  wallets read, CheckoutWorkflow started and its ``accepted`` Update answered (the worker runs the saga meanwhile);
* POST /v1/webhooks/stripe: the acknowledgement latency of a signed ``payment_intent.succeeded`` event
  (signature check, owner look-up, stored once) for an intent no saga owns, so nothing is signalled;
* baseline for both: GET /healthz at the same rate on the same server (HTTP + ASGI floor of this process).

``ratio`` is baseline p99 / p99 (the share of the latency that is the HTTP floor)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from payweave.bench.common import Api, api_server, fund_wallets, percentiles, tag
from payweave.bench.harness import Stack
from payweave.bench.report import Result

CHECKOUT_P99_MS = 50.0
WEBHOOK_P99_MS = 20.0
REQUEST_TIMEOUT_S = 10.0


async def paced(
    rate: float, n: int, one: Callable[[int], Awaitable[None]], failures: list[str] | None = None
) -> tuple[list[float], int]:
    """Fire ``one(i)`` at ``rate`` per second (open loop): the latency of each (a failed or timed-out request
    counts with the time it took) and the number that failed."""
    latencies: list[float] = []
    errors = 0

    async def timed(i: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await one(i)
        except (httpx.HTTPError, RuntimeError) as exc:
            errors += 1
            if failures is not None and len(failures) < 3:
                failures.append(repr(exc)[:300])
        latencies.append(time.perf_counter() - started)

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies, errors


def stripe_signature(payload: bytes, secret: str) -> str:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


async def _run(stack: Stack, api: Api, http: httpx.AsyncClient, n: int, rate: float) -> list[Result]:
    run = tag()
    buyers = [f"bench-{run}-b{i}" for i in range(n)]
    merchant = f"bench-{run}-m"
    await fund_wallets(stack, buyers, 1_000)
    await fund_wallets(stack, [merchant], 0)
    auths = [api.auth(b) for b in buyers]

    async def checkout(i: int) -> None:
        r = await http.post(
            "/v1/checkouts",
            json={
                "merchant_id": merchant,
                "currency": "USD",
                "amount": 1_000,
                "payment": {"method": "wallet"},
            },
            headers={**auths[i], "Idempotency-Key": uuid.uuid4().hex},
        )
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/checkouts answered {r.status_code}: {r.text}")

    secret = api.settings.stripe_webhook_secrets()[0]

    async def webhook(i: int) -> None:
        payload = json.dumps(
            {
                "id": f"evt_bench_{run}_{i}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {
                        "id": f"pi_bench_{run}_{i}",
                        "object": "payment_intent",
                        "amount": 1_000,
                        "currency": "usd",
                        "status": "succeeded",
                        "metadata": {},
                    }
                },
            }
        ).encode()
        r = await http.post(
            "/v1/webhooks/stripe",
            content=payload,
            headers={
                "Stripe-Signature": stripe_signature(payload, secret),
                "Content-Type": "application/json",
            },
        )
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/webhooks/stripe answered {r.status_code}: {r.text}")

    async def health(i: int) -> None:
        r = await http.get("/healthz")
        if r.status_code != 200:
            raise RuntimeError(f"GET /healthz answered {r.status_code}")

    # Warm the connection pool and the code paths, then measure.
    await asyncio.gather(*(health(i) for i in range(10)))
    base, base_errors = await paced(rate, n, health)
    webhook_failures: list[str] = []
    acked, webhook_errors = await paced(rate, n, webhook, webhook_failures)
    # Checkouts last: the sagas they start keep the worker busy after the last request.
    # At a tenth of the rate (below the saga throughput) first: how much of the start latency is the API itself.
    light, light_errors = await paced(rate / 10, max(1, n // 10), checkout)
    l50, l99 = percentiles(light)
    checkout_failures: list[str] = []
    started, checkout_errors = await paced(rate, n, checkout, checkout_failures)
    (base50, base99), (c50, c99), (w50, w99) = map(percentiles, (base, started, acked))
    details = {
        "run": run,
        "requests": n,
        "rate_per_s": rate,
        "baseline": "GET /healthz, same rate",
        "baseline_p50_ms": base50,
        "request_timeout_s": REQUEST_TIMEOUT_S,
        "baseline_errors": base_errors,
    }
    return [
        Result(
            id="B7",
            name=f"API POST /v1/checkouts start latency at {rate:.0f} req/s",
            value=c99,
            unit="ms p99",
            baseline=base99,
            ratio=base99 / c99 if c99 else 0.0,
            target=f"p99 ≤ {CHECKOUT_P99_MS:.0f} ms",
            meets_target=c99 <= CHECKOUT_P99_MS and not checkout_errors,
            p50_ms=c50,
            p99_ms=c99,
            details={
                **details,
                "errors": checkout_errors,
                "first_errors": checkout_failures,
                f"p50_ms_at_{rate / 10:g}_per_s": l50,
                f"p99_ms_at_{rate / 10:g}_per_s": l99,
                f"errors_at_{rate / 10:g}_per_s": light_errors,
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
            meets_target=w99 <= WEBHOOK_P99_MS and not webhook_errors,
            p50_ms=w50,
            p99_ms=w99,
            details={**details, "errors": webhook_errors, "first_errors": webhook_failures},
        ),
    ]


async def latency(stack: Stack, seconds: float = 30.0, rate: float = 50.0) -> list[Result]:
    n = max(1, int(seconds * rate))
    async with api_server(stack) as api:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30)
        async with httpx.AsyncClient(base_url=api.url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            return await _run(stack, api, http, n, rate)
