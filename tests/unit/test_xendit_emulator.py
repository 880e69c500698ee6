"""The Xendit emulator process on its own: auth, loopback only, callbacks with the token, --store across restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from payweave.devstack.supervisor import free_port, terminate
from payweave.devstack.xendit_emulator import configure_callbacks, start_xendit_emulator_process

KEY = ("xnd_development_unit", "")


class Receiver:
    """A callback endpoint that records what it got (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.arrived:
                    receiver.received.append((dict(self.headers), body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 10) -> list[tuple[dict[str, str], dict[str, Any]]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= n, timeout), self.received
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def test_auth_callbacks_and_store_across_restarts(tmp_path: Path, receiver: Receiver) -> None:
    port, store = free_port(), tmp_path / "xendit.pickle"
    base = f"http://127.0.0.1:{port}"
    process = start_xendit_emulator_process(
        port, receiver.url, "tok-1", log_path=tmp_path / "x.log", store=store
    )
    try:
        body = {"external_id": "ext-1", "amount": 150000.0, "currency": "IDR"}
        assert httpx.post(f"{base}/v2/invoices/", json=body).status_code == 401
        assert (
            httpx.post(f"{base}/v2/invoices/", json=body, auth=("sk_test_not_xendit", "")).status_code == 401
        )
        created = httpx.post(f"{base}/v2/invoices/", json=body, auth=KEY)
        assert created.status_code == 200, created.text
        invoice = created.json()
        assert (invoice["status"], invoice["amount"]) == ("PENDING", 150000)

        assert httpx.post(f"{base}/_control/invoices/{invoice['id']}/pay", json={}).status_code == 200
        [(headers, callback)] = receiver.wait_for(1)
        assert headers["x-callback-token"] == "tok-1"
        assert (callback["id"], callback["external_id"], callback["status"]) == (
            invoice["id"],
            "ext-1",
            "PAID",
        )
        assert (callback["amount"], callback["paid_amount"], callback["currency"]) == (150000, 150000, "IDR")

        configure_callbacks(base, receiver.url, "tok-2")  # reconfigured: the next one carries the new token
        assert httpx.post(f"{base}/_control/invoices/{invoice['id']}/settle").status_code == 200
        headers, callback = receiver.wait_for(2)[1]
        assert (headers["x-callback-token"], callback["status"]) == ("tok-2", "SETTLED")
    finally:
        terminate(process)

    process = start_xendit_emulator_process(port, None, None, store=store)
    try:
        again = httpx.get(f"{base}/v2/invoices", params={"external_id": "ext-1"}, auth=KEY).json()
        assert [(i["id"], i["status"]) for i in again] == [(invoice["id"], "SETTLED")]
    finally:
        terminate(process)


def test_refuses_to_listen_beyond_loopback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "payweave.devstack.xendit_emulator", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "loopback" in result.stderr
