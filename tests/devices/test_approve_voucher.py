"""A trusted-device approval code counts only while its voucher is still trusted.

The code is shown on the user's trusted device A; if A is revoked (lost,
stolen) after the code was issued, the code must no longer approve the new
device B. Checked on :func:`idp_service.devices.approve.submit` in process, and with
the real service and real agents (SQLite and PostgreSQL).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from idp_service.devices import approve, registry
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.platform.models import AuditEvent, Device
from tests.admin_helpers import make_device, make_user
from tests.devices.test_approve_e2e import _codes, _engine, _login, _pair, _submit
from tests.devices.test_approve_e2e import tda_service as tda_service  # noqa: F401 - the fixture

CODE = "ABCD-EFGH"


def _world(app, *, change: str | None):
    """A pending device with an open request, its voucher's code known; then ``change``."""
    service = app.extensions["devicetrust"]
    with service.db.session() as s:
        owner = make_user(s, "vera@example.com")
        voucher = make_device(s, owner, state="trusted")
        pending = make_device(s, owner, state="pending")
        req = approve.open_request(service, s, pending)
        s.execute(
            update(ApprovalNotice)
            .where(ApprovalNotice.request_id == req.id, ApprovalNotice.device_id == voucher.id)
            .values(code_mac=approve.code_mac(approve.load_key(service), CODE))
        )
        ids = {"voucher": voucher.id, "pending": pending.id, "request": req.id}
    with service.db.session() as s:
        if change == "revoke":
            registry.change_state(s, ids["voucher"], "revoke", reason="stolen", actor="test")
        elif change == "owner":
            s.get(Device, ids["voucher"]).user_id = make_user(s, "other@example.com").id
    return service, ids


def test_the_code_approves_while_its_voucher_is_trusted(service_ctx):
    service, ids = _world(service_ctx, change=None)
    assert approve.submit(service, ids["pending"], CODE).result == "approved"
    with service.db.session() as s:
        assert s.get(Device, ids["pending"]).state == "trusted"


@pytest.mark.parametrize("change", ["revoke", "owner"])
def test_a_code_from_a_voucher_no_longer_trusted_does_not_approve(service_ctx, change):
    service, ids = _world(service_ctx, change=change)
    try:
        outcome = approve.submit(service, ids["pending"], CODE)
    except Exception as exc:  # a closed request is a refusal too
        assert getattr(exc, "status", 409) in (403, 409), exc
    else:
        assert outcome.result != "approved"
    with service.db.session() as s:
        assert s.get(Device, ids["pending"]).state == "pending"
        assert s.get(ApprovalRequest, ids["request"]).status != "approved"
        approved = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "device.approve", AuditEvent.device_id == ids["pending"]
            )
        ).all()
        assert approved == []


def test_e2e_a_code_from_a_device_revoked_after_issue_is_refused(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "wendy@example.com")
    a_id, b_id = a.cli_json("id")["device_id"], b.cli_json("id")["device_id"]
    b.start("--no-approvals")
    try:
        code = _codes(a)[0]["code"]  # issued while A is trusted
        browser, txn, status = _login(svc, b)
        assert status["code"] == "device_pending"
        svc.cli("devices", "revoke", a_id, "--reason", "stolen")
        refused = _submit(browser, txn, code)
        assert refused.status_code in (403, 409), refused.text
        assert refused.headers.get("location") != f"/login/{txn}"
        engine = _engine(svc)
        with engine.connect() as conn:
            state = conn.execute(select(Device.state).where(Device.id == b_id)).scalar_one()
            approvals = conn.execute(
                select(AuditEvent.id).where(
                    AuditEvent.action == "device.approve", AuditEvent.device_id == b_id
                )
            ).all()
        engine.dispose()
        assert state == "pending" and approvals == []
        _, _, status = _login(svc, b)  # a new sign-in: B still waits
        assert status["status"] != "verified" and status.get("code") == "device_pending"
    finally:
        b.stop()
