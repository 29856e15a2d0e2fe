"""The ID token's ``iss`` is the provider's issuer exactly as its discovery document says it.

Some providers' issuers end in ``/`` (Auth0's ``https://TENANT.auth0.com/``). The
configured issuer loses its trailing ``/`` (that is how the discovery URL is built,
OpenID Connect Discovery §4), and the document's ``issuer`` is matched to it without
one; the ID tokens then carry the document's own string, slash and all (OpenID
Connect Discovery §3: ``iss`` is identical to the ``issuer`` published). A loopback
HTTP server plays the provider's discovery and JWKS; the tokens are signed here.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp_service.upstream.config import load
from idp_service.upstream.oidc import Provider, TokenRejected


class _Op:
    """Discovery and JWKS of a provider whose issuer ends in a slash."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
        op = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    doc = {
                        "issuer": op.issuer,
                        "authorization_endpoint": op.issuer + "authorize",
                        "token_endpoint": op.issuer + "oauth/token",
                        "jwks_uri": op.issuer + ".well-known/jwks.json",
                    }
                else:
                    doc = {"keys": [op.key.as_dict(private=False)]}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def id_token(self, iss: str, nonce: str) -> str:
        now = int(time.time())
        claims = {"iss": iss, "sub": "u1", "aud": "cid", "iat": now, "exp": now + 300}
        claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def op():
    served = _Op()
    yield served
    served.close()


def test_an_issuer_with_a_trailing_slash_is_matched_exactly(op, tmp_path):
    path = tmp_path / "upstream.toml"
    path.write_text(
        "[[idp]]\n"
        'id = "auth0"\nname = "Auth0"\n'
        f'issuer = "{op.issuer}"\n'
        'client_id = "cid"\nclient_secret = "s"\nclaim = "email"\n'
    )
    (idp,) = load(str(path))
    provider = Provider(idp, "https://dt.example/upstream/callback")
    assert provider.metadata()["issuer"] == op.issuer

    claims = provider.validate(op.id_token(op.issuer, "n-1"), "n-1")
    assert claims["iss"] == op.issuer and claims["sub"] == "u1"
    # Not the provider's issuer as published: refused, whichever way the slash goes.
    with pytest.raises(TokenRejected) as refused:
        provider.validate(op.id_token(op.issuer.rstrip("/"), "n-1"), "n-1")
    assert refused.value.reason == "iss"
