"""Webhooks in process, on SQLite and PostgreSQL: the outbox, management, the dispatcher, the CLI.

The end-to-end runs with the real service, agent and receiver are in
``test_webhooks_e2e.py``; these pin the rules: an event exists iff its
decision committed, at a constant number of queries; hostile management input
is a stable 4xx that writes nothing but audit; the dispatcher's claims never
overlap; secrets never reach the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from idp_service.devices import registry
from idp_service.platform.db import Database
from idp_service.platform.errors import Invalid, ServiceError
from idp_service.platform.models import AuditEvent, Device, utcnow
from idp_service.posture import service as posture
from idp_service.webhooks import dispatcher, endpoints
from idp_service.webhooks.tables import WebhookDelivery, WebhookEndpoint
from scim import lifecycle
from tests.api_helpers import make_token, seed
from tests.procs import base_env


@pytest.fixture
def api(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    data = seed(db)
    data["write"] = make_token(db, "writer", "write")
    data["read"] = make_token(db, "reader", "read")
    data["db"] = db
    data["client"] = service_ctx.test_client()
    return data


def call(api, method, path, token="write", **kw):
    headers = {"Authorization": f"Bearer {api[token]}"}
    return api["client"].open(f"/api/v1{path}", method=method, headers=headers, **kw)


def _count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _deliveries(db) -> list[WebhookDelivery]:
    with db.session() as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def _endpoint(db, url="http://127.0.0.1:9/hook", **kw) -> tuple[int, str]:
    with db.session() as s:
        row, secret = endpoints.create(s, url, actor="test", **kw)
        return row.id, secret


def _audit_text(db) -> str:
    with db.session() as s:
        rows = s.scalars(select(AuditEvent)).all()
        return json.dumps([[r.action, r.actor, r.details] for r in rows])


# -- the outbox -------------------------------------------------------------------------------


def test_decisions_enqueue_one_delivery_per_matching_active_endpoint(api):
    db = api["db"]
    all_id, _ = _endpoint(db)
    only_id, _ = _endpoint(db, event_types=["device.approved"])
    off_id, _ = _endpoint(db)
    with db.session() as s:
        endpoints.update(s, off_id, {"active": False}, actor="test")
    device = api["devices"]["trusted"][0]
    assert (
        call(api, "POST", f"/devices/{device}/revoke", json={"reason": "lost"}).status_code == 200
    )
    rows = _deliveries(db)
    assert [(r.endpoint_id, r.event_type, r.status) for r in rows] == [
        (all_id, "device.revoked", "pending")
    ]
    payload = rows[0].payload
    assert payload["id"] == rows[0].event_id and payload["type"] == "device.revoked"
    assert payload["data"]["device_id"] == device and payload["data"]["actor"] == "api:writer"
    assert payload["data"]["details"] == {"from": "trusted", "to": "revoked", "reason": "lost"}
    pending = api["devices"]["pending"][0]
    assert (
        call(api, "POST", f"/devices/{pending}/approve", json={"reason": "ok"}).status_code == 200
    )
    approved = [r for r in _deliveries(db) if r.event_type == "device.approved"]
    assert sorted(r.endpoint_id for r in approved) == [all_id, only_id]
    assert len({r.event_id for r in approved}) == 1  # one event, one id, two deliveries


def test_refused_or_rolled_back_decisions_enqueue_nothing(api):
    db = api["db"]
    _endpoint(db)
    revoked = api["devices"]["revoked"][0]
    r = call(api, "POST", f"/devices/{revoked}/revoke", json={"reason": "again"})
    assert r.status_code == 409 and r.json["error"]["code"] == "bad_transition"
    trusted = api["devices"]["trusted"][0]
    with pytest.raises(RuntimeError), db.session() as s:
        registry.change_state(s, trusted, "revoke", reason="x", actor="test")
        raise RuntimeError("the transaction fails after the decision")
    with db.session() as s:
        assert s.get(Device, trusted).state == "trusted"
    # Not events: reads, exemption changes, rejected decisions.
    assert call(api, "GET", f"/devices/{trusted}").status_code == 200
    with db.session() as s:
        posture.add_exemption(
            s,
            check_id="*",
            scope="device",
            subject=trusted,
            expires_at=utcnow() + dt.timedelta(days=1),
            reason="x",
            actor="test",
        )
    assert _deliveries(db) == []


def test_enqueueing_costs_one_query_however_many_endpoints(api):
    db = api["db"]
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    def revoke(device_id: str) -> int:
        statements.clear()
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            with db.session() as s:
                registry.change_state(s, device_id, "revoke", reason="x", actor="test")
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        return sum("webhook_endpoints" in q for q in statements)

    assert revoke(api["devices"]["trusted"][0]) == 1  # no endpoints: one indexed query
    for _ in range(5):
        _endpoint(db)
    assert revoke(api["devices"]["trusted"][1]) == 1
    assert len(_deliveries(db)) == 5


def test_scim_reactivation_sends_each_device_back_to_approval_as_an_event(api):
    db = api["db"]
    _endpoint(db)
    with db.session() as s:
        moved = lifecycle.reactivated(
            s, api["alice"], actor="scim:test", policy=lifecycle.Reactivation.require_approval
        )
    assert moved
    rows = _deliveries(db)
    assert sorted(r.payload["data"]["device_id"] for r in rows) == sorted(moved)
    assert {r.event_type for r in rows} == {"device.reapproval_required"}


# -- management -------------------------------------------------------------------------------

BAD_URLS = [
    "ftp://example.com/hook",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http://",
    "https:///path",
    "example.com/hook",
    "http://user:pw@example.com/hook",
    "http://exa mple.com/",
    "http://example.com/\n",
    "http://[::1/",
    "http://[zz::1]/",
    "http://example.com:99999/",
    "http://example.com:0/",
    "http://example.com/#frag",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_are_refused_with_bad_url(api, url):
    r = call(api, "POST", "/webhooks", json={"url": url})
    assert r.status_code == 400 and r.json["error"]["code"] == "bad_url", r.json
    assert _count(api["db"], WebhookEndpoint) == 0


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "code"),
    [
        ("POST", "/webhooks", {"json": {"url": "http://a.example/", "x": 1}}, 400, "invalid_body"),
        ("POST", "/webhooks", {"json": {"url": "http://a/" + "a" * 3000}}, 400, "invalid_body"),
        ("POST", "/webhooks", {"json": {"url": "http://a/\x00"}}, 400, "invalid_body"),
        (
            "POST",
            "/webhooks",
            {"json": {"url": "http://a/", "secret": "whsec_x"}},
            400,
            "invalid_body",
        ),  # fmt: skip
        (
            "POST",
            "/webhooks",
            {"json": {"url": "http://a/", "event_types": ["nope"]}},
            400,
            "invalid_body",
        ),  # fmt: skip
        (
            "POST",
            "/webhooks",
            {"json": {"url": "http://a/", "event_types": []}},
            400,
            "bad_event_types",
        ),  # fmt: skip
        ("POST", "/webhooks", {"json": {"description": "no url"}}, 400, "invalid_body"),
        ("POST", "/webhooks", {"json": ["http://a/"]}, 400, "invalid_body"),
        (
            "POST",
            "/webhooks",
            {"data": b"{", "content_type": "application/json"},
            400,
            "malformed",
        ),  # fmt: skip
        (
            "POST",
            "/webhooks",
            {"data": b"url=x", "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),  # fmt: skip
        (
            "POST",
            "/webhooks",
            {
                "data": b'{"url":"' + b"a" * (2 * 1024 * 1024) + b'"}',
                "content_type": "application/json",
            },
            413,
            "too_large",
        ),  # fmt: skip
        ("PATCH", "/webhooks/1", {"json": {"active": "yes"}}, 400, "invalid_body"),
        ("PATCH", "/webhooks/99", {"json": {"active": True}}, 404, "webhook_not_found"),
        ("DELETE", "/webhooks/99", {}, 404, "webhook_not_found"),
        ("POST", "/webhooks/99/rotate", {}, 404, "webhook_not_found"),
        ("POST", "/webhooks/99/test", {}, 404, "webhook_not_found"),
        ("POST", "/webhook-deliveries/99/redeliver", {}, 404, "delivery_not_found"),
        ("GET", "/webhook-deliveries?status=lost", {}, 400, "bad_parameter"),
        ("GET", "/webhook-deliveries?cursor=zzz", {}, 400, "bad_cursor"),
    ],
)
def test_hostile_management_input_is_a_stable_4xx_and_writes_only_audit(
    api, method, path, kw, status, code
):
    db = api["db"]
    before_audit = _count(db, AuditEvent)
    r = call(api, method, path, **kw)
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    assert r.json["error"]["code"] == code
    assert _count(db, WebhookEndpoint) == 0 and _count(db, WebhookDelivery) == 0
    with db.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.id > 0).order_by(AuditEvent.id))
        added = list(events)[before_audit:]
    assert [(e.action, e.outcome, e.code) for e in added] == [("api.request", "rejected", code)]


def test_management_round_trip_audits_every_action_but_never_the_secret(api):
    db = api["db"]
    r = call(api, "POST", "/webhooks", json={"url": "https://hooks.example.com/dt"})
    assert r.status_code == 201
    ep, secret = r.json["endpoint"], r.json["secret"]
    assert ep["event_types"] is None and ep["active"] is True
    assert "secret" not in json.dumps(call(api, "GET", "/webhooks").json)
    assert call(api, "GET", f"/webhooks/{ep['id']}").json == ep
    assert call(api, "GET", "/webhooks", token="read").status_code == 200
    assert (
        call(api, "POST", "/webhooks", token="read", json={"url": "http://a/"}).status_code == 403
    )
    r = call(api, "PATCH", f"/webhooks/{ep['id']}", json={"event_types": ["device.revoked"]})
    assert r.status_code == 200 and r.json["event_types"] == ["device.revoked"]
    rotated = call(api, "POST", f"/webhooks/{ep['id']}/rotate").json["secret"]
    assert rotated != secret and rotated.startswith("whsec_")
    test = call(api, "POST", f"/webhooks/{ep['id']}/test")
    assert test.status_code == 202 and test.json["event_type"] == "webhook.test"
    again = call(api, "POST", f"/webhook-deliveries/{test.json['id']}/redeliver")
    assert again.status_code == 202 and again.json["event_id"] == test.json["event_id"]
    page = call(api, "GET", f"/webhook-deliveries?webhook_id={ep['id']}&limit=1").json
    assert page["items"][0]["id"] == again.json["id"] and page["next_cursor"]
    older = call(api, "GET", f"/webhook-deliveries?cursor={page['next_cursor']}").json
    assert [d["id"] for d in older["items"]] == [test.json["id"]]
    assert call(api, "PATCH", f"/webhooks/{ep['id']}", json={"active": False}).status_code == 200
    r = call(api, "POST", f"/webhooks/{ep['id']}/test")
    assert r.status_code == 409 and r.json["error"]["code"] == "webhook_disabled"
    assert call(api, "DELETE", f"/webhooks/{ep['id']}").json["deleted"]["id"] == ep["id"]
    assert _count(db, WebhookDelivery) == 0
    text = _audit_text(db)
    for action in ("create", "update", "rotate", "test", "redeliver", "delete"):
        assert f'"webhook.{action}"' in text
    assert secret not in text and rotated not in text and "whsec_" not in text


@given(url=st.text(max_size=80) | st.from_regex(r"(https?|ftp|file)://[^/]{0,20}/.{0,20}"))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_url_check_accepts_only_http_urls_and_fails_cleanly(url):
    try:
        checked = endpoints.check_url(url)
    except ServiceError as exc:
        assert exc.code == "bad_url" and isinstance(exc, Invalid)
    else:
        assert checked == url and url.split(":", 1)[0] in ("http", "https")


# -- the dispatcher ---------------------------------------------------------------------------


def _queue(db, n: int, url: str = "http://127.0.0.1:9/") -> int:
    endpoint_id, _ = _endpoint(db, url=url)
    with db.session() as s:
        for _ in range(n):
            endpoints.send_test(s, endpoint_id, actor="test")
    return endpoint_id


def test_concurrent_claims_never_take_the_same_delivery(migrated_url):
    db = Database(migrated_url)
    try:
        _queue(db, 40)
        claimed: list[list[int]] = []
        barrier = threading.Barrier(4)

        def worker() -> None:
            own = Database(migrated_url)
            try:
                barrier.wait()
                got = []
                for _ in range(5):
                    got += [c.id for c in dispatcher.claim(own, batch=3, lease=60)]
                claimed.append(got)
            finally:
                own.dispose()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ids = [i for got in claimed for i in got]
        assert len(ids) == len(set(ids)) == 40
        # Claimed rows are leased: nothing is due until the lease lapses.
        assert dispatcher.claim(db, batch=50, lease=60) == []
        later = utcnow() + dt.timedelta(seconds=61)
        assert len(dispatcher.claim(db, batch=50, lease=60, now=later)) == 40
    finally:
        db.dispose()


def test_recording_is_guarded_by_the_claimed_attempt_and_gives_up_after_the_schedule(
    migrated_url,
):
    db = Database(migrated_url)
    try:
        _queue(db, 1)
        delays = (1.0, 2.0)
        now = utcnow()
        (held,) = dispatcher.claim(db, batch=5, lease=30, now=now)
        fail = dispatcher.Outcome(503, "HTTP 503")
        assert dispatcher.record(db, held, fail, delays, now=now) == "pending"
        (row,) = _deliveries(db)
        wait = (row.next_attempt_at - now).total_seconds()
        assert row.attempts == 1 and 1.0 <= wait <= 1.2 + 1e-3
        # A stale claim (same attempt number) cannot record twice.
        dispatcher.record(db, held, dispatcher.Outcome(200, None), delays, now=now)
        assert _deliveries(db)[0].status == "pending"
        for attempt in (2, 3):
            (held,) = dispatcher.claim(db, batch=5, lease=30, now=now + dt.timedelta(hours=1))
            assert held.attempts == attempt - 1
            status = dispatcher.record(db, held, fail, delays)
        assert status == "failed"
        (row,) = _deliveries(db)
        assert (row.attempts, row.status, row.next_attempt_at) == (3, "failed", None)
        assert dispatcher.claim(db, batch=5, lease=30, now=now + dt.timedelta(days=9)) == []
    finally:
        db.dispose()


def test_disabled_endpoints_keep_their_queue_until_enabled(migrated_url):
    db = Database(migrated_url)
    try:
        endpoint_id = _queue(db, 2)
        with db.session() as s:
            endpoints.update(s, endpoint_id, {"active": False}, actor="test")
        assert dispatcher.claim(db, batch=5, lease=30) == []
        with db.session() as s:
            endpoints.update(s, endpoint_id, {"active": True}, actor="test")
        assert len(dispatcher.claim(db, batch=5, lease=30)) == 2
    finally:
        db.dispose()


class _Server:
    """A loopback server answering every POST with ``status`` (and ``Location``), or hanging."""

    def __init__(self, status: int = 204, hang: bool = False) -> None:
        outer = self
        self.hits = 0
        self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hang:
                    outer.release.wait(60)
                self.send_response(status)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _claim(url: str) -> dispatcher.Claim:
    from trust_protocol.webhook_signature import new_secret

    return dispatcher.Claim(
        1, 0, "evt-1", {"id": "evt-1", "type": "webhook.test"}, url, new_secret()
    )


@pytest.mark.parametrize(("status", "delivered"), [(200, True), (204, True), (302, False),
                                                   (410, False), (500, False)])  # fmt: skip
def test_send_treats_only_2xx_as_delivered_and_follows_no_redirect(status, delivered):
    server = _Server(status)
    try:
        outcome = dispatcher.send(_claim(server.url), timeout=5, allow_private=True)
        assert outcome.delivered is delivered and outcome.status_code == status
        assert server.hits == 1
    finally:
        server.close()


def test_send_reports_timeouts_refusals_and_bad_urls_without_raising():
    server = _Server(hang=True)  # answers only once released, after send gave up
    try:
        assert dispatcher.send(
            _claim(server.url), timeout=0.5, allow_private=True
        ) == dispatcher.Outcome(None, "timeout")
    finally:
        server.close()
    refused = dispatcher.send(_claim("http://127.0.0.1:9/"), timeout=2, allow_private=True)
    assert refused.status_code is None and refused.error
    for url in ("file:///etc/passwd", "gopher://x/", "http://[::1"):
        outcome = dispatcher.send(_claim(url), timeout=1, allow_private=True)
        assert outcome.status_code is None and outcome.error and not outcome.delivered


def test_retry_schedule_grows_with_bounded_jitter():
    delays = (10.0, 30.0, 120.0)
    for attempt, base in enumerate(delays, start=1):
        for _ in range(50):
            assert base <= dispatcher.next_delay(attempt, delays) <= base * 1.2
    assert dispatcher.next_delay(4, delays) is None


@pytest.mark.parametrize("bad", ["ten", "1 2 -3", " ".join(["1"] * 21), "1e9"])
def test_bad_retry_delays_setting_is_refused(bad):
    from idp_service.platform.config import Settings

    with pytest.raises(ValueError):
        Settings.from_env({"DEVICETRUST_WEBHOOK_RETRY_DELAYS": bad})
    assert Settings.from_env(
        {"DEVICETRUST_WEBHOOK_RETRY_DELAYS": "1, 2 3"}
    ).webhook_retry_delays == (
        1.0,
        2.0,
        3.0,
    )


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_manages_endpoints_and_shows_the_log(migrated_url, tmp_path):
    env = base_env(DEVICETRUST_DATABASE_URL=migrated_url, DEVICETRUST_DATA_DIR=str(tmp_path / "d"))

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        run = subprocess.run(
            [sys.executable, "-m", "idp_service", "webhook", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (run.returncode == 0) is ok, run.stdout + run.stderr
        return run

    assert "deliveries" in cli("--help").stdout
    added = json.loads(
        cli("add", "https://hooks.example.com/a", "--event", "device.revoked", "--json").stdout
    )
    endpoint_id, secret = added["endpoint"]["id"], added["secret"]
    assert added["endpoint"]["event_types"] == ["device.revoked"] and secret.startswith("whsec_")
    assert "bad_url" in cli("add", "ftp://x/", ok=False).stderr
    assert "bad_event_types" in cli("add", "http://x/", "--event", "nope", ok=False).stderr
    listed = json.loads(cli("list", "--json").stdout)
    assert [e["id"] for e in listed] == [endpoint_id] and secret not in json.dumps(listed)
    test = json.loads(cli("test", str(endpoint_id), "--json").stdout)
    log = json.loads(cli("deliveries", "--endpoint", str(endpoint_id), "--json").stdout)
    assert [d["id"] for d in log] == [test["id"]] and log[0]["status"] == "pending"
    assert "webhook.test" in cli("deliveries").stdout
    rotated = json.loads(cli("rotate", str(endpoint_id), "--json").stdout)["secret"]
    assert rotated != secret
    assert json.loads(cli("disable", str(endpoint_id), "--json").stdout)["active"] is False
    assert "webhook_disabled" in cli("test", str(endpoint_id), ok=False).stderr
    assert cli("remove", str(endpoint_id), "--json").returncode == 0
    assert "webhook_not_found" in cli("remove", str(endpoint_id), ok=False).stderr
    db = Database(migrated_url)
    try:
        text = _audit_text(db)
        assert secret not in text and rotated not in text and '"webhook.create"' in text
    finally:
        db.dispose()


def test_a_decision_made_by_the_cli_enqueues_its_event(migrated_url, tmp_path):
    """The CLI is a process of its own: the ``devicetrust`` group subscribes the webhook
    outbox to the audit log, so a CLI decision that is an event (here ``audit checkpoint``,
    an ``audit.checkpoint`` event) is enqueued in its own transaction, as in the service."""
    env = base_env(DEVICETRUST_DATABASE_URL=migrated_url, DEVICETRUST_DATA_DIR=str(tmp_path / "d"))

    def devicetrust(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "idp_service", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    hook = json.loads(
        devicetrust(
            "webhook", "add", "https://hooks.example.com/a", "--json", "--event", "audit.checkpoint"
        )
    )
    line = json.loads(devicetrust("audit", "checkpoint"))
    db = Database(migrated_url)
    try:
        sent = [(d.endpoint_id, d.event_type, d.payload["data"]) for d in _deliveries(db)]
    finally:
        db.dispose()
    assert [(endpoint, kind) for endpoint, kind, _ in sent] == [
        (hook["endpoint"]["id"], "audit.checkpoint")
    ]
    assert sent[0][2]["details"]["seq"] == line["seq"]  # the checkpoint just signed


# -- the console ------------------------------------------------------------------------------


def test_console_page_adds_shows_the_secret_once_and_guards_every_post(service_ctx):
    import re

    from idp_service.admin import bootstrap
    from tests.admin_helpers import csrf_of

    app, db = service_ctx, service_ctx.extensions["devicetrust"].db
    stranger = app.test_client()
    assert stranger.get("/admin/webhooks").headers["Location"] == "/admin/signin"
    client = app.test_client()
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    page = client.get("/admin/webhooks").get_data(as_text=True)
    assert 'aria-current="page"' in page and "No endpoints yet" in page
    csrf = csrf_of(page)

    # No CSRF token: refused, nothing written.
    resp = client.post("/admin/webhooks", data={"url": "https://hooks.example.com/a"})
    assert resp.status_code == 403 and _count(db, WebhookEndpoint) == 0
    # A bad URL: 400 with its code on the error page, audited as a rejected admin request.
    resp = client.post("/admin/webhooks", data={"csrf": csrf, "url": "file:///etc/passwd"})
    assert resp.status_code == 400 and "bad_url" in resp.get_data(as_text=True)
    assert _count(db, WebhookEndpoint) == 0
    with db.session() as s:
        last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome, last.code) == ("admin.request", "rejected", "bad_url")

    resp = client.post(
        "/admin/webhooks",
        data={"csrf": csrf, "url": "https://hooks.example.com/a", "event_types": ["webhook.test"]},
    )
    html = resp.get_data(as_text=True)
    (secret,) = re.findall(r"whsec_[A-Za-z0-9+/=]+", html)
    assert resp.status_code == 200 and "shown <strong>this once</strong>" in html
    assert "whsec_" not in client.get("/admin/webhooks").get_data(as_text=True)
    with db.session() as s:
        endpoint_id = s.scalar(select(WebhookEndpoint.id))
    resp = client.post(f"/admin/webhooks/{endpoint_id}/rotate", data={"csrf": csrf})
    (rotated,) = re.findall(r"whsec_[A-Za-z0-9+/=]+", resp.get_data(as_text=True))
    assert rotated != secret
    assert (
        client.post(f"/admin/webhooks/{endpoint_id}/test", data={"csrf": csrf}).status_code == 303
    )
    log = client.get(f"/admin/webhooks?webhook={endpoint_id}&status=pending")
    assert log.status_code == 200 and "webhook.test" in log.get_data(as_text=True)
    assert client.get("/admin/webhooks?status=lost").status_code == 400
    assert client.get("/admin/webhooks?webhook=abc").status_code == 400
    resp = client.post(f"/admin/webhooks/{endpoint_id}/active", data={"csrf": csrf, "active": "x"})
    assert resp.status_code == 400
    resp = client.post(
        f"/admin/webhooks/{endpoint_id}/active", data={"csrf": csrf, "active": "false"}
    )
    assert resp.status_code == 303
    assert (
        client.post(f"/admin/webhooks/{endpoint_id}/test", data={"csrf": csrf}).status_code == 409
    )
    assert (
        client.post(f"/admin/webhooks/{endpoint_id}/delete", data={"csrf": csrf}).status_code == 303
    )
    assert _count(db, WebhookEndpoint) == 0 and _count(db, WebhookDelivery) == 0
    text = _audit_text(db)
    assert secret not in text and rotated not in text
    with db.session() as s:
        actors = {
            e.action: e.actor
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("webhook.%")))
        }
    assert set(actors) == {"webhook.create", "webhook.rotate", "webhook.test", "webhook.update",
                           "webhook.delete"}  # fmt: skip
    assert all(a.startswith("admin:") for a in actors.values()), actors


def test_410_gone_fails_the_delivery_and_disables_the_endpoint(migrated_url, tmp_path):
    from idp_service.platform import audit_chain

    audit_chain.configure(audit_chain.load_key(tmp_path / "data"))
    server = _Server(410)
    db = Database(migrated_url)
    try:
        endpoint_id = _queue(db, 2, url=server.url)
        first, second = dispatcher.claim(db, batch=5, lease=30)
        for held in (first, second):
            outcome = dispatcher.send(held, timeout=5, allow_private=True)
            assert outcome.status_code == 410
            assert dispatcher.record(db, held, outcome, (1.0, 2.0)) == "failed"
        with db.session() as s:
            assert s.get(WebhookEndpoint, endpoint_id).active is False
            disabled = s.scalars(
                select(AuditEvent).where(AuditEvent.action == "webhook.disable")
            ).all()
        assert [(e.actor, e.details["endpoint_id"]) for e in disabled] == [
            ("webhook-dispatcher", endpoint_id)
        ]  # once, however many deliveries were refused
        assert [d.status for d in _deliveries(db)] == ["failed", "failed"]
    finally:
        db.dispose()
        server.close()
