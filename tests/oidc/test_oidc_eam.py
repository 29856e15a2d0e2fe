"""Microsoft Entra ID's External Authentication Methods, built as the reference describes it.

A test tenant's own RSA key signs the ``id_token_hint`` (already expired, as
Entra issues it), its JWKS is served over loopback HTTP, and the form POST
carries every parameter Entra sends. Our answer is checked by the test's own
code (``cryptography`` against the ``x5c`` certificate of our JWKS), rule by
rule: ``sub`` is the hint's, ``nonce`` echoed, exactly one ``acr``, an ``amr``
array of exactly one value, ``state`` echoed, posted to the ``redirect_uri``.
Okta's IdP authenticator in factor mode is a generic RP sending the user's
login as ``login_hint`` and checking ``preferred_username``.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oidc.support import (
    EAM_REDIRECT,
    ISSUER,
    add_client,
    form_fields,
    pkce_pair,
    query_of,
    verify_rs256_with_x5c,
)
from tests.oidc.test_oidc_flow import audit_codes, last_audit_code
from tests.saml.test_saml_interop import enroll
from tests.saml_support import FlaskClient, device_login

CLAIMS = {
    "id_token": {
        "acr": {"essential": True, "values": ["possessionorinherence"]},
        "amr": {
            "essential": True,
            "values": ["face", "fido", "fpt", "hwk", "iris", "otp", "pop", "retina", "sc"]
            + ["sms", "swk", "tel", "vbm"],
        },
    }
}
AMR_VALUES = set(CLAIMS["id_token"]["amr"]["values"])


def eam_client(app, tenant, **extra) -> str:
    client_id, _ = add_client(
        app,
        name="Microsoft Entra ID",
        mode="factor",
        redirect_uris=[EAM_REDIRECT],
        token_auth_method="none",
        eam_tenant_id=tenant.tid,
        eam_jwks_url=tenant.jwks_url,
        **extra,
    )
    return client_id


def provision(app, email: str, oid: str, *, active: bool = True) -> None:
    from idp_service.directory import users

    svc = app.extensions["devicetrust"]
    with svc.db.session() as s:
        user = users.find(s, email) or users.create(s, email)
        user.external_id = oid
        user.active = active


def eam_post(client, client_id, hint, *, nonce="entra-nonce-1", state="entra-state-1", **extra):
    form = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "client_id": client_id,
        "redirect_uri": EAM_REDIRECT,
        "nonce": nonce,
        "state": state,
        "claims": json.dumps(CLAIMS),
        "id_token_hint": hint,
        "client-request-id": "5b1b3a9e-0000-4000-8000-000000000001",
        **extra,
    }
    r = client.post("/oidc/authorize", data={k: v for k, v in form.items() if v is not None})
    location = r.headers.get("Location", "")
    if r.status_code == 303 and "?claim=" in location:  # a browser follows it at once
        r = client.get(location)
        assert r.status_code == 303, r.text[:300]
    return r


def test_a_post_authorize_keeps_the_browsers_other_sign_in(idp, tenant):
    # Entra's POST is cross-site: no Lax cookie goes with it, and what it sets is stored.
    browser = FlaskClient(idp)
    first = browser.get("/login").headers["Location"]
    provision(idp, "t@example.com", "oid-t")
    client_id = eam_client(idp, tenant)
    hint = tenant.hint(
        aud=client_id, sub="pairwise-sub-t", oid="oid-t", preferred_username="t@contoso.example"
    )
    posted = FlaskClient(idp).c.post(
        "/oidc/authorize",
        data={
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "client_id": client_id,
            "redirect_uri": EAM_REDIRECT,
            "nonce": "n-t",
            "state": "s-t",
            "claims": json.dumps(CLAIMS),
            "id_token_hint": hint,
        },
    )
    assert posted.status_code == 303, posted.get_data(as_text=True)[:300]
    for header in posted.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        browser.c.set_cookie(name, rest.split(";", 1)[0], domain="localhost")
    landed = browser.get(posted.headers["Location"])
    if landed.status_code == 303:  # the claim link: to the login page at its plain URL
        landed = browser.get(landed.headers["Location"])
    assert landed.status_code == 200
    assert browser.get(first + "/status").status_code == 200  # the other sign-in is kept


def check_eam_answer(page_html: str, jwks: dict, *, client_id: str, hint_sub: str) -> dict:
    """The reference's rules, checked by this test's own code."""
    action, fields = form_fields(page_html)
    assert action == EAM_REDIRECT
    assert set(fields) == {"id_token", "state"}
    assert fields["state"] == "entra-state-1"
    claims = verify_rs256_with_x5c(fields["id_token"], jwks)
    now = time.time()
    assert claims["iss"] == ISSUER
    assert claims["aud"] == client_id
    assert claims["sub"] == hint_sub
    assert claims["nonce"] == "entra-nonce-1"
    assert isinstance(claims["acr"], str) and claims["acr"] == "possessionorinherence"
    assert isinstance(claims["amr"], list) and len(claims["amr"]) == 1
    assert claims["amr"][0] in AMR_VALUES
    assert claims["iat"] <= now + 5 < claims["exp"]
    return claims


def test_eam_exchange(idp, tenant):
    client = FlaskClient(idp)
    device = enroll(idp, client, "alice@example.com")
    provision(idp, "alice@example.com", "oid-alice")
    client_id = eam_client(idp, tenant)
    disc = client.get("/oidc/.well-known/openid-configuration").json()
    assert disc["issuer"] == ISSUER and "id_token" in disc["response_types_supported"]
    hint = tenant.hint(
        aud=client_id,
        sub="pairwise-sub-a",
        oid="oid-alice",
        preferred_username="alice@contoso.example",
    )
    r = eam_post(client, client_id, hint)
    assert r.status_code == 303, r.text
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 200, page.text
    jwks = client.get("/oidc/jwks").json()
    claims = check_eam_answer(page.text, jwks, client_id=client_id, hint_sub="pairwise-sub-a")
    assert claims["amr"] == ["swk"]
    # A repeated /continue issues nothing new.
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 409 and "id_token" not in again.text


def test_username_fallback_by_setting(idp, tenant):
    client = FlaskClient(idp)
    device = enroll(idp, client, "erin@example.com")
    strict = eam_client(idp, tenant)
    hint = tenant.hint(
        aud=strict, sub="s-e", oid="unknown-oid", preferred_username="erin@example.com"
    )
    r = eam_post(client, strict, hint)
    _, fields = form_fields(r.text)
    assert fields["error_description"] == "user_unprovisioned"
    lenient = eam_client(idp, tenant, eam_user_match="external_id_then_username")
    hint = tenant.hint(
        aud=lenient, sub="s-e", oid="unknown-oid", preferred_username="erin@example.com"
    )
    r = eam_post(client, lenient, hint)
    assert r.status_code == 303
    page = device_login(client, device, r.headers["Location"])
    check_eam_answer(page.text, client.get("/oidc/jwks").json(), client_id=lenient, hint_sub="s-e")


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unknown_key", "oidc_hint_invalid"),
        ("other_audience", "oidc_hint_invalid"),
        ("other_tenant", "oidc_hint_invalid"),
        ("other_issuer", "oidc_hint_invalid"),
        ("expired_beyond_bound", "oidc_hint_expired"),
        ("tampered", "oidc_hint_invalid"),
        ("not_a_jwt", "oidc_hint_invalid"),
        ("missing", "oidc_hint_required"),
        ("missing_nonce", "oidc_nonce_required"),
        ("missing_state", "oidc_state_required"),
        ("inactive_user", "owner_inactive"),
        ("unprovisioned", "user_unprovisioned"),
    ],
)
def test_eam_refusals(idp_app, tenant, case, code):
    idp = idp_app  # one provider for every case: each refusal writes only its audit event
    client = FlaskClient(idp)
    provision(idp, "frank@example.com", "oid-frank", active=case != "inactive_user")
    client_id = eam_client(idp, tenant)
    args = {"aud": client_id, "sub": "s-f", "oid": "oid-frank", "preferred_username": "frank"}
    extra: dict = {}
    if case == "unknown_key":
        args["key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        args["kid"] = "attacker-key"
    elif case == "other_audience":
        args["aud"] = "some-other-app"
    elif case == "other_tenant":
        args["tid"] = "99999999-2222-3333-4444-555555555555"
    elif case == "other_issuer":
        args["iss"] = "https://sts.example/evil/v2.0"
    elif case == "expired_beyond_bound":
        args["exp_offset"] = -601 - 60
    elif case == "unprovisioned":
        args["oid"] = "oid-nobody"
    hint = tenant.hint(**args)
    if case == "tampered":
        head, body, sig = hint.split(".")
        hint = f"{head}.{body[:-2]}AA.{sig}"
    elif case == "not_a_jwt":
        hint = "x" * 50
    elif case == "missing":
        hint = None
    if case == "missing_nonce":
        extra["nonce"] = None
    if case == "missing_state":
        extra["state"] = None
    r = eam_post(client, client_id, hint, **extra)
    action, fields = form_fields(r.text)
    assert action == EAM_REDIRECT
    assert fields["error_description"] == code
    assert fields.get("state") == (None if case == "missing_state" else "entra-state-1")
    assert "/login/" not in r.headers.get("Location", "")
    assert last_audit_code(idp, "oidc.authorize") == code


def test_device_of_another_user_is_subject_mismatch(idp, tenant):
    client = FlaskClient(idp)
    device = enroll(idp, client, "grace@example.com")
    provision(idp, "heidi@example.com", "oid-heidi")
    client_id = eam_client(idp, tenant)
    hint = tenant.hint(aud=client_id, sub="s-h", oid="oid-heidi", preferred_username="heidi")
    r = eam_post(client, client_id, hint)
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 403
    action, fields = form_fields(page.text)
    assert action == EAM_REDIRECT
    assert fields == {
        "error": "access_denied",
        "error_description": "subject_mismatch",
        "state": "entra-state-1",
    }
    assert "subject_mismatch" in audit_codes(idp, "oidc.authorize")


def test_rotated_tenant_key_is_fetched(idp, tenant):
    client = FlaskClient(idp)
    device = enroll(idp, client, "ivan@example.com")
    provision(idp, "ivan@example.com", "oid-ivan")
    client_id = eam_client(idp, tenant)
    hint = tenant.hint(aud=client_id, sub="s-i", oid="oid-ivan", preferred_username="ivan")
    assert eam_post(client, client_id, hint).status_code == 303
    # The tenant rolls a new key into its JWKS; a hint signed by it makes us refetch.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tenant.extra_keys.append(tenant.jwk_of(new_key, "tenant-key-2"))
    svc = idp.extensions["devicetrust"]
    svc.oidc_hint_keys._tried.clear()  # past the refetch spacing
    hint = tenant.hint(
        aud=client_id,
        sub="s-i",
        oid="oid-ivan",
        preferred_username="ivan",
        key=new_key,
        kid="tenant-key-2",
    )
    r = eam_post(client, client_id, hint)
    assert r.status_code == 303, r.text
    page = device_login(client, device, r.headers["Location"])
    check_eam_answer(
        page.text, client.get("/oidc/jwks").json(), client_id=client_id, hint_sub="s-i"
    )
    tenant.extra_keys.clear()


def test_okta_factor_mode_preferred_username(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "judy@example.com")
    client_id, secret = add_client(
        idp,
        name="Okta",
        mode="factor",
        redirect_uris=["https://acme.okta.example/oauth2/v1/authorize/callback"],
    )
    verifier, challenge = pkce_pair()
    base = {
        "client_id": client_id,
        "redirect_uri": "https://acme.okta.example/oauth2/v1/authorize/callback",
        "response_type": "code",
        "scope": "openid profile",
        "state": "okta-state",
        "nonce": "okta-nonce",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = client.get("/oidc/authorize", query_string={**base, "login_hint": "judy@example.com"})
    done = device_login(client, device, r.headers["Location"])
    code = query_of(done.headers["Location"])["code"]
    import base64

    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    tok = client.post(
        "/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": base["redirect_uri"],
            "code_verifier": verifier,
        },
        headers={"Authorization": f"Basic {basic}"},
    ).json()
    claims = verify_rs256_with_x5c(tok["id_token"], client.get("/oidc/jwks").json())
    assert claims["preferred_username"] == "judy@example.com"  # what Okta compares
    # Okta names another user: this device's owner is not them.
    r = client.get("/oidc/authorize", query_string={**base, "login_hint": "mallory@example.com"})
    page = device_login(client, device, r.headers["Location"])
    assert page.status_code == 403 and "subject_mismatch" in page.text


def test_eam_hint_allows_tofu_of_the_first_device(idp, tenant):
    """Entra vouched for the user in a signed hint: the first device registers without a code,
    as in SAML factor mode, and the same sign-in answers Entra."""
    from tests.saml_support import SimDevice
    from tests.signin.test_login_enroll import register_with

    client = FlaskClient(idp)
    provision(idp, "olga@example.com", "oid-olga")
    client_id = eam_client(idp, tenant)
    hint = tenant.hint(aud=client_id, sub="s-o", oid="oid-olga", preferred_username="olga")
    r = eam_post(client, client_id, hint)
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    client.get(r.headers["Location"])
    assert client.get(f"/login/{txn}/enroll-options").json()["tofu"] == {"user": "olga@example.com"}
    token = client.post(f"/login/{txn}/register-challenge", json={"mode": "tofu"}).json()[
        "challenge"
    ]
    device = SimDevice()
    assert register_with(client, device, token, None).status_code == 201
    token = client.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    client.post(f"/login/{txn}/response", content=device.answer(token))
    page = client.get(f"/login/{txn}/continue")
    check_eam_answer(
        page.text, client.get("/oidc/jwks").json(), client_id=client_id, hint_sub="s-o"
    )


def test_okta_login_hint_is_not_enough_for_tofu(idp):
    """An unsigned login_hint names nobody the login page may trust a new device for."""
    client = FlaskClient(idp)
    from idp_service.directory import users

    with idp.extensions["devicetrust"].db.session() as s:
        users.create(s, "pat@example.com")
    client_id, _ = add_client(
        idp, name="Okta", mode="factor", redirect_uris=["https://o.example/cb"]
    )
    _, challenge = pkce_pair()
    r = client.get(
        "/oidc/authorize",
        query_string={
            "client_id": client_id,
            "redirect_uri": "https://o.example/cb",
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "login_hint": "pat@example.com",
        },
    )
    txn = r.headers["Location"].rsplit("/", 1)[-1]
    client.get(r.headers["Location"])
    assert client.get(f"/login/{txn}/enroll-options").json()["tofu"] is None
