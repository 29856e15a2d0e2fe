"""Check trust_protocol's report v2 against its published vectors (tests/vectors/v2.json).

The independent generator's output must equal the committed file; the reference
implementation must reproduce every key, digest, envelope and acknowledgement byte for
byte, and reach every verdict (the accepted document, or the exact code) in the order
docs/protocol.md §16.4 gives.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol import report_v2
from trust_protocol.encoding import b64d, b64e
from trust_protocol.errors import ProtocolError
from trust_protocol.report_keys import report_box_public, report_box_secret

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
V = json.loads((VECTOR_DIR / "v2.json").read_text(encoding="utf-8"))
KEYS = V["keys"]
SERVER_SIGN = SigningKey(bytes.fromhex(KEYS["server"]["sign_seed"]))
BOX_SECRET = bytes.fromhex(KEYS["server"]["box_secret"])


def test_generator_reproduces_the_committed_file():
    spec = importlib.util.spec_from_file_location("gen_v2", VECTOR_DIR / "generate_report_v2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (VECTOR_DIR / "v2.json").read_text(encoding="utf-8")


def test_constants_keys_and_digests():
    c = V["constants"]
    assert bytes.fromhex(c["report_context"]) == report_v2.REPORT_CONTEXT
    assert bytes.fromhex(c["ack_context"]) == report_v2.ACK_CONTEXT
    assert bytes.fromhex(c["report_key_context"]) == report_v2.REPORT_KEY_CONTEXT
    assert bytes.fromhex(c["section_prefix"]) == report_v2.SECTION_PREFIX
    assert bytes.fromhex(c["document_prefix"]) == report_v2.DOCUMENT_PREFIX
    assert (c["max_small"], c["max_full"]) == (report_v2.MAX_SMALL, report_v2.MAX_FULL)
    assert report_box_secret(BOX_SECRET).hex() == KEYS["server"]["report_box_secret"]
    assert b64e(report_box_public(BOX_SECRET)) == KEYS["server"]["report_box_public"]
    d = V["digests"]
    assert report_v2.section_digests(d["document"]) == d["sections"]
    assert report_v2.document_digest(d["document"]) == d["digest"]
    assert report_v2.document_digest({}) == d["empty"]
    advert = report_v2.sign_report_key(report_box_public(BOX_SECRET), SERVER_SIGN)
    assert advert == V["report_key"]["advertisement"]
    assert (
        b64e(report_v2.open_report_key(advert, SERVER_SIGN.verify_key))
        == (V["report_key"]["expect"]["box_key"])
    )


def judge(vector: dict[str, Any]) -> dict[str, Any]:
    """The service's verdict (idp_service/devices/report_v2.py), in the published order."""
    inputs, held = vector["inputs"], vector["service"]
    full_endpoint = inputs["endpoint"] == "full"
    opened = report_v2.open_report(
        vector["envelope"].encode(),
        report_box_secret=report_box_secret(BOX_SECRET),
        max_size=report_v2.MAX_FULL if full_endpoint else report_v2.MAX_SMALL,
    )
    body = opened.body
    if (body.kind == "full") != full_endpoint:
        raise ProtocolError("malformed", "endpoint")
    report_v2.check_clock(body, now=inputs["now"], max_skew=inputs["max_skew"])
    report_v2.verify_report(opened, b64d(held["registered_sign_key"], length=32))
    if body.counter <= held["last_counter"]:
        raise ProtocolError("report_counter_stale")
    if body.kind == "full":
        document = report_v2.full_document(body)
    elif body.kind == "delta":
        document = report_v2.apply_delta(held["held_document"] or {}, held["held_digest"], body)
    elif held["held_digest"] != body.digest:
        raise ProtocolError("report_resync")
    else:
        document = held["held_document"]
    return {
        "verdict": "accept",
        "kind": body.kind,
        "counter": body.counter,
        "digest": body.digest,
        "document": document,
    }


@pytest.mark.parametrize("vector", V["reports"], ids=[v["name"] for v in V["reports"]])
def test_report_vector(vector):
    expect = vector["expect"]
    if expect["verdict"] == "accept":
        assert judge(vector) == expect
    else:
        with pytest.raises(ProtocolError) as info:
            judge(vector)
        assert info.value.code == expect["code"]


@pytest.mark.parametrize(
    "vector",
    [v for v in V["reports"] if v["expect"]["verdict"] == "accept"],
    ids=lambda v: v["name"],
)
def test_agent_reproduces_accepted_envelopes(vector):
    """The agent side: the body parsed from the construction, signed and sealed with the
    fixed ephemeral key and nonce, gives the envelope byte for byte."""
    body = report_v2.parse_body(json.loads(vector["construction"]["body"]))
    laptop = SigningKey(bytes.fromhex(KEYS["devices"]["laptop"]["sign_seed"]))
    sealed = report_v2.seal_report(
        body,
        laptop,
        b64d(KEYS["server"]["report_box_public"], length=32),
        ephemeral_key=PrivateKey(bytes.fromhex(KEYS["ephemeral"]["secret"])),
        nonce=bytes.fromhex(KEYS["nonce"]),
    )
    assert sealed.decode() == vector["envelope"]


def test_make_report_builds_the_delta_of_the_vectors():
    delta = next(v for v in V["reports"] if v["name"] == "delta/accept")
    sent = json.loads(delta["construction"]["body"])
    built = report_v2.make_report(
        device_id=sent["device_id"],
        counter=sent["counter"],
        clock=sent["clock"],
        agent_version=sent["agent_version"],
        platform=sent["platform"],
        document=delta["expect"]["document"],
        volatile=sent["volatile"],
        acked=delta["service"]["held_document"],
        acked_digest=delta["service"]["held_digest"],
    )
    assert built.to_json() == sent


@pytest.mark.parametrize("vector", V["acks"], ids=[v["name"] for v in V["acks"]])
def test_ack_vector(vector):
    expect = vector["expect"]
    if expect["verdict"] == "reject":
        with pytest.raises(ProtocolError) as info:
            report_v2.open_ack(vector["answer"], SERVER_SIGN.verify_key)
        assert info.value.code == expect["code"]
        return
    ack = report_v2.open_ack(vector["answer"], SERVER_SIGN.verify_key)
    assert ack.to_json() == expect["ack"]
    assert report_v2.sign_ack(ack, SERVER_SIGN) == vector["answer"]
