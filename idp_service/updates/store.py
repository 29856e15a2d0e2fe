"""Tables of signed self-update: the trusted update key and every published manifest.

* ``update_keys``: the one update public key the service checks manifests
  against and tells enrolling agents about (``scope = "global"``).
* ``update_manifests``: each published signed manifest, exactly as signed, by
  serial; the highest serial is the one served. Older rows stay, so an admin can
  pin the fleet back to a version published before.

Revision ``0017`` creates them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class UpdateKey(Base):
    """The trusted update public key (base64url Ed25519), set by ``updates trust-key``."""

    __tablename__ = "update_keys"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)  # "global"
    public_key: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    set_by: Mapped[str | None] = mapped_column(String(256))


class UpdateManifestRow(Base):
    """One published manifest: the signed document and what it says, for listing."""

    __tablename__ = "update_manifests"

    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kid: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the signed payload
    document: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    pinned: Mapped[bool] = mapped_column(Boolean)
    percent: Mapped[int] = mapped_column(Integer)
    versions: Mapped[dict[str, str]] = mapped_column(JSON)  # platform -> version
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_by: Mapped[str | None] = mapped_column(String(256))
