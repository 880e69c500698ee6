"""QUALITY.md: "Every reliability test ends with [the ledger invariants]". A pytest plugin (registered by
``tests/conftest.py``): every test marked ``reliability`` — wherever it lives — runs ``db/verify.py``'s
``verify_ledger`` before and after it, and fails (an error at teardown) if the test left a violation that was
not there before it.

Why the whole ``verify_ledger`` is safe on a live system, at any point, with sagas of earlier tests still in
flight (a test session on one xdist worker shares one PostgreSQL cluster and one Temporal server):

* I1–I4 are checked one query each, every query in its own REPEATABLE READ snapshot, and every ledger write
  (a journal, its entries, the balances, a hold and ``held``) commits in one transaction: a snapshot never
  sees half of one.
* The two cross-database checks only look at *finished* sagas and read the payments database first: a transfer
  is marked ``completed``/``failed`` only after its last journal committed, and a payment is marked
  ``succeeded`` (or ``credited``) only after its clearing capture journal committed (``db/verify.py``), so a
  saga seen finished has all its journals visible to the wallet query that follows.

So nothing needs to be quiesced for the check to be exact, and no check is skipped. Violations present
*before* the test (left by a non-reliability test, or by the session so far) are not blamed on it; they fail
the session-end check in the ``wallet_engine`` fixture instead. The counts go to the terminal summary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from db.verify import Report, verify_ledger

# The columns that name the object a violation is about (the others are amounts, which move).
IDENTITY = (
    "journal",
    "entry",
    "wallet",
    "idempotency_key",
    "gateway",
    "gateway_payment_id",
    "deposit",
    "saga",
    "payment",
)
LIMIT = 1_000  # rows per check: enough to tell old violations from new ones
PROPERTY = "ledger_invariants"

Key = tuple[str, tuple[Any, ...]]


def violations(report: Report) -> dict[Key, dict[str, object]]:
    """Each violating row by (check, the identity of what it is about)."""
    return {
        (v.check, tuple(row.get(c) for c in IDENTITY if c in row)): row
        for v in report.violations
        for row in v.rows
    }


def new_violations(before: Report, after: Report) -> dict[Key, dict[str, object]]:
    known = violations(before)
    return {k: row for k, row in violations(after).items() if k not in known}


@pytest_asyncio.fixture
async def ledger_invariants(
    request: pytest.FixtureRequest, wallet_engine: AsyncEngine, payments_engine: AsyncEngine
) -> AsyncIterator[Report]:
    """``verify_ledger`` before and after the test; the test fails if it added a violation."""
    before = await verify_ledger(wallet_engine, payments_engine, limit=LIMIT)
    yield before
    after = await verify_ledger(wallet_engine, payments_engine, limit=LIMIT)
    added = new_violations(before, after)
    request.node.user_properties.append(
        (PROPERTY, {"checks": len(after.checked), "new": len(added), "before": len(violations(before))})
    )
    assert not added, "ledger invariants violated by this test:\n" + "\n".join(
        f"  {check}: {row}" for (check, _), row in list(added.items())[:40]
    )


@pytest.fixture(autouse=True)
def _reliability_ends_with_the_ledger_verified(request: pytest.FixtureRequest) -> Iterator[None]:
    """Autouse everywhere, active only on tests marked ``reliability``."""
    if request.node.get_closest_marker("reliability") is not None:
        request.getfixturevalue("ledger_invariants")
    yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    verified = new = preexisting = 0
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == PROPERTY and getattr(report, "when", "") == "teardown":
                    verified += 1
                    new += value["new"]
                    preexisting = max(preexisting, value["before"])
    if verified:
        terminalreporter.write_line(
            f"ledger invariants (verify_ledger) checked after {verified} reliability tests: "
            f"{new} new violations; {preexisting} present before a test"
        )
