"""Child processes for the dev stack and the test fixtures: start, watch, stop in order, never leak.

Two mechanisms make sure nothing outlives us:

* every child gets ``PR_SET_PDEATHSIG`` (Linux), so the kernel signals it when we die, even by SIGKILL;
* children run in their own session (``start_new_session``), so a Ctrl-C in the terminal reaches only
  the supervisor, which then stops the children in reverse start order (API before the database),
  instead of every process getting SIGINT at once and racing each other down.

Caveat: the kernel sends the parent-death signal when the *thread* that forked exits, not the process.
Start children from the main thread (or a thread that lives as long as they should).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

PR_SET_PDEATHSIG = 1

# The project root (the directory holding the ``payweave`` package). Children run ``python -m payweave...``
# and must import it even if the package is not installed into the venv.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Loaded in the parent: the pre-exec hook runs between fork and exec, where loading libraries is unsafe.
    _libc = ctypes.CDLL(None, use_errno=True)


class ChildExited(RuntimeError):
    """A supervised child stopped although nobody asked it to."""

    def __init__(self, name: str, returncode: int | None) -> None:
        super().__init__(f"{name} exited unexpectedly (exit code {returncode})")
        self.name = name
        self.returncode = returncode


def _death_signal_hook(sig: int) -> Callable[[], None] | None:
    if _libc is None:
        return None
    libc = _libc
    parent = os.getpid()

    def hook() -> None:
        # Runs in the child after fork (and after Popen switched user, which would reset the setting).
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody will ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def with_project_on_pythonpath(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: os.environ) where ``python -m payweave...`` works from any directory."""
    result = dict(os.environ if env is None else env)
    parts = [p for p in result.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(PROJECT_ROOT) not in parts:
        parts.insert(0, str(PROJECT_ROOT))
    result["PYTHONPATH"] = os.pathsep.join(parts)
    # Children's log lines should show up as they happen, not when a pipe buffer fills.
    result.setdefault("PYTHONUNBUFFERED", "1")
    return result


def _pump_output(name: str, stream: IO[bytes], width: int) -> None:
    prefix = f"{name:<{width}} | "
    for line in iter(stream.readline, b""):
        with contextlib.suppress(OSError, ValueError):  # our stdout went away: keep draining the pipe
            # Looked up per line: sys.stdout may be swapped (pytest capture) while the child runs.
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()
    stream.close()


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    output_prefix: str | None = None,
    user: str | None = None,
    death_signal: int = signal.SIGTERM,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start one child that dies with us.

    Output goes to ``log_path`` (appended), or line by line to our stdout behind ``output_prefix``,
    or is simply inherited. ``user`` (needs root) runs the child as that system user.
    """
    stdout: int | IO[bytes] | None = None
    log_file: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        stdout = log_file
    elif output_prefix is not None:
        stdout = subprocess.PIPE
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if user is not None:
        entry = pwd.getpwnam(user)
        # Drop root's group and supplementary groups too, not only the uid.
        uid, gid, groups = entry.pw_uid, entry.pw_gid, []
    try:
        process = subprocess.Popen(
            [os.fspath(a) for a in argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,  # never compete with the terminal for input
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=new_session,
            preexec_fn=_death_signal_hook(death_signal),
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    finally:
        if log_file is not None:
            log_file.close()
    if log_path is None and output_prefix is not None:
        assert process.stdout is not None
        pump = threading.Thread(
            target=_pump_output,
            args=(output_prefix, process.stdout, max(len(output_prefix), 10)),
            name=f"output-{output_prefix}",
            daemon=True,
        )
        pump.start()
        process._payweave_pump = pump  # type: ignore[attr-defined]
    return process


def signal_process(process: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
    """Send ``sig`` to a child (or its whole process group); a child that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)


def terminate(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0, group: bool = True
) -> int:
    """Ask politely with ``sig``, wait ``timeout`` seconds, then SIGKILL; return the exit code.

    With ``group`` (the child leads its own session) leftovers in its process group are killed as well.
    That is safe after the leader was reaped: Linux never reuses a pid that is still a process group id.
    """
    if process.poll() is None:
        signal_process(process, sig, group=False)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_process(process, signal.SIGKILL, group=group)
            signal_process(process, signal.SIGKILL, group=False)
            process.wait()
    if group:
        signal_process(process, signal.SIGKILL, group=True)
    pump: threading.Thread | None = getattr(process, "_payweave_pump", None)
    if pump is not None:
        pump.join(timeout=1.0)  # let the last lines of output through
    return process.returncode


