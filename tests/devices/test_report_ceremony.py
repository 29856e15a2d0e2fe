"""Report ceremony, service half: facts are stored only from the device they describe,
once per challenge; hostile reports get a 4xx and change nothing but the audit log."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select

from idp_service.platform.models import Base
from idp_service.posture.tables import FACTS_HISTORY, DeviceFacts, DeviceFactsHistory
from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response


def _db(app):
    return app.extensions["devicetrust"].db


def _counts(app):
    with _db(app).session() as s:
        return {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def _enrolled(app, client, name="rep"):
    from idp_service.devices import enroll
    from idp_service.directory import users

    with _db(app).session() as s:
        user = users.find(s, f"{name}@example.com") or users.create(s, f"{name}@example.com")
        code, _ = enroll.create_code(s, user, ttl_seconds=60)
    keys = DeviceKeys.generate(f"dev-{name}-{time.monotonic_ns()}")
    token = client.post("/agent/v1/challenges", json={"purpose": "register"}).json["challenge"]
    challenge = parse_challenge(token, app.extensions["devicetrust"].keys.verify_key)
    body = ResponseBody(token, keys.public_json(), {}, "t", time.time(), {"enrollment_code": code})
    assert (
        client.post("/agent/v1/register", data=seal_response(body, challenge, keys)).status_code
        == 201
    )
    return keys


def _report(app, client, keys, facts, *, for_device=None, signer=None):
    device_id = for_device or keys.device_id
    token = client.post("/agent/v1/report/challenge", json={"device_id": device_id}).json[
        "challenge"
    ]
    challenge = parse_challenge(token, app.extensions["devicetrust"].keys.verify_key)
    signer = signer or keys
    body = ResponseBody(token, signer.public_json(), {}, "t", time.time(), {"facts": facts})
    return seal_response(body, challenge, signer)


def _facts(n=0):
    now = dt.datetime.now(dt.UTC).isoformat()
    return {"schema_version": "1", "collected_at": now, "os": {"family": "linux", "n": n}}


def test_report_is_stored_with_bounded_history(service_ctx):
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client)
    for n in range(FACTS_HISTORY + 5):
        resp = client.post("/agent/v1/report", data=_report(service_ctx, client, keys, _facts(n)))
        assert resp.status_code == 200, resp.json
        assert resp.json["status"] == "accepted" and resp.json["next_report_in"] == 300
    with _db(service_ctx).session() as s:
        latest = s.get(DeviceFacts, keys.device_id)
        history = s.execute(
            select(func.count())
            .select_from(DeviceFactsHistory)
            .where(DeviceFactsHistory.device_id == keys.device_id)
        ).scalar_one()
    assert latest.facts["os"]["n"] == FACTS_HISTORY + 4
    assert latest.report_seq == FACTS_HISTORY + 5
    assert history == FACTS_HISTORY


def test_replayed_report_is_refused(service_ctx):
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client)
    sealed = _report(service_ctx, client, keys, _facts())
    assert client.post("/agent/v1/report", data=sealed).status_code == 200
    before = _counts(service_ctx)
    again = client.post("/agent/v1/report", data=sealed)
    assert again.status_code == 409 and again.json["error"]["code"] == "challenge_replayed"
    after = _counts(service_ctx)
    assert {k for k in before if before[k] != after[k]} <= {"audit_events"}


def test_report_for_another_device_is_refused(service_ctx):
    client = service_ctx.test_client()
    victim = _enrolled(service_ctx, client, "victim")
    attacker = _enrolled(service_ctx, client, "attacker")
    # The attacker fetches a challenge bound to the victim and answers it with its own key.
    sealed = _report(service_ctx, client, victim, _facts(), signer=attacker)
    before = _counts(service_ctx)
    resp = client.post("/agent/v1/report", data=sealed)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "binding_mismatch"
    # Claiming the victim's id with the attacker's key is a key mismatch.
    forged = DeviceKeys(victim.device_id, attacker.signing_key, attacker.box_key)
    sealed = _report(service_ctx, client, victim, _facts(), signer=forged)
    resp = client.post("/agent/v1/report", data=sealed)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "device_key_mismatch"
    assert {k for k, v in _counts(service_ctx).items() if before[k] != v} <= {"audit_events"}


def test_malformed_and_oversized_reports_are_refused(service_ctx):
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client)
    before = _counts(service_ctx)
    not_facts = _report(service_ctx, client, keys, ["not", "an", "object"])
    resp = client.post("/agent/v1/report", data=not_facts)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed"
    huge = client.post("/agent/v1/report", data=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert huge.status_code == 413
    bad_id = client.post("/agent/v1/report/challenge", json={"device_id": "x" * 65})
    assert bad_id.status_code == 400 and bad_id.json["error"]["code"] == "malformed"
    assert {k for k, v in _counts(service_ctx).items() if before[k] != v} <= {"audit_events"}


def test_revoked_device_cannot_report(service_ctx):
    from idp_service.devices import registry

    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client)
    with _db(service_ctx).session() as s:
        registry.change_state(s, keys.device_id, "revoke", reason="lost", actor="test")
    resp = client.post("/agent/v1/report", data=_report(service_ctx, client, keys, _facts()))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "device_revoked"


def test_report_reply_carries_the_servers_osquery_queries(migrated_url, tmp_path):
    from idp_service.app import create_app
    from idp_service.platform.config import Settings

    queries = tmp_path / "queries.yaml"
    queries.write_text("usb_devices: SELECT vendor, model FROM usb_devices;\n")
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_OSQUERY_QUERIES": str(queries),
        }
    )
    app = create_app(settings)
    client = app.test_client()
    keys = _enrolled(app, client, "osq")
    reply = client.post("/agent/v1/report", data=_report(app, client, keys, _facts())).json
    assert reply["osquery_queries"] == {"usb_devices": "SELECT vendor, model FROM usb_devices;"}
    app.extensions["devicetrust"].db.dispose()


def test_bad_osquery_query_file_is_refused_at_start(tmp_path):
    import pytest

    from idp_service.platform.config import Settings

    bad = tmp_path / "queries.yaml"
    bad.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="must map query names to SQL"):
        Settings.from_env({"DEVICETRUST_OSQUERY_QUERIES": str(bad)})
