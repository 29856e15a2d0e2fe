"""Tables of the OpenID Connect provider: clients, signing keys, codes and access tokens.

Registered in ``idp_service/tables.py``; created by migration ``0019``.
Codes and access tokens are stored as SHA-256 hashes only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class OidcClient(Base):
    """A registered relying party and its settings.

    ``mode``: ``app`` (a full IdP: the code flow) or ``factor`` (Entra EAM,
    Okta's IdP authenticator: the caller names the user, we check the device).
    ``secret_hash``: SHA-256 hex of the client secret; NULL for a public client
    (``token_auth_method`` ``none``, PKCE required) or ``private_key_jwt``.
    The ``eam_*`` columns configure the Entra tenant whose ``id_token_hint`` a
    factor client accepts.
    """

    __tablename__ = "oidc_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    mode: Mapped[str] = mapped_column(String(16), default="app")
    redirect_uris: Mapped[list[Any]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[Any]] = mapped_column(JSON)
    token_auth_method: Mapped[str] = mapped_column(String(32), default="client_secret_basic")
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # for private_key_jwt
    # source -> claim name (email, name, groups, device_id, posture)
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(128), default="possessionorinherence")
    id_token_minutes: Mapped[int] = mapped_column(Integer, default=5)
    eam_tenant_id: Mapped[str | None] = mapped_column(String(64))
    eam_issuer: Mapped[str | None] = mapped_column(String(512))
    eam_jwks_url: Mapped[str | None] = mapped_column(String(1024))
    eam_hint_max_age: Mapped[int] = mapped_column(Integer, default=600)  # seconds past exp
    # How a hint names our user: external_id (oid only) or external_id_then_username.
    eam_user_match: Mapped[str] = mapped_column(String(32), default="external_id")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OidcSigningKey(Base):
    """An RS256 signing key with its self-signed certificate (published as ``x5c``).

    ``status``: ``next`` (published, not signing), ``active`` (signs),
    ``previous`` (published until its tokens expire) or ``retired``;
    ``active_slot``/``next_slot`` are ``"rsa"`` while the key holds that state,
    NULL otherwise, and unique, so two replicas cannot both create one.
    """

    __tablename__ = "oidc_signing_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    active_slot: Mapped[str | None] = mapped_column(String(8), unique=True)
    next_slot: Mapped[str | None] = mapped_column(String(8), unique=True)
    private_key_pem: Mapped[bytes] = mapped_column(LargeBinary)
    cert_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column()
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class OidcKeyGeneration(Base):
    """One row: raised with every key change, so each process reloads its ring."""

    __tablename__ = "oidc_key_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class OidcCode(Base):
    """An authorization code (by hash): single use, at most 60 seconds."""

    __tablename__ = "oidc_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    txn_id: Mapped[str] = mapped_column(String(64), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    # The id_token's claims and userinfo's, decided when the sign-in completed.
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    scope: Mapped[str] = mapped_column(String(1024))
    user_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column()


class OidcAccessToken(Base):
    """An access token (by hash) for userinfo; revoked when its code is replayed."""

    __tablename__ = "oidc_access_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()


class OidcAssertionJti(Base):
    """A ``private_key_jwt`` client assertion already used, kept until its ``exp``.

    OpenID Connect Core §9 lets an assertion be used once: the token endpoint inserts
    its (client, ``jti``) here before it trusts it, so a second use (a copy) fails on
    the primary key, on any replica. The id is SHA-256 of the client id and the jti.
    """

    __tablename__ = "oidc_assertion_jtis"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
