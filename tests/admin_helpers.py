"""Helpers for the admin console tests: seed users, groups and devices; read CSRF tokens."""

from __future__ import annotations

import os
import re
import uuid

from sqlalchemy.orm import Session

from idp_service.directory import users
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.models import Device, User

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token in a console page."""
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def make_user(s: Session, user_name: str) -> User:
    """An active user."""
    return users.create(s, user_name, actor="test")


def make_admin_group(s: Session, *members: User, name: str = "devicetrust-admins") -> Group:
    """The admin group with ``members`` (as SCIM would store it)."""
    group = Group(id=str(uuid.uuid4()), display_name=name, display_name_key=name.casefold())
    s.add(group)
    s.flush()
    for user in members:
        s.add(GroupMember(group_id=group.id, value=user.id, type="User", display=user.user_name))
    return group


def make_device(s: Session, owner: User, *, state: str = "pending", hostname: str = "") -> Device:
    """A registered device (random keys: it never answers a challenge)."""
    device = Device(
        id=str(uuid.uuid4()),
        user_id=owner.id,
        state=state,
        sign_key=os.urandom(32),
        box_key=os.urandom(32),
        hostname=hostname or f"host-{uuid.uuid4().hex[:6]}",
        platform="linux",
        serial=f"SN{uuid.uuid4().hex[:8].upper()}",
    )
    s.add(device)
    s.flush()
    return device
