"""Group membership, for the SAML attribute mapping and later policy scoping.

Membership is read from ``group_members``, which the SCIM storage keeps; a
group that contains a group passes its members up (nesting), so a user is in
every group above a group they belong to.

Every sign-in reads it, so it is one recursive statement (PostgreSQL and SQLite
alike) rather than one statement per level of nesting; ``UNION`` (not ``UNION
ALL``) drops groups already reached, so a cycle of groups ends. The statement
goes to the session's driver connection, in the session's transaction: for one
small read SQLAlchemy's statement machinery would cost more than the read.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from idp_service.platform.driver import Statement

_GROUPS_OF = Statement(
    """
    WITH RECURSIVE member_of(id) AS (
        SELECT group_id FROM group_members WHERE value = :user_id
        UNION
        SELECT m.group_id FROM group_members m JOIN member_of ON m.value = member_of.id
    )
    SELECT g.display_name, g.display_name_key FROM groups g JOIN member_of ON g.id = member_of.id
    """
)


def groups_of(session: Session, user_id: str) -> list[str]:
    """The displayNames of every group ``user_id`` belongs to, directly or nested, sorted."""
    names = [row[0] for row in _GROUPS_OF.rows(session, user_id=user_id)]
    return sorted(names, key=str.casefold)


def group_keys_of(session: Session, user_id: str) -> set[str]:
    """The stored name keys (``identity.name_key``) of every group ``user_id`` belongs to."""
    return {row[1] for row in _GROUPS_OF.rows(session, user_id=user_id)}
