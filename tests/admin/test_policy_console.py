"""Registration policies in the admin console (settings page), in process on both databases."""

from __future__ import annotations

from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from tests.admin.test_admin_console import _bootstrap_signin
from tests.admin_helpers import csrf_of, make_admin_group, make_user


def test_settings_page_sets_and_clears_policies(service_ctx):
    app = service_ctx
    db = app.extensions["devicetrust"].db
    with db.session() as s:
        alice = make_user(s, "alice@example.com")
        group = make_admin_group(s, alice, name="Engineering")
        group_id = group.id
    client, _ = _bootstrap_signin(app, db)
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'id="policy-global">tofu<' in page and "from DEVICETRUST_REGISTRATION_POLICY" in page
    csrf = csrf_of(page)

    # No CSRF token: refused, nothing changed.
    r = client.post("/admin/settings/policy", data={"scope": "global", "policy": "admin_approval"})
    assert r.status_code == 403
    r = client.post(
        "/admin/settings/policy",
        data={"csrf": csrf, "scope": "global", "policy": "admin_approval"},
    )
    assert r.status_code == 303 and r.headers["Location"] == "/admin/settings#policies"
    r = client.post(
        "/admin/settings/policy",
        data={"csrf": csrf, "scope": "group", "group": "engineering", "policy": "tofu"},
    )
    assert r.status_code == 303
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'id="policy-global">admin_approval<' in page
    assert "Group Engineering" in page and 'class="policy-group">tofu<' in page

    for data, status in (
        ({"scope": "global", "policy": "yolo"}, 400),
        ({"scope": "group", "group": "nope", "policy": "tofu"}, 404),
        ({"scope": "group", "group": "", "policy": "tofu"}, 400),
        ({"scope": "planet", "policy": "tofu"}, 400),
    ):
        assert client.post("/admin/settings/policy", data={"csrf": csrf, **data}).status_code == (
            status
        )
    r = client.post(
        "/admin/settings/policy",
        data={"csrf": csrf, "scope": "group", "group": group_id, "policy": "clear"},
    )
    r = client.post(
        "/admin/settings/policy", data={"csrf": csrf, "scope": "global", "policy": "clear"}
    )
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'id="policy-global">tofu<' in page and "Group Engineering" not in page
    with db.session() as s:
        events = s.scalars(
            select(AuditEvent).where(AuditEvent.action.like("policy.%")).order_by(AuditEvent.id)
        ).all()
        rejected = s.scalars(
            select(AuditEvent.code).where(AuditEvent.action == "admin.request")
        ).all()
    assert [(e.action, e.details["before"], e.details["after"]) for e in events] == [
        ("policy.set", None, "admin_approval"),
        ("policy.set", None, "tofu"),
        ("policy.clear", "tofu", None),
        ("policy.clear", "admin_approval", None),
    ]
    assert all(e.actor and e.actor.startswith("admin") for e in events)
    assert {"bad_policy", "group_not_found", "group_required", "bad_scope"} <= set(rejected)
