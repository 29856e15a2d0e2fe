"""The provider in process: discovery, JWKS with x5c, the code flow with PKCE, userinfo,
and the refusals of hostile or wrong input (each a 4xx with a stable code, audited)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.oidc.support import (
    ISSUER,
    add_client,
    b64u,
    form_fields,
    pkce_pair,
    query_of,
    verify_rs256_with_x5c,
)
from tests.saml.test_saml_interop import enroll
from tests.saml_support import FlaskClient, device_login

RP = "https://rp.example/callback"


def audit_codes(app, action: str) -> list[str | None]:
    from sqlalchemy import select

    from idp_service.platform.models import AuditEvent

    with app.extensions["devicetrust"].db.session() as s:
        return list(s.scalars(select(AuditEvent.code).where(AuditEvent.action == action)))


def last_audit_code(app, action: str) -> str | None:
    from sqlalchemy import select

    from idp_service.platform.models import AuditEvent

    with app.extensions["devicetrust"].db.session() as s:
        return s.scalars(
            select(AuditEvent.code)
            .where(AuditEvent.action == action)
            .order_by(AuditEvent.id.desc())
        ).first()


def authorize(client, client_id, *, verifier_challenge=None, nonce="n-1", state="s-1", **extra):
    params = {
        "client_id": client_id,
        "redirect_uri": RP,
        "response_type": "code",
        "scope": "openid email profile",
        "state": state,
        "nonce": nonce,
        **extra,
    }
    if verifier_challenge:
        params.setdefault("code_challenge_method", "S256")
        params["code_challenge"] = verifier_challenge
    params = {k: v for k, v in params.items() if v is not None}
    return client.get("/oidc/authorize", query_string=params)


def sign_in(app, client, device, client_id, challenge, **extra):
    r = authorize(client, client_id, verifier_challenge=challenge, **extra)
    assert r.status_code == 303, r.text
    done = device_login(client, device, r.headers["Location"])
    assert done.status_code == 303, done.text
    assert done.headers["Location"].startswith(RP + "?")
    return query_of(done.headers["Location"])


def redeem(client, client_id, secret, code, verifier, redirect_uri=RP):
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post(
        "/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {basic}"},
    )


def test_code_flow_discovery_jwks_userinfo(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "alice@example.com")
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    disc = client.get("/oidc/.well-known/openid-configuration").json()
    assert disc["issuer"] == ISSUER
    assert disc["jwks_uri"] == ISSUER + "/jwks"
    assert disc["code_challenge_methods_supported"] == ["S256"]
    jwks = client.get("/oidc/jwks").json()
    assert all(k["x5c"] and k["alg"] == "RS256" for k in jwks["keys"])

    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)
    assert back["state"] == "s-1"
    r = redeem(client, client_id, secret, back["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    claims = verify_rs256_with_x5c(body["id_token"], jwks)
    assert claims["iss"] == ISSUER and claims["aud"] == client_id
    assert claims["nonce"] == "n-1"
    assert claims["acr"] == "possessionorinherence"
    assert claims["amr"] == ["swk"]  # the reference agent's key is not hardware-bound
    assert claims["email"] == "alice@example.com"
    assert claims["device_id"] == device.id
    left = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == b64u(left)
    info = client.get("/oidc/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == claims["sub"]

    # The code is single use; a replay revokes the access token it issued.
    again = redeem(client, client_id, secret, back["code"], verifier)
    assert again.status_code == 400 and again.json()["code"] == "oidc_code_reused"
    assert again.json()["error"] == "invalid_grant"
    info = client.get("/oidc/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 401 and info.json()["code"] == "oidc_invalid_token"
    assert "oidc_code_reused" in audit_codes(idp, "oidc.token")


def test_wrong_verifier_burns_the_code(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "bob@example.com")
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)
    wrong, _ = pkce_pair()
    r = redeem(client, client_id, secret, back["code"], wrong)
    assert r.status_code == 400 and r.json()["code"] == "oidc_pkce_mismatch"
    r = redeem(client, client_id, secret, back["code"], verifier)
    assert r.status_code == 400 and r.json()["code"] == "oidc_code_reused"


def test_wrong_secret_and_wrong_client(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "carol@example.com")
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    other_id, other_secret = add_client(idp, name="Other", redirect_uris=[RP])
    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)
    r = redeem(client, client_id, "not-the-secret", back["code"], verifier)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = redeem(client, other_id, other_secret, back["code"], verifier)
    assert r.status_code == 400 and r.json()["code"] == "oidc_invalid_grant"
    r = redeem(client, client_id, secret, back["code"], verifier, redirect_uri=RP + "/x")
    assert r.status_code == 400 and r.json()["code"] == "oidc_invalid_grant"
    # That spent it.
    r = redeem(client, client_id, secret, back["code"], verifier)
    assert r.json()["code"] == "oidc_code_reused"


@pytest.mark.parametrize(
    ("change", "code", "redirects"),
    [
        ({"redirect_uri": RP + "/other"}, "oidc_redirect_uri_mismatch", False),
        ({"redirect_uri": "https://rp.example/callback?x=1"}, "oidc_redirect_uri_mismatch", False),
        ({"client_id": "nobody"}, "oidc_unknown_client", False),
        ({"response_type": "token"}, "oidc_unsupported_response_type", True),
        (
            {"response_type": "id_token", "response_mode": "form_post"},
            "oidc_unsupported_response_type",
            True,
        ),
        ({"scope": "email"}, "oidc_invalid_scope", True),
        ({"code_challenge_method": "plain"}, "oidc_pkce_method", True),
        ({"request": "eyJ.x.y"}, "oidc_request_not_supported", True),
        ({"prompt": "none"}, "oidc_login_required", True),
    ],
)
def test_authorize_refusals(idp_app, change, code, redirects):
    idp = idp_app  # one provider for every case: each refusal writes only its audit event
    client = FlaskClient(idp)
    client_id, _ = add_client(idp, name="Wiki", redirect_uris=[RP])
    _, challenge = pkce_pair()
    params = {"client_id": client_id, **change}
    r = authorize(client, params.pop("client_id"), verifier_challenge=challenge, **params)
    if redirects and change.get("response_mode") == "form_post":
        action, fields = form_fields(r.text)
        assert action == RP and fields["error_description"] == code and fields["state"] == "s-1"
    elif redirects:
        assert r.status_code == 303, r.text
        q = query_of(r.headers["Location"])
        assert r.headers["Location"].startswith(RP + "?")
        assert q["error_description"] == code and q["state"] == "s-1"
    else:
        assert r.status_code == 400 and code in r.text
        assert "Location" not in r.headers
    assert last_audit_code(idp, "oidc.authorize") == code


def test_public_client_needs_pkce(idp):
    client = FlaskClient(idp)
    client_id, secret = add_client(idp, name="CLI", redirect_uris=[RP], token_auth_method="none")
    assert secret is None
    r = authorize(client, client_id)
    assert query_of(r.headers["Location"])["error_description"] == "oidc_pkce_required"


def test_hostile_token_requests(idp):
    client = FlaskClient(idp)
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    h = {"Authorization": f"Basic {basic}"}
    r = client.post("/oidc/token", data={"grant_type": "password"}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "oidc_unsupported_grant_type"
    r = client.post(
        "/oidc/token", data={"grant_type": "authorization_code", "code": "x" * 40}, headers=h
    )
    assert r.status_code == 400 and r.json()["code"] == "oidc_invalid_grant"
    r = client.post("/oidc/token", json={"grant_type": "authorization_code"}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "oidc_malformed"
    r = client.post(
        "/oidc/token",
        content=b"code=1&code=2&grant_type=authorization_code",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and r.json()["code"] == "oidc_malformed"
    r = client.post(
        "/oidc/token",
        data={"grant_type": "authorization_code"},
        headers={"Authorization": "Basic !!!"},
    )
    assert r.status_code == 401
    r = client.post(
        "/oidc/token",
        content=b"\xff\xfe=1",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    r = client.get("/oidc/userinfo", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_denied_sign_in_goes_back_as_access_denied(idp):
    from idp_service.devices import registry

    client = FlaskClient(idp)
    device = enroll(idp, client, "dave@example.com")
    client_id, _ = add_client(idp, name="Wiki", redirect_uris=[RP])
    svc = idp.extensions["devicetrust"]
    with svc.db.session() as s:
        registry.change_state(s, device.id, "revoke", reason="test", actor="test")
    _, challenge = pkce_pair()
    r = authorize(client, client_id, verifier_challenge=challenge)
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 403
    action, fields = form_fields(page.text)
    assert action == RP
    assert fields == {
        "error": "access_denied",
        "error_description": "device_revoked",
        "state": "s-1",
    }
