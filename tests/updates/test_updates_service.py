"""The service half of signed self-update, in process, on SQLite and PostgreSQL.

Publishing checks every manifest against the trusted update key and refuses
(audited, nothing stored) what agents would refuse; pins and stages re-sign a
published manifest with a later serial; the signing key file is private; the
agent routes serve the signed bytes exactly, and the artifact route only names
files in its own directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import pytest
from nacl.signing import SigningKey
from sqlalchemy import select

from idp_service.platform.models import AuditEvent
from idp_service.updates import service
from idp_service.updates.service import UpdateError
from idp_service.updates.store import UpdateManifestRow
from trust_protocol import update_manifest as um
from trust_protocol.encoding import b64e

KEY = SigningKey(b"\x11" * 32)
OTHER = SigningKey(b"\x12" * 32)
PLATFORM = "linux-x86_64"


def artifact(version: str, data: bytes = b"build") -> dict[str, um.Artifact]:
    return {
        PLATFORM: um.Artifact(
            version, f"https://updates.example.com/{version}", hashlib.sha256(data).hexdigest(), 5
        )
    }


def signed(version: str, serial: int, key: SigningKey = KEY, **kw) -> bytes:
    return service.build_manifest(key, artifact(version), serial=serial, **kw).document()


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


def audit_rows(db, action: str) -> list[AuditEvent]:
    with db.session() as s:
        return list(
            s.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars().all()
        )


def manifest_count(db) -> int:
    with db.session() as s:
        return len(s.execute(select(UpdateManifestRow)).scalars().all())


def test_publish_needs_a_trusted_key_and_is_audited(db):
    with pytest.raises(UpdateError) as exc:
        service.publish(db, signed("0.2.0", 10), actor="cli")
    assert exc.value.code == "no_update_key"
    assert [(r.outcome, r.code) for r in audit_rows(db, "update.publish")] == [
        ("rejected", "no_update_key")
    ]
    assert manifest_count(db) == 0


def test_publish_checks_key_serial_and_expiry(db, app):
    kid = service.trust_key(db, b64e(bytes(KEY.verify_key)), actor="cli")
    assert audit_rows(db, "update.key_trust")[0].details["kid"] == kid
    published = service.publish(db, signed("0.2.0", 10), actor="cli")
    assert published.serial == 10
    assert service.current_document(db) == signed("0.2.0", 10, now=published.manifest.issued_at)
    refusals = {
        "bad_update_signature": signed("0.2.0", 11, OTHER),
        "update_replayed": signed("0.3.0", 10),
        "update_expired": signed(
            "0.3.0", 12, now=time.time() - 86400, lifetime=dt.timedelta(hours=1)
        ),
    }
    for code, document in refusals.items():
        with pytest.raises(UpdateError) as exc:
            service.publish(db, document, actor="cli")
        assert exc.value.code == code
    with pytest.raises(UpdateError) as exc:
        service.publish(db, signed("0.1.0", 9), actor="cli")
    assert exc.value.code == "update_replayed"
    with pytest.raises(UpdateError) as exc:
        service.publish(db, b'{"manifest":"x"}', actor="cli")
    assert exc.value.code == "malformed"
    assert manifest_count(db) == 1
    outcomes = [(r.outcome, r.code) for r in audit_rows(db, "update.publish")]
    assert outcomes.count(("ok", None)) == 1
    assert {c for o, c in outcomes if o == "rejected"} == set(refusals) | {"malformed"}
    ok = next(r for r in audit_rows(db, "update.publish") if r.outcome == "ok")
    assert ok.details["versions"] == {PLATFORM: "0.2.0"} and ok.details["serial"] == 10

    # The agent route serves those bytes exactly; the key route names the key.
    client = app.test_client()
    resp = client.get("/agent/v1/update-manifest")
    assert resp.status_code == 200 and resp.data == service.current_document(db)
    assert um.parse_manifest(resp.data, KEY.verify_key).manifest.serial == 10
    assert client.get("/agent/v1/update-key").get_json()["update_key"] == b64e(
        bytes(KEY.verify_key)
    )


def test_routes_before_anything_is_published(app):
    client = app.test_client()
    resp = client.get("/agent/v1/update-manifest")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "no_update_manifest"
    resp = client.get("/agent/v1/update-key")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "no_update_key"


def test_pin_and_stage_resign_a_published_manifest(db):
    service.trust_key(db, b64e(bytes(KEY.verify_key)), actor="cli")
    now = time.time()
    service.publish(db, signed("0.1.0", 100, now=now), actor="cli")
    service.publish(db, signed("0.2.0", 200, percent=10, now=now), actor="cli")
    staged = service.derive(db, KEY, percent=50)
    assert staged.manifest.rollout == um.Rollout(pinned=False, percent=50)
    assert staged.manifest.artifacts == artifact("0.2.0")
    assert staged.manifest.serial > 200
    service.publish(db, staged.document(), actor="cli", change="stage")
    pinned = service.derive(db, KEY, version="0.1.0", pinned=True)
    assert pinned.manifest.artifacts == artifact("0.1.0")
    assert pinned.manifest.rollout == um.Rollout(pinned=True, percent=100)
    assert pinned.manifest.serial > staged.manifest.serial
    service.publish(db, pinned.document(), actor="cli", change="pin")
    changes = [r.details["change"] for r in audit_rows(db, "update.publish")]
    assert changes == ["publish", "publish", "stage", "pin"]
    with pytest.raises(UpdateError) as exc:
        service.derive(db, KEY, version="9.9.9", pinned=True)
    assert exc.value.code == "unknown_version"


def test_signing_key_file_is_private(tmp_path):
    path = tmp_path / "keys" / "update.key"
    public = service.generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert service.load_key_file(path).verify_key == public
    with pytest.raises(FileExistsError):
        service.generate_key_file(path)
    path.chmod(0o640)
    with pytest.raises(UpdateError) as exc:
        service.load_key_file(path)
    assert exc.value.code == "key_file_unsafe"
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(UpdateError) as exc:
        service.load_key_file(path)
    assert exc.value.code == "key_file_invalid"


def test_artifacts_are_served_from_their_directory_only(app, db, tmp_path):
    data_dir = app.extensions["devicetrust"].settings.data_dir
    build = tmp_path / "devicetrust-agent-0.2.0"
    build.write_bytes(b"build bytes")
    info = service.add_artifact(db, data_dir, build, actor="cli")
    assert info["sha256"] == hashlib.sha256(b"build bytes").hexdigest()
    assert audit_rows(db, "update.artifact_add")[0].details["name"] == build.name
    (data_dir / "secret.txt").write_text("not served")
    client = app.test_client()
    assert client.get(f"/agent/v1/update-artifacts/{build.name}").data == b"build bytes"
    for name in ("..%2Fsecret.txt", ".hidden", "..", "%2Fetc%2Fpasswd", "secret.txt"):
        resp = client.get(f"/agent/v1/update-artifacts/{name}")
        assert resp.status_code == 404, name
    bad = tmp_path / ".hidden"
    bad.write_bytes(b"x")
    with pytest.raises(UpdateError) as exc:
        service.add_artifact(db, data_dir, bad, actor="cli")
    assert exc.value.code == "invalid_artifact_name"
