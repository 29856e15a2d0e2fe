"""The provider's RS256 signing keys: made on first use, shared by replicas, rolled over in stages.

Keys live in ``oidc_signing_keys``, so every replica signs with the same key and
publishes the same JWKS. Each key carries a self-signed certificate, published
as ``x5c`` (Entra's External Authentication Methods require it). Rollover is
staged like the SAML keys (``saml/keys.py``):

1. :func:`stage_next` creates a *next* key: the JWKS publishes it, nothing signs
   with it yet. Relying parties refresh their cached JWKS (Entra: within 24 h).
2. :func:`activate_next` switches signing to it; the old key becomes *previous*
   and stays in the JWKS so tokens it signed still verify.
3. :func:`retire_previous` drops the old key from the JWKS once its tokens have
   expired.

Each process keeps a :class:`KeyRing` (parsing an RSA PEM costs milliseconds);
every key change raises the generation in ``oidc_key_generation`` in the same
transaction, and the ring reloads only when that number moved.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import threading
import uuid
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc.jwk import RSAKey
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp_service.oidc.tables import OidcKeyGeneration, OidcSigningKey
from idp_service.platform import audit
from idp_service.platform.db import Database
from idp_service.platform.driver import driver
from idp_service.platform.models import utcnow

SLOT = "rsa"
PUBLISHED = ("next", "active", "previous")
_READ_GENERATION = "SELECT generation FROM oidc_key_generation WHERE id = 1"
CERT_YEARS = 10


@dataclass(frozen=True)
class LoadedKey:
    """A signing key parsed once: the JOSE key, its ``kid`` and its public JWK."""

    id: str
    status: str
    kid: str
    jwk: RSAKey
    public_jwk: dict[str, Any]  # with kid, use, alg and x5c


def _generate() -> tuple[bytes, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devicetrust OIDC signing")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CERT_YEARS))
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _new_row(status: str) -> OidcSigningKey:
    pem, cert_pem = _generate()
    return OidcSigningKey(
        id=uuid.uuid4().hex,
        status=status,
        active_slot=SLOT if status == "active" else None,
        next_slot=SLOT if status == "next" else None,
        private_key_pem=pem,
        cert_pem=cert_pem,
        activated_at=utcnow() if status == "active" else None,
    )


def load(row_id: str, status: str, pem: bytes, cert_pem: str) -> LoadedKey:
    """Parse one key into what signing and the JWKS need (once per key per process)."""
    key = RSAKey.import_key(pem)
    kid = key.thumbprint()  # RFC 7638: the same on every replica
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    public = {
        **key.as_dict(private=False),
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "x5c": [base64.b64encode(der).decode()],
    }
    return LoadedKey(id=row_id, status=status, kid=kid, jwk=key, public_jwk=public)


def bump_generation(session: Session) -> None:
    """Mark the key set changed, in the transaction of the change."""
    result = session.execute(
        update(OidcKeyGeneration)
        .where(OidcKeyGeneration.id == 1)
        .values(generation=OidcKeyGeneration.generation + 1)
    )
    bumped = cast("CursorResult[Any]", result).rowcount
    if not bumped:
        session.add(OidcKeyGeneration(id=1, generation=1))
        session.flush()


def read_generation(db: Database) -> int:
    """The key set's generation: one primary-key read."""
    with driver(db.engine) as (conn, _is_pg):
        row = conn.execute(_READ_GENERATION).fetchone()
    return int(row[0]) if row is not None else 0


def ensure_active(db: Database) -> None:
    """Create the active key unless one exists (safe across replicas)."""
    with db.session() as s:
        if s.execute(select(OidcSigningKey.id).where(OidcSigningKey.active_slot == SLOT)).first():
            return
    try:
        with db.session() as s:
            row = _new_row("active")
            s.add(row)
            s.flush()
            bump_generation(s)
            audit.record(s, "oidc.key.create", "ok", details={"key_id": row.id})
    except IntegrityError:
        pass  # another replica created it first


def stage_next(session: Session, *, actor: str | None = None) -> OidcSigningKey:
    """Step 1: create the next key (published, not signing). Idempotent."""
    row = session.execute(
        select(OidcSigningKey).where(OidcSigningKey.next_slot == SLOT)
    ).scalar_one_or_none()
    if row is not None:
        return row
    row = _new_row("next")
    session.add(row)
    session.flush()
    bump_generation(session)
    audit.record(session, "oidc.key.stage", "ok", actor=actor, details={"key_id": row.id})
    return row


