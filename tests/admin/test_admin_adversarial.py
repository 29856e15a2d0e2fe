"""The console against hostile input, on SQLite and PostgreSQL.

Values an attacker controls (a query string, a form field, a path segment) must
give a 4xx with a stable code, an audit event for a refused POST, and nothing
else written: never a 500 from the database.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp_service.admin import bootstrap
from idp_service.platform.models import AuditEvent, Device
from idp_service.posture.tables import ExemptionRow
from tests.admin_helpers import csrf_of, make_device, make_user


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def signed_in(app, db):
    """A bootstrap console session, its CSRF token, and bob's pending device."""
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
        device_id = make_device(s, make_user(s, "bob@example.com"), state="pending").id
    client = app.test_client()
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    csrf = csrf_of(client.get("/admin/settings").get_data(as_text=True))
    return client, csrf, device_id


def _rejections(db) -> list[AuditEvent]:
    with db.session() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "admin.request")))


@pytest.mark.parametrize(
    "path",
    [
        "/admin/devices?q=a%00b",
        "/admin/devices?platform=%00",
        "/admin/devices?check=%00&status=FAIL",
        "/admin/users?q=%00",
        "/admin/users?after=%00",
        "/admin/audit?action=%00",
        "/admin/audit?device_id=%00",
        "/admin/audit?user=%00",
        "/admin/devices/a%00b",
    ],
)
def test_nul_in_a_query_or_path_is_400(signed_in, path):
    client, _, _ = signed_in
    resp = client.get(path)
    assert resp.status_code == 400, path
    assert b"bad_input" in resp.data


@pytest.mark.parametrize(
    "target, form",
    [
        ("/admin/devices/{dev}/action", {"action": "approve", "reason": "ok\x00"}),
        ("/admin/devices/{dev}/action", {"action": "change_owner", "user": "a\x00", "reason": "r"}),
        ("/admin/devices/a%00b/action", {"action": "approve", "reason": "r"}),
        ("/admin/exemptions", {"check_id": "\x00", "scope": "device", "subject": "{dev}"}),
        ("/admin/exemptions", {"check_id": "*", "scope": "user", "subject": "b\x00"}),
        ("/admin/settings/policy", {"scope": "group", "group": "g\x00", "policy": "tofu"}),
        ("/admin/settings/reauth", {"scope": "group", "group": "g\x00", "lifetime": "1d"}),
        ("/admin/oidc-clients", {"name": "n\x00", "mode": "app", "redirect_uris": "https://a/cb"}),
        ("/admin/oidc-clients/a%00b/delete", {}),
    ],
)
def test_nul_in_a_form_or_path_is_400_audited_and_writes_nothing(db, signed_in, target, form):
    client, csrf, device_id = signed_in
    data = {k: v.replace("{dev}", device_id) for k, v in form.items()}
    data.update(csrf=csrf, days="7", reason=data.get("reason", "r"))
    resp = client.post(target.replace("{dev}", device_id), data=data)
    assert resp.status_code == 400 and b"bad_input" in resp.data
    (event,) = _rejections(db)
    assert event.code == "bad_input" and event.actor == "admin:bootstrap"
    assert "\x00" not in event.details["path"]
    with db.session() as s:
        assert s.get(Device, device_id).state == "pending"
        assert s.scalar(select(func.count()).select_from(ExemptionRow)) == 0


def test_nul_in_a_path_with_a_bad_csrf_token_is_403_and_audited(db, signed_in):
    client, _, device_id = signed_in
    resp = client.post("/admin/devices/a%00b/action", data={"csrf": "x", "action": "approve"})
    assert resp.status_code == 403 and b"csrf_invalid" in resp.data
    with db.session() as s:
        (event,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "admin.csrf"))
    assert event.details["path"] == "/admin/devices/a?b/action"


