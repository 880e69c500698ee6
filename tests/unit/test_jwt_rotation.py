"""HS256 secret rotation: the API accepts tokens signed with the current secret or an earlier one listed in
``PAYWEAVE_JWT_PREVIOUS_SECRETS`` (comma-separated), signs new ones with the current secret only, refuses any
other signature, and never lets an earlier secret excuse another fault (an expired token stays refused)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from api.security import TokenVerifier
from payweave.errors import Unauthenticated
from payweave.logs import secret_values
from payweave.settings import Settings
from payweave.tokens import issue_token

PAD = "-" + "x" * 32  # HS256 keys of a recommended length (RFC 7518 §3.2)


def rotating(previous: str | None) -> Settings:
    return Settings(
        jwt_secret=SecretStr("new-secret" + PAD),
        jwt_previous_secrets=SecretStr(
            previous.replace("old-1", "old-1" + PAD).replace("old-2", "old-2" + PAD)
        )
        if previous is not None
        else None,
        _env_file=None,  # type: ignore[call-arg]
    )


def signed(secret: str, settings: Settings, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "alice",
        "roles": ["customer"],
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 600,
    }
    return "Bearer " + jwt.encode({**claims, **changes}, secret, algorithm="HS256")


@pytest.mark.parametrize("secret", ["new-secret", "old-1", "old-2"])
def test_the_current_and_every_previous_secret_verify(secret: str) -> None:
    settings = rotating(" old-1 , old-2 ")
    assert TokenVerifier(settings).verify(signed(secret + PAD, settings)).sub == "alice"


def test_a_secret_in_neither_list_is_refused() -> None:
    settings = rotating("old-1")
    with pytest.raises(Unauthenticated, match="InvalidSignatureError"):
        TokenVerifier(settings).verify(signed("someone-elses" + PAD, settings))


def test_without_previous_secrets_an_old_token_is_refused() -> None:
    settings = rotating(None)
    with pytest.raises(Unauthenticated, match="InvalidSignatureError"):
        TokenVerifier(settings).verify(signed("old-1" + PAD, settings))


def test_an_expired_token_signed_with_a_previous_secret_stays_refused() -> None:
    settings = rotating("old-1")
    with pytest.raises(Unauthenticated, match="ExpiredSignatureError"):
        TokenVerifier(settings).verify(signed("old-1" + PAD, settings, exp=int(time.time()) - 3_600))


def test_new_tokens_are_signed_with_the_current_secret_only() -> None:
    settings = rotating("old-1")
    token = issue_token(settings, sub="alice", roles=["customer"])
    only_new = rotating(None)
    assert TokenVerifier(only_new).verify("Bearer " + token).sub == "alice"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "old-1" + PAD, algorithms=["HS256"], audience=settings.jwt_audience)


def test_previous_secrets_are_redacted_from_logs_like_the_current_one() -> None:
    values = secret_values(rotating("old-1, old-2"))
    assert {"new-secret" + PAD, "old-1" + PAD, "old-2" + PAD} <= set(values)
