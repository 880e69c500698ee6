"""B7's load generator, run as its own process (``python -m payweave.bench.loadgen SPEC.json``) so that the
latencies it measures are the API's, not the stalls of a process that also hosts a busy worker.

Open loop: request ``i`` is sent at ``start + i / rate`` whatever the earlier ones are doing. The spec names the
URL, the rate, the number of requests and what to send (``health``, ``checkout`` with one bearer token per
request, ``webhook`` with the Stripe signing secret); the result is JSON on stdout: every latency in seconds,
the error count, the first few errors and the ids of the orders whose checkout the API accepted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

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


def _expect(r: httpx.Response, status: int) -> None:
    if r.status_code != status:
        raise RuntimeError(
            f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text[:200]}"
        )


def requests_for(
    spec: dict[str, Any], http: httpx.AsyncClient, accepted: list[str]
) -> Callable[[int], Awaitable[None]]:
    """The request ``i`` of the spec's kind; a checkout the API accepted adds its order id to ``accepted``."""
    kind = spec["kind"]
    if kind == "health":

        async def health(i: int) -> None:
            _expect(await http.get("/healthz"), 200)

        return health
    if kind == "checkout":
        tokens: list[str] = spec["tokens"]

        async def checkout(i: int) -> None:
            r = await http.post(
                "/v1/checkouts",
                json=spec["body"],
                headers={"Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": uuid.uuid4().hex},
            )
            _expect(r, 202)
            accepted.append(str(r.json()["id"]))

        return checkout
    if kind == "webhook":
        run = spec["run"]

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
            headers = {
                "Stripe-Signature": stripe_signature(payload, spec["secret"]),
                "Content-Type": "application/json",
            }
            _expect(await http.post("/v1/webhooks/stripe", content=payload, headers=headers), 200)

        return webhook
    raise ValueError(f"unknown load kind {kind!r}")


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30)
    async with httpx.AsyncClient(base_url=spec["url"], timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        # Warm the connection pool and the server's code paths first.
        await asyncio.gather(*(http.get("/healthz") for _ in range(10)))
        failures: list[str] = []
        accepted: list[str] = []
        latencies, errors = await paced(spec["rate"], spec["n"], requests_for(spec, http, accepted), failures)
    return {"latencies_s": latencies, "errors": errors, "first_errors": failures, "accepted": accepted}


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    json.dump(asyncio.run(run(spec)), sys.stdout)


if __name__ == "__main__":
    main()
