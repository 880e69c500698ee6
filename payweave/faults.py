"""Test-only fault injection (QUALITY R2): an activity "crashes" right after one of its database transactions
committed, before it returns — the worst moment for an at-least-once step. Temporal retries the activity
with the same input, and the step keys must make the retry find the work done instead of doing it twice.

Nothing is armed unless a test arms it (``crash_after_commit``, ``fail_transiently``); production code only
pays a set lookup.
The hook runs in the worker's process, so it applies to the in-process test worker.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

from temporalio import activity

_armed: set[str] = set()
crashes: list[str] = []  # activity types that crashed, in order (what the test can assert on)
_transient: dict[str, int] = {}  # activity type → how many first attempts fail before doing anything
failures: list[str] = []


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


@contextmanager
def fail_transiently(activity_types: Collection[str], times: int) -> Iterator[list[str]]:
    """While active, attempts 1..``times`` of each named activity fail before touching the database (QUALITY
    R6: a compensation failing transiently n times must still complete)."""
    _transient.update(dict.fromkeys(activity_types, times))
    failures.clear()
    try:
        yield failures
    finally:
        for name in activity_types:
            _transient.pop(name, None)


def before_begin() -> None:
    if not _transient or not activity.in_activity():
        return
    info = activity.info()
    if info.attempt <= _transient.get(info.activity_type, 0):
        failures.append(info.activity_type)
        raise InjectedCrash(f"injected transient failure {info.attempt} in {info.activity_type}")
