"""The ``payweave`` command: dev stack, api, worker, migrations, tokens, ledger verification."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from payweave.settings import Settings, get_settings

console = Console(stderr=True)


def _configure_logging(settings: Settings) -> None:
    from payweave.logs import configure_logging

    configure_logging(settings)  # structlog: JSON lines, or console lines with PAYWEAVE_LOG_FORMAT=console


def cmd_dev(args: argparse.Namespace) -> int:
    from payweave.devstack.stack import run_dev

    settings = get_settings()
    if "log_format" not in settings.model_fields_set:
        # Readable lines in development, unless configured. Through the environment: run_dev reloads the
        # settings, and the api and worker children inherit them.
        os.environ["PAYWEAVE_LOG_FORMAT"] = "console"
        get_settings.cache_clear()
        settings = get_settings()
    _configure_logging(settings)
    return run_dev(settings, settings.dev_data_dir)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    _configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's own lines go through payweave.logs too (format, redaction)
        access_log=False,  # api/request_context.py logs one line per request, with its request id
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.main import run_worker

    settings = get_settings()
    _configure_logging(settings)
    asyncio.run(run_worker(settings))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from db.migrate import upgrade_all

    settings = get_settings()
    asyncio.run(upgrade_all(settings.wallet_database_url, settings.payments_database_url))
    console.print("[green]wallet and payments databases are at the newest revision[/green]")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from payweave.tokens import issue_token

    try:
        token = issue_token(
            get_settings(), sub=args.sub, roles=args.role or ["customer"], ttl_seconds=args.ttl
        )
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    print(token)
    return 0


async def _verify(settings: Settings) -> int:
    from db.engine import make_engine
    from db.verify import verify_ledger

    wallet, payments = make_engine(settings.wallet_database_url), make_engine(settings.payments_database_url)
    try:
        report = await verify_ledger(wallet, payments)
    finally:
        await wallet.dispose()
        await payments.dispose()
    stats = ", ".join(f"{v} {k}" for k, v in report.stats.items())
    if report.ok:
        console.print(f"[green]ledger OK[/green]: {len(report.checked)} checks passed ({stats})")
        return 0
    console.print(
        f"[red]ledger INVALID[/red]: {len(report.violations)} of {len(report.checked)} checks failed"
    )
    for violation in report.violations:
        table = Table(title=violation.check, title_style="bold red")
        for column in violation.rows[0]:
            table.add_column(str(column))
        for row in violation.rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    return 1


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    return asyncio.run(_verify(get_settings()))


async def _run_operation(settings: Settings, what: str, window_hours: int | None) -> int:
    from payweave.schedules import reconcile_now, sweep_now
    from workers.client import connect

    client = await connect(settings)
    if what == "sweep":
        summary = await sweep_now(client, settings)
        print(summary.model_dump_json(indent=2))
        console.print(f"sweep done: {summary.repairs} repairs, {summary.errors} errors")
        return 1 if summary.errors else 0
    report = await reconcile_now(client, settings, window_hours)
    print(report.model_dump_json(indent=2))
    colour = "red" if report.mismatch_count else "green"
    console.print(
        f"[{colour}]reconciliation: {report.payments_checked} payments checked, "
        f"{report.mismatch_count} mismatches[/{colour}]"
    )
    return 1 if report.mismatch_count else 0


def cmd_ledger_release_transit(args: argparse.Namespace) -> int:
    from payweave.transit import run_release_transit

    return asyncio.run(
        run_release_transit(
            get_settings(),
            Console(),
            args.workflow_id,
            to_wallet=args.to,
            operator=args.operator,
            reason=args.reason,
        )
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    return asyncio.run(_run_operation(get_settings(), "sweep", None))


def cmd_reconcile(args: argparse.Namespace) -> int:
    return asyncio.run(_run_operation(get_settings(), "reconcile", args.window_hours))


def cmd_sagas_list(args: argparse.Namespace) -> int:
    from payweave.operator import run_list

    return asyncio.run(
        run_list(
            get_settings(),
            Console(),
            kind=args.kind,
            status=args.status,
            owner=args.owner,
            limit=args.limit,
            needs_attention=args.needs_attention,
        )
    )


def cmd_sagas_decide(args: argparse.Namespace) -> int:
    from payweave.decisions import run_decide

    return asyncio.run(
        run_decide(
            get_settings(),
            Console(),
            args.workflow_id,
            args.sagas_command,
            operator=args.operator,
            reason=args.reason,
        )
    )


def cmd_sagas_cancel(args: argparse.Namespace) -> int:
    from payweave.decisions import run_cancel

    return asyncio.run(
        run_cancel(get_settings(), Console(), args.workflow_id, operator=args.operator, reason=args.reason)
    )


def cmd_sagas_show(args: argparse.Namespace) -> int:
    from payweave.operator import run_show

    return asyncio.run(run_show(get_settings(), Console(), args.workflow_id))


def cmd_demo(args: argparse.Namespace) -> int:
    from payweave.demo import run_demo_cli

    return run_demo_cli(get_settings(), api_url=args.api_url, xendit_url=args.xendit_url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payweave", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "dev", help="run the whole platform locally (Postgres, Temporal + UI, localstripe, worker, API)"
    ).set_defaults(func=cmd_dev)
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(func=cmd_api)
    sub.add_parser("worker", help="run a Temporal worker").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="migrate the wallet and payments databases").set_defaults(func=cmd_migrate)
    token = sub.add_parser("token", help="issue a development JWT")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument(
        "--role", action="append", help="role (repeatable): customer merchant factory operator service"
    )
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    token.set_defaults(func=cmd_token)
    ledger = sub.add_parser("ledger", help="ledger tools")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_sub.add_parser(
        "verify", help="check ledger invariants I1–I5; non-zero exit on violation"
    ).set_defaults(func=cmd_ledger_verify)
    release = ledger_sub.add_parser(
        "release-transit",
        help="move what a finished transfer or refund left in transit (its reversal resolved by hand) to a "
        "customer wallet: one journal with the saga's id, audited",
    )
    release.add_argument("workflow_id", metavar="ID", help="the saga's workflow id (ledger verify's I1 row)")
    release.add_argument("--to", required=True, metavar="WALLET_ID", help="the customer wallet to credit")
    release.add_argument(
        "--reason", required=True, help="what was decided and where: saga_audit and the journal"
    )
    release.add_argument(
        "--operator", default=_login(), help="who releases, for saga_audit (default: your login name, $USER)"
    )
    release.set_defaults(func=cmd_ledger_release_transit)
    sub.add_parser(
        "sweep", help="run one sweep now (needs a running worker); prints what it repaired"
    ).set_defaults(func=cmd_sweep)
    reconcile = sub.add_parser(
        "reconcile", help="run one reconciliation now (needs a running worker); exit 1 on mismatches"
    )
    reconcile.add_argument(
        "--window-hours", type=int, help="payments created this many hours back (default 48)"
    )
    reconcile.set_defaults(func=cmd_reconcile)
    sagas = sub.add_parser("sagas", help="inspect sagas (Temporal visibility, history, ledger journals)")
    sagas_sub = sagas.add_subparsers(dest="sagas_command", required=True)
    sagas_list = sagas_sub.add_parser("list", help="sagas by kind, status, owner (newest first)")
    sagas_list.add_argument("--kind", help="PwKind: deposit, transfer, checkout, refund, group_buy, …")
    sagas_list.add_argument("--status", help="PwStatus: pending, completed, failed, …")
    sagas_list.add_argument("--owner", help="PwOwner: the sub of the user who started it")
    sagas_list.add_argument("--limit", type=int, default=50, help="at most this many rows (50)")
    sagas_list.add_argument(
        "--needs-attention",
        action="store_true",
        help="only sagas whose compensation gave up and waits for an operator (PwNeedsAttention = true)",
    )
    sagas_list.set_defaults(func=cmd_sagas_list)
    sagas_show = sagas_sub.add_parser(
        "show", help="one saga: state, activities run, compensations, ledger journals, Web UI link"
    )
    sagas_show.add_argument(
        "workflow_id", metavar="ID", help="workflow id, e.g. transfer:alice:alice-to-bob-1"
    )
    sagas_show.set_defaults(func=cmd_sagas_show)
    for name, help_text, func in (
        ("retry", "run a saga's failed compensation again (once its cause is fixed)", cmd_sagas_decide),
        (
            "resolve",
            "take a saga's failed compensation as made right by hand (--reason required)",
            cmd_sagas_decide,
        ),
        (
            "cancel",
            "cancel a running saga through its own cancel path: its compensations run",
            cmd_sagas_cancel,
        ),
    ):
        action = sagas_sub.add_parser(name, help=help_text)
        action.add_argument(
            "workflow_id", metavar="ID", help="workflow id (payweave sagas list --needs-attention)"
        )
        action.add_argument(
            "--reason",
            required=name == "resolve",
            help="what was done and where (ticket, gateway refund id, …): saga_audit and the journal description",
        )
        action.add_argument(
            "--operator",
            default=_login(),
            help="who decides, for saga_audit (default: your login name, $USER)",
        )
        action.set_defaults(func=func)
    demo = sub.add_parser(
        "demo", help="run every saga against a running `payweave dev` and show what happened"
    )
    demo.add_argument("--api-url", help="API base URL (default: PAYWEAVE_PUBLIC_BASE_URL)")
    demo.add_argument("--xendit-url", help="Xendit emulator URL (default: PAYWEAVE_XENDIT_API_BASE)")
    demo.set_defaults(func=cmd_demo)
    bench = sub.add_parser(
        "bench",
        help="benchmarks with same-run baselines on an embedded stack (exit 1 when a target is missed)",
    )
    bench.add_argument(
        "benchmark",
        choices=["checkout", "split", "ledger", "bulk-refund", "hot-wallet", "memory", "api", "all"],
    )
    bench.add_argument(
        "--quick", action="store_true", help="smaller runs: `all` in < 10 minutes (B4 wallet stays 10,000)"
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument(
        "--chart",
        metavar="FILE.png",
        help="also draw a PNG chart: each benchmark's share of its target (needs pip install 'payweave[bench]')",
    )
    bench.add_argument("--participants", type=int, default=None, help="wallet participants (10,000)")
    bench.add_argument("--gateway-participants", type=int, default=None, help="gateway participants (1,000)")
    bench.add_argument(
        "--sandboxed",
        action="store_true",
        help="workers run workflows in Temporal's sandbox (the default of PAYWEAVE_WORKFLOW_SANDBOX); "
        "without it they run as production does (docker-compose.yml)",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from payweave.bench.runner import run_bench

    results = asyncio.run(
        run_bench(
            args.benchmark,
            quick=args.quick,
            participants=args.participants,
            gateway_participants=args.gateway_participants,
            sandboxed=args.sandboxed,
        )
    )
    from payweave.bench.report import print_table, write_json

    console = Console()
    print_table(results, console, sandboxed=args.sandboxed)
    if args.json:
        write_json(results, Path(args.json), sandboxed=args.sandboxed)
    if args.chart:
        try:
            from payweave.bench.chart import draw_chart

            draw_chart(results, Path(args.chart), sandboxed=args.sandboxed)
        except ImportError as exc:  # matplotlib is an optional extra
            console.print(
                f"--chart {args.chart}: no chart, matplotlib cannot be imported ({exc}); "
                "install it with: pip install 'payweave[bench]'",
                markup=False,
            )
        else:
            console.print(f"chart written to {args.chart}", markup=False)
    return 0 if all(r.meets_target for r in results) else 1


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no $USER/$LOGNAME and no passwd entry (a bare container)
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def run() -> NoReturn:
    """The ``payweave`` command: main(), then the exit handlers (logs, tracing exporters), then leave without
    CPython's interpreter teardown. Temporal's client keeps Rust threads that can crash that teardown after the
    command has finished (temporalio/sdk-python#300): a refused ``sagas retry`` then exited with SIGSEGV (-11)
    instead of 1."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and usage errors, sys.exit() in a command
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
