"""Hostile or confused client authentication at the token endpoint, and hostile redirect URIs
at registration: each is a 4xx with a stable code and its audit event, never a 500, and a
request that authenticates two ways at once is refused (RFC 6749 §2.3)."""

from __future__ import annotations

import base64

import pytest

from tests.oidc.test_oidc_flow import last_audit_code
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
