"""QUALITY R2: every activity crashes once right after its database commit, before it returns (the fault hook in
payweave/faults.py, armed for every activity the worker hosts). Temporal retries each with the same step keys;
the sagas must end exactly as without faults — every balance exact, one journal per step, I1–I4 clean."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.verify import verify_ledger
from payweave import faults
from payweave.settings import Settings
from tests.conftest import Users
from tests.e2e.test_checkouts import checkout, until_done
from tests.e2e.test_group_buys import funded_buyer, join, open_group_buy, until_participant, until_status
from tests.e2e.test_refunds import refund, until_refund_done
from tests.helpers import create_wallet, deposit, idem, until_terminal, wallet
from workers.registry import build_activities, gateways_from_settings

pytestmark = pytest.mark.reliability


async def test_every_activity_crashing_after_its_commit_moves_money_exactly_once(
    http: httpx.AsyncClient,
    users: Users,
    settings: Settings,
    wallet_engine: AsyncEngine,
    payments_engine: AsyncEngine,
) -> None:
    every_activity = {
        fn.__name__
        for fn in build_activities(
            wallet_engine=wallet_engine,
            payments_engine=payments_engine,
            gateways=gateways_from_settings(settings),
            settings=settings,
        )
    }
    _, alice = users.new()
    _, bob = users.new()
    merchant, m_auth = users.new("merchant")
    _, operator = users.new("operator")
    a, b, m = (
        await create_wallet(http, alice),
        await create_wallet(http, bob),
        await create_wallet(http, m_auth),
    )

    with faults.crash_after_commit(every_activity) as crashed:
        await deposit(http, alice, a["id"], 10_000)
        ok = await http.post(
            "/v1/transfers",
            json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 3_000, "currency": "USD"},
            headers={**alice, **idem()},
        )
        assert (await until_terminal(http, alice, f"/v1/transfers/{ok.json()['id']}"))[
            "status"
        ] == "completed"
        await http.post(f"/v1/wallets/{b['id']}/freeze", headers=operator)
        rolled = await http.post(
            "/v1/transfers",
            json={"from_wallet_id": a["id"], "to_wallet_id": b["id"], "amount": 1_000, "currency": "USD"},
            headers={**alice, **idem()},
        )
        assert (await until_terminal(http, alice, f"/v1/transfers/{rolled.json()['id']}"))[
            "status"
        ] == "failed"
        paid = await checkout(
            http,
            alice,
            {
                "merchant_id": merchant,
                "currency": "USD",
                "amount": 5_000,
                "payment": {
                    "method": "split",
                    "wallet_amount": 2_000,
                    "gateway": "stripe",
                    "payment_method": "pm_card_visa",
                },
            },
        )
        assert (await until_done(http, alice, paid["id"]))["status"] == "paid"
        r = await refund(http, m_auth, paid["id"], {"amount": 1_000, "reason": "damaged"})
        assert r.status_code == 202, r.text
        assert (await until_refund_done(http, m_auth, r.json()["id"]))["status"] == "succeeded"

        _, f_auth, f_wallet, gb = await open_group_buy(
            http, users, moq=2, deadline_in=3600, close_when_moq_reached=True
        )
        c, c_wallet = await funded_buyer(http, users, 3_000)
        d, _ = await funded_buyer(http, users, 0)
        assert (await join(http, c, gb, 1)).status_code == 202
        joined = await join(http, d, gb, 1, method="gateway", gateway="stripe", payment_method="pm_card_visa")
        assert joined.status_code == 202, joined.text
        await until_status(http, f_auth, gb["id"], "succeeded")
        await until_participant(http, c, gb["id"], "captured", ordered=True)
        done = await http.post(f"/v1/group-buys/{gb['id']}/production-complete", headers=f_auth)
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text

    # The faults really happened, in the money-moving steps of every saga kind.
    assert {
        "post_journal",
        "reverse_journal",
        "place_hold",
        "capture_hold",
        "record_payment",
        "create_gateway_payment",
        "reserve_refund",
        "join_group_buy",
        "capture_group_holds",
        "create_group_orders",
        "accept_group_payment",
        "release_escrow",
    } <= set(crashed), sorted(set(crashed))
    # Exactly once: a 10,000 deposit, 3,000 out, the rollback undone, 2,000 of a 5,000 checkout from the wallet,
    # 400 of the 1,000 refund back to the wallet (its proportional wallet share).
    assert (await wallet(http, alice, a["id"]))["balance"] == 10_000 - 3_000 - 2_000 + 400
    assert (await wallet(http, bob, b["id"]))["balance"] == 3_000
    assert (await wallet(http, m_auth, m["id"]))["balance"] == 5_000 - 1_000
    assert (await wallet(http, c, c_wallet))["balance"] == 2_000
    fee = 2 * 1_000 * 250 // 10_000
    assert (await wallet(http, f_auth, f_wallet["id"]))["balance"] == 2_000 - fee
    report = await verify_ledger(wallet_engine, payments_engine)
    assert report.ok, report.violations
