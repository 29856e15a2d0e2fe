"""Report ceremony v2, service half: one request per report, a counter instead of a challenge,
deltas against the acknowledged document. Every hostile report is refused with its code and
writes nothing but its audit event (checked on the rows of every table)."""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select

from idp_service.platform.models import AuditEvent, Base, Device
from idp_service.posture.tables import DeviceFacts
from tests.devices.test_report_ceremony import _db
from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, report_v2, seal_response
from trust_protocol.report_keys import report_box_public

PLATFORM = {"hardware_uuid": "hw-1", "serial": "SN1", "os": "linux", "instance": "a" * 16}


def _doc(n: int = 0) -> dict:
    return {
        "schema_version": "1",
        "os": {"family": "linux", "version": "6.1"},
        "packages": {"installed": {f"pkg{i}": f"1.{i}" for i in range(20)}},
        "firewall": {"enabled": True, "n": n},
    }


def _box(app) -> bytes:
    return report_box_public(app.extensions["devicetrust"].keys.box_secret)


def _verify_key(app):
    return app.extensions["devicetrust"].keys.verify_key


class Agent:
    """Just enough of an agent to drive the service: counter, acked document, box key."""

    def __init__(self, app, client, keys: DeviceKeys, platform=None) -> None:
        self.app, self.client, self.keys = app, client, keys
        self.platform = dict(platform or PLATFORM)
        self.counter = 0
        self.acked: dict | None = None
        self.digest: str | None = None

    def body(self, doc, *, counter=None, full=False, clock=None, **over) -> report_v2.ReportBody:
        if counter is None:
            self.counter += 1
            counter = self.counter
        body = report_v2.make_report(
            device_id=self.keys.device_id,
            counter=counter,
            clock=time.time() if clock is None else clock,
            agent_version="t",
            platform=self.platform,
            document=doc,
            volatile={"uptime_seconds": counter},
            acked=self.acked,
            acked_digest=self.digest,
            full=full,
        )
        if over:
            body = report_v2.ReportBody(**{**body.__dict__, **over})
        return body

    def seal(self, body, signer=None) -> bytes:
        return report_v2.seal_report(body, (signer or self.keys).signing_key, _box(self.app))

    def post(self, body, *, signer=None, envelope=None):
        path = "/agent/v2/report/full" if body.kind == "full" else "/agent/v2/report"
        return self.client.post(path, data=envelope or self.seal(body, signer))

    def send(self, doc, **kw):
        body = self.body(doc, **kw)
        resp = self.post(body)
        if resp.status_code == 200:
            ack = report_v2.open_ack(resp.json, _verify_key(self.app))
            assert ack.counter == body.counter and ack.device_id == self.keys.device_id
            self.digest = ack.digest
            self.acked = copy.deepcopy(doc) if ack.digest == body.digest else None
        return resp


def _counts(app):
    with _db(app).session() as s:
        return {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def _device(app, device_id):
    with _db(app).session() as s:
        d = s.get(Device, device_id)
        return (d.report_counter, d.report_digest, d.last_seen, d.facts_confirmed_at)


def _facts(app, device_id):
    with _db(app).session() as s:
        row = s.get(DeviceFacts, device_id)
        return (row.report_seq, copy.deepcopy(row.facts)) if row else None


def _age(app, device_id, seconds: float = 5.0) -> None:
    """Time passes for the device: it was last seen ``seconds`` earlier than recorded (the
    one-statement way skips a device seen within ``report_v2.QUICK_GAP``)."""
    from sqlalchemy import update

    with _db(app).session() as s:
        last = s.get(Device, device_id).last_seen
        s.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(last_seen=last - dt.timedelta(seconds=seconds))
        )
        s.commit()


def _last_audit(app):
    with _db(app).session() as s:
        row = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).one()
        return row.action, row.outcome, row.code


def _enrolled(app, client, name="rep", platform=PLATFORM):
    """A device registered through the real ceremony, with these hardware identifiers."""
    from idp_service.devices import enroll
    from idp_service.directory import users

    with _db(app).session() as s:
        user = users.find(s, f"{name}@example.com") or users.create(s, f"{name}@example.com")
        code, _ = enroll.create_code(s, user, ttl_seconds=60)
    keys = DeviceKeys.generate(f"dev-{name}-{time.monotonic_ns()}")
    token = client.post("/agent/v1/challenges", json={"purpose": "register"}).json["challenge"]
    challenge = parse_challenge(token, _verify_key(app))
    body = ResponseBody(
        token, keys.public_json(), platform, "t", time.time(), {"enrollment_code": code}
    )
    sealed = seal_response(body, challenge, keys)
    assert client.post("/agent/v1/register", data=sealed).status_code == 201
    return keys


