"""Group membership, for the SAML attribute mapping and later policy scoping.

Membership is read from ``group_members``, which the SCIM storage keeps; a
group that contains a group passes its members up (nesting), so a user is in
every group above a group they belong to.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scim.tables import Group, GroupMember


def groups_of(session: Session, user_id: str) -> list[str]:
    """The displayNames of every group ``user_id`` belongs to, directly or nested, sorted."""
    seen: set[str] = set()
    names: dict[str, str] = {}
    frontier = {user_id}
    while frontier:
        rows = session.execute(
            select(Group.id, Group.display_name)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.value.in_(frontier))
        ).all()
        frontier = set()
        for group_id, name in rows:
            if group_id not in seen:
                seen.add(group_id)
                names[group_id] = name
                frontier.add(group_id)
    return sorted(names.values(), key=str.casefold)
