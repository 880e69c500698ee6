"""A ``payweave worker`` child process that can be SIGKILLed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from pydantic import SecretStr

import payweave
from payweave.settings import Settings

READY_LINE = "worker polling task queue"
REPO_ROOT = Path(payweave.__file__).resolve().parent.parent


def settings_env(settings: Settings, **overrides: object) -> dict[str, str]:
    """``settings`` as ``PAYWEAVE_*`` environment variables (what ``payweave worker`` reads). Fields that are
    None are left out (their default applies). Schedules are off and metrics unserved unless overridden: a
    chaos worker must not re-point the sweeper schedules of a dev stack at its own task queue."""
    values: dict[str, object] = {name: getattr(settings, name) for name in type(settings).model_fields}
    values.update(schedules_enabled=False, worker_metrics_port=None)
    values.update(overrides)
    env: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"PAYWEAVE_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """Runs ``payweave worker`` in a scratch directory (so no ``.env`` or ``.payweave/dev.env`` is read: the
    settings come only from ``env``), logging to ``log_path``. Not thread-safe; one process at a time."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log: IO[bytes] | None = None
        self._offset = 0
        self._cwd = tempfile.mkdtemp(prefix="payweave-chaos-worker-")

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "worker already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _closed
        self._offset = self.log_path.stat().st_size
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWEAVE_")} | self.env
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("PAYWEAVE_LOG_FORMAT", "json")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "payweave.cli", "worker"],
            cwd=self._cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def ready(self) -> bool:
        """True once this start's log says the worker polls its task queue; raises if the process died."""
        assert self.process is not None
        text = self.log_path.read_bytes()[self._offset :].decode(errors="replace")
        if READY_LINE in text:
            return True
        if self.process.poll() is not None:
            raise RuntimeError(
                f"worker exited with {self.process.returncode} before polling:\n{text[-3000:]}"
            )
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, in-flight activities and workflow tasks are simply abandoned."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self._closed()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), SIGKILL if it does not exit in ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            self._closed()
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._closed()

    def _closed(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
