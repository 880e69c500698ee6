"""R1: SIGKILL the worker at seeded points while mixed sagas run; restart it each time; then I1–I5.

The sagas run on their own task queue, served only by a ``payweave worker`` child process (the fixtures'
settings as PAYWEAVE_* variables) that the harness SIGKILLs and restarts; the in-process fixture worker keeps
serving the fixtures' queue and never sees these sagas. The default run is reduced (20 sagas, 3 kills);
``PAYWEAVE_CHAOS_SCALE=full`` runs QUALITY.md's size (200 sagas, 20 kills). ``PAYWEAVE_CHAOS_SEED`` picks the
seed (default 1)."""

from __future__ import annotations

import os

import pytest

from payweave.chaos import ChaosStack, make_plan, run_chaos

FULL = os.environ.get("PAYWEAVE_CHAOS_SCALE") == "full"
SEED = int(os.environ.get("PAYWEAVE_CHAOS_SEED", "1"))

pytestmark = pytest.mark.reliability


def test_same_seed_same_schedule() -> None:
    assert make_plan(7, 200, 20) == make_plan(7, 200, 20)
    assert make_plan(7, 200, 20) != make_plan(8, 200, 20)
    plan = make_plan(7, 200, 20)
    assert len(plan.sagas) == 200 and len(plan.kill_after) == 20
    assert {s.kind for s in plan.sagas} == {"deposit", "transfer", "transfer_to_frozen", "split_checkout"}


@pytest.mark.slow
async def test_r1_worker_sigkill(chaos_stack: ChaosStack) -> None:
    """Reduced (20 sagas, 3 kills) in the default run; QUALITY.md's size with PAYWEAVE_CHAOS_SCALE=full."""
    sagas, kills = (200, 20) if FULL else (20, 3)
    report = await run_chaos(chaos_stack, make_plan(SEED, sagas, kills), log=print)
    print(report.summary())
    assert report.worker_kills == kills and report.worker_starts == kills + 1
    assert not report.not_terminal and report.liveness_seconds <= 120, report.summary()
    assert not report.ledger_violations, report.summary()
    assert not report.gateway_duplicates and not report.gateway_missing, report.summary()
    assert report.money_expected == report.money_actual, report.summary()
    assert report.ok, report.summary()