@pytest.mark.parametrize("field, value", [("check_id", "c" * 129), ("subject", "s" * 257)])
def test_an_overlong_exemption_is_400(db, signed_in, field, value):
    client, csrf, device_id = signed_in
    data = {"check_id": "*", "scope": "device", "subject": device_id, "days": "7", "reason": "r"}
    data[field] = value
    resp = client.post("/admin/exemptions", data={**data, "csrf": csrf})
    assert resp.status_code == 400 and b"bad_exemption" in resp.data
    assert [e.code for e in _rejections(db)] == ["bad_exemption"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ExemptionRow)) == 0


def test_the_settings_page_hides_the_metrics_token(migrated_url, tmp_path):
    """DEVICETRUST_METRICS_TOKEN is a bearer secret: the page says it is set, never what it is."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings

    secret = "metrics-" + "s3cr3t" * 6
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            "DEVICETRUST_METRICS_TOKEN": secret,
        }
    )
    app = create_app(settings)
    db = app.extensions["devicetrust"].db
    try:
        with db.session() as s:
            token, _ = bootstrap.issue(s, actor="test")
        client = app.test_client()
        csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
        client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
        page = client.get("/admin/settings").get_data(as_text=True)
        assert "metrics_token" in page
        assert secret not in page and "s3cr3t" not in page
        assert "<dt>metrics_token</dt><dd><code>(set, hidden)</code></dd>" in page
    finally:
        db.dispose()


def test_an_unhandled_error_logs_the_path_on_one_line(app, caplog):
    """A path an attacker chose (a %0a in it) cannot forge a log line when a request fails."""

    @app.get("/_boom/<rest>")
    def _boom(rest: str) -> str:
        raise RuntimeError("boom")

    with caplog.at_level("ERROR", logger="idp_service.web.errors"):
        resp = app.test_client().get("/_boom/x%0a2026-12-06 INFO forged: admin signed in")
    assert resp.status_code == 500
    (record,) = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert "\n" not in record.getMessage()
    assert "forged" in record.getMessage()


XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_hostile_device_and_directory_strings_render_inert(app, db, signed_in):
    """Names from SCIM and strings a device reports are escaped on every console page,
    and the page's policy would refuse any script anyway."""
    from idp_service import tokens
    from idp_service.platform.models import utcnow
    from idp_service.posture.tables import CheckResultRow, DeviceFacts

    client, _, device_id = signed_in
    with db.session() as s:
        scim_token = tokens.SCIM.create(s, "scim-xss", actor="test")
    scim = app.test_client()
    auth = {"Authorization": f"Bearer {scim_token}"}
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "mallory+<script>@example.com",
        "displayName": XSS,
        "emails": [{"value": "m@example.com", "primary": True}],
    }
    resp = scim.post("/scim/v2/Users", json=body, headers=auth)
    assert resp.status_code == 201, resp.data
    group = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": XSS}
    assert scim.post("/scim/v2/Groups", json=group, headers=auth).status_code == 201
    with db.session() as s:
        device = s.get(Device, device_id)
        device.hostname, device.serial = XSS, XSS
        device.platform = device.agent_version = "<img src=x onerror=1>"
        s.add(
            DeviceFacts(device_id=device_id, report_seq=1, stored={"os": {"name": XSS + "</pre>"}})
        )
        s.add(
            CheckResultRow(
                device_id=device_id,
                check_id="c",
                status="FAIL",
                reason=XSS,
                evaluated_at=utcnow(),
                first_failed_at=utcnow(),
            )
        )
    for path in (
        "/admin/",
        "/admin/pending",
        f"/admin/devices/{device_id}",
        "/admin/devices?q=" + "%3Cscript%3E",
        "/admin/users",
        "/admin/groups",
        "/admin/settings",
    ):
        resp = client.get(path)
        page = resp.get_data(as_text=True)
        assert resp.status_code == 200, path
        assert "<script" not in page and "<img" not in page, path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(
        f"/admin/devices/{device_id}"
    ).get_data(as_text=True)
