"""The quick path of unchanged v2 reports (``devices/web.py``, ``ReportQuickPath``) and their
shared UPDATE (``report_v2._FastWriter``).

The quick path answers an unchanged report before Flask is entered; anything it declines goes
on to the app with the same bytes. These tests check that it really takes the common case, that
its answers carry what the app's would, that what it declines is judged (and audited) exactly
as before, and that a batch of guarded UPDATEs applies each row on its own conditions, a device
at most once, on both databases.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import pytest

from idp_service.devices import report_v2 as service_v2
from tests.devices.test_report_v2 import (
    PLATFORM,
    Agent,
    _age,
    _counts,
    _device,
    _doc,
    _enrolled,
    _last_audit,
    _refused,
    _start,
    _verify_key,
)
from trust_protocol import DeviceKeys, report_v2


@pytest.fixture
def spy(monkeypatch):
    """Counts the requests that reached the app's report route (``report_v2.ingest``)."""
    calls: list[bool] = []
    original = service_v2.ingest

    def ingest(*args, **kwargs):
        calls.append(kwargs.get("fast_tried", False))
        return original(*args, **kwargs)

    monkeypatch.setattr(service_v2, "ingest", ingest)
    return calls


def test_unchanged_report_is_answered_before_the_app(service_ctx, spy):
    agent = _start(service_ctx)
    spy.clear()
    doc = _doc()
    _age(service_ctx, agent.keys.device_id)
    before = _device(service_ctx, agent.keys.device_id)
    resp = agent.send(doc)
    assert resp.status_code == 200, resp.json
    assert spy == []  # never reached Flask's route
    ack = report_v2.open_ack(resp.json, _verify_key(service_ctx))
    assert (ack.counter, ack.digest) == (agent.counter, report_v2.document_digest(doc))
    after = _device(service_ctx, agent.keys.device_id)
    assert after[0] == before[0] + 1 and after[2] > before[2]
    # The headers the app would have added.
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert len(resp.headers["X-Request-ID"]) == 16
    # A second report within a second of the first (a flood from one device's key) is
    # not the quick path's: it goes through the app (and its per-address limits).
    resp = agent.send(doc)
    assert resp.status_code == 200 and spy == [True]
    assert _device(service_ctx, agent.keys.device_id)[0] == after[0] + 1


def test_declined_reports_reach_the_app_once_and_keep_their_refusals(service_ctx, spy):
    agent = _start(service_ctx)
    doc = _doc()
    body = agent.body(doc)
    envelope = agent.seal(body)
    assert agent.post(body, envelope=envelope).status_code == 200
    spy.clear()
    # A replay: declined here, refused there, audited, nothing else written.
    _refused(service_ctx, agent, body, "report_counter_stale", 409, envelope=envelope)
    # Signed with a key the device never registered.
    stranger = DeviceKeys.generate("stranger")
    _refused(service_ctx, agent, agent.body(doc), "device_key_mismatch", 403, signer=stranger)
    # A clock outside the skew bound.
    _refused(service_ctx, agent, agent.body(doc, clock=time.time() - 3600), "clock_skew", 400)
    assert spy == [True, True, True]  # each reached the app once, marked as declined
    # A delta is never the quick path's: the app takes it, and the careful way accepts it.
    spy.clear()
    changed = _doc(5)
    assert agent.send(changed).status_code == 200
    assert spy == [True]
    assert _device(service_ctx, agent.keys.device_id)[1] == report_v2.document_digest(changed)


def test_a_host_the_app_refuses_is_refused_for_a_valid_report(service_ctx, spy):
    agent = _start(service_ctx)
    spy.clear()
    before = _device(service_ctx, agent.keys.device_id)
    resp = agent.client.post(
        "/agent/v2/report", data=agent.seal(agent.body(_doc())), headers={"Host": "evil.example"}
    )
    assert resp.status_code == 400 and resp.json["error"]["code"] == "host_not_allowed"
    assert _device(service_ctx, agent.keys.device_id) == before


