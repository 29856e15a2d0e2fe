"""An administrator's change to a client wins over what is in flight: a sign-in started
before the client was disabled, removed or lost its redirect URI issues nothing to it, and
a disabled client's access tokens no longer answer at userinfo."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.oidc.support import add_client, pkce_pair
from tests.oidc.test_oidc_flow import RP, authorize, last_audit_code, redeem, sign_in
from tests.saml.test_saml_interop import enroll
from tests.saml_support import FlaskClient, device_login


def _change(idp, client_id: str, change: str) -> None:
    from idp_service.oidc import clients

    with idp.extensions["devicetrust"].db.session() as s:
        if change == "disable":
            clients.update(s, client_id, {"enabled": False})
        elif change == "remove":
            clients.remove(s, client_id)
        else:
            clients.update(s, client_id, {"redirect_uris": [RP + "/new"]})


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("disable", "oidc_client_disabled"),
        ("remove", "oidc_unknown_client"),
        ("withdraw_uri", "oidc_redirect_uri_mismatch"),
    ],
)
def test_a_sign_in_in_flight_issues_nothing_to_a_changed_client(idp, change, code):
    from idp_service.oidc.tables import OidcCode

    client = FlaskClient(idp)
    device = enroll(idp, client, f"{change}@example.com")
    client_id, _ = add_client(idp, name="Wiki", redirect_uris=[RP])
    _, challenge = pkce_pair()
    started = authorize(client, client_id, verifier_challenge=challenge)
    assert started.status_code == 303, started.text
    _change(idp, client_id, change)

    done = device_login(client, device, started.headers["Location"])
    assert done.status_code == 403, done.text
    assert "Location" not in done.headers and code in done.text
    assert RP not in done.text  # no form, no button to the client
    assert last_audit_code(idp, "oidc.authorize") == code
    with idp.extensions["devicetrust"].db.session() as s:
        assert s.scalar(select(func.count()).select_from(OidcCode)) == 0


def test_a_disabled_clients_access_token_is_refused_at_userinfo(idp):
    client = FlaskClient(idp)
    device = enroll(idp, client, "ui@example.com")
    client_id, secret = add_client(idp, name="Wiki", redirect_uris=[RP])
    verifier, challenge = pkce_pair()
    back = sign_in(idp, client, device, client_id, challenge)
    tokens = redeem(client, client_id, secret, back["code"], verifier).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/oidc/userinfo", headers=bearer).status_code == 200

    _change(idp, client_id, "disable")
    r = client.get("/oidc/userinfo", headers=bearer)
    assert r.status_code == 401 and r.json()["code"] == "oidc_invalid_token"
    assert last_audit_code(idp, "oidc.userinfo") == "oidc_invalid_token"
