"""Nested group membership (``directory/groups.py``): one recursive statement, cycles end."""

from __future__ import annotations

import uuid

from idp_service.directory.groups import groups_of
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.db import Database


def _group(session, name: str) -> str:
    gid = str(uuid.uuid4())
    session.add(Group(id=gid, display_name=name, display_name_key=name.casefold()))
    return gid


def _member(session, group_id: str, value: str, kind: str) -> None:
    session.add(GroupMember(group_id=group_id, value=value, type=kind))


def test_nested_groups_and_cycles(migrated_url: str) -> None:
    db = Database(migrated_url)
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    with db.session() as s:
        team = _group(s, "team")
        dept = _group(s, "Department")
        company = _group(s, "company")
        unrelated = _group(s, "Unrelated")
        loop_a, loop_b = _group(s, "loop-a"), _group(s, "Loop-b")
        s.flush()
        _member(s, team, user, "User")
        _member(s, dept, team, "Group")
        _member(s, company, dept, "Group")
        _member(s, company, user, "User")  # reached twice: listed once
        _member(s, unrelated, other, "User")
        _member(s, loop_a, user, "User")
        _member(s, loop_b, loop_a, "Group")
        _member(s, loop_a, loop_b, "Group")  # a cycle
    with db.read_session() as s:
        assert groups_of(s, user) == ["company", "Department", "loop-a", "Loop-b", "team"]
        assert groups_of(s, other) == ["Unrelated"]
        assert groups_of(s, str(uuid.uuid4())) == []
    db.dispose()