def test_oversized_and_short_bodies_go_to_the_app(service_ctx, spy):
    agent = _start(service_ctx)
    big = b"{" + b" " * (report_v2.MAX_SMALL + 10) + b"}"
    resp = agent.client.post("/agent/v2/report", data=big)
    assert resp.status_code == 413 and resp.json["error"]["code"] == "too_large"
    assert _last_audit(service_ctx) == ("device.report", "rejected", "too_large")
    # A cut envelope (a connection that broke mid-body): refused, audited, not accepted.
    envelope = agent.seal(agent.body(_doc()))
    before = _device(service_ctx, agent.keys.device_id)
    resp = agent.client.post("/agent/v2/report", data=envelope[: len(envelope) // 2])
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed"
    assert _device(service_ctx, agent.keys.device_id) == before
    assert _last_audit(service_ctx) == ("device.report", "rejected", "malformed")
    assert spy == [False, True]  # the oversized one was never read here; the cut one was


# ---- the shared UPDATE ---------------------------------------------------------------------


def _own(app, name):
    """An enrolled device with hardware identifiers of its own (several in one test)."""
    platform = dict(PLATFORM, hardware_uuid=f"hw-{name}", serial=f"SN-{name}")
    client = app.test_client()
    agent = Agent(app, client, _enrolled(app, client, name, platform=platform), platform)
    assert agent.send(_doc()).status_code == 200
    _age(app, agent.keys.device_id)
    return agent


def _params(app, agent, *, counter=None, signer=None, digest=None):
    service = app.extensions["devicetrust"]
    body = agent.body(_doc(), counter=counter)
    if digest is not None:
        body = report_v2.ReportBody(**{**body.__dict__, "digest": digest})
    key = bytes((signer or agent.keys).signing_key.verify_key)
    return service_v2._fast_params(service, body, key, 0.5, dt.datetime.now(dt.UTC))


def test_a_batch_applies_each_row_on_its_own_conditions(service_ctx):
    engine = service_ctx.extensions["devicetrust"].db.engine
    a = _own(service_ctx, "batch-a")
    b = _own(service_ctx, "batch-b")
    c = _own(service_ctx, "batch-c")
    d = _own(service_ctx, "batch-d")
    before = {x.keys.device_id: _device(service_ctx, x.keys.device_id) for x in (a, b, c, d)}
    counts = _counts(service_ctx)
    a_first = _params(service_ctx, a)
    a_replay = dict(a_first)  # the same report twice in one batch: once at most
    b_ok = _params(service_ctx, b)
    c_wrong_key = _params(service_ctx, c, signer=DeviceKeys.generate("x"))
    d_stale = _params(service_ctx, d, counter=1)  # not above the counter held
    e_unknown = dict(b_ok, device_id="no-such-device")
    batch = [c_wrong_key, a_first, e_unknown, b_ok, a_replay, d_stale]
    assert service_v2._writer(engine).run(batch) == [False, True, False, True, False, False]
    assert _counts(service_ctx) == counts
    assert _device(service_ctx, a.keys.device_id)[0] == a_first["counter"]
    assert _device(service_ctx, b.keys.device_id)[0] == b_ok["counter"]
    for x in (c, d):
        assert _device(service_ctx, x.keys.device_id) == before[x.keys.device_id]
    # A digest the service does not hold never applies either; nor a device seen within
    # the last second (b, just now).
    _age(service_ctx, a.keys.device_id)
    wrong_digest = _params(service_ctx, b, digest="0" * 64)
    assert service_v2._writer(engine).run([wrong_digest, _params(service_ctx, a)]) == [False, True]
    assert service_v2._writer(engine).run([_params(service_ctx, b)]) == [False]


def test_threads_racing_one_counter_apply_it_once(service_ctx):
    engine = service_ctx.extensions["devicetrust"].db.engine
    agents = [_own(service_ctx, f"race-{i}") for i in range(3)]
    committer = service_v2._committer(engine)
    for _ in range(5):
        for x in agents:
            _age(service_ctx, x.keys.device_id)
        params = [_params(service_ctx, x) for x in agents]
        results: list[tuple[str, bool]] = []
        gate = threading.Barrier(12)

        def submit(p, gate=gate, results=results):
            gate.wait()
            results.append((p["device_id"], committer.submit(dict(p))))

        threads = [threading.Thread(target=submit, args=(params[i % 3],)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for x, p in zip(agents, params, strict=True):
            won = [ok for device, ok in results if device == x.keys.device_id]
            assert sorted(won) == [False, False, False, True]
            assert _device(service_ctx, x.keys.device_id)[0] == p["counter"]


def test_another_devices_registered_key_does_not_apply(service_ctx):
    engine = service_ctx.extensions["devicetrust"].db.engine
    agent = _start(service_ctx)
    other = _enrolled(service_ctx, agent.client, "other-key")
    _age(service_ctx, agent.keys.device_id)
    before = _device(service_ctx, agent.keys.device_id)
    params = _params(service_ctx, agent, signer=other)
    assert service_v2._writer(engine).run(
        [params, dict(params, counter=params["counter"] + 1)]
    ) == [
        False,
        False,
    ]
    assert _device(service_ctx, agent.keys.device_id) == before


@pytest.mark.postgres
def test_the_report_writer_keeps_its_own_connection_without_a_flush_wait(postgres_url, tmp_path):
    """PostgreSQL: the unchanged reports' UPDATEs run on one connection of their own, in
    autocommit with synchronous_commit off (docs/protocol.md §13); the engine's dispose
    closes it."""
    from idp_service.app import create_app
    from idp_service.platform.config import Settings

    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": postgres_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
            }
        )
    )
    db = app.extensions["devicetrust"].db
    try:
        agent = _own(app, "writer")
        assert agent.send(_doc()).status_code == 200
        writer = service_v2._WRITERS[db.engine]
        conn = writer.conn
        assert conn is not None and conn.autocommit
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        # Every other write keeps its durable commit.
        with db.engine.connect() as other:
            assert other.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        db.dispose()
    assert writer.conn is None and conn.closed


def test_a_taken_report_is_logged_at_debug_with_its_request_id(service_ctx, caplog):
    agent = _start(service_ctx)
    _age(service_ctx, agent.keys.device_id)
    caplog.set_level(logging.DEBUG, logger="devicetrust.access")
    resp = agent.send(_doc())
    assert resp.status_code == 200
    quick = [r for r in caplog.records if getattr(r, "quick", False)]
    assert len(quick) == 1 and quick[0].levelno == logging.DEBUG
    assert (quick[0].route, quick[0].status) == ("/agent/v2/report", 200)
    assert quick[0].request_id == resp.headers["X-Request-ID"]
