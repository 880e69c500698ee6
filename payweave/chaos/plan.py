"""The seeded plan of a chaos run: which sagas, with what amounts, when they are submitted, and the schedule
of faults — worker SIGKILLs, Temporal server restarts, PostgreSQL backend terminations — plus the seeded
rates of activity faults (crash after commit, gateway answer lost after the work). Everything random is drawn
here, from one ``random.Random(seed)``, or (the activity faults) decided by hashing the seed with the step's
identity, so the same seed always gives the same plan; the interleaving with the running sagas is up to the
machine's timing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

SagaKind = Literal["deposit", "transfer", "transfer_to_frozen", "split_checkout"]
KINDS: tuple[SagaKind, ...] = ("deposit", "transfer", "transfer_to_frozen", "split_checkout")
WEIGHTS = (3, 3, 2, 2)

FaultKind = Literal["worker_kill", "temporal_restart", "pg_terminate"]
# About how long each fault takes to recover from (a worker process starting, a dev server on its file).
RECOVERY_SECONDS: dict[FaultKind, float] = {"worker_kill": 3.0, "temporal_restart": 6.0, "pg_terminate": 0.0}


@dataclass(frozen=True)
class SagaSpec:
    index: int
    kind: SagaKind
    customer: int  # index of the paying customer
    peer: int  # index of the receiving customer (transfers) or of the frozen wallet
    amount: int  # minor units; for a split checkout, the wallet part (the gateway pays the rest)
    gap: float  # seconds to wait after the previous submission (load pacing, not synchronisation)


@dataclass(frozen=True)
class FaultEvent:
    kind: FaultKind
    after: float  # seconds after the previous fault was recovered from (the worker polls again, ...)
    down: float  # seconds the part stays down (worker, Temporal); 0 for a backend termination


@dataclass(frozen=True)
class ChaosPlan:
    seed: int
    customers: int
    frozen: int
    funding: int  # each customer's deposit before the faults start
    price: int  # the product's price: a split checkout's total
    sagas: tuple[SagaSpec, ...]
    kill_after: tuple[float, ...]  # per kill: seconds after the (re)started worker polls, then SIGKILL
    downtime: tuple[float, ...]  # per kill: seconds the worker stays dead before the restart
    events: tuple[FaultEvent, ...] = ()  # every fault in order (the kills above among them)
    crash_after_commit: float = 0.0  # share of activities whose first attempt crashes after its commit
    gateway_timeouts: float = 0.0  # share of sagas whose gateway create answer is lost after the work

    def count(self, kind: FaultKind) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def describe(self) -> str:
        counts = {k: sum(1 for s in self.sagas if s.kind == k) for k in KINDS}
        short = {"worker_kill": "kill", "temporal_restart": "temporal", "pg_terminate": "pg"}
        faults = ", ".join(
            f"{short[e.kind]} {e.after:.2f}s" + (f"/{e.down:.2f}s" if e.kind != "pg_terminate" else "")
            for e in self.events
        )
        text = f"seed {self.seed}: {len(self.sagas)} sagas {counts}; faults (after / down): {faults}"
        if self.crash_after_commit or self.gateway_timeouts:
            text += (
                f"; activity crash after commit {self.crash_after_commit:.0%},"
                f" gateway answer lost {self.gateway_timeouts:.0%}"
            )
        return text


def make_plan(
    seed: int,
    sagas: int,
    kills: int,
    *,
    temporal_restarts: int = 0,
    pg_terminations: int = 0,
    crash_after_commit: float = 0.0,
    gateway_timeouts: float = 0.0,
    restart_seconds: float = RECOVERY_SECONDS["worker_kill"],
) -> ChaosPlan:
    """``restart_seconds`` is about what a worker process needs to start: the submissions are spread over the
    expected fault window so that sagas are in flight at every fault. The other faults are drawn only when
    asked for, so a plan of kills only is what it always was for a seed."""
    rng = random.Random(seed)
    customers = max(4, sagas // 5)
    frozen = 2
    price = 5_000
    kill_after = tuple(round(rng.uniform(0.2, 1.5), 3) for _ in range(kills))
    downtime = tuple(round(rng.uniform(0.0, 0.5), 3) for _ in range(kills))
    restarts = [
        FaultEvent("temporal_restart", round(rng.uniform(0.5, 2.0), 3), round(rng.uniform(0.5, 2.0), 3))
        for _ in range(temporal_restarts)
    ]
    terminations = [
        FaultEvent("pg_terminate", round(rng.uniform(0.2, 1.5), 3), 0.0) for _ in range(pg_terminations)
    ]
    window = sum(kill_after) + sum(downtime) + kills * restart_seconds
    window += sum(e.after + e.down + RECOVERY_SECONDS[e.kind] for e in restarts + terminations)
    mean_gap = window / max(1, sagas)
    specs: list[SagaSpec] = []
    for i in range(sagas):
        kind = rng.choices(KINDS, WEIGHTS)[0]
        customer = rng.randrange(customers)
        if kind == "transfer":
            peer = (customer + 1 + rng.randrange(customers - 1)) % customers
        elif kind == "transfer_to_frozen":
            peer = rng.randrange(frozen)
        else:
            peer = customer
        amount = rng.randrange(1, price) if kind == "split_checkout" else rng.randrange(100, 2_000)
        specs.append(SagaSpec(i, kind, customer, peer, amount, round(rng.uniform(0, 2 * mean_gap), 3)))
    # The kills keep their order; the other faults go in at seeded places among them.
    events = [FaultEvent("worker_kill", a, d) for a, d in zip(kill_after, downtime, strict=True)]
    for extra in restarts + terminations:
        events.insert(rng.randrange(len(events) + 1), extra)
    # Funding covers the worst case of every saga of a customer paying from its wallet.
    funding = 2_000 * sagas + price
    return ChaosPlan(
        seed,
        customers,
        frozen,
        funding,
        price,
        tuple(specs),
        kill_after,
        downtime,
        tuple(events),
        crash_after_commit,
        gateway_timeouts,
    )
