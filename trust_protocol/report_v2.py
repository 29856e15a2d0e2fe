"""Report ceremony, version 2: one signed, boxed request per report, and only what changed.

A v2 report needs no challenge. Its freshness comes from a per-device
**counter** that strictly increases (the service accepts only a counter above
the last one it accepted) and from the agent's clock (within the skew bound).
The report carries the digest of the device's whole fact document and then
either nothing more (*unchanged*), the sections that changed since the last
document the service acknowledged (*delta*, each with its digest) or the whole
document (*full*). The service answers with an acknowledgement signed by its
key. ``docs/protocol.md`` §16 specifies every message; this module is the one
implementation of their bytes, shared by the agent and the service.

Wire form of a report (UTF-8 JSON)::

    {"v": 2, "epk": <ephemeral X25519 public key>, "box": <nonce || crypto_box ciphertext>}

sealed to the service's *report box key* (:mod:`trust_protocol.report_keys`),
whose plaintext is ``signature (64 bytes) || body`` with
``signature = Ed25519(device key, REPORT_CONTEXT || body)``.

Digests (hex SHA-256) are defined on the canonical JSON of §2.2
(:func:`trust_protocol.encoding.dumps`)::

    section_digest(name, value) =
        SHA-256("devicetrust/v2/section\\x00" || name || "\\x00" || json(value))
    document_digest(doc) =
        SHA-256("devicetrust/v2/document\\x00" ||
                for each name in sorted order: name || "\\x00" || raw section digest)

so that a delta is checked by hashing only the sections it carries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.encoding import b64d, b64e, require
from trust_protocol.errors import ProtocolError
from trust_protocol.strict_json import printable_id

VERSION = 2
REPORT_CONTEXT = b"devicetrust/v2/report\x00"
ACK_CONTEXT = b"devicetrust/v2/report-ack\x00"
REPORT_KEY_CONTEXT = b"devicetrust/v2/report-key\x00"
SECTION_PREFIX = b"devicetrust/v2/section\x00"
DOCUMENT_PREFIX = b"devicetrust/v2/document\x00"
NONCE_SIZE = Box.NONCE_SIZE
MAX_SMALL = 64 * 1024  # an unchanged report or a delta (envelope bytes)
MAX_FULL = 1024 * 1024  # a report carrying the whole document
MAX_COUNTER = 2**53 - 1
MAX_SECTIONS = 256
MAX_NAME = 64
MAX_FIELD = 256
MAX_ACK = 64 * 1024
# Fields of a fact document that change in every report by nature. They are not part
# of the document a v2 report digests; a report may carry them in ``volatile``.
VOLATILE = frozenset({"collected_at", "uptime_seconds"})
BODY_FIELDS = frozenset(
    {
        "v",
        "device_id",
        "counter",
        "clock",
        "agent_version",
        "platform",
        "digest",
        "base",
        "document",
        "changes",
        "removed",
        "volatile",
    }
)
KINDS = ("unchanged", "delta", "full")


# ---- digests ----------------------------------------------------------------------------------


def section_digest(name: str, value: Any) -> str:
    """The hex SHA-256 digest of one top-level section of a fact document."""
    data = SECTION_PREFIX + name.encode() + b"\x00" + encoding.dumps(value)
    return hashlib.sha256(data).hexdigest()


def digest_of_sections(digests: Mapping[str, str]) -> str:
    """The document digest from its sections' digests (``name -> hex``)."""
    h = hashlib.sha256(DOCUMENT_PREFIX)
    for name in sorted(digests):
        h.update(name.encode() + b"\x00" + bytes.fromhex(digests[name]))
    return h.hexdigest()


def section_digests(document: Mapping[str, Any]) -> dict[str, str]:
    """Every section's digest."""
    return {name: section_digest(name, value) for name, value in document.items()}


def document_digest(document: Mapping[str, Any]) -> str:
    """The digest of a whole fact document (without its volatile fields)."""
    return digest_of_sections(section_digests(document))


