"""Runs the chosen benchmarks on one embedded stack.

Each benchmark runs on its own: one that fails is reported as missed (with the error) and the others still run."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

from rich.console import Console

from payweave.bench import api, bulk_refund, checkout, ledger, memory
from payweave.bench.harness import Stack, embedded_stack
from payweave.bench.report import Result

BENCHMARKS = ("checkout", "split", "ledger", "bulk-refund", "hot-wallet", "memory", "api")
IDS = {
    "memory": ("B6",),
    "checkout": ("B1",),
    "split": ("B2",),
    "ledger": ("B3",),
    "bulk-refund": ("B4", "B4-gateway"),
    "hot-wallet": ("B5",),
    "api": ("B7", "B7-webhook"),
}


async def _step(name: str, work: Callable[[], Awaitable[list[Result]]], progress: Console) -> list[Result]:
    progress.print(f"bench {name} …")
    started = time.perf_counter()
    try:
        results = await work()
    except Exception as exc:  # noqa: BLE001 — a failed benchmark is a missed target, not a lost run
        progress.print(f"bench {name} failed: {exc!r}")
        results = [
            Result(
                id=i,
                name=f"{name} (failed)",
                value=0.0,
                unit="",
                baseline=0.0,
                ratio=0.0,
                target="run to completion",
                meets_target=False,
                details={"error": repr(exc)},
            )
            for i in IDS[name]
        ]
    wall = time.perf_counter() - started
    for r in results:
        r.details["wall_s"] = round(wall, 1)
    progress.print(f"bench {name} done in {wall:.0f} s")
    return results


async def _all(
    stack: Stack,
    chosen: set[str],
    quick: bool,
    participants: int | None,
    gateway_participants: int | None,
    progress: Console,
) -> list[Result]:
    results: list[Result] = []

    async def one(r: Awaitable[Result]) -> list[Result]:
        return [await r]

    # Memory first: the process is closest to an idle worker before the other runs have grown its heap.
    if "memory" in chosen:
        opened = 300 if quick else 1_000
        results += await _step(
            "memory", lambda: one(memory.open_checkouts(stack, opened, project_to=1_000)), progress
        )
    b1_rate: float | None = None
    if "checkout" in chosen:
        size = (300, 100) if quick else (1_000, 100)
        b1 = await _step("checkout", lambda: one(checkout.checkout(stack, *size)), progress)
        b1_rate = b1[0].value or None
        results += b1
    if "split" in chosen:
        n, concurrency = (150, 50) if quick else (500, 50)
        results += await _step("split", lambda: one(checkout.split(stack, b1_rate, n, concurrency)), progress)
    if "ledger" in chosen:
        journals = 4_000 if quick else 20_000
        results += await _step("ledger", lambda: one(ledger.postings(stack, journals)), progress)
    if "bulk-refund" in chosen:

        async def refunds() -> list[Result]:
            return [
                await bulk_refund.wallet_participants(stack, participants or 10_000),
                await bulk_refund.gateway_participants(
                    stack, gateway_participants or (300 if quick else 1_000)
                ),
            ]

        results += await _step("bulk-refund", refunds, progress)
    if "hot-wallet" in chosen:
        results += await _step("hot-wallet", lambda: one(checkout.hot_wallet(stack, 100)), progress)
    if "api" in chosen:
        seconds = 10.0 if quick else 30.0
        results += await _step("api", lambda: api.latency(stack, seconds), progress)
    return results


async def run_bench(
    benchmark: str,
    *,
    quick: bool = False,
    participants: int | None = None,
    gateway_participants: int | None = None,
    sandboxed: bool = False,
) -> list[Result]:
    """``benchmark`` is one of BENCHMARKS or ``all``; ``quick`` shrinks the runs so ``all`` stays < 10 minutes."""
    chosen = set(BENCHMARKS) if benchmark == "all" else {benchmark}
    progress = Console(file=sys.stderr)
    async with embedded_stack(sandboxed=sandboxed) as stack:
        results = await _all(stack, chosen, quick, participants, gateway_participants, progress)
    return sorted(results, key=lambda r: r.id)
