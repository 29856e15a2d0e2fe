"""The device state machine (idp_service/devices/states.py), on SQLite and PostgreSQL: every
(transition, state) pair is either taken with all its side effects or refused with its stable
code and nothing written."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

from idp_service.admin import sessions as admin_sessions
from idp_service.admin.tables import AdminSession
from idp_service.devices import states
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.platform.db import Database
from idp_service.platform.errors import Conflict
from idp_service.platform.models import DEVICE_STATES, AuditEvent, Device, utcnow
from idp_service.webhooks.catalog import EVENT_TYPES
from tests.admin_helpers import make_device, make_user

EXPECTED = {
    "approve": ({"pending", "denied", "suspended"}, "trusted"),
    "deny": ({"pending", "suspended"}, "denied"),
    "revoke": ({"trusted", "pending", "suspended"}, "revoked"),
    "retrust": ({"revoked", "denied"}, "trusted"),
    "approve_code": ({"pending"}, "trusted"),
    "suspend": ({"trusted"}, "suspended"),
    "deny_stale": ({"trusted", "pending"}, "denied"),
    "reapprove": ({"trusted"}, "pending"),
}


def test_the_table_is_the_one_documented():
    assert set(states.TRANSITIONS) == set(EXPECTED)
    for name, (sources, target) in EXPECTED.items():
        rule = states.TRANSITIONS[name]
        assert set(rule.sources) == sources and rule.target == target, name
        assert set(rule.sources) <= set(DEVICE_STATES) and target in DEVICE_STATES
        assert rule.target not in rule.sources  # every transition changes the state
        for state in DEVICE_STATES:
            assert states.allowed(name, state) is (state in sources)
    assert states.ADMIN_ACTIONS == ("approve", "deny", "revoke", "retrust")


def test_every_transition_is_a_webhook_event():
    for rule in states.TRANSITIONS.values():
        assert rule.audit_action in EVENT_TYPES, rule.name


@pytest.fixture
def db(migrated_url):
    database = Database(migrated_url)
    yield database
    database.engine.dispose()


def _world(db: Database, state: str) -> dict[str, str]:
    """A device in ``state`` with an open approval request and a console session through it."""
    with db.session() as s:
        user = make_user(s, f"u-{uuid.uuid4().hex[:8]}@example.com")
        device = make_device(s, user, state=state)
        req = ApprovalRequest(
            id=str(uuid.uuid4()),
            device_id=device.id,
            user_id=user.id,
            status="open",
            code_seq=1,
            attempts=0,
            max_attempts=5,
            expires_at=utcnow() + dt.timedelta(minutes=5),
        )
        s.add(req)
        s.flush()
        s.add(
            ApprovalNotice(request_id=req.id, device_id=device.id, code_mac="0" * 64, sealed=b"x")
        )
        admin_sessions.open_row(
            s,
            via="device",
            user_name=user.user_name,
            user_id=user.id,
            device_id=device.id,
            ttl_seconds=600,
        )
        return {"device": device.id, "user": user.id, "request": req.id}


def _look(db: Database, w: dict[str, str]) -> dict:
    with db.session() as s:
        device = s.get(Device, w["device"])
        req = s.get(ApprovalRequest, w["request"])
        return {
            "state": device.state,
            "reason": device.state_reason,
            "request": (req.status, req.close_reason),
            "notices": s.scalar(
                select(func.count())
                .select_from(ApprovalNotice)
                .where(ApprovalNotice.request_id == w["request"])
            ),
            "sessions": [
                (r.ended_at is not None, r.ended_reason)
                for r in s.scalars(
                    select(AdminSession).where(AdminSession.device_id == w["device"])
                )
            ],
            "events": [
                (e.action, e.actor, e.details)
                for e in s.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.device_id == w["device"])
                    .order_by(AuditEvent.id)
                )
            ],
        }


def test_every_pair_is_taken_with_its_side_effects_or_refused(db):
    for name, rule in states.TRANSITIONS.items():
        if name == "reapprove":
            continue  # a batch per owner: below
        for state in DEVICE_STATES:
            w = _world(db, state)
            before = _look(db, w)
            if state not in rule.sources:
                with pytest.raises(Conflict) as refused, db.session() as s:
                    states.move(
                        s,
                        s.get(Device, w["device"]),
                        name,
                        reason="why",
                        actor="test",
                        request_reason="test",
                    )
                expected_code = "approval_closed" if name == "approve_code" else "bad_transition"
                assert refused.value.code == expected_code, (name, state)
                assert _look(db, w) == before, (name, state)  # nothing written
                continue
            with db.session() as s:
                left = states.move(
                    s,
                    s.get(Device, w["device"]),
                    name,
                    reason="why",
                    actor="tester",
                    request_reason="closed by test",
                    details={"extra": 1},
                )
            assert left == state
            after = _look(db, w)
            assert (after["state"], after["reason"]) == (rule.target, "why"), (name, state)
            status = "approved" if name == "approve_code" else "closed"
            assert after["request"] == (status, "closed by test"), (name, state)
            assert after["notices"] == 0
            ended = name in ("deny", "revoke")
            assert after["sessions"] == [(ended, f"device_{rule.target}" if ended else None)], (
                name,
                state,
            )
            assert after["events"] == [
                (rule.audit_action, "tester", {"from": state, "to": rule.target, "extra": 1})
            ], (name, state)


def test_reactivation_moves_only_trusted_devices_and_audits_once(db):
    with db.session() as s:
        user = make_user(s, "re@example.com")
        ids = {state: make_device(s, user, state=state).id for state in DEVICE_STATES}
        other = make_device(s, make_user(s, "other@example.com"), state="trusted").id
    with db.session() as s:
        moved = states.reactivate_owner(
            s, user.id, actor="scim:t", policy="require_approval", reapprove=True, reason="again"
        )
    assert moved == [ids["trusted"]]
    with db.session() as s:
        now = {state: s.get(Device, i).state for state, i in ids.items()}
        assert now == {**{st: st for st in DEVICE_STATES}, "trusted": "pending"}
        assert s.get(Device, ids["trusted"]).state_reason == "again"
        assert s.get(Device, other).state == "trusted"
        events = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "scim.user.reactivate")
        ).all()
        assert [(e.user_id, e.details) for e in events] == [
            (user.id, {"policy": "require_approval", "devices_to_pending": moved})
        ]
    with db.session() as s:
        kept = states.reactivate_owner(
            s, user.id, actor="scim:t", policy="restore", reapprove=False, reason="again"
        )
        assert kept == [] and s.get(Device, ids["pending"]).state == "pending"
