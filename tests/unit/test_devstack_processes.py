"""The dev-stack launchers against the real binaries (a few seconds: PostgreSQL, localstripe, Temporal)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
import stripe
from stripe.params import PaymentIntentCreateParams

from payweave.devstack.localstripe_server import configure_webhook, start_localstripe_process
from payweave.devstack.postgres import PostgresAlreadyRunning, PostgresServer
from payweave.devstack.supervisor import (
    Supervisor,
    free_port,
    terminate,
    wait_http,
    wait_tcp,
    with_project_on_pythonpath,
)
from payweave.devstack.temporal import SEARCH_ATTRIBUTES, dev_server_argv, ensure_search_attributes


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_postgres_lifecycle(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg", free_port(), fast=True)
    pg.start()
    try:
        pg.create_database("payweave_wallet")
        pg.create_database("payweave_wallet")  # idempotent
        conn = await asyncpg.connect(pg.dsn("payweave_wallet"))
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SHOW fsync") == "off"
        await conn.close()
        assert pg.url("x") == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/x"
        # A second server on the same data dir must not start while the first one runs.
        with pytest.raises(PostgresAlreadyRunning):
            PostgresServer(tmp_path / "pg", free_port())._check_leftover(wait=0)
    finally:
        pg.stop()
    assert pg.process is not None and _gone(pg.process.pid)
    pg.start()  # the data survives a restart
    try:
        assert "payweave_wallet" in pg.psql("SELECT datname FROM pg_database")
    finally:
        pg.stop()


def _listed(client: stripe.StripeClient, intent: str) -> tuple[list[str], list[int]]:
    """(the ids of every PaymentIntent listed, the amounts of ``intent``'s refunds)."""
    intents = client.v1.payment_intents.list()
    refunds = client.v1.refunds.list(params={"payment_intent": intent})
    return [i.id for i in intents.data], [r.amount for r in refunds.data]


def test_localstripe_idempotency_and_persistence(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "localstripe.pickle"
    process = start_localstripe_process(port, store=store, log_path=tmp_path / "localstripe.log")
    base = f"http://127.0.0.1:{port}"
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": base})
    params: PaymentIntentCreateParams = {
        "amount": 1000,
        "currency": "usd",
        "confirm": True,
        "payment_method": "pm_card_visa",
    }
    try:
        first = client.v1.payment_intents.create(params=params, options={"idempotency_key": "k1"})
        again = client.v1.payment_intents.create(params=params, options={"idempotency_key": "k1"})
        other = client.v1.payment_intents.create(params=params, options={"idempotency_key": "k2"})
        assert first.status == "succeeded"
        assert again.id == first.id and other.id != first.id
        client.v1.refunds.create(params={"payment_intent": first.id, "amount": 300})
        configure_webhook(base, "http://127.0.0.1:9/hook", "whsec_x")
        listed_before = _listed(client, first.id)
    finally:
        assert terminate(process) == 0
    process = start_localstripe_process(port, store=store)
    try:
        assert client.v1.payment_intents.retrieve(first.id).status == "succeeded"
        # Lists come from the per-type index, rebuilt from the saved store after a restart.
        assert _listed(client, first.id) == listed_before == ([first.id, other.id], [300])
    finally:
        terminate(process)


def test_temporal_dev_server_restarts_on_the_same_db(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    for attributes in ({"PwKind": "Keyword"}, SEARCH_ATTRIBUTES):  # the second run adds attributes
        with Supervisor() as sup:
            sup.start(
                "temporal", dev_server_argv(tmp_path / "t.db", port, ui_port), log_path=tmp_path / "t.log"
            )
            wait_tcp("127.0.0.1", port, 60, check=sup.check)
            wait_http(f"http://127.0.0.1:{ui_port}/", 60, check=sup.check)
            ensure_search_attributes(f"127.0.0.1:{port}", "default", attributes)
        assert _gone(sup.children[0].process.pid)


def test_children_die_with_the_supervisor(tmp_path: Path) -> None:
    script = (
        "import sys, time; from payweave.devstack.supervisor import spawn; "
        "p = spawn(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=with_project_on_pythonpath()
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while not _gone(child):
        assert time.monotonic() < deadline, "child outlived its supervisor"
        time.sleep(0.05)
