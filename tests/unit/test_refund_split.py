"""Refund splitting across tenders: exact integers, never more than a tender paid (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payweave.refund_split import split_refund


def test_forty_of_a_thirty_seventy_order_is_twelve_and_twenty_eight() -> None:
    assert split_refund(
        4_000, wallet_paid=3_000, gateway_paid=7_000, wallet_refunded=0, gateway_refunded=0
    ) == (1_200, 2_800)


def test_the_wallet_part_takes_the_remainder_unit() -> None:
    assert split_refund(1, wallet_paid=1, gateway_paid=2, wallet_refunded=0, gateway_refunded=0) == (1, 0)
    assert split_refund(10, wallet_paid=10, gateway_paid=20, wallet_refunded=0, gateway_refunded=0) == (4, 6)
    assert split_refund(5, wallet_paid=10, gateway_paid=20, wallet_refunded=0, gateway_refunded=0) == (2, 3)


@pytest.mark.parametrize("policy,expected", [("wallet_first", (3_000, 1_000)), ("gateway_first", (0, 4_000))])
def test_policies_fill_one_tender_first(policy: str, expected: tuple[int, int]) -> None:
    assert (
        split_refund(
            4_000, wallet_paid=3_000, gateway_paid=7_000, wallet_refunded=0, gateway_refunded=0, policy=policy
        )
        == expected
    )  # type: ignore[arg-type]


@given(
    wallet=st.integers(0, 10**9),
    gateway=st.integers(0, 10**9),
    data=st.data(),
    policy=st.sampled_from(["proportional", "wallet_first", "gateway_first"]),
)
def test_successive_refunds_never_exceed_a_tender_and_always_add_up(
    wallet: int, gateway: int, data: st.DataObject, policy: str
) -> None:
    if wallet + gateway == 0:
        return
    refunded_w = refunded_g = 0
    for _ in range(5):
        left = wallet + gateway - refunded_w - refunded_g
        if left == 0:
            break
        amount = data.draw(st.integers(1, left))
        w, g = split_refund(
            amount,
            wallet_paid=wallet,
            gateway_paid=gateway,
            wallet_refunded=refunded_w,
            gateway_refunded=refunded_g,
            policy=policy,
        )  # type: ignore[arg-type]
        assert w >= 0 and g >= 0 and w + g == amount
        refunded_w, refunded_g = refunded_w + w, refunded_g + g
        assert refunded_w <= wallet and refunded_g <= gateway
    with pytest.raises(ValueError):
        split_refund(
            wallet + gateway - refunded_w - refunded_g + 1,
            wallet_paid=wallet,
            gateway_paid=gateway,
            wallet_refunded=refunded_w,
            gateway_refunded=refunded_g,
        )
