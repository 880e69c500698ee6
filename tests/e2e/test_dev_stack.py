"""``payweave dev`` as a new user runs it: everything up and ready, Ctrl-C leaves no process behind, and a
second run keeps the data. Runs on free ports so it never collides with a real `payweave dev`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from payweave.devstack.supervisor import free_port


def start_dev(tmp: Path, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWEAVE_")}
    env.update(
        {
            "PAYWEAVE_DEV_DATA_DIR": str(tmp / ".payweave"),
            "PAYWEAVE_DEV_POSTGRES_PORT": str(ports["pg"]),
            "PAYWEAVE_DEV_TEMPORAL_PORT": str(ports["temporal"]),
            "PAYWEAVE_DEV_TEMPORAL_UI_PORT": str(ports["ui"]),
            "PAYWEAVE_DEV_LOCALSTRIPE_PORT": str(ports["stripe"]),
            "PAYWEAVE_DEV_XENDIT_PORT": str(ports["xendit"]),
            "PAYWEAVE_API_PORT": str(ports["api"]),
            "PAYWEAVE_DEV_WORKER_METRICS_PORT": str(ports["metrics"]),
        }
    )
    # Its own session, like a terminal's foreground job: Ctrl-C is SIGINT to the whole process group.
    return subprocess.Popen(
        [sys.executable, "-m", "payweave.cli", "dev"],
        cwd=tmp,
        env=env,
        stdout=open(tmp / "dev.out", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen[bytes], api: str, log: Path, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert process.poll() is None, f"payweave dev exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # polling a condition (readiness), bounded by the timeout
    raise AssertionError(f"not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def ctrl_c(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    family = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    return family


def worker_metrics(port: int, series: str, timeout: float = 60) -> str:
    """The worker's /metrics once it shows ``series`` (the worker may still be starting its pollers)."""
    started = time.monotonic()
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            if series in text:
                return text
        except httpx.HTTPError:
            text = ""
        assert time.monotonic() - started < timeout, (
            f"no {series} on the worker's metrics port:\n{text[-2000:]}"
        )
        time.sleep(0.25)  # polling a condition (the worker's pollers started), bounded by the timeout


def test_dev_stack_starts_serves_and_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("pg", "temporal", "ui", "stripe", "xendit", "api", "metrics")}
    api = f"http://127.0.0.1:{ports['api']}"
    log = tmp_path / "dev.out"

    process = start_dev(tmp_path, ports)
    try:
        assert wait_ready(process, api, log) < 60
        assert httpx.get(f"{api}/docs").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['xendit']}/_control/health").status_code == 200
        env_file = tmp_path / ".payweave" / "dev.env"
        secret = next(
            line.split("=", 1)[1]
            for line in env_file.read_text().splitlines()
            if line.startswith("PAYWEAVE_JWT_SECRET=")
        )
        token = subprocess.run(
            [sys.executable, "-m", "payweave.cli", "token", "--sub", "dev-test", "--role", "customer"],
            cwd=tmp_path,
            env={**os.environ, "PAYWEAVE_JWT_SECRET": secret.strip("'\"")},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{api}/v1/wallets", json={"currency": "USD"}, headers=auth)
        assert created.status_code == 201, created.text
        # One scrape target per process: the API's /metrics, the worker's metrics port; both with Temporal's.
        assert "payweave_http_request_seconds_count" in httpx.get(f"{api}/metrics").text
        assert "temporal_request_total" in worker_metrics(ports["metrics"], "temporal_num_pollers")
    finally:
        family = ctrl_c(process) if process.poll() is None else []

    assert family, "payweave dev should have started child processes"
    leftovers = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == [], f"still running after Ctrl-C: {[p.pid for p in leftovers]}"

    process = start_dev(tmp_path, ports)  # the second run keeps the data
    try:
        wait_ready(process, api, log)
        again = httpx.get(f"{api}/v1/wallets", headers=auth)
        assert [w["id"] for w in again.json()] == [created.json()["id"]]
    finally:
        if process.poll() is None:
            ctrl_c(process)
