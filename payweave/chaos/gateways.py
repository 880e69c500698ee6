"""What the gateway emulators hold: the truth a test or the chaos harness compares the payments table with
(one gateway object per payment). Listing is by the metadata the sagas send with every object."""

from __future__ import annotations

from typing import Any

import httpx

from payweave.settings import Settings


async def stripe_intents(settings: Settings, metadata_key: str = "payment_id") -> dict[str, list[str]]:
    """localstripe's PaymentIntents by the value of ``metadata[metadata_key]`` (intent ids, oldest first);
    empty when ``settings`` points at the real Stripe (reconciliation's job there)."""
    if settings.stripe_api_base is None:
        return {}
    found: dict[str, list[str]] = {}
    key = settings.stripe_api_key.get_secret_value()
    async with httpx.AsyncClient(base_url=settings.stripe_api_base, auth=(key, ""), timeout=60) as client:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["starting_after"] = after
            page = (await client.get("/v1/payment_intents", params=params)).raise_for_status().json()
            for pi in page["data"]:
                value = (pi.get("metadata") or {}).get(metadata_key)
                if value:
                    found.setdefault(str(value), []).append(str(pi["id"]))
            if not page.get("has_more") or not page["data"]:
                break
            after = str(page["data"][-1]["id"])
    return found


async def xendit_invoices(settings: Settings, external_id: str) -> list[dict[str, Any]]:
    """The Xendit (emulator) invoices made under ``external_id`` (payweave's step key)."""
    key = settings.xendit_secret_key.get_secret_value()
    async with httpx.AsyncClient(
        base_url=settings.xendit_api_base or "", auth=(key, ""), timeout=60
    ) as client:
        r = await client.get("/v2/invoices", params={"external_id": external_id, "limit": 100})
        r.raise_for_status()
        return list(r.json())
