"""Tables of the upstream sign-in: one row per authorization request sent to an upstream IdP.

Registered in ``idp_service/tables.py``; created by migration ``0020``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class UpstreamLogin(Base):
    """An authorization request to an upstream IdP, and, once answered, whom it proved.

    The ``state`` sent to the IdP is stored only as its SHA-256 (``state_hash``);
    ``nonce`` and the PKCE ``code_verifier`` never leave the server but in the
    flow itself. ``used_at`` is set once, by the callback that claims the row, before
    anything else is done with the answer. ``user_id`` is set when the ID token was
    valid and mapped to an active SCIM user.
    """

    __tablename__ = "upstream_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    idp: Mapped[str] = mapped_column(String(64))
    txn_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # enroll | reverify | admin
    nonce: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used_at: Mapped[dt.datetime | None]
    user_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(256))
    verified_at: Mapped[dt.datetime | None]
