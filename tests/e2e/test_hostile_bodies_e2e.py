"""Hostile bodies against a real service process (gunicorn), with keep-alive clients.

The property over every route runs in process (``test_hostile_bodies.py``); these
are the cases that need the real server: what the strict reader answers over the
wire, and that a body refused unread ends its connection (``Connection: close``),
so a keep-alive client's next request succeeds instead of finding a dropped
connection.

The report v2 routes (docs/protocol.md §16) get the same over the wire, each at its own
bound: a body over it is 413 ``too_large``, refused unread with its connection closed
(with or without a ``Content-Length``); one at the bound is read and judged; small hostile
bodies (strict-reader cases, broken envelopes, and hostile bodies inside a box that opens)
get a 4xx with a stable code on a connection that stays usable. None writes anything but
its audit event.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import requests
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey
from sqlalchemy import MetaData, func, select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent
from tests.platform.test_hostile_bodies import STABLE
from tests.procs import start_service
from tests.scim_helpers import USER, scim_client
from trust_protocol import DeviceKeys, ResponseBody, parse_challenge, report_v2, seal_response
from trust_protocol.encoding import b64d, b64e

# The report v2 routes and their body bounds (idp_service/devices/web.py).
V2_ROUTES = (
    ("/agent/v2/report", report_v2.MAX_SMALL),
    ("/agent/v2/report/full", report_v2.MAX_FULL),
    ("/agent/v2/report/reset", 64 * 1024),
)
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bodies-e2e")
    svc = start_service(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    token = svc.cli_json("scim-token", "create", "e2e")["token"]
    yield svc, token
    svc.stop()


def _txn(client: httpx.Client) -> str:
    return client.get("/login").headers["location"].rsplit("/", 1)[-1]


def test_strict_reader_over_the_wire(live):
    svc, _ = live
    with httpx.Client(base_url=svc.url, follow_redirects=False) as client:
        txn = _txn(client)
        deep = b"[" * 30_000 + b"]" * 30_000
        for path in ("/agent/v1/challenges", "/agent/v1/report/challenge"):
            r = client.post(path, content=deep, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed", path
        r = client.post(f"/login/{txn}/register-challenge", content=deep)
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed"
        for body in (
            b'{"device_id": "\\udc00"}',
            b'{"device_id": "\\u0000\\u0000\\u0000\\u0000"}',
            b'{"device_id": "x", "device_id": "y"}',
            b'\xef\xbb\xbf{"device_id": "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"}',
            b'{"device_id": "4f1c2a9e", "n": NaN}',
        ):
            r = client.post("/agent/v1/report/challenge", content=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed", body
        # The service is still well (nothing crashed a worker).
        assert client.get("/healthz").status_code == 200
    assert "Traceback" not in svc.log()


def test_oversized_scim_post_leaves_the_keepalive_client_working(live):
    svc, token = live
    with scim_client(svc, token) as client:
        for _ in range(3):
            r = client.post("/Users", content=b"x" * (4 * 1024 * 1024))
            assert r.status_code == 413
            assert r.headers["connection"] == "close"
            # The next request on the same client (pool) is answered.
            assert client.get("/Users").status_code == 200
        created = client.post("/Users", json={"schemas": [USER], "userName": "keep@example.com"})
        assert created.status_code == 201


def test_oversized_agent_and_api_posts_close_their_connection(live):
    svc, _ = live
    with requests.Session() as session:
        for path, size in (
            ("/agent/v1/report", 4 * 1024 * 1024),
            ("/agent/v1/register", 1024 * 1024),
            ("/agent/v1/challenges", 512 * 1024),
            ("/api/v1/sps", 4 * 1024 * 1024),
        ):
            r = session.post(
                svc.url + path, data=b"x" * size, headers={"Content-Type": "application/json"}
            )
            assert r.status_code in (401, 413), (path, r.status_code)
            assert r.headers["connection"] == "close", path
            assert session.get(svc.url + "/healthz").status_code == 200


def test_small_unread_body_is_drained_and_the_connection_kept(live):
    svc, _ = live
    with httpx.Client(base_url=svc.url) as client:
        # A body the route refuses before reading it, small enough to drain.
        r = client.post("/login/nope/challenge", content=b"{}" * 1000)
        assert r.status_code == 404
        assert r.headers["connection"] == "keep-alive"
        assert client.get("/healthz").status_code == 200


# -- report v2 ------------------------------------------------------------------------------


# Not writes of a request: the rate limiter's counts of every request, refused or not, the
# leases of the service's periodic jobs (sealing the audit log, among others), and the audit
# log itself (its checkpoints here, its rows compared apart).
NOT_REQUEST_WRITES = {"rate_limit_counters", "job_leases", "audit_checkpoints", "audit_events"}


def _rows(svc) -> tuple[dict[str, list], int]:
    """Every row of every table of the live database that a request could write but its
    audit event, and the newest audit row's id."""
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        meta = MetaData()
        with engine.connect() as conn:
            meta.reflect(conn)
            rows = {
                name: sorted(map(repr, conn.execute(select(table)).all()))
                for name, table in sorted(meta.tables.items())
                if name not in NOT_REQUEST_WRITES
            }
            newest = conn.execute(select(func.max(AuditEvent.id))).scalar_one() or 0
    finally:
        engine.dispose()
    return rows, newest


