"""Check trust_protocol.update_manifest against the update-manifest vectors (§15 of the spec).

The generator (``tests/vectors/generate_update_manifest.py``) is an independent
emitter: the committed file must be exactly its output, every accepted manifest
must parse to exactly the stated fields and decision, every refused one must be
refused with exactly the stated code, and signing the stated fields must give
the vector's bytes (Ed25519 is deterministic).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from trust_protocol import update_manifest as um
from trust_protocol.errors import ProtocolError

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_FILE = VECTOR_DIR / "update_manifest_v1.json"
V = json.loads(VECTOR_FILE.read_text(encoding="utf-8"))
SIGNERS = {name: SigningKey(bytes.fromhex(k["seed"])) for name, k in V["keys"].items()}
KEYS = {name: s.verify_key for name, s in SIGNERS.items()}


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "update_vectors_generate", VECTOR_DIR / "generate_update_manifest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_file():
    assert _load_generator().render() == VECTOR_FILE.read_text(encoding="utf-8")


def test_constants_match():
    c = V["constants"]
    assert bytes.fromhex(c["update_context"]) == um.UPDATE_CONTEXT
    assert bytes.fromhex(c["bucket_context"]) == um.BUCKET_CONTEXT
    assert (c["max_document"], c["max_payload"], c["max_lifetime"]) == (
        um.MAX_DOCUMENT,
        um.MAX_PAYLOAD,
        um.MAX_LIFETIME,
    )


def test_names_are_unique_and_every_update_code_is_covered():
    names = [v["name"] for v in V["manifests"]]
    assert len(names) == len(set(names))
    codes = {v["expect"]["code"] for v in V["manifests"] + V["artifacts"] if "code" in v["expect"]}
    assert {
        "bad_update_signature",
        "update_expired",
        "update_replayed",
        "update_digest_mismatch",
        "malformed",
        "too_large",
        "unsupported_version",
    } <= codes
    reasons = {
        v["expect"]["decision"]["reason"] for v in V["manifests"] if "decision" in v["expect"]
    }
    assert reasons == set(um.REASONS)


def _run(vector):
    signed = um.parse_manifest(vector["document"].encode(), KEYS[vector["key"]])
    last = vector["last"] or {}
    um.check_fresh(
        signed, now=vector["now"], last_serial=last.get("serial"), last_digest=last.get("digest")
    )
    decision = um.decide(
        signed.manifest,
        platform=vector["platform"],
        device_id=vector["device_id"],
        running=vector["running"],
    )
    return signed, decision


@pytest.mark.parametrize("vector", V["manifests"], ids=lambda v: v["name"])
def test_manifest_vector(vector):
    expect = vector["expect"]
    if expect["verdict"] == "accept":
        signed, decision = _run(vector)
        assert signed.manifest.to_json() == expect["manifest"]
        assert signed.digest == expect["digest"]
        assert decision.to_json() == expect["decision"]
    else:
        with pytest.raises(ProtocolError) as exc:
            _run(vector)
        assert exc.value.code == expect["code"]


@pytest.mark.parametrize(
    "vector",
    [v for v in V["manifests"] if v["expect"]["verdict"] == "accept"],
    ids=lambda v: v["name"],
)
def test_signing_reproduces_the_document(vector):
    fields = vector["expect"]["manifest"]
    manifest = um.Manifest(
        kid=fields["kid"],
        serial=fields["serial"],
        issued_at=fields["issued_at"],
        expires_at=fields["expires_at"],
        rollout=um.Rollout(**fields["rollout"]),
        artifacts={p: um.Artifact(**a) for p, a in fields["artifacts"].items()},
    )
    signed = um.sign_manifest(manifest, SIGNERS[vector["key"]])
    assert signed.document().decode() == vector["document"]


def test_buckets():
    for item in V["buckets"]:
        assert um.bucket(item["device_id"]) == item["bucket"]


def test_versions():
    for item in V["versions"]["order"]:
        assert um.compare_versions(item["a"], item["b"]) == item["order"]
    for text in V["versions"]["invalid"]:
        with pytest.raises(ValueError):
            um.parse_version(text)


@pytest.mark.parametrize("vector", V["artifacts"], ids=lambda v: v["name"])
def test_artifact_vector(vector):
    data = bytes.fromhex(vector["bytes"])
    entry = um.Artifact(**vector["entry"])
    digest = hashlib.sha256(data).hexdigest()
    if vector["expect"]["verdict"] == "accept":
        um.check_artifact(len(data), digest, entry)
    else:
        with pytest.raises(ProtocolError) as exc:
            um.check_artifact(len(data), digest, entry)
        assert exc.value.code == vector["expect"]["code"]
