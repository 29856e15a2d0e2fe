"""Check trust_protocol's notices and polls against the v1 test vectors (§14 of the spec).

Every accepted notice must open to exactly the stated fields; every refused one
must be refused with exactly the stated code. Polls likewise. The implementation
must also reproduce the sealed bytes of accepted notices from the fixed
ephemeral key and nonce (the generator is an independent implementation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from trust_protocol import notice as notice_mod
from trust_protocol import poll as poll_mod
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import Notice, open_notice, seal_notice
from trust_protocol.poll import parse_poll, verify_poll
from trust_protocol.server_keys import ServerKeys

V = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "v1.json").read_text(encoding="utf-8")
)
KEYS = V["keys"]
SERVER = ServerKeys.from_seeds(
    bytes.fromhex(KEYS["server"]["sign_seed"]), bytes.fromhex(KEYS["server"]["box_secret"])
)
DEVICES = {
    name: DeviceKeys.from_seeds(
        d["device_id"], bytes.fromhex(d["sign_seed"]), bytes.fromhex(d["box_secret"])
    )
    for name, d in KEYS["devices"].items()
}


def test_constants_match():
    assert bytes.fromhex(V["constants"]["notice_context"]) == notice_mod.NOTICE_CONTEXT
    assert bytes.fromhex(V["constants"]["poll_context"]) == poll_mod.POLL_CONTEXT


@pytest.mark.parametrize("vector", V["notices"], ids=lambda v: v["name"])
def test_notice_vector(vector):
    device = DEVICES[vector["recipient"]]
    sealed = b64d(vector["sealed"])
    expect = vector["expect"]
    if expect["verdict"] == "accept":
        got = open_notice(
            sealed, device.box_key, SERVER.verify_key, vector["device_id"], now=vector["now"]
        )
        assert got.to_json() == expect["notice"]
    else:
        with pytest.raises(ProtocolError) as exc:
            open_notice(
                sealed, device.box_key, SERVER.verify_key, vector["device_id"], now=vector["now"]
            )
        assert exc.value.code == expect["code"]


@pytest.mark.parametrize(
    "vector",
    [v for v in V["notices"] if v["expect"]["verdict"] == "accept"],
    ids=lambda v: v["name"],
)
def test_seal_reproduces_the_vector(vector):
    fields = dict(vector["expect"]["notice"])
    fields.pop("v")
    notice = Notice(**fields)
    sealed = seal_notice(
        notice,
        SERVER.signing_key,
        DEVICES[vector["recipient"]].box_public,
        ephemeral_key=PrivateKey(bytes.fromhex(_seed_hex("notice ephemeral secret"))),
        nonce=bytes.fromhex(_seed_hex("notice nonce"))[:24],
    )
    assert sealed == b64d(vector["sealed"])


def _seed_hex(label: str) -> str:
    import hashlib

    return hashlib.sha256(b"devicetrust/v1 test vectors/" + label.encode()).hexdigest()


@pytest.mark.parametrize("vector", V["polls"], ids=lambda v: v["name"])
def test_poll_vector(vector):
    device = DEVICES[vector["registered"]]
    expect = vector["expect"]

    def check():
        poll = parse_poll(vector["body"].encode())
        verify_poll(poll, device.sign_public, now=vector["now"], window=vector["window"])
        return poll

    if expect["verdict"] == "accept":
        poll = check()
        assert (poll.device_id, poll.time) == (expect["device_id"], expect["time"])
    else:
        with pytest.raises(ProtocolError) as exc:
            check()
        assert exc.value.code == expect["code"]