def activate_next(session: Session, *, actor: str | None = None) -> OidcSigningKey:
    """Step 2: sign with the staged key; the old active key stays published as previous."""
    nxt = session.execute(
        select(OidcSigningKey).where(OidcSigningKey.next_slot == SLOT)
    ).scalar_one_or_none()
    if nxt is None:
        raise LookupError("no staged key; run `devicetrust oidc-key rotate` first")
    now = utcnow()
    session.execute(
        update(OidcSigningKey)
        .where(OidcSigningKey.status == "previous")
        .values(status="retired", retired_at=now)
    )
    session.execute(
        update(OidcSigningKey)
        .where(OidcSigningKey.active_slot == SLOT)
        .values(status="previous", active_slot=None)
    )
    session.flush()
    session.execute(
        update(OidcSigningKey)
        .where(OidcSigningKey.id == nxt.id)
        .values(status="active", active_slot=SLOT, next_slot=None, activated_at=now)
    )
    bump_generation(session)
    audit.record(session, "oidc.key.activate", "ok", actor=actor, details={"key_id": nxt.id})
    session.flush()
    session.refresh(nxt)
    return nxt


def retire_previous(session: Session, *, actor: str | None = None) -> list[str]:
    """Step 3: stop publishing the previous key; returns the ids retired."""
    ids = list(
        session.scalars(select(OidcSigningKey.id).where(OidcSigningKey.status == "previous"))
    )
    if ids:
        session.execute(
            update(OidcSigningKey)
            .where(OidcSigningKey.id.in_(ids))
            .values(status="retired", retired_at=utcnow())
        )
        bump_generation(session)
        audit.record(session, "oidc.key.retire", "ok", actor=actor, details={"key_ids": ids})
    return ids


def key_to_json(row: OidcSigningKey) -> dict[str, Any]:
    """A key as the CLI shows it (never the private half)."""
    loaded = load(row.id, row.status, row.private_key_pem, row.cert_pem)
    return {
        "id": row.id,
        "kid": loaded.kid,
        "status": row.status,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "activated_at": row.activated_at.isoformat() if row.activated_at else None,
        "retired_at": row.retired_at.isoformat() if row.retired_at else None,
    }


def list_keys(session: Session) -> list[OidcSigningKey]:
    """Every key, newest first."""
    return list(session.scalars(select(OidcSigningKey).order_by(OidcSigningKey.created_at.desc())))


class KeyRing:
    """The published and active keys of one process, reloaded when the generation moves."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._generation: int | None = None

    def _current(self) -> dict[str, LoadedKey]:
        generation = read_generation(self.db)
        if generation == self._generation:
            return self._keys
        with self._lock:
            if generation == self._generation:
                return self._keys
            with self.db.session() as s:
                rows = s.execute(
                    select(OidcSigningKey.id, OidcSigningKey.status).where(
                        OidcSigningKey.status.in_(PUBLISHED)
                    )
                ).all()
                keys: dict[str, LoadedKey] = {}
                for row_id, status in rows:
                    old = self._keys.get(row_id)
                    if old is not None:
                        keys[row_id] = dataclasses.replace(old, status=status)
                        continue
                    row = s.get(OidcSigningKey, row_id)
                    if row is not None:
                        keys[row_id] = load(row.id, status, row.private_key_pem, row.cert_pem)
            self._keys, self._generation = keys, generation
            return keys

    def _with_active(self) -> dict[str, LoadedKey]:
        keys = self._current()
        if not any(k.status == "active" for k in keys.values()):
            ensure_active(self.db)
            keys = self._current()
        return keys

    def active(self) -> LoadedKey:
        """The key that signs, created on first use."""
        for key in self._with_active().values():
            if key.status == "active":
                return key
        raise LookupError("no active OIDC signing key")  # pragma: no cover - insert refused

    def published(self) -> list[LoadedKey]:
        """Every key the JWKS lists: active first, then next, then previous."""
        order = {"active": 0, "next": 1, "previous": 2}
        return sorted(self._with_active().values(), key=lambda k: (order[k.status], k.id))

    def jwks(self) -> dict[str, Any]:
        """The JWKS document."""
        return {"keys": [k.public_jwk for k in self.published()]}