def _audit_after(svc, before: tuple[dict[str, list], int]) -> list[tuple[str, str, str | None]]:
    """(action, outcome, code) of the audit rows written since ``before``, checking that
    nothing else was written."""
    rows, newest = before
    assert _rows(svc)[0] == rows, "a refused body wrote something besides its audit event"
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(AuditEvent.action, AuditEvent.outcome, AuditEvent.code)
                .where(AuditEvent.id > newest)
                .order_by(AuditEvent.id)
            ).all()
    finally:
        engine.dispose()
    return [tuple(row) for row in found]


def test_oversized_v2_reports_are_refused_unread_and_close_their_connection(live):
    svc, _ = live
    before = _rows(svc)
    with requests.Session() as session:
        for path, limit in V2_ROUTES:
            for size in (limit + 1, 4 * limit):
                r = session.post(svc.url + path, data=b"{" + b" " * (size - 2) + b"}", headers=JSON)
                assert r.status_code == 413, (path, size, r.status_code)
                assert r.json()["error"]["code"] == "too_large", path
                assert r.headers["connection"] == "close", path
                assert session.get(svc.url + "/healthz").status_code == 200
            # No Content-Length (chunked): refused once the reader passes the bound. A rest
            # too large to drain closes the connection; a small one is drained, and the
            # connection goes on either way.
            for size, closes in ((4 * limit, True), (limit + 8192, False)):
                chunks = [b"{"] + [b" " * 8192] * (size // 8192) + [b"}"]
                r = session.post(svc.url + path, data=iter(chunks), headers=JSON)
                assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", path
                assert (r.headers["connection"] == "close") is closes, (path, size)
                assert session.get(svc.url + "/healthz").status_code == 200
            # At the bound the body is read and judged (not a report: malformed), and the
            # connection is kept.
            r = session.post(svc.url + path, data=b"{" + b" " * (limit - 2) + b"}", headers=JSON)
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed", path
            assert r.headers["connection"] == "keep-alive", path
            assert session.get(svc.url + "/healthz").status_code == 200
    # Every refusal is audited as the report's (or the reset's) rejection: the oversized
    # bodies (four per route) as too_large, never read, and the three at the bound, read and
    # judged, as malformed. Nothing else is written.
    expected = []
    for path, _ in V2_ROUTES:
        action = "device.report_counter_reset" if path.endswith("/reset") else "device.report"
        expected += [(action, "rejected", "too_large")] * 4 + [(action, "rejected", "malformed")]
    assert _audit_after(svc, before) == expected
    assert "Traceback" not in svc.log()


def _report_box_key(client: httpx.Client) -> bytes:
    """The service's report box key, from its signed advertisement."""
    info = client.get("/agent/v1/server").json()
    verify_key = VerifyKey(b64d(info["server_key"], length=32))
    return report_v2.open_report_key(info["report"], verify_key)


def _boxed(plaintext: bytes, key: bytes) -> bytes:
    """``plaintext`` boxed to ``key`` as a report envelope (any signature, any body)."""
    eph = PrivateKey.generate()
    sealed = Box(eph, PublicKey(key)).encrypt(plaintext)
    return json.dumps({"v": 2, "epk": b64e(bytes(eph.public_key)), "box": b64e(sealed)}).encode()


def _v2_hostile_reports(box_key: bytes) -> list[tuple[bytes, str, str]]:
    """Hostile report envelopes: (body, its code on /agent/v2/report, on /report/full)."""
    keys = DeviceKeys.generate("hostile-e2e")
    document = {"os": {"family": "linux"}}
    common = {
        "device_id": keys.device_id,
        "counter": 1,
        "clock": time.time(),
        "agent_version": "t",
        "platform": {"os": "linux"},
        "document": document,
    }
    full = report_v2.make_report(**common)
    unchanged = report_v2.make_report(
        **common, acked=document, acked_digest=report_v2.document_digest(document)
    )
    signature = b"\0" * 64
    epk = b64e(bytes(PrivateKey.generate().public_key))
    inner = [
        b"[" * 20_000 + b"]" * 20_000,
        b'{"v": 2, "v": 2}',
        b'{"v": 2, "counter": NaN}',
        b'\xef\xbb\xbf{"v": 2}',
        b'{"v": 2, "device_id": "\\ud800"}',
        b"\xff\xfe",
        b"[]",
        json.dumps({**full.to_json(), "counter": 2**64}).encode(),
        json.dumps({**full.to_json(), "counter": -1}).encode(),
        json.dumps({**full.to_json(), "clock": "now"}).encode(),
        json.dumps({**full.to_json(), "digest": "A" * 64}).encode(),
        json.dumps({**full.to_json(), "platform": {"os": ["linux"]}}).encode(),
        json.dumps({**full.to_json(), "extra": 1}).encode(),
        json.dumps({**full.to_json(), "device_id": "a\u0000b"}).encode(),
    ]
    return [
        (b'{"v": 2}', "malformed", "malformed"),
        (b'{"v": 2, "epk": "' + epk.encode() + b'", "box": "!!"}', "malformed", "malformed"),
        (b'{"v": 2, "epk": "' + epk.encode() + b'", "box": "AAAA"}', "malformed", "malformed"),
        (
            json.dumps({"v": 3, "epk": epk, "box": b64e(b"x" * 200)}).encode(),
            "unsupported_version",
            "unsupported_version",
        ),
        (
            json.dumps({"v": 2, "epk": epk, "box": b64e(b"x" * 200)}).encode(),
            "box_open_failed",
            "box_open_failed",
        ),
        (b'{"v": 2, "v": 2, "epk": "", "box": ""}', "malformed", "malformed"),
        *[(_boxed(signature + data, box_key), "malformed", "malformed") for data in inner],
        # Well-formed reports from a device the service never registered (each refused
        # as malformed on the other endpoint, before the registry is asked).
        (
            report_v2.seal_report(unchanged, keys.signing_key, box_key),
            "device_unknown",
            "malformed",
        ),
        (report_v2.seal_report(full, keys.signing_key, box_key), "malformed", "device_unknown"),
    ]


SMALL_HOSTILE = [
    b"[" * 30_000 + b"]" * 30_000,
    b'{"device_id": "\\udc00"}',
    b'{"device_id": "\\u0000\\u0000"}',
    b'{"device_id": "x", "device_id": "y"}',
    b'\xef\xbb\xbf{"v": 2}',
    b'{"v": 2, "n": NaN}',
    b'{"v": 1e999}',
    b"\xed\xa0\x80",
    b"\x00",
    b"null",
    b"12",
    b'"report"',
]


def test_small_hostile_v2_bodies_get_a_stable_code_over_the_wire(live):
    svc, _ = live
    before = _rows(svc)
    answered = []
    with httpx.Client(base_url=svc.url) as client:
        box_key = _report_box_key(client)
        cases = [(path, body, None) for path, _ in V2_ROUTES for body in SMALL_HOSTILE]
        cases += [(path, body, None) for path, _ in V2_ROUTES for body in (b"", b"{}", b"[]")]
        for body, small, full in _v2_hostile_reports(box_key):
            cases += [("/agent/v2/report", body, small), ("/agent/v2/report/full", body, full)]
        # The reset takes an answer to a report challenge: broken ones, one from an
        # unregistered device, and one that asks for something else.
        stranger = DeviceKeys.generate("hostile-reset")
        for data, code in (({"counter_reset": True}, "device_unknown"), ({"x": 1}, "malformed")):
            token = client.post(
                "/agent/v1/report/challenge", json={"device_id": stranger.device_id}
            ).json()["challenge"]
            challenge = parse_challenge(
                token,
                VerifyKey(b64d(client.get("/agent/v1/server").json()["server_key"], length=32)),
            )
            answer = ResponseBody(
                token, stranger.public_json(), {"os": "linux"}, "t", time.time(), data
            )
            cases.append(
                ("/agent/v2/report/reset", seal_response(answer, challenge, stranger), code)
            )
        # A report where an answer belongs: a v2 envelope is not a version-1 answer.
        report_envelope = _v2_hostile_reports(box_key)[-1][0]
        cases.append(("/agent/v2/report/reset", report_envelope, "unsupported_version"))
        for path, body, code in cases:
            r = client.post(path, content=body, headers=JSON)
            where = (path, body[:60], r.status_code, r.text[:200])
            assert 400 <= r.status_code < 500, where
            got = r.json()["error"]["code"]
            assert got in STABLE, where
            if code is not None:
                assert got == code, where
            # Read to the end and judged: the connection is kept.
            assert r.headers["connection"] == "keep-alive", where
            answered.append((path, body, got))
        assert client.get("/healthz").status_code == 200
    # Each refusal is audited, as the report's or the reset's rejection with its code (an
    # empty body too, refused by the reader); nothing else is written.
    expected = [
        ("device.report_counter_reset" if path.endswith("/reset") else "device.report", code)
        for path, body, code in answered
    ]
    written = _audit_after(svc, before)
    assert {outcome for _, outcome, _ in written} == {"rejected"}
    assert sorted((action, code) for action, _, code in written) == sorted(expected)
    assert "Traceback" not in svc.log()
