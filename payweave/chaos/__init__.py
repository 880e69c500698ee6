"""Chaos harness (QUALITY.md R1, issue #6): a seeded mix of sagas against a real stack while the plan's faults
happen — worker SIGKILLs, Temporal dev server restarts, PostgreSQL backend terminations, activity crashes after
commit, gateway answers lost after the work — then liveness, money conservation, one gateway object per payment
and the ledger invariants are checked.

Same seed → same plan (saga mix, amounts, submission gaps, fault schedule, which steps crash). See
docs/reliability.md.
"""

from payweave.chaos.harness import ChaosReport, ChaosStack, kill_and_restart, run_chaos, start_api
from payweave.chaos.inject import LossyGateway, TemporalServer, terminate_backends
from payweave.chaos.plan import ChaosPlan, FaultEvent, SagaSpec, make_plan
from payweave.chaos.worker import WorkerProcess, settings_env

__all__ = [
    "ChaosPlan",
    "ChaosReport",
    "ChaosStack",
    "FaultEvent",
    "LossyGateway",
    "SagaSpec",
    "TemporalServer",
    "WorkerProcess",
    "kill_and_restart",
    "make_plan",
    "run_chaos",
    "settings_env",
    "start_api",
    "terminate_backends",
]