@dataclasses.dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    stop_signal: int
    own_session: bool
    log_path: Path | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None


class Supervisor:
    """Named children started in order, stopped in reverse order.

    ``install_signal_handlers`` makes SIGINT/SIGTERM set :attr:`stop_requested`. While
    :attr:`interrupt_on_signal` is true (startup) the first signal also raises KeyboardInterrupt, so a long
    startup step is abandoned at once, but never between Popen and recording the child: otherwise a freshly
    started child could escape the orderly stop.
    """

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.received_signal: int | None = None
        self.interrupt_on_signal = True
        self._critical = 0
        self._pending_interrupt = False
        self._stopping = False
        self._old_handlers: dict[int, object] = {}

    # -- starting ---------------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        prefix_output: bool = True,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        new_session: bool = True,
    ) -> subprocess.Popen[bytes]:
        if self._stopping:
            raise RuntimeError("supervisor is stopping")
        with self._no_interrupt():
            process = spawn(
                argv,
                env=env,
                cwd=cwd,
                log_path=log_path,
                output_prefix=name if prefix_output else None,
                user=user,
                death_signal=stop_signal,
                new_session=new_session,
            )
            self.children.append(Child(name, process, stop_signal, new_session, log_path))
        return process

    def adopt(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        *,
        stop_signal: int = signal.SIGTERM,
        own_session: bool = True,
        log_path: Path | None = None,
    ) -> None:
        """Supervise a child started elsewhere (e.g. with :func:`spawn`)."""
        self.children.append(Child(name, process, stop_signal, own_session, log_path))

    # -- watching ---------------------------------------------------------------------------------------

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        return next((c for c in self.children if not c.running), None)

    def check(self) -> None:
        """Raise :class:`ChildExited` if a child died; handy as the ``check`` of the wait helpers."""
        child = self.exited()
        if child is not None:
            raise ChildExited(child.name, child.process.returncode)

    def wait_for_any_exit(self, timeout: float | None = None, poll: float = 0.2) -> Child | None:
        """Block until a child exits (returned), a stop is requested or ``timeout`` passes (None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            child = self.exited()
            if child is not None:
                return child
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if self.stop_requested.wait(poll):
                return None

    # -- stopping ---------------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop every child, newest first; return their exit codes. Safe to call more than once."""
        self._stopping = True
        codes: dict[str, int] = {}
        for child in reversed(self.children):
            codes[child.name] = terminate(
                child.process, sig=child.stop_signal, timeout=timeout, group=child.own_session
            )
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- signals ----------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested.is_set():
            return  # a repeated Ctrl-C must not disturb the orderly shutdown already under way
        self.received_signal = signum
        self.stop_requested.set()
        if self.interrupt_on_signal and not self._stopping:
            if self._critical:
                self._pending_interrupt = True
            else:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def _no_interrupt(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._pending_interrupt and not self._critical:
            self._pending_interrupt = False
            raise KeyboardInterrupt


# -- ports and readiness ------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (good enough for tests; the OS hands out ports round-robin)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: otherwise a port freed a moment ago looks busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _wait(
    what: str, probe: Callable[[], bool], timeout: float, check: Callable[[], object] | None, poll: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(poll)


def wait_tcp(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    check: Callable[[], object] | None = None,
    poll: float = 0.1,
) -> None:
    """Wait until ``host:port`` accepts connections. ``check`` runs between attempts and may raise
    (e.g. :meth:`Supervisor.check` or a "did the process die" test) to fail fast."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    _wait(f"{host}:{port}", probe, timeout, check, poll)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status code of a GET, or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):  # URLError, connection refused/reset, timeouts
        return None


def wait_http(
    url: str,
    timeout: float = 30.0,
    *,
    expect: int | None = 200,
    check: Callable[[], object] | None = None,
    poll: float = 0.2,
) -> None:
    """Wait until a GET of ``url`` answers ``expect`` (any status if None)."""

    def probe() -> bool:
        status = http_status(url)
        return status is not None and (expect is None or status == expect)

    _wait(url, probe, timeout, check, poll)


def process_check(process: subprocess.Popen[bytes], name: str) -> Callable[[], None]:
    """A ``check`` for the wait helpers that fails as soon as ``process`` has exited."""

    def check() -> None:
        if process.poll() is not None:
            raise ChildExited(name, process.returncode)

    return check
