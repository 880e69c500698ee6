"""STYLE.md: ruff (lint + format) and mypy (strict on payweave/, workflows/, activities/, db/) run in CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "--strict", "payweave", "workflows", "activities", "db"],
        ["mypy", "api", "workers"],
    ],
    ids=["ruff-lint", "ruff-format", "mypy-strict-core", "mypy-api-workers"],
)
def test_static_checks_pass(argv: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
