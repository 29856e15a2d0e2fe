"""Signed update manifests: which agent build each platform should run, and for whom.

An update manifest names, per platform, one agent build (version, artifact URL,
SHA-256 and size) and a rollout (a share of the fleet, and whether the version is
pinned). It is signed with the **update key**, an Ed25519 key kept apart from the
service's challenge key and ideally offline: the service only stores and serves
the signed document, it never holds the private half. The agent pins the update
key's public half from its configuration (or from enrollment) and installs
nothing this key did not sign.

Construction (``docs/protocol.md`` §15)::

    payload   = canonical JSON of the manifest fields
    signature = Ed25519(update_key, UPDATE_CONTEXT || payload)
    document  = {"manifest": base64url(payload), "signature": base64url(signature)}

An agent, in this order: :func:`parse_manifest` (size, strict JSON, the signature
over the exact payload bytes, fields and bounds, canonical form, the key id),
:func:`check_fresh` (expiry, and the serial never going back), :func:`decide`
(its platform's entry, the rollout stage of its device id, no downgrade unless
pinned), and after the download :func:`check_artifact` (size and SHA-256).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.challenge import key_id
from trust_protocol.encoding import b64d, b64e, require
from trust_protocol.errors import ProtocolError

VERSION = 1
UPDATE_CONTEXT = b"devicetrust/v1/update-manifest\x00"
BUCKET_CONTEXT = b"devicetrust/v1/update-bucket\x00"
MAX_DOCUMENT = 32 * 1024
MAX_PAYLOAD = 16 * 1024
MAX_LIFETIME = 366 * 86400  # seconds from issued_at to expires_at, at most
MAX_TIMESTAMP = 2**53 - 1
MAX_SERIAL = 2**53 - 1
MAX_ARTIFACT_SIZE = 1024**3  # 1 GiB
MAX_PLATFORMS = 16
MAX_URL = 2048
SIG_SIZE = 64
FIELDS = {"v", "kid", "serial", "issued_at", "expires_at", "rollout", "artifacts"}
ROLLOUT_FIELDS = {"pinned", "percent"}
ARTIFACT_FIELDS = {"version", "url", "sha256", "size"}
DOCUMENT_FIELDS = {"manifest", "signature"}

# linux-x86_64-deb, linux-x86_64, macos-arm64, windows-x86_64, ...
PLATFORM = re.compile(r"[a-z0-9]+(?:-[a-z0-9_]+){0,4}")
MAX_PLATFORM = 40
# 1 to 4 dot-separated decimal numbers, no leading zeros: 0.1.0, 2.10, 1.0.0.7
VERSION_TEXT = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:\.(?:0|[1-9][0-9]{0,8})){0,3}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
URL_CHARS = re.compile(r"[\x21-\x7e]+")

# What decide() tells the agent to do.
INSTALL = "install"
NOTHING = "none"
REASONS = ("upgrade", "pinned", "no_artifact", "up_to_date", "downgrade_refused", "not_in_stage")


def _int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_version(text: object) -> tuple[int, ...]:
    """A version as a tuple of 4 numbers (missing parts are 0), or ``ValueError``."""
    if not isinstance(text, str) or not VERSION_TEXT.fullmatch(text):
        raise ValueError(f"not a version (1-4 dot-separated numbers): {str(text)[:40]!r}")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    pa, pb = parse_version(a), parse_version(b)
    return (pa > pb) - (pa < pb)


def valid_url(url: object) -> bool:
    """An absolute http(s) URL of printable ASCII with a host, at most ``MAX_URL`` long."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL or not URL_CHARS.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def bucket(device_id: str) -> int:
    """The device's rollout bucket, 0-99: SHA-256(BUCKET_CONTEXT || id), first 8 bytes, mod 100.

    It depends on the device id only, so a device stays in or out of a stage as
    the percentage grows: a 10 % stage is part of every larger stage.
    """
    digest = hashlib.sha256(BUCKET_CONTEXT + device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class Artifact:
    """One platform's build: its version, where to download it, and what it must hash to."""

    version: str
    url: str
    sha256: str  # lower-case hex
    size: int

    def validate(self, platform: str) -> None:
        """Check the fields, or raise ``malformed``."""
        where = f"artifacts[{platform!r}]"
        try:
            parse_version(self.version)
        except ValueError:
            raise ProtocolError("malformed", f"{where}.version is not a version") from None
        if not valid_url(self.url):
            raise ProtocolError("malformed", f"{where}.url must be an absolute http(s) URL")
        if not isinstance(self.sha256, str) or not SHA256_HEX.fullmatch(self.sha256):
            raise ProtocolError("malformed", f"{where}.sha256 must be 64 lower-case hex digits")
        if not _int(self.size, 1, MAX_ARTIFACT_SIZE):
            raise ProtocolError("malformed", f"{where}.size must be 1 to {MAX_ARTIFACT_SIZE}")

    def to_json(self) -> dict[str, Any]:
        """The signed fields."""
        return {"version": self.version, "url": self.url, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Rollout:
    """Who installs: ``percent`` of the devices (by bucket); ``pinned`` allows a downgrade."""

    pinned: bool = False
    percent: int = 100

    def validate(self) -> None:
        """Check the fields, or raise ``malformed``."""
        if not isinstance(self.pinned, bool):
            raise ProtocolError("malformed", "rollout.pinned must be true or false")
        if not _int(self.percent, 0, 100):
            raise ProtocolError("malformed", "rollout.percent must be an integer 0-100")

    def to_json(self) -> dict[str, Any]:
        """The signed fields."""
        return {"pinned": self.pinned, "percent": self.percent}


@dataclass(frozen=True)
class Manifest:
    """A manifest's content. Build one, then :func:`sign_manifest` it."""

    kid: str
    serial: int
    issued_at: int
    expires_at: int
    artifacts: dict[str, Artifact]
    rollout: Rollout = field(default_factory=Rollout)

    def validate(self) -> None:
        """Check every field against the spec, or raise ``malformed``."""
        if not isinstance(self.kid, str) or not 0 < len(self.kid) <= 64:
            raise ProtocolError("malformed", "kid must be 1-64 characters")
        if not _int(self.serial, 1, MAX_SERIAL):
            raise ProtocolError("malformed", "serial must be a positive integer")
        if not (_int(self.issued_at, 0, MAX_TIMESTAMP) and _int(self.expires_at, 0, MAX_TIMESTAMP)):
            raise ProtocolError("malformed", "issued_at and expires_at must be integer seconds")
        if not 0 < self.expires_at - self.issued_at <= MAX_LIFETIME:
            raise ProtocolError("malformed", "expires_at must be within 366 days after issued_at")
        if not isinstance(self.rollout, Rollout):
            raise ProtocolError("malformed", "rollout must be an object")
        self.rollout.validate()
        if not isinstance(self.artifacts, dict) or not 0 < len(self.artifacts) <= MAX_PLATFORMS:
            raise ProtocolError("malformed", f"artifacts must name 1 to {MAX_PLATFORMS} platforms")
        for platform, artifact in self.artifacts.items():
            if (
                not isinstance(platform, str)
                or len(platform) > MAX_PLATFORM
                or not PLATFORM.fullmatch(platform)
            ):
                raise ProtocolError("malformed", f"bad platform name {str(platform)[:40]!r}")
            if not isinstance(artifact, Artifact):
                raise ProtocolError("malformed", f"artifacts[{platform!r}] must be an object")
            artifact.validate(platform)

    def to_json(self) -> dict[str, Any]:
        """The signed payload's fields."""
        return {
            "v": VERSION,
            "kid": self.kid,
            "serial": self.serial,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "rollout": self.rollout.to_json(),
            "artifacts": {p: a.to_json() for p, a in sorted(self.artifacts.items())},
        }


@dataclass(frozen=True)
class SignedManifest:
    """A verified manifest, with the exact bytes that were signed."""

    manifest: Manifest
    payload: bytes
    signature: bytes

    # The property delegates to an undecorated method: mutmut does not mutate decorated
    # functions (docs/testing.md, "Mutation testing").
    @property
    def digest(self) -> str:
        """Hex SHA-256 of the payload: names this manifest (for replay checks and audit)."""
        return self._digest()

    def _digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def document(self) -> bytes:
        """The document as served: canonical JSON ``{"manifest", "signature"}``."""
        return encoding.dumps({"manifest": b64e(self.payload), "signature": b64e(self.signature)})


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` tells one device: ``install`` an artifact, or ``none`` and why."""

    action: str
    reason: str
    platform: str
    artifact: Artifact | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (the vectors' ``decision``)."""
        out: dict[str, Any] = {"action": self.action, "reason": self.reason}
        if self.artifact is not None:
            out["version"] = self.artifact.version
        return out


def sign_manifest(manifest: Manifest, signing_key: SigningKey) -> SignedManifest:
    """Validate ``manifest``, sign its canonical payload with the update key."""
    manifest.validate()
    if manifest.kid != key_id(signing_key.verify_key):
        raise ProtocolError("malformed", "kid must name the signing key")
    payload = encoding.dumps(manifest.to_json())
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("too_large", "manifest payload is too large")
    signature = signing_key.sign(UPDATE_CONTEXT + payload).signature
    return SignedManifest(manifest, payload, signature)


def _artifact(platform: str, obj: object) -> Artifact:
    if not isinstance(obj, dict) or set(obj) != ARTIFACT_FIELDS:
        raise ProtocolError(
            "malformed", f"artifacts[{platform[:40]!r}] must have exactly {sorted(ARTIFACT_FIELDS)}"
        )
    return Artifact(
        version=require(obj, "version", str),
        url=require(obj, "url", str),
        sha256=require(obj, "sha256", str),
        size=require(obj, "size", int),
    )


def parse_manifest(document: bytes | str, update_key: VerifyKey) -> SignedManifest:
    """Parse and verify a manifest document under the pinned update key.

    In this order: size (``too_large``), strict JSON with exactly ``manifest`` and
    ``signature`` (``malformed``), the signature over the exact payload bytes
    (``bad_update_signature``), strict JSON of the payload with ``v == 1``
    (``unsupported_version``), exactly the specified fields within bounds, in
    canonical form (``malformed``), and ``kid`` naming the pinned key
    (``bad_update_signature``). Raises :class:`ProtocolError` and nothing else.
    """
    doc = encoding.loads(document, max_size=MAX_DOCUMENT)
    if not isinstance(doc, dict) or set(doc) != DOCUMENT_FIELDS:
        raise ProtocolError("malformed", 'a manifest document is {"manifest", "signature"}')
    payload = b64d(doc["manifest"], field="manifest")
    signature = b64d(doc["signature"], length=SIG_SIZE, field="signature")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("too_large", "manifest payload is too large")
    try:
        update_key.verify(UPDATE_CONTEXT + payload, signature)
    except BadSignatureError as exc:
        raise ProtocolError("bad_update_signature") from exc
    obj = encoding.loads(payload, max_size=MAX_PAYLOAD)
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "manifest payload must be an object")
    version = require(obj, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"manifest version {version}")
    if set(obj) != FIELDS:
        raise ProtocolError("malformed", "manifest fields must be exactly " + str(sorted(FIELDS)))
    if encoding.dumps(obj) != payload:
        raise ProtocolError("malformed", "manifest payload is not canonical JSON")
    rollout = require(obj, "rollout", dict)
    if set(rollout) != ROLLOUT_FIELDS:
        raise ProtocolError("malformed", f"rollout must have exactly {sorted(ROLLOUT_FIELDS)}")
    artifacts = require(obj, "artifacts", dict)
    manifest = Manifest(
        kid=require(obj, "kid", str),
        serial=require(obj, "serial", int),
        issued_at=require(obj, "issued_at", int),
        expires_at=require(obj, "expires_at", int),
        rollout=Rollout(
            pinned=require(rollout, "pinned", bool), percent=require(rollout, "percent", int)
        ),
        artifacts={str(p): _artifact(str(p), a) for p, a in artifacts.items()},
    )
    manifest.validate()
    if manifest.kid != key_id(update_key):
        raise ProtocolError("bad_update_signature", "manifest names another update key")
    return SignedManifest(manifest, payload, signature)


def check_fresh(
    signed: SignedManifest,
    *,
    now: float,
    last_serial: int | None = None,
    last_digest: str | None = None,
) -> None:
    """Refuse an expired manifest, or one older than the last this device accepted.

    ``update_expired`` when ``now >= expires_at``. ``update_replayed`` when the
    serial is below ``last_serial``, or equal to it with other content (a serial
    names one manifest). The same manifest again (same serial and digest) passes.
    """
    manifest = signed.manifest
    if now >= manifest.expires_at:
        raise ProtocolError("update_expired")
    if last_serial is not None:
        if manifest.serial < last_serial:
            raise ProtocolError(
                "update_replayed", f"serial {manifest.serial} is below {last_serial}"
            )
        if manifest.serial == last_serial and last_digest is not None:
            if not hmac.compare_digest(signed.digest, last_digest):
                raise ProtocolError(
                    "update_replayed", f"serial {manifest.serial} names another manifest"
                )


def decide(manifest: Manifest, *, platform: str, device_id: str, running: str) -> Decision:
    """What a device on ``platform`` with ``device_id``, running version ``running``, should do.

    In this order: no entry for the platform (``no_artifact``); the entry's
    version is the running one (``up_to_date``); it is lower and the manifest is
    not pinned (``downgrade_refused``); the device's bucket is not below
    ``rollout.percent`` (``not_in_stage``); else ``install`` (reason ``upgrade``,
    or ``pinned`` for a pinned lower version). ``running`` must be a version.
    """
    artifact = manifest.artifacts.get(platform)
    if artifact is None:
        return Decision(NOTHING, "no_artifact", platform)
    order = compare_versions(artifact.version, running)
    if order == 0:
        return Decision(NOTHING, "up_to_date", platform, artifact)
    if order < 0 and not manifest.rollout.pinned:
        return Decision(NOTHING, "downgrade_refused", platform, artifact)
    if bucket(device_id) >= manifest.rollout.percent:
        return Decision(NOTHING, "not_in_stage", platform, artifact)
    return Decision(INSTALL, "upgrade" if order > 0 else "pinned", platform, artifact)


def check_artifact(size: int, sha256_hex: str, artifact: Artifact) -> None:
    """Refuse a download whose size or SHA-256 is not the signed one: ``update_digest_mismatch``."""
    if size != artifact.size:
        raise ProtocolError(
            "update_digest_mismatch", f"artifact is {size} bytes, the manifest says {artifact.size}"
        )
    if not hmac.compare_digest(sha256_hex.lower(), artifact.sha256):
        raise ProtocolError("update_digest_mismatch", "artifact SHA-256 differs from the manifest")


__all__ = [
    "BUCKET_CONTEXT",
    "INSTALL",
    "NOTHING",
    "UPDATE_CONTEXT",
    "Artifact",
    "Decision",
    "Manifest",
    "Rollout",
    "SignedManifest",
    "bucket",
    "check_artifact",
    "check_fresh",
    "compare_versions",
    "decide",
    "parse_manifest",
    "parse_version",
    "sign_manifest",
    "valid_url",
]
