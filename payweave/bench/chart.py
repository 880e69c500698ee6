"""`payweave bench --chart`: one PNG, one bar per benchmark, each as its share of its own target.

The benchmarks differ in units (sagas/s against a baseline, seconds, MB, ms p99), so every bar is drawn on
one scale where 1.0 is the target: a ratio target (``ratio ≥ 0.6 vs B1``) plots ratio / 0.6, and more is
better; an upper limit (``≤ 20 s``, ``≤ 300 MB``, ``p99 ≤ 50 ms``) plots value / limit, and less is better.
The colour is the benchmark's own verdict (``meets_target``, which for B7 also counts request errors), not
something read off the bar. matplotlib is an optional dependency (``pip install 'payweave[bench]'``): it is
imported only when a chart is drawn.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from payweave.bench.report import Result, machine

Direction = Literal["at_least", "at_most"]

# "ratio ≥ 1.0 vs bare workflow" | "≤ 20 s for 10,000" | "≤ 2.0 s (20 s per 10,000)" | "≤ 300 MB" | "p99 ≤ 50 ms"
# (a number that runs on into ",000" or more digits is refused, never read as its first digits)
_TARGET = re.compile(r"^\s*(?:(?P<ratio>ratio\s*≥)|(?:p99\s*)?≤)\s*(?P<number>\d+(?:\.\d+)?)(?![\d.,]*\d)")

MET, MISSED = "#2e7d32", "#c62828"


def parse_target(target: str) -> tuple[Direction, float]:
    """The direction and the threshold of a Result's target text; ValueError when it states no number
    (a failed benchmark's "run to completion")."""
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"no numeric target in {target!r}")
    threshold = float(match["number"])
    if threshold <= 0:
        raise ValueError(f"target threshold must be positive: {target!r}")
    return ("at_least" if match["ratio"] else "at_most"), threshold


def share_of_target(result: Result) -> float:
    """1.0 is exactly on target. Ratio targets: ratio / threshold (≥ 1 is good);
    upper limits: value / limit (≤ 1 is good). ValueError when the target has no number."""
    direction, threshold = parse_target(result.target)
    return (result.ratio if direction == "at_least" else result.value) / threshold


def _title(sandboxed: bool) -> str:
    m = machine()
    return (
        "payweave bench"
        + (" (workflow sandbox on)" if sandboxed else "")
        + f"\n{m['platform']} · {m['processor']} · {m['cpus']} CPUs · Python {m['python']}"
    )


def draw_chart(results: list[Result], path: Path, *, sandboxed: bool = False) -> None:
    """Write a PNG to ``path``; ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, shares, figures, colours, notes = [], [], [], [], []
    for r in results:
        verdict = "met" if r.meets_target else "MISSED"
        measured = f"{r.value:.2f} {r.unit}".strip()
        try:
            direction, _ = parse_target(r.target)
        except ValueError:  # a failed benchmark: no figure to draw, say so instead of a zero bar
            labels.append(r.id)
            shares.append(0.0)
            figures.append("no figure")
            notes.append(f"{r.name} · target: {r.target} · {verdict}")
        else:
            good = "≥ 1 good" if direction == "at_least" else "≤ 1 good"
            labels.append(f"{r.id}  ({good})")
            shares.append(share_of_target(r))
            figures.append(f"{shares[-1]:.2f}")
            ratio = f"ratio {r.ratio:.2f} · " if direction == "at_least" else ""
            notes.append(f"{ratio}{measured} · target: {r.target} · {verdict}")
        colours.append(MET if r.meets_target else MISSED)

    ys = list(range(len(results)))[::-1]  # the first benchmark on top
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.55 * max(len(results), 1)))
    try:
        bars = ax.barh(ys, shares, color=colours, height=0.6)
        ax.bar_label(bars, labels=figures, padding=3, fontsize=8)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, max([1.0, *shares]) * 1.15)
        ax.set_ylim(-0.6, len(results) - 0.4)
        ax.set_yticks(ys, labels=labels)
        ax.set_xlabel(
            "share of target (dashed line = target): ratio targets ratio ÷ threshold, ≥ 1 is good; "
            "limits value ÷ limit, ≤ 1 is good\ngreen: target met · red: missed"
        )
        right = ax.twinx()  # the figures themselves, beside each bar
        right.set_ylim(ax.get_ylim())
        right.set_yticks(ys, labels=notes, fontsize=8)
        ax.set_title(_title(sandboxed), fontsize=10)
        fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
