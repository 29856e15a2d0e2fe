"""Signed self-update, service side, without Flask: keys, publishing, pins, stages, artifacts.

Who holds what:

* The **update signing key** (Ed25519 seed) lives in a file an admin keeps,
  ideally offline: :func:`generate_key_file` writes it 0600, :func:`load_key_file`
  refuses it when others can read it. Only ``devicetrust updates keygen`` /
  ``sign`` / ``pin`` / ``stage`` read it; ``serve`` never does.
* The service stores the **public** half (:func:`trust_key`), checks every
  manifest it publishes against it (:func:`publish`) and tells enrolling agents
  about it (``/agent/v1/update-key``).

Every admin change is audited (``update.key_trust``, ``update.publish``,
``update.artifact_add``); a refused publish is audited as ``rejected`` and
writes nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from idp_service.platform import audit
from idp_service.platform.db import Database
from idp_service.updates.store import UpdateKey, UpdateManifestRow
from trust_protocol import update_manifest as um
from trust_protocol.challenge import key_id
from trust_protocol.encoding import b64d, b64e
from trust_protocol.errors import ProtocolError

SCOPE = "global"
KEY_FILE_PREFIX = "devicetrust-update-signing-key-v1:"
DEFAULT_LIFETIME = dt.timedelta(days=30)
ARTIFACT_DIR = "update-artifacts"
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


class UpdateError(Exception):
    """An update admin action was refused; ``code`` is stable, ``hint`` says what to do."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


# -- the signing key file (admin machine) ----------------------------------------------------


