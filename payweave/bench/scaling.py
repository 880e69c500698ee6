"""How cost grows with work (docs/benchmarks.md): bulk refund time vs wallet participants, wallet checkout
throughput and latency vs concurrency, and the API's checkout start latency vs arrival rate (B7), on one
embedded stack. Not part of ``payweave bench all``:

    python -m payweave.bench.scaling [--quick]
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.table import Table

from payweave.bench import api, bulk_refund
from payweave.bench.checkout import Load
from payweave.bench.common import percentiles
from payweave.bench.harness import embedded_stack

Rates = list[tuple[float, int, float, float, int]]
RATES = [5.0, 10.0, 20.0, 30.0, 40.0, 50.0]


async def scaling(
    quick: bool,
) -> tuple[list[tuple[int, float, float]], list[tuple[int, int, float, float, float]], Rates]:
    refunds: list[tuple[int, float, float]] = []
    checkouts: list[tuple[int, int, float, float, float]] = []
    async with embedded_stack() as stack:
        rates = await api.checkout_latency_by_rate(stack, RATES, 5.0 if quick else 15.0)
        for n in (1_000, 5_000, 10_000):
            r = await bulk_refund.wallet_participants(stack, n)
            refunds.append((n, r.value, r.baseline))
        n = 100 if quick else 300
        for concurrency in (1, 10, 50, 100):
            load = Load(stack, n if concurrency > 1 else 20, merchants=n)
            elapsed, latencies = await load.run(concurrency)
            p50, p99 = percentiles(latencies)
            checkouts.append((concurrency, load.n, load.n / elapsed, p50, p99))
    return refunds, checkouts, rates


def main() -> None:
    refunds, checkouts, rates = asyncio.run(scaling("--quick" in sys.argv))
    console = Console(width=120)
    t = Table(title="bulk refund vs wallet participants")
    for c in ("participants", "workflow s", "batched SQL baseline s"):
        t.add_column(c)
    for n, value, baseline in refunds:
        t.add_row(f"{n:,}", f"{value:.2f}", f"{baseline:.2f}")
    console.print(t)
    t = Table(title="wallet checkouts vs concurrency")
    for c in ("concurrency", "checkouts", "sagas/s", "p50 ms", "p99 ms"):
        t.add_column(c)
    for concurrency, n, rate, p50, p99 in checkouts:
        t.add_row(str(concurrency), str(n), f"{rate:.2f}", f"{p50:.0f}", f"{p99:.0f}")
    console.print(t)
    t = Table(title="API POST /v1/checkouts start latency vs arrival rate (B7)")
    for c in ("req/s", "requests", "p50 ms", "p99 ms", "errors"):
        t.add_column(c)
    for per_s, n, p50, p99, errors in rates:
        t.add_row(f"{per_s:g}", str(n), f"{p50:.0f}", f"{p99:.0f}", str(errors))
    console.print(t)


if __name__ == "__main__":
    main()
