"""Users: lookup by userName and creation outside SCIM, under one normalisation.

``find`` and ``create`` key names with :func:`idp_service.platform.identity.name_key`,
as SCIM does, so a name typed in another Unicode form or case (``Renée``
decomposed, ``straße`` for ``strasse``) finds the same user and cannot make a
second, identically rendered account.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Invalid
from idp_service.platform.identity import (
    ConfusableName,
    check_identifier,
    name_key,
    reserved_reason,
)
from idp_service.platform.models import User


def find(session: Session, user_name: str) -> User | None:
    """The user whose userName is ``user_name`` under the one name normalisation.

    (:func:`~idp_service.platform.identity.name_key`)
    """
    return session.execute(
        select(User).where(User.user_name_lower == name_key(user_name))
    ).scalar_one_or_none()


def create(
    session: Session, user_name: str, *, display_name: str | None = None, actor: str | None = None
) -> User:
    """Create an active user; ``user_name`` doubles as the e-mail address when it has an @."""
    user_name = user_name.strip()
    if not user_name or len(user_name) > 256:
        raise Invalid("invalid_user_name", "userName must be 1 to 256 characters.")
    reserved = reserved_reason(user_name, "userName")
    if reserved is not None:
        raise Invalid("invalid_user_name", reserved + ".")
    try:
        check_identifier(user_name)
    except ConfusableName:
        raise Invalid(
            "invalid_user_name",
            "userName mixes scripts with look-alike characters, or holds control or"
            " invisible formatting characters.",
        ) from None
    existing = find(session, user_name)
    if existing is not None:
        raise Conflict(
            "user_exists",
            f"user {user_name!r} is the same name as existing user {existing.user_name!r}"
            " (names are compared after Unicode normalisation and case folding)",
        )
    user = User(
        id=str(uuid.uuid4()),
        user_name=user_name,
        user_name_lower=name_key(user_name),
        email=user_name if "@" in user_name else None,
        display_name=display_name,
        active=True,
    )
    session.add(user)
    session.flush()
    audit.record(session, "user.create", "ok", actor=actor, user_id=user.id)
    return user


def to_json(user: User) -> dict[str, Any]:
    """A user as the CLI and API show it."""
    return {
        "id": user.id,
        "user_name": user.user_name,
        "email": user.email,
        "display_name": user.display_name,
        "active": user.active,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


__all__ = ["create", "find", "to_json"]
