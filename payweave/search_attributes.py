"""Custom search attributes every saga upserts (ARCHITECTURE §5). No personal data goes in them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PW_KIND = SearchAttributeKey.for_keyword("PwKind")
PW_STATUS = SearchAttributeKey.for_keyword("PwStatus")
PW_OWNER = SearchAttributeKey.for_keyword("PwOwner")
PW_AMOUNT = SearchAttributeKey.for_int("PwAmount")
PW_CURRENCY = SearchAttributeKey.for_keyword("PwCurrency")
PW_ORDER_ID = SearchAttributeKey.for_keyword("PwOrderId")

ALL: tuple[SearchAttributeKey, ...] = (PW_KIND, PW_STATUS, PW_OWNER, PW_AMOUNT, PW_CURRENCY, PW_ORDER_ID)


def cli_flags() -> dict[str, str]:
    """Name → type, as ``temporal server start-dev --search-attribute NAME=TYPE`` wants them."""
    names = {"KEYWORD": "Keyword", "INT": "Int"}
    return {key.name: names[key.indexed_value_type.name] for key in ALL}
