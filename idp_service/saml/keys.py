"""IdP signing keys and certificates: made on first use, shared by replicas, rolled over in stages.

Keys live in the ``saml_signing_keys`` table, so every replica signs with the
same key and publishes the same metadata. There is one *active* key per key type
(``rsa``: RSA-2048, the default; ``ec``: ECDSA P-256, for SPs set to
``ecdsa-sha256``), created the first time it is needed.

Rollover is staged (SimpleSAMLphp's ``keyrollover`` recipe):

1. :func:`stage_next` creates a *next* key. Metadata publishes it next to the
   active one; nothing signs with it yet. SPs refresh their metadata.
2. :func:`activate_next` switches signing to it. The old key becomes *previous*
   and stays in metadata so in-flight responses still verify.
3. :func:`retire_previous` drops the old key from metadata.

Each process keeps a :class:`KeyRing` in ``Services.saml_keys``: PEMs are parsed once
(an RSA PEM costs ~50 ms to load). Every change to the keys (a key created,
staged, activated or retired) raises the generation number in the one row of
``saml_key_generation``, in the same transaction as the change. Before each use
the ring reads that number (one primary-key read) and reloads the key table
only when it moved, so once a change has committed - from the CLI, the admin
API or another replica - the next request in every process publishes and signs
with the new key set.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any, cast

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.db import Database
from idp_service.platform.driver import driver
from idp_service.platform.models import utcnow
from idp_service.saml.tables import SigningKey, SigningKeyGeneration

KEY_TYPES = ("rsa", "ec")
PUBLISHED = ("next", "active", "previous")
GENERATION_ROW = 1
_READ_GENERATION = "SELECT generation FROM saml_key_generation WHERE id = 1"
CERT_YEARS = 10


@dataclass(frozen=True)
class LoadedKey:
    """A signing key parsed once: the xmlsec key, the certificate and its metadata."""

    id: str
    key_type: str
    status: str
    cert_pem: str
    cert_b64: str  # base64 DER, as it appears in <ds:X509Certificate>
    xmlsec_key: xmlsec.Key
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, hex with colons (what SP admins compare)."""
        digest = hashlib.sha256(base64.b64decode(self.cert_b64)).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _generate(key_type: str, common_name: str) -> tuple[bytes, str, dt.datetime]:
    if key_type == "rsa":
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
    elif key_type == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown key type {key_type!r}; use one of {KEY_TYPES}")
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_after = now + dt.timedelta(days=365 * CERT_YEARS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode(), not_after


def _new_row(key_type: str, status: str) -> SigningKey:
    pem, cert_pem, not_after = _generate(key_type, f"devicetrust IdP signing ({key_type})")
    return SigningKey(
        id=uuid.uuid4().hex,
        key_type=key_type,
        status=status,
        active_slot=key_type if status == "active" else None,
        next_slot=key_type if status == "next" else None,
        private_key_pem=pem,
        cert_pem=cert_pem,
        not_after=not_after,
        activated_at=utcnow() if status == "active" else None,
    )


def bump_generation(session: Session) -> None:
    """Mark the key set changed, in the transaction of the change (so the two commit
    together). On PostgreSQL the row lock also orders concurrent key changes."""
    result = session.execute(
        update(SigningKeyGeneration)
        .where(SigningKeyGeneration.id == GENERATION_ROW)
        .values(generation=SigningKeyGeneration.generation + 1)
    )
    bumped = cast("CursorResult[Any]", result).rowcount
    if not bumped:  # migration 0013 inserts the row; a database without it gets it here
        session.add(SigningKeyGeneration(id=GENERATION_ROW, generation=1))
        session.flush()


def read_generation(db: Database) -> int:
    """The key set's current generation (0 if the row is missing): one primary-key read
    on the pooled driver connection."""
    with driver(db.engine) as (conn, _is_pg):
        row = conn.execute(_READ_GENERATION).fetchone()
    return int(row[0]) if row is not None else 0


def ensure_active(db: Database, key_type: str) -> None:
    """Create the active key of ``key_type`` unless one exists (safe across replicas)."""
    with db.session() as s:
        exists = s.execute(select(SigningKey.id).where(SigningKey.active_slot == key_type)).first()
    if exists:
        return
    try:
        with db.session() as s:
            row = _new_row(key_type, "active")
            s.add(row)
            s.flush()
            bump_generation(s)
            audit.record(
                s, "saml.key.create", "ok", details={"key_id": row.id, "key_type": key_type}
            )
    except IntegrityError:
        pass  # another replica created it first


def stage_next(session: Session, key_type: str, *, actor: str | None = None) -> SigningKey:
    """Step 1: create the next key of ``key_type`` (published, not signing). Idempotent."""
    row = session.execute(
        select(SigningKey).where(SigningKey.next_slot == key_type)
    ).scalar_one_or_none()
    if row is not None:
        return row
    row = _new_row(key_type, "next")
    session.add(row)
    session.flush()
    bump_generation(session)
    audit.record(
        session,
        "saml.key.stage",
        "ok",
        actor=actor,
        details={"key_id": row.id, "key_type": key_type},
    )
    return row


def activate_next(session: Session, key_type: str, *, actor: str | None = None) -> SigningKey:
    """Step 2: sign with the staged key; the old active key stays published as previous."""
    nxt = session.execute(
        select(SigningKey).where(SigningKey.next_slot == key_type)
    ).scalar_one_or_none()
    if nxt is None:
        raise LookupError(f"no staged {key_type} key; run `devicetrust keys rotate` first")
    now = utcnow()
    # Older "previous" keys are retired: at most one previous key stays published.
    session.execute(
        update(SigningKey)
        .where(SigningKey.key_type == key_type, SigningKey.status == "previous")
        .values(status="retired", retired_at=now)
    )
    session.execute(
        update(SigningKey)
        .where(SigningKey.active_slot == key_type)
        .values(status="previous", active_slot=None)
    )
    session.flush()
    session.execute(
        update(SigningKey)
        .where(SigningKey.id == nxt.id)
        .values(status="active", active_slot=key_type, next_slot=None, activated_at=now)
    )
    bump_generation(session)
    audit.record(
        session,
        "saml.key.activate",
        "ok",
        actor=actor,
        details={"key_id": nxt.id, "key_type": key_type},
    )
    session.flush()
    session.refresh(nxt)
    return nxt


def retire_previous(session: Session, key_type: str, *, actor: str | None = None) -> list[str]:
    """Step 3: stop publishing the previous key(s) of ``key_type``; returns their ids."""
    ids = list(
        session.scalars(
            select(SigningKey.id).where(
                SigningKey.key_type == key_type, SigningKey.status == "previous"
            )
        )
    )
    if ids:
        session.execute(
            update(SigningKey)
            .where(SigningKey.id.in_(ids))
            .values(status="retired", retired_at=utcnow())
        )
        bump_generation(session)
        audit.record(session, "saml.key.retire", "ok", actor=actor, details={"key_ids": ids})
    return ids


def key_to_json(row: SigningKey) -> dict[str, object]:
    """A key as ``devicetrust keys list --json`` shows it (never the private half)."""
    der = x509.load_pem_x509_certificate(row.cert_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    return {
        "id": row.id,
        "key_type": row.key_type,
        "status": row.status,
        "sha256_fingerprint": ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "activated_at": row.activated_at.isoformat() if row.activated_at else None,
        "retired_at": row.retired_at.isoformat() if row.retired_at else None,
        "not_after": row.not_after.isoformat() if row.not_after else None,
    }


def list_keys(session: Session) -> list[SigningKey]:
    """Every key, newest first."""
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))


