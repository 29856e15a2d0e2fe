"""Stable rejection codes of protocol v1.

Each code names one reason a message is refused. The codes are part of the
published protocol (``docs/protocol.md``) and of the test vectors, so they never
change meaning; new reasons get new codes.
"""

from __future__ import annotations

# code -> one-line description, used by docs/protocol.md and the service's error bodies.
CODES: dict[str, str] = {
    "malformed": "The message is not valid protocol JSON or misses a required field.",
    "too_large": "The message exceeds the size cap.",
    "unsupported_version": "The message names a protocol version this side does not speak.",
    "box_open_failed": "The NaCl box does not open: tampered, or sealed to the wrong key.",
    "bad_challenge_signature": "The echoed challenge is not signed by this server.",
    "challenge_mismatch": "The envelope names a different challenge than the one inside.",
    "challenge_expired": "The challenge's expires_at has passed.",
    "challenge_unknown": "The challenge names a signing key this server does not hold.",
    "challenge_replayed": "The challenge was already answered once.",
    "wrong_purpose": "The challenge was issued for another ceremony.",
    "binding_mismatch": "The challenge is bound to another login transaction or device.",
    "bad_device_signature": "The device signature does not verify with the key in the response.",
    "device_unknown": "No device with this id is registered.",
    "device_key_mismatch": "The response is signed by a key that is not the registered one.",
    "device_pending": "The device waits for approval.",
    "device_denied": "An administrator denied this device.",
    "device_revoked": "The device's trust was revoked.",
    "device_suspended": "The device is suspended pending a security review (clone detection).",
    "owner_inactive": "The device's owner is deactivated.",
    "clock_skew": "The agent's clock differs from the server's by more than the allowed bound.",
    "bad_notice_signature": "The notice is not signed by the pinned server key.",
    "notice_wrong_device": "The notice is addressed to another device.",
    "notice_expired": "The notice's expires_at has passed.",
    "bad_poll_signature": "The poll is not signed by the device's registered key.",
    "poll_expired": "The poll's time is outside the allowed window.",
    "bad_update_signature": "The update manifest is not signed by the pinned update key.",
    "update_expired": "The update manifest's expires_at has passed.",
    "update_replayed": "The update manifest is older than one this device already accepted.",
    "update_digest_mismatch": "The downloaded artifact's size or SHA-256 is not the signed one.",
    "report_counter_stale": "The report's counter is not above the last one accepted.",
    "report_resync": "The service does not hold the document the report builds on; send it whole.",
    "bad_ack_signature": "The acknowledgement is not signed by the pinned server key.",
    # Re-authentication grants (trust_protocol/reauth.py, §17).
    "bad_grant_signature": "The re-authentication grant is not signed by the pinned server key.",
    "grant_wrong_device": "The re-authentication grant is addressed to another device.",
    "grant_expired": "The re-authentication grant's expires_at has passed.",
}


class ProtocolError(Exception):
    """A message was refused; ``code`` is one of :data:`CODES`."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        self.code = code
        self.detail = detail or CODES[code]
        super().__init__(f"{code}: {self.detail}")
