"""docs/configuration.md stays the reference of payweave/settings.py: one row per setting, no row for a setting
that does not exist, the code's default, and ``yes`` in the secret column exactly for ``SecretStr`` fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from payweave.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(PAYWEAVE_[A-Z0-9_]+)` \| (.*?) \| (.*?) \| (.+) \|$")


def rows() -> dict[str, list[tuple[str, str, str]]]:
    found: dict[str, list[tuple[str, str, str]]] = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, default, secret, meaning = match.groups()
            found.setdefault(name, []).append((default, secret, meaning))
    return found


def documented_default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return f"`{value}`"


FIELDS = Settings.model_fields


def test_every_setting_has_exactly_one_row_and_no_row_is_stale() -> None:
    documented = rows()
    expected = {f"PAYWEAVE_{name.upper()}" for name in FIELDS}
    assert sorted(expected - documented.keys()) == [], "settings missing from docs/configuration.md"
    assert sorted(documented.keys() - expected) == [], (
        "docs/configuration.md documents settings that do not exist"
    )
    assert [name for name, found in documented.items() if len(found) > 1] == []


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_row_states_the_default_and_whether_it_is_secret(name: str) -> None:
    ((default, secret, meaning),) = rows()[f"PAYWEAVE_{name.upper()}"]
    field = FIELDS[name]
    assert default.startswith(documented_default(field.default)), (default, field.default)
    is_secret = "SecretStr" in str(field.annotation)
    assert secret.startswith("yes") == is_secret, f"{name}: secret column says {secret!r}"
    assert meaning.strip()
