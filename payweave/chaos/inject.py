"""The parts the chaos harness breaks besides the worker: a Temporal dev server on a persistent file that it
restarts, PostgreSQL backends it terminates, and a seeded lossy proxy in front of (local)Stripe that lets a
request do its work and then loses the answer (a gateway timeout after doing the work)."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from payweave.devstack.supervisor import Supervisor, free_port, wait_tcp
from payweave.devstack.temporal import dev_server_argv
from payweave.devstack.xendit_emulator import _reset_connection
from payweave.faults import draw

log = logging.getLogger("payweave.chaos")

DATABASES = ("payweave_wallet", "payweave_payments")


async def terminate_backends(engine: AsyncEngine, databases: tuple[str, ...] = DATABASES) -> int:
    """``pg_terminate_backend`` every other backend connected to ``databases`` (the API's, the workers', the
    tests'): their next statement fails with a dead connection. Returns how many were terminated."""
    async with engine.connect() as conn:
        killed = (
            await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = ANY(:dbs) AND pid <> pg_backend_pid()"
                ),
                {"dbs": list(databases)},
            )
        ).scalar_one()
    return int(killed)


class TemporalServer:
    """A ``temporal server start-dev`` on a persistent ``--db-filename``, stopped and started again on the
    same file and port: the histories, timers and task queues survive the restart (QUALITY R4)."""

    def __init__(self, db_file: Path, log_path: Path) -> None:
        self.db_file = db_file
        self.log_path = log_path
        self.port, self.ui_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.restarts = 0
        self._sup: Supervisor | None = None

    async def start(self) -> None:
        def run() -> Supervisor:
            sup = Supervisor()
            argv = dev_server_argv(self.db_file, self.port, self.ui_port, headless=True)
            sup.start("temporal", argv, log_path=self.log_path, prefix_output=False)
            wait_tcp("127.0.0.1", self.port, 60, check=sup.check)
            return sup

        self._sup = await asyncio.to_thread(run)
        await self.healthy()

    async def healthy(self, within: float = 60.0) -> Client:
        """A client once the frontend answers (the port opens before the frontend is healthy)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                return await Client.connect(self.address)
            except RuntimeError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._sup is not None:
            await asyncio.to_thread(self._sup.stop)
            self._sup = None

    async def restart(self, down: float) -> None:
        await self.stop()
        await asyncio.sleep(down)  # the outage itself
        await self.start()
        self.restarts += 1


@dataclass
class LossyGateway:
    """A loopback HTTP proxy in front of a gateway. A POST that carries ``metadata[workflow_id]`` (what the
    sagas send when they create a PaymentIntent) is forwarded, does its work upstream, and then — for the
    seeded share ``rate`` of sagas, the first time only — its answer is lost: a 504 (the proxy timed out)
    or a connection reset, seeded too. The decision is ``draw(seed, workflow id without the run tag)``, so the
    same seed loses the same sagas' answers whatever the timing. The retry (same idempotency key) must find
    the object made the first time (QUALITY R15)."""

    upstream: str
    seed: int
    rate: float
    strip: str = ""
    lost: list[tuple[str, str]] = field(default_factory=list)  # (workflow id, mode)
    url: str = ""
    _seen: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    def mode_for(self, workflow_id: str) -> str | None:
        tag = workflow_id.replace(self.strip, "") if self.strip else workflow_id
        if self.rate <= 0 or draw(self.seed, "gateway_timeout", tag) >= self.rate:
            return None
        return "timeout" if draw(self.seed, "gateway_timeout_mode", tag) < 0.5 else "reset"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as client:
            answer = await client.request(
                request.method, request.rel_url.path_qs, content=body, headers=headers
            )
        mode = None
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            wf = form.get("metadata[workflow_id]")
            if wf and wf not in self._seen:
                self._seen.add(wf)
                mode = self.mode_for(wf)
                if mode is not None:
                    self.lost.append((wf, mode))
                    log.info("chaos: %s answer of %s %s lost (%s)", wf, request.method, request.path, mode)
        if mode == "timeout":
            return web.json_response(
                {"error": {"type": "api_error", "message": "gateway timeout (chaos)"}}, status=504
            )
        if mode == "reset":
            _reset_connection(request)
        return web.Response(
            body=answer.content,
            status=answer.status_code,
            headers={
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection")
            },
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
