"""Chaos harness (QUALITY.md R1): a seeded mix of sagas against a real stack while a worker process is
SIGKILLed and restarted at seeded points, then the ledger invariants and liveness are checked.

Same seed → same plan (saga mix, amounts, submission gaps, kill delays). See docs/reliability.md.
"""

from payweave.chaos.harness import ChaosReport, ChaosStack, run_chaos
from payweave.chaos.plan import ChaosPlan, SagaSpec, make_plan
from payweave.chaos.worker import WorkerProcess, settings_env

__all__ = [
    "ChaosPlan",
    "ChaosReport",
    "ChaosStack",
    "SagaSpec",
    "WorkerProcess",
    "make_plan",
    "run_chaos",
    "settings_env",
]