def _start(app, name="v2"):
    client = app.test_client()
    keys = _enrolled(app, client, name)
    agent = Agent(app, client, keys)
    resp = agent.send(_doc())
    assert resp.status_code == 200, resp.json
    return agent


def test_server_advertises_v2_with_a_signed_box_key(service_ctx):
    info = service_ctx.test_client().get("/agent/v1/server").json
    assert report_v2.open_report_key(info["report"], _verify_key(service_ctx)) == _box(service_ctx)
    tampered = dict(info["report"], box_key=info["server_key"])
    with pytest.raises(report_v2.ProtocolError):
        report_v2.open_report_key(tampered, _verify_key(service_ctx))


def test_full_then_unchanged_then_delta(service_ctx, monkeypatch):
    from idp_service.devices import report_v2 as service_v2

    agent = _start(service_ctx)
    careful = []
    original = service_v2._careful
    monkeypatch.setattr(
        service_v2, "_careful", lambda *a, **k: careful.append(1) or original(*a, **k)
    )
    doc = _doc()
    seq, stored = _facts(service_ctx, agent.keys.device_id)
    assert {k: v for k, v in stored.items() if k not in report_v2.VOLATILE} == doc
    assert stored["uptime_seconds"] == 1 and "collected_at" in stored
    counter, digest, _, confirmed = _device(service_ctx, agent.keys.device_id)
    assert (counter, digest) == (1, report_v2.document_digest(doc))

    # Unchanged: the counter, last_seen and the confirmation move; the facts do not.
    _age(service_ctx, agent.keys.device_id)
    before = _counts(service_ctx)
    resp = agent.send(doc)
    assert resp.status_code == 200, resp.json
    assert _counts(service_ctx) == before
    assert careful == []  # the one conditional UPDATE took it
    assert _facts(service_ctx, agent.keys.device_id)[0] == seq
    counter2, digest2, _, confirmed2 = _device(service_ctx, agent.keys.device_id)
    assert (counter2, digest2) == (2, digest) and confirmed2 > confirmed

    # A delta: one section changes, one goes, one appears.
    new = copy.deepcopy(doc)
    new["firewall"]["enabled"] = False
    del new["packages"]
    new["edr"] = {"running": True}
    body = agent.body(new)
    assert body.kind == "delta" and set(body.changes) == {"firewall", "edr"}
    assert body.removed == ["packages"]
    agent.counter -= 1
    resp = agent.send(new)
    assert resp.status_code == 200, resp.json
    assert careful == [1]
    seq3, stored3 = _facts(service_ctx, agent.keys.device_id)
    assert seq3 == seq + 1
    assert {k: v for k, v in stored3.items() if k not in report_v2.VOLATILE} == new
    assert _device(service_ctx, agent.keys.device_id)[1] == report_v2.document_digest(new)


def _refused(app, agent, body, code, status, *, signer=None, envelope=None):
    """Send ``body``; it must be refused with ``code`` and write only one audit event."""
    before = _counts(app)
    device = _device(app, agent.keys.device_id)
    facts = _facts(app, agent.keys.device_id)
    resp = agent.post(body, signer=signer, envelope=envelope)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["code"] == code
    after = _counts(app)
    assert after.pop("audit_events") == before.pop("audit_events") + 1
    assert after == before
    assert _device(app, agent.keys.device_id) == device
    assert _facts(app, agent.keys.device_id) == facts
    assert _last_audit(app) == ("device.report", "rejected", code)


def test_replayed_report_is_refused_and_writes_only_audit(service_ctx):
    agent = _start(service_ctx)
    body = agent.body(_doc())
    envelope = agent.seal(body)
    assert agent.post(body, envelope=envelope).status_code == 200
    _refused(service_ctx, agent, body, "report_counter_stale", 409, envelope=envelope)


def test_lower_and_equal_counters_are_refused(service_ctx):
    agent = _start(service_ctx)
    for _ in range(3):
        assert agent.send(_doc()).status_code == 200
    for counter in (agent.counter, agent.counter - 1, 1):
        _refused(
            service_ctx, agent, agent.body(_doc(), counter=counter), "report_counter_stale", 409
        )
    # Also for a delta and a full document: the counter is judged before the document.
    _refused(service_ctx, agent, agent.body(_doc(1), counter=2), "report_counter_stale", 409)
    _refused(
        service_ctx,
        agent,
        agent.body(_doc(), counter=agent.counter, full=True),
        "report_counter_stale",
        409,
    )


def test_another_devices_key_is_refused(service_ctx):
    agent = _start(service_ctx)
    other = _enrolled(service_ctx, agent.client, "other")  # registered, but not this device
    stranger = DeviceKeys.generate("stranger")
    for signer in (other, stranger):
        for full in (False, True):
            body = agent.body(_doc(), full=full, counter=agent.counter + 1)
            _refused(service_ctx, agent, body, "device_key_mismatch", 403, signer=signer)