def split_volatile(facts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A collected fact document as (the digested document, its volatile fields)."""
    document = {k: v for k, v in facts.items() if k not in VOLATILE}
    volatile = {k: facts[k] for k in VOLATILE if k in facts}
    return document, volatile


# ---- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportBody:
    """What the agent asserts in one report, before it is signed and boxed."""

    device_id: str
    counter: int
    clock: float
    agent_version: str
    platform: dict[str, str]
    digest: str
    base: str | None = None  # delta: the digest of the acknowledged document it changes
    document: dict[str, Any] | None = None  # full
    changes: dict[str, dict[str, Any]] | None = None  # delta: name -> {"digest", "value"}
    removed: list[str] | None = None  # delta: sections no longer present
    volatile: dict[str, Any] = field(default_factory=dict)

    # The property delegates to an undecorated method: mutmut does not mutate decorated
    # functions (docs/testing.md, "Mutation testing").
    @property
    def kind(self) -> str:
        """``unchanged``, ``delta`` or ``full``."""
        return self._kind()

    def _kind(self) -> str:
        if self.document is not None:
            return "full"
        if self.base is not None:
            return "delta"
        return "unchanged"

    def to_json(self) -> dict[str, Any]:
        """The body object as it is serialised and signed."""
        body: dict[str, Any] = {
            "v": VERSION,
            "device_id": self.device_id,
            "counter": self.counter,
            "clock": self.clock,
            "agent_version": self.agent_version,
            "platform": self.platform,
            "digest": self.digest,
        }
        if self.document is not None:
            body["document"] = self.document
        if self.base is not None:
            body["base"] = self.base
            body["changes"] = self.changes or {}
            body["removed"] = self.removed or []
        if self.volatile:
            body["volatile"] = self.volatile
        return body


def make_report(
    *,
    device_id: str,
    counter: int,
    clock: float,
    agent_version: str,
    platform: dict[str, str],
    document: Mapping[str, Any],
    volatile: Mapping[str, Any] | None = None,
    acked: Mapping[str, Any] | None = None,
    acked_digest: str | None = None,
    full: bool = False,
) -> ReportBody:
    """The smallest report that brings the service from ``acked`` to ``document``.

    ``acked`` is the last document the service acknowledged (with ``acked_digest``,
    the digest it said it holds); without it, or with ``full``, the whole document
    is sent. Equal digests give an unchanged report.
    """
    digests = section_digests(document)
    digest = digest_of_sections(digests)
    common: dict[str, Any] = {
        "device_id": device_id,
        "counter": counter,
        "clock": clock,
        "agent_version": agent_version,
        "platform": platform,
        "digest": digest,
        "volatile": dict(volatile or {}),
    }
    if full or acked is None or acked_digest is None:
        return ReportBody(**common, document=dict(document))
    if acked_digest == digest:
        return ReportBody(**common)
    before = section_digests(acked)
    changes = {
        name: {"digest": d, "value": document[name]}
        for name, d in digests.items()
        if before.get(name) != d
    }
    removed = sorted(name for name in before if name not in document)
    return ReportBody(**common, base=acked_digest, changes=changes, removed=removed)


def seal_report(
    body: ReportBody,
    signing_key: SigningKey,
    report_box_key: bytes,
    *,
    ephemeral_key: PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``body`` with the device key and box it to the service's report box key.

    ``ephemeral_key`` and ``nonce`` are for test vectors only.
    """
    body_bytes = encoding.dumps(body.to_json())
    signature = signing_key.sign(REPORT_CONTEXT + body_bytes).signature
    eph = ephemeral_key or PrivateKey.generate()
    sealed = Box(eph, PublicKey(report_box_key)).encrypt(signature + body_bytes, nonce)
    return encoding.dumps({"v": VERSION, "epk": b64e(bytes(eph.public_key)), "box": b64e(sealed)})


@dataclass(frozen=True)
class OpenedReport:
    """A report whose box opened and whose body parsed; the signature is not yet checked."""

    body: ReportBody
    body_bytes: bytes
    signature: bytes


def _hex_digest(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef") != "":
        raise ProtocolError("malformed", f"{name} must be 64 lower-case hex digits")
    return value


def _section_name(name: object) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in VOLATILE:
        raise ProtocolError("malformed", "a section name is 1 to 64 characters, not volatile")
    printable_id(name, max_length=MAX_NAME)
    return name


def _string_map(obj: object, name: str) -> dict[str, str]:
    if not isinstance(obj, dict) or len(obj) > 32:
        raise ProtocolError("malformed", f"{name} must be an object of strings")
    for k, v in obj.items():
        if not isinstance(v, str) or len(k) > MAX_FIELD or len(v) > MAX_FIELD:
            raise ProtocolError("malformed", f"{name} must be an object of short strings")
    return obj


def open_report(
    envelope: bytes | str, *, report_box_secret: bytes, max_size: int = MAX_FULL
) -> OpenedReport:
    """Open a report's box and parse its body strictly (no signature, counter or time check).

    Checks, in this order: size, JSON shape and version of the envelope; the box
    opens; the body parses, its version is 2, and every field has its type.
    """
    env = encoding.loads(envelope, max_size=max_size)
    if not isinstance(env, dict) or set(env) != {"v", "epk", "box"}:
        raise ProtocolError("malformed", 'a report is {"v": 2, "epk": ..., "box": ...}')
    version = require(env, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"report version {version}")
    epk = b64d(require(env, "epk", str), length=32, field="epk")
    sealed = b64d(require(env, "box", str), field="box")
    if len(sealed) < NONCE_SIZE + 16 + 64:
        raise ProtocolError("malformed", "box is too short")
    try:
        shared = nacl.bindings.crypto_box_beforenm(epk, report_box_secret)
        plaintext = nacl.bindings.crypto_box_open_afternm(
            sealed[NONCE_SIZE:], sealed[:NONCE_SIZE], shared
        )
    except CryptoError as exc:
        raise ProtocolError("box_open_failed") from exc
    signature, body_bytes = plaintext[:64], plaintext[64:]
    obj = encoding.loads(body_bytes, max_size=max_size)
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "body must be an object")
    body_version = require(obj, "v", int)
    if body_version != VERSION:
        raise ProtocolError("unsupported_version", f"body version {body_version}")
    return OpenedReport(parse_body(obj), body_bytes, signature)


def parse_body(obj: dict[str, Any]) -> ReportBody:
    """Check a parsed body's fields and kind (``malformed`` otherwise)."""
    if not set(obj) <= BODY_FIELDS:
        raise ProtocolError("malformed", f"unknown body fields {sorted(set(obj) - BODY_FIELDS)}")
    device_id = require(obj, "device_id", str)
    if not 0 < len(device_id) <= 64:
        raise ProtocolError("malformed", "device id must be 1 to 64 characters")
    printable_id(device_id)
    counter = require(obj, "counter", int)
    if not 0 < counter <= MAX_COUNTER:
        raise ProtocolError("malformed", "counter must be 1 to 2^53 - 1")
    clock = require(obj, "clock", (int, float))  # kept as sent: the body is signed as is
    try:
        finite = math.isfinite(float(clock))
    except OverflowError as exc:
        raise ProtocolError("malformed", "clock is out of range") from exc
    if not finite:
        raise ProtocolError("malformed", "clock is out of range")
    agent_version = require(obj, "agent_version", str)
    if len(agent_version) > MAX_FIELD:
        raise ProtocolError("malformed", "agent version is too long")
    platform = _string_map(require(obj, "platform", dict), "platform")
    digest = _hex_digest(obj.get("digest"), "digest")
    volatile = obj.get("volatile", {})
    if not isinstance(volatile, dict) or not set(volatile) <= VOLATILE:
        raise ProtocolError("malformed", "volatile holds only collected_at and uptime_seconds")
    has_delta = any(k in obj for k in ("base", "changes", "removed"))
    document = None
    base = changes = removed = None
    if "document" in obj:
        if has_delta:
            raise ProtocolError("malformed", "a report is full or a delta, not both")
        document = require(obj, "document", dict)
        if len(document) > MAX_SECTIONS:
            raise ProtocolError("malformed", "at most 256 sections")
        for name in document:
            _section_name(name)
    elif has_delta:
        base = _hex_digest(obj.get("base"), "base")
        changes = require(obj, "changes", dict)
        removed = require(obj, "removed", list)
        if len(changes) + len(removed) > MAX_SECTIONS:
            raise ProtocolError("malformed", "at most 256 sections")
        for name, change in changes.items():
            _section_name(name)
            if not isinstance(change, dict) or set(change) != {"digest", "value"}:
                raise ProtocolError("malformed", 'a change is {"digest": ..., "value": ...}')
            _hex_digest(change["digest"], "a change's digest")
        for name in removed:
            _section_name(name)
            if name in changes:
                raise ProtocolError("malformed", "a section is changed or removed, not both")
        if len(set(removed)) != len(removed):
            raise ProtocolError("malformed", "a section is removed once")
    return ReportBody(
        device_id=device_id,
        counter=counter,
        clock=clock,
        agent_version=agent_version,
        platform=platform,
        digest=digest,
        base=base,
        document=document,
        changes=changes,
        removed=removed,
        volatile=volatile,
    )


def verify_report(opened: OpenedReport, sign_key: bytes) -> None:
    """The device signature under the registered key, or ``device_key_mismatch``."""
    try:
        VerifyKey(sign_key).verify(REPORT_CONTEXT + opened.body_bytes, opened.signature)
    except (BadSignatureError, ValueError) as exc:
        raise ProtocolError("device_key_mismatch") from exc


def check_clock(body: ReportBody, *, now: float, max_skew: float) -> float:
    """The agent clock's skew (``clock - now``), or ``clock_skew`` beyond the bound."""
    skew = body.clock - now
    if abs(skew) > max_skew:
        raise ProtocolError("clock_skew", f"agent clock is off by {skew:+.0f} s")
    return skew


def full_document(body: ReportBody) -> dict[str, Any]:
    """A full report's document, checked against its digest (``malformed`` if it differs)."""
    if body.document is None:  # pragma: no cover - callers check the kind
        raise ProtocolError("malformed", "not a full report")
    if document_digest(body.document) != body.digest:
        raise ProtocolError("malformed", "the document's digest is not the one claimed")
    return body.document


def apply_delta(acked: Mapping[str, Any], held: str | None, body: ReportBody) -> dict[str, Any]:
    """Merge a delta into the acknowledged document; the result or ``report_resync``.

    ``held`` is the digest of ``acked`` the service holds. The delta must be based
    on it, each change must carry its own value's digest (``malformed``), and the
    merged document's digest must be the one the report claims; otherwise the
    agent is asked for its whole document. ``acked`` is never modified.
    """
    if body.base is None or body.changes is None or body.removed is None:  # pragma: no cover
        raise ProtocolError("malformed", "not a delta")
    if held is None or held != body.base:
        raise ProtocolError("report_resync", "the service does not hold the delta's base")
    merged = dict(acked)
    for name, change in body.changes.items():
        if section_digest(name, change["value"]) != change["digest"]:
            raise ProtocolError("malformed", f"section {name!r} does not match its digest")
        merged[name] = change["value"]
    for name in body.removed:
        merged.pop(name, None)
    if len(merged) > MAX_SECTIONS or document_digest(merged) != body.digest:
        raise ProtocolError("report_resync", "the merged document is not the agent's")
    return merged


# ---- the acknowledgement ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    """The service's signed answer to an accepted report (or to a counter reset)."""

    device_id: str
    counter: int
    digest: str | None  # the document digest the service now holds
    next_report_in: int
    osquery_queries: dict[str, str]
    time: int
    challenge: str | None = None  # a reset's challenge id (base64url)

    def to_json(self) -> dict[str, Any]:
        """The signed payload object."""
        payload: dict[str, Any] = {
            "v": VERSION,
            "device_id": self.device_id,
            "counter": self.counter,
            "digest": self.digest,
            "next_report_in": self.next_report_in,
            "osquery_queries": self.osquery_queries,
            "time": self.time,
        }
        if self.challenge is not None:
            payload["challenge"] = self.challenge
        return payload


def sign_ack(ack: Ack, signing_key: SigningKey) -> dict[str, str]:
    """The JSON answer carrying ``ack``: ``{"status", "ack", "signature"}``."""
    payload = encoding.dumps(ack.to_json())
    signature = signing_key.sign(ACK_CONTEXT + payload).signature
    return {"status": "accepted", "ack": b64e(payload), "signature": b64e(signature)}


def open_ack(answer: object, verify_key: VerifyKey) -> Ack:
    """Verify an acknowledgement under the pinned server key (``bad_ack_signature``)."""
    if not isinstance(answer, dict):
        raise ProtocolError("malformed", "an acknowledgement is an object")
    payload = b64d(require(answer, "ack", str), field="ack")
    signature = b64d(require(answer, "signature", str), length=64, field="signature")
    try:
        verify_key.verify(ACK_CONTEXT + payload, signature)
    except (BadSignatureError, ValueError) as exc:
        raise ProtocolError("bad_ack_signature") from exc
    obj = encoding.loads(payload, max_size=MAX_ACK)
    if not isinstance(obj, dict) or require(obj, "v", int) != VERSION:
        raise ProtocolError("malformed", "acknowledgement version")
    digest = obj.get("digest")
    if digest is not None:
        _hex_digest(digest, "digest")
    queries = require(obj, "osquery_queries", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in queries.items()):
        raise ProtocolError("malformed", "osquery_queries maps names to SQL")
    challenge = obj.get("challenge")
    if challenge is not None and not isinstance(challenge, str):
        raise ProtocolError("malformed", "challenge is a string")
    return Ack(
        device_id=require(obj, "device_id", str),
        counter=require(obj, "counter", int),
        digest=digest,
        next_report_in=require(obj, "next_report_in", int),
        osquery_queries=queries,
        time=require(obj, "time", int),
        challenge=challenge,
    )


# ---- the advertised report box key ------------------------------------------------------------


def sign_report_key(public: bytes, signing_key: SigningKey) -> dict[str, Any]:
    """The ``report`` member of ``GET /agent/v1/server``: the box key, signed."""
    signature = signing_key.sign(REPORT_KEY_CONTEXT + public).signature
    return {"v": VERSION, "box_key": b64e(public), "signature": b64e(signature)}


def open_report_key(advert: object, verify_key: VerifyKey) -> bytes:
    """The report box key from a service's advertisement, checked under the pinned key."""
    if not isinstance(advert, dict) or advert.get("v") != VERSION:
        raise ProtocolError("unsupported_version", "the service does not advertise report v2")
    public = b64d(require(advert, "box_key", str), length=32, field="box_key")
    signature = b64d(require(advert, "signature", str), length=64, field="signature")
    try:
        verify_key.verify(REPORT_KEY_CONTEXT + public, signature)
    except (BadSignatureError, ValueError) as exc:
        raise ProtocolError("bad_ack_signature", "the report key is not signed") from exc
    return public
