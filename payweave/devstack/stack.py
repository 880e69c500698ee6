"""``payweave dev``: the whole platform on one machine, started in order, stopped in reverse order.

PostgreSQL → migrations → Temporal dev server (+ Web UI) → localstripe → Xendit emulator → worker (metrics on
``PAYWEAVE_DEV_WORKER_METRICS_PORT``) → API. A part whose setting was given explicitly (environment or ``.env``)
is not started: that setting points at a real one. Everything lives in ``data_dir`` (default ``.payweave/``), so
a second run finds its data again: the PostgreSQL cluster, ``temporal.db``, ``localstripe.pickle``,
``xendit.pickle``, the generated secrets in ``dev.env`` and the logs of the background services in ``logs/``.
Worker and API log to the terminal, prefixed.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from payweave.devstack.localstripe_server import configure_webhook, localstripe_argv, wait_until_up
from payweave.devstack.postgres import PostgresServer
from payweave.devstack.supervisor import (
    ChildExited,
    Supervisor,
    port_in_use,
    spawn,
    terminate,
    wait_http,
    wait_tcp,
    with_project_on_pythonpath,
)
from payweave.devstack.temporal import dev_server_argv, ensure_search_attributes
from payweave.devstack.xendit_emulator import wait_until_up as wait_until_xendit_up
from payweave.devstack.xendit_emulator import xendit_emulator_argv, xendit_emulator_env
from payweave.settings import (
    DEV_DIR,
    Settings,
    get_settings,
)

LOOPBACK = "127.0.0.1"
DATABASES = {"wallet_database_url": "payweave_wallet", "payments_database_url": "payweave_payments"}

# Generated on the first run and kept: tokens and webhook signatures must stay valid across restarts.
GENERATED_SECRETS: dict[str, Callable[[], str]] = {
    "PAYWEAVE_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "PAYWEAVE_STRIPE_WEBHOOK_SECRET": lambda: "whsec_" + secrets.token_urlsafe(32),
    "PAYWEAVE_XENDIT_CALLBACK_TOKEN": lambda: secrets.token_urlsafe(32),
}


class DevStackError(RuntimeError):
    pass


# -- configuration --------------------------------------------------------------------------------------


def ensure_dev_secrets(env_file: Path) -> list[str]:
    """Add the secrets ``env_file`` lacks (existing values are kept); return the names added."""
    existing = dotenv_values(env_file) if env_file.exists() else {}
    missing = [name for name in GENERATED_SECRETS if not existing.get(name)]
    if not missing:
        return []
    text = (
        env_file.read_text() if env_file.exists() else "# Generated once by `payweave dev`. Keep private.\n"
    )
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{name}={GENERATED_SECRETS[name]()}\n" for name in missing)
    env_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = env_file.with_name(env_file.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, env_file)
    return missing


def uses_real_stripe(settings: Settings) -> bool:
    """A live key, or a test key somebody configured on purpose, means: talk to api.stripe.com."""
    key = settings.stripe_api_key.get_secret_value()
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    return "stripe_api_key" in settings.model_fields_set and key.startswith(("sk_test_", "rk_test_"))


def uses_real_xendit(settings: Settings) -> bool:
    """A production key, or a development key somebody configured on purpose, means: talk to api.xendit.co."""
    key = settings.xendit_secret_key.get_secret_value()
    if key.startswith("xnd_production_"):
        return True
    return "xendit_secret_key" in settings.model_fields_set and key.startswith("xnd_development_")


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for worker, API and migrations: every setting spelled out as ``PAYWEAVE_*``,
    so the children agree with what was started here, whatever .env files they would otherwise read."""
    env = with_project_on_pythonpath(base)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            # Only stripe_api_base/xendit_api_base use None on purpose ("the real service"); an empty
            # value reaches the gateway as "no base URL", while leaving it out would mean the default.
            if type(settings).model_fields[name].default is None:
                continue
            value = ""
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"PAYWEAVE_{name.upper()}"] = str(value)
    return env


def _require_free(port: int, what: str, setting: str) -> None:
    if port_in_use(LOOPBACK, port):
        raise DevStackError(
            f"port {port} ({what}) is already in use: is another `payweave dev` running? "
            f"To use a {what} that is already running, set {setting}."
        )


def _local_url(host: str, port: int) -> str:
    return f"http://{LOOPBACK if host in ('0.0.0.0', '::', '') else host}:{port}"


# -- the stack ------------------------------------------------------------------------------------------


