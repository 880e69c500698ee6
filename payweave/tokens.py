"""Development tokens (``payweave token``). In production an identity provider issues the JWTs."""

from __future__ import annotations

import time

import jwt

from payweave.settings import Settings

ROLES = ("customer", "merchant", "factory", "operator", "service")


def issue_token(settings: Settings, *, sub: str, roles: list[str], ttl_seconds: int = 24 * 3600) -> str:
    if settings.jwt_secret is None:
        raise RuntimeError("PAYWEAVE_JWT_SECRET is not set (run `payweave dev` once, or set it)")
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "roles": roles,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