def load(row_id: str, key_type: str, status: str, pem: bytes, cert_pem: str) -> LoadedKey:
    """Parse one key into the forms signing needs (done once per key per process)."""
    # The certificate is not loaded into the xmlsec key: signing copies a key's X.509
    # data on every signature, and the signer writes <ds:X509Certificate> itself.
    key = xmlsec.Key.from_memory(pem, xmlsec.constants.KeyDataFormatPem)
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return LoadedKey(
        id=row_id,
        key_type=key_type,
        status=status,
        cert_pem=cert_pem,
        cert_b64=base64.b64encode(der).decode(),
        xmlsec_key=key,
        private_key=private,
    )


class KeyRing:
    """The published and active keys of one process, checked against the database's key
    generation before every use (see the module doc)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._generation: int | None = None

    def _current(self) -> dict[str, LoadedKey]:
        """The keys of the committed key set, reloaded if its generation moved."""
        # The generation is read before the rows: rows newer than the number we keep
        # only cause one more reload later, never a stale key set kept as current.
        generation = read_generation(self.db)
        if generation == self._generation:
            return self._keys
        with self._lock:
            if generation == self._generation:
                return self._keys
            with self.db.session() as s:
                rows = s.execute(
                    select(SigningKey.id, SigningKey.status).where(SigningKey.status.in_(PUBLISHED))
                ).all()
                keys: dict[str, LoadedKey] = {}
                for row_id, status in rows:
                    old = self._keys.get(row_id)
                    if old is not None:
                        keys[row_id] = dataclasses.replace(old, status=status)
                        continue
                    row = s.get(SigningKey, row_id)
                    if row is not None:
                        keys[row_id] = load(
                            row.id, row.key_type, status, row.private_key_pem, row.cert_pem
                        )
            self._keys = keys
            self._generation = generation
            return keys

    @staticmethod
    def _active_in(keys: dict[str, LoadedKey], key_type: str) -> LoadedKey | None:
        for key in keys.values():
            if key.key_type == key_type and key.status == "active":
                return key
        return None

    def _with_active(self, key_types: tuple[str, ...]) -> dict[str, LoadedKey]:
        keys = self._current()
        for key_type in key_types:
            if self._active_in(keys, key_type) is None:
                ensure_active(self.db, key_type)
                keys = self._current()
                if self._active_in(keys, key_type) is None:  # pragma: no cover - insert refused
                    raise LookupError(f"no active {key_type} key")
        return keys

    def active(self, key_type: str) -> LoadedKey:
        """The key that signs for ``key_type``, created on first use."""
        key = self._active_in(self._with_active((key_type,)), key_type)
        assert key is not None
        return key

    def published(self, key_types: tuple[str, ...] = ("rsa",)) -> list[LoadedKey]:
        """Every key metadata lists: active, next and previous, RSA first (the active
        keys of ``key_types`` are created first if missing)."""
        keys = self._with_active(key_types)
        order = {"active": 0, "next": 1, "previous": 2}
        return sorted(keys.values(), key=lambda k: (k.key_type != "rsa", order[k.status], k.id))

    def invalidate(self) -> None:
        """Reload the key table on next use, whatever the generation says."""
        self._generation = None