def generate_key_file(path: Path) -> VerifyKey:
    """Create a new update signing key in ``path`` (0600, refusing to overwrite)."""
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(KEY_FILE_PREFIX + b64e(bytes(key)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key.verify_key


def load_key_file(path: Path) -> SigningKey:
    """Read an update signing key file; refuse it when group or others may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UpdateError(
            "key_file_unreadable",
            f"cannot read the update signing key {path}: {exc}",
            "Create one with: devicetrust updates keygen --out FILE",
        ) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UpdateError(
            "key_file_unsafe",
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):o})",
            f"Run: chmod 600 {path}",
        )
    if not text.startswith(KEY_FILE_PREFIX):
        raise UpdateError("key_file_invalid", f"{path} is not a devicetrust update signing key")
    try:
        seed = b64d(text[len(KEY_FILE_PREFIX) :], length=32, field="seed")
    except ProtocolError:
        raise UpdateError("key_file_invalid", f"{path} holds no valid key") from None
    return SigningKey(seed)


def parse_public_key(text: str) -> VerifyKey:
    """An update public key as printed by ``keygen`` (base64url, 32 bytes)."""
    try:
        return VerifyKey(b64d(text.strip(), length=32, field="update key"))
    except ProtocolError:
        raise UpdateError(
            "invalid_update_key",
            "the update public key must be 32 bytes of unpadded base64url",
            "Copy it from the output of: devicetrust updates keygen",
        ) from None


# -- the trusted public key ------------------------------------------------------------------


def trust_key(db: Database, public_key: str, *, actor: str) -> str:
    """Make ``public_key`` the update key the service checks manifests against; its kid."""
    key = parse_public_key(public_key)
    kid = key_id(key)
    with db.session() as session:
        row = session.get(UpdateKey, SCOPE)
        previous = row.kid if row is not None else None
        if row is None:
            row = UpdateKey(scope=SCOPE)
            session.add(row)
        row.public_key, row.kid = b64e(bytes(key)), kid
        row.set_at, row.set_by = dt.datetime.now(dt.UTC), actor
        audit.record(
            session,
            "update.key_trust",
            "ok",
            actor=actor,
            details={"kid": kid, "previous_kid": previous},
        )
    return kid


def trusted_key(db: Database) -> VerifyKey | None:
    """The trusted update public key, or None before ``updates trust-key``."""
    with db.session() as session:
        row = session.get(UpdateKey, SCOPE)
        return None if row is None else VerifyKey(b64d(row.public_key, length=32))


# -- manifests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A stored manifest."""

    serial: int
    digest: str
    document: bytes
    manifest: um.Manifest
    published_at: dt.datetime
    published_by: str | None

    def summary(self) -> dict[str, Any]:
        """What ``updates show``/``history`` print."""
        m = self.manifest
        return {
            "serial": self.serial,
            "kid": m.kid,
            "digest": self.digest,
            "issued_at": _iso(m.issued_at),
            "expires_at": _iso(m.expires_at),
            "pinned": m.rollout.pinned,
            "percent": m.rollout.percent,
            "artifacts": {p: a.to_json() for p, a in sorted(m.artifacts.items())},
            "published_at": self.published_at.isoformat(),
            "published_by": self.published_by,
        }


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def _published(row: UpdateManifestRow) -> Published:
    return Published(
        row.serial,
        row.digest,
        row.document.encode(),
        _parse_unchecked(row),
        row.published_at,
        row.published_by,
    )


def _parse_unchecked(row: UpdateManifestRow) -> um.Manifest:
    """A stored manifest's content, signature not re-checked (it was, on publish)."""
    import json

    doc = json.loads(row.document)
    obj = json.loads(b64d(doc["manifest"]))
    return um.Manifest(
        kid=obj["kid"],
        serial=obj["serial"],
        issued_at=obj["issued_at"],
        expires_at=obj["expires_at"],
        rollout=um.Rollout(**obj["rollout"]),
        artifacts={p: um.Artifact(**a) for p, a in obj["artifacts"].items()},
    )


def current(db: Database) -> Published | None:
    """The manifest agents get: the highest serial published."""
    with db.session() as session:
        row = session.execute(
            select(UpdateManifestRow).order_by(UpdateManifestRow.serial.desc()).limit(1)
        ).scalar_one_or_none()
        return None if row is None else _published(row)


def current_document(db: Database) -> bytes | None:
    """The served bytes of the current manifest (the hot path: one indexed read)."""
    with db.read_session() as session:
        doc = session.execute(
            select(UpdateManifestRow.document).order_by(UpdateManifestRow.serial.desc()).limit(1)
        ).scalar_one_or_none()
    return None if doc is None else doc.encode()


def history(db: Database, limit: int = 20) -> list[Published]:
    """The last ``limit`` published manifests, newest first."""
    with db.session() as session:
        rows = session.execute(
            select(UpdateManifestRow).order_by(UpdateManifestRow.serial.desc()).limit(limit)
        ).scalars()
        return [_published(r) for r in rows]


def publish(
    db: Database,
    document: bytes,
    *,
    actor: str,
    change: str = "publish",
    now: float | None = None,
) -> Published:
    """Verify a signed manifest under the trusted key and make it the current one.

    Refused (``UpdateError``, audited ``rejected``, nothing stored): no trusted
    key; a document that does not verify (its protocol code); an expired one;
    a serial not above the current one (``update_replayed``: agents would refuse
    it anyway, and publishing it would hide the newer manifest from nobody).
    """
    now = time.time() if now is None else now
    try:
        return _publish(db, document, actor=actor, change=change, now=now)
    except UpdateError as exc:
        audit.record_separately(
            db, "update.publish", "rejected", code=exc.code, actor=actor, details={"change": change}
        )
        raise


def _publish(db: Database, document: bytes, *, actor: str, change: str, now: float) -> Published:
    key = trusted_key(db)
    if key is None:
        raise UpdateError(
            "no_update_key",
            "the service trusts no update key yet",
            "Run: devicetrust updates trust-key PUBLIC_KEY (printed by updates keygen)",
        )
    try:
        signed = um.parse_manifest(document, key)
        um.check_fresh(signed, now=now)
    except ProtocolError as exc:
        hint = {
            "bad_update_signature": "Sign it with the key the service trusts "
            "(devicetrust updates show --json names its kid).",
            "update_expired": "Sign it again with a later --expires.",
        }.get(exc.code, "")
        raise UpdateError(exc.code, f"manifest refused: {exc.detail}", hint) from None
    m = signed.manifest
    with db.session() as session:
        top = session.execute(
            select(UpdateManifestRow.serial).order_by(UpdateManifestRow.serial.desc()).limit(1)
        ).scalar_one_or_none()
        if top is not None and m.serial <= top:
            raise UpdateError(
                "update_replayed",
                f"serial {m.serial} is not above the current serial {top}",
                "Sign a new manifest (the default serial is the signing time).",
            )
        row = UpdateManifestRow(
            serial=m.serial,
            kid=m.kid,
            digest=signed.digest,
            document=signed.document().decode(),
            issued_at=dt.datetime.fromtimestamp(m.issued_at, dt.UTC),
            expires_at=dt.datetime.fromtimestamp(m.expires_at, dt.UTC),
            pinned=m.rollout.pinned,
            percent=m.rollout.percent,
            versions={p: a.version for p, a in sorted(m.artifacts.items())},
            published_at=dt.datetime.now(dt.UTC),
            published_by=actor,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:  # another publish took this serial first
            raise UpdateError(
                "update_replayed",
                f"serial {m.serial} was just published by someone else",
                "Run: devicetrust updates show, then sign a new manifest.",
            ) from None
        audit.record(
            session,
            "update.publish",
            "ok",
            actor=actor,
            details={
                "change": change,
                "serial": m.serial,
                "digest": signed.digest,
                "versions": row.versions,
                "pinned": m.rollout.pinned,
                "percent": m.rollout.percent,
                "expires_at": _iso(m.expires_at),
            },
        )
        session.flush()
        return _published(row)


def new_serial(db: Database | None, now: float) -> int:
    """The next serial: the signing time in seconds, or one above the current if higher."""
    top = None
    if db is not None:
        published = current(db)
        top = published.serial if published else None
    return max(int(now), (top or 0) + 1)


def build_manifest(
    key: SigningKey,
    artifacts: dict[str, um.Artifact],
    *,
    serial: int,
    pinned: bool = False,
    percent: int = 100,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    now: float | None = None,
) -> um.SignedManifest:
    """Sign a manifest for ``artifacts`` with the update key (raises ``UpdateError``)."""
    issued = int(time.time() if now is None else now)
    manifest = um.Manifest(
        kid=key_id(key.verify_key),
        serial=serial,
        issued_at=issued,
        expires_at=issued + int(lifetime.total_seconds()),
        rollout=um.Rollout(pinned=pinned, percent=percent),
        artifacts=artifacts,
    )
    try:
        return um.sign_manifest(manifest, key)
    except ProtocolError as exc:
        raise UpdateError(exc.code, f"cannot sign this manifest: {exc.detail}") from None


def derive(
    db: Database,
    key: SigningKey,
    *,
    version: str | None = None,
    pinned: bool | None = None,
    percent: int | None = None,
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
    now: float | None = None,
) -> um.SignedManifest:
    """A new signed manifest from a published one, with a changed pin or stage.

    With ``version``, start from the newest published manifest whose artifacts
    are all that version (to pin the fleet back to it); else from the current
    one. The serial moves on; the rollout keeps what is not changed.
    """
    now = time.time() if now is None else now
    published = history(db, limit=1000)
    if not published:
        raise UpdateError(
            "no_update_manifest",
            "nothing is published yet",
            "Sign one: devicetrust updates sign ..., then: devicetrust updates publish FILE",
        )
    base = published[0]
    if version is not None:
        found = [
            p for p in published if {a.version for a in p.manifest.artifacts.values()} == {version}
        ]
        if not found:
            known = sorted({a.version for p in published for a in p.manifest.artifacts.values()})
            raise UpdateError(
                "unknown_version",
                f"no published manifest offers version {version}",
                "Published versions: " + (", ".join(known) or "none"),
            )
        base = found[0]
    rollout = base.manifest.rollout if base is published[0] else um.Rollout(False, 100)
    return build_manifest(
        key,
        dict(base.manifest.artifacts),
        serial=new_serial(db, now),
        pinned=rollout.pinned if pinned is None else pinned,
        percent=rollout.percent if percent is None else percent,
        lifetime=lifetime,
        now=now,
    )


# -- artifacts -------------------------------------------------------------------------------


def file_digest(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of a file."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def artifact_dir(data_dir: Path) -> Path:
    """Where the service keeps artifacts it serves itself."""
    return data_dir / ARTIFACT_DIR


def add_artifact(db: Database, data_dir: Path, source: Path, *, actor: str) -> dict[str, Any]:
    """Copy ``source`` into the artifact directory (atomically) and audit it."""
    name = source.name
    if not ARTIFACT_NAME.fullmatch(name):
        raise UpdateError(
            "invalid_artifact_name",
            f"artifact file names are letters, digits and ._+- (got {name[:60]!r})",
            "Rename the file.",
        )
    if not source.is_file():
        raise UpdateError("artifact_not_found", f"{source} is not a file")
    target_dir = artifact_dir(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target_dir / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sha256, size = file_digest(target_dir / name)
    info = {"name": name, "sha256": sha256, "size": size}
    audit.record_separately(db, "update.artifact_add", "ok", actor=actor, details=info)
    return info


def artifact_path(data_dir: Path, name: str) -> Path | None:
    """The served file called ``name``, or None (bad name, or no such file)."""
    if not ARTIFACT_NAME.fullmatch(name):
        return None
    path = artifact_dir(data_dir) / name
    return path if path.is_file() else None