def test_delta_against_a_digest_not_held_is_resync(service_ctx):
    agent = _start(service_ctx)
    stale_base = report_v2.document_digest({"os": {"family": "linux"}})
    body = agent.body(_doc(5))
    assert body.kind == "delta"
    _refused(service_ctx, agent, agent.body(_doc(5), base=stale_base), "report_resync", 409)
    # An unchanged report claiming a document the service does not hold, likewise.
    other = report_v2.document_digest(_doc(9))
    _refused(service_ctx, agent, agent.body(_doc(), digest=other), "report_resync", 409)


def test_delta_merging_into_another_digest_is_resync(service_ctx):
    agent = _start(service_ctx)
    new = _doc(7)
    body = agent.body(new)
    # The claimed digest is of a document the merge does not give (a section left out).
    wrong = {k: v for k, v in new.items() if k != "packages"}
    _refused(
        service_ctx,
        agent,
        agent.body(new, digest=report_v2.document_digest(wrong)),
        "report_resync",
        409,
    )
    # A change whose value is not its digest is malformed.
    bad = {"firewall": {"digest": body.changes["firewall"]["digest"], "value": {"x": 1}}}
    _refused(service_ctx, agent, agent.body(new, changes=bad), "malformed", 400)


def test_hostile_shapes_are_refused(service_ctx):
    agent = _start(service_ctx)
    _refused(service_ctx, agent, agent.body(_doc(), clock=time.time() - 3600), "clock_skew", 400)
    full = agent.body(_doc(), full=True)
    before = _counts(service_ctx)
    # A full document on the small endpoint, a delta on the full one.
    resp = agent.client.post("/agent/v2/report", data=agent.seal(full))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed"
    resp = agent.client.post("/agent/v2/report/full", data=agent.seal(agent.body(_doc(3))))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed"
    # Over the small endpoint's bound: refused before it is read.
    resp = agent.client.post("/agent/v2/report", data=b"{" + b" " * (64 * 1024) + b"}")
    assert resp.status_code == 413 and resp.json["error"]["code"] == "too_large"
    for junk in (b"", b"[]", b'{"v":2}', b'{"v":1,"epk":"","box":""}'):
        resp = agent.client.post("/agent/v2/report", data=junk)
        assert 400 <= resp.status_code < 500, (junk, resp.status_code)
    # Sealed to another key: the box does not open.
    other_box = bytes(DeviceKeys.generate("x").box_key.public_key)
    env = report_v2.seal_report(agent.body(_doc()), agent.keys.signing_key, other_box)
    resp = agent.client.post("/agent/v2/report", data=env)
    assert resp.json["error"]["code"] == "box_open_failed"
    after = _counts(service_ctx)
    assert after.pop("audit_events") > before.pop("audit_events")
    assert after == before


def test_unknown_device_and_revoked_device(service_ctx):
    agent = _start(service_ctx)
    ghost = Agent(service_ctx, agent.client, DeviceKeys.generate("ghost"))
    before = _counts(service_ctx)
    resp = ghost.post(ghost.body(_doc(), full=True))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "device_unknown"
    with _db(service_ctx).session() as s:
        s.get(Device, agent.keys.device_id).state = "revoked"
    _refused(service_ctx, agent, agent.body(_doc()), "device_revoked", 403)
    assert _counts(service_ctx)["audit_events"] > before["audit_events"]


def _reset(app, agent):
    client = agent.client
    token = client.post(
        "/agent/v1/report/challenge", json={"device_id": agent.keys.device_id}
    ).json["challenge"]
    challenge = parse_challenge(token, _verify_key(app))
    body = ResponseBody(
        token, agent.keys.public_json(), agent.platform, "t", time.time(), {"counter_reset": True}
    )
    envelope = seal_response(body, challenge, agent.keys)
    return client.post("/agent/v2/report/reset", data=envelope), envelope


def test_counter_reset_after_state_loss(service_ctx):
    agent = _start(service_ctx)
    for _ in range(4):
        assert agent.send(_doc()).status_code == 200
    agent.counter = 1  # state restored from an old backup
    assert agent.send(_doc()).json["error"]["code"] == "report_counter_stale"
    resp, envelope = _reset(service_ctx, agent)
    assert resp.status_code == 200, resp.json
    ack = report_v2.open_ack(resp.json, _verify_key(service_ctx))
    assert ack.counter == 5 and ack.digest == report_v2.document_digest(_doc())
    assert ack.challenge is not None
    agent.counter = ack.counter
    assert agent.send(_doc()).status_code == 200
    # The reset answer is single use like any answer.
    again = agent.client.post("/agent/v2/report/reset", data=envelope)
    assert again.status_code == 409 and again.json["error"]["code"] == "challenge_replayed"


