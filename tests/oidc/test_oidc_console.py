"""The console's OpenID Connect page: listed in the navigation, add (secret shown once), disable,
rotate, remove, each through the same checks as the CLI and audited; CSRF required."""

from __future__ import annotations

import re

from tests.admin.test_admin_console import _bootstrap_signin
from tests.admin_helpers import csrf_of
from tests.oidc.test_oidc_flow import RP


def test_console_page(idp):
    db = idp.extensions["devicetrust"].db
    client, _ = _bootstrap_signin(idp, db)
    home = client.get("/admin/").get_data(as_text=True)
    assert "/admin/oidc-clients" in home
    page = client.get("/admin/oidc-clients").get_data(as_text=True)
    assert "No OpenID Connect clients" in page and "/oidc/.well-known/openid-configuration" in page
    csrf = csrf_of(page)
    # No CSRF token: refused, nothing added.
    r = client.post("/admin/oidc-clients", data={"name": "x", "redirect_uris": RP})
    assert r.status_code == 403
    r = client.post(
        "/admin/oidc-clients",
        data={
            "csrf": csrf,
            "name": "Wiki",
            "mode": "app",
            "token_auth_method": "client_secret_basic",
            "redirect_uris": f"{RP}\nhttps://rp.example/b",
        },
    )
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    secret = re.search(r'<code id="secret">([^<]+)</code>', html).group(1)
    client_id = re.search(r'data-client="([^"]+)"', html).group(1)
    assert len(secret) >= 40
    again = client.get("/admin/oidc-clients").get_data(as_text=True)
    assert secret not in again and client_id in again
    r = client.post(
        "/admin/oidc-clients",
        data={"csrf": csrf, "name": "Bad", "redirect_uris": "http://evil.example/cb"},
    )
    assert r.status_code == 400 and "invalid_uri" in r.get_data(as_text=True)
    r = client.post(f"/admin/oidc-clients/{client_id}/rotate", data={"csrf": csrf})
    new = re.search(r'<code id="secret">([^<]+)</code>', r.get_data(as_text=True)).group(1)
    assert new != secret
    r = client.post(
        f"/admin/oidc-clients/{client_id}/enabled", data={"csrf": csrf, "enabled": "false"}
    )
    assert r.status_code == 303
    assert "disabled" in client.get("/admin/oidc-clients").get_data(as_text=True)
    r = client.post(f"/admin/oidc-clients/{client_id}/delete", data={"csrf": csrf})
    assert r.status_code == 303
    assert client_id not in client.get("/admin/oidc-clients").get_data(as_text=True)
    from sqlalchemy import select

    from idp_service.platform.models import AuditEvent

    with db.session() as s:
        actions = list(
            s.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.like("oidc.client.%"))
                .order_by(AuditEvent.id)
            )
        )
    assert actions == [
        "oidc.client.add",
        "oidc.client.update",
        "oidc.client.update",
        "oidc.client.remove",
    ]
