"""Malformed and hostile requests to the service: a 4xx with a stable code, never a 500,
and nothing written but an audit event. Runs in-process on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from idp_service.platform.models import Base
from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response


def _counts(app):
    db = app.extensions["devicetrust"].db
    with db.session() as s:
        return {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def _assert_only_audit_grew(before, after):
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {"audit_events"}, changed


def _register_challenge(client, app):
    token = client.post("/agent/v1/challenges", json={"purpose": "register"}).json["challenge"]
    return token, parse_challenge(token, app.extensions["devicetrust"].keys.verify_key)


HOSTILE = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"\xff\xfe",
    b'{"v": 1}',
    b'{"v": 2, "cid": "x", "epk": "y", "box": "z"}',
    b'{"v": 1, "cid": "AAAA", "epk": "AAAA", "box": "AAAA"}',
    b'{"v": true, "cid": "", "epk": "", "box": ""}',
    b"[" * 5000 + b"]" * 5000,
    b'{"v": 1, "v": 1}',
    b'{"v": NaN}',
    json.dumps({"v": 1, "cid": "A" * 22, "epk": "A" * 43, "box": "A" * 200}).encode(),
]


@pytest.mark.parametrize("path", ["/agent/v1/register", "/agent/v1/callback"])
@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_envelopes_get_4xx_and_change_nothing(service_ctx, path, body):
    client = service_ctx.test_client()
    before = _counts(service_ctx)
    resp = client.post(path, data=body)
    assert 400 <= resp.status_code < 500, resp.data
    assert isinstance(resp.json["error"]["code"], str)
    after = _counts(service_ctx)
    _assert_only_audit_grew(before, after)


def test_oversized_body_is_refused(service_ctx):
    client = service_ctx.test_client()
    resp = client.post("/agent/v1/callback", data=b"x" * (2 * 1024 * 1024))
    assert resp.status_code == 413 and resp.json["error"]["code"] == "too_large"


def test_challenge_endpoint_rejects_other_purposes(service_ctx):
    client = service_ctx.test_client()
    before = _counts(service_ctx)
    for body in ({"purpose": "authenticate"}, {"purpose": "report"}, [], "x"):
        resp = client.post("/agent/v1/challenges", json=body)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed"
    _assert_only_audit_grew(before, _counts(service_ctx))


def test_unknown_login_transaction_is_404_everywhere(service_ctx):
    client = service_ctx.test_client()
    for method, path in [
        ("post", "/login/nope/challenge"),
        ("post", "/login/nope/response"),
        ("get", "/login/nope/status"),
    ]:
        resp = getattr(client, method)(path)
        assert resp.status_code == 404 and resp.json["error"]["code"] == "login_unknown"
    assert client.get("/login/nope").status_code == 404


def test_another_browsers_transaction_is_not_reachable(service_ctx):
    mine = service_ctx.test_client()
    theirs = service_ctx.test_client()
    txn = mine.get("/login").headers["Location"].rsplit("/", 1)[-1]
    assert mine.post(f"/login/{txn}/challenge").status_code == 200
    before = _counts(service_ctx)
    # Another browser learns nothing about the sign-in and changes nothing in it: the
    # answer is the one an unknown transaction gets, and only the audit log grows.
    for method, path in [
        ("post", f"/login/{txn}/challenge"),
        ("post", f"/login/{txn}/response"),
        ("get", f"/login/{txn}/status"),
    ]:
        resp = getattr(theirs, method)(path)
        assert resp.status_code == 404 and resp.json["error"]["code"] == "login_unknown"
    _assert_only_audit_grew(before, _counts(service_ctx))
    assert mine.get(f"/login/{txn}/status").json["status"] == "pending"


def _code(app, email):
    from idp_service.devices import enroll
    from idp_service.directory import users

    db = app.extensions["devicetrust"].db
    with db.session() as s:
        user = users.find(s, email) or users.create(s, email)
        code, _ = enroll.create_code(s, user, ttl_seconds=60)
    return code


def _sealed_registration(client, app, keys, code):
    token, challenge = _register_challenge(client, app)
    body = ResponseBody(
        token,
        keys.public_json(),
        {"hardware_uuid": "hw", "serial": "sn"},
        "test",
        time.time(),
        {"enrollment_code": code},
    )
    return seal_response(body, challenge, keys)


def test_wrong_purpose_response_is_refused_at_callback(service_ctx):
    client = service_ctx.test_client()
    keys = DeviceKeys.generate("dev-wrong-purpose")
    token, challenge = _register_challenge(client, service_ctx)
    sealed = seal_response(
        ResponseBody(token, keys.public_json(), {}, "t", time.time()), challenge, keys
    )
    before = _counts(service_ctx)
    resp = client.post("/agent/v1/callback", data=sealed)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "wrong_purpose"
    _assert_only_audit_grew(before, _counts(service_ctx))


def test_register_twice_with_one_device_id_is_a_conflict(service_ctx):
    client = service_ctx.test_client()
    keys = DeviceKeys.generate("dev-twice")
    first = _sealed_registration(client, service_ctx, keys, _code(service_ctx, "g@example.com"))
    assert client.post("/agent/v1/register", data=first).status_code == 201
    second = _sealed_registration(client, service_ctx, keys, _code(service_ctx, "g@example.com"))
    before = _counts(service_ctx)
    again = client.post("/agent/v1/register", data=second)
    assert again.status_code == 409 and again.json["error"]["code"] == "device_exists"
    after = _counts(service_ctx)
    # The second code is still unused: the refusal wrote nothing but its audit event.
    _assert_only_audit_grew(before, after)


def test_deactivated_owner_cannot_register(service_ctx):
    from idp_service.directory import users

    client = service_ctx.test_client()
    code = _code(service_ctx, "inactive@example.com")
    with service_ctx.extensions["devicetrust"].db.session() as s:
        users.find(s, "inactive@example.com").active = False
    sealed = _sealed_registration(client, service_ctx, DeviceKeys.generate("dev-inactive"), code)
    before = _counts(service_ctx)
    resp = client.post("/agent/v1/register", data=sealed)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "owner_inactive"
    _assert_only_audit_grew(before, _counts(service_ctx))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=2048))
def test_random_bytes_never_cause_a_server_error(service_ctx, body):
    client = service_ctx.test_client()
    for path in ("/agent/v1/callback", "/agent/v1/register"):
        resp = client.post(path, data=body)
        assert 400 <= resp.status_code < 500
