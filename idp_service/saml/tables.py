"""Tables of the SAML surface: service providers, IdP signing keys, request-ID replay cache,
and the Response each finished sign-in issued.

Registered in ``idp_service/tables.py``; created by migration ``0003``
(``0013``: the SPs' ``requested_authn_context`` and the key-set generation row;
``0014``: ``saml_issued_responses``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class ServiceProvider(Base):
    """A registered SAML SP, as imported from its metadata, with its per-SP settings."""

    __tablename__ = "saml_service_providers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(1024), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Kept for reference and re-import; not loaded on the sign-in path.
    metadata_xml: Mapped[str | None] = mapped_column(Text, deferred=True)
    # [{"binding": URN, "location": URL, "index": int, "is_default": bool}]
    acs: Mapped[list[Any]] = mapped_column(JSON)
    signing_certs: Mapped[list[Any]] = mapped_column(JSON)  # PEM strings
    encryption_certs: Mapped[list[Any]] = mapped_column(JSON)  # PEM strings
    nameid_format: Mapped[str] = mapped_column(String(32), default="emailAddress")
    # {"email": "email", "display_name": "displayName", ...}: source -> SAML attribute name
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    require_signed_requests: Mapped[bool] = mapped_column(Boolean, default=False)
    sign_response: Mapped[bool] = mapped_column(Boolean, default=True)
    sign_assertion: Mapped[bool] = mapped_column(Boolean, default=True)
    signature_algorithm: Mapped[str] = mapped_column(String(32), default="rsa-sha256")
    encrypt_assertion: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_idp_initiated: Mapped[bool] = mapped_column(Boolean, default=False)
    identity_broker: Mapped[bool] = mapped_column(Boolean, default=False)
    session_minutes: Mapped[int] = mapped_column(Integer, default=480)
    # strict: answer NoAuthnContext when we cannot satisfy the SP's RequestedAuthnContext;
    # lenient: assert the device-bound class anyway (brokers that always ask for one).
    requested_authn_context: Mapped[str] = mapped_column(String(16), default="strict")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SigningKey(Base):
    """An IdP signing key and its self-signed certificate.

    ``status`` is ``next`` (published in metadata, not used yet), ``active``
    (signs), ``previous`` (still published after a switch) or ``retired``.
    ``active_slot``/``next_slot`` hold the key type while the key is in that
    state and NULL otherwise; their unique constraints make "one active and one
    next key per type" hold even when two replicas create keys at once.
    """

    __tablename__ = "saml_signing_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_type: Mapped[str] = mapped_column(String(8))  # rsa | ec
    status: Mapped[str] = mapped_column(String(16))
    active_slot: Mapped[str | None] = mapped_column(String(8), unique=True)
    next_slot: Mapped[str | None] = mapped_column(String(8), unique=True)
    private_key_pem: Mapped[bytes] = mapped_column(LargeBinary)
    cert_pem: Mapped[str] = mapped_column(Text)
    not_after: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]


class SigningKeyGeneration(Base):
    """One row (``id`` 1) whose ``generation`` goes up in the same transaction as every
    change to the published or active keys; processes compare it with the generation
    of the keys they hold, before each use, to see a change as soon as it commits."""

    __tablename__ = "saml_key_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(Integer)


class SeenRequest(Base):
    """An AuthnRequest ID already accepted from an SP; a second use is a replay."""

    __tablename__ = "saml_seen_requests"
    __table_args__ = (UniqueConstraint("sp_entity_id", "request_id", name="uq_saml_seen_request"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sp_entity_id: Mapped[str] = mapped_column(String(1024))
    request_id: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[dt.datetime]


Index("ix_saml_seen_requests_expires_at", SeenRequest.expires_at)


class IssuedResponse(Base):
    """The one SAML Response a login transaction issued, kept to deliver it again.

    Written in the same database transaction that claims the login transaction
    (``signin/store.complete_verified`` for a success), so a second
    ``/login/<id>/continue`` that finds the transaction completed finds this row
    too. A repeated ``/continue`` from the browser that owns the transaction gets
    exactly these bytes again until ``valid_until`` (the assertion's
    ``NotOnOrAfter``, no later than the transaction's own expiry); never a new
    assertion. ``saml_response`` is a bearer credential until then: it is never
    logged, and the row is deleted when a repeat finds it expired.
    """

    __tablename__ = "saml_issued_responses"

    txn_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("login_transactions.id", ondelete="CASCADE"), primary_key=True
    )
    saml_response: Mapped[str] = mapped_column(Text)  # base64, exactly as POSTed to the ACS
    code: Mapped[str | None] = mapped_column(String(32))  # None: Success; else why refused
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    valid_until: Mapped[dt.datetime] = mapped_column(index=True)
