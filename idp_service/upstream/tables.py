"""Tables of the upstream sign-in: one row per authorization request sent to an upstream IdP.

Registered in ``idp_service/tables.py``; created by migration ``0020``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Integer, LargeBinary, String, false
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
    purpose: Mapped[str] = mapped_column(String(16))  # enroll | reverify | approve | admin
    nonce: Mapped[str] = mapped_column(String(64))
    code_verifier: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used_at: Mapped[dt.datetime | None]
    user_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(256))
    verified_at: Mapped[dt.datetime | None]


class ReauthToken(Base):
    """One re-authentication token of a device (``trust_protocol/reauth.py``).

    Only ``token_hash`` is kept (bound to the device id and signing key); the
    grant sealed to the device's box key is kept in ``sealed`` so that the device
    can pick it up if the reply that carried it was lost (only that device can
    open it). A *family* starts at an upstream sign-in; each use spends the
    token (``used_at``) and issues its successor (``predecessor`` = this id) with
    the family's ``expires_at``. ``revoked_at``/``revoked_reason``: superseded,
    grace (the successor a lost-reply recovery replaced), reuse, device_revoked,
    owner_deactivated, reverify, ...
    """

    __tablename__ = "reauth_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    predecessor: Mapped[str | None] = mapped_column(String(32), index=True)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    # The sign-in (challenge id) whose answer this token's grant was issued in.
    issued_in: Mapped[str] = mapped_column(String(64), index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    used_at: Mapped[dt.datetime | None]
    used_in: Mapped[str | None] = mapped_column(String(64))
    grace_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class ReauthPolicy(Base):
    """The re-verification window of a scope: ``global`` or ``group:<SCIM group id>``.

    ``lifetime`` (seconds) is how long after an upstream sign-in a device may sign
    in with its re-authentication tokens; ``required`` makes a token (or an upstream
    sign-in) a condition of every sign-in; ``second_device`` makes an upstream sign-in,
    in the same sign-in, a condition of approving a user's second or later device with
    a trusted device's code (migration ``0023``). The most specific scope wins, as for
    registration policies.
    """

    __tablename__ = "reauth_policies"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    group_id: Mapped[str | None] = mapped_column(String(64))
    lifetime: Mapped[int] = mapped_column(Integer)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    second_device: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(256))


class ReverifyMark(Base):
    """An administrator's "re-verify" on a device: its next sign-in needs an upstream sign-in.

    Deleted when the device starts a new token family after that upstream sign-in.
    """

    __tablename__ = "reverify_marks"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    requested_by: Mapped[str | None] = mapped_column(String(256))
