"""Webhook signatures (Standard Webhooks, https://www.standardwebhooks.com): sign and verify.

The service signs every webhook delivery with the endpoint's secret; receivers
check it with :func:`verify` (or the equivalent few lines in ``docs/events.md``).

* The secret is ``whsec_`` + base64 of 32 random bytes; the HMAC key is those bytes.
* Three headers travel with the JSON body: ``webhook-id`` (the event's id, the
  same on every retry: an idempotency key), ``webhook-timestamp`` (Unix seconds
  of this attempt) and ``webhook-signature``: space-separated ``v1,<base64>``
  entries, each ``HMAC-SHA256(key, id + "." + timestamp + "." + body)``.
* A receiver accepts a delivery when one ``v1`` entry matches (compared in
  constant time) and the timestamp is within a tolerance of its clock
  (five minutes by default), which stops replays of old deliveries.

This module uses the standard library only, so that a receiver can copy it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
DEFAULT_TOLERANCE = 300  # seconds
MAX_SIGNATURES = 10  # entries looked at in one header (a rotation sends two)
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class WebhookVerificationError(ValueError):
    """A delivery that must be refused; ``code`` says why (answer it with a 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for; ValueError if it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return key


def _mac(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for a delivery: ``v1,<base64 HMAC-SHA256>``."""
    if not _ID.fullmatch(msg_id):
        raise ValueError("a webhook id is 1 to 128 letters, digits, '-' or '_'")
    mac = _mac(secret_key(secret), msg_id, str(int(timestamp)), body)
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of a delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def _header(found: Mapping[str, str], name: str) -> str:
    for key, value in found.items():
        if isinstance(key, str) and key.lower() == name:
            if not isinstance(value, str) or not value:
                break
            return value
    raise WebhookVerificationError("missing_header", f"the {name} header is missing")


def verify(
    secret: str,
    received_headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a delivery's signature and timestamp; return its ``webhook-id`` or raise.

    ``body`` must be the raw bytes received (not re-serialised JSON). Raises
    :class:`WebhookVerificationError` with a code: ``missing_header``,
    ``bad_id``, ``bad_timestamp``, ``timestamp_out_of_tolerance`` or
    ``no_matching_signature``.
    """
    key = secret_key(secret)
    msg_id = _header(received_headers, "webhook-id")
    stamp = _header(received_headers, "webhook-timestamp")
    signatures = _header(received_headers, "webhook-signature")
    if not _ID.fullmatch(msg_id):
        raise WebhookVerificationError("bad_id", "webhook-id is not a valid id")
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError("bad_timestamp", "webhook-timestamp is not Unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        raise WebhookVerificationError(
            "timestamp_out_of_tolerance", "webhook-timestamp is too far from now (replayed?)"
        )
    expected = _mac(key, msg_id, stamp, body)
    matched = False
    for entry in signatures.split(" ")[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Every entry is compared; no early exit.
        matched = hmac.compare_digest(candidate, expected) or matched
    if not matched:
        raise WebhookVerificationError("no_matching_signature", "no signature matches")
    return msg_id
