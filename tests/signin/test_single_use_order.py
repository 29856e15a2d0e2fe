"""Single use before anything that writes, in every ceremony that answers a challenge
(``challenges.accept_once``, docs/protocol.md §7.2 step 2), on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from idp_service.devices import challenges
from idp_service.platform.models import Base
from idp_service.platform.models import Challenge as ChallengeRow
from tests.devices.test_report_ceremony import _db, _enrolled, _facts, _report
from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, seal_response
from trust_protocol.errors import ProtocolError


def _counts(app):
    with _db(app).session() as s:
        return {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def test_replayed_registration_is_refused_as_a_replay_and_writes_nothing(service_ctx):
    from idp_service.devices import enroll
    from idp_service.directory import users

    client = service_ctx.test_client()
    with _db(service_ctx).session() as s:
        user = users.create(s, "once@example.com")
        code, _ = enroll.create_code(s, user, ttl_seconds=60)
    keys = DeviceKeys.generate(f"dev-once-{time.monotonic_ns()}")
    token = client.post("/agent/v1/challenges", json={"purpose": "register"}).json["challenge"]
    challenge = parse_challenge(token, service_ctx.extensions["devicetrust"].keys.verify_key)
    body = ResponseBody(token, keys.public_json(), {}, "t", time.time(), {"enrollment_code": code})
    sealed = seal_response(body, challenge, keys)
    assert client.post("/agent/v1/register", data=sealed).status_code == 201
    before = _counts(service_ctx)
    again = client.post("/agent/v1/register", data=sealed)
    assert again.status_code == 409 and again.json["error"]["code"] == "challenge_replayed"
    after = _counts(service_ctx)
    assert {t for t, n in before.items() if after[t] != n} == {"audit_events"}


def test_accept_once_judges_nothing_for_a_replay(service_ctx):
    """A replay never reaches the registry or detection, whose steps may write."""
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client, "order")
    sealed = _report(service_ctx, client, keys, _facts())
    service = service_ctx.extensions["devicetrust"]
    verified = challenges.open_answer(service, sealed, "report")
    called: list[str] = []
    with service.db.session() as s:
        challenges.accept_once(s, verified, via="report")
    try:
        with service.db.session() as s:
            challenges.accept_once(
                s,
                verified,
                via="report",
                registry=lambda: called.append("registry"),
                judge=lambda: called.append("judge"),
            )
    except ProtocolError as exc:
        assert exc.code == "challenge_replayed"
    else:
        raise AssertionError("a replay was accepted")
    assert called == []


def test_detections_refusal_is_committed_with_the_challenge_marked(service_ctx):
    client = service_ctx.test_client()
    keys = _enrolled(service_ctx, client, "marked")
    sealed = _report(service_ctx, client, keys, _facts())
    service = service_ctx.extensions["devicetrust"]
    verified = challenges.open_answer(service, sealed, "report")
    try:
        with service.db.session() as s:
            challenges.accept_once(
                s, verified, via="report", judge=lambda: ProtocolError("device_suspended")
            )
    except ProtocolError as exc:
        assert exc.code == "device_suspended"
    else:
        raise AssertionError("the refusal was not raised")
    with service.db.session() as s:
        row = s.get(ChallengeRow, verified.challenge.id_text)
        assert row is not None and row.result == "device_suspended"
    # The same answer is not judged twice.
    resp = client.post("/agent/v1/report", data=sealed)
    assert resp.status_code == 409 and resp.json["error"]["code"] == "challenge_replayed"
