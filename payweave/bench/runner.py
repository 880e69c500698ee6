"""Runs the chosen benchmarks on one embedded stack."""

from __future__ import annotations

from payweave.bench import api, bulk_refund, checkout, ledger, memory
from payweave.bench.harness import embedded_stack
from payweave.bench.report import Result

BENCHMARKS = ("checkout", "split", "ledger", "bulk-refund", "hot-wallet", "memory", "api")


async def run_bench(
    benchmark: str,
    *,
    quick: bool = False,
    participants: int | None = None,
    gateway_participants: int | None = None,
) -> list[Result]:
    """``benchmark`` is one of BENCHMARKS or ``all``; ``quick`` shrinks the runs so ``all`` stays < 10 minutes."""
    chosen = set(BENCHMARKS) if benchmark == "all" else {benchmark}
    results: list[Result] = []
    async with embedded_stack() as stack:
        # Memory first: the process is closest to an idle worker before the other runs have grown its heap.
        if "memory" in chosen:
            results.append(await memory.open_checkouts(stack, 1_000))
        b1_rate: float | None = None
        if "checkout" in chosen:
            b1 = await checkout.checkout(stack, *((300, 100) if quick else (1_000, 100)))
            b1_rate = b1.value
            results.append(b1)
        if "split" in chosen:
            n, concurrency = (150, 50) if quick else (500, 50)
            results.append(await checkout.split(stack, b1_rate, n, concurrency))
        if "ledger" in chosen:
            results.append(await ledger.postings(stack, 4_000 if quick else 20_000))
        if "bulk-refund" in chosen:
            results.append(await bulk_refund.wallet_participants(stack, participants or 10_000))
            results.append(
                await bulk_refund.gateway_participants(
                    stack, gateway_participants or (300 if quick else 1_000)
                )
            )
        if "hot-wallet" in chosen:
            results.append(await checkout.hot_wallet(stack, 100))
        if "api" in chosen:
            results.extend(await api.latency(stack, 10.0 if quick else 30.0))
    return sorted(results, key=lambda r: r.id)
