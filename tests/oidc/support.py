"""Helpers for the OpenID Connect tests: an in-process provider, a test Entra tenant, and the
tests' own id_token checks (``cryptography`` on the JWKS's ``x5c`` certificate, not our code)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

IDP_PUBLIC = "http://127.0.0.1:8000"
ISSUER = IDP_PUBLIC + "/oidc"
EAM_REDIRECT = "https://login.microsoftonline.com/common/federation/externalauthprovider"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_pair() -> tuple[str, str]:
    verifier = b64u(secrets.token_bytes(32))
    return verifier, b64u(hashlib.sha256(verifier.encode()).digest())


def add_client(app, **body) -> tuple[str, str | None]:
    from idp_service.oidc import clients

    svc = app.extensions["devicetrust"]
    with svc.db.session() as s:
        row, secret = clients.add(s, body)
        return row.client_id, secret


# ---- the test's own JWT checks -------------------------------------------------------------


def split_jwt(token: str) -> tuple[dict, dict, bytes, bytes]:
    head, body, sig = token.split(".")
    return (
        json.loads(b64u_decode(head)),
        json.loads(b64u_decode(body)),
        f"{head}.{body}".encode(),
        b64u_decode(sig),
    )


def verify_rs256_with_x5c(token: str, jwks: dict) -> dict:
    """Verify with the certificate in the matching key's x5c, by cryptography alone; the claims."""
    header, claims, signed, signature = split_jwt(token)
    assert header["alg"] == "RS256", header
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    cert = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0]))
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    numbers = public.public_numbers()
    # The JWK's n/e and the certificate's key are the same key.
    assert int.from_bytes(b64u_decode(key["n"]), "big") == numbers.n
    assert int.from_bytes(b64u_decode(key["e"]), "big") == numbers.e
    public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    return claims


def form_fields(html: str) -> tuple[str, dict[str, str]]:
    """The auto-POST (or refusal) form on a page: action and hidden fields."""
    action = re.search(r'<form method="(?:post|get)" action="([^"]*)"', html)
    assert action, html
    fields = {
        unescape(m.group(1)): unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', html)
    }
    return unescape(action.group(1)), fields


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# ---- a test Entra tenant -------------------------------------------------------------------


class Tenant:
    """A test tenant: an RSA key that signs hints, and a JWKS served over loopback HTTP."""

    def __init__(self, tid: str = "11111111-2222-3333-4444-555555555555") -> None:
        self.tid = tid
        self.issuer = f"https://login.microsoftonline.com/{tid}/v2.0"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "tenant-key-1"
        self.extra_keys: list[dict] = []
        self.fetches = 0
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                tenant.fetches += 1
                body = json.dumps(tenant.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/discovery/v2.0/keys"

    @staticmethod
    def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict:
        n = key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
            "e": b64u(n.e.to_bytes(3, "big")),
        }

    def jwks(self) -> dict:
        return {"keys": [self.jwk_of(self.key, self.kid), *self.extra_keys]}

    def hint(
        self,
        *,
        aud: str,
        sub: str,
        oid: str,
        preferred_username: str,
        key=None,
        kid: str | None = None,
        tid: str | None = None,
        iss: str | None = None,
        exp_offset: int = -60,
    ) -> str:
        """An id_token_hint as Entra sends it: RS256, expired already (``exp_offset`` s)."""
        now = int(time.time())
        claims = {
            "iss": iss or self.issuer,
            "aud": aud,
            "tid": tid or self.tid,
            "oid": oid,
            "sub": sub,
            "preferred_username": preferred_username,
            "iat": now - 300,
            "nbf": now - 300,
            "exp": now + exp_offset,
            "ver": "2.0",
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
        sig = (key or self.key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64u(sig)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pem_of(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
