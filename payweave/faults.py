"""Test-only fault injection (QUALITY R2, R3, R5, R6 and the chaos harness).

* ``crash_after_commit`` (R2): an activity "crashes" right after one of its database transactions committed,
  before it returns — the worst moment for an at-least-once step. Temporal retries the activity with the same
  input, and the step keys must make the retry find the work done instead of doing it twice.
* ``fail_transiently`` (R3, R6): attempts 1..n of an activity fail before its next transaction begins. For a
  gateway activity that is right after the gateway call did the work and before its answer is recorded (R3).
* ``seeded`` (chaos harness): the same crash after commit, in a worker *child process*, armed by the
  environment variable ``PAYWEAVE_TEST_FAULTS`` (JSON ``{"seed": 7, "crash_after_commit": 0.1, "strip":
  "<run tag>"}``). Whether an activity crashes is a pure function of the seed, its workflow id (with the
  run tag removed) and its activity id — the same seed crashes the same steps, whatever the timing.
* ``FaultInterceptor`` (R5): a Temporal interceptor for a worker a test builds itself: records every activity
  execution and fails chosen steps non-retryably before they run.

Nothing is armed unless a test arms it; production code only pays a set lookup. The hooks run in the
worker's process: the in-process test worker, or a chaos worker child armed through its environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

log = logging.getLogger("payweave.faults")

ENV = "PAYWEAVE_TEST_FAULTS"
# What a seeded crash logs, once per crash (the chaos harness counts it; the exception's own text differs, so
# Temporal's log of the failed attempt is not counted twice).
CRASH_LOG = "FAULT seeded crash after commit"

_armed: set[str] = set()
crashes: list[str] = []  # activity types that crashed, in order (what the test can assert on)
_transient: dict[str, int] = {}  # activity type → how many first attempts fail before doing anything
failures: list[str] = []


@dataclass(frozen=True)
class Injected:
    """One injected fault: where it hit."""

    kind: str
    activity_type: str
    workflow_id: str
    activity_id: str
    attempt: int


events: list[Injected] = []  # every injected fault of this process, in order


class InjectedCrash(Exception):
    """Raised after a commit: to Temporal, a retryable activity failure like any lost worker or connection."""


def _record(kind: str) -> Injected:
    info = activity.info()
    hit = Injected(kind, info.activity_type, info.workflow_id or "", info.activity_id, info.attempt)
    events.append(hit)
    return hit


@dataclass(frozen=True)
class Seeded:
    seed: int
    crash_after_commit: float = 0.0  # share of activities whose first attempt crashes after its first commit
    strip: str = ""  # removed from workflow ids before hashing (a run tag that differs between runs)

    def chosen(self, what: str, rate: float, workflow_id: str, activity_id: str) -> bool:
        return (
            rate > 0
            and draw(
                self.seed,
                what,
                workflow_id.replace(self.strip, "") if self.strip else workflow_id,
                activity_id,
            )
            < rate
        )

    def env(self) -> dict[str, str]:
        return {
            ENV: json.dumps(
                {"seed": self.seed, "crash_after_commit": self.crash_after_commit, "strip": self.strip}
            )
        }


def draw(seed: int, *parts: str) -> float:
    """A number in [0, 1) fixed by the seed and ``parts``: a seeded decision that does not depend on order."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _from_env() -> Seeded | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    spec: dict[str, Any] = json.loads(raw)
    seeded = Seeded(int(spec["seed"]), float(spec.get("crash_after_commit", 0.0)), str(spec.get("strip", "")))
    log.warning("TEST FAULTS ARMED from %s: %s", ENV, seeded)
    return seeded


seeded: Seeded | None = _from_env()


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
    if not (_armed or seeded) or not activity.in_activity():
        return
    info = activity.info()
    if info.attempt != 1:
        return
    if info.activity_type in _armed:
        crashes.append(info.activity_type)
        _record("crash_after_commit")
        raise InjectedCrash(f"injected crash after commit in {info.activity_type}")
    if seeded is not None and seeded.chosen(
        "crash_after_commit", seeded.crash_after_commit, info.workflow_id or "", info.activity_id
    ):
        hit = _record("crash_after_commit")
        log.warning(
            "%s in %s (%s, activity %s)", CRASH_LOG, hit.activity_type, hit.workflow_id, hit.activity_id
        )
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
        _record("transient")
        raise InjectedCrash(f"injected transient failure {info.attempt} in {info.activity_type}")


# --- around whole activities (a worker built with the interceptor) --------------------------------------


@dataclass(frozen=True)
class Execution:
    workflow_id: str
    workflow_type: str
    activity_id: str
    activity_type: str
    attempt: int
    is_local: bool


INJECTED_FAILURE = "injected_failure"


@dataclass
class FaultInterceptor(Interceptor):
    """Records every activity execution of the worker; ``fail_step`` makes one step of one workflow fail
    non-retryably (a business failure, ``ApplicationError`` type ``injected_failure``) before it runs."""

    executions: list[Execution] = field(default_factory=list)
    _fail: dict[tuple[str, str], str] = field(default_factory=dict)

    def fail_step(self, workflow_id: str, activity_id: str, code: str = INJECTED_FAILURE) -> None:
        self._fail[(workflow_id, activity_id)] = code

    def of(self, workflow_id: str) -> list[Execution]:
        return [e for e in self.executions if e.workflow_id == workflow_id]

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: FaultInterceptor) -> None:
        super().__init__(next)
        self._owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        wf = info.workflow_id or ""
        self._owner.executions.append(
            Execution(
                wf,
                info.workflow_type or "",
                info.activity_id,
                info.activity_type,
                info.attempt,
                info.is_local,
            )
        )
        code = self._owner._fail.get((wf, info.activity_id))
        if code is not None:
            _record("step_failure")
            raise ApplicationError(
                f"injected non-retryable failure of {info.activity_type}", type=code, non_retryable=True
            )
        return await self.next.execute_activity(input)
