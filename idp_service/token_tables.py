"""Tables of the named bearer tokens: the admin API's (revision ``0005``) and SCIM's (``0002``).

Only a token's SHA-256 is stored; the token itself is shown once, when made
(:mod:`idp_service.tokens` makes, checks, rotates and revokes them).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow

API_SCOPES = ("read", "write")


class ApiToken(Base):
    """A named admin-API token with a scope: ``read``, or ``write`` (which implies read)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


class ScimToken(Base):
    """A named bearer token for a SCIM client. Only its SHA-256 is stored.

    ``previous_hash`` keeps the token a rotation replaced valid until
    ``previous_valid_until``, so a client can be switched without downtime.
    """

    __tablename__ = "scim_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64))
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    previous_valid_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
