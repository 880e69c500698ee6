"""Test-only fault injection (QUALITY R2): an activity "crashes" right after one of its database transactions
committed, before it returns — the worst moment for an at-least-once step. Temporal retries the activity
with the same input, and the step keys must make the retry find the work done instead of doing it twice.

Nothing is armed unless a test arms it (``crash_after_commit``); production code only pays one set lookup.
The hook runs in the worker's process, so it applies to the in-process test worker.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from temporalio import activity

_armed: set[str] = set()
crashes: list[str] = []  # activity types that crashed, in order (what the test can assert on)


class InjectedCrash(Exception):
    """Raised after a commit: to Temporal, a retryable activity failure like any lost worker or connection."""


@contextmanager
def crash_after_commit(activity_types: Collection[str]) -> Iterator[list[str]]:
    """While active, the first attempt of each named activity fails right after its first commit."""
    _armed.update(activity_types)
    crashes.clear()
    try:
        yield crashes
    finally:
        _armed.difference_update(activity_types)


def after_commit() -> None:
    if not _armed or not activity.in_activity():
        return
    info = activity.info()
    if info.attempt == 1 and info.activity_type in _armed:
        crashes.append(info.activity_type)
        raise InjectedCrash(f"injected crash after commit in {info.activity_type}")
