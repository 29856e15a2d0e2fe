"""Tables of the directory's groups: groups and their members (users or nested groups).

SCIM writes them (``scim/storage.py``); the sign-in, the console, the SAML
attribute mapping and the registration policies read them. Users live in the
foundation's ``users`` table (one row per person, shared with the device
registry), so that deactivating a user by SCIM is the same write the login
path reads. Revision ``0002`` creates these tables and adds ``users.deleted_at``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class Group(Base):
    """A SCIM group. ``display_name_key`` (the name as compared) is unique."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    # displayName compared without regard to case (scim2-models' comparison key).
    display_name_key: Mapped[str] = mapped_column(String(256), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(256), index=True)
    # The resource as last written, without id, meta and members (those are columns/rows).
    scim_resource: Mapped[dict[str, Any] | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class GroupMember(Base):
    """One member of a group: a user or a (nested) group, by id."""

    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "value", name="uq_group_members_group_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    value: Mapped[str] = mapped_column(String(64), index=True)  # users.id or groups.id
    type: Mapped[str] = mapped_column(String(16))  # User | Group
    display: Mapped[str | None] = mapped_column(String(256))
