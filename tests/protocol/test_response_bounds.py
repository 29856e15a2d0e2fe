"""Response checks the unit tests left one-sided (found by a mutation run, 2026-12-06).

The run over ``trust_protocol/response.py`` showed limits tried only from outside (a
device id of one character, a platform key of exactly 256), a key length that only a
later check stood in for (a signing key of the wrong length reached the signature check
and was refused under another code), a body inside a good box that is not an object,
and the agent clock's finiteness check, which the strict JSON reader shields from the
wire and so is tried here where it lives.
"""

from __future__ import annotations

import pytest

from tests.protocol.test_protocol_unit import DEVICE, body_json, code_of, envelope_for, verify
from trust_protocol.encoding import b64e
from trust_protocol.errors import ProtocolError
from trust_protocol.response import _seconds


def test_a_device_id_of_one_character():
    body = body_json(device={**DEVICE.public_json(), "id": "d"})
    assert verify(envelope_for(body)).device_id == "d"


def test_a_platform_key_of_exactly_256_characters():
    body = body_json(platform={"k" * 256: "s"})
    assert verify(envelope_for(body)).platform == {"k" * 256: "s"}


@pytest.mark.parametrize("size", [31, 33])
def test_a_signing_key_of_the_wrong_length_is_malformed(size):
    # Refused as malformed where the key is read, not later as a bad signature.
    body = body_json(device={**DEVICE.public_json(), "sign_key": b64e(b"\x01" * size)})
    assert code_of(verify, envelope_for(body)) == "malformed"


@pytest.mark.parametrize("raw", [b"[1]", b'"body"', b"5"])
def test_a_body_that_is_not_an_object_is_malformed(raw):
    assert code_of(verify, envelope_for(raw)) == "malformed"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**400])
def test_the_agent_clock_must_be_a_finite_double(value):
    with pytest.raises(ProtocolError) as err:
        _seconds(value)
    assert err.value.code == "malformed"


def test_the_agent_clock_keeps_its_value():
    assert _seconds(5) == 5.0 and _seconds(1.25) == 1.25