def test_v1_report_still_accepted_and_forgets_the_v2_digest(service_ctx):
    from tests.devices.test_report_ceremony import _report

    agent = _start(service_ctx)
    facts = {**_doc(4), "collected_at": "2026-01-01T00:00:00+00:00"}
    resp = agent.client.post(
        "/agent/v1/report", data=_report(service_ctx, agent.client, agent.keys, facts)
    )
    assert resp.status_code == 200
    assert _device(service_ctx, agent.keys.device_id)[1] is None
    # The next v2 delta cannot build on a document the service no longer holds.
    assert agent.send(_doc(5)).json["error"]["code"] == "report_resync"
    assert agent.send(_doc(5), full=True).status_code == 200


def test_clone_resetting_its_counter_is_seen_by_detection(service_ctx):
    """Two agents with one key and one id: the counters collide, each resets, and detection
    sees two instances answering in turn (the clone cannot reuse a counter unnoticed)."""
    agent = _start(service_ctx)
    clone = Agent(service_ctx, agent.client, agent.keys, dict(PLATFORM, instance="b" * 16))
    clone.counter, clone.acked, clone.digest = agent.counter, agent.acked, agent.digest
    assert agent.send(_doc()).status_code == 200
    assert clone.send(_doc()).json["error"]["code"] == "report_counter_stale"
    codes = []
    for who in (clone, agent, clone, agent):
        resp, _ = _reset(service_ctx, who)
        codes.append(resp.json.get("error", {}).get("code") if resp.status_code != 200 else "ok")
    assert "device_suspended" in codes
    with _db(service_ctx).session() as s:
        assert s.get(Device, agent.keys.device_id).state == "suspended"


@pytest.mark.postgres
def test_two_replicas_accept_one_counter_once(postgres_url, tmp_path):
    """Two services (one per thread, own connection pools) on one PostgreSQL database, the
    same counter at once, many times: exactly one acceptance each time."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(postgres_url)

    def app_for(name):
        return create_app(
            Settings.from_env(
                {
                    "DEVICETRUST_DATABASE_URL": postgres_url,
                    "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                    "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                    "DEVICETRUST_RATELIMIT_ENABLED": "false",
                }
            )
        )

    first, second = app_for("a"), app_for("b")
    try:
        agent = _start(first, "race")
        second.test_client().get("/agent/v1/server")
        for round_ in range(15):
            full = round_ % 5 == 0
            body = agent.body(_doc(round_ if round_ % 3 == 0 else 0), full=full)
            envelope = agent.seal(body)
            path = "/agent/v2/report/full" if body.kind == "full" else "/agent/v2/report"
            results: list[int] = []
            gate = threading.Barrier(2)

            def send(app, results=results, gate=gate, path=path, envelope=envelope):
                client = app.test_client()
                gate.wait()
                results.append(client.post(path, data=envelope).status_code)

            threads = [threading.Thread(target=send, args=(a,)) for a in (first, second)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [200, 409], (round_, results)
            agent.acked, agent.digest = None, _device(first, agent.keys.device_id)[1]
            if agent.digest == body.digest:
                agent.acked = copy.deepcopy(_doc(round_ if round_ % 3 == 0 else 0))
            assert _device(first, agent.keys.device_id)[0] == body.counter
    finally:
        first.extensions["devicetrust"].db.dispose()
        second.extensions["devicetrust"].db.dispose()


def test_unchanged_report_keeps_the_facts_fresh_for_sign_in(sqlite_url, tmp_path):
    """An unchanged report writes no facts; sign-in judges their age from the report that
    last confirmed them (devices.facts_confirmed_at), not from when they were written."""
    import datetime as dt

    from idp_service.app import create_app
    from idp_service.platform.config import Settings
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": sqlite_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
                "DEVICETRUST_BUILTIN_CHECKS": "all",
            }
        )
    )
    try:
        agent = _start(app, "fresh")
        service = app.extensions["devicetrust"]
        with _db(app).session() as s:  # the document was written a day ago
            row = s.get(DeviceFacts, agent.keys.device_id)
            row.received_at = row.received_at - dt.timedelta(days=1)
            device = s.get(Device, agent.keys.device_id)
            device.facts_confirmed_at = row.received_at
            user_id = device.user_id
        with _db(app).session() as s:
            stale = service.posture.for_login(s, agent.keys.device_id, user_id, "fresh", [])
        assert agent.send(_doc()).status_code == 200
        with _db(app).session() as s:
            fresh = service.posture.for_login(s, agent.keys.device_id, user_id, "fresh", [])
            confirmed = s.get(Device, agent.keys.device_id).facts_confirmed_at
        assert stale.facts_received_at < confirmed - dt.timedelta(hours=23)
        assert fresh.facts_received_at == confirmed
    finally:
        app.extensions["devicetrust"].db.dispose()
