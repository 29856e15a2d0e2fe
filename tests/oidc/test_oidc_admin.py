"""Managing clients (admin API, through the same checks as the CLI), key rollover as the
JWKS shows it, private_key_jwt at the token endpoint, and RP-initiated logout."""

from __future__ import annotations

import time
import uuid

from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

from tests.api_helpers import make_token
from tests.oidc.support import ISSUER, add_client, pkce_pair, query_of, split_jwt
from tests.oidc.test_oidc_flow import RP, audit_codes, redeem, sign_in
from tests.saml.test_saml_interop import enroll
from tests.saml_support import FlaskClient


def api(idp, scope="write"):
    token = make_token(idp.extensions["devicetrust"].db, f"t-{uuid.uuid4().hex[:6]}", scope)
    return idp.test_client(), {"Authorization": f"Bearer {token}"}


def test_admin_api_manages_clients(idp):
    c, h = api(idp)
    r = c.post("/api/v1/oidc-clients", json={"name": "Wiki", "redirect_uris": [RP]}, headers=h)
    assert r.status_code == 201, r.json
    created = r.json
    assert created["client_secret"] and created["has_secret"]
    cid = created["client_id"]
    shown = c.get(f"/api/v1/oidc-clients/{cid}", headers=h).json
    assert "client_secret" not in shown and "secret_hash" not in shown
    assert [x["client_id"] for x in c.get("/api/v1/oidc-clients", headers=h).json["items"]] == [cid]
    r = c.patch(
        f"/api/v1/oidc-clients/{cid}", json={"rotate_secret": True, "name": "Wiki 2"}, headers=h
    )
    assert r.status_code == 200 and r.json["client_secret"] != created["client_secret"]
    for body, code in [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_uri"),
        ({"redirect_uris": ["https://*.example/cb"]}, "invalid_uri"),
        ({"redirect_uris": ["https://rp.example/cb#frag"]}, "invalid_uri"),
        ({"claims": {"email": "sub"}}, "invalid_claims"),
        ({"mode": "factor", "eam_tenant_id": "t"}, "invalid_tenant"),
        ({"token_auth_method": "private_key_jwt"}, "invalid_jwks"),
    ]:
        r = c.patch(f"/api/v1/oidc-clients/{cid}", json=body, headers=h)
        assert r.status_code == 400 and r.json["error"]["code"] == code, (body, r.json)
    r = c.post("/api/v1/oidc-clients", json={"redirect_uris": [RP], "bogus": 1}, headers=h)
    assert r.status_code == 400
    r = c.post("/api/v1/oidc-clients", json={"client_id": cid, "redirect_uris": [RP]}, headers=h)
    assert r.status_code == 409
    ro, rh = api(idp, "read")
    assert ro.delete(f"/api/v1/oidc-clients/{cid}", headers=rh).status_code == 403
    assert c.delete(f"/api/v1/oidc-clients/{cid}", headers=h).json == {"removed": cid}
    assert c.get(f"/api/v1/oidc-clients/{cid}", headers=h).status_code == 404
    doc = c.get("/api/v1/openapi.json").json
    assert "/api/v1/oidc-clients/{client_id}" in doc["paths"]


def test_key_rollover_publishes_before_signing(idp):
    from idp_service.oidc import keys

    client = FlaskClient(idp)
    device = enroll(idp, client, "kim@example.com")
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    svc = idp.extensions["devicetrust"]

    def kids():
        return [k["kid"] for k in client.get("/oidc/jwks").json()["keys"]]

    def signed_kid():
        verifier, challenge = pkce_pair()
        back = sign_in(idp, client, device, client_id, challenge)
        token = redeem(client, client_id, secret, back["code"], verifier).json()["id_token"]
        return split_jwt(token)[0]["kid"]

    old = signed_kid()
    assert kids() == [old]
    with svc.db.session() as s:
        staged = keys.load(
            *(lambda r: (r.id, r.status, r.private_key_pem, r.cert_pem))(keys.stage_next(s))
        )
    assert kids() == [old, staged.kid]  # published, not signing
    assert signed_kid() == old
    with svc.db.session() as s:
        keys.activate_next(s)
    assert signed_kid() == staged.kid
    assert kids() == [staged.kid, old]  # the old key stays until its tokens expired
    with svc.db.session() as s:
        keys.retire_previous(s)
    assert kids() == [staged.kid]


def test_private_key_jwt(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "lee@example.com")
    key = RSAKey.generate_key(2048)
    public = {**key.as_dict(private=False), "kid": "rp-1"}
    client_id, secret = add_client(
        idp,
        name="Key app",
        redirect_uris=[RP],
        token_auth_method="private_key_jwt",
        jwks={"keys": [public]},
    )
    assert secret is None

    def assertion(aud=ISSUER + "/token", sub=None, signer=key, jti="fresh"):
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": sub or client_id,
            "aud": aud,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex if jti == "fresh" else jti,
        }
        if jti is None:
            del claims["jti"]
        return jose_jwt.encode({"alg": "RS256", "kid": "rp-1"}, claims, signer)

    def token_with(a):
        verifier, challenge = pkce_pair()
        back = sign_in(idp, client, device, client_id, challenge)
        return client.post(
            "/oidc/token",
            data={
                "grant_type": "authorization_code",
                "code": back["code"],
                "redirect_uri": RP,
                "code_verifier": verifier,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": a,
            },
        )

    once = assertion()
    assert token_with(once).status_code == 200
    # Each assertion is good once (OpenID Connect Core §9): a copy is refused, audited.
    again = token_with(once)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    assert "oidc_assertion_replayed" in audit_codes(idp, "oidc.token")
    # And an assertion without a jti cannot be held to that.
    assert token_with(assertion(jti=None)).json()["error"] == "invalid_client"
    assert token_with(assertion(aud="https://elsewhere/token")).json()["error"] == "invalid_client"
    other = RSAKey.generate_key(2048)
    assert token_with(assertion(signer=other)).status_code == 401


def test_rp_initiated_logout(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "mo@example.com")
    client_id, secret = add_client(
        idp, name="Wiki", redirect_uris=[RP], post_logout_redirect_uris=["https://rp.example/bye"]
    )
    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)
    tokens = redeem(client, client_id, secret, back["code"], verifier).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/oidc/userinfo", headers=bearer).status_code == 200
    # Not registered: refused, nothing revoked.
    r = client.get(
        "/oidc/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.example/",
        },
    )
    assert r.status_code == 400 and "oidc_logout_invalid" in r.text
    assert client.get("/oidc/userinfo", headers=bearer).status_code == 200
    r = client.get(
        "/oidc/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://rp.example/bye",
            "state": "bye-state",
        },
    )
    assert r.status_code == 303
    assert r.headers["Location"].startswith("https://rp.example/bye?")
    assert query_of(r.headers["Location"]) == {"state": "bye-state"}
    assert client.get("/oidc/userinfo", headers=bearer).status_code == 401
    r = client.get("/oidc/logout", query_string={"id_token_hint": "x.y.z"})
    assert r.status_code == 400
    assert "oidc_logout_invalid" in audit_codes(idp, "oidc.logout")