class _Stack:
    def __init__(self, settings: Settings, data_dir: Path, console: Console) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.console = console
        self.sup = Supervisor()
        self.started: list[str] = []

    def _update(self, **values: object) -> None:
        self.settings = self.settings.model_copy(update=values)

    def _step(self, message: str) -> None:
        self.console.print(f"[dim]•[/dim] {message}")

    def start(self) -> None:
        explicit = self.settings.model_fields_set
        if "public_base_url" not in explicit:  # where localstripe delivers webhooks: follow the API port
            self._update(public_base_url=_local_url(self.settings.api_host, self.settings.api_port))
        if not set(DATABASES) <= explicit:
            self._start_postgres([name for name in DATABASES if name not in explicit])
        self._migrate()
        if "temporal_address" not in explicit:
            self._start_temporal()
        if "stripe_api_base" not in explicit:
            if uses_real_stripe(self.settings):
                self._update(stripe_api_base=None)  # the real Stripe API
            else:
                self._start_localstripe()
        if "xendit_api_base" not in explicit:
            if uses_real_xendit(self.settings):
                self._update(xendit_api_base=None)  # the real Xendit API
            else:
                self._start_xendit()
        self._start_app()

    def _start_postgres(self, fields: list[str]) -> None:
        port = self.settings.dev_postgres_port
        self._step(f"PostgreSQL on port {port} ({self.data_dir / 'pg'})")
        pg = PostgresServer(self.data_dir / "pg", port, LOOPBACK, log_path=self.logs / "postgres.log")
        pg.start(supervisor=self.sup)
        for field in fields:
            pg.create_database(DATABASES[field])
            self._update(**{field: pg.url(DATABASES[field])})
        self.started.append("postgres")

    def _migrate(self) -> None:
        self._step("migrations")
        argv = [sys.executable, "-m", "payweave.cli", "migrate"]
        process = spawn(argv, env=child_env(self.settings))
        try:
            code = process.wait()
        finally:
            # Only on Ctrl-C is it still running: SIGTERM ends it quietly, PostgreSQL rolls back.
            terminate(process)
        if code != 0:
            raise DevStackError(f"`payweave migrate` failed with exit code {code}")

    def _start_temporal(self) -> None:
        port, ui_port = self.settings.dev_temporal_port, self.settings.dev_temporal_ui_port
        _require_free(port, "Temporal", "PAYWEAVE_TEMPORAL_ADDRESS")
        _require_free(ui_port, "Temporal Web UI", "PAYWEAVE_TEMPORAL_ADDRESS")
        self._step(
            f"Temporal dev server on port {port}, Web UI on {ui_port} ({self.data_dir / 'temporal.db'})"
        )
        namespace = self.settings.temporal_namespace
        argv = dev_server_argv(self.data_dir / "temporal.db", port, ui_port, LOOPBACK, namespaces=[namespace])
        self.sup.start("temporal", argv, log_path=self.logs / "temporal.log")
        wait_tcp(LOOPBACK, port, 60, check=self.sup.check)
        ui = f"http://{LOOPBACK}:{ui_port}"
        wait_http(ui + "/", 60, check=self.sup.check)
        address = f"{LOOPBACK}:{port}"
        # The --search-attribute flags are ignored when temporal.db already exists (second run).
        ensure_search_attributes(address, namespace)
        self._update(temporal_address=address, temporal_ui_url=ui, temporal_tls=False, temporal_api_key=None)
        self.started.append("temporal")

    def _start_localstripe(self) -> None:
        port = self.settings.dev_localstripe_port
        _require_free(port, "localstripe", "PAYWEAVE_STRIPE_API_BASE")
        store = self.data_dir / "localstripe.pickle"
        self._step(f"localstripe on port {port} ({store})")
        process = self.sup.start(
            "localstripe",
            localstripe_argv(port, host=LOOPBACK, store=store),
            env=with_project_on_pythonpath(),
            log_path=self.logs / "localstripe.log",
        )
        base = f"http://{LOOPBACK}:{port}"
        wait_until_up(base, 30, process=process)
        # localstripe forgets its webhooks on restart: configure on every start.
        webhook = f"{self.settings.public_base_url.rstrip('/')}/v1/webhooks/stripe"
        configure_webhook(base, webhook, self.settings.stripe_webhook_secrets()[0])
        self._update(stripe_api_base=base)
        self.started.append("localstripe")

    def _start_xendit(self) -> None:
        port = self.settings.dev_xendit_port
        _require_free(port, "Xendit emulator", "PAYWEAVE_XENDIT_API_BASE")
        store = self.data_dir / "xendit.pickle"
        self._step(f"Xendit emulator on port {port} ({store})")
        callback = f"{self.settings.public_base_url.rstrip('/')}/v1/webhooks/xendit"
        process = self.sup.start(
            "xendit",
            xendit_emulator_argv(port, host=LOOPBACK, callback_url=callback, store=store),
            env=xendit_emulator_env(self.settings.xendit_callback_token.get_secret_value()),
            log_path=self.logs / "xendit.log",
        )
        base = f"http://{LOOPBACK}:{port}"
        wait_until_xendit_up(base, 30, process=process)
        self._update(xendit_api_base=base)
        self.started.append("xendit")

    def _start_app(self) -> None:
        if "worker_metrics_port" not in self.settings.model_fields_set:  # the worker serves its metrics here
            port = self.settings.dev_worker_metrics_port
            _require_free(port, "worker metrics", "PAYWEAVE_WORKER_METRICS_PORT")
            self._update(worker_metrics_port=port)
        settings = self.settings
        _require_free(settings.api_port, "API", "PAYWEAVE_API_PORT")
        env = child_env(settings)
        self._step("worker")
        self.sup.start("worker", [sys.executable, "-m", "payweave.cli", "worker"], env=env)
        self._step(f"API on port {settings.api_port}")
        self.sup.start("api", [sys.executable, "-m", "payweave.cli", "api"], env=env)
        wait_http(_local_url(settings.api_host, settings.api_port) + "/readyz", 90, check=self.sup.check)
        self.started += ["worker", "api"]

    def banner(self) -> None:
        s = self.settings
        api = _local_url(s.api_host, s.api_port)
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")  # URLs must stay whole, not end in "…"
        table.add_row("API", api)
        table.add_row("API docs", f"{api}/docs")
        metrics = f"{api}/metrics"
        if s.worker_metrics_port is not None:
            metrics += f", {_local_url(s.worker_metrics_host, s.worker_metrics_port)}/metrics (worker)"
        table.add_row("Metrics", metrics)
        table.add_row("Temporal Web UI", s.temporal_ui_url)
        table.add_row("Temporal", f"{s.temporal_address} (namespace {s.temporal_namespace})")
        table.add_row("Stripe", s.stripe_api_base or "api.stripe.com (real)")
        if "xendit" in self.started:
            table.add_row("Xendit (emulator)", s.xendit_api_base)
            table.add_row("  pay an invoice", f"POST {s.xendit_api_base}/_control/invoices/<id>/pay")
        else:
            table.add_row("Xendit", s.xendit_api_base or "api.xendit.co (real)")
        table.add_row("Wallet DB", s.wallet_database_url)
        table.add_row("Payments DB", s.payments_database_url)
        table.add_row("Data, logs", f"{self.data_dir}, {self.logs}")
        self.console.print()
        self.console.print("[bold green]payweave dev is running[/bold green] (Ctrl-C stops everything)")
        self.console.print(table)
        try:
            from payweave.tokens import issue_token

            token = issue_token(s, sub="dev-user", roles=["customer", "merchant", "operator"])
        except (ImportError, RuntimeError, ValueError) as e:
            self.console.print(f"[yellow]no development token: {e}[/yellow]")
        else:
            self.console.print("Development token (sub dev-user; customer, merchant, operator):")
            # Plain print: rich would wrap the long token and break copy & paste.
            print(token, flush=True)
            self.console.print(f'[dim]curl -H "Authorization: Bearer $TOKEN" {api}/v1/wallets[/dim]')
        self.console.print()

    def explain_failure(self, error: BaseException) -> None:
        self.console.print(f"[bold red]payweave dev: {error}[/bold red]")
        child = self.sup.exited()
        if child is not None and child.log_path is not None:
            tail = child.log_path.read_text(errors="replace").splitlines()[-20:]
            self.console.print(f"[red]last lines of {child.log_path}:[/red]")
            for line in tail:
                self.console.print(line, markup=False, highlight=False)


