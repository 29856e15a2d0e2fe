"""Tables of the admin API: its named bearer tokens (revision ``0005``).

Only a token's SHA-256 is stored; the token itself is shown once, when made.
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
