"""The seeded plan of a chaos run: which sagas, with what amounts, when they are submitted, when the worker
is killed. Everything random is drawn here, from one ``random.Random(seed)``, so the same seed always gives
the same plan (the interleaving with the running sagas is up to the machine's timing)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

SagaKind = Literal["deposit", "transfer", "transfer_to_frozen", "split_checkout"]
KINDS: tuple[SagaKind, ...] = ("deposit", "transfer", "transfer_to_frozen", "split_checkout")
WEIGHTS = (3, 3, 2, 2)


@dataclass(frozen=True)
class SagaSpec:
    index: int
    kind: SagaKind
    customer: int  # index of the paying customer
    peer: int  # index of the receiving customer (transfers) or of the frozen wallet
    amount: int  # minor units; for a split checkout, the wallet part (the gateway pays the rest)
    gap: float  # seconds to wait after the previous submission (load pacing, not synchronisation)


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

    def describe(self) -> str:
        counts = {k: sum(1 for s in self.sagas if s.kind == k) for k in KINDS}
        kills = ", ".join(f"{a:.2f}s/{d:.2f}s" for a, d in zip(self.kill_after, self.downtime, strict=True))
        return f"seed {self.seed}: {len(self.sagas)} sagas {counts}; kills (after ready / down): {kills}"


def make_plan(seed: int, sagas: int, kills: int, *, restart_seconds: float = 3.0) -> ChaosPlan:
    """``restart_seconds`` is about what a worker process needs to start: the submissions are spread over the
    expected fault window so that sagas are in flight at every kill."""
    rng = random.Random(seed)
    customers = max(4, sagas // 5)
    frozen = 2
    price = 5_000
    kill_after = tuple(round(rng.uniform(0.2, 1.5), 3) for _ in range(kills))
    downtime = tuple(round(rng.uniform(0.0, 0.5), 3) for _ in range(kills))
    window = sum(kill_after) + sum(downtime) + kills * restart_seconds
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
    # Funding covers the worst case of every saga of a customer paying from its wallet.
    funding = 2_000 * sagas + price
    return ChaosPlan(seed, customers, frozen, funding, price, tuple(specs), kill_after, downtime)
