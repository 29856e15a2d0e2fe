"""Seed data for the admin-API tests: users, a group, devices with posture rows, tokens."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

from idp_service import tokens
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.db import Database
from idp_service.platform.models import Device, User, utcnow
from idp_service.posture.tables import CheckResultHistory, CheckResultRow, DeviceFacts
from posture_checks.evaluator import Status


def make_token(db: Database, name: str, scope: str) -> str:
    """A live API token."""
    with db.session() as s:
        return tokens.API.create(s, name, scope, actor="test")


def seed(db: Database, devices_per_state: int = 2) -> dict[str, Any]:
    """Two users (one in group ``admins``), devices in every state, facts and check results."""
    now = utcnow()
    out: dict[str, Any] = {"devices": {}}
    with db.session() as s:
        alice = User(
            id=str(uuid.uuid4()), user_name="alice@example.com", user_name_lower="alice@example.com"
        )
        bob = User(
            id=str(uuid.uuid4()), user_name="bob@example.com", user_name_lower="bob@example.com"
        )
        s.add_all([alice, bob])
        s.flush()
        group = Group(id=str(uuid.uuid4()), display_name="Admins", display_name_key="admins")
        s.add(group)
        s.flush()
        s.add(GroupMember(group_id=group.id, value=alice.id, type="User", display="alice"))
        i = 0
        for state in ("pending", "trusted", "denied", "revoked"):
            for _ in range(devices_per_state):
                i += 1
                device = Device(
                    id=str(uuid.uuid4()),
                    user_id=alice.id if i % 2 else bob.id,
                    state=state,
                    sign_key=os.urandom(32),
                    box_key=os.urandom(32),
                    hostname=f"host-{i}_x%",
                    platform="linux" if i % 2 else "macos",
                    serial=f"SER{i:04d}",
                    first_seen=now - dt.timedelta(minutes=i),
                    last_seen=now,
                )
                s.add(device)
                out["devices"].setdefault(state, []).append(device.id)
        s.flush()
        first = out["devices"]["trusted"][0]
        s.add(DeviceFacts(device_id=first, report_seq=3, facts={"os": {"name": "linux"}}))
        s.add(
            CheckResultRow(
                device_id=first,
                check_id="disk_encryption",
                status=Status.FAIL.value,
                reason="not encrypted",
                evaluated_at=now,
                first_failed_at=now,
            )
        )
        s.add(
            CheckResultHistory(
                device_id=first, check_id="disk_encryption", status=Status.FAIL.value
            )
        )
        out.update(alice=alice.id, bob=bob.id, group=group.id)
    return out
