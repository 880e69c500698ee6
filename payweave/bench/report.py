"""Benchmark results: a rich table for people, JSON for machines (QUALITY.md B1–B7)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Result:
    id: str
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    target: str
    meets_target: bool
    p50_ms: float | None = None
    p99_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def print_table(results: list[Result], console: Console, *, sandboxed: bool = False) -> None:
    if not console.is_terminal:  # a log file or a pipe: wide enough that names are not cut
        console = Console(file=console.file, width=180)
    table = Table(title="payweave bench" + (" (workflow sandbox on)" if sandboxed else ""))
    for column in ("id", "benchmark", "value", "baseline", "ratio", "p50 / p99 ms", "target", "met?"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.id,
            r.name,
            f"{r.value:.2f} {r.unit}",
            f"{r.baseline:.2f} {r.unit}",
            f"{r.ratio:.2f}",
            f"{r.p50_ms:.0f} / {r.p99_ms:.0f}" if r.p50_ms is not None and r.p99_ms is not None else "",
            r.target,
            "[green]yes[/green]" if r.meets_target else "[red]no[/red]",
        )
    console.print(table)


def write_json(results: list[Result], path: Path, *, sandboxed: bool = False) -> None:
    document = {
        "machine": machine(),
        # the worker configuration measured: production's (docker-compose.yml) unless --sandboxed
        "config": {"workflow_sandbox": sandboxed},
        "benchmarks": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
