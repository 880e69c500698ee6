"""RS256 tokens verified against keys fetched from a JWKS URL (an identity provider's, served here on
loopback); the algorithm list is fixed by configuration, so HS256 or alg=none tokens are refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.security import TokenVerifier
from payweave.errors import Unauthenticated
from payweave.settings import Settings

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "roles": ["customer"], "aud": "payweave", "exp": int(time.time()) + 60, **extra}


def test_rs256_token_from_the_identity_provider_is_accepted(jwks_url: str) -> None:
    verifier = TokenVerifier(Settings(jwt_jwks_url=jwks_url, _env_file=None))  # type: ignore[call-arg]
    token = jwt.encode(claims(), KEY, algorithm="RS256", headers={"kid": "k1"})
    principal = verifier.verify(f"Bearer {token}")
    assert principal.sub == "alice" and principal.can("transfers:create")


@pytest.mark.parametrize("case", ["other_key", "hs256", "expired", "wrong_audience", "none"])
def test_anything_else_is_refused(jwks_url: str, case: str) -> None:
    verifier = TokenVerifier(Settings(jwt_jwks_url=jwks_url, _env_file=None))  # type: ignore[call-arg]
    token = {
        "other_key": lambda: jwt.encode(claims(), OTHER_KEY, algorithm="RS256", headers={"kid": "k1"}),
        "hs256": lambda: jwt.encode(claims(), "shared-secret", algorithm="HS256", headers={"kid": "k1"}),
        "expired": lambda: jwt.encode(
            claims(exp=int(time.time()) - 3600), KEY, algorithm="RS256", headers={"kid": "k1"}
        ),
        "wrong_audience": lambda: jwt.encode(
            claims(aud="someone-else"), KEY, algorithm="RS256", headers={"kid": "k1"}
        ),
        "none": lambda: jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"}),
    }[case]()
    with pytest.raises(Unauthenticated):
        verifier.verify(f"Bearer {token}")
