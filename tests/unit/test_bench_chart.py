"""`payweave bench --chart`: the share-of-target numbers and the PNG drawn from them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from payweave.bench.chart import draw_chart, parse_target, share_of_target
from payweave.bench.report import Result

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def result(id: str, value: float, ratio: float, target: str, meets: bool, unit: str = "s") -> Result:
    return Result(
        id=id,
        name=f"{id} bench",
        value=value,
        unit=unit,
        baseline=1.0,
        ratio=ratio,
        target=target,
        meets_target=meets,
    )


@pytest.mark.parametrize(
    "target,expected",
    [
        ("ratio ≥ 1.0 vs bare workflow", ("at_least", 1.0)),
        ("ratio ≥ 0.6 vs B1", ("at_least", 0.6)),
        ("≤ 20 s for 10,000", ("at_most", 20.0)),
        ("≤ 2.0 s (20 s per 10,000)", ("at_most", 2.0)),
        ("≤ 300 MB", ("at_most", 300.0)),
        ("p99 ≤ 50 ms", ("at_most", 50.0)),
    ],
)
def test_every_bench_target_text_parses(target: str, expected: tuple[str, float]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["run to completion", "", "≥ fast", "≤ 0 s", "≤ 20,000 s", "about ≤ 5 s"])
def test_a_target_without_a_usable_number_is_refused(target: str) -> None:
    with pytest.raises(ValueError):
        parse_target(target)
    with pytest.raises(ValueError):
        share_of_target(result("B9", 1.0, 1.0, target, False))


def test_ratio_targets_are_ratio_over_threshold_and_limits_value_over_limit() -> None:
    assert share_of_target(result("B1", 250.0, 1.21, "ratio ≥ 1.0 vs bare workflow", True)) == pytest.approx(
        1.21
    )
    assert share_of_target(result("B2", 90.0, 0.3, "ratio ≥ 0.6 vs B1", False)) == pytest.approx(0.5)
    assert share_of_target(result("B4", 5.0, 3.0, "≤ 20 s for 10,000", True)) == pytest.approx(0.25)
    assert share_of_target(result("B6", 331.0, 1.9, "≤ 300 MB", False, "MB")) == pytest.approx(331 / 300)
    assert share_of_target(result("B7", 25.0, 0.2, "p99 ≤ 50 ms", True, "ms p99")) == pytest.approx(0.5)


@pytest.mark.parametrize("sandboxed", [False, True])
def test_chart_is_a_readable_png(tmp_path: Path, sandboxed: bool) -> None:
    results = [
        result("B1", 250.0, 1.21, "ratio ≥ 1.0 vs bare workflow", True, "sagas/s"),
        result("B2", 90.0, 0.3, "ratio ≥ 0.6 vs B1", False, "sagas/s"),
        result("B4", 5.0, 3.0, "≤ 20 s for 10,000", True),
        result("B6", 331.0, 1.9, "≤ 300 MB", False, "MB"),
        result("B7", 25.0, 0.2, "p99 ≤ 50 ms", True, "ms p99"),
        result("B3", 0.0, 0.0, "run to completion", False, ""),  # a failed benchmark: no bar, still a row
    ]
    path = tmp_path / "bench.png"
    draw_chart(results, path, sandboxed=sandboxed)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 600 <= width <= 4000
    assert 300 <= height <= 2000
