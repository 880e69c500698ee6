"""Custom search attributes every saga upserts (ARCHITECTURE §5). No personal data goes in them."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

PW_KIND = SearchAttributeKey.for_keyword("PwKind")
PW_STATUS = SearchAttributeKey.for_keyword("PwStatus")
PW_OWNER = SearchAttributeKey.for_keyword("PwOwner")
PW_AMOUNT = SearchAttributeKey.for_int("PwAmount")
PW_CURRENCY = SearchAttributeKey.for_keyword("PwCurrency")
PW_ORDER_ID = SearchAttributeKey.for_keyword("PwOrderId")
# True while a compensation that gave up waits for an operator's decision (``payweave sagas retry|resolve``).
PW_NEEDS_ATTENTION = SearchAttributeKey.for_bool("PwNeedsAttention")

ALL: tuple[SearchAttributeKey[Any], ...] = (
    PW_KIND,
    PW_STATUS,
    PW_OWNER,
    PW_AMOUNT,
    PW_CURRENCY,
    PW_ORDER_ID,
    PW_NEEDS_ATTENTION,
)


def cli_flags() -> dict[str, str]:
    """Name → type, as ``temporal server start-dev --search-attribute NAME=TYPE`` wants them."""
    names = {"KEYWORD": "Keyword", "INT": "Int", "BOOL": "Bool"}
    return {key.name: names[key.indexed_value_type.name] for key in ALL}


def initial(
    *,
    kind: str,
    owner: str,
    amount: int,
    currency: str,
    status: str = "pending",
    order_id: str | None = None,
) -> TypedSearchAttributes:
    """The attributes a saga starts with (the workflow upserts them at every state change; a checkout started
    with all of its own, order id included, upserts none at its start)."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(PW_KIND, kind),
        SearchAttributePair(PW_STATUS, status),
        SearchAttributePair(PW_OWNER, owner),
        SearchAttributePair(PW_AMOUNT, amount),
        SearchAttributePair(PW_CURRENCY, currency),
        SearchAttributePair(PW_NEEDS_ATTENTION, False),
    ]
    if order_id is not None:
        pairs.append(SearchAttributePair(PW_ORDER_ID, order_id))
    return TypedSearchAttributes(pairs)
