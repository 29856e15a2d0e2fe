"""Directory reads for the admin API: users and groups (SCIM owns both), paged by keyset.

Handlers in ``idp_service/api`` reach users and groups through these functions and build
no statement themselves. Every function takes the caller's session and commits nothing.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.models import User


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


__all__ = ["get_group", "get_user", "group_page", "groups_of", "members", "user_page"]
