"""The admin console's "Re-verify" on a device: tokens revoked, the device marked, audited."""

from __future__ import annotations

from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from idp_service.upstream.tables import ReverifyMark
from tests.admin.test_admin_console import _bootstrap_signin
from tests.admin.test_admin_console import app as app  # noqa: F401 - fixtures
from tests.admin.test_admin_console import db as db  # noqa: F401
from tests.admin.test_admin_console import world as world  # noqa: F401
from tests.admin_helpers import csrf_of


def test_console_reverify_marks_the_device(app, db, world):  # noqa: F811
    client, _ = _bootstrap_signin(app, db)
    device = world["bob_trusted"]
    page = client.get(f"/admin/devices/{device}").get_data(as_text=True)
    assert 'id="action-reverify"' in page
    csrf = csrf_of(page)
    target = f"/admin/devices/{device}/action"
    resp = client.post(target, data={"csrf": csrf, "action": "reverify", "reason": " "})
    assert resp.status_code == 400 and b"reason_required" in resp.data
    resp = client.post(target, data={"csrf": csrf, "action": "reverify", "reason": "phished"})
    assert resp.status_code == 303
    with db.session() as s:
        assert s.get(ReverifyMark, device).requested_by == "admin:bootstrap"
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "reauth.reverify")).one()
        assert event.details["devices"] == [device] and event.details["reason"] == "phished"
    # A pending device offers no re-verify (nothing to re-verify yet).
    page = client.get(f"/admin/devices/{world['bob_pending']}").get_data(as_text=True)
    assert 'id="action-reverify"' not in page
