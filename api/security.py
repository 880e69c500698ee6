"""Bearer-token authentication and role → permission mapping (ARCHITECTURE §8).

payweave is a resource server: it validates JWTs (HS256 shared secret, or RS256 keys from a JWKS URL) and
never issues them outside development. ``sub``, ``exp`` and ``aud`` are required; the algorithm list is fixed
by configuration, so a token cannot choose its own (``alg=none`` and HS/RS confusion are refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt

from payweave.errors import Forbidden, Unauthenticated
from payweave.settings import Settings

PERMISSIONS: dict[str, frozenset[str]] = {
    "customer": frozenset(
        {"wallets:own", "deposits:create", "transfers:create", "checkouts:create", "group_buys:join"}
    ),
    "merchant": frozenset(
        {
            "wallets:own",
            "deposits:create",
            "transfers:create",
            "checkouts:create",
            "products:write",
            "group_buys:join",
        }
    ),
    "factory": frozenset({"wallets:own", "deposits:create", "transfers:create", "group_buys:manage"}),
    "operator": frozenset(
        {
            "wallets:read_any",
            "wallets:freeze",
            "sagas:read_any",
            "group_buys:cancel_any",
            "refunds:create_any",
        }
    ),
    "service": frozenset(
        {"wallets:own", "deposits:create", "transfers:create", "checkouts:create", "group_buys:join"}
    ),
}


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: tuple[str, ...]
    permissions: frozenset[str] = field(default_factory=frozenset)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise Forbidden(f"this action needs the {permission!r} permission")


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._jwks = (
            jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None
        )

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("expected 'Authorization: Bearer <token>'")
        try:
            claims = self._decode(token.strip())
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}") from None
        roles = claims.get("roles") or []
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("invalid token: roles must be a list of strings")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 200 or ":" in sub:
            raise Unauthenticated("invalid token: bad subject")
        perms: frozenset[str] = frozenset().union(*(PERMISSIONS.get(r, frozenset()) for r in roles))
        return Principal(sub=sub, roles=tuple(roles), permissions=perms)

    def _decode_with(self, token: str, key: Any, algorithm: str) -> dict[str, object]:
        s = self._settings
        claims: dict[str, object] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=s.jwt_audience,
            issuer=s.jwt_issuer,
            leeway=s.jwt_leeway_seconds,
            options={"require": ["exp", "sub", "aud"]},
        )
        return claims

    def _decode(self, token: str) -> dict[str, object]:
        s = self._settings
        if self._jwks is not None:
            return self._decode_with(token, self._jwks.get_signing_key_from_jwt(token).key, "RS256")
        if s.jwt_secret is None:
            raise jwt.InvalidKeyError("no JWT secret configured")
        # During a rotation a token may be signed with a previous secret: only a signature that no secret
        # verifies is refused for its signature; any other fault (expired, wrong audience) is final.
        for secret in s.jwt_verification_secrets():
            try:
                return self._decode_with(token, secret, "HS256")
            except jwt.InvalidSignatureError:
                continue
        raise jwt.InvalidSignatureError("Signature verification failed")
