"""The naive saga B1 is compared with: a bare workflow running ``steps`` no-op activities one after another, on
its own task queue of the same Temporal server, hosted by a worker in this process with the same activity slots.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(step: int) -> int:
    return step


@workflow.defn(name="BenchBareSaga", sandboxed=False)
class BareSagaWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        done = 0
        for step in range(steps):
            done += await workflow.execute_activity(noop, step, start_to_close_timeout=timedelta(seconds=30))
        return done
