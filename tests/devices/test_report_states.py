"""What the report endpoint accepts, for every device state and owner state (docs/protocol.md
§7.2): the table sign-in uses (``trust_protocol.response.check_registration``), on SQLite and
PostgreSQL, through the service's HTTP endpoint. Only a trusted device of an active owner
reports; every other cell gets its 403 code and changes nothing but the audit log.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import func, select, update

from idp_service.platform.models import AuditEvent, Base, Device, User
from idp_service.posture.tables import DeviceFacts
from tests.devices.test_report_ceremony import _db, _enrolled, _facts, _report
from trust_protocol import DeviceKeys

DEVICE_STATES = ("trusted", "pending", "denied", "revoked", "suspended")
OWNER_STATES = ("active", "inactive", "deleted")
# The device's state decides before its owner's (the order of check_registration).
BY_STATE = {
    "pending": "device_pending",
    "denied": "device_denied",
    "revoked": "device_revoked",
    "suspended": "device_suspended",
}


def expected(device_state: str, owner_state: str) -> str | None:
    """The refusal code of a report in this cell; None when it is accepted."""
    if device_state in BY_STATE:
        return BY_STATE[device_state]
    return None if owner_state == "active" else "owner_inactive"


def _put_in(app, keys: DeviceKeys, device_state: str, owner_state: str) -> None:
    now = dt.datetime.now(dt.UTC)
    with _db(app).session() as s:
        device = s.get(Device, keys.device_id)
        device.state, device.state_reason = device_state, f"test: {device_state}"
        user_id = device.user_id
        if owner_state == "inactive":  # what a SCIM deactivation writes
            s.execute(
                update(User).where(User.id == user_id).values(active=False, deactivated_at=now)
            )
        elif owner_state == "deleted":  # a SCIM delete: an inactive tombstone
            s.execute(
                update(User)
                .where(User.id == user_id)
                .values(
                    active=False,
                    deactivated_at=now,
                    deleted_at=now,
                    user_name_lower=f"~deleted~{user_id}",
                )
            )


def _row(session, model, key) -> dict | None:
    obj = session.get(model, key)
    if obj is None:
        return None
    return {c.name: getattr(obj, c.name) for c in model.__table__.columns}


def _snapshot(app, device_id: str) -> dict:
    with _db(app).session() as s:
        device = _row(s, Device, device_id)
        return {
            "device": device,
            "owner": _row(s, User, device["user_id"]) if device else None,
            "facts": _row(s, DeviceFacts, device_id),
            "counts": {
                t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables
            },
            "last_audit": s.execute(
                select(AuditEvent.action, AuditEvent.outcome, AuditEvent.code)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            ).one(),
        }


@pytest.mark.parametrize("owner_state", OWNER_STATES)
@pytest.mark.parametrize("device_state", DEVICE_STATES)
def test_report_by_device_and_owner_state(service_ctx, device_state, owner_state):
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client, f"{device_state}-{owner_state}")
    first = client.post("/agent/v1/report", data=_report(service_ctx, client, keys, _facts(1)))
    assert first.status_code == 200, first.json
    _put_in(service_ctx, keys, device_state, owner_state)
    sealed = _report(service_ctx, client, keys, _facts(2))
    before = _snapshot(service_ctx, keys.device_id)

    resp = client.post("/agent/v1/report", data=sealed)
    after = _snapshot(service_ctx, keys.device_id)

    code = expected(device_state, owner_state)
    if code is None:
        assert resp.status_code == 200, resp.json
        assert resp.json["status"] == "accepted"
        assert after["facts"]["facts"]["os"]["n"] == 2
        assert after["facts"]["report_seq"] == before["facts"]["report_seq"] + 1
        return
    assert resp.status_code == 403, resp.json
    assert resp.json["error"]["code"] == code
    # Nothing changed: not the device (last_seen included), its owner, its facts, any
    # flag or challenge row; one audit event more, the refusal.
    for part in ("device", "owner", "facts"):
        assert after[part] == before[part], part
    changed = {t for t, n in before["counts"].items() if after["counts"][t] != n}
    assert changed == {"audit_events"}
    assert after["counts"]["audit_events"] == before["counts"]["audit_events"] + 1
    assert tuple(after["last_audit"]) == ("device.report", "rejected", code)
    # The refusal did not burn the challenge: once the device is trusted again, the same
    # answer is accepted (a refused response records nothing, §7.3).
    _put_in(service_ctx, keys, "trusted", "active")
    with _db(service_ctx).session() as s:
        owner = s.get(User, before["owner"]["id"])
        owner.active, owner.deleted_at = True, None
    again = client.post("/agent/v1/report", data=sealed)
    assert again.status_code == 200, again.json


def test_report_from_an_unknown_device_changes_nothing(service_ctx):
    client = service_ctx.test_client()
    stranger = DeviceKeys.generate(f"dev-stranger-{time.monotonic_ns()}")
    sealed = _report(service_ctx, client, stranger, _facts())
    with _db(service_ctx).session() as s:
        before = {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }
    resp = client.post("/agent/v1/report", data=sealed)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "device_unknown"
    with _db(service_ctx).session() as s:
        after = {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }
    assert {t for t, n in before.items() if after[t] != n} == {"audit_events"}
