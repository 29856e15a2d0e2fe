"""Hostile bodies against a real service process (gunicorn), with keep-alive clients.

The property over every route runs in process (``test_hostile_bodies.py``); these
are the cases that need the real server: what the strict reader answers over the
wire, and that a body refused unread ends its connection (``Connection: close``),
so a keep-alive client's next request succeeds instead of finding a dropped
connection.
"""

from __future__ import annotations

import httpx
import pytest
import requests

from tests.procs import start_service
from tests.scim_helpers import USER, scim_client


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