def run_dev(settings: Settings, data_dir: Path = DEV_DIR) -> int:
    """Run the dev stack until Ctrl-C, SIGTERM or a crashed part; return the exit code.

    0 when stopped on request, 1 when something failed to start or died.
    """
    console = Console(highlight=False)
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    env_file = data_dir / "dev.env"
    added = ensure_dev_secrets(env_file)
    if added:
        console.print(f"[dim]generated {', '.join(added)} in {env_file}[/dim]")
    # Reload so the generated secrets are in (settings.py reads .payweave/dev.env; data_dir may differ).
    settings = type(settings)(_env_file=(".env", str(env_file)))
    get_settings.cache_clear()

    stack = _Stack(settings, data_dir, console)
    sup = stack.sup
    sup.install_signal_handlers()
    try:
        try:
            stack.start()
            sup.interrupt_on_signal = False  # from here on a signal only sets sup.stop_requested
        except KeyboardInterrupt:
            return 0
        except (RuntimeError, OSError) as e:  # ours (DevStackError, ChildExited, ...), timeouts, ports
            stack.explain_failure(e)
            return 1
        if not sup.stop_requested.is_set():
            stack.banner()
        crashed = sup.wait_for_any_exit()
        if crashed is not None:
            stack.explain_failure(ChildExited(crashed.name, crashed.process.returncode))
            return 1
        return 0
    finally:
        sup.interrupt_on_signal = False
        console.print("[dim]stopping…[/dim]")
        codes = sup.stop()
        sup.restore_signal_handlers()
        stopped = ", ".join(f"{name} ({code})" for name, code in codes.items())
        console.print(f"[dim]stopped {stopped or 'nothing'}[/dim]")
