"""The agent's local channel against hostile and malformed requests (real agent process)."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.procs import make_agent, start_service


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("channel")
    svc = start_service(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    agent = make_agent(tmp, "chan")
    agent.enroll(svc.url, svc.enroll_code("frank@example.com"))
    agent.start("--no-callback")
    yield svc, agent
    agent.stop()
    svc.stop()


def _challenge(svc):
    browser = httpx.Client(base_url=svc.url, follow_redirects=False)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    return browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]


def _post(agent, body, **headers):
    return httpx.post(f"http://127.0.0.1:{agent.port}/v1/challenge", content=body, headers=headers)


def test_binds_loopback_only(setup):
    _, agent = setup
    with socket.socket() as s:
        s.settimeout(1)
        # The port is taken on 127.0.0.1 ...
        assert s.connect_ex(("127.0.0.1", agent.port)) == 0
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for addr in addrs - {"127.0.0.1", "127.0.1.1"}:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((addr, agent.port)) != 0


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}"])
def test_non_loopback_host_is_refused(setup, host):
    svc, agent = setup
    body = f'{{"challenge": "{_challenge(svc)}"}}'
    r = _post(agent, body, Host=host.format(port=agent.port), Origin=svc.url)
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_host"
    assert "access-control-allow-origin" not in r.headers


def test_other_origin_is_refused_without_cors(setup):
    svc, agent = setup
    r = _post(agent, f'{{"challenge": "{_challenge(svc)}"}}', Origin="https://evil.example")
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    missing = _post(agent, f'{{"challenge": "{_challenge(svc)}"}}')
    assert missing.status_code == 403


def test_referer_origin_is_used_when_origin_is_absent(setup):
    svc, agent = setup
    r = _post(agent, f'{{"challenge": "{_challenge(svc)}"}}', Referer=svc.url + "/login/x")
    assert r.status_code == 200 and "response" in r.json()


def test_preflight_answers_only_known_origins_with_pna(setup):
    svc, agent = setup
    url = f"http://127.0.0.1:{agent.port}/v1/challenge"
    ok = httpx.options(
        url,
        headers={
            "Origin": svc.url,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == svc.url
    assert ok.headers["access-control-allow-private-network"] == "true"
    bad = httpx.options(url, headers={"Origin": "https://evil.example"})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "malformed"),
        (b'{"nope": 1}', 400, "malformed"),
        (b'{"challenge": "abc.def"}', 400, "malformed"),
        (b'{"challenge": 5}', 400, "malformed"),
    ],
)
def test_malformed_requests_get_clear_errors(setup, body, status, code):
    svc, agent = setup
    r = _post(agent, body, Origin=svc.url)
    assert r.status_code == status and r.json()["error"]["code"] == code


def test_oversized_request_is_refused(setup):
    svc, agent = setup
    r = _post(agent, b"x" * (16 * 1024 + 1), Origin=svc.url)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_challenge_from_another_server_is_refused(setup, tmp_path):
    svc, agent = setup
    other = start_service(tmp_path, f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        foreign = _challenge(other)
    finally:
        other.stop()
    r = _post(agent, f'{{"challenge": "{foreign}"}}', Origin=other.url)
    assert r.status_code == 403 and r.json()["error"]["code"] == "unknown_server"


def test_slow_client_is_cut_off(setup):
    _, agent = setup
    import time

    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"POST /v1/challenge HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        # The agent closes the connection after its short read timeout.
        assert s.recv(1024) == b""
        assert time.monotonic() - started < 5
