"""Directory reads for the console and the admin API: users and groups (SCIM owns both),
paged by keyset.

Handlers in ``idp_service/api`` and ``idp_service/admin`` reach users and groups through
these functions and build no statement themselves. Every function takes the caller's
session and commits nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.models import Device, User


def prefix_range(column: Any, text: str) -> Any:
    """``column`` starts with ``text`` (not empty), as a range a B-tree index answers."""
    upper = text[:-1] + chr(ord(text[-1]) + 1)
    return and_(column >= text, column < upper)


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it."""
    return {
        "id": user.id,
        "user_name": user.user_name,
        "email": user.email,
        "display_name": user.display_name,
        "external_id": user.external_id,
        "active": bool(user.active),
        "deleted": user.deleted_at is not None,
        "created_at": user.created_at.isoformat(),
        "deactivated_at": user.deactivated_at.isoformat() if user.deactivated_at else None,
    }


def group_json(group: Group) -> dict[str, Any]:
    """A group as the API shows it."""
    return {
        "id": group.id,
        "display_name": group.display_name,
        "external_id": group.external_id,
        "created_at": group.created_at.isoformat(),
    }


def get_user(session: Session, user_id: str) -> User | None:
    """The user ``user_id`` (deleted ones included), or None."""
    return session.get(User, user_id)


def user_page(
    session: Session,
    *,
    limit: int,
    active: bool | None = None,
    pattern: str | None = None,
    after: tuple[str, str] | None = None,
) -> list[User]:
    """Up to ``limit + 1`` users that are not deleted, by userName.

    ``pattern`` is an ILIKE pattern (escape ``\\``) matched against userNames, e-mail
    addresses and display names; ``after`` the ``(user_name_lower, id)`` of the last user
    of the previous page.
    """
    stmt = select(User).where(User.deleted_at.is_(None))
    if active is not None:
        stmt = stmt.where(User.active.is_(active))
    if pattern:
        stmt = stmt.where(
            or_(
                User.user_name.ilike(pattern, escape="\\"),
                User.email.ilike(pattern, escape="\\"),
                User.display_name.ilike(pattern, escape="\\"),
            )
        )
    if after is not None:
        key, last_id = after
        stmt = stmt.where(
            or_(User.user_name_lower > key, and_(User.user_name_lower == key, User.id > last_id))
        )
    return list(session.scalars(stmt.order_by(User.user_name_lower, User.id).limit(limit + 1)))


def users_by_name(session: Session, *, limit: int, prefix: str = "", after: str = "") -> list[User]:
    """Up to ``limit + 1`` users (deleted ones included) by ``user_name_lower``: those whose
    key starts with ``prefix`` and comes after ``after`` (both keys, empty for no bound).

    The console's users page; the index on ``user_name_lower`` answers it.
    """
    stmt = select(User)
    if prefix:
        stmt = stmt.where(prefix_range(User.user_name_lower, prefix))
    if after:
        stmt = stmt.where(User.user_name_lower > after)
    return list(session.scalars(stmt.order_by(User.user_name_lower).limit(limit + 1)))


def device_counts(session: Session, user_ids: list[str]) -> dict[str, int]:
    """``{user id: devices}`` for those of ``user_ids`` that own any device."""
    rows = session.execute(
        select(Device.user_id, func.count())
        .where(Device.user_id.in_(user_ids))
        .group_by(Device.user_id)
    ).all()
    return {user_id: int(n) for user_id, n in rows}


def groups_with_counts(session: Session, *, limit: int = 1000) -> list[tuple[Group, int]]:
    """Groups by name with how many direct members each has (at most ``limit``)."""
    n = func.count(GroupMember.id).label("n")
    rows = session.execute(
        select(Group, n)
        .outerjoin(GroupMember, GroupMember.group_id == Group.id)
        .group_by(Group.id)
        .order_by(Group.display_name_key)
        .limit(limit)
    ).all()
    return [(group, int(count)) for group, count in rows]


def groups_of(session: Session, user_id: str) -> list[Group]:
    """The groups ``user_id`` is a direct member of, by name."""
    return list(
        session.scalars(
            select(Group)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.value == user_id, GroupMember.type == "User")
            .order_by(Group.display_name_key)
        )
    )


def get_group(session: Session, group_id: str) -> Group | None:
    """The group ``group_id``, or None."""
    return session.get(Group, group_id)


def group_page(
    session: Session,
    *,
    limit: int,
    pattern: str | None = None,
    after: tuple[str, str] | None = None,
) -> list[Group]:
    """Up to ``limit + 1`` groups by name; ``pattern`` and ``after`` as in :func:`user_page`
    (``after`` is ``(display_name_key, id)``)."""
    stmt = select(Group)
    if pattern:
        stmt = stmt.where(Group.display_name.ilike(pattern, escape="\\"))
    if after is not None:
        key, last_id = after
        stmt = stmt.where(
            or_(
                Group.display_name_key > key,
                and_(Group.display_name_key == key, Group.id > last_id),
            )
        )
    return list(session.scalars(stmt.order_by(Group.display_name_key, Group.id).limit(limit + 1)))


def members(session: Session, group_id: str) -> list[GroupMember]:
    """The group's direct members, in the order they were added."""
    return list(
        session.scalars(
            select(GroupMember).where(GroupMember.group_id == group_id).order_by(GroupMember.id)
        )
    )


__all__ = [
    "group_json",
    "user_json",
    "device_counts",
    "get_group",
    "get_user",
    "group_page",
    "groups_of",
    "groups_with_counts",
    "members",
    "prefix_range",
    "user_page",
    "users_by_name",
]
