"""Hostile or confused client authentication at the token endpoint, and hostile redirect URIs
at registration: each is a 4xx with a stable code and its audit event, never a 500, and a
request that authenticates two ways at once is refused (RFC 6749 §2.3)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import quote_plus

import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from tests.oidc.support import IDP_PUBLIC, ISSUER, add_client, pkce_pair
from tests.oidc.test_oidc_admin import api
from tests.oidc.test_oidc_flow import RP, last_audit_code, sign_in
from tests.saml.test_saml_interop import enroll
from tests.saml_support import FlaskClient

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Basic é",  # not ASCII: the header arrives as latin-1 text
        "Basic " + "\u00ff" * 8,
        "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),  # base64 of non-UTF-8
    ],
)
def test_unreadable_basic_credentials_are_invalid_client(idp_app, header):
    client = FlaskClient(idp_app)
    r = client.post(
        "/oidc/token",
        data={"grant_type": "authorization_code", "code": "x" * 43},
        headers={"Authorization": header},
    )
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "oidc_invalid_client"
    assert r.json()["error"] == "invalid_client"
    assert last_audit_code(idp_app, "oidc.token") == "oidc_invalid_client"


def _key_client(idp):
    key = RSAKey.generate_key(2048)
    public = {**key.as_dict(private=False), "kid": "rp-1"}
    client_id, _ = add_client(
        idp,
        name="Key app",
        redirect_uris=[RP],
        token_auth_method="private_key_jwt",
        jwks={"keys": [public]},
    )
    return key, client_id


def _signed(key, payload: str) -> str:
    """A compact JWS over exactly ``payload`` (JSON the encoder would not write, e.g. NaN)."""
    return jws.serialize_compact({"alg": "RS256", "kid": "rp-1"}, payload.encode(), key)


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_an_assertion_with_a_non_finite_exp_is_invalid_client(idp_app, exp):
    key, client_id = _key_client(idp_app)
    payload = (
        f'{{"iss": "{client_id}", "sub": "{client_id}", "aud": "{ISSUER}/token", '
        f'"exp": {exp}, "jti": "{uuid.uuid4().hex}"}}'
    )
    client = FlaskClient(idp_app)
    r = client.post(
        "/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": "x" * 43,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _signed(key, payload),
        },
    )
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "oidc_invalid_client"
    assert last_audit_code(idp_app, "oidc.token") == "oidc_invalid_client"


def test_an_assertion_and_a_secret_together_are_refused(idp):
    """RFC 6749 §2.3: a client uses one authentication method per request; the code survives."""
    from joserfc import jwt as jose_jwt

    client = FlaskClient(idp)
    device = enroll(idp, client, "two@example.com")
    key, client_id = _key_client(idp)
    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)

    def assertion():
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": ISSUER + "/token",
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        return jose_jwt.encode({"alg": "RS256", "kid": "rp-1"}, claims, key)

    form = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": RP,
        "code_verifier": verifier,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(),
    }
    r = client.post("/oidc/token", data={**form, "client_secret": "anything"})
    assert r.status_code == 401 and r.json()["code"] == "oidc_invalid_client", r.text
    assert last_audit_code(idp, "oidc.token") == "oidc_invalid_client"
    # Refused before the code was looked at: the client's proper request still redeems it.
    r = client.post("/oidc/token", data={**form, "client_assertion": assertion()})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "uri",
    [
        "https://[::1/cb",  # an unclosed IPv6 literal
        "https://rp.example:99999/cb",  # no such port
        "https://rp.example:x/cb",
        "http://[::1]:65536/cb",
    ],
)
def test_an_unparseable_redirect_uri_is_invalid_uri(idp_app, uri):
    c, h = api(idp_app)
    r = c.post("/api/v1/oidc-clients", json={"name": "W", "redirect_uris": [uri]}, headers=h)
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "invalid_uri"
    r = c.post(
        "/api/v1/oidc-clients",
        json={"name": "W", "redirect_uris": [RP], "post_logout_redirect_uris": [uri]},
        headers=h,
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_uri", r.json


@pytest.mark.parametrize(
    ("nbf", "accepted"),
    [(3600, False), ('"soon"', False), ("NaN", False), (30, True), (0, True)],
)
def test_an_assertion_is_not_accepted_before_its_nbf(idp_app, nbf, accepted):
    """RFC 7523 §3: not before ``nbf`` (a minute of clock skew allowed). An int is seconds
    from now; a string is the claim's JSON as is."""
    key, client_id = _key_client(idp_app)
    now = int(time.time())
    value = str(now + nbf) if isinstance(nbf, int) else nbf
    payload = (
        f'{{"iss": "{client_id}", "sub": "{client_id}", "aud": "{ISSUER}/token", '
        f'"exp": {now + 120}, "nbf": {value}, "jti": "{uuid.uuid4().hex}"}}'
    )
    client = FlaskClient(idp_app)
    r = client.post(
        "/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": "x" * 43,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _signed(key, payload),
        },
    )
    if accepted:  # the client is authenticated; the made-up code is what is refused
        assert r.status_code == 400 and r.json()["code"] == "oidc_invalid_grant", r.text
    else:
        assert r.status_code == 401 and r.json()["code"] == "oidc_invalid_client", r.text
        assert last_audit_code(idp_app, "oidc.token") == "oidc_invalid_client"


@pytest.fixture
def provider(database_url, tmp_path):
    """The provider on SQLite and on PostgreSQL."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(database_url)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": database_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": IDP_PUBLIC,
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()


@pytest.mark.parametrize("how", ["form", "basic", "assertion"])
@pytest.mark.parametrize("client_id", ["a\x00b", "wiki\n", "é"])
def test_a_client_id_no_client_can_have_is_invalid_client(provider, how, client_id):
    """A NUL (PostgreSQL refuses it in a query), a newline, a non-ASCII letter: 401."""
    client = FlaskClient(provider)
    form = {"grant_type": "authorization_code", "code": "x" * 43}
    headers = {}
    if how == "form":
        form.update(client_id=client_id, client_secret="s")
    elif how == "basic":
        raw = f"{quote_plus(client_id)}:s".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        key = RSAKey.generate_key(2048)
        payload = json.dumps({"iss": client_id, "sub": client_id, "exp": int(time.time()) + 60})
        form.update(client_assertion_type=ASSERTION_TYPE, client_assertion=_signed(key, payload))
    r = client.post("/oidc/token", data=form, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "oidc_invalid_client"
    assert last_audit_code(provider, "oidc.token") == "oidc_invalid_client"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"client_id": "wiki\n"}, "invalid_client_id"),
        ({"claims": {"groups": "roles\n"}}, "invalid_claims"),
        ({"mode": "factor", "eam_tenant_id": "t\n", "eam_jwks_url": RP}, "invalid_tenant"),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(idp_app, body, code):
    """``$`` matches before a final newline; the registry's names must match whole."""
    c, h = api(idp_app)
    r = c.post("/api/v1/oidc-clients", json={"name": "W", "redirect_uris": [RP], **body}, headers=h)
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code
