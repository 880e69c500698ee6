"""Runs the chosen benchmarks on one embedded stack."""

from __future__ import annotations

from payweave.bench import bulk_refund
from payweave.bench.harness import embedded_stack
from payweave.bench.report import Result


async def run_bench(
    benchmark: str,
    *,
    quick: bool = False,
    participants: int | None = None,
    gateway_participants: int | None = None,
) -> list[Result]:
    results: list[Result] = []
    async with embedded_stack() as stack:
        if benchmark in ("bulk-refund", "all"):
            results.append(await bulk_refund.wallet_participants(stack, participants or 10_000))
            results.append(
                await bulk_refund.gateway_participants(
                    stack, gateway_participants or (300 if quick else 1_000)
                )
            )
    return results
