"""The devicetrust wire format, shared by the agent and the service.

Everything that touches raw key material or message bytes lives here, so the
dangerous primitives stay in one small, reviewable place:

* :mod:`trust_protocol.encoding` - base64url and strict JSON parsing.
* :mod:`trust_protocol.errors` - the stable rejection codes.
* :mod:`trust_protocol.challenge` - the server-signed challenge.
* :mod:`trust_protocol.response` - the agent's boxed, signed response.
* :mod:`trust_protocol.server_keys` - the server's signing key and the HKDF
  derivation of per-challenge box keys (server side only).
* :mod:`trust_protocol.device_keys` - the device's long-term key pairs.
* :mod:`trust_protocol.notice` - server-signed notices sealed to one device
  (the approve ceremony's verification codes).
* :mod:`trust_protocol.poll` - the device-signed poll that fetches them.

The format is specified in ``docs/protocol.md``; ``tests/vectors/`` holds test
vectors that any implementation can check itself against.
"""

from trust_protocol.challenge import Challenge, SignedChallenge, parse_challenge, sign_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.errors import ProtocolError
from trust_protocol.response import (
    RegisteredDevice,
    ResponseBody,
    VerifiedResponse,
    check_binding,
    check_registration,
    open_response,
    seal_response,
)

PROTOCOL_VERSION = 1
PURPOSES = ("register", "authenticate", "report")

__all__ = [
    "PROTOCOL_VERSION",
    "PURPOSES",
    "Challenge",
    "DeviceKeys",
    "ProtocolError",
    "RegisteredDevice",
    "check_binding",
    "check_registration",
    "ResponseBody",
    "SignedChallenge",
    "VerifiedResponse",
    "open_response",
    "parse_challenge",
    "seal_response",
    "sign_challenge",
]
