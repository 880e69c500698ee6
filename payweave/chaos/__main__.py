"""By hand: ``python -m payweave.chaos --seed 7 --sagas 200 --kills 20`` against a running ``payweave dev``
(run from the repository root, so ``.payweave/dev.env`` supplies the secrets; or give ``PAYWEAVE_*``).
More faults: ``--temporal-restarts 3 --pg-terminations 10 --crash-after-commit 0.1 --gateway-timeouts 0.2``
(Temporal restarts run the sagas on the harness's own dev server, on ``--temporal-db``).

Without ``--api-url`` the harness serves its own API on a fresh task queue that only its killable worker
polls, so the dev stack's own worker never picks up the chaos sagas. With ``--api-url`` it uses that API's
task queue (``PAYWEAVE_TEMPORAL_TASK_QUEUE``): stop the stack's own worker first. Exit status 1 on any
finding."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from db.engine import make_engine
from payweave.chaos.harness import ChaosStack, run_chaos
from payweave.chaos.plan import make_plan
from payweave.settings import Settings


async def _main(args: argparse.Namespace) -> int:
    settings = Settings()
    wallet = make_engine(settings.wallet_database_url, pool_size=10)
    payments = make_engine(settings.payments_database_url, pool_size=10)
    try:
        plan = make_plan(
            args.seed,
            args.sagas,
            args.kills,
            temporal_restarts=args.temporal_restarts,
            pg_terminations=args.pg_terminations,
            crash_after_commit=args.crash_after_commit,
            gateway_timeouts=args.gateway_timeouts,
        )
        if args.plan_only:
            print(plan.describe())
            return 0
        stack = ChaosStack(
            settings=settings,
            wallet_engine=wallet,
            payments_engine=payments,
            log_dir=Path(args.log_dir),
            temporal_address=args.temporal_address or settings.temporal_address,
            api_url=args.api_url,
            temporal_db=Path(args.temporal_db) if args.temporal_db else None,
        )
        report = await run_chaos(stack, plan, liveness_seconds=args.liveness, log=print)
        print(report.summary())
        return 0 if report.ok else 1
    finally:
        await wallet.dispose()
        await payments.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m payweave.chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sagas", type=int, default=200)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--temporal-restarts", type=int, default=0, help="restarts of an own Temporal dev server")
    p.add_argument("--temporal-db", default=None, help="its persistent file (default: new, in --log-dir)")
    p.add_argument("--pg-terminations", type=int, default=0, help="times every backend is terminated")
    p.add_argument(
        "--crash-after-commit", type=float, default=0.0, help="share of activities crashing after a commit"
    )
    p.add_argument(
        "--gateway-timeouts", type=float, default=0.0, help="share of Stripe creates whose answer is lost"
    )
    p.add_argument("--api-url", default=None, help="use this API (and its task queue) instead of an own one")
    p.add_argument("--temporal-address", default=None, help="default: PAYWEAVE_TEMPORAL_ADDRESS")
    p.add_argument("--liveness", type=float, default=120.0, help="seconds after the last restart")
    p.add_argument("--log-dir", default=".payweave/logs", help="where the chaos worker logs")
    p.add_argument("--plan-only", action="store_true", help="print the seeded plan and exit")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
